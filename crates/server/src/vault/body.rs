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
