//! The registry side of the Bearer-token flow (distribution's token auth): the challenge a
//! registry answers with, as `WWW-Authenticate: Bearer realm="…",service="…",scope="…"`.

/// A parsed `Bearer` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: Option<String>,
    pub scope: Option<String>,
    pub error: Option<String>,
}

impl Challenge {
    /// Parse one `WWW-Authenticate` value; `None` unless it is a Bearer challenge with a
    /// realm. Quoted values may hold commas and escaped quotes (RFC 7235 quoted-string).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let mut params = std::collections::HashMap::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
            if name.is_empty() {
                break;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.peek().copied() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
            params.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
        }
        Some(Challenge {
            realm: params.remove("realm").filter(|r| !r.is_empty())?,
            service: params.remove("service"),
            scope: params.remove("scope"),
            error: params.remove("error"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        assert_eq!(c.scope.as_deref(), Some("repository:a/b:pull,push"));
        let e =
            Challenge::parse(r#"bearer realm="r",error="insufficient_scope",service=s"#).unwrap();
        assert_eq!(e.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(e.service.as_deref(), Some("s"));
        assert!(Challenge::parse(r#"Basic realm="registry""#).is_none());
        assert!(Challenge::parse(r#"Bearer service="x""#).is_none());
    }
}
