//! The broker in front of a real upstream provider: a robot's first login by a human,
//! down-scoped refreshes, the refresher loop, `invalid_grant` reported as needing a new
//! login, client credentials, and crash safety of refresh-token rotation.

mod common;
use common::*;
use std::time::{Duration, Instant};

fn broker_config(op: &Op, user: &User, extra: &str) -> std::path::PathBuf {
    let secret = user.secret_file("op-robot.secret", "robot-secret", 0o600);
    let text = format!(
        r#"
[refresher]
interval = 1
share = 0.5

[[provider]]
name = "op"
issuer = "{issuer}"
client_id = "device-client"
scopes = "read write"

[[provider]]
name = "op-cc"
issuer = "{issuer}"
client_id = "robot-client"
client_secret_file = "{secret}"

[[robot]]
name = "ci"
auth = {{ secret = true }}
providers = ["op", "op-cc"]
scopes = ["read", "write"]
audiences = ["*"]

[[robot]]
name = "other"
auth = {{ secret = true }}
providers = ["op"]
scopes = ["read", "write"]
audiences = ["*"]
{extra}"#,
        issuer = op.issuer(),
        secret = secret.display()
    );
    let config = user.path("broker.toml");
    std::fs::write(&config, text).unwrap();
    config
}

struct Setup {
    user: User,
    config: std::path::PathBuf,
    state: std::path::PathBuf,
}

impl Setup {
    fn new(op: &Op) -> Setup {
        let user = User::new();
        let config = broker_config(op, &user, "");
        let state = user.path("state");
        robot_secrets(&user, &config, &state, &["ci", "other"]);
        Setup {
            user,
            config,
            state,
        }
    }

    /// The one human login for robot `ci`, stored in the broker's state directory.
    fn robot_login(&self, op: &Op) {
        device_login(
            &self.user,
            op,
            "device-client",
            &[
                "--state-dir",
                self.state.to_str().unwrap(),
                "--robot",
                "ci",
                "--scopes",
                "read write",
                "-o",
                self.user.path("login.token").to_str().unwrap(),
            ],
        );
    }

    fn start(&self) -> Broker {
        Broker::start(
            &self.user,
            &self.state,
            &["--config", self.config.to_str().unwrap()],
        )
    }

    fn ask(&self, broker: &Broker, robot: &str, body: &str) -> (u16, serde_json::Value) {
        let secret = read(&self.user.path(&format!("{robot}.secret")));
        let (code, text) = broker.http(
            "POST",
            "/api/v1/token",
            Some((robot, secret.trim())),
            Some(body),
        );
        (
            code,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }
}

fn metric(broker: &Broker, name: &str) -> f64 {
    let (_, text) = broker.http("GET", "/metrics", None, None);
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_robots_first_login_then_down_scoped_tokens_from_the_broker() {
    let op = Op::start();
    let s = Setup::new(&op);
    s.robot_login(&op);
    let broker = s.start();
    let out = s.user.path("ci.token");
    s.user
        .run(&[
            "get",
            "--server",
            &broker.url,
            "--robot",
            "ci",
            "--secret-file",
            s.user.path("ci.secret").to_str().unwrap(),
            "--provider",
            "op",
            "--scopes",
            "read",
            "-o",
            out.to_str().unwrap(),
        ])
        .ok();
    let c = claims(&read(&out));
    assert_eq!(c["sub"], "alice", "the human who logged in for the robot");
    assert_eq!(c["iss"], op.issuer());
    assert_eq!(c["scope"], "read");

    // Another robot has no credential of its own and cannot use ci's.
    let (code, body) = s.ask(&broker, "other", r#"{"provider":"op","scopes":"read"}"#);
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "needs_login");
}

#[test]
fn a_confidential_provider_client_serves_robots_by_client_credentials() {
    let op = Op::start();
    let s = Setup::new(&op);
    let broker = s.start();
    let (code, body) = s.ask(&broker, "ci", r#"{"provider":"op-cc","scopes":"read"}"#);
    assert_eq!(code, 200, "{body}");
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!(c["sub"], "robot-client");
}

#[test]
fn the_refresher_keeps_tokens_fresh_and_reports_a_lost_grant() {
    let mut op = Op::start_with(&[("OP_AT_TTL", "4")]);
    let s = Setup::new(&op);
    s.robot_login(&op);
    let broker = s.start();
    wait_until(
        "two refresher passes that refreshed",
        Duration::from_secs(30),
        || {
            metric(
                &broker,
                "credkeeper_refreshes_total{provider=\"op\",outcome=\"ok\"}",
            ) >= 2.0
        },
    );
    assert!(metric(&broker, "credkeeper_earliest_expiry_seconds") > 0.0);
    // The refresher's full token is handed out as it is when it fits the request.
    let (code, body) = s.ask(
        &broker,
        "ci",
        r#"{"provider":"op","scopes":"read write","minsecs":1}"#,
    );
    assert_eq!(code, 200, "{body}");
    let audit = read(&s.state.join("audit.log"));
    assert!(audit.contains(r#""source":"cached""#), "{audit}");

    // The provider forgets every grant: the stored refresh token is dead.
    op.restart();
    wait_until(
        "the credential to be reported as needing login",
        Duration::from_secs(30),
        || metric(&broker, "credkeeper_credentials_needing_login") >= 1.0,
    );
    let (code, body) = s.ask(
        &broker,
        "ci",
        r#"{"provider":"op","scopes":"read","minsecs":100}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "needs_login");
    assert!(
        body["message"].as_str().unwrap().contains("invalid_grant"),
        "{body}"
    );
    let failures_before = metric(
        &broker,
        "credkeeper_refreshes_total{provider=\"op\",outcome=\"needs_login\"}",
    );
    std::thread::sleep(Duration::from_secs(3));
    let failures_after = metric(
        &broker,
        "credkeeper_refreshes_total{provider=\"op\",outcome=\"needs_login\"}",
    );
    assert_eq!(
        failures_before, failures_after,
        "a credential needing login is not retried"
    );

    // A new human login repairs it.
    s.robot_login(&op);
    let (code, body) = s.ask(
        &broker,
        "ci",
        r#"{"provider":"op","scopes":"read","minsecs":100}"#,
    );
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_broker_killed_around_refreshes_restarts_working_or_says_login_is_needed() {
    // Tokens live 2 s and the refresher runs every second, so refreshes (with rotation:
    // device-client is public) are nearly always in flight when the broker is killed.
    let op = Op::start_with(&[("OP_AT_TTL", "2")]);
    let s = Setup::new(&op);
    s.robot_login(&op);
    for round in 0..5 {
        let mut broker = s.start();
        std::thread::sleep(Duration::from_millis(700 + 450 * round));
        broker.kill();
        let broker = s.start();
        let (code, body) = s.ask(
            &broker,
            "ci",
            r#"{"provider":"op","scopes":"read","minsecs":1}"#,
        );
        match code {
            200 => assert_eq!(
                claims(body["access_token"].as_str().unwrap())["sub"],
                "alice"
            ),
            409 => {
                // Lost in the crash window: reported, never silently broken.
                assert_eq!(body["error"], "needs_login", "{body}");
                s.robot_login(&op);
            }
            other => panic!("round {round}: HTTP {other}: {body}"),
        }
    }
}

#[test]
fn an_unreachable_provider_holds_up_nothing_else() {
    let op = Op::start();
    let s = Setup::new(&op);
    s.robot_login(&op);
    op.stop();
    let mut broker = s.start();
    // The refresher meets the dead provider at once; the broker's own issuer and the
    // API stay quick, and the failure is a clear error.
    let (code, body) = s.ask(&broker, "ci", r#"{"provider":"op","scopes":"read"}"#);
    assert_eq!(code, 502, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("cannot reach"),
        "{body}"
    );
    let started = Instant::now();
    let (code, body) = s.ask(&broker, "ci", r#"{"provider":"op","scopes":"read"}"#);
    assert_eq!(code, 502, "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a failed discovery is remembered"
    );
    let started = Instant::now();
    let (code, _) = broker.stop();
    assert_eq!(code, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown is not held up"
    );
}

#[test]
fn three_brokers_sharing_a_store_refresh_each_rotating_token_once_at_a_time() {
    // Tokens live 4 s, every refresh rotates the refresh token, and each broker's refresher
    // runs every second: without claims the brokers would use one refresh token twice,
    // and the provider would answer invalid_grant and revoke the grant.
    let op = Op::start_with(&[("OP_AT_TTL", "4"), ("OP_RT_ROTATE", "always")]);
    let s = Setup::new(&op);
    s.robot_login(&op);
    let first = s.start();
    let brokers = [first, s.start(), s.start()];
    wait_until(
        "six refreshes across the brokers",
        Duration::from_secs(40),
        || {
            brokers
                .iter()
                .map(|b| {
                    metric(
                        b,
                        "credkeeper_refreshes_total{provider=\"op\",outcome=\"ok\"}",
                    )
                })
                .sum::<f64>()
                >= 6.0
        },
    );
    let log = op.log();
    let refreshes = log
        .lines()
        .filter(|l| l.contains("grant.success") && l.contains("grant_type=refresh_token"))
        .count();
    assert!(refreshes >= 6, "{log}");
    assert!(
        !log.contains("invalid_grant"),
        "a refresh token was used twice:\n{log}"
    );
    for broker in &brokers {
        assert_eq!(metric(broker, "credkeeper_credentials_needing_login"), 0.0);
        let (code, body) = s.ask(
            broker,
            "ci",
            r#"{"provider":"op","scopes":"read","minsecs":1}"#,
        );
        assert_eq!(code, 200, "{body}");
    }
}

#[test]
fn a_robots_device_login_started_at_one_broker_finishes_at_another() {
    let op = Op::start();
    let s = Setup::new(&op);
    let a = s.start();
    let b = s.start();
    let secret = read(&s.user.path("ci.secret"));
    let auth = Some(("ci", secret.trim()));
    let (code, text) = a.http("POST", "/api/v1/logins", auth, Some(r#"{"provider":"op"}"#));
    assert_eq!(code, 200, "{text}");
    let started: serde_json::Value = serde_json::from_str(&text).unwrap();
    let state = started["state"].as_str().unwrap();
    // Another robot cannot poll it, at either broker.
    let other = read(&s.user.path("other.secret"));
    let (code, _) = b.http(
        "POST",
        &format!("/api/v1/logins/{state}"),
        Some(("other", other.trim())),
        None,
    );
    assert_eq!(code, 400);
    approve_device(&op, started["user_code"].as_str().unwrap(), "alice");
    let mut done = serde_json::Value::Null;
    wait_until("the login to finish at B", Duration::from_secs(30), || {
        let (code, text) = b.http("POST", &format!("/api/v1/logins/{state}"), auth, None);
        assert_eq!(code, 200, "{text}");
        done = serde_json::from_str(&text).unwrap();
        done["status"] == "done"
    });
    // Finished once: the state is gone at both.
    for broker in [&a, &b] {
        let (code, _) = broker.http("POST", &format!("/api/v1/logins/{state}"), auth, None);
        assert_eq!(code, 400);
    }
    // The credential B stored serves tokens at A.
    let (code, body) = s.ask(&a, "ci", r#"{"provider":"op","scopes":"read","minsecs":1}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
}
