//! The broker's web login pages: one-time links, sessions, CSRF, and a provider login
//! completed against the real test provider — over plain HTTP with a cookie jar here, and
//! in headless Chromium in `web_chromium`.

mod common;
#[path = "../../store/tests/pg/mod.rs"]
mod pg;
use common::*;
use std::process::Command;

/// A browser's worth of cookies, driven with curl.
struct Jar {
    file: tempfile::NamedTempFile,
}

struct Page {
    status: u16,
    body: String,
    location: String,
}

impl Jar {
    fn new() -> Jar {
        Jar {
            file: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    fn request(&self, method: &str, url: &str, form: &[(&str, &str)]) -> Page {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "-X",
            method,
            "-w",
            "\n%{http_code} %{redirect_url}",
            "-c",
        ])
        .arg(self.file.path())
        .arg("-b")
        .arg(self.file.path())
        .arg(url);
        for (k, v) in form {
            cmd.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        let out = String::from_utf8_lossy(&cmd.output().unwrap().stdout).into_owned();
        let (body, tail) = out.rsplit_once('\n').unwrap();
        let (status, location) = tail.split_once(' ').unwrap_or((tail, ""));
        Page {
            status: status.parse().unwrap(),
            body: body.to_string(),
            location: location.to_string(),
        }
    }

    /// Log in as `login` at the test provider with this jar's cookies (op-browser.sh);
    /// the redirect back to the client it ends on.
    fn at_provider(&self, auth_url: &str, login: &str) -> String {
        let out = Command::new(testbed().join("op-browser.sh"))
            .args(["login", auth_url, login])
            .env("OP_BROWSER_JAR", self.file.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn csrf(body: &str) -> String {
    let i = body.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    body[i..].split('"').next().unwrap().to_string()
}

fn setup(op: &Op, user: &User) -> Broker {
    setup_with(op, user, "")
}

/// The same, with `extra` config (e.g. a `[store]`).
fn setup_with(op: &Op, user: &User, extra: &str) -> Broker {
    let secret = user.secret_file("op.secret", "robot-secret", 0o600);
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[provider]]
name = "op"
issuer = "{}"
client_id = "robot-client"
client_secret_file = "{}"
scopes = "read"

[[robot]]
name = "ci"
auth = {{ secret = true }}
providers = ["op"]
scopes = ["read"]

[[robot]]
name = "credd"
auth = {{ secret = true }}
login_links = true
{}"#,
            op.issuer(),
            secret.display(),
            extra
        ),
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(user, &config, &state, &["ci", "credd"]);
    Broker::start(user, &state, &["--config", config.to_str().unwrap()])
}

fn link(user: &User, broker: &Broker, robot: &str, extra: &[&str]) -> Run {
    let secret = user.path(&format!("{robot}.secret"));
    let mut args = vec![
        "login",
        "--server",
        &broker.url,
        "--robot",
        robot,
        "--secret-file",
        secret.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    user.run(&args)
}

#[test]
fn a_one_time_link_opens_one_session_and_never_again() {
    let op = Op::start();
    let user = User::new();
    let broker = setup(&op, &user);
    let url = link(&user, &broker, "ci", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    assert!(url.starts_with(&format!("{}/login/", broker.url)), "{url}");

    let browser = Jar::new();
    let opened = browser.request("GET", &url, &[]);
    assert_eq!(opened.status, 303);
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed in as robot ci"), "{}", page.body);
    assert!(page.body.contains("data-provider=\"op\""));

    // The same link again, from anywhere: refused.
    let again = Jar::new().request("GET", &url, &[]);
    assert_eq!(again.status, 403);
    assert!(again.body.contains("already used"), "{}", again.body);
    // No session, no page.
    assert_eq!(
        Jar::new()
            .request("GET", &format!("{}/web", broker.url), &[])
            .status,
        401
    );
    // A form without the session's CSRF token is refused.
    let forged = browser.request(
        "POST",
        &format!("{}/web/login/op", broker.url),
        &[("csrf", "guess")],
    );
    assert_eq!(forged.status, 403);
}

#[test]
fn only_a_robot_with_login_links_may_make_links_for_users() {
    let op = Op::start();
    let user = User::new();
    let broker = setup(&op, &user);
    link(&user, &broker, "ci", &["--user", "alice"]).fails(1, "may not make login links for users");
    let url = link(&user, &broker, "credd", &["--user", "alice"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let browser = Jar::new();
    browser.request("GET", &url, &[]);
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    assert!(page.body.contains("Signed in as alice"), "{}", page.body);
}

#[test]
fn a_provider_login_stores_the_credential_for_the_session_identity_only() {
    let op = Op::start();
    let user = User::new();
    let broker = setup(&op, &user);
    let url = link(&user, &broker, "ci", &[])
        .ok()
        .stdout
        .trim()
        .to_string();
    let browser = Jar::new();
    browser.request("GET", &url, &[]);
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    let start = browser.request(
        "POST",
        &format!("{}/web/login/op", broker.url),
        &[("csrf", &csrf(&page.body))],
    );
    assert_eq!(start.status, 303);
    let auth_url = start.location;
    for needed in [
        "code_challenge_method=S256",
        "nonce=",
        "state=",
        "prompt=consent",
    ] {
        assert!(auth_url.contains(needed), "{auth_url}");
    }

    // Another browser cannot complete a login this session started.
    let thief = Jar::new();
    let redirect = thief.at_provider(&auth_url, "alice");
    assert!(redirect.contains("code="), "{redirect}");
    let stolen = thief.request("GET", &redirect, &[]);
    assert_eq!(stolen.status, 403, "{}", stolen.body);

    // The real session completes a fresh login.
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    let start = browser.request(
        "POST",
        &format!("{}/web/login/op", broker.url),
        &[("csrf", &csrf(&page.body))],
    );
    let redirect = browser.at_provider(&start.location, "alice");
    let back = browser.request("GET", &redirect, &[]);
    assert_eq!(back.status, 303, "{}", back.body);
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    assert!(page.body.contains("Logged in to op"), "{}", page.body);
    assert!(
        page.body.contains("current token valid until"),
        "{}",
        page.body
    );

    // The robot now gets tokens from its stored credential.
    let secret = read(&user.path("ci.secret"));
    let (code, body) = broker.http(
        "POST",
        "/api/v1/token",
        Some(("ci", secret.trim())),
        Some(r#"{"provider":"op","scopes":"read"}"#),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(claims(v["access_token"].as_str().unwrap())["sub"], "alice");

    // Revoke from the page.
    let revoked = browser.request(
        "POST",
        &format!("{}/web/revoke/op", broker.url),
        &[("csrf", &csrf(&page.body))],
    );
    assert_eq!(revoked.status, 303);
    let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
    assert!(page.body.contains("Revoked and deleted"), "{}", page.body);
    assert!(page.body.contains("no credential stored"), "{}", page.body);
}

#[test]
fn a_credd_key_file_login_writes_the_credential_directory_like_the_credmon_web_app() {
    use std::os::unix::fs::PermissionsExt;
    let op = Op::start();
    let user = User::new();
    let cred_dir = user.path("oauth_credentials");
    std::fs::create_dir(&cred_dir).unwrap();
    std::fs::set_permissions(&cred_dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!("[credmon]\ncred_dir = \"{}\"\n", cred_dir.display()),
    )
    .unwrap();
    let broker = Broker::start(
        &user,
        &user.path("state"),
        &["--config", config.to_str().unwrap()],
    );

    // What the CredD writes: one ad per provider login, with secrets, named by 64 hex digits.
    let key = "0123456789abcdef".repeat(4);
    let ad = |handle: &str| {
        format!(
            "Provider = \"op\"\nHandle = \"{handle}\"\nLocalUser = \"alice\"\nScopes = \"openid,offline_access,read\"\n\
             Audience = \"\"\nClientId = \"robot-client\"\nClientSecret = \"robot-secret\"\nReturnUrl = \"{}/callback\"\n\
             AuthorizationUrl = \"{}\"\nTokenUrl = \"{}\"\n",
            broker.url,
            op.get("OP_AUTHORIZATION_ENDPOINT"),
            op.get("OP_TOKEN_ENDPOINT")
        )
    };
    std::fs::write(cred_dir.join(&key), format!("{}\n{}", ad(""), ad("second"))).unwrap();

    let browser = Jar::new();
    assert_eq!(
        browser
            .request(
                "GET",
                &format!("{}/key/{}", broker.url, "f".repeat(64)),
                &[]
            )
            .status,
        404
    );
    assert_eq!(
        browser
            .request("GET", &format!("{}/key/{key}", broker.url), &[])
            .status,
        303
    );
    let login = |name: &str| {
        let page = browser.request("GET", &format!("{}/web", broker.url), &[]);
        assert!(page.body.contains("Signed in as alice"), "{}", page.body);
        let start = browser.request(
            "POST",
            &format!("{}/web/login/{name}", broker.url),
            &[("csrf", &csrf(&page.body))],
        );
        assert_eq!(start.status, 303, "{}", start.body);
        let redirect = browser.at_provider(&start.location, "alice");
        assert_eq!(browser.request("GET", &redirect, &[]).status, 303);
        browser
            .request("GET", &format!("{}/web", broker.url), &[])
            .body
    };
    let page = login("op");
    assert!(page.contains("Logged in to op"), "{page}");
    let alice = cred_dir.join("alice");
    let json =
        |p: std::path::PathBuf| -> serde_json::Value { serde_json::from_str(&read(&p)).unwrap() };
    let used = json(alice.join("op.use"));
    assert_eq!(
        claims(used["access_token"].as_str().unwrap())["sub"],
        "alice"
    );
    assert!(
        used["scope"].is_array() && used["expires_at"].is_i64(),
        "{used}"
    );
    let top = json(alice.join("op.top"));
    assert!(top["refresh_token"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(top["scopes"], "openid,offline_access,read");
    let meta = json(alice.join("op.meta"));
    assert_eq!(meta["client_id"], "robot-client");
    assert_eq!(meta["client_secret"], "robot-secret");
    assert_eq!(meta["token_url"], op.get("OP_TOKEN_ENDPOINT"));
    assert_eq!(meta["use_refresh_token"], true);
    for f in ["op.use", "op.top", "op.meta"] {
        assert_eq!(
            std::fs::metadata(alice.join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o400,
            "{f}"
        );
    }
    assert!(cred_dir.join(&key).exists(), "one login is still to do");
    let page = login("op_second");
    assert!(page.contains("Logged in to op_second"), "{page}");
    assert!(alice.join("op_second.top").exists());
    assert!(
        !cred_dir.join(&key).exists(),
        "the key file goes when every login is done"
    );

    // credkeeper credmon takes the directory as it is: both credentials are fresh.
    let run = Run::from(
        user.cmd()
            .args(["credmon", "--once", "-v", "-c"])
            .arg(&cred_dir)
            .env("CONDOR_CONFIG", "ONLY_ENV")
            .env("_CONDOR_LOCAL_CREDMON_PROVIDER_NAMES", "")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        run.stderr.contains("2 idle") && run.stderr.contains("0 failed"),
        "{}",
        run.stderr
    );
}

#[test]
fn brokers_sharing_a_store_honour_each_others_links_and_sessions_once() {
    let op = Op::start();
    let user = User::new();
    let a = setup(&op, &user);
    let config = user.path("broker.toml");
    let b = Broker::start(
        &user,
        &user.path("state"),
        &["--config", config.to_str().unwrap()],
    );
    let url = link(&user, &a, "ci", &[]).ok().stdout.trim().to_string();
    let token = url.rsplit('/').next().unwrap();

    // Minted at A, opened at B; the session cookie B set is good at A too.
    let browser = Jar::new();
    let opened = browser.request("GET", &format!("{}/login/{token}", b.url), &[]);
    assert_eq!(opened.status, 303);
    let page = browser.request("GET", &format!("{}/web", a.url), &[]);
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Signed in as robot ci"), "{}", page.body);
    // Used once, at either.
    for broker in [&a, &b] {
        let again = Jar::new().request("GET", &format!("{}/login/{token}", broker.url), &[]);
        assert_eq!(again.status, 403, "{}", again.body);
    }
}

#[test]
fn a_browser_login_moves_between_replicas_on_postgresql() {
    let op = Op::start();
    let db = pg::Server::start();
    let user = User::new();
    let store = db.store_section(&db.new_database(), &user.path("store.key"));
    let a = setup_with(&op, &user, &store);
    let b = Broker::start(
        &user,
        &user.path("state-b"),
        &["--config", user.path("broker.toml").to_str().unwrap()],
    );
    // Behind one load balancer a browser's requests land on any replica: here each step
    // goes to the other one.
    let url = link(&user, &a, "ci", &[]).ok().stdout.trim().to_string();
    let token = url.rsplit('/').next().unwrap();
    let browser = Jar::new();
    let opened = browser.request("GET", &format!("{}/login/{token}", b.url), &[]);
    assert_eq!(opened.status, 303);
    let page = browser.request("GET", &format!("{}/web", a.url), &[]);
    assert!(page.body.contains("Signed in as robot ci"), "{}", page.body);
    let start = browser.request(
        "POST",
        &format!("{}/web/login/op", a.url),
        &[("csrf", &csrf(&page.body))],
    );
    assert_eq!(start.status, 303, "{}", start.body);
    let redirect = browser.at_provider(&start.location, "alice");
    assert!(redirect.starts_with(&a.url), "{redirect}");
    let back = browser.request("GET", &redirect.replacen(&a.url, &b.url, 1), &[]);
    assert_eq!(
        back.status, 303,
        "the login started at A finishes at B: {}",
        back.body
    );
    // Done once: the same callback again is refused, at either replica.
    for broker in [&a, &b] {
        let again = browser.request("GET", &redirect.replacen(&a.url, &broker.url, 1), &[]);
        assert_ne!(again.status, 303, "{}", again.body);
    }
    let page = browser.request("GET", &format!("{}/web", a.url), &[]);
    assert!(page.body.contains("Logged in to op"), "{}", page.body);
    let secret = read(&user.path("ci.secret"));
    for broker in [&a, &b] {
        let (code, body) = broker.http(
            "POST",
            "/api/v1/token",
            Some(("ci", secret.trim())),
            Some(r#"{"provider":"op","scopes":"read"}"#),
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(claims(v["access_token"].as_str().unwrap())["sub"], "alice");
    }
}
