//! `credkeeper get` and `login` against a real OpenID Provider: every grant, the reuse
//! rule, refresh-token rotation and down-scoping.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn robot_get(user: &User, op: &Op, out: &std::path::Path, extra: &[&str]) -> Run {
    let secret = user.secret_file("robot.secret", "robot-secret", 0o600);
    let mut args = vec!["get"];
    args.extend(op.robot_client_args(&secret));
    args.extend(["-o", out.to_str().unwrap()]);
    args.extend_from_slice(extra);
    user.run(&args)
}

#[test]
fn client_credentials_write_a_0600_token_file_that_verifies() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    robot_get(
        &user,
        &op,
        &out,
        &[
            "--scopes",
            "read,storage.read:/",
            "--audience",
            "https://api.test.example",
        ],
    )
    .ok()
    .never_shows(&["robot-secret"]);

    let token = read(&out);
    assert!(token.ends_with('\n') && token.matches('\n').count() == 1);
    let c = claims(&token);
    assert_eq!(c["sub"], "robot-client");
    assert_eq!(c["aud"], "https://api.test.example");
    assert_eq!(c["scope"], "read storage.read:/");
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    user.run(&[
        "token",
        "verify",
        out.to_str().unwrap(),
        "--issuer",
        op.issuer(),
        "--audience",
        "https://api.test.example",
        "--scope",
        "storage.read:/data/run1",
    ])
    .ok();
}

#[test]
fn client_secret_post_works_too() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("post.secret", "robot-post-secret", 0o600);
    let out = user.path("tok");
    user.run(&[
        "get",
        "--issuer",
        op.issuer(),
        "--client-id",
        "robot-client-post",
        "--client-secret-file",
        secret.to_str().unwrap(),
        "--client-auth",
        "post",
        "--scopes",
        "write",
        "-o",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(claims(&read(&out))["sub"], "robot-client-post");
}

#[test]
fn a_token_with_minsecs_left_is_reused_without_any_network() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    robot_get(&user, &op, &out, &["--scopes", "read"]).ok();
    let first = read(&out);
    // With the provider gone, only reuse can succeed.
    op.stop();
    robot_get(&user, &op, &out, &["--scopes", "read", "--minsecs", "30"]).ok();
    assert_eq!(read(&out), first);
    // Asking for more than it has, or a scope it lacks, means the issuer is needed.
    robot_get(&user, &op, &out, &["--scopes", "read", "--minsecs", "3600"])
        .fails(1, "cannot reach");
    robot_get(&user, &op, &out, &["--scopes", "write", "--minsecs", "30"]).fails(1, "cannot reach");
    assert_eq!(read(&out), first, "the old token is kept");
    // A token from another issuer is never reused for this one.
    let other = Op::start();
    robot_get(
        &user,
        &other,
        &out,
        &["--scopes", "read", "--minsecs", "30"],
    )
    .ok();
    assert_eq!(claims(&read(&out))["iss"], other.issuer());
}

#[test]
fn standard_output_gets_the_bare_token() {
    let op = Op::start();
    let user = User::new();
    let run = robot_get(&user, &op, std::path::Path::new("-"), &["--scopes", "read"]).ok();
    assert_eq!(claims(&run.stdout)["sub"], "robot-client");
    assert_eq!(run.stdout.matches('\n').count(), 1);
}

#[test]
fn the_wlcg_discovery_location_is_the_default_out_file() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("robot.secret", "robot-secret", 0o600);
    let args = [
        "get",
        "--issuer",
        op.issuer(),
        "--client-id",
        "robot-client",
        "--client-secret-file",
        secret.to_str().unwrap(),
    ];
    user.run(&args).ok();
    let uid = credkeeper_sink::uid();
    // User::cmd sets XDG_RUNTIME_DIR to the user's home.
    assert!(user.path(&format!("bt_u{uid}")).exists());
    let named = user.path("named");
    let run = user
        .cmd()
        .args(args)
        .env("BEARER_TOKEN_FILE", &named)
        .output()
        .unwrap();
    assert!(run.status.success());
    assert!(named.exists());
}

#[test]
fn config_file_and_environment_supply_the_settings() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("robot.secret", "robot-secret", 0o600);
    let config = user.path("credkeeper.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"{}\"\nclient_id = \"robot-client\"\nclient_secret_file = \"{}\"\nscopes = \"read\"\nminsecs = 30\n",
            op.issuer(),
            secret.display()
        ),
    )
    .unwrap();
    let out = user.path("tok");
    let run = user
        .cmd()
        .args([
            "--config",
            config.to_str().unwrap(),
            "get",
            "-o",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(claims(&read(&out))["scope"], "read");
    // A variable overrides the file.
    let run = user
        .cmd()
        .args([
            "--config",
            config.to_str().unwrap(),
            "get",
            "-o",
            out.to_str().unwrap(),
        ])
        .env("CREDKEEPER_SCOPES", "write")
        .output()
        .unwrap();
    assert!(run.status.success());
    assert_eq!(claims(&read(&out))["scope"], "write");
}

#[test]
fn token_exchange_trades_a_token_for_another_audience() {
    let op = Op::start();
    let user = User::new();
    let subject = user.path("subject");
    robot_get(&user, &op, &subject, &["--scopes", "read write"]).ok();
    let out = user.path("exchanged");
    robot_get(
        &user,
        &op,
        &out,
        &[
            "--subject-token-file",
            subject.to_str().unwrap(),
            "--scopes",
            "read",
            "--audience",
            "https://api.test.example",
        ],
    )
    .ok();
    let c = claims(&read(&out));
    assert_eq!(c["scope"], "read");
    assert_eq!(c["act"]["sub"], "robot-client");
    assert_ne!(read(&out), read(&subject));
}

#[test]
fn device_login_then_refresh_rotates_and_down_scopes() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    let stderr = device_login(
        &user,
        &op,
        "device-client",
        &["--scopes", "read write", "-o", out.to_str().unwrap()],
    );
    assert!(
        stderr.contains("/device"),
        "the verification URI is shown: {stderr}"
    );
    let first = read(&out);
    assert_eq!(claims(&first)["sub"], "alice");

    let get = |scopes: &str| {
        user.run(&[
            "get",
            "--issuer",
            op.issuer(),
            "--client-id",
            "device-client",
            "--scopes",
            scopes,
            "--minsecs",
            "3600",
            "-o",
            out.to_str().unwrap(),
        ])
    };
    // Tokens live 60 s, so --minsecs 3600 forces a refresh each time. The provider
    // rotates refresh tokens of public clients and revokes the whole grant if an old one
    // is presented again: three refreshes in a row succeed only if each rotated refresh
    // token was stored.
    for _ in 0..3 {
        let before = read(&out);
        get("read").ok();
        assert_ne!(read(&out), before);
    }
    let c = claims(&read(&out));
    assert_eq!(c["scope"], "read", "the refresh asked for fewer scopes");
    assert_eq!(c["sub"], "alice");
}

#[test]
fn browser_login_with_pkce_on_a_loopback_redirect() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    let mut cmd = user.cmd();
    cmd.args([
        "login",
        "--browser",
        "--no-open",
        "--issuer",
        op.issuer(),
        "--client-id",
        "cli-client",
        "--scopes",
        "read",
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut login = Spawned::start(cmd);
    login.wait_for("Log in in your browser:");
    let url = login.wait_for("");
    assert!(url.contains("code_challenge_method=S256"), "{url}");
    assert!(
        url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
        "{url}"
    );
    browser_login(&url, "bob");
    let (code, stderr) = login.finish();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(claims(&read(&out))["sub"], "bob");

    // The stored refresh token now serves `get`.
    let before = read(&out);
    user.run(&[
        "get",
        "--issuer",
        op.issuer(),
        "--client-id",
        "cli-client",
        "--minsecs",
        "3600",
        "-o",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_ne!(read(&out), before);
}

#[test]
fn logout_revokes_and_forgets_the_refresh_token() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    device_login(&user, &op, "device-client", &["-o", out.to_str().unwrap()]);
    let base = ["--issuer", op.issuer(), "--client-id", "device-client"];
    let logout = user.run(&[&["logout"][..], &base].concat()).ok();
    assert!(
        logout.stderr.contains("revoked and deleted"),
        "{}",
        logout.stderr
    );
    let again = user.run(&[&["logout"][..], &base].concat()).ok();
    assert!(
        again.stderr.contains("No stored credential"),
        "{}",
        again.stderr
    );
    user.run(
        &[
            &["get", "-m", "3600", "-o", out.to_str().unwrap()][..],
            &base,
        ]
        .concat(),
    )
    .fails(1, "credkeeper login");
}
