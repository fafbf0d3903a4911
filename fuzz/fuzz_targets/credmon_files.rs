//! The CredD's files as the credmon and the broker's web login read them (credkeeper_sink::condor). First byte even: a key file
//! (`<cred_dir>/<64 hex>`, old-syntax ClassAds) through keyfile::parse, each ad's
//! token_name taken. Odd: a token response / `.use` / `.top` JSON object through
//! files::shape_use (the `.use` upstream writes). Neither panics; shape_use takes the
//! refresh token out and adds `expires_at` exactly when `expires_in` is an integer.
#![no_main]

use credkeeper_sink::condor::{self as files, keyfile};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(ads) = keyfile::parse(text) {
            for ad in ads {
                assert!(!ad.token_name().is_empty() || ad.provider.is_empty());
            }
        }
    } else if let Ok(response) = serde_json::from_str::<Map<String, Value>>(text) {
        let expires_in = response.get("expires_in").and_then(Value::as_i64);
        let (used, _rt, expires_at) = files::shape_use(response, 1_700_000_000);
        assert!(!used.contains_key("refresh_token"));
        assert_eq!(expires_at, expires_in.map(|e| 1_700_000_000 + e));
    }
});
