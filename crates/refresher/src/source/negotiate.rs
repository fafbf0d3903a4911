//! A robot's keytab as the Kerberos (HTTP Negotiate) login of a broker or Vault client.

use credkeeper_kerberos::{Initiator, Negotiation, negotiate_header, parse_negotiate};
use credkeeper_oidc::AuthError;
use credkeeper_oidc::broker::{Negotiator, ReplyCheck};

/// Tokens for `<service>@<broker host>` from the robot's keytab credential.
pub struct KeytabNegotiator {
    pub initiator: Initiator,
    /// `HTTP` for credkeeper's own API (what curl and browsers ask for), `host` for the
    /// Vault API (what htgettoken asks for).
    pub service: &'static str,
}

impl Negotiator for KeytabNegotiator {
    fn begin(&self, host: &str) -> Result<(String, Box<dyn ReplyCheck>), AuthError> {
        let (negotiation, token) =
            self.initiator
                .start(self.service, host)
                .map_err(|e| AuthError::Kerberos {
                    principal: self.initiator.principal().to_string(),
                    source: Box::new(e),
                })?;
        Ok((negotiate_header(&token), Box::new(Mutual(negotiation))))
    }
}

/// The broker must prove it holds the service key: a missing or wrong reply fails.
struct Mutual(Negotiation);

impl ReplyCheck for Mutual {
    fn check(self: Box<Self>, www_authenticate: Option<&str>) -> Result<(), AuthError> {
        let reply = www_authenticate.and_then(parse_negotiate);
        match self.0.finish(reply.as_deref()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(AuthError::NoMutualReply),
            Err(e) => Err(AuthError::BadReply(Box::new(e))),
        }
    }
}
