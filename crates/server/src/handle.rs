//! Random handles — login links, web sessions, Vault-API tokens, device-login states —
//! and the digests under which the store keeps them (a handle itself is never stored).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// 256 random bits, URL-safe. A generator that fails stops the request: a handle must
/// never be guessable.
pub fn random() -> String {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).expect("the system's random number generator failed");
    URL_SAFE_NO_PAD.encode(b)
}

/// SHA-256 of a handle, for keeping and looking it up.
pub fn digest(s: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes());
    d.as_ref().try_into().unwrap_or([0u8; 32])
}
