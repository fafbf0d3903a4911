//! PKCE (RFC 7636, S256 only) and the `state` value that ties a redirect to its request.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use credkeeper_core::Secret;

pub struct Pkce {
    pub verifier: Secret,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        // 32 random bytes give a 43-character verifier, the RFC's minimum length.
        let verifier = random_b64(32);
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
        Pkce {
            challenge: URL_SAFE_NO_PAD.encode(digest.as_ref()),
            verifier: Secret::new(verifier),
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// An unguessable `state` value.
pub fn random_state() -> String {
    random_b64(16)
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    aws_lc_rs::rand::fill(&mut bytes).expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_challenge_is_the_s256_of_the_verifier() {
        // RFC 7636 Appendix B.
        let v = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, v.as_bytes());
        assert_eq!(
            URL_SAFE_NO_PAD.encode(d.as_ref()),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let p = Pkce::new();
        assert_eq!(p.verifier.expose().len(), 43);
        assert_ne!(Pkce::new().verifier, p.verifier);
    }
}
