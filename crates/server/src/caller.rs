//! Who is asking: a robot that proved itself ([`Caller`], and how: [`Method`]), and whose
//! credentials a login or a session manages ([`Identity`]). Vocabulary only: proving it is
//! [`crate::auth`]'s job, deciding what it may get [`crate::policy`]'s.

use serde::{Deserialize, Serialize};

/// How a caller proved who it is (the audit log's `auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Secret,
    Kerberos,
    Jwt,
    /// A Vault-API token handed out after one of the others.
    VaultToken,
    /// A registry identity token handed out after one of the others.
    IdentityToken,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Secret => "secret",
            Method::Kerberos => "kerberos",
            Method::Jwt => "jwt",
            Method::VaultToken => "vault-token",
            Method::IdentityToken => "identity-token",
        }
    }
}

/// An authenticated robot.
#[derive(Clone, Debug)]
pub struct Caller {
    pub robot: String,
    pub method: Method,
}

/// Whose credentials a session manages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    User(String),
    Robot(String),
    /// A local user sent by the CredD with a key file (`/key/<hex>`).
    CredD {
        user: String,
        key: String,
    },
}

impl Identity {
    /// The store identity. Users are prefixed so no user name can reach a robot's
    /// credentials (robot names cannot contain `:`).
    pub fn store_name(&self) -> String {
        match self {
            Identity::User(u) | Identity::CredD { user: u, .. } => format!("user:{u}"),
            Identity::Robot(r) => r.clone(),
        }
    }

    /// How the pages name it.
    pub fn label(&self) -> String {
        match self {
            Identity::User(u) | Identity::CredD { user: u, .. } => u.clone(),
            Identity::Robot(r) => format!("robot {r}"),
        }
    }
}
