//! The Docker credential-helper protocol, as docker and containers/image speak it: one
//! action per run (`get`, `store`, `erase`, `list`, `version`), input on stdin, answers and
//! errors on stdout, exit 1 on failure. `get` of an unknown host answers exactly
//! `credentials not found in native keychain`, so callers go on without credentials.

use crate::keychain::{self, Keychain, NOT_FOUND};
use crate::{Credential, host};
use credkeeper_core::Secret;
use credkeeper_store::CredentialStore;
use std::io::Read;

/// Longest stdin accepted: server URLs and credentials are small; anything bigger is
/// not a helper request.
const MAX_INPUT: u64 = 64 * 1024;

pub const USAGE: &str = "Usage: docker-credential-credkeeper <store|get|erase|list|version>";

/// What to print on stdout and the exit status.
pub struct Reply {
    pub stdout: String,
    pub code: i32,
}

fn ok(stdout: String) -> Reply {
    Reply { stdout, code: 0 }
}

fn fail(message: impl Into<String>) -> Reply {
    Reply {
        stdout: message.into(),
        code: 1,
    }
}

fn read_input(input: &mut dyn Read) -> Result<String, Reply> {
    let mut buf = String::new();
    let n = input
        .take(MAX_INPUT + 1)
        .read_to_string(&mut buf)
        .map_err(|e| fail(format!("cannot read the request: {e}")))?;
    if n as u64 > MAX_INPUT {
        return Err(fail(format!(
            "the request is larger than {MAX_INPUT} bytes"
        )));
    }
    Ok(buf)
}

#[derive(serde::Deserialize)]
struct StoreRequest {
    #[serde(rename = "ServerURL", default)]
    server_url: String,
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: Option<Secret>,
}

/// Run one helper action. `store` is credkeeper's store (for `store`, `erase`, `list`).
pub fn run(
    action: &str,
    input: &mut dyn Read,
    keychain: &Keychain,
    store: Option<&dyn CredentialStore>,
) -> Reply {
    match action {
        "version" => ok(format!("credkeeper {}", env!("CARGO_PKG_VERSION"))),
        "get" => {
            let server = match read_input(input) {
                Ok(s) => s.trim().to_string(),
                Err(r) => return r,
            };
            if server.is_empty() {
                return fail("no credentials server URL");
            }
            match keychain.lookup(&server, &mut Vec::new()) {
                Ok(Some(found)) => ok(serde_json::json!({
                    "ServerURL": server,
                    "Username": found.credential.username,
                    "Secret": found.credential.secret.expose(),
                })
                .to_string()),
                Ok(None) => fail(NOT_FOUND),
                Err(e) => fail(e.to_string()),
            }
        }
        "store" => {
            let text = match read_input(input) {
                Ok(s) => s,
                Err(r) => return r,
            };
            let request: StoreRequest = match serde_json::from_str(text.trim()) {
                Ok(r) => r,
                Err(e) => return fail(format!("the request is not helper JSON: {e}")),
            };
            if request.server_url.trim().is_empty() {
                return fail("no credentials server URL");
            }
            if request.username.is_empty() {
                return fail("no credentials username");
            }
            let Some(store) = store else {
                return fail("credkeeper's store is not available");
            };
            let credential = Credential {
                username: request.username,
                secret: request.secret.unwrap_or_else(|| Secret::new("")),
            };
            match keychain::keep(store, &host::normalise(&request.server_url), &credential) {
                Ok(()) => ok(String::new()),
                Err(e) => fail(e.to_string()),
            }
        }
        "erase" => {
            let server = match read_input(input) {
                Ok(s) => s.trim().to_string(),
                Err(r) => return r,
            };
            if server.is_empty() {
                return fail("no credentials server URL");
            }
            let Some(store) = store else {
                return fail(NOT_FOUND);
            };
            match keychain::forget(store, &host::normalise(&server)) {
                Ok(true) => ok(String::new()),
                Ok(false) => fail(NOT_FOUND),
                Err(e) => fail(e.to_string()),
            }
        }
        "list" => {
            let Some(store) = store else {
                return ok("{}".into());
            };
            match keychain::list(store) {
                Ok(entries) => {
                    let map: serde_json::Map<String, serde_json::Value> = entries
                        .into_iter()
                        .map(|(h, u)| (h, serde_json::Value::String(u)))
                        .collect();
                    ok(serde_json::Value::Object(map).to_string())
                }
                Err(e) => fail(e.to_string()),
            }
        }
        _ => fail(USAGE),
    }
}
