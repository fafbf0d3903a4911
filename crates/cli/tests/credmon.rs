//! `credkeeper credmon` on a directory in the scitokens-credmon layout: OAuth refreshes
//! against the real test provider, local-mode tokens verified by the SciTokens library,
//! upstream's file shapes and modes, and none of upstream's failure modes.

mod common;
use common::*;
use serde_json::{Value, json};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A refresh token for `client` through the device flow, approved headlessly (what the
/// credmon's web app would have stored in a `.top`).
fn refresh_token(op: &Op, client: &str, secret: &str) -> String {
    let curl = |args: &[&str]| -> Value {
        let out = Command::new("curl").arg("-s").args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let user = format!("{client}:{secret}");
    let device = curl(&[
        "-u",
        &user,
        "--data-urlencode",
        "scope=openid offline_access read",
        op.get("OP_DEVICE_AUTHORIZATION_ENDPOINT"),
    ]);
    approve_device(op, device["user_code"].as_str().unwrap(), "alice");
    let token = curl(&[
        "-u",
        &user,
        "-d",
        "grant_type=urn:ietf:params:oauth:grant-type:device_code",
        "-d",
        &format!("device_code={}", device["device_code"].as_str().unwrap()),
        op.get("OP_TOKEN_ENDPOINT"),
    ]);
    token["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string()
}

fn write(path: &Path, contents: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap()
}

struct Fixture {
    user: User,
    dir: PathBuf,
    key: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let user = User::new();
        let dir = user.path("oauth_credentials");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
        let key = user.path("scitokens-private.pem");
        Fixture { user, dir, key }
    }

    /// An OAuth credential as the credmon's web app leaves it.
    fn oauth(&self, user: &str, token: &str, rt: &str, op: &Op) {
        let d = self.dir.join(user);
        write(
            &d.join(format!("{token}.top")),
            &json!({"refresh_token": rt}).to_string(),
            0o400,
        );
        write(
            &d.join(format!("{token}.use")),
            &json!({"access_token": "expired", "expires_in": 0}).to_string(),
            0o400,
        );
        write(
            &d.join(format!("{token}.meta")),
            &json!({
                "client_id": "robot-client",
                "client_secret": "robot-secret",
                "token_url": op.get("OP_TOKEN_ENDPOINT"),
                "use_refresh_token": true
            })
            .to_string(),
            0o400,
        );
    }

    fn credmon(&self, extra_env: &[(&str, &str)], args: &[&str]) -> Command {
        let mut cmd = self.user.cmd();
        cmd.arg("credmon")
            .args(args)
            .env("_CONDOR_SEC_CREDENTIAL_DIRECTORY_OAUTH", &self.dir)
            .env("_CONDOR_LOCAL_CREDMON_PRIVATE_KEY", &self.key)
            .env(
                "_CONDOR_LOCAL_CREDMON_PUBLIC_KEY",
                self.user.path("scitokens.pem"),
            )
            .env("_CONDOR_LOCAL_CREDMON_ISSUER", "https://credmon.example")
            .env("CONDOR_CONFIG", "ONLY_ENV");
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    fn once(&self, extra_env: &[(&str, &str)]) -> Run {
        Run::from(self.credmon(extra_env, &["--once", "-v"]).output().unwrap())
    }
}

#[test]
fn an_oauth_pass_refreshes_like_upstream_and_one_bad_credential_starves_nobody() {
    let op = Op::start();
    let f = Fixture::new();
    let rt = refresh_token(&op, "robot-client", "robot-secret");
    // Users sort around the broken one, so a pass that stopped at it would miss some.
    f.oauth("alice", "op", &rt, &op);
    f.oauth("carol", "op", "revoked-or-never-valid", &op);
    f.oauth("zed", "op_handle", &rt, &op);
    let run = f.once(&[]).ok();
    assert!(
        run.stderr.contains("2 refreshed") && run.stderr.contains("1 need login"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&rt), "no refresh token in the log");

    for (user, token) in [("alice", "op"), ("zed", "op_handle")] {
        let use_path = f.dir.join(user).join(format!("{token}.use"));
        let used = json(&use_path);
        let at = used["access_token"].as_str().unwrap();
        assert_eq!(claims(at)["sub"], "alice");
        assert_eq!(used["token_type"], "Bearer");
        assert!(
            used["scope"].is_array(),
            "scope is a list, as oauthlib writes it: {used}"
        );
        let expires_at = used["expires_at"].as_i64().unwrap();
        let expires_in = used["expires_in"].as_i64().unwrap();
        assert!((expires_at - expires_in - credkeeper_core::Timestamp::now().unix()).abs() < 10);
        assert!(used.get("refresh_token").is_none());
        assert_eq!(mode(&use_path), 0o400);
        let top = json(&f.dir.join(user).join(format!("{token}.top")));
        assert!(top["refresh_token"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // The broken one is reported and left as it was.
    assert_eq!(json(&f.dir.join("carol/op.use"))["access_token"], "expired");
    let status = Run::from(f.credmon(&[], &["status", "--json"]).output().unwrap()).ok();
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    let carol = &status["credentials"]["carol/op"];
    assert!(
        carol["needs_login"]
            .as_str()
            .unwrap()
            .contains("invalid_grant"),
        "{status}"
    );
    // The contract files: pid without a newline, CREDMON_COMPLETE, no temporary files.
    let pid = read(&f.dir.join("pid"));
    assert!(
        !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()),
        "{pid:?}"
    );
    assert!(f.dir.join("CREDMON_COMPLETE").exists());
    // Neither in the directory's root nor in a user's directory.
    let leftovers: Vec<_> = std::fs::read_dir(&f.dir)
        .unwrap()
        .flatten()
        .flat_map(|e| match e.file_type().unwrap().is_dir() {
            true => std::fs::read_dir(e.path()).unwrap().flatten().collect(),
            false => vec![e],
        })
        .map(|e| e.path().display().to_string())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Next pass: nothing is due, and the credential needing login is not retried.
    let again = f.once(&[]).ok();
    assert!(
        again.stderr.contains("0 refreshed") && again.stderr.contains("1 need login"),
        "{}",
        again.stderr
    );
    // A new login (a new .top) puts it back in the pass.
    std::fs::remove_file(f.dir.join("carol/op.top")).unwrap();
    write(
        &f.dir.join("carol/op.top"),
        &json!({"refresh_token": rt}).to_string(),
        0o400,
    );
    let repaired = f.once(&[]).ok();
    assert!(
        repaired.stderr.contains("1 refreshed"),
        "{}",
        repaired.stderr
    );
}

#[test]
fn a_refresh_keeps_the_old_files_as_spares_to_write_over_and_a_deleted_credentials_spares_go() {
    let op = Op::start();
    let f = Fixture::new();
    let root = credkeeper_sink::uid() == 0;
    if root {
        // As HTCondor's: set-group-ID to a group not the writer's (condor's), so every
        // file made in it, a spare too, gets that group.
        std::os::unix::fs::chown(&f.dir, None, Some(1)).unwrap();
        std::fs::set_permissions(&f.dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
    }
    let rt = refresh_token(&op, "robot-client", "robot-secret");
    f.oauth("alice", "op", &rt, &op);
    let alice = f.dir.join("alice");
    let old_top = read(&alice.join("op.top"));
    let run = f.once(&[]).ok();
    assert!(run.stderr.contains("1 refreshed"), "{}", run.stderr);
    let spare = |name: &str| alice.join(format!(".{name}.spare"));
    if !root {
        // A 0400 file opens for writing only with root's override: no spares are kept.
        assert!(!spare("op.use").exists() && !spare("op.top").exists());
        return;
    }
    assert_eq!(std::fs::metadata(spare("op.use")).unwrap().gid(), 1);
    assert_eq!(json(&spare("op.use"))["access_token"], "expired");
    assert_eq!(read(&spare("op.top")), old_top);
    assert_eq!(
        (mode(&spare("op.use")), mode(&spare("op.top"))),
        (0o400, 0o400)
    );

    // Due again: the new version is written into the spare, which trades places.
    let inode = |p: &Path| std::fs::metadata(p).unwrap().ino();
    let (spare_use, live_use) = (inode(&spare("op.use")), inode(&alice.join("op.use")));
    let mut used = json(&alice.join("op.use"));
    used["expires_in"] = json!(0);
    write(&alice.join("op.use"), &used.to_string(), 0o400);
    let again = f.once(&[]).ok();
    assert!(again.stderr.contains("1 refreshed"), "{}", again.stderr);
    assert_eq!(inode(&alice.join("op.use")), spare_use);
    assert_eq!(inode(&spare("op.use")), live_use);
    assert_ne!(
        json(&alice.join("op.use"))["access_token"],
        used["access_token"]
    );

    // The CredD deletes the credential: the next pass removes what was left of it.
    for name in ["op.top", "op.use", "op.meta"] {
        std::fs::remove_file(alice.join(name)).unwrap();
    }
    let swept = f.once(&[]).ok();
    assert!(swept.stderr.contains("removed"), "{}", swept.stderr);
    assert_eq!(std::fs::read_dir(&alice).unwrap().count(), 0);
}

#[test]
fn bad_files_are_skipped_with_a_reason_and_never_followed() {
    let op = Op::start();
    let f = Fixture::new();
    let rt = refresh_token(&op, "robot-client", "robot-secret");
    f.oauth("alice", "op", &rt, &op);
    // A truncated .meta, a .top others can read, a symlinked .top, an invalid user name.
    f.oauth("bob", "op", &rt, &op);
    std::fs::set_permissions(
        f.dir.join("bob/op.meta"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(f.dir.join("bob/op.meta"), "{\"client_id\": \"robot-cl").unwrap();
    f.oauth("dora", "op", &rt, &op);
    std::fs::set_permissions(
        f.dir.join("dora/op.top"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    f.oauth("eve", "op", &rt, &op);
    let secret_elsewhere = f.user.path("elsewhere.top");
    write(
        &secret_elsewhere,
        &json!({"refresh_token": rt}).to_string(),
        0o400,
    );
    std::fs::remove_file(f.dir.join("eve/op.top")).unwrap();
    std::os::unix::fs::symlink(&secret_elsewhere, f.dir.join("eve/op.top")).unwrap();
    // A symlinked .use: neither read for its expiry nor replaced through.
    f.oauth("fay", "op", &rt, &op);
    let use_elsewhere = f.user.path("elsewhere.use");
    let elsewhere = json!({"access_token": "elsewhere", "expires_in": 0}).to_string();
    write(&use_elsewhere, &elsewhere, 0o600);
    std::fs::remove_file(f.dir.join("fay/op.use")).unwrap();
    std::os::unix::fs::symlink(&use_elsewhere, f.dir.join("fay/op.use")).unwrap();
    std::fs::create_dir(f.dir.join("bad name")).unwrap();

    // Credentials failed: `--once` says so and exits 1, as a cron job or probe needs.
    let run = f.once(&[]).fails(1, "credential(s) failed this pass");
    assert!(run.stderr.contains("1 refreshed"), "{}", run.stderr);
    assert!(
        run.stderr.contains("bob/op.meta is not valid JSON"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("dora/op.top is readable by others (mode 0644)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("eve/op.top is a symlink; not followed"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("fay/op.use: a symlink; not followed"),
        "{}",
        run.stderr
    );
    assert!(
        std::fs::symlink_metadata(f.dir.join("fay/op.use"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(&use_elsewhere), elsewhere);
    assert!(
        run.stderr.contains("\"bad name\": not a valid user name"),
        "{}",
        run.stderr
    );
    assert_eq!(json(&f.dir.join("eve/op.use"))["access_token"], "expired");
}

#[test]
fn a_credential_whose_meta_turns_refreshing_off_is_never_refreshed_however_old_its_use() {
    let f = Fixture::new();
    // Upstream's rule: a readable `.use` and `use_refresh_token: false` is never renewed.
    // The token URL would refuse the connection: asking it would fail the pass.
    let d = f.dir.join("alice");
    write(
        &d.join("op.top"),
        &json!({"refresh_token": "kept"}).to_string(),
        0o400,
    );
    let used = json!({"access_token": "long-expired", "expires_in": 0}).to_string();
    write(&d.join("op.use"), &used, 0o400);
    write(
        &d.join("op.meta"),
        &json!({
            "client_id": "robot-client",
            "client_secret": "robot-secret",
            "token_url": "http://127.0.0.1:9/token",
            "use_refresh_token": false
        })
        .to_string(),
        0o400,
    );
    for _ in 0..2 {
        let run = f.once(&[]).ok();
        assert!(
            run.stderr.contains("0 refreshed")
                && run.stderr.contains("0 failed")
                && run.stderr.contains("1 idle"),
            "{}",
            run.stderr
        );
        assert_eq!(read(&d.join("op.use")), used);
    }
}

#[test]
fn local_mode_signs_upstreams_claims_and_the_broker_serves_its_keys() {
    let f = Fixture::new();
    // A key as sites have them: SEC1 PEM made by openssl.
    let ok = Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&f.key)
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::set_permissions(&f.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // credkeeper serve publishes the same key as the local issuer's JWKS.
    let config = f.user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[issuer]\nkey_file = \"{}\"\nkey_id = \"local\"\n",
            f.key.display()
        ),
    )
    .unwrap();
    let broker = Broker::start(
        &f.user,
        &f.user.path("broker-state"),
        &["--config", config.to_str().unwrap()],
    );

    write(&f.dir.join("bob/scitokens.top"), "bob@foo", 0o600);
    write(&f.dir.join("carl/scitokens.top"), "carl@foo", 0o600);
    let env = [
        ("_CONDOR_LOCAL_CREDMON_ISSUER", broker.url.as_str()),
        ("_CONDOR_LOCAL_CREDMON_CARL_TOKEN_VERSION", ""),
        ("_CONDOR_LOCAL_CREDMON_TOKEN_LIFETIME", "900"),
    ];
    let run = f.once(&env).ok();
    assert!(run.stderr.contains("2 signed"), "{}", run.stderr);
    let used = json(&f.dir.join("bob/scitokens.use"));
    assert_eq!(used["expires_in"], 900);
    let token = used["access_token"].as_str().unwrap();
    let header: Value = {
        use base64::Engine;
        let h = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": "local", "typ": "JWT"})
    );
    let c = claims(token);
    let mut names: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["exp", "iat", "iss", "jti", "nbf", "scope", "sub"],
        "upstream's claim set"
    );
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["scope"], "read:/user/bob write:/user/bob");
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);
    assert_eq!(mode(&f.dir.join("bob/scitokens.use")), 0o400);
    let token_file = f.user.path("bob.token");
    std::fs::write(&token_file, token).unwrap();
    f.user
        .run(&[
            "token",
            "verify",
            token_file.to_str().unwrap(),
            "--issuer",
            &broker.url,
        ])
        .ok();

    // The newer options: aud and ver, which the SciTokens library's Enforcer needs.
    std::fs::remove_file(f.dir.join("bob/scitokens.use")).unwrap();
    let env = [
        ("_CONDOR_LOCAL_CREDMON_ISSUER", broker.url.as_str()),
        ("_CONDOR_LOCAL_CREDMON_TOKEN_VERSION", "scitoken:2.0"),
        (
            "_CONDOR_LOCAL_CREDMON_TOKEN_AUDIENCE",
            "https://storage.example",
        ),
    ];
    f.once(&env).ok();
    let token = json(&f.dir.join("bob/scitokens.use"))["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(claims(&token)["aud"], json!(["https://storage.example"]));
    std::fs::write(&token_file, &token).unwrap();
    let python = scitokens_python();
    let out = Command::new(&python)
        .arg(testbed().join("verify_scitoken.py"))
        .arg(format!("@{}", token_file.display()))
        .arg(&broker.url)
        .args([
            "--insecure",
            "--audience",
            "https://storage.example",
            "--authz",
            "write",
            "--path",
            "/user/bob/out",
        ])
        .arg("--cache-dir")
        .arg(f.user.path("sci-cache"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn local_keys_are_generated_when_missing_and_sighup_scans_now() {
    let f = Fixture::new();
    write(&f.dir.join("bob/scitokens.top"), "bob", 0o600);
    let mut daemon =
        Spawned::start(f.credmon(&[("_CONDOR_CREDMON_OAUTH_SCAN_INTERVAL", "3600")], &["-v"]));
    daemon.wait_for("pass over 1 users");
    assert_eq!(mode(&f.key), 0o600);
    assert_eq!(mode(&f.user.path("scitokens.pem")), 0o644);
    assert!(read(&f.user.path("scitokens.pem")).contains("BEGIN PUBLIC KEY"));
    let pid = read(&f.dir.join("pid"));
    assert_eq!(pid, daemon.child.id().to_string());

    std::fs::remove_file(f.dir.join("bob/scitokens.use")).unwrap();
    // SAFETY: signals to our own child.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGHUP) };
    let start = Instant::now();
    while !f.dir.join("bob/scitokens.use").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "SIGHUP did not start a pass"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = daemon.terminate();
    assert_eq!(code, 0);
}

#[test]
fn a_credential_directory_open_to_others_is_refused() {
    let f = Fixture::new();
    std::fs::set_permissions(&f.dir, std::fs::Permissions::from_mode(0o2777)).unwrap();
    f.once(&[]).fails(1, "is open to others (mode 2777)");
}

#[test]
fn a_local_top_others_can_read_is_not_signed() {
    let f = Fixture::new();
    write(&f.dir.join("bob/scitokens.top"), "bob@foo", 0o644);
    write(&f.dir.join("carl/scitokens.top"), "carl@foo", 0o600);
    let run = f.once(&[]).fails(1, "1 credential(s) failed this pass");
    let top = f.dir.join("bob/scitokens.top");
    assert!(
        run.stderr.contains(&format!(
            "{} is readable by others (mode 0644); run `chmod 600 {}`",
            top.display(),
            top.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!f.dir.join("bob/scitokens.use").exists(), "not signed");
    assert!(f.dir.join("carl/scitokens.use").exists(), "the others are");
    // Fixed as told: signed on the next pass.
    std::fs::set_permissions(&top, std::fs::Permissions::from_mode(0o600)).unwrap();
    f.once(&[]).ok();
    assert!(f.dir.join("bob/scitokens.use").exists());
}

#[test]
fn a_pass_that_changes_nothing_leaves_the_status_file_as_it_is_and_status_still_tells_when_it_ran()
{
    let f = Fixture::new();
    write(&f.dir.join("bob/scitokens.top"), "bob", 0o600);
    f.once(&[]).ok();
    let status_path = f.dir.join(credkeeper_credmon::status::FILE);
    let stamp = |m: std::fs::Metadata| (m.ino(), m.mtime(), m.mtime_nsec());
    let written = stamp(std::fs::metadata(&status_path).unwrap());
    let first = json(&status_path);
    // The next pass ends in a later second.
    std::thread::sleep(Duration::from_millis(1100));
    let run = f.once(&[]).ok();
    assert!(
        run.stderr.contains("0 signed") && run.stderr.contains("1 idle"),
        "{}",
        run.stderr
    );
    assert_eq!(
        stamp(std::fs::metadata(&status_path).unwrap()),
        written,
        "an idle pass rewrote the status file"
    );
    let shown = Run::from(f.credmon(&[], &["status", "--json"]).output().unwrap()).ok();
    let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert!(
        shown["last_pass"].as_i64().unwrap() > first["last_pass"].as_i64().unwrap(),
        "the idle pass's time is not shown: {shown} after {first}"
    );
    assert_eq!(shown["credentials"], first["credentials"]);
}

#[test]
fn a_temporary_file_left_by_a_crash_is_removed_and_a_running_writers_kept() {
    let f = Fixture::new();
    // A process that has exited: what a crash between staging and renaming leaves.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let left = f.dir.join(format!(".op.top.{gone_pid}.7.tmp"));
    write(&left, &json!({"refresh_token": "stale"}).to_string(), 0o400);
    // A pass stages beside the files, in the user's directory.
    std::fs::create_dir(f.dir.join("carol")).unwrap();
    let left_beside = f.dir.join(format!("carol/.op.top.{gone_pid}.8.tmp"));
    write(
        &left_beside,
        &json!({"refresh_token": "stale"}).to_string(),
        0o400,
    );
    // This test's own process stands for another writer still at work (the broker's web
    // login stages its files here too).
    let running = f.dir.join(format!(".op.use.{}.1.tmp", std::process::id()));
    write(&running, "{}", 0o400);
    // Not a temporary name: never touched.
    let other = f.dir.join("notes.txt");
    write(&other, "kept", 0o600);

    let run = f.once(&[]).ok();
    assert!(!left.exists(), "{}", run.stderr);
    assert!(!left_beside.exists(), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("left by process {gone_pid}")),
        "{}",
        run.stderr
    );
    assert!(running.exists());
    assert!(other.exists());
}
