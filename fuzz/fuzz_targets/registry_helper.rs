//! The Docker credential-helper protocol (credkeeper_registry::helper::run): the first
//! byte picks the action (get, store, erase, list, version, or an unknown one), the rest
//! is its stdin. The keychain is empty and there is no store, so nothing is read or
//! written outside the process. Never panics; the exit status is 0 or 1, and `get` of
//! anything finds nothing. The same bytes also go through what a helper run reads around
//! it: host::normalise of a server URL, dockerconfig::parse of a config.json, and
//! bearer::Challenge::parse of a `WWW-Authenticate` value.
#![no_main]

use credkeeper_registry::bearer::Challenge;
use credkeeper_registry::dockerconfig::DockerConfig;
use credkeeper_registry::helper;
use credkeeper_registry::host;
use credkeeper_registry::keychain::Keychain;
use libfuzzer_sys::fuzz_target;

const ACTIONS: &[&str] = &["get", "store", "erase", "list", "version", "fetch"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let action = ACTIONS[selector as usize % ACTIONS.len()];
    let keychain = Keychain { sources: vec![] };
    let reply = helper::run(action, &mut &input[..], &keychain, None);
    assert!(
        reply.code == 0 || reply.code == 1,
        "exit status {}",
        reply.code
    );
    if action == "get" {
        assert_eq!(reply.code, 1);
    }
    let _ = DockerConfig::parse(input);
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = host::normalise(text);
        let _ = host::reference(text);
        let _ = Challenge::parse(text);
    }
});
