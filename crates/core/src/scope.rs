//! Scopes with SciTokens and WLCG semantics.
//!
//! A scope is either plain (`openid`, `compute.read`) or an authorization with a path
//! (`read:/data`, `storage.create:/home/alice`). A granted path covers every path below it
//! on a segment boundary: `read:/data` covers `read:/data/run1` but not `read:/database`.
//! Authorizations also cover each other where the profiles say so: `storage.modify`
//! includes `storage.create`, `storage.stage` includes `storage.read`, and the SciTokens
//! names `read`/`write` are the WLCG `storage.read` and `storage.modify`.

use std::fmt;

/// One scope, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    authz: String,
    /// `Some` for path-scoped authorizations, normalised (no `.`/`..`, no trailing `/`).
    path: Option<String>,
}

/// Authorizations that always carry a path; a bare one means the whole namespace (`/`).
const PATH_AUTHZ: &[&str] = &[
    "read",
    "write",
    "storage.read",
    "storage.create",
    "storage.modify",
    "storage.stage",
];

/// Why a scope is not taken.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("scope `{scope}` has a path that climbs above `/`")]
    ClimbsAboveRoot { scope: String },
    #[error(
        "scope `{scope}` has `{found}` in its path: a percent-encoded `.`, `/`, `\\` or `%` is refused, since a service that decodes the path would read another path than the one granted"
    )]
    EncodedPath { scope: String, found: String },
    #[error(
        "scope `{scope}` has a `.` or `..` segment in its path, which the token would carry as written; ask for `{normalised}`"
    )]
    DotSegment { scope: String, normalised: String },
}

impl Scope {
    /// Parse one scope. Returns `None` where [`Scope::read`] says why not.
    pub fn parse(text: &str) -> Option<Scope> {
        Scope::read(text).ok()
    }

    /// Parse one scope, `.` and `..` segments of its path resolved. A path that climbs
    /// above `/`, or that holds a percent-encoded `.`, `/`, `\` or `%` (which a storage
    /// service may decode into a different path after the prefix check), can never be
    /// granted.
    pub fn read(text: &str) -> Result<Scope, ScopeError> {
        let (authz, path) = match text.split_once(':') {
            Some((a, p)) if p.starts_with('/') => (a, Some(p)),
            _ => (text, None),
        };
        let path = match path {
            Some(p) => {
                if let Some(found) = encoded_separator(p) {
                    return Err(ScopeError::EncodedPath {
                        scope: text.to_string(),
                        found: found.to_string(),
                    });
                }
                Some(
                    normalise_path(p).ok_or_else(|| ScopeError::ClimbsAboveRoot {
                        scope: text.to_string(),
                    })?,
                )
            }
            None if PATH_AUTHZ.contains(&authz) => Some("/".to_string()),
            None => None,
        };
        Ok(Scope {
            authz: authz.to_string(),
            path,
        })
    }

    /// A scope asked of an issuer, which signs it as written: as [`Scope::read`], and
    /// its path without `.` or `..` segments, so that what a relying service reads is
    /// what was checked.
    pub fn requested(text: &str) -> Result<Scope, ScopeError> {
        let scope = Scope::read(text)?;
        let dotted = text.split_once(':').is_some_and(|(_, p)| {
            p.starts_with('/') && p.split('/').any(|s| s == "." || s == "..")
        });
        if dotted {
            return Err(ScopeError::DotSegment {
                scope: text.to_string(),
                normalised: scope.to_string(),
            });
        }
        Ok(scope)
    }

    pub fn authz(&self) -> &str {
        &self.authz
    }

    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Whether holding `self` grants what `requested` asks for.
    pub fn covers(&self, requested: &Scope) -> bool {
        if !authz_covers(&self.authz, &requested.authz) {
            return false;
        }
        match (&self.path, &requested.path) {
            (None, None) => true,
            (Some(granted), Some(wanted)) => path_covers(granted, wanted),
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}:{}", self.authz, p),
            None => f.write_str(&self.authz),
        }
    }
}

/// SciTokens `read` is WLCG `storage.read`; SciTokens `write` (create, overwrite,
/// delete) is what WLCG calls `storage.modify`.
fn canonical_authz(a: &str) -> &str {
    match a {
        "read" => "storage.read",
        "write" => "storage.modify",
        other => other,
    }
}

fn authz_covers(granted: &str, wanted: &str) -> bool {
    let (g, w) = (canonical_authz(granted), canonical_authz(wanted));
    g == w
        || matches!(
            (g, w),
            ("storage.modify", "storage.create") | ("storage.stage", "storage.read")
        )
}

fn path_covers(granted: &str, wanted: &str) -> bool {
    granted == "/"
        || wanted == granted
        || (wanted.starts_with(granted) && wanted.as_bytes()[granted.len()] == b'/')
}

/// The first percent-encoded `.`, `/`, `\` or `%` in `path`, as written (`%2E`, `%2f`).
fn encoded_separator(path: &str) -> Option<&str> {
    let bytes = path.as_bytes();
    (0..bytes.len().saturating_sub(2)).find_map(|i| {
        let code = path.get(i + 1..i + 3)?;
        (bytes[i] == b'%' && matches!(u8::from_str_radix(code, 16), Ok(b'.' | b'/' | b'\\' | b'%')))
            .then(|| &path[i..i + 3])
    })
}

/// Resolve `.`, `..` and repeated or trailing slashes; `None` if the path leaves `/`.
fn normalise_path(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// A set of scopes, as in a token's `scope` claim or a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// Parse a space-separated scope string (RFC 6749 §3.3). Scopes whose path climbs
    /// above `/` are dropped: they cannot be granted and must not be trusted.
    pub fn parse(text: &str) -> ScopeSet {
        ScopeSet(text.split_whitespace().filter_map(Scope::parse).collect())
    }

    pub fn from_list<'a>(items: impl IntoIterator<Item = &'a str>) -> ScopeSet {
        ScopeSet(items.into_iter().filter_map(Scope::parse).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// The requested scopes that nothing in `self` covers.
    pub fn missing<'a>(&self, requested: &'a ScopeSet) -> Vec<&'a Scope> {
        requested
            .0
            .iter()
            .filter(|r| !self.0.iter().any(|g| g.covers(r)))
            .collect()
    }

    pub fn covers(&self, requested: &ScopeSet) -> bool {
        self.missing(requested).is_empty()
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(scopes: I) -> ScopeSet {
        ScopeSet(scopes.into_iter().collect())
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers(granted: &str, requested: &str) -> bool {
        ScopeSet::parse(granted).covers(&ScopeSet::parse(requested))
    }

    #[test]
    fn a_granted_path_covers_the_paths_below_it() {
        assert!(covers("read:/data", "read:/data/run1"));
        assert!(covers("read:/data", "read:/data"));
        assert!(covers("read:/data/", "read:/data/run1/file"));
        assert!(!covers("read:/data", "read:/database"));
        assert!(!covers("read:/data/run1", "read:/data"));
    }

    #[test]
    fn the_root_covers_everything() {
        assert!(covers("storage.read:/", "storage.read:/any/where"));
        assert!(covers("storage.read:/", "storage.read"));
    }

    #[test]
    fn dot_segments_cannot_escape_a_grant() {
        assert!(!covers("read:/data", "read:/data/../etc/passwd"));
        assert!(covers("read:/data", "read:/data/./run1//x"));
        assert!(Scope::parse("read:/../x").is_none());
    }

    #[test]
    fn percent_encoded_dots_and_slashes_are_never_taken() {
        for (text, found) in [
            ("read:/r1/%2e%2e/r2", "%2e"),
            ("read:/r1/%2E%2E/r2", "%2E"),
            ("read:/r1%2f..%2fr2", "%2f"),
            ("read:/r1/..%5cr2", "%5c"),
            ("read:/r1/%252e%252e/r2", "%25"),
        ] {
            assert_eq!(
                Scope::read(text),
                Err(ScopeError::EncodedPath {
                    scope: text.into(),
                    found: found.into()
                })
            );
            assert!(Scope::parse(text).is_none());
        }
        // Dropped from any set: a token or a policy holding one grants nothing by it.
        assert!(ScopeSet::parse("read:/r1/%2e%2e/r2").is_empty());
        assert!(!covers("read:/r1/%2e%2e/r2", "read:/r2"));
        // Other escapes are plain characters of a name.
        assert!(covers("read:/r1", "read:/r1/a%20b"));
        assert!(Scope::read("read:/r1/50%").is_ok());
        assert!(Scope::read("read:/r1/%2").is_ok());
    }

    #[test]
    fn a_requested_path_is_taken_only_as_written() {
        assert_eq!(
            Scope::requested("read:/d/x/../y"),
            Err(ScopeError::DotSegment {
                scope: "read:/d/x/../y".into(),
                normalised: "read:/d/y".into()
            })
        );
        assert!(matches!(
            Scope::requested("read:/d/./y"),
            Err(ScopeError::DotSegment { .. })
        ));
        assert!(matches!(
            Scope::requested("read:/../etc"),
            Err(ScopeError::ClimbsAboveRoot { .. })
        ));
        assert!(Scope::requested("read:/d/y.txt").is_ok());
        assert!(Scope::requested("read:/d/..y").is_ok());
        assert!(Scope::requested("storage.read").is_ok());
        assert!(Scope::requested("compute.read").is_ok());
    }

    #[test]
    fn authorizations_cover_as_the_profiles_say() {
        assert!(covers("storage.modify:/d", "storage.create:/d/x"));
        assert!(!covers("storage.create:/d", "storage.modify:/d"));
        assert!(covers("storage.stage:/", "storage.read:/x"));
        assert!(!covers("storage.read:/", "storage.stage:/x"));
        assert!(covers("read:/d", "storage.read:/d/x"));
        assert!(covers("storage.read:/d", "read:/d/x"));
        assert!(covers("write:/d", "storage.create:/d"));
        assert!(covers("write:/d", "storage.modify:/d"));
        assert!(!covers("read:/d", "write:/d"));
        assert!(!covers("storage.read:/", "storage.create:/"));
    }

    #[test]
    fn plain_scopes_match_exactly() {
        assert!(covers(
            "openid offline_access compute.read",
            "compute.read openid"
        ));
        assert!(!covers("compute.read", "compute.modify"));
        assert!(!covers("openid", "read:/x"));
        assert!(covers("anything", ""));
    }

    #[test]
    fn missing_names_what_is_not_covered() {
        let granted = ScopeSet::parse("read:/a");
        let wanted = ScopeSet::parse("read:/a/b read:/c");
        let missing: Vec<String> = granted
            .missing(&wanted)
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(missing, ["read:/c"]);
    }
}
