//! credkeeper-kerberos: Kerberos through MIT GSSAPI, for robots that prove who they are
//! with a keytab.
//!
//! What it is for: the two ends of HTTP `Negotiate` (SPNEGO, RFC 4559). An [`Initiator`]
//! takes a robot's keytab and gets its tickets into a private credential cache (a MEMORY
//! cache unless a caller names one), never the user's default cache; an [`Acceptor`] takes
//! the broker's service keytab and tells who a token came from. Failures are sorted into
//! what a person can act on ([`KerberosError`]): no keytab, a keytab others can read,
//! clock skew, an unknown principal, an unreachable KDC, no Kerberos library installed.
//!
//! MIT krb5's GSSAPI library is opened at run time by the first call that needs it
//! ([`gssapi`]): building needs no Kerberos headers, and a process that never uses
//! Kerberos never loads it.
//!
//! What it is not: HTTP. Callers put [`negotiate_header`] in their requests and read
//! [`parse_negotiate`] from them. Every call here blocks (GSSAPI talks to the KDC
//! synchronously): async callers run it on a blocking thread.

mod error;
mod gssapi;
mod keytab;

pub use error::KerberosError;
pub use keytab::check_keytab;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use gssapi::{ClientCtx, Cred, Name, ServerCtx, Usage};
use std::path::Path;

/// `Authorization: Negotiate <token>` (or `WWW-Authenticate`), as a header value.
pub fn negotiate_header(token: &[u8]) -> String {
    format!("Negotiate {}", STANDARD.encode(token))
}

/// The token in a `Negotiate <base64>` header value; `None` when it is another scheme or
/// not base64. A bare `Negotiate` (a server asking for a token) gives an empty token.
pub fn parse_negotiate(value: &str) -> Option<Vec<u8>> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if !scheme.eq_ignore_ascii_case("negotiate") {
        return None;
    }
    STANDARD.decode(rest.trim()).ok()
}

/// `principal` with the default realm of the Kerberos configuration when it names none
/// (`robot/ci.example` → `robot/ci.example@TEST.REALM`).
pub fn qualify(principal: &str) -> Result<String, KerberosError> {
    let name = Name::import(principal, &gssapi::NT_KRB5_PRINCIPAL)
        .and_then(|n| n.canonicalize(&gssapi::MECH_KRB5))
        .map_err(|e| KerberosError::bad_principal(principal, e))?;
    display(&name)
}

/// `robot/ci.example@TEST.REALM` → `robot/ci.example`: the name htgettoken uses as the
/// Vault credkey.
pub fn without_realm(principal: &str) -> &str {
    principal.split('@').next().unwrap_or(principal)
}

fn display(name: &Name) -> Result<String, KerberosError> {
    name.display()
        .map_err(|e| KerberosError::classify(e, "name"))
}

/// A robot's Kerberos identity from its keytab, ready to start SPNEGO exchanges.
pub struct Initiator {
    cred: Cred,
    principal: String,
}

impl Initiator {
    /// The credential of `principal` (default: the keytab's first principal) from
    /// `keytab`, with tickets kept in `ccache` (default: a MEMORY cache private to this
    /// process). The keytab is checked first: missing, not a file, or open to others is
    /// refused with the fix. Tickets are asked of the KDC on the first [`Initiator::start`].
    pub fn from_keytab(
        keytab: &Path,
        principal: Option<&str>,
        ccache: Option<&str>,
    ) -> Result<Initiator, KerberosError> {
        let keytab = check_keytab(keytab)?;
        let principal = principal.map(qualify).transpose()?;
        let private_cache = format!("MEMORY:credkeeper-{}", std::process::id());
        let store = [
            ("client_keytab", format!("FILE:{}", keytab.display())),
            ("ccache", ccache.map_or(private_cache, str::to_string)),
        ];
        let during = "acquiring the keytab's credential";
        let cred = Cred::acquire_from(principal.as_deref(), Usage::Initiate, &store).map_err(
            |e| match (KerberosError::classify(e, during), &principal) {
                // MIT looks in the cache after the keytab: "no credentials cache found"
                // means the keytab has no key for the principal asked for.
                (KerberosError::Gss { detail, .. }, Some(p)) => KerberosError::NoKeyForPrincipal {
                    during,
                    detail: format!("{p} in {}: {detail}", keytab.display()),
                },
                (other, _) => other,
            },
        )?;
        let principal = match principal {
            Some(p) => p,
            None => display(
                &cred
                    .name()
                    .map_err(|e| KerberosError::classify(e, "credential name"))?,
            )?,
        };
        Ok(Initiator { cred, principal })
    }

    /// The credential already in a credential cache (`ccache`, default: `KRB5CCNAME`),
    /// as htgettoken uses after a `kinit`.
    pub fn from_cache(ccache: Option<&str>) -> Result<Initiator, KerberosError> {
        let store: Vec<(&str, String)> = ccache
            .map(|c| ("ccache", c.to_string()))
            .into_iter()
            .collect();
        let cred = Cred::acquire_from(None, Usage::Initiate, &store)
            .map_err(|e| KerberosError::classify(e, "reading the credential cache"))?;
        let principal = display(
            &cred
                .name()
                .map_err(|e| KerberosError::classify(e, "credential name"))?,
        )?;
        Ok(Initiator { cred, principal })
    }

    /// The principal this credential speaks for, with its realm.
    pub fn principal(&self) -> &str {
        &self.principal
    }

    /// Start an exchange with `service@host` (`HTTP` for web servers, `host` for what
    /// htgettoken and Vault use): the first token to send, and the exchange that checks
    /// the server's answer (mutual authentication).
    pub fn start(
        &self,
        service: &str,
        host: &str,
    ) -> Result<(Negotiation, Vec<u8>), KerberosError> {
        let target = format!("{service}@{host}");
        let target = Name::import(&target, &gssapi::NT_HOSTBASED_SERVICE)
            .map_err(|e| KerberosError::bad_principal(&target, e))?;
        let mut ctx = ClientCtx::new(
            self.cred.clone(),
            target,
            gssapi::MUTUAL_FLAG,
            &gssapi::MECH_SPNEGO,
        );
        let token = ctx
            .step(None)
            .map_err(|e| KerberosError::classify(e, "getting a service ticket"))?
            .unwrap_or_default();
        Ok((Negotiation { ctx }, token))
    }
}

/// One SPNEGO exchange begun by [`Initiator::start`].
pub struct Negotiation {
    ctx: ClientCtx,
}

impl Negotiation {
    /// Check the server's reply token (its `WWW-Authenticate: Negotiate` answer). `Ok(true)`
    /// when the server proved it holds the service key (mutual authentication);
    /// `Ok(false)` when it sent nothing to check.
    pub fn finish(mut self, reply: Option<&[u8]>) -> Result<bool, KerberosError> {
        let Some(reply) = reply.filter(|r| !r.is_empty()) else {
            return Ok(false);
        };
        self.ctx
            .step(Some(reply))
            .map_err(|e| KerberosError::classify(e, "checking the server's reply"))?;
        Ok(self.ctx.is_complete())
    }
}

/// The broker's side: accepts tokens for any service principal in its keytab (`HTTP/…`
/// and `host/…`).
pub struct Acceptor {
    cred: Cred,
}

/// Who a token came from, and what to send back.
#[derive(Debug)]
pub struct Accepted {
    /// The client's principal, with its realm.
    pub principal: String,
    /// The token for `WWW-Authenticate: Negotiate` that proves the server to the client.
    pub reply: Option<Vec<u8>>,
}

impl Acceptor {
    pub fn from_keytab(keytab: &Path) -> Result<Acceptor, KerberosError> {
        let keytab = check_keytab(keytab)?;
        let store = [("keytab", format!("FILE:{}", keytab.display()))];
        let cred = Cred::acquire_from(None, Usage::Accept, &store)
            .map_err(|e| KerberosError::classify(e, "reading the service keytab"))?;
        Ok(Acceptor { cred })
    }

    /// Accept one client token. Multi-leg mechanisms (NTLM) are refused: Kerberos in
    /// SPNEGO completes in one round.
    pub fn accept(&self, token: &[u8]) -> Result<Accepted, KerberosError> {
        let mut ctx = ServerCtx::new(self.cred.clone());
        let reply = ctx
            .step(token)
            .map_err(|e| KerberosError::classify(e, "accepting the client's token"))?;
        match ctx.source_name() {
            Some(name) if ctx.is_complete() => Ok(Accepted {
                principal: display(name)?,
                reply,
            }),
            _ => Err(KerberosError::Incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_headers_round_trip_and_other_schemes_are_not_read() {
        let header = negotiate_header(b"\x60\x82token");
        assert!(header.starts_with("Negotiate "));
        assert_eq!(parse_negotiate(&header).unwrap(), b"\x60\x82token");
        assert_eq!(parse_negotiate("negotiate YWJj").unwrap(), b"abc");
        assert_eq!(parse_negotiate("Negotiate").unwrap(), b"");
        assert!(parse_negotiate("Basic YWJj").is_none());
        assert!(parse_negotiate("Negotiate not*base64").is_none());
    }
}
