//! Who is calling: a robot proves itself with a secret (HTTP Basic), a Kerberos keytab
//! (HTTP Negotiate / SPNEGO) or a signed JWT from an issuer it is bound to (HTTP Bearer,
//! e.g. a Kubernetes service-account token). Each method maps to exactly one configured
//! robot; the policy that follows is the robot's, whatever the method.

use crate::broker::Broker;
use crate::caller::{Caller, Method};
use crate::config::Config;
use crate::refusal::Refusal;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use credkeeper_core::{Jwt, Secret};
use credkeeper_kerberos::{Acceptor, KerberosError};
use credkeeper_oidc::KeyCache;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
            use zeroize::Zeroize;
            let mut decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':');
            let secret = colon.and_then(|i| std::str::from_utf8(&decoded[i + 1..]).ok());
            let secret = secret.map(Secret::new);
            // What is left holds the robot's name: the secret's bytes are wiped, not freed.
            decoded[colon.unwrap_or(0)..].zeroize();
            decoded.truncate(colon?);
            Some(Presented::Basic {
                robot: String::from_utf8(decoded).ok()?,
                secret: secret?,
            })
        } else if scheme.eq_ignore_ascii_case("negotiate") {
            credkeeper_kerberos::parse_negotiate(value).map(Presented::Negotiate)
        } else if scheme.eq_ignore_ascii_case("bearer") {
            Some(Presented::Bearer(Secret::new(rest)))
        } else {
            None
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

/// The ways a robot proves itself beyond its secret (which the store checks): Kerberos
/// when the broker has a keytab, and JWTs of the issuers robots are bound to.
pub struct Authenticators {
    pub kerberos: Option<KerberosAuth>,
    pub jwt: JwtAuth,
}

impl Authenticators {
    /// Authenticate whatever the request presented: the caller, and with Kerberos the
    /// reply token for mutual authentication. A refusal names whom the request claimed to
    /// be (the robot's name only with Basic).
    pub async fn authenticate(
        &self,
        broker: &Broker,
        presented: Presented,
    ) -> Result<(Caller, Option<Vec<u8>>), Refusal> {
        match presented {
            Presented::Basic { robot, secret } => {
                if let Err(refusal) = broker.authenticate(&robot, &secret).await {
                    return Err(refusal.by(&robot, None));
                }
                Ok((
                    Caller {
                        robot,
                        method: Method::Secret,
                    },
                    None,
                ))
            }
            Presented::Negotiate(token) => {
                let refused = |r: Refusal| r.by("(kerberos)", None);
                let kerberos = self.kerberos.as_ref().ok_or_else(|| {
                    refused(Refusal::unauthenticated(
                        "this broker has no Kerberos keytab (server.kerberos_keytab)",
                    ))
                })?;
                let (robot, reply) = kerberos.accept(token).await.map_err(refused)?;
                Ok((
                    Caller {
                        robot,
                        method: Method::Kerberos,
                    },
                    reply,
                ))
            }
            Presented::Bearer(token) => {
                let robot = self
                    .jwt
                    .accept(&broker.config, &token)
                    .await
                    .map_err(|r| r.by("(jwt)", None))?;
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
}

/// A robot that proved who it is, by any of its methods ([`crate::auth`]).
pub struct Robot(pub Caller);

/// Where the authenticating extractor leaves a Kerberos reply token for
/// [`negotiate_reply`] to send back (mutual authentication).
#[derive(Clone, Default)]
struct ReplySlot(Arc<Mutex<Option<Vec<u8>>>>);

/// The layer that sends `WWW-Authenticate: Negotiate <reply>` on answers to requests a
/// Kerberos client authenticated, so the client can check it spoke to the real broker.
pub async fn negotiate_reply(mut request: Request, next: Next) -> Response {
    let slot = ReplySlot::default();
    request.extensions_mut().insert(slot.clone());
    let mut response = next.run(request).await;
    let reply = crate::sync::lock(&slot.0).take();
    if let Some(token) = reply
        && let Ok(value) = HeaderValue::from_str(&credkeeper_kerberos::negotiate_header(&token))
    {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

impl<S> FromRequestParts<S> for Robot
where
    S: Send + Sync,
    Arc<Broker>: FromRef<S>,
    Arc<Authenticators>: FromRef<S>,
{
    type Rejection = Refusal;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Robot, Refusal> {
        let broker = Arc::<Broker>::from_ref(state);
        let auth = Arc::<Authenticators>::from_ref(state);
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(Presented::parse)
            .ok_or_else(|| {
                Refusal::unauthenticated(
                    "authenticate as a robot: HTTP Basic (name and secret), Negotiate (Kerberos) or Bearer (a JWT bound to the robot)",
                )
            })?;
        let (caller, reply) = auth.authenticate(&broker, presented).await?;
        if let (Some(token), Some(slot)) = (reply, parts.extensions.get::<ReplySlot>()) {
            *crate::sync::lock(&slot.0) = Some(token);
        }
        Ok(Robot(caller))
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
        // The first colon ends the name; a secret may hold more.
        assert!(matches!(
            Presented::parse("Basic cm9ib3Q6czM6Y3JldA=="),
            Some(Presented::Basic { robot, secret }) if robot == "robot" && secret.expose() == "s3:cret"
        ));
        // No colon, or an empty header: nothing presented.
        assert!(Presented::parse("Basic cm9ib3Q=").is_none());
        assert!(Presented::parse("Basic ").is_none());
    }
}
