//! What a request handed out, as the audit log and the metrics tell it: a vocabulary with no
//! behaviour. A vend's token reaches its caller only in an answer carrying its [`Outcome`]
//! ([`Vended::answer`]); a refusal carries whom it was refused to
//! ([`crate::refusal::RefusedTo`]). The `record` layer of [`crate::http`] reads both off
//! the response, counts and logs them, and holds the answer back until its line is written.
//! Handlers neither count nor log.

use crate::caller::Method;
use crate::refusal::Refusal;
use axum::response::{IntoResponse, Response};
use credkeeper_core::Timestamp;
use std::sync::Arc;

/// Where a vended token came from, as the audit log and the metrics say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The token already held, still fresh enough.
    Cached,
    /// Signed now by the local issuer (or the registry token signer).
    Signed,
    /// Obtained now from the provider with the stored refresh token.
    Refreshed,
    /// Obtained now from the provider with the client's own credentials.
    ClientCredentials,
}

impl Source {
    /// Every source, in the order of their discriminants.
    pub const ALL: [Source; 4] = [
        Source::Cached,
        Source::Signed,
        Source::Refreshed,
        Source::ClientCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cached => "cached",
            Source::Signed => "signed",
            Source::Refreshed => "refreshed",
            Source::ClientCredentials => "client_credentials",
        }
    }
}

/// A token handed out (a response extension).
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The robot, or a user's store identity (`user:<name>`).
    pub who: String,
    pub method: Method,
    pub provider: String,
    /// Shared with the answer (and a cached token's entry): not copied per vend.
    pub scope: Arc<str>,
    pub audience: Arc<str>,
    pub source: Source,
    pub expires: Timestamp,
    /// The refusal in this API's shape, should the vend's line not be written.
    pub refuse: fn(Refusal) -> Response,
}

impl Outcome {
    /// A token handed out to `who`: (provider, scope, audience) as granted.
    pub fn vended(
        who: &str,
        method: Method,
        (provider, scope, audience): (&str, Arc<str>, Arc<str>),
        source: Source,
        expires: Timestamp,
    ) -> Outcome {
        Outcome {
            who: who.to_string(),
            method,
            provider: provider.to_string(),
            scope,
            audience,
            source,
            expires,
            refuse: <Refusal as IntoResponse>::into_response,
        }
    }

    /// `response`, carrying this outcome.
    pub fn on(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// A token handed out, which reaches its caller only in an answer that carries its
/// [`Outcome`] ([`Vended::answer`]): no vend goes out unlogged.
pub struct Vended<T> {
    token: T,
    outcome: Outcome,
}

impl<T> Vended<T> {
    pub(crate) fn new(token: T, outcome: Outcome) -> Vended<T> {
        Vended { token, outcome }
    }

    /// The answer `make` builds from the token, carrying the outcome.
    pub fn answer(self, make: impl FnOnce(T) -> Response) -> Response {
        self.outcome.on(make(self.token))
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Vended<U> {
        Vended {
            token: f(self.token),
            outcome: self.outcome,
        }
    }

    /// Refused in the shape `refuse` makes (an API other than the robot API), should its
    /// line not be written.
    pub fn refusing_as(mut self, refuse: fn(Refusal) -> Response) -> Vended<T> {
        self.outcome.refuse = refuse;
        self
    }
}
