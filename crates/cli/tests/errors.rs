//! The errors a user will meet: each has a clear one-line message, a non-zero exit, and
//! leaves every file and the store as they were.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;

/// A loopback HTTP server that answers every request with `response`, for the failure
/// modes a certified provider will not produce on demand (5xx, HTML instead of JSON).
fn faulty_issuer(status: &str, content_type: &str, body: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    url
}

fn get_public(user: &User, issuer: &str, out: &std::path::Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "get",
        "--issuer",
        issuer,
        "--client-id",
        "device-client",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    user.run(&args)
}

#[test]
fn an_unreachable_issuer_is_named_and_the_old_token_kept() {
    let user = User::new();
    let out = user.path("tok");
    std::fs::write(&out, "old.token.kept\n").unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let issuer = format!("http://127.0.0.1:{port}");
    get_public(&user, &issuer, &out, &[]).fails(1, &format!("cannot reach {issuer}"));
    assert_eq!(read(&out), "old.token.kept\n");
}

#[test]
fn an_issuer_answering_5xx_or_html_is_reported() {
    let user = User::new();
    let out = user.path("tok");
    let broken = faulty_issuer("503 Service Unavailable", "text/html", "<h1>down</h1>");
    get_public(&user, &broken, &out, &[]).fails(1, "answered HTTP 503 with text/html, not JSON");
    let html = faulty_issuer("200 OK", "text/html", "<html>login portal</html>");
    get_public(&user, &html, &out, &[]).fails(1, "answered HTTP 200 with text/html, not JSON");
    let wrong = faulty_issuer("404 Not Found", "application/json", "{}");
    get_public(&user, &wrong, &out, &[]).fails(1, "answered HTTP 404");
    assert!(!out.exists(), "nothing was written");
}

#[test]
fn a_plain_http_issuer_is_refused_unless_loopback_is_allowed() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    let run = user
        .cmd()
        .args([
            "get",
            "--issuer",
            op.issuer(),
            "--client-id",
            "device-client",
            "-o",
        ])
        .arg(&out)
        .env_remove("CREDKEEPER_INSECURE_LOOPBACK")
        .output()
        .unwrap();
    let run = Run::from(run);
    run.fails(1, "--insecure-loopback");
    get_public(&user, "http://issuer.example", &out, &[]).fails(1, "not HTTPS");
}

#[test]
fn a_revoked_refresh_token_says_to_log_in_again() {
    let mut op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    device_login(&user, &op, "device-client", &["-o", out.to_str().unwrap()]);
    let before = read(&out);
    // A restarted provider has forgotten every grant: the stored refresh token is dead.
    op.restart();
    get_public(&user, op.issuer(), &out, &["--minsecs", "3600"])
        .fails(1, "invalid_grant")
        .fails(1, "log in again with `credkeeper login");
    assert_eq!(read(&out), before, "the old token is kept");
}

#[test]
fn without_a_terminal_or_stored_credential_get_says_to_log_in_first() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    get_public(&user, op.issuer(), &out, &[]).fails(1, "interactively once first");
    assert!(!out.exists());
}

#[test]
fn a_missing_or_unwritable_out_directory_is_named() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("s", "robot-secret", 0o600);
    let base = [&["get"][..], &op.robot_client_args(&secret), &["-o"]].concat();
    let missing = user.path("no/such/dir/tok");
    user.run(&[&base[..], &[missing.to_str().unwrap()]].concat())
        .fails(1, "directory")
        .fails(1, "no/such/dir does not exist");
    let file = user.secret_file("plain", "", 0o600);
    let under_file = file.join("tok");
    user.run(&[&base[..], &[under_file.to_str().unwrap()]].concat())
        .fails(1, "is not a directory");
    // Permission bits do not stop root; /proc refuses file creation to everyone.
    user.run(&[&base[..], &["/proc/credkeeper-tok"]].concat())
        .fails(1, "cannot write token file /proc/credkeeper-tok");
}

#[test]
fn a_client_secret_file_others_can_read_is_refused_with_the_fix() {
    let user = User::new();
    let secret = user.secret_file("secret", "robot-secret", 0o644);
    let out = user.path("tok");
    user.run(&[
        "get",
        "--issuer",
        "https://issuer.example",
        "--client-id",
        "robot-client",
        "--client-secret-file",
        secret.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ])
    .fails(1, &format!("run `chmod 600 {}`", secret.display()))
    .never_shows(&["robot-secret"]);
    assert!(!out.exists());
}

#[test]
fn an_expired_device_code_ends_the_login_clearly() {
    let op = Op::start_with(&[("OP_DEVICE_TTL", "3")]);
    let user = User::new();
    let out = user.path("tok");
    let run = user.run(&[
        "login",
        "--issuer",
        op.issuer(),
        "--client-id",
        "device-client",
        "-o",
        out.to_str().unwrap(),
    ]);
    run.fails(1, "the device code expired");
    assert!(!out.exists());
}

#[test]
fn ctrl_c_during_the_device_flow_stops_cleanly_and_stores_nothing() {
    let op = Op::start();
    let user = User::new();
    let out = user.path("tok");
    let mut cmd = user.cmd();
    cmd.args([
        "login",
        "--issuer",
        op.issuer(),
        "--client-id",
        "device-client",
        "-o",
        out.to_str().unwrap(),
    ]);
    let mut login = Spawned::start(cmd);
    login.wait_for("enter the code:");
    // SAFETY: kill(2) on the child we spawned; its pid is valid until we wait for it.
    unsafe { libc::kill(login.child.id() as i32, libc::SIGINT) };
    let (code, stderr) = login.finish();
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("interrupted; nothing was changed"),
        "{stderr}"
    );
    assert!(!out.exists());
    user.run(&[
        "logout",
        "--issuer",
        op.issuer(),
        "--client-id",
        "device-client",
    ])
    .ok()
    .fails(0, "No stored credential");
}

#[test]
fn a_bad_config_file_names_the_key_and_line() {
    let user = User::new();
    let config = user.path("c.toml");
    std::fs::write(&config, "issuer = \"https://x\"\nminsecs = \"an hour\"\n").unwrap();
    user.run(&["--config", config.to_str().unwrap(), "get"])
        .fails(1, "line 2")
        .fails(1, "c.toml");
}

#[test]
fn usage_errors_exit_2() {
    let user = User::new();
    let run = user.run(&["get", "--no-such-flag"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn the_version_is_answered_under_every_name_the_binary_is_installed_as() {
    let user = User::new();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        user.run(&["--version"]).ok().stdout,
        format!("credkeeper {version}\n")
    );
    // Scripts compare the stood-in tool's version: it comes first, as the real tool prints it.
    for (name, theirs) in [("htgettoken", "2.2"), ("igwn-robot-get", "0.3.3")] {
        let link = user.path(name);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_credkeeper"), &link).unwrap();
        let mut cmd = std::process::Command::new(&link);
        user.hermetic(&mut cmd);
        let run = Run::from(cmd.arg("--version").output().unwrap()).ok();
        assert_eq!(run.stdout, format!("{theirs} (credkeeper {version})\n"));
    }
}
