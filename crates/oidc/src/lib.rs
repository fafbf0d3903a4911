//! credkeeper-oidc: the OAuth2 / OpenID Connect client.
//!
//! What it is for: talking to an issuer — discovery ([`discover`]), its keys
//! ([`KeyCache`]), and every grant credkeeper uses through [`Client`]: refresh, client
//! credentials, the device flow (RFC 8628), authorization code with PKCE on a loopback
//! redirect (RFC 7636, RFC 8252, [`loopback`]), token exchange (RFC 8693) and revocation
//! (RFC 7009). HTTPS is required except for loopback issuers when the caller allows it.
//! [`broker`] is the client of a credkeeper broker's robot API, and [`vault`] of the
//! Vault API subset htgettoken uses: two more token sources.
//!
//! What it is not: it keeps no credentials and prints nothing. Which grant to use when,
//! and where tokens go, is the caller's business.

pub mod broker;
mod cache;
mod client;
mod discovery;
mod error;
mod http;
mod keys;
pub mod loopback;
mod pkce;
mod token;
pub mod vault;

pub use cache::DiskCache;
pub use client::{
    ACCESS_TOKEN_TYPE, Client, ClientAuth, DeviceAuthorization, DevicePoll, TokenRequest,
};
pub use discovery::{ProviderMetadata, UrlPolicy, discover, discover_cached};
pub use error::{AuthError, KerberosFailure, OidcError};
pub use http::{Answer, Http, Roots};
pub use keys::{KeyCache, TrustError};
pub use pkce::{Pkce, random_state};
pub use token::{TokenResponse, parse_whole as parse_token_response_whole};
