//! Who is calling: a robot proves itself with a secret (HTTP Basic), a Kerberos keytab
//! (HTTP Negotiate / SPNEGO) or a signed JWT from an issuer it is bound to (HTTP Bearer,
//! e.g. a Kubernetes service-account token). Each method maps to exactly one configured
//! robot; the policy that follows is the robot's, whatever the method.

use crate::broker::Broker;
use crate::config::Config;
use crate::refusal::Refusal;
use credkeeper_core::{Jwt, Secret};
use credkeeper_kerberos::{Acceptor, KerberosError};
use credkeeper_oidc::KeyCache;
use std::collections::HashMap;
use std::sync::Arc;

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

/// What a request carried in `Authorization`.
pub enum Presented {
    Basic { robot: String, secret: Secret },
    Negotiate(Vec<u8>),
    Bearer(Secret),
}

impl Presented {
    pub fn parse(value: &str) -> Option<Presented> {
        use base64::Engine;
        let (scheme, rest) = value.trim().split_once(' ')?;
        let rest = rest.trim();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (robot, secret) = decoded.split_once(':')?;
            Some(Presented::Basic {
                robot: robot.to_string(),
                secret: Secret::new(secret),
            })
        } else if scheme.eq_ignore_ascii_case("negotiate") {
            credkeeper_kerberos::parse_negotiate(value).map(Presented::Negotiate)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Presented::Bearer(Secret::new(rest)))
        } else {
            None
        }
    }

    /// The robot name to record when authentication fails (known only for Basic).
    pub fn claimed(&self) -> &str {
        match self {
            Presented::Basic { robot, .. } => robot,
            Presented::Negotiate(_) => "(kerberos)",
            Presented::Bearer(_) => "(jwt)",
        }
    }
}

/// The Kerberos acceptor and the principal → robot map.
pub struct KerberosAuth {
    acceptor: Arc<Acceptor>,
    principals: HashMap<String, String>,
}

impl KerberosAuth {
    /// From `server.kerberos_keytab`, with each robot's principal qualified with the
    /// default realm. `None` when no keytab is configured.
    pub fn from_config(config: &Config) -> Result<Option<KerberosAuth>, KerberosError> {
        let Some(keytab) = &config.server.kerberos_keytab else {
            return Ok(None);
        };
        let acceptor = Arc::new(Acceptor::from_keytab(keytab)?);
        let mut principals = HashMap::new();
        for r in &config.robots {
            if let Some(p) = &r.auth.kerberos_principal {
                principals.insert(credkeeper_kerberos::qualify(p)?, r.name.clone());
            }
        }
        Ok(Some(KerberosAuth {
            acceptor,
            principals,
        }))
    }

    /// The robot behind a Negotiate token, and the reply token proving the broker to it.
    pub async fn accept(&self, token: Vec<u8>) -> Result<(String, Option<Vec<u8>>), Refusal> {
        let acceptor = self.acceptor.clone();
        let accepted = tokio::task::spawn_blocking(move || acceptor.accept(&token))
            .await
            .map_err(|e| Refusal::internal(e.to_string()))?
            .map_err(|e| {
                if e.is_client_fault() {
                    Refusal::unauthenticated(format!("Kerberos: {e}"))
                } else {
                    Refusal::internal(format!("Kerberos: {e}"))
                }
            })?;
        match self.principals.get(&accepted.principal) {
            Some(robot) => Ok((robot.clone(), accepted.reply)),
            None => Err(Refusal::forbidden(format!(
                "Kerberos principal {} is not bound to any robot (set a robot's auth.kerberos_principal)",
                accepted.principal
            ))),
        }
    }
}

/// Robots that authenticate with a JWT: verified through the issuer's discovery and
/// JWKS, then `sub` (and `aud`) matched to exactly one robot.
pub struct JwtAuth {
    keys: KeyCache,
    /// The audience a token must carry unless the robot names its own: the broker's URL,
    /// so a token minted for another service cannot be replayed here.
    default_audience: String,
}

impl JwtAuth {
    pub fn new(keys: KeyCache, default_audience: String) -> JwtAuth {
        JwtAuth {
            keys,
            default_audience,
        }
    }

    /// The issuers' keys (also used to verify ID tokens of logins).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    pub async fn accept(&self, config: &Config, token: &Secret) -> Result<String, Refusal> {
        let jwt = Jwt::decode(token.expose())
            .map_err(|_| Refusal::unauthenticated("the bearer token is not a JWT"))?;
        let (issuer, subject) = (jwt.issuer().unwrap_or(""), jwt.subject().unwrap_or(""));
        let robot = config
            .robots
            .iter()
            .find(|r| {
                r.auth.jwt_issuer.as_deref() == Some(issuer)
                    && r.auth.jwt_subject.as_deref() == Some(subject)
            })
            .ok_or_else(|| {
                Refusal::forbidden(format!(
                    "no robot is bound to JWT subject `{subject}` of issuer `{issuer}`"
                ))
            })?;
        let expect = credkeeper_core::verify::Expectations {
            audience: Some(
                robot
                    .auth
                    .jwt_audience
                    .clone()
                    .unwrap_or_else(|| self.default_audience.clone()),
            ),
            leeway: 30,
            ..Default::default()
        };
        self.keys
            .verify(&jwt, issuer, &expect)
            .await
            .map_err(|e| Refusal::unauthenticated(format!("JWT of issuer `{issuer}`: {e}")))?;
        Ok(robot.name.clone())
    }
}

/// Authenticate whatever the request presented.
pub async fn authenticate(
    broker: &Broker,
    presented: Presented,
) -> Result<(Caller, Option<Vec<u8>>), Refusal> {
    match presented {
        Presented::Basic { robot, secret } => {
            broker.authenticate(&robot, &secret).await?;
            Ok((
                Caller {
                    robot,
                    method: Method::Secret,
                },
                None,
            ))
        }
        Presented::Negotiate(token) => {
            let kerberos = broker.kerberos.as_ref().ok_or_else(|| {
                Refusal::unauthenticated(
                    "this broker has no Kerberos keytab (server.kerberos_keytab)",
                )
            })?;
            let (robot, reply) = kerberos.accept(token).await?;
            Ok((
                Caller {
                    robot,
                    method: Method::Kerberos,
                },
                reply,
            ))
        }
        Presented::Bearer(token) => {
            let robot = broker.jwt.accept(&broker.config, &token).await?;
            Ok((
                Caller {
                    robot,
                    method: Method::Jwt,
                },
                None,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_are_sorted_by_scheme() {
        assert!(matches!(
            Presented::parse("Basic cm9ib3Q6czNjcmV0"),
            Some(Presented::Basic { robot, secret }) if robot == "robot" && secret.expose() == "s3cret"
        ));
        assert!(matches!(
            Presented::parse("Negotiate YWJj"),
            Some(Presented::Negotiate(t)) if t == b"abc"
        ));
        assert!(matches!(
            Presented::parse("bearer eyJ.x.y"),
            Some(Presented::Bearer(t)) if t.expose() == "eyJ.x.y"
        ));
        assert!(Presented::parse("Digest x").is_none());
        assert!(Presented::parse("Basic !!").is_none());
    }
}
