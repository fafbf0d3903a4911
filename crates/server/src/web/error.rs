//! What can go wrong in a web login, in words for the person at the browser.

use credkeeper_sink::condor::KeyFileError;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("this is not a CredD login link")]
    NotAKeyLink,
    #[error("this login link is not known here; it may have been used up already")]
    UnknownKeyLink,
    #[error("this login link is not a regular key file")]
    KeyLinkNotAFile,
    #[error("the CredD's key file cannot be read: {0}")]
    KeyFileUnreadable(std::io::Error),
    #[error("the CredD's key file is malformed: {0}")]
    KeyFileMalformed(#[from] KeyFileError),
    #[error("this broker serves no credential directory")]
    NoCredentialDirectory,
    /// The broker refused (an unknown or unreachable provider).
    #[error("{0}")]
    Broker(String),
    #[error(transparent)]
    Provider(#[from] credkeeper_oidc::OidcError),
    #[error("the provider sent no code")]
    NoCode,
    #[error("the ID token's nonce does not match this login")]
    NonceMismatch,
    #[error("the provider returned no refresh token (is offline_access allowed for this client?)")]
    NoRefreshToken,
    #[error(transparent)]
    Keep(#[from] credkeeper_refresher::RefreshError),
    #[error("cannot create {}: {source}", path.display())]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] credkeeper_sink::SinkError),
}

impl From<crate::refusal::Refusal> for WebError {
    fn from(r: crate::refusal::Refusal) -> WebError {
        WebError::Broker(r.message)
    }
}
