//! A robot's keytab as the Kerberos (HTTP Negotiate) login of a broker or Vault client.

use credkeeper_kerberos::{Initiator, Negotiation, negotiate_header, parse_negotiate};
use credkeeper_oidc::broker::{Negotiator, ReplyCheck};

/// Tokens for `<service>@<broker host>` from the robot's keytab credential.
pub struct KeytabNegotiator {
    pub initiator: Initiator,
    /// `HTTP` for credkeeper's own API (what curl and browsers ask for), `host` for the
    /// Vault API (what htgettoken asks for).
    pub service: &'static str,
}

impl Negotiator for KeytabNegotiator {
    fn begin(&self, host: &str) -> Result<(String, Box<dyn ReplyCheck>), String> {
        let (negotiation, token) = self
            .initiator
            .start(self.service, host)
            .map_err(|e| format!("Kerberos as {}: {e}", self.initiator.principal()))?;
        Ok((negotiate_header(&token), Box::new(Mutual(negotiation))))
    }
}

/// The broker must prove it holds the service key: a missing or wrong reply fails.
struct Mutual(Negotiation);

impl ReplyCheck for Mutual {
    fn check(self: Box<Self>, www_authenticate: Option<&str>) -> Result<(), String> {
        let reply = www_authenticate.and_then(parse_negotiate);
        match self.0.finish(reply.as_deref()) {
            Ok(true) => Ok(()),
            Ok(false) => Err(
                "the server sent no Kerberos reply, so it did not prove it is the broker (mutual authentication)"
                    .into(),
            ),
            Err(e) => Err(format!("the server's Kerberos reply: {e}")),
        }
    }
}
