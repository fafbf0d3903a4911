//! Request bodies as htgettoken sends them: a JSON object, or nothing at all.

use super::Failure;
use credkeeper_core::parse_seconds;
use serde_json::Value;

/// The JSON object in a body that may come without a content type (htgettoken sends
/// none) or be empty.
pub(super) fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, Failure> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Default::default());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(Failure::new(400, "the request body is not a JSON object")),
    }
}

pub(super) fn str_field(map: &serde_json::Map<String, Value>, key: &str) -> Option<String> {
    map.get(key).and_then(Value::as_str).map(str::to_string)
}

/// `token/create`'s `ttl`: seconds or a duration string, at most `max` (the default).
pub(super) fn requested_ttl(
    body: &serde_json::Map<String, Value>,
    max: i64,
) -> Result<i64, Failure> {
    Ok(match body.get("ttl") {
        None => max,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| Failure::new(400, "ttl: not a number of seconds"))?,
        Some(Value::String(s)) => parse_seconds(s)
            .ok_or_else(|| Failure::new(400, format!("ttl: `{s}` is not a duration")))?,
        Some(_) => return Err(Failure::new(400, "ttl: not a duration")),
    }
    .clamp(1, max))
}

/// `token/create`'s `policies`: the names in the list, if there is one.
pub(super) fn requested_policies(body: &serde_json::Map<String, Value>) -> Option<Vec<String>> {
    body.get("policies").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    })
}

/// What the Vault API's handlers take from a request body, read as they read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VaultBody {
    /// `token/create`'s `ttl`, in `1..=max_ttl`.
    pub ttl: i64,
    /// `token/create`'s `policies`.
    pub policies: Option<Vec<String>>,
    /// The `secret` write's `refresh_token`.
    pub refresh_token: Option<String>,
    /// `auth_url`'s and `poll`'s `client_nonce`.
    pub client_nonce: Option<String>,
    /// `poll`'s `state`.
    pub state: Option<String>,
}

/// Parse a Vault API request body as the handlers do: a JSON object (an empty or blank
/// body is `{}`), then the fields above. `Err` is the status and message the handler
/// would answer. The handlers' own parsing, callable without a broker (for the fuzz
/// targets under fuzz/).
pub fn parse_body(body: &[u8], max_ttl: i64) -> Result<VaultBody, (u16, String)> {
    let parse = || -> Result<VaultBody, Failure> {
        let body = json_body(body)?;
        Ok(VaultBody {
            ttl: requested_ttl(&body, max_ttl)?,
            policies: requested_policies(&body),
            refresh_token: str_field(&body, "refresh_token"),
            client_nonce: str_field(&body, "client_nonce"),
            state: str_field(&body, "state"),
        })
    };
    parse().map_err(|f| (f.status, f.message))
}
