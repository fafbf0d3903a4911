//! A fleet: brokers and schedulers as replicas on one real PostgreSQL (from the testbed),
//! in front of the real provider with refresh-token rotation on. Each refresh happens once
//! across the fleet, a replica killed mid-refresh loses its claim to another, the
//! replicas' readiness follows the database, each due task runs once, and a SQLite broker
//! moves to PostgreSQL with `store migrate`.

mod common;
#[path = "../../store/tests/pg/mod.rs"]
mod pg;

use common::*;
use pg::Server;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The provider, a database and the config every replica shares.
struct Fleet {
    user: User,
    config: PathBuf,
    state: PathBuf,
    _db: Server,
}

impl Fleet {
    fn new(op: &Op, claim_secs: u32) -> Fleet {
        Fleet::new_with(op, claim_secs, "")
    }

    /// With `provider` added to the provider's section.
    fn new_with(op: &Op, claim_secs: u32, provider: &str) -> Fleet {
        let db = Server::start();
        let user = User::new();
        let url = db.new_database();
        let key_file = user.path("store.key");
        let store = db.store_section(&url, &key_file);
        // Client commands of this user (`login --robot`, `tasks serve`) use the same store.
        let client = user.path(".config/credkeeper/config.toml");
        std::fs::create_dir_all(client.parent().unwrap()).unwrap();
        std::fs::write(&client, &store).unwrap();
        let config = user.path("broker.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[refresher]
interval = 1
share = 0.5
claim_secs = {claim_secs}

{store}
[[provider]]
name = "op"
issuer = "{issuer}"
client_id = "device-client"
scopes = "read write"
{provider}

[[robot]]
name = "ci"
auth = {{ secret = true }}
providers = ["op", "local"]
scopes = ["read", "write"]
audiences = ["*"]

[[robot]]
name = "other"
auth = {{ secret = true }}
providers = ["op"]
scopes = ["read", "write"]
audiences = ["*"]
"#,
                issuer = op.issuer(),
            ),
        )
        .unwrap();
        let state = user.path("state");
        robot_secrets(&user, &config, &state, &["ci", "other"]);
        Fleet {
            user,
            config,
            state,
            _db: db,
        }
    }

    fn db(&self) -> &Server {
        &self._db
    }

    /// A human logs robot `robot` in once; the credential goes to the shared database.
    fn robot_login(&self, op: &Op, robot: &str) {
        device_login(
            &self.user,
            op,
            "device-client",
            &[
                "--robot",
                robot,
                "--scopes",
                "read write",
                "-o",
                self.user.path("login.token").to_str().unwrap(),
            ],
        );
    }

    /// A replica: its own state directory (audit log), the shared database.
    fn start(&self, n: usize) -> Broker {
        Broker::start(
            &self.user,
            &self.state.join(format!("replica-{n}")),
            &["--config", self.config.to_str().unwrap()],
        )
    }

    fn ask(&self, broker: &Broker, robot: &str) -> (u16, String) {
        let secret = read(&self.user.path(&format!("{robot}.secret")));
        broker.http(
            "POST",
            "/api/v1/token",
            Some((robot, secret.trim())),
            Some(r#"{"provider":"op","scopes":"read","minsecs":1}"#),
        )
    }
}

/// The `kid`s a broker publishes.
fn kids(broker: &Broker) -> Vec<String> {
    let (code, text) = broker.http("GET", "/jwks", None, None);
    assert_eq!(code, 200, "{text}");
    let jwks: serde_json::Value = serde_json::from_str(&text).unwrap();
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// The `kid` of a token the broker's own issuer signs now (for an audience never asked
/// before, so that no cached token answers).
fn signing_kid(f: &Fleet, broker: &Broker) -> String {
    static ASKED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = ASKED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let secret = read(&f.user.path("ci.secret"));
    let (code, text) = broker.http(
        "POST",
        "/api/v1/token",
        Some(("ci", secret.trim())),
        Some(&format!(
            r#"{{"provider":"local","scopes":"read","audience":"https://s{n}.example"}}"#
        )),
    );
    assert_eq!(code, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    header(body["access_token"].as_str().unwrap())["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

fn metric(broker: &Broker, name: &str) -> f64 {
    let (_, text) = broker.http("GET", "/metrics", None, None);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const REFRESHED: &str = "credkeeper_refreshes_total{provider=\"op\",outcome=\"ok\"}";

fn refreshed(brokers: &[&Broker]) -> f64 {
    brokers.iter().map(|b| metric(b, REFRESHED)).sum()
}

/// Refresh grants the provider answered with success.
fn grants(op: &Op) -> usize {
    op.log()
        .lines()
        .filter(|l| l.contains("grant.success") && l.contains("grant_type=refresh_token"))
        .count()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn three_replicas_on_postgresql_share_rotating_refresh_tokens_and_each_grant_is_counted_once() {
    // Tokens live 4 s and every refresh rotates the refresh token: a refresh token used
    // twice would be refused (invalid_grant) and the grant revoked. The provider holds each
    // token request 1 s, so that refreshes overlap other replicas' passes.
    let op = Op::start_with(&[
        ("OP_AT_TTL", "4"),
        ("OP_RT_ROTATE", "always"),
        ("OP_TOKEN_DELAY_MS", "1000"),
    ]);
    let f = Fleet::new(&op, 90);
    f.robot_login(&op, "ci");
    f.robot_login(&op, "other");
    let brokers = [f.start(1), f.start(2), f.start(3)];
    let all: Vec<&Broker> = brokers.iter().collect();
    wait_until(
        "ten refreshes across the fleet",
        Duration::from_secs(60),
        || refreshed(&all) >= 10.0,
    );
    // Each grant the provider made is one refresh one replica counted: none was made
    // twice. (Read until a refresh does not slip in between the two counts.)
    let mut agreed = false;
    for _ in 0..20 {
        let before = refreshed(&all);
        let at_op = grants(&op);
        if refreshed(&all) == before {
            assert_eq!(at_op as f64, before, "{}", op.log());
            agreed = true;
            break;
        }
    }
    assert!(agreed, "the counts never held still");
    let log = op.log();
    assert!(
        !log.contains("invalid_grant"),
        "a refresh token was used twice:\n{log}"
    );
    let shares: Vec<f64> = all.iter().map(|b| metric(b, REFRESHED)).collect();
    eprintln!("refreshes per replica: {shares:?}");
    for broker in &brokers {
        assert_eq!(metric(broker, "credkeeper_credentials_needing_login"), 0.0);
        for robot in ["ci", "other"] {
            let (code, body) = f.ask(broker, robot);
            assert_eq!(code, 200, "{body}");
        }
    }
}

#[test]
fn a_replica_killed_mid_refresh_loses_its_claim_and_another_completes_the_refresh() {
    // Each token request is held 2.5 s at the provider before it is handled: the replica
    // is killed while its refresh is in flight, before the provider used the token.
    let op = Op::start_with(&[
        ("OP_AT_TTL", "4"),
        ("OP_RT_ROTATE", "always"),
        ("OP_TOKEN_DELAY_MS", "2500"),
    ]);
    let f = Fleet::new(&op, 5);
    f.robot_login(&op, "ci");
    let held = || op.log().matches("token.delayed").count();
    let before = held();
    let mut first = f.start(1);
    wait_until(
        "the first replica's refresh in flight",
        Duration::from_secs(30),
        || held() > before,
    );
    first.kill();
    let killed_at = Instant::now();
    let grants_then = grants(&op);
    let others = [f.start(2), f.start(3)];
    let all: Vec<&Broker> = others.iter().collect();
    // Within one claim (5 s) plus a refresher pass and the provider's delay.
    wait_until(
        "another replica to complete the refresh",
        Duration::from_secs(20),
        || refreshed(&all) >= 1.0,
    );
    let took = killed_at.elapsed();
    assert!(grants(&op) > grants_then);
    let log = op.log();
    assert!(!log.contains("invalid_grant"), "{log}");
    for broker in &others {
        assert_eq!(metric(broker, "credkeeper_credentials_needing_login"), 0.0);
        let (code, body) = f.ask(broker, "ci");
        assert_eq!(code, 200, "{body}");
    }
    eprintln!("the refresh was completed {took:?} after the kill");
}

/// Replica 1 is killed after the provider rotated its refresh token and before it heard
/// the answer (the provider holds refresh answers 3 s); replicas 2 and 3 then take over.
fn kill_after_the_provider_rotated(grace: bool) -> (Op, Fleet, [Broker; 2]) {
    let mut env = vec![
        ("OP_AT_TTL", "4"),
        ("OP_RT_ROTATE", "always"),
        ("OP_REFRESH_HOLD_MS", "3000"),
    ];
    if grace {
        env.push(("OP_RT_REUSE_GRACE", "30"));
    }
    let op = Op::start_with(&env);
    // With the provider's grace configured, the default 90 s claim is cut to half of it.
    let f = if grace {
        Fleet::new_with(&op, 90, "refresh_reuse_grace_secs = 16")
    } else {
        Fleet::new(&op, 5)
    };
    f.robot_login(&op, "ci");
    let held = || op.log().matches("token.refresh_held").count();
    let mut first = f.start(1);
    wait_until(
        "a refresh answered but held",
        Duration::from_secs(30),
        || held() > 0,
    );
    first.kill();
    let others = [f.start(2), f.start(3)];
    (op, f, others)
}

#[test]
fn with_the_providers_reuse_grace_a_replica_killed_after_rotation_loses_nothing() {
    let (op, f, others) = kill_after_the_provider_rotated(true);
    let all: Vec<&Broker> = others.iter().collect();
    // Within one (cut) claim of 8 s, a refresher pass and the provider's hold.
    wait_until(
        "another replica to refresh",
        Duration::from_secs(25),
        || refreshed(&all) >= 1.0,
    );
    let log = op.log();
    assert!(log.contains("token.reuse_grace"), "{log}");
    assert!(!log.contains("invalid_grant"), "{log}");
    for broker in &others {
        assert_eq!(metric(broker, "credkeeper_credentials_needing_login"), 0.0);
        let (code, body) = f.ask(broker, "ci");
        assert_eq!(code, 200, "{body}");
    }
}

#[test]
fn without_a_reuse_grace_a_replica_killed_after_rotation_costs_a_login_and_says_so() {
    // The one loss a rotating refresh token cannot avoid: the provider rotated it, the
    // replica that would have stored the new one died. It is reported, not retried.
    let (op, f, others) = kill_after_the_provider_rotated(false);
    wait_until(
        "the credential to need a login",
        Duration::from_secs(25),
        || {
            others
                .iter()
                .any(|b| metric(b, "credkeeper_credentials_needing_login") >= 1.0)
        },
    );
    assert!(op.log().contains("invalid_grant"));
    let (code, body) = f.ask(&others[0], "ci");
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("needs_login"), "{body}");
}

#[test]
fn a_rotated_issuer_key_is_published_by_every_replica_before_any_signs_with_it() {
    let op = Op::start();
    let f = Fleet::new(&op, 90);
    let (a, b) = (f.start(1), f.start(2));
    let old = kids(&a);
    assert_eq!(old.len(), 1);
    assert_eq!(kids(&b), old, "the replicas sign with one key");
    assert_eq!(signing_kid(&f, &b), old[0]);
    let out = f
        .user
        .cmd()
        .args(["--config", f.config.to_str().unwrap()])
        .args(["store", "rotate-issuer-key", "--lead", "6"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let rotated_at = Instant::now();
    wait_until(
        "both replicas to publish the new key",
        Duration::from_secs(5),
        || kids(&a).len() == 2 && kids(&b).len() == 2,
    );
    let new = kids(&a).into_iter().find(|k| *k != old[0]).unwrap();
    assert!(said.contains(&new), "{said}");
    // Published ahead: until the lead has passed, tokens are still signed with the old key.
    if rotated_at.elapsed() < Duration::from_secs(5) {
        assert_eq!(signing_kid(&f, &a), old[0]);
    }
    wait_until(
        "both replicas to sign with the new key",
        Duration::from_secs(15),
        || signing_kid(&f, &a) == new && signing_kid(&f, &b) == new,
    );
    // The old key stays published while tokens it signed may live.
    for broker in [&a, &b] {
        let published = kids(broker);
        assert!(
            published.contains(&old[0]) && published.contains(&new),
            "{published:?}"
        );
    }
}

#[test]
fn a_database_stopped_under_load_fails_requests_cleanly_and_the_replica_recovers_by_itself() {
    let op = Op::start();
    let f = Fleet::new(&op, 90);
    f.robot_login(&op, "ci");
    let mut broker = f.start(1);
    assert_eq!(broker.http("GET", "/readyz", None, None).0, 200);
    assert_eq!(f.ask(&broker, "ci").0, 200);
    // Load from four clients throughout: robots asking for tokens.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let codes = std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new());
    let password = read(&PathBuf::from(f.db().var("PG_PASSWORD_FILE")));
    let secret = read(&f.user.path("ci.secret"));
    let url = broker.url.clone();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, body) = http_at(
                        &url,
                        "POST",
                        "/api/v1/token",
                        Some(("ci", secret.trim())),
                        Some(r#"{"provider":"op","scopes":"read","minsecs":1}"#),
                    );
                    assert!(!body.contains(password.trim()), "{body}");
                    *codes.lock().unwrap().entry(code).or_default() += 1;
                }
            });
        }
        std::thread::sleep(Duration::from_secs(1));
        f.db().ctl("stop");
        let (code, body) = broker.http("GET", "/readyz", None, None);
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("store unavailable"), "{body}");
        // Liveness is not readiness: the process is fine, only its database is away.
        assert_eq!(broker.http("GET", "/healthz", None, None).0, 200);
        // What needs the database is refused, and says why.
        let (code, body) = broker.http(
            "POST",
            "/api/v1/logins",
            Some(("ci", secret.trim())),
            Some(r#"{"provider":"op"}"#),
        );
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("store"), "{body}");
        assert!(!body.contains(password.trim()), "{body}");
        std::thread::sleep(Duration::from_secs(2));
        f.db().ctl("start");
        wait_until("ready again", Duration::from_secs(20), || {
            broker.http("GET", "/readyz", None, None).0 == 200
        });
        wait_until("tokens again", Duration::from_secs(20), || {
            f.ask(&broker, "ci").0 == 200
        });
        std::thread::sleep(Duration::from_secs(1));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let codes = codes.into_inner().unwrap();
    eprintln!("answers under load, by status: {codes:?}");
    // While it was away: tokens it had cached, or clean refusals; never a dropped
    // connection, a 500 or a crash.
    for code in codes.keys() {
        assert!([200, 503].contains(code), "{codes:?}");
    }
    // Nothing lost: the stored credential still refreshes and serves.
    let running = broker
        .child
        .as_mut()
        .map(|c| c.try_wait().unwrap().is_none());
    assert_eq!(running, Some(true), "the broker still runs");
    assert_eq!(metric(&broker, "credkeeper_credentials_needing_login"), 0.0);
}

#[test]
fn a_broker_does_not_start_without_its_database_and_says_why() {
    let op = Op::start();
    let f = Fleet::new(&op, 90);
    f.db().ctl("stop");
    let out = f
        .user
        .cmd()
        .args(["--config", f.config.to_str().unwrap(), "serve"])
        .args(["--state-dir", f.state.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("postgres://credkeeper@127.0.0.1"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("connect"), "{stderr}");
    f.db().ctl("start");
}

#[test]
fn two_schedulers_on_postgresql_start_each_due_run_once_and_the_survivor_of_a_kill_goes_on() {
    let op = Op::start();
    let f = Fleet::new(&op, 90);
    let dir = f.user.home.path().display().to_string();
    let file = f.user.path("tasks.yaml");
    std::fs::write(
        &file,
        format!(
            "tasks:\n- name: tick\n  schedule: '@every 1s'\n  shell: true\n  command: 'date +%s >> {dir}/ticks'\n"
        ),
    )
    .unwrap();
    let serve = || {
        let mut cmd = f.user.cmd();
        cmd.args(["tasks", "serve", file.to_str().unwrap()]);
        let mut s = Spawned::start(cmd);
        s.wait_for("task(s) scheduled");
        s
    };
    let mut a = serve();
    let b = serve();
    std::thread::sleep(Duration::from_secs(4));
    // One replica dies without a word: the other goes on with every slot.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(Duration::from_secs(4));
    let (code, log) = b.terminate();
    assert_eq!(code, 0, "{log}");
    let ticks: Vec<String> = read(&f.user.path("ticks"))
        .lines()
        .map(str::to_string)
        .collect();
    assert!(ticks.len() >= 5, "{ticks:?}");
    let mut seconds = ticks.clone();
    seconds.sort();
    seconds.dedup();
    assert_eq!(seconds.len(), ticks.len(), "a due run ran twice: {ticks:?}");
    let after: Vec<u64> = seconds
        .iter()
        .map(|t| t.parse().unwrap())
        .filter(|t| *t > killed)
        .collect();
    assert!(
        after.len() >= 3,
        "the survivor ran the slots after the kill: {ticks:?}"
    );
    // One history for the fleet: every run, whichever replica started it.
    let history = f
        .user
        .run(&["tasks", "history", "tick", "--limit", "100"])
        .ok();
    let runs = history.stdout.lines().skip(1).count();
    assert_eq!(runs, ticks.len(), "{}", history.stdout);
}

#[test]
fn store_migrate_moves_a_sqlite_broker_to_postgresql_and_its_robots_keep_working() {
    let op = Op::start();
    let db = Server::start();
    let user = User::new();
    let state = user.path("state");
    let config = user.path("broker.toml");
    let robots = format!(
        r#"
[[provider]]
name = "op"
issuer = "{issuer}"
client_id = "device-client"
scopes = "read write"

[[robot]]
name = "ci"
auth = {{ secret = true }}
providers = ["op"]
scopes = ["read", "write"]
audiences = ["*"]
"#,
        issuer = op.issuer()
    );
    std::fs::write(&config, &robots).unwrap();
    robot_secrets(&user, &config, &state, &["ci"]);
    device_login(
        &user,
        &op,
        "device-client",
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--robot",
            "ci",
            "--scopes",
            "read write",
            "-o",
            user.path("login.token").to_str().unwrap(),
        ],
    );
    let url = db.new_database();
    let out = user
        .cmd()
        .args(["--config", config.to_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["store", "migrate", "--to", &url])
        .args(["--password-file", db.var("PG_PASSWORD_FILE")])
        .args(["--ca-file", db.var("PG_CA_FILE")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("credential            1 copied,        1 in the database"),
        "{stderr}"
    );
    // Again into the same database: refused, nothing doubled.
    let again = user
        .cmd()
        .args(["--config", config.to_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap()])
        .args(["store", "migrate", "--to", &url])
        .args(["--password-file", db.var("PG_PASSWORD_FILE")])
        .args(["--ca-file", db.var("PG_CA_FILE")])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("migrate into an empty database"));
    // The broker on PostgreSQL, with the SQLite store's key file: the robot's secret and
    // its stored login both came along.
    let key_file = state.join("store.key");
    std::fs::write(
        &config,
        format!("{}\n{robots}", db.store_section(&url, &key_file)),
    )
    .unwrap();
    let broker = Broker::start(
        &user,
        &user.path("fresh-state"),
        &["--config", config.to_str().unwrap()],
    );
    let secret = read(&user.path("ci.secret"));
    let (code, body) = broker.http(
        "POST",
        "/api/v1/token",
        Some(("ci", secret.trim())),
        Some(r#"{"provider":"op","scopes":"read","minsecs":1}"#),
    );
    assert_eq!(code, 200, "{body}");
}
