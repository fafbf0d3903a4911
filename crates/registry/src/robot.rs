//! This host's robot at a credkeeper broker as a keychain source: the broker gives the
//! robot an identity token for a registry whose token server it is.

use crate::keychain::{KeychainError, RobotIdentity};
use credkeeper_core::Secret;
use credkeeper_refresher::source::robot::RobotLogin;
use std::path::PathBuf;

/// The robot's broker and credential, as the credential helper finds them in its
/// environment (it has no flags of its own).
pub struct BrokerIdentity {
    server: String,
    keytab: Option<PathBuf>,
    jwt: Option<PathBuf>,
    robot: Option<String>,
    secret: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    insecure_loopback: bool,
}

fn robot_error(e: impl std::fmt::Display) -> KeychainError {
    KeychainError::Source(e.to_string())
}

impl BrokerIdentity {
    /// `CREDKEEPER_SERVER` with `KRB5_KTNAME` (a keytab), `CREDKEEPER_JWT_FILE`, or
    /// `CREDKEEPER_ROBOT` and `CREDKEEPER_SECRET_FILE` (with `CREDKEEPER_CAFILE`,
    /// `CREDKEEPER_INSECURE_LOOPBACK`). `None` without a server or a robot credential.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<BrokerIdentity> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let path = |k: &str| var(k).map(PathBuf::from);
        let server = var("CREDKEEPER_SERVER")?;
        let (keytab, jwt, secret) = (
            path("KRB5_KTNAME"),
            path("CREDKEEPER_JWT_FILE"),
            path("CREDKEEPER_SECRET_FILE"),
        );
        if keytab.is_none() && jwt.is_none() && secret.is_none() {
            return None;
        }
        Some(BrokerIdentity {
            server,
            keytab,
            jwt,
            robot: var("CREDKEEPER_ROBOT"),
            secret,
            ca_file: path("CREDKEEPER_CAFILE"),
            insecure_loopback: var("CREDKEEPER_INSECURE_LOOPBACK")
                .is_some_and(|v| v == "true" || v == "1"),
        })
    }

    async fn ask(
        &self,
        host: &str,
        trace: &mut Vec<String>,
    ) -> Result<Option<Secret>, KeychainError> {
        let http = credkeeper_oidc::Http::with_ca_file(
            self.ca_file.as_deref(),
            credkeeper_oidc::Roots::Only,
        )
        .map_err(robot_error)?;
        let Some(challenge) = crate::bearer::challenge(&http, host).await else {
            trace.push(format!(
                "{}: {host} asks for no Bearer token",
                self.describe()
            ));
            return Ok(None);
        };
        let login = RobotLogin {
            robot: self.robot.as_deref(),
            secret_file: self.secret.as_deref(),
            keytab: self.keytab.as_deref(),
            jwt_file: self.jwt.as_deref(),
            ..Default::default()
        };
        let policy = credkeeper_oidc::UrlPolicy {
            allow_insecure_loopback: self.insecure_loopback,
        };
        let client = login
            .broker_client(&self.server, http, policy)
            .map_err(robot_error)?;
        let service = challenge.service.as_deref().unwrap_or(host);
        let token = client
            .registry_identity(&challenge.realm, service)
            .await
            .map_err(robot_error)?;
        trace.push(match &token {
            Some(_) => format!("{}: an identity token for {service}", self.describe()),
            None => format!(
                "{}: {host}'s token server is {}, not this broker",
                self.describe(),
                challenge.realm
            ),
        });
        Ok(token)
    }
}

impl RobotIdentity for BrokerIdentity {
    fn describe(&self) -> String {
        format!("the robot's identity at {}", self.server)
    }

    fn identity_token(
        &self,
        host: &str,
        trace: &mut Vec<String>,
    ) -> Result<Option<Secret>, KeychainError> {
        // The keychain is synchronous (a credential helper is one short process).
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(robot_error)?
            .block_on(self.ask(host, trace))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn a_robot_identity_needs_a_server_and_a_credential() {
        assert!(BrokerIdentity::from_env(env(&[("KRB5_KTNAME", "/k")])).is_none());
        assert!(BrokerIdentity::from_env(env(&[("CREDKEEPER_SERVER", "https://b")])).is_none());
        // An empty variable is an unset one.
        assert!(
            BrokerIdentity::from_env(env(&[
                ("CREDKEEPER_SERVER", "https://b"),
                ("KRB5_KTNAME", "")
            ]))
            .is_none()
        );
        let id = BrokerIdentity::from_env(env(&[
            ("CREDKEEPER_SERVER", "https://b"),
            ("CREDKEEPER_JWT_FILE", "/var/run/secrets/token"),
            ("CREDKEEPER_INSECURE_LOOPBACK", "1"),
        ]))
        .unwrap();
        assert_eq!(id.describe(), "the robot's identity at https://b");
        assert_eq!(id.jwt.as_deref(), Some(Path::new("/var/run/secrets/token")));
        assert!(id.insecure_loopback);
    }
}
