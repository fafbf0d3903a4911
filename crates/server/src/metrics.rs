//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format: on the main
//! listener or on one of their own (`[server] metrics_listen`), and behind a bearer token
//! when `[server] metrics_token_file` names one.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The label value for a robot or provider the configuration does not name.
pub const UNKNOWN: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VendLabels {
    pub robot: String,
    pub provider: String,
    /// `cached`, `signed`, `refreshed` or `client_credentials`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenyLabels {
    pub robot: String,
    pub provider: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabels {
    pub provider: String,
    /// `ok`, `needs_login` or `failed`.
    pub outcome: String,
}

pub struct Metrics {
    registry: Registry,
    pub vended: Family<VendLabels, Counter>,
    pub denied: Family<DenyLabels, Counter>,
    pub refreshes: Family<RefreshLabels, Counter>,
    pub needs_login: Gauge,
    pub earliest_expiry: Gauge,
    /// The bearer token a scraper must show, when one is configured.
    token: Option<credkeeper_core::Secret>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("credkeeper");
        let vended = Family::<VendLabels, Counter>::default();
        let denied = Family::<DenyLabels, Counter>::default();
        let refreshes = Family::<RefreshLabels, Counter>::default();
        let needs_login = Gauge::default();
        let earliest_expiry = Gauge::default();
        registry.register("tokens_vended", "Tokens handed out", vended.clone());
        registry.register("tokens_denied", "Token requests refused", denied.clone());
        registry.register(
            "refreshes",
            "Refresh attempts by outcome",
            refreshes.clone(),
        );
        registry.register(
            "credentials_needing_login",
            "Stored credentials that only a new login can repair",
            needs_login.clone(),
        );
        registry.register(
            "earliest_expiry_seconds",
            "Seconds until the earliest cached provider access token expires",
            earliest_expiry.clone(),
        );
        Metrics {
            registry,
            vended,
            denied,
            refreshes,
            needs_login,
            earliest_expiry,
            token: None,
        }
    }

    /// Ask scrapers for `token` (`Authorization: Bearer <token>`).
    pub fn require_token(&mut self, token: credkeeper_core::Secret) {
        self.token = Some(token);
    }

    /// Whether a request with this `Authorization` header value may read the metrics.
    pub fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let presented = authorization
            .and_then(|v| v.strip_prefix(b"Bearer "))
            .unwrap_or_default();
        let expected = token.expose().as_bytes();
        // Constant time: the comparison must not tell how much of a guess was right.
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
