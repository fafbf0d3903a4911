//! The registry token endpoint's inputs (crates/server/src/registry_token.rs). First byte
//! even: the body of `POST /registry/token` through TokenForm::parse. Odd: a `scope`
//! value through Access::parse and is_repository_name. Never panics; an Access written
//! back as `kind:name:actions` parses to itself.
#![no_main]

use credkeeper_server::access::Access;
use credkeeper_server::registry_token::{TokenForm, is_repository_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let _ = TokenForm::parse(rest);
        return;
    }
    let Ok(scope) = std::str::from_utf8(rest) else {
        return;
    };
    if let Some(access) = Access::parse(scope) {
        let _ = is_repository_name(&access.name);
        let again = format!(
            "{}:{}:{}",
            access.kind,
            access.name,
            access.actions.join(",")
        );
        assert_eq!(Access::parse(&again), Some(access));
    }
});
