//! The web login end to end in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core through `tests/testbed/browser/web-login.mjs`) opens a
//! one-time link, logs in at the real test provider's pages, sees the stored credential,
//! and revokes it; and the same login across two replicas on PostgreSQL.

mod common;
#[path = "../../store/tests/pg/mod.rs"]
mod pg;
use common::*;
use std::process::Command;

fn setup_browser() {
    let out = Command::new(testbed().join("setup-browser.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "setup-browser.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn web_login(args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .arg(testbed().join("browser/web-login.mjs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "web-login.mjs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_robots_first_login_in_chromium_then_revoke() {
    setup_browser();
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("op.secret", "robot-secret", 0o600);
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[[provider]]\nname = \"op\"\nissuer = \"{}\"\nclient_id = \"robot-client\"\nclient_secret_file = \"{}\"\nscopes = \"read\"\n\n\
             [[robot]]\nname = \"ci\"\nauth = {{ secret = true }}\nproviders = [\"op\"]\nscopes = [\"read\"]\n",
            op.issuer(),
            secret.display()
        ),
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &["ci"]);
    let broker = Broker::start(&user, &state, &["--config", config.to_str().unwrap()]);
    let link = user
        .run(&[
            "login",
            "--server",
            &broker.url,
            "--robot",
            "ci",
            "--secret-file",
            user.path("ci.secret").to_str().unwrap(),
        ])
        .ok()
        .stdout
        .trim()
        .to_string();

    let seen = web_login(&[&link, "op", "bob", "--revoke"]);
    assert_eq!(seen["who"], "Signed in as robot ci", "{seen}");
    assert!(
        seen["flash"].as_str().unwrap().contains("Logged in to op"),
        "{seen}"
    );
    assert!(
        seen["status"]
            .as_str()
            .unwrap()
            .contains("current token valid until"),
        "{seen}"
    );
    assert!(
        seen["status_after_revoke"]
            .as_str()
            .unwrap()
            .contains("no credential stored"),
        "{seen}"
    );

    // The link worked once.
    let again = web_login(&["--reuse", &link]);
    assert_eq!(again["status"], 403, "{again}");
}

#[test]
fn a_login_started_in_chromium_at_one_replica_finishes_at_another_on_postgresql() {
    setup_browser();
    let op = Op::start();
    let db = pg::Server::start();
    let user = User::new();
    let secret = user.secret_file("op.secret", "robot-secret", 0o600);
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            "{}\n\
             [[provider]]\nname = \"op\"\nissuer = \"{}\"\nclient_id = \"robot-client\"\nclient_secret_file = \"{}\"\nscopes = \"read\"\n\n\
             [[robot]]\nname = \"ci\"\nauth = {{ secret = true }}\nproviders = [\"op\"]\nscopes = [\"read\"]\n",
            db.store_section(&db.new_database(), &user.path("store.key")),
            op.issuer(),
            secret.display()
        ),
    )
    .unwrap();
    robot_secrets(&user, &config, &user.path("state-a"), &["ci"]);
    let b = Broker::start(
        &user,
        &user.path("state-b"),
        &["--config", config.to_str().unwrap()],
    );
    // A's public URL is B's (as replicas behind one name share one): the provider sends
    // the browser back to B, which must finish the login A started.
    let config_a = user.path("broker-a.toml");
    std::fs::write(
        &config_a,
        format!("[issuer]\nurl = \"{}\"\n{}", b.url, read(&config)),
    )
    .unwrap();
    let a = Broker::start(
        &user,
        &user.path("state-a"),
        &["--config", config_a.to_str().unwrap()],
    );
    let link = user
        .run(&[
            "login",
            "--server",
            &a.url,
            "--robot",
            "ci",
            "--secret-file",
            user.path("ci.secret").to_str().unwrap(),
        ])
        .ok()
        .stdout
        .trim()
        .replacen(&b.url, &a.url, 1);
    // The browser's session and login start at A; the provider's redirect back lands on B
    // (cookies do not tell ports apart, so the session goes along).
    let seen = web_login(&[&link, "op", "bob", "--back-at", &b.url]);
    assert!(seen["url"].as_str().unwrap().starts_with(&b.url), "{seen}");
    assert!(
        seen["flash"].as_str().unwrap().contains("Logged in to op"),
        "{seen}"
    );
    let robot = read(&user.path("ci.secret"));
    for broker in [&a, &b] {
        let (code, body) = broker.http(
            "POST",
            "/api/v1/token",
            Some(("ci", robot.trim())),
            Some(r#"{"provider":"op","scopes":"read"}"#),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(claims(v["access_token"].as_str().unwrap())["sub"], "bob");
    }
}
