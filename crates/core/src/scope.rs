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

impl Scope {
    /// Parse one scope. Returns `None` for a path that climbs above `/` with `..`,
    /// which can never be granted.
    pub fn parse(text: &str) -> Option<Scope> {
        let (authz, path) = match text.split_once(':') {
            Some((a, p)) if p.starts_with('/') => (a, Some(p)),
            _ => (text, None),
        };
        let path = match path {
            Some(p) => Some(normalise_path(p)?),
            None if PATH_AUTHZ.contains(&authz) => Some("/".to_string()),
            None => None,
        };
        Some(Scope {
            authz: authz.to_string(),
            path,
        })
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
