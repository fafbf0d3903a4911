//! Shared test harness: a real OpenID Provider (`oidc-provider` from npm) started on
//! loopback by `tests/testbed/start-op.sh`, the `credkeeper` binary run in an isolated
//! home, and the headless browser (`tests/testbed/op-browser.sh`) that approves logins.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub fn testbed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/testbed")
}

/// A running OpenID Provider, stopped when dropped.
pub struct Op {
    state: tempfile::TempDir,
    pub env: HashMap<String, String>,
    extra: Vec<(String, String)>,
}

impl Op {
    pub fn start() -> Op {
        Op::start_with(&[])
    }

    /// Start with extra environment (OP_AT_TTL, OP_DEVICE_TTL, ...).
    pub fn start_with(extra: &[(&str, &str)]) -> Op {
        let state = tempfile::tempdir().unwrap();
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut op = Op {
            state,
            env: HashMap::new(),
            extra,
        };
        op.run_start(None);
        op
    }

    fn run_start(&mut self, port: Option<&str>) {
        // A provider that does not come up is retried once (on a fresh port unless the
        // port is fixed): the peer's start-up, not credkeeper, is what such a failure tests.
        let mut failures = Vec::new();
        for _ in 0..2 {
            let mut cmd = Command::new(testbed().join("start-op.sh"));
            cmd.arg(self.state.path());
            if let Some(p) = port {
                cmd.arg(p);
            }
            cmd.envs(self.extra.iter().map(|(k, v)| (k, v)));
            let out = cmd.output().expect("run start-op.sh");
            if out.status.success() {
                break;
            }
            failures.push(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        assert!(
            failures.len() < 2,
            "start-op.sh failed twice:\n{}",
            failures.join("\n---\n")
        );
        let text = std::fs::read_to_string(self.state.path().join("op.env")).unwrap();
        self.env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in op.env"))
    }

    pub fn issuer(&self) -> &str {
        self.get("OP_ISSUER")
    }

    /// The provider's log: requests, grants and their errors (never token values).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("op/op.log")).unwrap_or_default()
    }

    /// `--issuer … --client-id robot-client --client-secret-file SECRET`: this provider's
    /// confidential robot client (its secret is `robot-secret`).
    pub fn robot_client_args<'a>(&'a self, secret: &'a Path) -> [&'a str; 6] {
        [
            "--issuer",
            self.issuer(),
            "--client-id",
            "robot-client",
            "--client-secret-file",
            secret.to_str().unwrap(),
        ]
    }

    pub fn stop(&self) {
        let _ = Command::new(testbed().join("stop-op.sh"))
            .arg(self.state.path())
            .output();
    }

    /// Stop and start again on the same port: the provider forgets every grant and token
    /// (in-memory storage) but keeps its signing keys.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.get("OP_PORT").to_string();
        self.run_start(Some(&port));
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An isolated user: its own HOME, state, cache and config directories, and no
/// inherited credkeeper or WLCG variables.
pub struct User {
    pub home: tempfile::TempDir,
}

impl User {
    pub fn new() -> User {
        User {
            home: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.home.path().join(name)
    }

    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_credkeeper"));
        self.hermetic(&mut cmd);
        cmd.env("CREDKEEPER_INSECURE_LOOPBACK", "true")
            .stdin(Stdio::null());
        cmd
    }

    /// Make `cmd` see none of the caller's credkeeper, WLCG, XDG, Kerberos, htgettoken,
    /// Rucio or X.509 settings, and this user's home as its own.
    pub fn hermetic(&self, cmd: &mut Command) {
        for (k, _) in std::env::vars() {
            if k.starts_with("CREDKEEPER_")
                || k.starts_with("BEARER_TOKEN")
                || k.starts_with("XDG_")
                || k.starts_with("KRB5")
                || k.starts_with("RUCIO_")
                || k.starts_with("X509_")
                || k == "HTGETTOKENOPTS"
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", self.home.path())
            .env("XDG_RUNTIME_DIR", self.home.path());
    }

    /// A file holding `secret` with `mode`.
    pub fn secret_file(&self, name: &str, secret: &str, mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(name);
        std::fs::write(&p, secret).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Run to completion with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd().args(args).output().expect("run credkeeper");
        Run::from(out)
    }
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "expected success:\n{}\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self, code: i32, message: &str) -> Run {
        assert_eq!(
            self.code, code,
            "exit code:\n{}\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}:\n{}",
            self.stderr
        );
        self
    }

    /// Assert no secret value reached the output.
    #[track_caller]
    pub fn never_shows(self, secrets: &[&str]) -> Run {
        for s in secrets {
            assert!(
                !self.stdout.contains(s) && !self.stderr.contains(s),
                "output shows a secret"
            );
        }
        self
    }
}

/// A credkeeper run in the background whose stderr is read line by line.
pub struct Spawned {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Spawned {
    pub fn start(mut cmd: Command) -> Spawned {
        let mut child = cmd
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn credkeeper");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait for a stderr line containing `marker` and return the text after it.
    pub fn wait_for(&mut self, marker: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("no line with {marker:?}; saw {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(i) = line.find(marker) {
                return line[i + marker.len()..].trim().to_string();
            }
        }
    }

    /// Stop it with SIGTERM, as systemd and Kubernetes do, and [`Spawned::finish`].
    pub fn terminate(self) -> (i32, String) {
        // SAFETY: kill(2) on our own child, which `self` has not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.finish()
    }

    /// Wait for exit; returns the code and the rest of stderr.
    pub fn finish(mut self) -> (i32, String) {
        let status = self.child.wait().unwrap();
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest);
        (status.code().unwrap_or(-1), self.seen.join("\n"))
    }
}

/// Approve a device code as `login` in the headless browser.
pub fn approve_device(op: &Op, user_code: &str, login: &str) {
    let out = Command::new(testbed().join("op-browser.sh"))
        .args(["device", op.issuer(), user_code, login])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "device approval failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Complete a browser login for `auth_url` as `login`, delivering the redirect.
pub fn browser_login(auth_url: &str, login: &str) {
    let out = Command::new(testbed().join("op-browser.sh"))
        .args(["login", auth_url, login, "--deliver"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browser login failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Decode a JWT's claims without checking anything (test inspection only).
pub fn claims(token: &str) -> serde_json::Value {
    jwt_part(token, 1)
}

/// A JWT's header.
pub fn header(token: &str) -> serde_json::Value {
    jwt_part(token, 0)
}

fn jwt_part(token: &str, n: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.trim().split('.').nth(n).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `credkeeper login` through the device flow, approved headlessly; returns its stderr.
pub fn device_login(user: &User, op: &Op, client_id: &str, extra: &[&str]) -> String {
    let mut cmd = user.cmd();
    cmd.args(["login", "--issuer", op.issuer(), "--client-id", client_id])
        .args(extra);
    let mut login = Spawned::start(cmd);
    let code = login.wait_for("enter the code:");
    approve_device(op, &code, "alice");
    let (status, stderr) = login.finish();
    assert_eq!(status, 0, "login failed:\n{stderr}");
    stderr
}

/// A running `credkeeper serve`, stopped with SIGTERM when dropped.
pub struct Broker {
    pub child: Option<Child>,
    pub url: String,
    pub state: PathBuf,
    pub stdout_first_line: String,
    /// What it wrote on stderr before it listened.
    pub startup: Vec<String>,
    lines: mpsc::Receiver<String>,
}

impl Broker {
    /// `credkeeper serve` with `args` for `user`, on a free port, state in `state`.
    pub fn start(user: &User, state: &Path, args: &[&str]) -> Broker {
        Broker::start_cmd(user.cmd(), state, args)
    }

    /// The same, from a prepared command (extra environment, e.g. a Kerberos realm).
    pub fn start_cmd(mut cmd: Command, state: &Path, args: &[&str]) -> Broker {
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn credkeeper serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        let url = loop {
            let line = lines
                .recv_timeout(Duration::from_secs(30))
                .unwrap_or_else(|_| panic!("broker did not start: {seen:?}"));
            if let Some(rest) = line.strip_prefix("credkeeper broker listening on ") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
            seen.push(line);
        };
        let stdout_first_line = if args.contains(&"--dev") {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim().to_string()
        } else {
            String::new()
        };
        Broker {
            child: Some(child),
            url,
            state: state.to_path_buf(),
            stdout_first_line,
            startup: seen,
            lines,
        }
    }

    /// SIGTERM, then wait; returns the exit code and what it wrote on stderr since start.
    pub fn stop(&mut self) -> (i32, String) {
        let Some(mut child) = self.child.take() else {
            return (0, String::new());
        };
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status.code().unwrap_or(-1), rest.join("\n"))
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn http(
        &self,
        method: &str,
        path: &str,
        auth: Option<(&str, &str)>,
        body: Option<&str>,
    ) -> (u16, String) {
        http_at(&self.url, method, path, auth, body)
    }
}

/// One request with curl to `base` + `path`; the status (0 when none came) and the body.
pub fn http_at(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("{base}{path}"));
    if let Some((u, p)) = auth {
        cmd.arg("-u").arg(format!("{u}:{p}"));
    }
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The python a testbed setup script (`setup-python.sh`, `setup-cri.sh`) made ready: the
/// last line it prints.
pub fn testbed_python(setup: &str) -> PathBuf {
    let out = Command::new(testbed().join(setup)).output().unwrap();
    assert!(
        out.status.success(),
        "{setup} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    )
}

/// The testbed's Python with the SciTokens reference library (installed on first use).
pub fn scitokens_python() -> PathBuf {
    testbed_python("setup-python.sh")
}

/// Give each of `robots` (of the broker config at `config`) a secret in `state`, written
/// to `<home>/<robot>.secret`.
pub fn robot_secrets(user: &User, config: &Path, state: &Path, robots: &[&str]) {
    for robot in robots {
        user.run(&[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "robot-secret",
            robot,
            "-o",
            user.path(&format!("{robot}.secret")).to_str().unwrap(),
        ])
        .ok();
    }
}

/// A testbed peer: `tests/testbed/start-<name>.sh STATE` starts it and writes
/// `STATE/<name>.env`; `stop-<name>.sh STATE` stops it when this is dropped.
pub struct Peer {
    pub state: tempfile::TempDir,
    pub env: HashMap<String, String>,
    name: &'static str,
    stop_args: Vec<&'static str>,
}

/// A `KEY=value` env file (values may be single-quoted).
pub fn env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect()
}

impl Peer {
    pub fn start(name: &'static str, env: &[(&str, &str)], stop_args: &[&'static str]) -> Peer {
        let state = tempfile::tempdir().unwrap();
        let out = Command::new(testbed().join(format!("start-{name}.sh")))
            .arg(state.path())
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("start-{name}.sh: {e}"));
        assert!(
            out.status.success(),
            "start-{name}.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = env_file(&state.path().join(format!("{name}.env")));
        Peer {
            state,
            env,
            name,
            stop_args: stop_args.to_vec(),
        }
    }

    pub fn get(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} not in {}.env", self.name))
    }

    pub fn dir(&self) -> &Path {
        self.state.path()
    }

    pub fn stop(&self) {
        let _ = Command::new(testbed().join(format!("stop-{}.sh", self.name)))
            .arg(self.state.path())
            .args(&self.stop_args)
            .output();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running MIT KDC with its own realm (`TEST.REALM`), robot and service keytabs;
/// stopped when dropped.
pub struct Kdc(Peer);

impl std::ops::Deref for Kdc {
    type Target = Peer;
    fn deref(&self) -> &Peer {
        &self.0
    }
}

impl Kdc {
    pub fn start() -> Kdc {
        Kdc(Peer::start("kdc", &[], &[]))
    }

    /// This realm's client environment: its krb5.conf, a replay cache directory, and a
    /// credential cache of the test's own (never the machine's default).
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("KRB5_CONFIG", self.get("KRB5_CONFIG"))
            .env("KRB5RCACHEDIR", self.get("KRB5RCACHEDIR"))
            .env(
                "KRB5CCNAME",
                format!("FILE:{}/ccache-unused", self.dir().display()),
            );
    }

    /// Run `kadmin` as the realm's administrator (through kadmind).
    pub fn kadmin(&self, query: &str) {
        let mut cmd = Command::new("kadmin");
        self.apply(&mut cmd);
        let out = cmd
            .args([
                "-p",
                self.get("KRB5_ADMIN_PRINCIPAL"),
                "-w",
                self.get("KRB5_ADMIN_PASSWORD"),
            ])
            .args(["-q", query])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kadmin {query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A test CA and a server certificate for localhost and 127.0.0.1, made with openssl:
/// (CA PEM, certificate, key).
pub fn test_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |script: &str| {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
    };
    sh(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=credkeeper-test-ca",
    );
    sh(
        "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr -subj /CN=localhost",
    );
    sh(
        "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext && openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// The last line of an audit log, parsed.
pub fn last_audit(state: &Path) -> serde_json::Value {
    audit_lines(state).pop().unwrap_or(serde_json::Value::Null)
}

/// Every line of the broker's audit log in `state`, oldest first.
pub fn audit_lines(state: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Private registries (CNCF distribution 2.8.2, `tests/testbed/start-registry.sh`) with the
/// test image pushed.
pub struct Registry;

impl Registry {
    pub fn start() -> Peer {
        Registry::start_with(&[])
    }

    /// With `REG_*` settings (`REG_AUTH=token`, ...).
    pub fn start_with(env: &[(&str, &str)]) -> Peer {
        Peer::start("registry", env, &[])
    }
}

/// No file under `dir`, at any depth, holds `secret` (state directories, logs, sockets'
/// leftovers: whatever a process could have written).
#[track_caller]
pub fn assert_no_file_holds(dir: &Path, secret: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            assert_no_file_holds(&path, secret);
        } else if meta.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds the secret",
                path.display()
            );
        }
    }
}
