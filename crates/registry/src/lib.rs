//! credkeeper-registry: credentials for container registries.
//!
//! What it is for: the keychain ([`keychain`]) that finds a registry credential in one
//! stated order — explicit, docker config, containers `auth.json`, Kubernetes
//! `dockerconfigjson` secret volumes, credkeeper's own store — with the file formats
//! ([`dockerconfig`]), host naming rules ([`host`]), and the Docker credential-helper
//! protocol ([`helper`]) that `docker-credential-credkeeper` speaks, and the registry's
//! Bearer challenge ([`bearer`]); a credkeeper broker as the robot's source of identity
//! tokens ([`robot`]).
//!
//! What it is not: a registry client. It hands credentials to whatever pulls.

pub mod bearer;
pub mod dockerconfig;
pub mod helper;
pub mod host;
pub mod keychain;
pub mod kube;
pub mod kubelet;
pub mod robot;

use credkeeper_core::Secret;

/// A registry credential. `username == "<token>"` marks `secret` as an identity token
/// (a refresh token for the registry's token service), as the helper protocol does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub secret: Secret,
}

impl Credential {
    pub fn is_identity_token(&self) -> bool {
        self.username == "<token>"
    }
}
