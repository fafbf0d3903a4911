//! Registry access as a token's `access` claim carries it and a robot's `registry` policy
//! names it: `repository:<name>:<actions>` (Docker's token specification).

use serde_json::{Value, json};

/// One entry of a token's `access` claim, or of a robot's registry policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl Access {
    /// `repository:team/app:pull,push` (the name may itself hold `:` for a port-less
    /// registry host prefix; the last `:` separates the actions).
    pub fn parse(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions
                .split(',')
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
        })
    }

    /// `repository` (or distribution's `repository(<class>)`): the name is a repository's.
    pub fn is_repository(&self) -> bool {
        self.kind == "repository" || self.kind.starts_with("repository(")
    }

    pub fn claim(&self) -> Value {
        json!({ "type": self.kind, "name": self.name, "actions": self.actions })
    }
}
