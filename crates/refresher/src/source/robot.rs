//! A robot's login at a credkeeper broker: a robot secret (refused if others can read its
//! file), a JWT file read again at each request (a Kubernetes service-account token), or
//! the Kerberos keytab (a Negotiate login with mutual authentication).

use super::negotiate::KeytabNegotiator;
use credkeeper_core::Secret;
use credkeeper_kerberos::{Initiator, KerberosError};
use credkeeper_oidc::broker::{BrokerAuth, BrokerClient};
use credkeeper_oidc::{Http, OidcError, UrlPolicy};
use credkeeper_sink::SinkError;
use credkeeper_sink::perm::PermError;
use std::path::Path;

/// How a robot proves itself to a broker; at most one of the three is used, in the order
/// secret, JWT, keytab.
#[derive(Default)]
pub struct RobotLogin<'a> {
    pub robot: Option<&'a str>,
    pub secret_file: Option<&'a Path>,
    pub keytab: Option<&'a Path>,
    /// The keytab's principal (default: its first).
    pub principal: Option<&'a str>,
    pub ccache: Option<&'a str>,
    pub jwt_file: Option<&'a Path>,
}

/// Why a robot's login could not be set up. Never quotes a secret.
#[derive(Debug, thiserror::Error)]
pub enum RobotLoginError {
    #[error(transparent)]
    SecretFile(#[from] PermError),
    #[error("--secret-file needs --robot NAME")]
    SecretWithoutRobot,
    #[error(transparent)]
    JwtFile(#[from] SinkError),
    #[error(transparent)]
    Keytab(#[from] KerberosError),
    #[error(
        "--server needs the robot's credentials: -k/--keytab FILE (or KRB5_KTNAME), --jwt-file FILE, or --robot NAME with --secret-file FILE"
    )]
    NoCredentials,
    #[error(transparent)]
    Client(#[from] OidcError),
}

impl RobotLogin<'_> {
    /// The Kerberos credential from the keytab (checked: missing or open to others is
    /// refused before anything goes out); `None` without a keytab.
    pub fn initiator(&self) -> Result<Option<Initiator>, KerberosError> {
        self.keytab
            .map(|keytab| Initiator::from_keytab(keytab, self.principal, self.ccache))
            .transpose()
    }

    /// A client of the broker at `server` that authenticates as this robot.
    pub fn broker_client(
        &self,
        server: &str,
        http: Http,
        policy: UrlPolicy,
    ) -> Result<BrokerClient, RobotLoginError> {
        let auth = match (self.robot, self.secret_file, self.jwt_file) {
            (Some(robot), Some(secret_file), _) => BrokerAuth::Secret {
                robot: robot.to_string(),
                secret: Secret::new(credkeeper_sink::perm::read_private(
                    secret_file,
                    "robot secret file",
                )?),
            },
            (_, Some(_), _) => return Err(RobotLoginError::SecretWithoutRobot),
            (_, None, Some(path)) => {
                // Readable now (a clear error before anything runs), read again at each request.
                credkeeper_sink::read(path)?;
                BrokerAuth::BearerFile(path.to_path_buf())
            }
            _ => match self.initiator()? {
                Some(initiator) => BrokerAuth::Negotiate(Box::new(KeytabNegotiator {
                    initiator,
                    service: "HTTP",
                })),
                None => return Err(RobotLoginError::NoCredentials),
            },
        };
        Ok(BrokerClient::new(http, server, policy, auth)?)
    }
}
