//! The store's specification (tests/spec) over PostgreSQL, a real server from the testbed;
//! handles on one database stand for replicas sharing it. Then what only a shared database
//! raises: one key file for all, schema migrations run once, a copy from SQLite.

mod pg;
mod spec;

use credkeeper_core::Secret;
use credkeeper_store::{
    CredentialKey, CredentialStore, PostgresStore, SqliteStore, Store, StoreError, TaskSecrets,
};
use pg::Server;
use std::sync::Arc;

type Opener = Box<dyn Fn() -> Arc<dyn Store> + Sync>;

struct Keep {
    _server: Arc<Server>,
    _dir: tempfile::TempDir,
}

fn fresh() -> (Opener, Keep) {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let settings = server.settings(&server.new_database(), &dir.path().join("store.key"));
    let open: Opener =
        Box::new(move || Arc::new(PostgresStore::open(&settings).unwrap()) as Arc<dyn Store>);
    (
        open,
        Keep {
            _server: server,
            _dir: dir,
        },
    )
}

spec_tests!(fresh);

#[test]
fn the_database_sees_only_ciphertext() {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let url = server.new_database();
    let settings = server.settings(&url, &dir.path().join("store.key"));
    let open = || Arc::new(PostgresStore::open(&settings).unwrap()) as Arc<dyn Store>;
    spec::access_tokens_and_health_are_kept_and_a_new_login_clears_the_health(&open);
    spec::shared_state_expires_is_kept_once_and_is_taken_once(&open);
    spec::task_runs_are_kept_newest_first_up_to_a_limit(&open);
    spec::a_batch_of_runs_is_kept_whole_and_each_task_keeps_its_own_limit(&open);
    spec::task_secrets_round_trip_by_name(&open);
    let dump = server.dump(&url);
    assert!(
        dump.windows(11).any(|w| w == b"shared_stat"),
        "the dump has the tables"
    );
    for canary in spec::CANARIES {
        assert!(
            !dump.windows(canary.len()).any(|w| w == *canary),
            "{} in clear text in the database",
            String::from_utf8_lossy(canary)
        );
    }
}

#[test]
fn a_replica_with_another_key_file_is_refused_before_it_seals_anything() {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let url = server.new_database();
    let first = PostgresStore::open(&server.settings(&url, &dir.path().join("a.key"))).unwrap();
    first.put_task_secret("X", &Secret::new("v")).unwrap();
    let err = PostgresStore::open(&server.settings(&url, &dir.path().join("b.key")))
        .err()
        .expect("another key must be refused");
    assert!(err.to_string().contains("another key file"), "{err}");
    // The same key file, copied (a Kubernetes Secret on every replica), opens it.
    std::fs::copy(dir.path().join("a.key"), dir.path().join("c.key")).unwrap();
    let other = PostgresStore::open(&server.settings(&url, &dir.path().join("c.key"))).unwrap();
    assert_eq!(other.task_secret("X").unwrap().unwrap().expose(), "v");
}

#[test]
fn replicas_starting_together_migrate_the_schema_once() {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let url = server.new_database();
    let settings = server.settings(&url, &dir.path().join("store.key"));
    // The key file first, so the racers do not each make one.
    drop(
        PostgresStore::open(&server.settings(&server.new_database(), &settings.key_file)).unwrap(),
    );
    let opened: usize = std::thread::scope(|s| {
        let racers: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PostgresStore::open(&settings).is_ok() as usize))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).sum()
    });
    assert_eq!(opened, 4);
}

#[test]
fn a_wrong_password_or_an_untrusted_server_is_a_clear_error_without_the_password() {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let url = server.new_database();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "not-the-password-canary\n").unwrap();
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut settings = server.settings(&url, &dir.path().join("store.key"));
    settings.password_file = Some(wrong);
    let err = PostgresStore::open(&settings).err().unwrap().to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(!err.contains("not-the-password-canary"), "{err}");
    // Without the testbed's CA the server's certificate is not trusted.
    let mut settings = server.settings(&url, &dir.path().join("store.key"));
    settings.ca_file = None;
    let err = PostgresStore::open(&settings).err().unwrap().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn a_sqlite_store_copied_row_for_row_opens_the_same_in_postgresql() {
    let server = Server::shared();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path()).unwrap();
    let key = CredentialKey::new("https://iss", "client", "robot:ci");
    sqlite
        .put(&key, &Secret::new("rt-to-move"), Some("read"), None)
        .unwrap();
    sqlite
        .put_task_secret("TOKEN", &Secret::new("task-value"))
        .unwrap();
    let settings = server.settings(&server.new_database(), &SqliteStore::key_file(dir.path()));
    let postgres = PostgresStore::open(&settings).unwrap();
    let dump = sqlite.export().unwrap();
    postgres.import(&dump).unwrap();
    assert_eq!(postgres.counts().unwrap(), dump.counts());
    assert_eq!(
        postgres.get(&key).unwrap().unwrap().refresh_token.expose(),
        "rt-to-move"
    );
    assert_eq!(
        postgres.task_secret("TOKEN").unwrap().unwrap().expose(),
        "task-value"
    );
    // Again: nothing doubles.
    postgres.import(&dump).unwrap();
    assert_eq!(postgres.counts().unwrap(), dump.counts());
}

#[test]
fn the_store_answers_again_by_itself_after_the_database_comes_back() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let settings = server.settings(&server.new_database(), &dir.path().join("store.key"));
    let store = PostgresStore::open(&settings).unwrap();
    store.put_task_secret("A", &Secret::new("1")).unwrap();
    store.ping().unwrap();
    server.ctl("stop");
    let err = store.ping().unwrap_err();
    assert!(matches!(err, StoreError::Backend { .. }), "{err}");
    assert!(store.task_secret("A").is_err());
    server.ctl("start");
    store.ping().unwrap();
    assert_eq!(store.task_secret("A").unwrap().unwrap().expose(), "1");
}
