//! The refresher loop: keeps every stored provider credential's access token fresh.
//!
//! A credential is due when its cached token has less than `share` of its lifetime left
//! (or none is cached) and its backoff has passed. Due credentials are refreshed
//! concurrently, at most `concurrency` at a time; a failing provider only delays its own
//! credentials. `invalid_grant` marks a credential as needing a new login, after which it
//! is reported (metrics, API errors) and not retried until someone logs in again.

use crate::broker::Broker;
use crate::metrics::RefreshLabels;
use credkeeper_core::Timestamp;
use credkeeper_oidc::TokenRequest;
use credkeeper_refresher::expiry;
use credkeeper_refresher::{Claiming, RefreshError, Refresher};
use credkeeper_store::{CredentialKey, StoredCredential};
use std::sync::Arc;

/// What one pass saw, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub credentials: usize,
    pub refreshed: usize,
    pub failed: usize,
    pub needs_login: usize,
    pub fresh: usize,
}

fn due(stored: &StoredCredential, share: f64, now: Timestamp) -> bool {
    if stored.health.needs_login.is_some() {
        return false;
    }
    if stored.health.next_attempt.is_some_and(|t| t > now) {
        return false;
    }
    match &stored.access {
        None => true,
        Some(a) => {
            let lifetime = (a.expires.unix() - a.issued.unix()).max(1) as f64;
            (a.expires.seconds_after(now) as f64) < lifetime * share
        }
    }
}

/// One pass over every stored credential of a configured provider.
pub async fn pass(broker: &Arc<Broker>, stop: &tokio::sync::watch::Receiver<bool>) -> PassReport {
    let share = broker.config.refresher.share;
    let semaphore = Arc::new(tokio::sync::Semaphore::new(
        broker.config.refresher.concurrency,
    ));
    let keys = match broker.store.list() {
        Ok(k) => k,
        Err(e) => {
            tracing::error!("refresher: cannot list credentials: {e}");
            return PassReport::default();
        }
    };
    let started = std::time::Instant::now();
    let total = keys.len();
    let mut tasks = tokio::task::JoinSet::new();
    let mut report = PassReport {
        credentials: total,
        ..Default::default()
    };
    let mut earliest: Option<i64> = None;
    for key in keys {
        if *stop.borrow() {
            break;
        }
        // Take the permit before spawning: at most `concurrency` tasks exist at once,
        // however many credentials are stored.
        let Ok(permit) = semaphore.clone().acquire_owned().await else {
            break;
        };
        let broker = broker.clone();
        tasks.spawn(async move {
            let _permit = permit;
            Some(refresh_one(&broker, &key, share).await)
        });
        // Collect finished tasks as we go, so results do not pile up either.
        while let Some(done) = tasks.try_join_next() {
            tally(done.ok().flatten(), &mut report, &mut earliest);
        }
    }
    while let Some(done) = tasks.join_next().await {
        tally(done.ok().flatten(), &mut report, &mut earliest);
    }
    broker.sweep_locks();
    broker.metrics.needs_login.set(report.needs_login as i64);
    broker.metrics.earliest_expiry.set(earliest.unwrap_or(0));
    if report.refreshed + report.failed > 0 {
        tracing::info!(
            "refresher pass over {} credentials in {} ms: {} refreshed, {} failed, {} need login, {} fresh",
            report.credentials,
            started.elapsed().as_millis(),
            report.refreshed,
            report.failed,
            report.needs_login,
            report.fresh
        );
    }
    report
}

fn tally(outcome: Option<Outcome>, report: &mut PassReport, earliest: &mut Option<i64>) {
    match outcome {
        Some(Outcome::Fresh(left)) => {
            report.fresh += 1;
            *earliest = Some(earliest.map_or(left, |e| e.min(left)));
        }
        Some(Outcome::Refreshed(left)) => {
            report.refreshed += 1;
            *earliest = Some(earliest.map_or(left, |e| e.min(left)));
        }
        Some(Outcome::NeedsLogin) => report.needs_login += 1,
        Some(Outcome::Failed) => report.failed += 1,
        Some(Outcome::Skipped) | None => {}
    }
}

enum Outcome {
    Fresh(i64),
    Refreshed(i64),
    NeedsLogin,
    Failed,
    Skipped,
}

async fn refresh_one(broker: &Broker, key: &CredentialKey, share: f64) -> Outcome {
    let Some(provider) = broker.config.providers.iter().find(|p| {
        // Match on the configured issuer; discovery may add or drop a trailing slash.
        p.issuer.trim_end_matches('/') == key.issuer.trim_end_matches('/')
            && p.client_id == key.client_id
    }) else {
        return Outcome::Skipped;
    };
    let lock = broker.lock_for(key);
    let _held = lock.lock().await;
    let now = Timestamp::now();
    let stored = match broker.store.get(key) {
        Ok(Some(s)) => s,
        _ => return Outcome::Skipped,
    };
    if stored.health.needs_login.is_some() {
        return Outcome::NeedsLogin;
    }
    if !due(&stored, share, now) {
        return match &stored.access {
            Some(a) => Outcome::Fresh(a.expires.seconds_after(now)),
            None => Outcome::Skipped,
        };
    }
    let count = |outcome: &str| {
        broker
            .metrics
            .refreshes
            .get_or_create(&RefreshLabels {
                provider: provider.name.clone(),
                outcome: outcome.into(),
            })
            .inc();
    };
    let client = match broker.client(provider).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("refresher: {e}");
            count("failed");
            return Outcome::Failed;
        }
    };
    let refresher = Refresher {
        client: &client,
        store: broker.store.as_ref(),
        identity: &key.identity,
        claim_secs: provider.claim_secs(broker.config.refresher.claim_secs),
    };
    let request = TokenRequest {
        scopes: provider.scopes.clone(),
        audience: provider.audience.clone(),
    };
    // Another broker sharing the store may have refreshed it since the read above, or be
    // refreshing it now: the claim tells, and a busy credential is left to that broker.
    let claimed = match refresher.claim() {
        Ok(Claiming::Claimed(c)) => c,
        Ok(Claiming::Elsewhere { .. } | Claiming::Missing) => return Outcome::Skipped,
        Err(e) => {
            tracing::error!("refresher: cannot claim {}: {e}", key.identity);
            count("failed");
            return Outcome::Failed;
        }
    };
    if !due(&claimed.credential, share, Timestamp::now()) {
        let left = claimed
            .credential
            .access
            .as_ref()
            .map(|a| a.expires.seconds_after(Timestamp::now()));
        if let Err(e) = refresher.release(claimed) {
            tracing::error!(
                "refresher: cannot release the claim on {}: {e}",
                key.identity
            );
        }
        return left.map_or(Outcome::Skipped, Outcome::Fresh);
    }
    match refresher.refresh_claimed(claimed, &request, true).await {
        Ok(response) => {
            let expires = expiry(&response.access_token, response.expires_in);
            count("ok");
            Outcome::Refreshed(expires.seconds_after(Timestamp::now()))
        }
        Err(RefreshError::NeedLogin { reason, .. }) => {
            tracing::warn!(
                "refresher: {} at {} needs a new login: {reason}",
                key.identity,
                provider.name
            );
            count("needs_login");
            Outcome::NeedsLogin
        }
        Err(e) => {
            tracing::warn!("refresher: {} at {}: {e}", key.identity, provider.name);
            count("failed");
            Outcome::Failed
        }
    }
}

/// Run passes every `interval` seconds until `stop` turns true; a pass in progress stops
/// starting new refreshes at once and finishes those in flight.
pub async fn run(broker: Arc<Broker>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let interval = std::time::Duration::from_secs(broker.config.refresher.interval.max(1));
    loop {
        let report = pass(&broker, &stop).await;
        tracing::debug!("refresher pass: {report:?}");
        // Expired Vault tokens and handles go with each pass.
        if let Err(e) = broker.store.purge_state() {
            tracing::warn!("cannot forget expired shared state: {e}");
        }
        if let Some(settings) = &broker.issuer_keys
            && let Err(e) = crate::issuer_keys::follow(&broker.store, settings, &broker.issuer)
        {
            tracing::warn!("cannot follow the issuer's keys in the store: {e}");
        }
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}
