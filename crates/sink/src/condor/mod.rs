//! The HTCondor credential directory (`SEC_CREDENTIAL_DIRECTORY_OAUTH`) as a sink: the
//! `.top` / `.use` files in the shapes scitokens-credmon writes them, and the CredD's key
//! files ([`keyfile`]) that say which logins a user still has to do. Written by credmon's
//! refreshing pass and by the broker's web login for CredD key files alike.

pub mod keyfile;

pub use keyfile::{KeyAd, KeyFileError};

use crate::batch::Replacement;
use crate::spare::Spares;
use serde_json::{Map, Value, json};
use std::path::Path;

/// Turn a token response into the `.use` upstream writes (oauthlib's normalised token
/// minus the refresh token: `scope` as a list, `expires_at` added, everything else kept).
/// Returns the `.use` object, the refresh token if one came, and `expires_at`.
pub fn shape_use(
    mut response: Map<String, Value>,
    now: i64,
) -> (Map<String, Value>, Option<String>, Option<i64>) {
    let rt = match response.remove("refresh_token") {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        _ => None,
    };
    if let Some(Value::String(s)) = response.get("scope").cloned() {
        response.insert(
            "scope".into(),
            json!(s.split_whitespace().collect::<Vec<_>>()),
        );
    }
    let expires_at = response
        .get("expires_in")
        .and_then(Value::as_i64)
        .map(|e| now + e);
    if let Some(at) = expires_at {
        response.insert("expires_at".into(), json!(at));
    }
    (response, rt, expires_at)
}

/// The mode upstream gives credential files.
const CRED_FILE_MODE: u32 = 0o400;

/// Write a credential file as upstream's web app does: a temporary file beside it in the
/// user's directory, mode 0400, renamed into place.
pub fn write_cred_file(path: &Path, contents: &str) -> Result<(), crate::SinkError> {
    crate::write_atomic(path, contents.as_bytes(), CRED_FILE_MODE)
}

/// Stage credential files, in order, mode 0400, for a [`batch`](crate::batch) commit to
/// place. Each temporary file is beside its file in the user's directory, as upstream's
/// web app writes them: renamed within one directory, many files at once share no lock
/// (from the directory root, each rename would hold the root's as well).
///
/// With `spares` (credmon's pass, which holds the directory), each is written over its
/// [spare](crate::spare) when it may be.
pub fn stage_cred_files(
    files: &[(&Path, &str)],
    spares: Option<&Spares>,
) -> Result<Replacement, crate::SinkError> {
    let mut staged = Replacement::new();
    for (path, contents) in files {
        let contents = contents.as_bytes();
        match spares {
            Some(spares) => staged.file_over_spare(path, contents, CRED_FILE_MODE, spares)?,
            None => staged.file(path, contents, CRED_FILE_MODE)?,
        }
    }
    Ok(staged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_use_file_has_oauthlibs_shape() {
        let response = json!({"access_token": "a", "token_type": "Bearer", "expires_in": 3600,
            "scope": "read:/a write:/b", "refresh_token": "r", "id_token": "i"});
        let (used, rt, at) = shape_use(response.as_object().unwrap().clone(), 1000);
        assert_eq!(rt.as_deref(), Some("r"));
        assert_eq!(at, Some(4600));
        assert_eq!(
            Value::Object(used),
            json!({"access_token": "a", "token_type": "Bearer", "expires_in": 3600,
                "scope": ["read:/a", "write:/b"], "expires_at": 4600, "id_token": "i"})
        );
    }
}
