//! credkeeper_core::Jwt::decode on any text (a token file, an `Authorization: Bearer`
//! value): never panics; a decoded token's accessors are total, and its signing input and
//! signature put back together give the token. The same text as a `scope` claim
//! (ScopeSet::parse): every scope read back from its own display is itself.
#![no_main]

use credkeeper_core::{Jwt, Scope, ScopeSet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for scope in ScopeSet::parse(text).iter() {
        assert_eq!(Scope::parse(&scope.to_string()).as_ref(), Some(scope));
    }
    let Ok(jwt) = Jwt::decode(text) else {
        return;
    };
    let raw = jwt.raw().expose();
    assert_eq!(format!("{}.{}", jwt.signing_input(), jwt.signature()), raw);
    let _ = (jwt.alg(), jwt.kid(), jwt.header().len(), jwt.claims().len());
    let _ = (jwt.issuer(), jwt.subject(), jwt.audience().values().len());
    let _ = (jwt.expires(), jwt.not_before(), jwt.issued_at());
    let _ = jwt.remaining(credkeeper_core::Timestamp::now());
    let _ = jwt.scopes();
});
