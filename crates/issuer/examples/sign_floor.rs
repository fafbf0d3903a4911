//! The signing floor: how many JWTs one thread signs per second, layer by layer, with the
//! crypto library the broker uses (aws-lc-rs, through jsonwebtoken).
//!
//! For ES256 and RS256 (a fresh key of each, as `credkeeper serve` generates it), over the
//! same claims a freshly signed robot vend carries:
//!
//! * `aws-lc`: `EcdsaKeyPair::sign` / `RsaKeyPair::sign` of the token's signing input
//!   (`header.payload`) with a key parsed once: the crypto alone, the floor;
//! * `aws-lc+parse`: the same, parsing the key from its DER first, every time, as
//!   jsonwebtoken 11's aws-lc backend does inside `encode` (`EcdsaKeyPair::from_pkcs8`,
//!   `RsaKeyPair::from_der`);
//! * `jsonwebtoken`: `jsonwebtoken::encode` of the same header and claims;
//! * `issuer`: `LocalIssuer::sign`, what the broker calls for a signed vend (claims with a
//!   new `jti`, header with `kid`, the JWS signed with a key parsed when it was loaded).
//!
//! Usage: `sign_floor [ITERATIONS]` (ES256; RS256 runs a tenth of them, at least 100).
//! Prints one line per (algorithm, layer):
//! `SIGN alg=ES256 layer=aws-lc iters=N secs=S per_sec=R us_per=U`, on one thread.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_issuer::{Algorithm, Grant, LocalIssuer, Settings};
use jsonwebtoken::{EncodingKey, Header};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    STANDARD.decode(b64).expect("PEM body")
}

/// Time `iters` calls of `f`; print the SIGN line.
fn measure(alg: &str, layer: &str, iters: u32, mut f: impl FnMut()) {
    // A few first calls off the clock (page faults, lazy tables).
    for _ in 0..iters.div_ceil(100).max(3) {
        f();
    }
    let t0 = Instant::now();
    for _ in 0..iters {
        f();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "SIGN alg={alg} layer={layer} iters={iters} secs={secs:.4} per_sec={:.0} us_per={:.2}",
        f64::from(iters) / secs,
        secs * 1e6 / f64::from(iters)
    );
}

fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ITERATIONS is a number"))
        .unwrap_or(20_000);
    let rng = SystemRandom::new();
    for (alg, name, n) in [
        (Algorithm::ES256, "ES256", iters),
        (Algorithm::RS256, "RS256", (iters / 10).max(100)),
    ] {
        let pem = credkeeper_issuer::generate_pem(alg).expect("key generation");
        let der = pem_der(&pem);
        // The broker's issuer, as `serve` configures it by default ([issuer] lifetime 600,
        // scitoken:2.0), and the grant of bench/broker.sh's signed vend.
        let settings = Settings {
            url: "http://127.0.0.1:8080".into(),
            algorithm: alg,
            key_file: "(memory)".into(),
            generate: false,
            public_key_file: None,
            key_id: None,
            lifetime: 600,
            version: Some(credkeeper_issuer::VersionClaim::Ver("scitoken:2.0".into())),
        };
        let issuer = LocalIssuer::from_pem(&settings, &pem, Path::new("(memory)")).expect("key");
        let grant = Grant {
            subject: "bench",
            scope: "read:/data",
            audience: Some(serde_json::Value::String("https://storage.example".into())),
            lifetime: 600,
        };
        // One token: its signing input is what the lower layers sign.
        let (token, _) = issuer.sign(&grant).expect("sign");
        let token = token.expose().to_string();
        let input = &token[..token.rfind('.').expect("a JWT")];
        let parts: Vec<&str> = input.split('.').collect();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[1])
                .expect("payload"),
        )
        .expect("claims");
        let (jwt_alg, key) = match alg {
            Algorithm::ES256 => (
                jsonwebtoken::Algorithm::ES256,
                EncodingKey::from_ec_pem(pem.as_bytes()).expect("EC key"),
            ),
            _ => (
                jsonwebtoken::Algorithm::RS256,
                EncodingKey::from_rsa_pem(pem.as_bytes()).expect("RSA key"),
            ),
        };
        let mut header = Header::new(jwt_alg);
        header.kid = Some(issuer.key_id().to_string());
        header.typ = Some("JWT".into());
        eprintln!(
            "{name}: signing input {} bytes, token {} bytes",
            input.len(),
            token.len()
        );
        match alg {
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .expect("P-256 key");
                measure(name, "aws-lc", n, || {
                    black_box(pair.sign(&rng, input.as_bytes()).expect("sign"));
                });
                measure(name, "aws-lc+parse", n, || {
                    let pair =
                        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, key.as_bytes())
                            .expect("P-256 key");
                    black_box(pair.sign(&rng, input.as_bytes()).expect("sign"));
                });
            }
            _ => {
                let pair = RsaKeyPair::from_pkcs8(&der).expect("RSA key");
                let mut sig = vec![0u8; pair.public_modulus_len()];
                measure(name, "aws-lc", n, || {
                    pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                        .expect("sign");
                    black_box(&sig);
                });
                measure(name, "aws-lc+parse", n, || {
                    let pair = RsaKeyPair::from_der(key.as_bytes()).expect("RSA key");
                    pair.sign(&RSA_PKCS1_SHA256, &rng, input.as_bytes(), &mut sig)
                        .expect("sign");
                    black_box(&sig);
                });
            }
        }
        measure(name, "jsonwebtoken", n, || {
            black_box(jsonwebtoken::encode(&header, &claims, &key).expect("encode"));
        });
        measure(name, "issuer", n, || {
            black_box(issuer.sign(&grant).expect("sign"));
        });
    }
}
