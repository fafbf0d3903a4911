//! The web login end to end in a real browser: headless Chromium (Debian's `chromium`,
//! driven by playwright-core through `tests/testbed/browser/web-login.mjs`) opens a
//! one-time link, logs in at the real test provider's pages, sees the stored credential,
//! and revokes it.

mod common;
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
