//! Prometheus metrics, served at `/metrics` in the OpenMetrics text format: on the main
//! listener or on one of their own (`[server] metrics_listen`), and behind a bearer token
//! when `[server] metrics_token_file` names one.

use crate::outcome::Source;
use crate::refusal::Code;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

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

/// Providers a vend or refusal names without a `[[provider]]` section: the broker's own
/// issuer (`local`, or none named) and the registry token signer.
const BUILT_IN_PROVIDERS: [&str; 3] = ["", crate::policy::LOCAL, crate::policy::REGISTRY];

/// Each configured robot's vend counters by provider and [`Source`], each made when first
/// counted: a vend is counted without building its labels or locking the family.
type VendCounters = HashMap<String, HashMap<String, [OnceLock<Counter>; Source::ALL.len()]>>;

pub struct Metrics {
    registry: Registry,
    vended: Family<VendLabels, Counter>,
    vend_counters: VendCounters,
    /// Configured providers and [`BUILT_IN_PROVIDERS`]: the names a label may carry.
    providers: HashSet<String>,
    denied: Family<DenyLabels, Counter>,
    pub refreshes: Family<RefreshLabels, Counter>,
    pub needs_login: Gauge,
    pub earliest_expiry: Gauge,
    /// The bearer token a scraper must show, when one is configured.
    token: Option<credkeeper_core::Secret>,
}

impl Metrics {
    /// Metrics for a broker whose configuration names `robots` and `providers`: label
    /// values only from these names, so a stranger's made-up robot name neither adds a
    /// series (memory without bound) nor is echoed by `/metrics`.
    pub fn for_names<'a>(
        robots: impl IntoIterator<Item = &'a str>,
        providers: impl IntoIterator<Item = &'a str>,
    ) -> Metrics {
        let mut m = Metrics::new();
        m.providers = BUILT_IN_PROVIDERS
            .into_iter()
            .chain(providers)
            .map(str::to_string)
            .collect();
        m.vend_counters = robots
            .into_iter()
            .map(|r| {
                let by_provider = m
                    .providers
                    .iter()
                    .map(|p| (p.clone(), Default::default()))
                    .collect();
                (r.to_string(), by_provider)
            })
            .collect();
        m
    }

    /// `name` as a label value: itself when configured, else [`UNKNOWN`].
    fn label(name: &str, configured: bool) -> String {
        if configured { name } else { UNKNOWN }.to_string()
    }

    /// Count a token handed out.
    pub fn count_vend(&self, robot: &str, provider: &str, source: Source) {
        let slot = self
            .vend_counters
            .get(robot)
            .and_then(|by_provider| by_provider.get(provider))
            .map(|counters| &counters[source as usize]);
        let labels = || VendLabels {
            robot: Metrics::label(robot, self.vend_counters.contains_key(robot)),
            provider: Metrics::label(provider, self.providers.contains(provider)),
            source: source.as_str().into(),
        };
        match slot {
            Some(slot) => slot
                .get_or_init(|| self.vended.get_or_create(&labels()).clone())
                .inc(),
            None => self.vended.get_or_create(&labels()).inc(),
        };
    }

    /// Count a request refused.
    pub fn count_refusal(&self, robot: &str, provider: &str, code: Code) {
        self.denied
            .get_or_create(&DenyLabels {
                robot: Metrics::label(robot, self.vend_counters.contains_key(robot)),
                provider: Metrics::label(provider, self.providers.contains(provider)),
                code: code.as_str().into(),
            })
            .inc();
    }

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
            vend_counters: HashMap::new(),
            providers: BUILT_IN_PROVIDERS.into_iter().map(str::to_string).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_indexes_its_own_counter() {
        for (i, source) in Source::ALL.into_iter().enumerate() {
            assert_eq!(source as usize, i, "{source:?}");
        }
    }

    #[test]
    fn vends_and_refusals_are_counted_under_configured_names_only() {
        let m = Metrics::for_names(["ci"], ["op"]);
        m.count_vend("ci", "local", Source::Cached);
        m.count_vend("ci", "local", Source::Cached);
        m.count_vend("ci", "op", Source::Refreshed);
        m.count_vend("stranger", "made-up", Source::Signed);
        m.count_refusal("ci", "made-up", Code::Forbidden);
        m.count_refusal("stranger", "op", Code::Unauthenticated);
        let text = m.render();
        for line in [
            r#"credkeeper_tokens_vended_total{robot="ci",provider="local",source="cached"} 2"#,
            r#"credkeeper_tokens_vended_total{robot="ci",provider="op",source="refreshed"} 1"#,
            r#"credkeeper_tokens_vended_total{robot="unknown",provider="unknown",source="signed"} 1"#,
            r#"credkeeper_tokens_denied_total{robot="ci",provider="unknown",code="forbidden"} 1"#,
            r#"credkeeper_tokens_denied_total{robot="unknown",provider="op",code="unauthenticated"} 1"#,
        ] {
            assert!(text.contains(line), "{line} not in:\n{text}");
        }
        assert!(
            !text.contains("stranger") && !text.contains("made-up"),
            "{text}"
        );
        // No series for what was never counted.
        assert!(!text.contains(r#"source="client_credentials""#), "{text}");
    }
}
