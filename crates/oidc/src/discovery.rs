//! OpenID Provider / OAuth2 authorization-server metadata (OIDC Discovery 1.0, RFC 8414).

use crate::{Http, OidcError};
use serde::Deserialize;
use std::net::IpAddr;
use url::Url;

/// Which URLs credkeeper will talk to. HTTPS always; plain HTTP only to a loopback host
/// and only when the caller asked for it (tests, a broker on the same machine).
#[derive(Clone, Copy, Debug, Default)]
pub struct UrlPolicy {
    pub allow_insecure_loopback: bool,
}

impl UrlPolicy {
    pub fn check(&self, what: &str, url: &str) -> Result<Url, OidcError> {
        let parsed = Url::parse(url)
            .map_err(|e| OidcError::InsecureUrl(format!("{what} {url:?} is not a URL: {e}")))?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if is_loopback(&parsed) => {
                if self.allow_insecure_loopback {
                    Ok(parsed)
                } else {
                    Err(OidcError::InsecureUrl(format!(
                        "{what} {url} is plain HTTP; allowed only for loopback issuers with --insecure-loopback"
                    )))
                }
            }
            _ => Err(OidcError::InsecureUrl(format!(
                "{what} {url} is not HTTPS; credkeeper sends credentials only over HTTPS"
            ))),
        }
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// The parts of the issuer metadata credkeeper uses.
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
pub struct ProviderMetadata {
    pub issuer: String,
    pub token_endpoint: String,
    #[serde(default)]
    pub authorization_endpoint: Option<String>,
    #[serde(default)]
    pub device_authorization_endpoint: Option<String>,
    #[serde(default)]
    pub jwks_uri: Option<String>,
    #[serde(default)]
    pub revocation_endpoint: Option<String>,
    #[serde(default)]
    pub grant_types_supported: Option<Vec<String>>,
}

/// The discovery URL for an issuer (OIDC Discovery §4).
pub fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// Fetch and check the metadata of `issuer`: the document must name the same issuer,
/// and every endpoint must satisfy `policy`.
pub async fn discover(
    http: &Http,
    issuer: &str,
    policy: UrlPolicy,
) -> Result<ProviderMetadata, OidcError> {
    policy.check("issuer", issuer)?;
    let meta: ProviderMetadata = http
        .get_json(&discovery_url(issuer), "discovery document")
        .await?;
    if meta.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
        return Err(OidcError::IssuerMismatch {
            expected: issuer.to_string(),
            found: meta.issuer,
        });
    }
    check_endpoints(&meta, policy)?;
    Ok(meta)
}

/// [`discover`], served from `cache` when it was fetched less than an hour ago. The
/// cached document is checked against `policy` again: a policy can be stricter now.
pub async fn discover_cached(
    http: &Http,
    issuer: &str,
    policy: UrlPolicy,
    cache: &crate::DiskCache,
) -> Result<ProviderMetadata, OidcError> {
    if let Some(meta) = cache.get::<ProviderMetadata>("discovery", issuer)
        && check_endpoints(&meta, policy).is_ok()
        && policy.check("issuer", issuer).is_ok()
    {
        return Ok(meta);
    }
    let meta = discover(http, issuer, policy).await?;
    cache.put("discovery", issuer, &meta);
    Ok(meta)
}

fn check_endpoints(meta: &ProviderMetadata, policy: UrlPolicy) -> Result<(), OidcError> {
    policy.check("token endpoint", &meta.token_endpoint)?;
    for (what, url) in [
        ("authorization endpoint", &meta.authorization_endpoint),
        (
            "device authorization endpoint",
            &meta.device_authorization_endpoint,
        ),
        ("JWKS URI", &meta.jwks_uri),
        ("revocation endpoint", &meta.revocation_endpoint),
    ] {
        if let Some(url) = url {
            policy.check(what, url)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_explicitly_allowed_loopback_http() {
        let strict = UrlPolicy::default();
        let loose = UrlPolicy {
            allow_insecure_loopback: true,
        };
        assert!(strict.check("issuer", "https://iam.example/").is_ok());
        let err = strict
            .check("issuer", "http://127.0.0.1:8080")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--insecure-loopback"), "{err}");
        assert!(loose.check("issuer", "http://127.0.0.1:8080").is_ok());
        assert!(loose.check("issuer", "http://localhost:1").is_ok());
        assert!(loose.check("issuer", "http://[::1]:1").is_ok());
        let err = loose
            .check("issuer", "http://iam.example")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not HTTPS"), "{err}");
        assert!(
            loose
                .check("issuer", "http://127.0.0.1.evil.example")
                .is_err()
        );
        assert!(strict.check("issuer", "not a url").is_err());
    }
}
