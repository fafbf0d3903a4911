//! The Vault API's request bodies (credkeeper_server::vault::parse_body, what token/create,
//! the secret write, auth_url and poll read from theirs), and the auth mount of a login's
//! path (vault::mount_parts). Never panics; a read ttl is within 1..=the broker's maximum.
#![no_main]

use credkeeper_server::vault::{mount_parts, parse_body};
use libfuzzer_sys::fuzz_target;

const MAX_TTL: i64 = 3600;

fuzz_target!(|data: &[u8]| {
    match parse_body(data, MAX_TTL) {
        Ok(body) => assert!((1..=MAX_TTL).contains(&body.ttl), "ttl {}", body.ttl),
        Err((status, _)) => assert_eq!(status, 400),
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for method in ["kerberos", "oidc"] {
            if let Some((issuer, role)) = mount_parts(text, method) {
                assert!(!issuer.is_empty() && !role.is_empty());
            }
        }
    }
});
