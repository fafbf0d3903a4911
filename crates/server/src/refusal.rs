//! Why a request is not served: a stable code for clients to act on, its HTTP status, and
//! a message that names what was wrong (never a secret), and the JSON answer it becomes.

use crate::caller::Method;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a request was not served; `code` is stable for clients to act on.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    pub code: Code,
    pub message: String,
    /// Whom it is counted and logged against ([`Refusal::by`]); none: not logged.
    to: Option<Box<Asker>>,
}

/// Who was refused, and what they asked for.
#[derive(Clone, Debug, Default)]
struct Asker {
    who: String,
    method: Option<Method>,
    provider: String,
    scope: String,
    audience: String,
}

/// A refusal as the audit log and the metrics tell it (a response extension the `record`
/// layer of [`crate::http`] counts and logs).
#[derive(Clone, Debug)]
pub struct RefusedTo {
    /// The robot, a user's store identity, or what a caller that did not prove itself
    /// claimed (`(kerberos)`, `(jwt)`, `(identity token)`, a name).
    pub who: String,
    /// How `who` proved itself; `None` when it did not.
    pub method: Option<Method>,
    /// `""` where the request got not as far.
    pub provider: String,
    pub scope: String,
    pub audience: String,
    pub code: Code,
    pub message: String,
}

/// Why a request was refused: the stable `error` codes of the API (README), each with its
/// HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    UnknownProvider,
    NeedsLogin,
    BadRequest,
    ProviderError,
    Busy,
    AuditUnavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "unauthenticated",
            Code::Forbidden => "forbidden",
            Code::UnknownProvider => "unknown_provider",
            Code::NeedsLogin => "needs_login",
            Code::BadRequest => "bad_request",
            Code::ProviderError => "provider_error",
            Code::Busy => "busy",
            Code::AuditUnavailable => "audit_unavailable",
            Code::Internal => "internal",
        }
    }

    /// The HTTP status of the robot API for the code.
    pub fn status(self) -> u16 {
        match self {
            Code::Unauthenticated => 401,
            Code::Forbidden => 403,
            Code::UnknownProvider => 404,
            Code::NeedsLogin => 409,
            Code::BadRequest => 400,
            Code::ProviderError => 502,
            Code::Busy | Code::AuditUnavailable => 503,
            Code::Internal => 500,
        }
    }
}

impl Refusal {
    /// The store could not be read or written for `what`: logged with its cause, refused
    /// as busy (503) without it.
    pub fn store_unavailable(what: &str, e: &credkeeper_store::StoreError) -> Refusal {
        tracing::error!("{what}: the store: {e}");
        Refusal::new(
            Code::Busy,
            "the broker's store is unavailable; try again later",
        )
    }

    pub fn new(code: Code, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            to: None,
        }
    }

    /// Counted and logged (through its response) as refused to `who`, who proved itself
    /// by `method` (`None`: it did not).
    pub fn by(mut self, who: &str, method: Option<Method>) -> Refusal {
        let asker = self.to.get_or_insert_default();
        asker.who = who.to_string();
        asker.method = method;
        self
    }

    /// What was asked: (provider, scope, audience), for the same line.
    pub fn asked(mut self, (provider, scope, audience): (&str, &str, &str)) -> Refusal {
        let asker = self.to.get_or_insert_default();
        asker.provider = provider.to_string();
        asker.scope = scope.to_string();
        asker.audience = audience.to_string();
        self
    }

    /// The refusal as its line tells it, to put on whatever response it becomes; `None`
    /// when it is not to be logged.
    pub fn take_refused_to(&mut self) -> Option<RefusedTo> {
        let asker = *self.to.take()?;
        Some(RefusedTo {
            who: asker.who,
            method: asker.method,
            provider: asker.provider,
            scope: asker.scope,
            audience: asker.audience,
            code: self.code,
            message: self.message.clone(),
        })
    }

    pub fn unauthenticated(message: impl Into<String>) -> Refusal {
        Refusal::new(Code::Unauthenticated, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Refusal {
        Refusal::new(Code::Forbidden, message)
    }

    pub fn internal(message: impl Into<String>) -> Refusal {
        Refusal::new(Code::Internal, message)
    }

    /// The HTTP status for the code.
    pub fn status(&self) -> u16 {
        self.code.status()
    }
}

/// How long a client told `busy` (503) is asked to wait before it tries again
/// (`Retry-After`).
pub const BUSY_RETRY_SECS: u32 = 30;

impl IntoResponse for Refusal {
    fn into_response(mut self) -> Response {
        let to = self.take_refused_to();
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            Json(serde_json::json!({"error": self.code.as_str(), "message": self.message})),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            retry_after(&mut response);
        }
        if status == StatusCode::UNAUTHORIZED {
            let headers = response.headers_mut();
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Negotiate"),
            );
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"credkeeper\""),
            );
        }
        if let Some(to) = to {
            response.extensions_mut().insert(to);
        }
        response
    }
}

/// `Retry-After` on a 503 (`busy`): the condition passes, so the client may try again.
pub(crate) fn retry_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(BUSY_RETRY_SECS));
}
