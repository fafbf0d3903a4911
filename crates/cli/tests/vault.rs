//! The broker as a drop-in for Vault + htvault-config: the real `igwn-robot-get` 0.3.3
//! and `htgettoken` 2.2 from PyPI, unmodified, get tokens from `credkeeper serve` over
//! HTTPS (a test CA passed with `--cafile`) with keytabs from a real MIT KDC, and a
//! user's first OIDC login works through htgettoken too.

mod common;
#[path = "../../store/tests/pg/mod.rs"]
mod pg;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Site {
    kdc: Kdc,
    user: User,
    ca: PathBuf,
    venv: PathBuf,
    broker: Broker,
    /// `localhost:<port>`: htgettoken asks Kerberos for `host/localhost`.
    server: String,
}

fn site(extra: &str) -> Site {
    let kdc = Kdc::start();
    let user = User::new();
    let (ca, cert, key) = test_ca(user.home.path());
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
kerberos_keytab = "{keytab}"
tls_cert = "{cert}"
tls_key = "{key}"

[vault.issuers]
igwn = "local"

[[robot]]
name = "ci"
auth = {{ kerberos_principal = "robot/ci.example" }}
providers = ["local"]
scopes = ["read:/user/{{username}}", "write:/user/{{username}}", "read:/data"]
audiences = ["*"]
{extra}"#,
            keytab = kdc.get("KRB5_SERVICE_KEYTAB"),
            cert = cert.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let broker = start_broker(&user, &kdc, "state");
    let server = broker.url.replace("https://127.0.0.1", "localhost");
    let venv = scitokens_python().parent().unwrap().to_path_buf();
    Site {
        kdc,
        user,
        ca,
        venv,
        broker,
        server,
    }
}

fn start_broker(user: &User, kdc: &Kdc, state: &str) -> Broker {
    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    Broker::start_cmd(
        cmd,
        &user.path(state),
        &["--config", user.path("broker.toml").to_str().unwrap()],
    )
}

impl Site {
    /// A Python peer from the venv, in the realm, trusting the test CA.
    fn peer(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.venv.join(tool));
        self.user.hermetic(&mut cmd);
        self.kdc.apply(&mut cmd);
        cmd.env("HTGETTOKENOPTS", format!("--cafile {}", self.ca.display()))
            .stdin(std::process::Stdio::null());
        cmd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.user.path(name)
    }

    fn ccache(&self) -> String {
        format!("FILE:{}", self.path("robot.ccache").display())
    }

    fn igwn_robot_get(&self, keytab: &str, principal: &str, out: &Path, extra: &[&str]) -> Run {
        let mut cmd = self.peer("igwn-robot-get");
        cmd.args(["-k", keytab, "-c", &self.ccache(), "--vaulttokenfile"])
            .arg(self.path("vt"))
            .args(["-a", &self.server, "-o"])
            .arg(out)
            .args(extra)
            .arg(principal);
        Run::from(cmd.output().unwrap())
    }

    fn htgettoken(&self, out: &Path, extra: &[&str]) -> Run {
        let mut cmd = self.peer("htgettoken");
        cmd.env("KRB5CCNAME", self.ccache())
            .args(["-a", &self.server, "-i", "igwn", "-r", "robot"])
            .args([
                "--credkey",
                "robot/ci.example",
                "--nooidc",
                "--vaulttokenfile",
            ])
            .arg(self.path("vt"))
            .arg("-o")
            .arg(out)
            .args(extra);
        Run::from(cmd.output().unwrap())
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        audit_lines(&self.broker.state)
    }
}

#[test]
fn igwn_robot_get_and_htgettoken_from_pypi_get_tokens_from_the_broker_unmodified() {
    let s = site("");
    let keytab = s.kdc.get("KRB5_ROBOT_KEYTAB");
    let out = s.path("bt");
    s.igwn_robot_get(keytab, "robot/ci.example@TEST.REALM", &out, &[])
        .ok();
    let token = read(&out);
    let c = claims(&token);
    assert_eq!(c["sub"], "ci");
    assert_eq!(c["scope"], "read:/user/ci write:/user/ci");
    assert!(token.ends_with('\n'), "htgettoken's own file format");
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(
        (last["robot"].as_str(), last["auth"].as_str()),
        (Some("ci"), Some("vault-token"))
    );
    use std::os::unix::fs::PermissionsExt;
    let vt_mode = std::fs::metadata(s.path("vt"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(vt_mode, 0o600, "the saved Vault token is private");

    // With --scopes and --audience htgettoken reads /sts/: a token reduced to exactly
    // those (the ticket igwn-robot-get left in the cache authenticates it).
    s.htgettoken(
        &out,
        &[
            "--scopes",
            "read:/data",
            "--audience",
            "https://storage.example",
        ],
    )
    .ok();
    let c = claims(&read(&out));
    assert_eq!(
        (c["scope"].as_str(), c["aud"].as_str()),
        (Some("read:/data"), Some("https://storage.example"))
    );

    // htgettoken alone with the saved Vault token and no Kerberos ticket at all: the
    // broker knows the token (lookup-self, then the read).
    std::fs::remove_file(s.path("robot.ccache")).unwrap();
    let before = s.audit_lines().len();
    s.htgettoken(
        &out,
        &["--vaulttokenminttl", "1h", "--scopes", "read:/user/ci"],
    )
    .ok();
    assert_eq!(claims(&read(&out))["scope"], "read:/user/ci");
    assert_eq!(s.audit_lines().len(), before + 1);

    // Policy still rules: a scope outside the robot's policy is refused, and the old
    // token file stays as it was.
    let kept = read(&out);
    let run = s.htgettoken(&out, &["--scopes", "write:/data"]);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert_eq!(read(&out), kept);
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(
        (last["result"].as_str(), last["code"].as_str()),
        (Some("denied"), Some("forbidden"))
    );
}

#[test]
fn a_restarted_broker_keeps_its_vault_tokens_so_the_clients_need_no_new_login() {
    let mut s = site("");
    let keytab = s.kdc.get("KRB5_ROBOT_KEYTAB");
    let out = s.path("bt");
    s.igwn_robot_get(keytab, "robot/ci.example@TEST.REALM", &out, &[])
        .ok();
    s.broker.stop();
    s.broker = start_broker(&s.user, &s.kdc, "state");
    s.server = s.broker.url.replace("https://127.0.0.1", "localhost");
    std::fs::remove_file(&out).unwrap();
    // No Kerberos ticket any more: only the Vault token saved before the restart can
    // authenticate these reads (lookup-self, then the secret; then token/create).
    std::fs::remove_file(s.path("robot.ccache")).unwrap();
    s.htgettoken(
        &out,
        &["--vaulttokenminttl", "1h", "--scopes", "read:/user/ci"],
    )
    .ok();
    assert_eq!(claims(&read(&out))["scope"], "read:/user/ci");
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(
        (last["robot"].as_str(), last["auth"].as_str()),
        (Some("ci"), Some("vault-token"))
    );
    s.htgettoken(&out, &["--vaulttokenttl", "1h", "--scopes", "read:/data"])
        .ok();
    assert_eq!(claims(&read(&out))["scope"], "read:/data");
}

#[test]
fn a_vault_token_one_replica_made_works_at_another_on_postgresql() {
    let db = pg::Server::start();
    let keys = tempfile::tempdir().unwrap();
    let store = db.store_section(&db.new_database(), &keys.path().join("store.key"));
    let mut s = site(&store);
    let keytab = s.kdc.get("KRB5_ROBOT_KEYTAB");
    let out = s.path("bt");
    // Kerberos login and a token at the first replica...
    s.igwn_robot_get(keytab, "robot/ci.example@TEST.REALM", &out, &[])
        .ok();
    let first = header(&read(&out));
    // ...then, without a ticket, the Vault token it made at a second replica, which signs
    // with the same issuer key.
    let second = start_broker(&s.user, &s.kdc, "replica-2");
    s.server = second.url.replace("https://127.0.0.1", "localhost");
    s.broker = second;
    std::fs::remove_file(&out).unwrap();
    std::fs::remove_file(s.path("robot.ccache")).unwrap();
    s.htgettoken(
        &out,
        &["--vaulttokenminttl", "1h", "--scopes", "read:/user/ci"],
    )
    .ok();
    let again = read(&out);
    assert_eq!(claims(&again)["scope"], "read:/user/ci");
    assert_eq!(
        header(&again)["kid"],
        first["kid"],
        "one signing key for the fleet"
    );
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(
        (last["robot"].as_str(), last["auth"].as_str()),
        (Some("ci"), Some("vault-token")),
        "the second replica took the first one's Vault token"
    );
}

#[test]
fn principals_that_are_not_robots_get_nothing_from_the_vault_api() {
    let s = site("");
    let out = s.path("bt");
    let run = s.igwn_robot_get(
        s.kdc.get("KRB5_STRANGER_KEYTAB"),
        "stranger/ci.example@TEST.REALM",
        &out,
        &[],
    );
    assert_ne!(run.code, 0);
    assert!(!out.exists());
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(last["code"], "forbidden");
    assert!(
        last["reason"]
            .as_str()
            .unwrap()
            .contains("stranger/ci.example@TEST.REALM")
    );
    // Not authenticated as any robot: `auth` says none, here as on the robot API.
    assert_eq!(last["auth"], "none", "{last}");
    let mut get = s.user.cmd();
    s.kdc.apply(&mut get);
    get.args(["--cafile", s.ca.to_str().unwrap(), "get", "--server"])
        .arg(&s.broker.url)
        .args(["-k", s.kdc.get("KRB5_STRANGER_KEYTAB"), "-o"])
        .arg(s.path("api-bt"));
    Run::from(get.output().unwrap()).fails(1, "not bound to any robot");
    let api = s.audit_lines().pop().unwrap();
    assert_eq!(api["code"], "forbidden");
    assert_eq!(
        (api["auth"].clone(), api["robot"].clone()),
        (last["auth"].clone(), last["robot"].clone()),
        "{api} {last}"
    );

    // A robot's Vault token reads only the robot's own credkey. (A fresh ccache:
    // igwn-robot-get cannot reuse one holding another principal's tickets.)
    std::fs::remove_file(s.path("robot.ccache")).unwrap();
    s.igwn_robot_get(
        s.kdc.get("KRB5_ROBOT_KEYTAB"),
        "robot/ci.example@TEST.REALM",
        &out,
        &[],
    )
    .ok();
    let mut cmd = s.peer("htgettoken");
    cmd.env("KRB5CCNAME", s.ccache())
        .args([
            "-a",
            &s.server,
            "-i",
            "igwn",
            "-r",
            "robot",
            "--credkey",
            "alice",
            "--nooidc",
        ])
        .arg("--vaulttokenfile")
        .arg(s.path("vt"))
        .arg("-o")
        .arg(s.path("alice-bt"));
    let run = Run::from(cmd.output().unwrap());
    assert_ne!(run.code, 0);
    assert!(!s.path("alice-bt").exists());
}

#[test]
fn a_users_first_oidc_login_works_through_htgettoken_and_the_refresh_token_stays_in_the_broker() {
    let op = Op::start();
    let s = site(&format!(
        r#"
[[provider]]
name = "op"
issuer = "{}"
client_id = "device-client"
scopes = "read write"
"#,
        op.issuer()
    ));
    let out = s.path("user-bt");
    // htgettoken does OIDC only with a terminal on stdin, stdout and stderr: `script`
    // gives it one.
    let htgettoken = format!(
        "{} -a {} -i op -r default --vaulttokenfile {} -o {}",
        s.venv.join("htgettoken").display(),
        s.server,
        s.path("user-vt").display(),
        out.display()
    );
    let mut cmd = s.peer("htgettoken");
    let script = format!("script -qfec '{htgettoken}' /dev/null 1>&2");
    cmd = {
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
            .collect();
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(script);
        for (k, _) in std::env::vars() {
            if k.starts_with("KRB5") {
                sh.env_remove(k);
            }
        }
        sh.envs(envs);
        sh
    };
    let mut login = Spawned::start(cmd);
    let code = login.wait_for("user_code=");
    let code = code.split(['&', ' ']).next().unwrap().to_string();
    approve_device(&op, &code, "alice");
    let (status, output) = login.finish();
    assert_eq!(status, 0, "htgettoken: {output}");
    let token = read(&out);
    assert_eq!(claims(&token)["sub"], "alice");
    assert!(!output.contains("refresh_token"), "{output}");
    // htgettoken saved the credkey the broker named; the broker holds the real refresh
    // token (the client only ever saw a handle).
    let credkey = std::fs::read_to_string(s.path(".config/htgettoken/credkey-op-default")).unwrap();
    assert_eq!(credkey.trim(), "alice");
    // The saved Vault token keeps working without a terminal or a login.
    std::fs::remove_file(&out).unwrap();
    let mut again = s.peer("htgettoken");
    again
        .args([
            "-a",
            &s.server,
            "-i",
            "op",
            "-r",
            "default",
            "--nooidc",
            "--vaulttokenfile",
        ])
        .arg(s.path("user-vt"))
        .arg("-o")
        .arg(&out);
    Run::from(again.output().unwrap()).ok();
    assert_eq!(claims(&read(&out))["sub"], "alice");
    // A user's reads are audited like a robot's, under the user's store identity.
    let reads: Vec<_> = s
        .audit_lines()
        .into_iter()
        .filter(|l| l["robot"] == "user:alice")
        .collect();
    assert!(reads.len() >= 2, "{reads:?}");
    assert!(
        reads.iter().all(|l| l["result"] == "vended"
            && l["auth"] == "vault-token"
            && l["provider"] == "op"),
        "{reads:?}"
    );
    assert!(!reads.iter().any(|l| l.to_string().contains(&token)));
}

/// The credkeeper binary under another name, as the deploy image installs it.
fn as_tool(s: &Site, name: &str) -> Command {
    let bin = s.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join(name);
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_credkeeper"), &link).unwrap();
    }
    let mut renamed = Command::new(link);
    s.user.hermetic(&mut renamed);
    s.kdc.apply(&mut renamed);
    renamed
        .env("HTGETTOKENOPTS", format!("--cafile {}", s.ca.display()))
        .stdin(std::process::Stdio::null());
    renamed
}

#[test]
fn credkeeper_installed_as_igwn_robot_get_takes_its_options_and_reuses_a_valid_token() {
    let s = site("");
    let out = s.path("bt");
    let vt = s.path("ck-vt");
    let run = |extra: &[&str]| {
        let mut cmd = as_tool(&s, "igwn-robot-get");
        cmd.args([
            "-k",
            s.kdc.get("KRB5_ROBOT_KEYTAB"),
            "-c",
            &s.ccache(),
            "-a",
            &s.server,
        ])
        .arg("--vaulttokenfile")
        .arg(&vt)
        .arg("-o")
        .arg(&out)
        .args(extra)
        .arg("robot/ci.example@TEST.REALM");
        Run::from(cmd.output().unwrap())
    };
    // The broker's tokens live 20 minutes: igwn-robot-get's default --minsecs (3600)
    // can never be met, so each run asks the server, as the Python tool does.
    run(&["-v"]).ok();
    let c = claims(&read(&out));
    assert_eq!(
        (c["sub"].as_str(), c["scope"].as_str()),
        (Some("ci"), Some("read:/user/ci write:/user/ci"))
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&vt).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let last = s.audit_lines().pop().unwrap();
    assert_eq!(last["auth"], "vault-token");

    // With -m 60 the valid token in the file is reused: nothing reaches the broker.
    let before = s.audit_lines().len();
    let token = read(&out);
    run(&["-m", "60"]).ok();
    assert_eq!(read(&out), token);
    assert_eq!(
        s.audit_lines().len(),
        before,
        "no request for a reused token"
    );

    // The saved Vault token serves the next read without Kerberos (the keytab is gone).
    std::fs::remove_file(&out).unwrap();
    let mut cmd = as_tool(&s, "igwn-robot-get");
    cmd.args([
        "-k",
        "/nonexistent.keytab",
        "-a",
        &s.server,
        "-m",
        "60",
        "--vaulttokenfile",
    ])
    .arg(&vt)
    .arg("-o")
    .arg(&out)
    .arg("robot/ci.example@TEST.REALM");
    Run::from(cmd.output().unwrap()).ok();
    assert_eq!(claims(&read(&out))["sub"], "ci");

    // Installed as htgettoken: the ticket igwn-robot-get left in the cache, and /sts/.
    std::fs::remove_file(&vt).unwrap();
    let mut cmd = as_tool(&s, "htgettoken");
    cmd.env("KRB5CCNAME", s.ccache())
        .args([
            "-a",
            &s.server,
            "-i",
            "igwn",
            "-r",
            "robot",
            "--credkey",
            "robot/ci.example",
        ])
        .args([
            "--scopes",
            "read:/data",
            "--audience",
            "https://storage.example",
            "--nooidc",
            "-v",
        ])
        .arg("--vaulttokenfile")
        .arg(&vt)
        .arg("-o")
        .arg(&out);
    let run = Run::from(cmd.output().unwrap()).ok();
    assert!(
        run.stderr.contains("--nooidc has no effect"),
        "{}",
        run.stderr
    );
    let c = claims(&read(&out));
    assert_eq!(
        (c["scope"].as_str(), c["aud"].as_str()),
        (Some("read:/data"), Some("https://storage.example"))
    );

    // A principal no robot is bound to: refused, nothing written.
    let mut cmd = as_tool(&s, "igwn-robot-get");
    cmd.args([
        "-k",
        s.kdc.get("KRB5_STRANGER_KEYTAB"),
        "-a",
        &s.server,
        "--vaulttokenfile",
    ])
    .arg(s.path("stranger-vt"))
    .arg("-o")
    .arg(s.path("stranger-bt"))
    .arg("stranger/ci.example@TEST.REALM");
    Run::from(cmd.output().unwrap()).fails(1, "not bound to any robot");
    assert!(!s.path("stranger-bt").exists() && !s.path("stranger-vt").exists());
}
