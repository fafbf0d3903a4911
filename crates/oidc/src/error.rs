//! Everything that can go wrong talking to an issuer, each with a message a user can act on.

/// An error from an issuer or on the way to it. Messages never contain tokens or secrets.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} answered HTTP {status} with {content_type}, not JSON")]
    NotJson {
        url: String,
        status: u16,
        content_type: String,
    },
    #[error("{url} answered JSON that is not a valid {what}: {reason}")]
    BadResponse {
        url: String,
        what: &'static str,
        reason: String,
    },
    /// An OAuth error response (RFC 6749 §5.2, RFC 8628 §3.5).
    #[error("the issuer refused: {code}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth {
        code: String,
        description: Option<String>,
    },
    #[error("{0}")]
    InsecureUrl(String),
    #[error("the issuer's discovery document names issuer {found}, not {expected}")]
    IssuerMismatch { expected: String, found: String },
    #[error("the issuer offers no {0}")]
    Unsupported(&'static str),
    #[error("the device code expired before the login was completed; run the login again")]
    DeviceExpired,
    #[error("the login was denied at the issuer")]
    AccessDenied,
    #[error(
        "the browser login returned to this program with a wrong state; it was not started here"
    )]
    StateMismatch,
    #[error("loopback redirect listener: {0}")]
    Loopback(String),
    /// The credkeeper broker refused a request (its JSON error).
    #[error("the broker refused: {message} ({code})")]
    Refused { code: String, message: String },
    #[error("the issuer has no key `{0}` even after fetching its key set again")]
    KeyNotFound(String),
    /// This side could not prove who it is, or the server could not prove who it is.
    #[error("authentication: {0}")]
    Authentication(#[from] AuthError),
}

/// The Kerberos side's own error, kept whole (this crate does not link Kerberos).
pub type KerberosFailure = Box<dyn std::error::Error + Send + Sync>;

/// Why this side could not prove who it is, or the server could not prove who it is.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("JWT file: {0}")]
    JwtFile(#[source] credkeeper_sink::SinkError),
    #[error("Kerberos as {principal}: {source}")]
    Kerberos {
        principal: String,
        source: KerberosFailure,
    },
    #[error(
        "the server sent no Kerberos reply, so it did not prove it is the broker (mutual authentication)"
    )]
    NoMutualReply,
    #[error("the server's Kerberos reply: {0}")]
    BadReply(#[source] KerberosFailure),
}

impl OidcError {
    /// The OAuth error code, if the issuer sent one.
    pub fn oauth_code(&self) -> Option<&str> {
        match self {
            OidcError::OAuth { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The issuer no longer honours the grant (revoked, expired or already used refresh
    /// token): only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        self.oauth_code() == Some("invalid_grant")
    }

    /// The issuer could not be reached at all (as opposed to answering badly).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, OidcError::Unreachable { .. })
    }
}
