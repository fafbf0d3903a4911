//! `credkeeper tasks run` with bearer tokens straight from an issuer — the test OpenID
//! Provider, no broker: client credentials for a confidential client; the refresh token a
//! `credkeeper login` stored for a public one; and that login revoked, or expired, failing
//! the run with the reason before the command starts, with nothing left behind; and the
//! scheduler preparing each run with a token from the issuer.

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// A task that copies its token file to `seen`, notes where it was, and touches `ran`.
fn copy_token_task(user: &User, bearer: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (seen, ran) = (user.path("seen-token"), user.path("ran"));
    let file = user.path("tasks.yaml");
    std::fs::write(
        &file,
        format!(
            "tasks:\n- name: copy-token\n  schedule: '@hourly'\n  shell: true\n  command: 'touch {ran}; cp \"$BEARER_TOKEN_FILE\" {seen}; echo \"$BEARER_TOKEN_FILE\" > {seen}.path'\n  credentials:\n    bearer: {bearer}\n",
            ran = ran.display(),
            seen = seen.display(),
        ),
    )
    .unwrap();
    (file, seen, ran)
}

fn tasks_run(user: &User, file: &Path, args: &[&str]) -> Run {
    let mut cmd = user.cmd();
    cmd.args(["tasks", "run"])
        .arg(file)
        .args(["--task", "copy-token"])
        .args(args);
    Run::from(cmd.output().unwrap())
}

/// The run's token file is gone once the run has ended.
#[track_caller]
fn token_file_removed(seen: &Path) {
    let path = read(Path::new(&format!("{}.path", seen.display())));
    assert!(
        !Path::new(path.trim()).exists(),
        "the run's token file is removed"
    );
}

#[test]
fn a_task_gets_client_credentials_tokens_from_the_issuer_with_its_own_scopes() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("client.secret", "robot-secret", 0o600);
    let (file, seen, ran) = copy_token_task(
        &user,
        "{scopes: 'read storage.read:/', audience: https://api.test.example}",
    );
    let issuer = op.robot_client_args(&secret);
    tasks_run(&user, &file, &issuer)
        .ok()
        .never_shows(&["robot-secret"]);
    let c = claims(&read(&seen));
    assert_eq!(c["sub"], "robot-client");
    assert_eq!(c["scope"], "read storage.read:/");
    assert_eq!(c["aud"], "https://api.test.example");
    token_file_removed(&seen);
    std::fs::remove_file(&ran).unwrap();

    // A definition written for a broker's provider is not silently given something else.
    let (file, _, ran) = copy_token_task(&user, "{provider: op, scopes: read}");
    tasks_run(&user, &file, &issuer)
        .fails(
            1,
            "credentials.bearer.provider `op` names a broker's provider",
        )
        .never_shows(&["robot-secret"]);
    assert!(!ran.exists(), "the command never started");

    // A client secret others can read is refused before anything is sent.
    let open = user.secret_file("open.secret", "robot-secret", 0o644);
    let (file, _, ran) = copy_token_task(&user, "{scopes: read}");
    let mut args = issuer.to_vec();
    args[5] = open.to_str().unwrap();
    tasks_run(&user, &file, &args)
        .fails(1, "chmod 600")
        .never_shows(&["robot-secret"]);
    assert!(!ran.exists());
}

#[test]
fn a_stored_login_serves_tasks_until_it_is_revoked() {
    let mut op = Op::start();
    let user = User::new();
    device_login(&user, &op, "device-client", &[]);
    let (file, seen, ran) = copy_token_task(&user, "{}");
    let issuer = ["--issuer", op.issuer(), "--client-id", "device-client"].map(String::from);
    let issuer: Vec<&str> = issuer.iter().map(String::as_str).collect();
    tasks_run(&user, &file, &issuer).ok();
    assert_eq!(claims(&read(&seen))["sub"], "alice");
    token_file_removed(&seen);

    // A restarted provider has forgotten every grant: the stored refresh token is revoked.
    op.restart();
    std::fs::remove_file(&ran).unwrap();
    let failed = tasks_run(&user, &file, &issuer)
        .fails(1, "authentication failed")
        .fails(1, "invalid_grant")
        .fails(1, "log in again with `credkeeper login");
    assert!(!ran.exists(), "the command never started");
    let history = user.run(&["tasks", "history", "copy-token"]).ok();
    assert!(
        history.stdout.contains("invalid_grant") && history.stdout.lines().count() == 3,
        "one success, one failure, newest first:\n{}",
        history.stdout
    );
    assert!(!failed.stderr.contains("eyJ"), "{}", failed.stderr);
}

#[test]
fn an_expired_login_fails_the_run_before_it_starts() {
    // Refresh tokens live 3 s at this provider.
    let op = Op::start_with(&[("OP_RT_TTL", "3")]);
    let user = User::new();
    device_login(&user, &op, "device-client", &[]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let (file, _, ran) = copy_token_task(&user, "{}");
    tasks_run(
        &user,
        &file,
        &["--issuer", op.issuer(), "--client-id", "device-client"],
    )
    .fails(1, "authentication failed")
    .fails(1, "log in again with `credkeeper login");
    assert!(!ran.exists(), "the command never started");
    let leftovers: Vec<_> = std::fs::read_dir(user.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("credkeeper-task")
        })
        .collect();
    assert!(leftovers.is_empty(), "no run directory left: {leftovers:?}");
}

#[test]
fn the_scheduler_prepares_each_run_with_a_token_from_the_issuer() {
    let op = Op::start();
    let user = User::new();
    let secret = user.secret_file("client.secret", "robot-secret", 0o600);
    let tokens = user.path("tokens");
    let file = user.path("sched.yaml");
    std::fs::write(
        &file,
        format!(
            "tasks:\n- name: every-2s\n  schedule: '@every 2s'\n  shell: true\n  command: 'cat \"$BEARER_TOKEN_FILE\" >> {}'\n  credentials:\n    bearer: {{scopes: read, audience: https://api.test.example}}\n",
            tokens.display()
        ),
    )
    .unwrap();
    let mut cmd = user.cmd();
    cmd.args(["tasks", "serve"])
        .arg(&file)
        .args(op.robot_client_args(&secret));
    let mut serve = Spawned::start(cmd);
    serve.wait_for("task(s) scheduled");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&tokens)
        .unwrap_or_default()
        .lines()
        .count()
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "two runs in 20 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, log) = serve.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        !log.contains("robot-secret") && !log.contains("eyJ"),
        "{log}"
    );
    for token in read(&tokens).lines().take(2) {
        let c = claims(token);
        assert_eq!(
            (c["sub"].as_str(), c["scope"].as_str(), c["aud"].as_str()),
            (
                Some("robot-client"),
                Some("read"),
                Some("https://api.test.example")
            )
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(user.path(""))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("credkeeper-task")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
