//! Shared test harness: a real OpenID Provider (`oidc-provider` from npm) started on
//! loopback by `tests/testbed/start-op.sh`, the `credkeeper` binary run in an isolated
//! home, and the headless browser (`tests/testbed/op-browser.sh`) that approves logins.
//! One file per peer; everything is re-exported here.
#![allow(dead_code, unused_imports)]

mod broker;
mod op;
mod peers;
mod user;

pub use broker::*;
pub use op::*;
pub use peers::*;
pub use user::*;

use std::path::{Path, PathBuf};

pub fn testbed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/testbed")
}

/// Decode a JWT's claims without checking anything (test inspection only).
pub fn claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// A JWT's header.
pub fn header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, n: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.trim().split('.').nth(n).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// No file under `dir`, at any depth, holds `secret` (state directories, logs, sockets'
/// leftovers: whatever a process could have written).
#[track_caller]
pub fn assert_no_file_holds(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_no_file_holds(&path, secret);
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret",
                path.display()
            );
        }
    }
}
