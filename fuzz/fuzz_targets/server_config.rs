//! credkeeper_server::config::Config::parse on any TOML text (the broker's config file),
//! no environment overrides: never panics; a config it accepts has passed validation.
#![no_main]

use credkeeper_server::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::parse("fuzz.toml", text, std::iter::empty()) {
        // validate() refuses a non-positive Vault TTL; the Vault API clamps to it.
        assert!(config.vault.token_ttl >= 1);
    }
});
