//! What every store backend must do, written once and run over each backend
//! (`tests/sqlite.rs`, `tests/postgres.rs`). `open` gives a new handle on the same store,
//! as another process (or replica) would have.

use credkeeper_core::{Secret, Timestamp};
use credkeeper_store::{CachedToken, Claim, CredentialKey, Health, Store, TaskRun};
use std::sync::Arc;

pub type Open<'a> = &'a (dyn Fn() -> Arc<dyn Store> + Sync);

/// Run `racers` handles at once, each doing `f`; how many said yes.
fn race(open: Open, racers: usize, f: impl Fn(&dyn Store) -> bool + Sync) -> usize {
    let stores: Vec<_> = (0..racers).map(|_| open()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = stores
            .iter()
            .map(|store| s.spawn(|| f(&**store) as usize))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

pub fn refresh_tokens_round_trip_and_a_new_login_replaces_the_old(open: Open) {
    let key = CredentialKey::new("https://iss", "client", "default");
    let store = open();
    assert!(store.get(&key).unwrap().is_none());
    store
        .put(&key, &Secret::new("rt-1"), Some("read"), None)
        .unwrap();
    store
        .put(&key, &Secret::new("rt-2"), Some("read"), None)
        .unwrap();
    assert_eq!(store.list().unwrap(), vec![key.clone()]);
    let got = open().get(&key).unwrap().unwrap();
    assert_eq!(got.refresh_token.expose(), "rt-2");
    assert_eq!(got.scope.as_deref(), Some("read"));
    assert!(store.delete(&key).unwrap());
    assert!(!store.delete(&key).unwrap());
    assert!(store.get(&key).unwrap().is_none());
}

pub fn access_tokens_and_health_are_kept_and_a_new_login_clears_the_health(open: Open) {
    let store = open();
    let key = CredentialKey::new("https://iss", "client", "robot");
    store.put(&key, &Secret::new("rt"), None, None).unwrap();
    let cached = CachedToken {
        token: Secret::new("access-token-value"),
        expires: Timestamp::from_unix(2000),
        issued: Timestamp::from_unix(1000),
        scope: Some("read".into()),
    };
    store.put_access(&key, &cached).unwrap();
    let health = Health {
        needs_login: Some("invalid_grant".into()),
        failures: 3,
        next_attempt: Some(Timestamp::from_unix(1500)),
        refresh_started: None,
    };
    store.set_health(&key, &health).unwrap();
    let got = store.get(&key).unwrap().unwrap();
    let access = got.access.unwrap();
    assert_eq!(access.token.expose(), "access-token-value");
    assert_eq!(access.expires, Timestamp::from_unix(2000));
    assert_eq!(access.issued, Timestamp::from_unix(1000));
    assert_eq!(got.health, health);
    store.put(&key, &Secret::new("rt2"), None, None).unwrap();
    let got = store.get(&key).unwrap().unwrap();
    assert_eq!(got.health, Health::default());
    // A rotated refresh token without an access token keeps the cached one...
    assert_eq!(got.access.unwrap().token.expose(), "access-token-value");
    // ...and one with it replaces the cached one in the same write.
    let newer = CachedToken {
        token: Secret::new("access-token-value-2"),
        expires: Timestamp::from_unix(3000),
        issued: Timestamp::from_unix(2500),
        scope: None,
    };
    store
        .put(&key, &Secret::new("rt3"), None, Some(&newer))
        .unwrap();
    let got = store.get(&key).unwrap().unwrap();
    assert_eq!(got.refresh_token.expose(), "rt3");
    let access = got.access.unwrap();
    assert_eq!(access.token.expose(), "access-token-value-2");
    assert_eq!(
        (access.expires, access.issued, access.scope),
        (newer.expires, newer.issued, None)
    );
}

pub fn one_refresh_claim_at_a_time_across_handles_until_ended_or_lapsed(open: Open) {
    let key = CredentialKey::new("https://iss", "client", "robot");
    let first = open();
    assert!(matches!(
        first.claim_refresh(&key, 60).unwrap(),
        Claim::Missing
    ));
    first.put(&key, &Secret::new("rt1"), None, None).unwrap();
    // Eight "processes" race for the claim: exactly one wins.
    let winners = race(open, 8, |store| {
        matches!(
            store.claim_refresh(&key, 60).unwrap(),
            Claim::Granted { .. }
        )
    });
    assert_eq!(winners, 1);
    let Claim::Held { until } = first.claim_refresh(&key, 60).unwrap() else {
        panic!("a live claim must hold");
    };
    assert!(until > Timestamp::now());
    // A rotated token ends the claim; the next claimant reads it.
    first.put(&key, &Secret::new("rt2"), None, None).unwrap();
    let Claim::Granted {
        credential, lapsed, ..
    } = first.claim_refresh(&key, 60).unwrap()
    else {
        panic!("put must end the claim");
    };
    assert_eq!(credential.refresh_token.expose(), "rt2");
    assert_eq!(lapsed, None);
    // Ending it through the health (a failed refresh) lets the next one in too.
    first.set_health(&key, &Health::default()).unwrap();
    assert!(matches!(
        first.claim_refresh(&key, 0).unwrap(),
        Claim::Granted { lapsed: None, .. }
    ));
    // A claim of zero seconds has lapsed at once: the next claimant is told when the
    // unfinished refresh began.
    let Claim::Granted { lapsed, .. } = first.claim_refresh(&key, 60).unwrap() else {
        panic!("a lapsed claim must not hold");
    };
    assert!(lapsed.is_some());
}

pub fn each_due_run_is_claimed_once_across_handles(open: Open) {
    let due = Timestamp::from_unix(Timestamp::now().unix() - 5);
    let claims = race(open, 6, |store| {
        store.claim_runs(&[("nightly", due)]).unwrap()[0]
    });
    assert_eq!(claims, 1);
    assert_eq!(
        open()
            .claim_runs(&[
                ("nightly", due),
                ("nightly", due.plus_secs(60)),
                ("hourly", due)
            ])
            .unwrap(),
        [false, true, true]
    );
}

pub fn shared_state_expires_is_kept_once_and_is_taken_once(open: Open) {
    let store = open();
    let later = Timestamp::now().plus_secs(600);
    store
        .put_state("vault-token", "d1", b"session-value", later)
        .unwrap();
    store
        .put_state("vault-token", "gone", b"x", Timestamp::now().plus_secs(-1))
        .unwrap();
    assert_eq!(
        store.state("vault-token", "d1").unwrap(),
        Some((b"session-value".to_vec(), later))
    );
    assert_eq!(store.state("vault-token", "gone").unwrap(), None);
    assert_eq!(store.state("web-link", "d1").unwrap(), None);
    // Kept only where nothing live is: the first stays, an expired one is replaced.
    assert!(
        !store
            .put_state_new("vault-token", "d1", b"other", later)
            .unwrap()
    );
    assert!(
        store
            .put_state_new("vault-token", "gone", b"y", later)
            .unwrap()
    );
    assert_eq!(
        store.state("vault-token", "gone").unwrap(),
        Some((b"y".to_vec(), later))
    );
    // Of several first writers at once, one wins.
    let firsts = race(open, 6, |store| {
        store
            .put_state_new("issuer-key", "ES256", b"k", later)
            .unwrap()
    });
    assert_eq!(firsts, 1);
    store
        .put_state("vault-token", "gone", b"x", Timestamp::now().plus_secs(-1))
        .unwrap();
    assert_eq!(store.count_state("vault-token").unwrap(), 1);
    // Single use across handles: of six takers, one gets it.
    let takers = race(open, 6, |store| {
        store.take_state("vault-token", "d1").unwrap().is_some()
    });
    assert_eq!(takers, 1);
    for (id, secs) in [("a", 100), ("b", 300), ("c", 200)] {
        let expires = Timestamp::now().plus_secs(secs);
        store.put_state("login", id, b"v", expires).unwrap();
    }
    assert_eq!(store.trim_state("login", 2).unwrap(), 1);
    assert_eq!(
        store.state("login", "a").unwrap(),
        None,
        "the first to expire goes"
    );
    assert_eq!(store.count_state("login").unwrap(), 2);
    assert_eq!(store.purge_state().unwrap(), 1);
    assert!(!store.delete_state("vault-token", "gone").unwrap());
    assert!(store.delete_state("login", "b").unwrap());
}

fn run(task: &str, i: i64, status: Option<i32>) -> TaskRun {
    TaskRun {
        task: task.into(),
        started: Timestamp::from_unix(1000 + i),
        ended: Timestamp::from_unix(1010 + i),
        status,
        attempts: 1,
        reason: status
            .filter(|s| *s != 0)
            .map(|s| format!("exit status {s}")),
        output: format!("run-output-number-{i}"),
    }
}

pub fn task_runs_are_kept_newest_first_up_to_a_limit(open: Open) {
    let store = open();
    for (i, status) in [(1, Some(0)), (2, Some(3)), (3, None)] {
        store.record_runs(&[run("sync", i, status)], 2).unwrap();
    }
    let runs = store.runs("sync", 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].output, "run-output-number-3");
    assert_eq!(runs[0].status, None);
    assert_eq!(runs[1].reason.as_deref(), Some("exit status 3"));
    assert_eq!(runs[1].ended, Timestamp::from_unix(1012));
    assert!(store.runs("other", 10).unwrap().is_empty());
    assert_eq!(
        store.last_started("sync").unwrap(),
        Some(Timestamp::from_unix(1003))
    );
    assert_eq!(store.last_started("other").unwrap(), None);
}

pub fn a_batch_of_runs_is_kept_whole_and_each_task_keeps_its_own_limit(open: Open) {
    let store = open();
    let batch: Vec<TaskRun> = (1..=5)
        .map(|i| run("a", i, Some(0)))
        .chain((1..=2).map(|i| run("b", i, Some(1))))
        .collect();
    store.record_runs(&batch, 3).unwrap();
    let a = store.runs("a", 10).unwrap();
    assert_eq!(
        a.iter().map(|r| r.output.as_str()).collect::<Vec<_>>(),
        [
            "run-output-number-5",
            "run-output-number-4",
            "run-output-number-3"
        ],
        "the newest three of a's five"
    );
    let b = store.runs("b", 10).unwrap();
    assert_eq!(b.len(), 2, "b's two, under the limit, both kept");
    assert_eq!(b[0].reason.as_deref(), Some("exit status 1"));
    store.record_runs(&[], 3).unwrap();
    assert_eq!(
        store.runs("a", 10).unwrap().len(),
        3,
        "an empty batch changes nothing"
    );
}

pub fn task_secrets_round_trip_by_name(open: Open) {
    let store = open();
    store
        .put_task_secret("DB_PASSWORD", &Secret::new("first-value"))
        .unwrap();
    store
        .put_task_secret("DB_PASSWORD", &Secret::new("plain-secret-value"))
        .unwrap();
    store.put_task_secret("API_KEY", &Secret::new("k")).unwrap();
    assert_eq!(
        store.task_secret("DB_PASSWORD").unwrap().unwrap().expose(),
        "plain-secret-value"
    );
    assert!(store.task_secret("OTHER").unwrap().is_none());
    let names: Vec<String> = store
        .task_secret_names()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, vec!["API_KEY", "DB_PASSWORD"]);
    assert!(store.delete_task_secret("API_KEY").unwrap());
    assert!(!store.delete_task_secret("API_KEY").unwrap());
}

pub fn robot_secrets_are_kept_as_given_hashes(open: Open) {
    let store = open();
    assert_eq!(store.robot_secret_hash("ci").unwrap(), None);
    store
        .set_robot_secret_hash("ci", "$argon2id$v=19$x")
        .unwrap();
    store
        .set_robot_secret_hash("ci", "$argon2id$v=19$y")
        .unwrap();
    assert_eq!(
        open().robot_secret_hash("ci").unwrap().as_deref(),
        Some("$argon2id$v=19$y")
    );
}

/// The canary values the tests above stored, none of which may rest in clear text.
pub const CANARIES: &[&[u8]] = &[
    b"access-token-value",
    b"session-value",
    b"run-output-number",
    b"plain-secret-value",
];

/// One `#[test]` per behaviour above, each on a new empty store: `$fresh()` gives its
/// opener and whatever must live as long as the store (a directory, a database).
#[macro_export]
macro_rules! spec_tests {
    ($fresh:expr) => {
        $crate::spec_tests!(@each $fresh;
            refresh_tokens_round_trip_and_a_new_login_replaces_the_old,
            access_tokens_and_health_are_kept_and_a_new_login_clears_the_health,
            one_refresh_claim_at_a_time_across_handles_until_ended_or_lapsed,
            each_due_run_is_claimed_once_across_handles,
            shared_state_expires_is_kept_once_and_is_taken_once,
            task_runs_are_kept_newest_first_up_to_a_limit,
            a_batch_of_runs_is_kept_whole_and_each_task_keeps_its_own_limit,
            task_secrets_round_trip_by_name,
            robot_secrets_are_kept_as_given_hashes);
    };
    (@each $fresh:expr; $($case:ident),*) => {
        $(
            #[test]
            fn $case() {
                let (open, _keep) = $fresh();
                spec::$case(&*open);
            }
        )*
    };
}
