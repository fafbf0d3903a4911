//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
        }
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
