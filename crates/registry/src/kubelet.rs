//! The kubelet credential-provider plugin protocol (`credentialprovider.kubelet.k8s.io`
//! v1, and v1beta1 as older kubelets send it): a `CredentialProviderRequest` naming one
//! image on stdin, a `CredentialProviderResponse` with the registry's credential and how
//! long the kubelet may cache it on stdout. Nodes then need no docker config on disk.

use crate::keychain::Keychain;
use crate::{Credential, host};
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::Read;

/// Longest request accepted (a request is one image reference and a few fields).
const MAX_INPUT: u64 = 64 * 1024;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    api_version: String,
    kind: String,
    image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("the CredentialProviderRequest on standard input: {0}")]
    Request(String),
    #[error(transparent)]
    Keychain(#[from] crate::keychain::KeychainError),
}

/// Answer one request: the keychain's credential for the image's registry, cached by the
/// kubelet per registry for `cache_secs`; an empty `auth` when no source knows it (the
/// kubelet then pulls without credentials).
pub fn answer(
    input: &mut dyn Read,
    keychain: &Keychain,
    cache_secs: u64,
) -> Result<String, PluginError> {
    let mut text = String::new();
    input
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .map_err(|e| PluginError::Request(e.to_string()))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(PluginError::Request(format!(
            "larger than {MAX_INPUT} bytes"
        )));
    }
    let request: Request =
        serde_json::from_str(&text).map_err(|e| PluginError::Request(e.to_string()))?;
    if request.kind != "CredentialProviderRequest"
        || !request
            .api_version
            .starts_with("credentialprovider.kubelet.k8s.io/")
    {
        return Err(PluginError::Request(format!(
            "kind {} of {} is not a CredentialProviderRequest",
            request.kind, request.api_version
        )));
    }
    // An image reference, not a host: `nginx:1.25` is Docker Hub's, not host `nginx:1.25`.
    let (registry, _) = host::reference(&request.image);
    let mut trace = Vec::new();
    let auth = match keychain.lookup(&registry, &mut trace)? {
        Some(found) => {
            let Credential { username, secret } = found.credential;
            json!({ registry: { "username": username, "password": secret.expose() } })
        }
        None => json!({}),
    };
    let response: Value = json!({
        "apiVersion": request.api_version,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": format!("{cache_secs}s"),
        "auth": auth,
    });
    Ok(response.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keychain::Source;
    use credkeeper_core::Secret;

    fn keychain() -> Keychain {
        Keychain {
            sources: vec![Source::Explicit(Credential {
                username: "robot".into(),
                secret: Secret::new("s3cret"),
            })],
        }
    }

    #[test]
    fn a_request_gets_the_registrys_credential_and_a_cache_duration() {
        let request = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"registry.example:5000/team/app:1"}"#;
        let out: Value =
            serde_json::from_str(&answer(&mut request.as_bytes(), &keychain(), 300).unwrap())
                .unwrap();
        assert_eq!(out["kind"], "CredentialProviderResponse");
        assert_eq!(out["apiVersion"], "credentialprovider.kubelet.k8s.io/v1");
        assert_eq!(out["cacheKeyType"], "Registry");
        assert_eq!(out["cacheDuration"], "300s");
        assert_eq!(out["auth"]["registry.example:5000"]["username"], "robot");
        assert_eq!(out["auth"]["registry.example:5000"]["password"], "s3cret");
        // A Docker Hub short name is answered for docker.io.
        let short = r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest","image":"nginx:1.25"}"#;
        let out: Value =
            serde_json::from_str(&answer(&mut short.as_bytes(), &keychain(), 300).unwrap())
                .unwrap();
        assert_eq!(out["auth"]["docker.io"]["username"], "robot", "{out}");
        let empty = Keychain { sources: vec![] };
        let out: Value =
            serde_json::from_str(&answer(&mut request.as_bytes(), &empty, 300).unwrap()).unwrap();
        assert_eq!(out["auth"], json!({}));
    }

    #[test]
    fn malformed_or_foreign_requests_are_errors_that_name_the_problem() {
        for bad in [
            "",
            "not json",
            r#"{"apiVersion":"v1","kind":"Pod","image":"x"}"#,
            r#"{"apiVersion":"credentialprovider.kubelet.k8s.io/v1","kind":"CredentialProviderRequest"}"#,
        ] {
            let err = answer(&mut bad.as_bytes(), &keychain(), 1)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("the CredentialProviderRequest on standard input"),
                "{err}"
            );
            assert!(!err.contains("s3cret"));
        }
        let huge = format!(r#"{{"image":"{}"}}"#, "a".repeat(70_000));
        assert!(
            answer(&mut huge.as_bytes(), &keychain(), 1)
                .unwrap_err()
                .to_string()
                .contains("larger than")
        );
    }
}
