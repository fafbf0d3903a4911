//! Token endpoint responses (RFC 6749 §5.1) and error responses (§5.2).

use crate::OidcError;
use credkeeper_core::{Secret, Timestamp};
use serde::Deserialize;

/// A successful token response.
#[derive(Debug, Deserialize)]
pub struct TokenResponse {
    pub access_token: Secret,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<i64>,
    #[serde(default)]
    pub refresh_token: Option<Secret>,
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub id_token: Option<Secret>,
    /// RFC 8693 §2.2.1.
    #[serde(default)]
    pub issued_token_type: Option<String>,
}

impl TokenResponse {
    /// When the access token expires, from `expires_in` counted from `received`.
    pub fn expires_at(&self, received: Timestamp) -> Option<Timestamp> {
        self.expires_in.map(|s| received.plus_secs(s))
    }
}

/// An OAuth error in a JSON body, if there is one.
pub(crate) fn oauth_error(value: &serde_json::Value) -> Option<OidcError> {
    let code = value.get("error")?.as_str()?;
    Some(OidcError::OAuth {
        code: code.to_string(),
        description: value
            .get("error_description")
            .and_then(|d| d.as_str())
            .map(str::to_string),
    })
}

/// The body of a successful answer; an OAuth error body or a non-2xx status is an error.
pub(crate) fn success(
    url: &str,
    status: u16,
    body: serde_json::Value,
) -> Result<serde_json::Value, OidcError> {
    if let Some(e) = oauth_error(&body) {
        return Err(e);
    }
    if !(200..300).contains(&status) {
        return Err(OidcError::Status {
            url: url.to_string(),
            status,
        });
    }
    Ok(body)
}

/// A token endpoint answer kept whole (every member, as an HTCondor credential file keeps
/// it), after the checks [`parse`] makes: an OAuth error body, a non-2xx status, or no
/// `access_token` is an error.
pub fn parse_whole(
    url: &str,
    status: u16,
    body: serde_json::Value,
) -> Result<serde_json::Map<String, serde_json::Value>, OidcError> {
    match success(url, status, body)? {
        serde_json::Value::Object(m)
            if m.get("access_token")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|t| !t.is_empty()) =>
        {
            Ok(m)
        }
        _ => Err(OidcError::BadResponse {
            url: url.to_string(),
            what: "token response",
            reason: "no access_token".into(),
        }),
    }
}

/// Interpret a token endpoint answer.
pub(crate) fn parse(
    url: &str,
    status: u16,
    body: serde_json::Value,
) -> Result<TokenResponse, OidcError> {
    let body = success(url, status, body)?;
    let response: TokenResponse =
        serde_json::from_value(body).map_err(|e| OidcError::BadResponse {
            url: url.to_string(),
            what: "token response",
            reason: e.to_string(),
        })?;
    if response.access_token.is_empty() {
        return Err(OidcError::BadResponse {
            url: url.to_string(),
            what: "token response",
            reason: "empty access_token".into(),
        });
    }
    Ok(response)
}
