//! `credkeeper serve` as a robot would meet it: the dev broker from a clean state
//! directory, policy, authentication, the local issuer's tokens checked by the SciTokens
//! reference library, audit and metrics, and configuration errors.

mod common;
use common::*;

const CONFIG: &str = r#"
[issuer]
lifetime = 600
authz_template = "read:/user/{username}"
audience = "https://storage.example"

[[robot]]
name = "ci"
auth = { secret = true }
providers = ["local"]
scopes = ["read:/data", "write:/data/ci", "read:/user/{username}"]
audiences = ["https://storage.example", "https://compute.example"]
max_lifetime = 300

[[robot]]
name = "other"
auth = { secret = true }
providers = ["local"]
scopes = ["read:/other"]
audiences = ["*"]
"#;

fn configured(user: &User, extra: &str) -> (Broker, std::path::PathBuf) {
    let config = user.path("broker.toml");
    std::fs::write(&config, format!("{CONFIG}{extra}")).unwrap();
    let state = user.path("state");
    robot_secrets(user, &config, &state, &["ci", "other"]);
    let broker = Broker::start(user, &state, &["--config", config.to_str().unwrap()]);
    (broker, config)
}

fn get(user: &User, broker: &Broker, robot: &str, extra: &[&str]) -> Run {
    let secret = user.path(&format!("{robot}.secret"));
    let out = user.path(&format!("{robot}.token"));
    let mut args = vec![
        "get",
        "--server",
        &broker.url,
        "--robot",
        robot,
        "--secret-file",
        secret.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    user.run(&args)
}

#[test]
fn serve_dev_and_its_printed_command_put_a_verified_token_in_a_file() {
    let user = User::new();
    let state = user.path("dev-state");
    let mut broker = Broker::start(&user, &state, &["--dev"]);
    let line = broker.stdout_first_line.clone();
    assert!(
        line.contains(" get --server ") && line.contains("--robot dev"),
        "{line}"
    );
    let secret = state.join("dev-robot.secret");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Run the printed command exactly as printed.
    let words: Vec<&str> = line.split_whitespace().collect();
    let out = user.cmd().args(&words[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token_file = state.join("token");
    let token = read(&token_file);
    let c = claims(&token);
    assert_eq!(c["iss"], broker.url.as_str());
    assert_eq!(c["sub"], "dev");
    assert_eq!(c["ver"], "scitoken:2.0");
    user.run(&[
        "token",
        "verify",
        token_file.to_str().unwrap(),
        "--profile",
        "scitokens",
    ])
    .ok();
    let (code, _) = broker.stop();
    assert_eq!(code, 0, "graceful shutdown exits 0");
}

#[test]
fn the_scitokens_library_verifies_the_local_issuers_tokens() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    get(
        &user,
        &broker,
        "ci",
        &[
            "--scopes",
            "read:/data write:/data/ci",
            "--audience",
            "https://storage.example",
        ],
    )
    .ok();
    let token = user.path("ci.token");
    let python = scitokens_python();
    let verify = |authz: &str, path: &str, audience: &str| {
        std::process::Command::new(&python)
            .arg(testbed().join("verify_scitoken.py"))
            .arg(format!("@{}", token.display()))
            .arg(&broker.url)
            .args([
                "--insecure",
                "--audience",
                audience,
                "--authz",
                authz,
                "--path",
                path,
            ])
            .arg("--cache-dir")
            .arg(user.path("scitokens-cache"))
            .output()
            .unwrap()
    };
    let ok = verify("read", "/data/run1/file", "https://storage.example");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let claims: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(claims["sub"], "ci");
    assert!(
        verify("write", "/data/ci/out", "https://storage.example")
            .status
            .success()
    );
    assert!(
        !verify("write", "/data/other", "https://storage.example")
            .status
            .success()
    );
    assert!(
        !verify("read", "/elsewhere", "https://storage.example")
            .status
            .success()
    );
    assert!(
        !verify("read", "/data", "https://compute.example")
            .status
            .success()
    );
}

#[test]
fn policy_denials_are_clear_and_audited() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    get(&user, &broker, "ci", &["--scopes", "read:/data/x"]).ok();
    get(&user, &broker, "ci", &["--scopes", "read:/etc"])
        .fails(1, "robot `ci` may not have scope read:/etc");
    get(&user, &broker, "ci", &["--scopes", "write:/data"])
        .fails(1, "may not have scope write:/data");
    get(
        &user,
        &broker,
        "ci",
        &["--audience", "https://evil.example"],
    )
    .fails(1, "may not ask for audience https://evil.example");
    // The file's token is the local issuer's; without it the request reaches the broker.
    std::fs::remove_file(user.path("ci.token")).unwrap();
    get(&user, &broker, "ci", &["--provider", "iam"]).fails(1, "may not use provider `iam`");

    // The longest lifetime is the robot's, not the issuer's.
    get(&user, &broker, "ci", &["--scopes", "read:/data", "-m", "0"]).ok();
    let c = claims(&read(&user.path("ci.token")));
    assert!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap() <= 300);

    let audit = read(&broker.state.join("audit.log"));
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["result"] == "vended" && l["robot"] == "ci")
    );
    assert!(
        lines.iter().any(|l| l["result"] == "denied"
            && l["code"] == "forbidden"
            && l["scope"] == "read:/etc")
    );
    let token = read(&user.path("ci.token"));
    assert!(
        !audit.contains(token.trim()),
        "no token values in the audit log"
    );
    let secret = read(&user.path("ci.secret"));
    assert!(!audit.contains(secret.trim()));

    let (code, metrics) = broker.http("GET", "/metrics", None, None);
    assert_eq!(code, 200);
    assert!(
        metrics.contains(
            r#"credkeeper_tokens_denied_total{robot="ci",provider="local",code="forbidden"} 3"#
        ),
        "{metrics}"
    );
    // `iam` is no provider of this broker: asked-for names that are not configured share
    // one `unknown` series.
    assert!(
        metrics.contains(
            r#"credkeeper_tokens_denied_total{robot="ci",provider="unknown",code="forbidden"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"credkeeper_tokens_vended_total{robot="ci",provider="local",source="signed"}"#
        ),
        "{metrics}"
    );
}

#[test]
fn a_robot_cannot_act_as_another() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    let ci_secret = read(&user.path("ci.secret"));
    let ci_secret = ci_secret.trim();
    // ci's secret does not open robot `other`, an unknown robot gets the same answer.
    for robot in ["other", "nobody"] {
        let (code, body) = broker.http(
            "POST",
            "/api/v1/token",
            Some((robot, ci_secret)),
            Some("{}"),
        );
        assert_eq!(code, 401, "{body}");
        assert!(body.contains("\"error\":\"unauthenticated\""), "{body}");
    }
    let (code, _) = broker.http("POST", "/api/v1/token", None, Some("{}"));
    assert_eq!(code, 401);
    // `other` cannot get ci's scopes with its own secret either.
    get(&user, &broker, "other", &["--scopes", "read:/data"])
        .fails(1, "may not have scope read:/data");
    let audit = read(&broker.state.join("audit.log"));
    assert!(audit.contains(r#""robot":"nobody""#) && audit.contains(r#""code":"unauthenticated""#));
}

#[test]
fn a_secret_replaced_while_the_broker_runs_works_at_once_and_the_old_one_stops_within_a_second() {
    let user = User::new();
    let (broker, config) = configured(&user, "");
    let ask = |secret: &str| {
        broker
            .http(
                "POST",
                "/api/v1/token",
                Some(("ci", secret)),
                Some(r#"{"scopes":"read:/data"}"#),
            )
            .0
    };
    let old = read(&user.path("ci.secret")).trim().to_string();
    // Seen and checked once, so the broker knows it.
    assert_eq!(ask(&old), 200);
    assert_eq!(ask(&old), 200);
    robot_secrets(&user, &config, &broker.state, &["ci"]);
    let new = read(&user.path("ci.secret")).trim().to_string();
    assert_ne!(new, old);
    // Nobody presents the new secret yet: the old one is refused all the same.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(ask(&old), 401, "the old secret is refused a second later");
    assert_eq!(ask(&new), 200);
    assert_eq!(ask(&old), 401);
    // Replaced again: the newest works at once.
    robot_secrets(&user, &config, &broker.state, &["ci"]);
    let newest = read(&user.path("ci.secret")).trim().to_string();
    assert_eq!(ask(&newest), 200, "a new secret works at once");
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    let secret = read(&user.path("ci.secret"));
    let auth = Some(("ci", secret.trim()));
    let (code, body) = broker.http("POST", "/api/v1/token", auth, Some("{not json"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"error\":\"bad_request\""), "{body}");
    let (code, body) = broker.http(
        "POST",
        "/api/v1/token",
        auth,
        Some(r#"{"scopes":"read:/data/../../etc"}"#),
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = broker.http("POST", "/api/v1/token", auth, Some(r#"{"colour":"blue"}"#));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("colour"), "{body}");
    let (code, _) = broker.http("GET", "/healthz", None, None);
    assert_eq!(code, 200);
    let (code, _) = broker.http("GET", "/readyz", None, None);
    assert_eq!(code, 200);
    let (code, doc) = broker.http("GET", "/.well-known/openid-configuration", None, None);
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["issuer"], broker.url.as_str());
    let (code, jwks) = broker.http("GET", "/jwks", None, None);
    assert_eq!(code, 200);
    assert!(jwks.contains("\"kty\":\"EC\""), "{jwks}");
}

#[test]
fn a_cached_token_is_handed_out_again_while_it_has_minsecs() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    let secret = read(&user.path("ci.secret"));
    let auth = Some(("ci", secret.trim()));
    let ask = r#"{"scopes":"read:/data","minsecs":60}"#;
    let (_, first) = broker.http("POST", "/api/v1/token", auth, Some(ask));
    let (_, second) = broker.http("POST", "/api/v1/token", auth, Some(ask));
    let token =
        |b: &str| serde_json::from_str::<serde_json::Value>(b).unwrap()["access_token"].clone();
    assert_eq!(token(&first), token(&second));
    let (_, third) = broker.http(
        "POST",
        "/api/v1/token",
        auth,
        Some(r#"{"scopes":"read:/data","minsecs":3000}"#),
    );
    assert_ne!(
        token(&first),
        token(&third),
        "a token with too little left is not reused"
    );
}

#[test]
fn config_errors_stop_the_broker_with_the_line() {
    let user = User::new();
    let config = user.path("bad.toml");
    std::fs::write(&config, "[[robot]]\nname = \"ci\"\nproviders = [\"iam\"]\n").unwrap();
    user.run(&["--config", config.to_str().unwrap(), "serve"])
        .fails(1, "line 3")
        .fails(1, "no provider named `iam`");
}

#[test]
fn secrets_are_not_readable_in_the_state_directory() {
    let user = User::new();
    let (mut broker, _) = configured(&user, "");
    get(&user, &broker, "ci", &["--scopes", "read:/data"]).ok();
    broker.stop();
    let secret = read(&user.path("ci.secret"));
    for entry in std::fs::read_dir(&broker.state).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(secret.trim().len())
                .any(|w| w == secret.trim().as_bytes()),
            "{}",
            path.display()
        );
    }
}

#[test]
fn the_broker_serves_https_with_rustls() {
    let user = User::new();
    let (ca, cert, key) = test_ca(user.home.path());
    let extra = format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let (broker, _) = configured(&user, &extra);
    assert!(
        broker.url.starts_with("https://127.0.0.1:"),
        "{}",
        broker.url
    );
    let secret = user.path("ci.secret");
    let out = user.path("tls.token");
    let args = |cafile: bool| {
        let mut a = vec![];
        if cafile {
            a.extend(["--cafile", ca.to_str().unwrap()]);
        }
        a.extend([
            "get",
            "--server",
            &broker.url,
            "--robot",
            "ci",
            "--secret-file",
            secret.to_str().unwrap(),
            "--scopes",
            "read:/data",
            "-o",
            out.to_str().unwrap(),
        ]);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = user.run(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run.code, 1, "an unknown CA is refused: {}", run.stderr);
    user.run(&args(true).iter().map(String::as_str).collect::<Vec<_>>())
        .ok();
    let c = claims(&read(&out));
    assert_eq!(c["iss"], broker.url.as_str());
    // The issuer's documents over HTTPS, checked by `token verify` with the same CA.
    user.run(&[
        "--cafile",
        ca.to_str().unwrap(),
        "token",
        "verify",
        out.to_str().unwrap(),
    ])
    .ok();
}

#[test]
fn a_tls_key_others_can_read_stops_the_broker() {
    let user = User::new();
    let (_, cert, key) = test_ca(user.home.path());
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = user.path("tls.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    user.run(&[
        "--config",
        config.to_str().unwrap(),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .fails(1, &format!("chmod 600 {}", key.display()));
}

#[test]
fn a_scope_path_with_percent_encoded_dots_or_slashes_is_refused_and_says_why() {
    let user = User::new();
    let (broker, _) = configured(&user, "");
    let secret = read(&user.path("ci.secret"));
    let ask = |scope: &str| {
        let body = format!(r#"{{"scopes":"{scope}"}}"#);
        broker.http(
            "POST",
            "/api/v1/token",
            Some(("ci", secret.trim())),
            Some(&body),
        )
    };
    // `read:/data` must not reach `/other` through a storage server that decodes the path.
    for (scope, what) in [
        ("read:/data/%2e%2e/other", "%2e"),
        ("read:/data/%2E%2E%2Fother", "%2E"),
        ("read:/data/x%2f..%2f..%2fother", "%2f"),
        ("read:/data/%252e%252e/other", "%25"),
    ] {
        let (code, body) = ask(scope);
        assert_eq!(code, 400, "{scope}: {body}");
        assert!(
            body.contains("percent-encoded") && body.contains(what),
            "{scope}: says what is wrong: {body}"
        );
    }
    // A `..` that stays inside the grant is refused too: the token would carry it as asked.
    let (code, body) = ask("read:/data/x/../y");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("read:/data/y"),
        "names the path meant: {body}"
    );
    let (code, body) = ask("read:/data/y");
    assert_eq!(code, 200, "{body}");
}

#[test]
fn an_audit_log_others_can_read_is_made_private_and_the_broker_says_so() {
    use std::os::unix::fs::PermissionsExt;
    let user = User::new();
    let config = user.path("broker.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let state = user.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let audit = state.join("audit.log");
    std::fs::write(&audit, "").unwrap();
    std::fs::set_permissions(&audit, std::fs::Permissions::from_mode(0o644)).unwrap();
    let broker = Broker::start(&user, &state, &["--config", config.to_str().unwrap()]);
    let mode = std::fs::metadata(&audit).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600);
    assert!(
        broker
            .startup
            .iter()
            .any(|l| l.contains(&audit.display().to_string()) && l.contains("0644")),
        "{:?}",
        broker.startup
    );
}

#[test]
fn no_token_leaves_a_broker_that_cannot_write_its_audit_log() {
    let user = User::new();
    let config = user.path("full.toml");
    // /dev/full takes the file open but fails every write (ENOSPC), as a full disk would.
    std::fs::write(
        &config,
        "[server]\naudit_log = \"/dev/full\"\n\n[[robot]]\nname = \"dev\"\n\
         auth = { secret = true }\nproviders = [\"local\"]\nscopes = [\"read:/data\"]\n\
         audiences = [\"*\"]\n",
    )
    .unwrap();
    let state = user.path("state");
    let broker = Broker::start(
        &user,
        &state,
        &["--dev", "--config", config.to_str().unwrap()],
    );
    let secret = read(&state.join("dev-robot.secret"));
    let (code, body) = broker.http(
        "POST",
        "/api/v1/token",
        Some(("dev", secret.trim())),
        Some(r#"{"scopes":"read:/data"}"#),
    );
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("audit_unavailable"), "{body}");
    assert!(!body.contains("access_token"), "{body}");
    // The broker itself is alive; it just hands nothing out unaudited.
    assert_eq!(broker.http("GET", "/healthz", None, None).0, 200);
}
