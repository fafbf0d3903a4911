//! What a peer that has not authenticated can hold: connections, and time. Each attack is
//! made for real against `credkeeper serve`, and real requests are served meanwhile.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn broker_with(user: &User, state: &str, server: &str) -> Broker {
    let config = user.path(&format!("{state}.toml"));
    std::fs::write(
        &config,
        format!(
            "[server]\n{server}\n\n[[robot]]\nname = \"dev\"\nauth = {{ secret = true }}\n\
             providers = [\"local\"]\nscopes = [\"read:/data\"]\naudiences = [\"*\"]\n"
        ),
    )
    .unwrap();
    Broker::start(
        user,
        &user.path(state),
        &["--dev", "--config", config.to_str().unwrap()],
    )
}

fn addr(broker: &Broker) -> String {
    broker.url.trim_start_matches("http://").to_string()
}

/// A slowloris connection: half a request head, then nothing.
fn half_head(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    s
}

/// Whether the server closed `s` within `within` (a read returns end of file or an error).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn at_the_connection_cap_slow_clients_make_room_for_real_requests() {
    let user = User::new();
    // A head may take a minute: only the cap can free connections quickly.
    let broker = broker_with(
        &user,
        "capped",
        "max_connections = 20\nheader_timeout_secs = 60",
    );
    let addr = addr(&broker);
    let mut slow: Vec<TcpStream> = (0..60).map(|_| half_head(&addr)).collect();
    for i in 0..20 {
        let started = Instant::now();
        let (code, body) = broker.http("GET", "/healthz", None, None);
        assert_eq!(code, 200, "request {i}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "request {i} waited {:?}",
            started.elapsed()
        );
    }
    // A robot still gets its token.
    let mut get = user.cmd();
    get.args(["--insecure-loopback", "get", "--server", &broker.url])
        .args(["--robot", "dev", "--secret-file"])
        .arg(user.path("capped").join("dev-robot.secret"))
        .args(["--scopes", "read:/data", "-o", "-"]);
    let run = Run::from(get.output().unwrap()).ok();
    assert!(run.stdout.starts_with("ey"), "{}", run.stdout);
    // The slow connections paid for it: most were closed, the oldest first.
    let closed = slow
        .iter_mut()
        .filter_map(|s| closed_within(s, Duration::from_millis(200)).then_some(()))
        .count();
    assert!(
        closed >= 40,
        "only {closed} of 60 slow connections were closed"
    );
    assert!(closed_within(&mut slow[0], Duration::from_millis(10)));
}

#[test]
fn heads_bodies_and_idle_keep_alives_have_deadlines() {
    let user = User::new();
    let broker = broker_with(
        &user,
        "timed",
        "header_timeout_secs = 2\nbody_timeout_secs = 2",
    );
    let addr = addr(&broker);

    // Half a head: closed after the header timeout, not kept for ever.
    let mut slow = half_head(&addr);
    let started = Instant::now();
    assert!(closed_within(&mut slow, Duration::from_secs(15)));
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // A body that never comes: the request fails after the body timeout.
    let mut post = TcpStream::connect(&addr).unwrap();
    post.write_all(
        b"POST /registry/token HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant",
    )
    .unwrap();
    post.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = post.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer}"
    );

    // A kept-alive connection that starts no next request is closed too.
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, Duration::from_secs(15)));

    // And the broker serves on.
    assert_eq!(broker.http("GET", "/healthz", None, None).0, 200);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn strangers_names_never_become_metric_series() {
    let user = User::new();
    let broker = broker_with(&user, "named", "");
    for i in 0..200 {
        let (code, _) = broker.http(
            "POST",
            "/api/v1/token",
            Some((&format!("stranger-{i}"), "guess")),
            Some("{}"),
        );
        assert_eq!(code, 401);
    }
    let (code, metrics) = broker.http("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(!metrics.contains("stranger-"), "{metrics}");
    let denied: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("credkeeper_tokens_denied_total{"))
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].contains("robot=\"unknown\""), "{denied:?}");
    assert!(denied[0].ends_with(" 200"), "{denied:?}");
}

#[test]
fn metrics_can_have_their_own_address_and_a_bearer_token() {
    let user = User::new();
    let token_file = user.secret_file("metrics.token", "scrape-me-7f3a", 0o600);
    let port = free_port();
    let broker = broker_with(
        &user,
        "scraped",
        &format!(
            "metrics_listen = \"127.0.0.1:{port}\"\nmetrics_token_file = \"{}\"",
            token_file.display()
        ),
    );
    // Not on the main address any more.
    assert_eq!(broker.http("GET", "/metrics", None, None).0, 404);
    let url = format!("http://127.0.0.1:{port}/metrics");
    assert_eq!(curl(&[&url]).0, 401);
    assert_eq!(
        curl(&["-H", "Authorization: Bearer scrape-me-7f3b", &url]).0,
        401
    );
    let (code, body) = curl(&["-H", "Authorization: Bearer scrape-me-7f3a", &url]);
    assert_eq!(code, 200);
    assert!(
        body.contains("credkeeper_credentials_needing_login 0"),
        "{body}"
    );
}

#[test]
fn strangers_flooding_vault_logins_starve_neither_robots_nor_users_at_other_addresses() {
    let op = Op::start();
    let user = User::new();
    let config = user.path("logins.toml");
    std::fs::write(
        &config,
        format!(
            "[vault]\npending_logins = 20\nlogins_per_minute = 60\n\n\
             [[provider]]\nname = \"op\"\nissuer = \"{}\"\nclient_id = \"device-client\"\n\
             scopes = \"read\"\n\n\
             [[robot]]\nname = \"ci\"\nauth = {{ secret = true }}\nproviders = [\"op\"]\n\
             scopes = [\"read\"]\naudiences = [\"*\"]\n",
            op.issuer()
        ),
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &["ci"]);
    let broker = Broker::start(
        &user,
        &state,
        &["--insecure-loopback", "--config", config.to_str().unwrap()],
    );

    // 100 unauthenticated Vault-API logins from one address as fast as they can be sent:
    // that address's share of the burst (6 / 4) is served, the rest are told to come back,
    // and the provider is not asked for them.
    let auth_url = "/v1/auth/oidc-op/oidc/auth_url";
    let mut started = 0;
    for i in 0..100 {
        let body = format!(r#"{{"role":"default","client_nonce":"n{i}"}}"#);
        let (code, text) = broker.http_from("127.0.0.1", "POST", auth_url, &body);
        match code {
            200 => started += 1,
            503 => assert!(text.contains("try again later"), "{text}"),
            other => panic!("auth_url answered {other}: {text}"),
        }
    }
    assert!((1..=3).contains(&started), "{started} of 100 started");
    let (code, text) = broker.http_from("127.0.0.1", "POST", auth_url, r#"{"client_nonce":"x"}"#);
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("from your address"), "{text}");

    // Users at other addresses still start their logins during the flood.
    for user in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        let body = format!(r#"{{"role":"default","client_nonce":"{user}"}}"#);
        let (code, text) = broker.http_from(user, "POST", auth_url, &body);
        assert_eq!(code, 200, "a user at {user} during the flood: {text}");
        assert!(text.contains("user_code"), "{text}");
    }

    // Meanwhile the robot starts its logins, as many times as it likes: its own oldest
    // goes, nobody else's, and it is never told the broker is busy.
    let secret = read(&user.path("ci.secret"));
    for _ in 0..8 {
        let (code, text) = broker.http(
            "POST",
            "/api/v1/logins",
            Some(("ci", secret.trim())),
            Some(r#"{"provider":"op"}"#),
        );
        assert_eq!(code, 200, "{text}");
        assert!(text.contains("user_code"), "{text}");
    }
}
