//! credkeeper-core: the vocabulary every other crate speaks.
//!
//! What it is for: credentials as types — [`Secret`] (a value that never prints),
//! [`Timestamp`] (a point in time, not a bare integer), [`Jwt`] (a decoded, not yet
//! trusted token), [`Scope`] / [`ScopeSet`] with SciTokens and WLCG coverage rules,
//! [`Requirements`] (what a caller asks of a token), [`TokenAsk`] (what a caller asks a
//! source for, its [`Scopes`] read once), and [`verify`] (signature and claim
//! checks against a JWK set).
//!
//! What it is not: it does no I/O. Fetching keys, talking to issuers and writing files
//! live in `credkeeper-oidc` and `credkeeper-store`.

mod ask;
mod jwt;
mod require;
mod scope;
mod secret;
mod time;
pub mod verify;

pub use ask::{Scopes, TokenAsk};
pub use jwt::{Audience, Jwt, JwtError};
pub use require::{Requirements, Shortfall};
pub use scope::{Scope, ScopeError, ScopeSet};
pub use secret::Secret;
pub use time::{Timestamp, parse_seconds};
