//! docker `config.json` and containers `auth.json`: `auths` (base64 `user:pass` in `auth`,
//! or `identitytoken`), `credHelpers` per host, `credsStore` for all hosts.

use crate::{Credential, host};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_core::Secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// No `Debug`: `auth` is a password in base64.
#[derive(Default, Deserialize)]
pub struct AuthEntry {
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub identitytoken: Option<String>,
}

#[derive(Default, Deserialize)]
pub struct DockerConfig {
    #[serde(default)]
    pub auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    pub cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    pub creds_store: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Parse { path: String, source: ParseError },
    #[error("{path}: auths.{host:?}.auth is not base64 of `user:password`")]
    BadAuth { path: String, host: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Why bytes are not a docker config, and where. It never quotes the text: serde's own
/// message would, and the offending value may be an `auth`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at line {line}, column {column}")]
pub struct ParseError {
    pub problem: Problem,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Unreadable,
    NotJson,
    /// JSON, but a value of the wrong type (e.g. `auths.<host>` not an object).
    NotADockerConfig,
    CutShort,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::Unreadable => "unreadable",
            Problem::NotJson => "not JSON",
            Problem::NotADockerConfig => "not a docker config (a value of the wrong type)",
            Problem::CutShort => "cut short",
        })
    }
}

/// What a config says about one host.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Credential(Credential),
    /// Ask this helper (`docker-credential-<name>`).
    Helper(String),
    Nothing,
}

impl DockerConfig {
    /// Read a config file; `None` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<DockerConfig>, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        DockerConfig::parse(text.as_bytes())
            .map(Some)
            .map_err(|source| ConfigError::Parse {
                path: path.display().to_string(),
                source,
            })
    }

    /// Parse a config's JSON.
    pub fn parse(bytes: &[u8]) -> Result<DockerConfig, ParseError> {
        use serde_json::error::Category;
        serde_json::from_slice(bytes).map_err(|e| ParseError {
            problem: match e.classify() {
                Category::Io => Problem::Unreadable,
                Category::Syntax => Problem::NotJson,
                Category::Data => Problem::NotADockerConfig,
                Category::Eof => Problem::CutShort,
            },
            line: e.line(),
            column: e.column(),
        })
    }

    /// The answer for `wanted` (a normalised host). A `credHelpers` entry wins over
    /// `auths` (as docker and skopeo do); `credsStore` covers hosts without either.
    pub fn lookup(&self, wanted: &str, path: &Path) -> Result<Answer, ConfigError> {
        if let Some((_, helper)) = self
            .cred_helpers
            .iter()
            .find(|(k, _)| host::normalise(k) == wanted)
        {
            return Ok(Answer::Helper(helper.clone()));
        }
        if let Some((key, entry)) = self
            .auths
            .iter()
            .find(|(k, _)| host::normalise(k) == wanted)
        {
            if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
                return Ok(Answer::Credential(Credential {
                    username: "<token>".into(),
                    secret: Secret::new(token),
                }));
            }
            if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let malformed = || ConfigError::BadAuth {
                    path: path.display().to_string(),
                    host: key.clone(),
                };
                let decoded = STANDARD.decode(auth.trim()).map_err(|_| malformed())?;
                let text = String::from_utf8(decoded).map_err(|_| malformed())?;
                let (user, pass) = text.split_once(':').ok_or_else(malformed)?;
                return Ok(Answer::Credential(Credential {
                    username: user.to_string(),
                    secret: Secret::new(pass),
                }));
            }
        }
        Ok(match &self.creds_store {
            Some(store) if !store.is_empty() => Answer::Helper(store.clone()),
            _ => Answer::Nothing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_malformed_config_is_named_without_quoting_its_values() {
        // `auths.h` should be an object; serde's own message would quote the string.
        let err = DockerConfig::parse(br#"{"auths":{"h":"dXNlcjpwYXNzd29yZA=="}}"#)
            .err()
            .unwrap();
        assert_eq!(err.problem, Problem::NotADockerConfig);
        let text = err.to_string();
        assert!(text.starts_with("not a docker config"), "{text}");
        assert!(!text.contains("dXNlcjpw"), "{text}");
        let err = DockerConfig::parse(b"{\"auths\": ").err().unwrap();
        assert_eq!((err.problem, err.line), (Problem::CutShort, 1));
        assert!(err.to_string().starts_with("cut short at line 1"), "{err}");
    }

    fn config(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn auths_helpers_and_store_answer_in_docker_order() {
        let p = Path::new("config.json");
        let c = config(
            r#"{"auths": {"http://127.0.0.1:5000/v2/": {"auth": "dGVzdGVyOnMzY3JldA=="},
                         "ghcr.io": {"identitytoken": "rt"},
                         "quay.io": {"auth": "dTpw"}},
                "credHelpers": {"quay.io": "quayhelper"},
                "credsStore": "pass"}"#,
        );
        match c.lookup("127.0.0.1:5000", p).unwrap() {
            Answer::Credential(cred) => {
                assert_eq!(cred.username, "tester");
                assert_eq!(cred.secret.expose(), "s3cret");
            }
            other => panic!("{other:?}"),
        }
        match c.lookup("ghcr.io", p).unwrap() {
            Answer::Credential(cred) => assert!(cred.is_identity_token()),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.lookup("quay.io", p).unwrap(),
            Answer::Helper("quayhelper".into())
        );
        assert_eq!(
            c.lookup("elsewhere.io", p).unwrap(),
            Answer::Helper("pass".into())
        );
        assert_eq!(config("{}").lookup("x.io", p).unwrap(), Answer::Nothing);
    }

    #[test]
    fn a_malformed_auth_is_an_error_that_names_the_entry() {
        let c = config(r#"{"auths": {"r.io": {"auth": "bm9jb2xvbg=="}}}"#);
        let err = c
            .lookup("r.io", Path::new("/x/config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/x/config.json") && err.contains("r.io"),
            "{err}"
        );
    }
}
