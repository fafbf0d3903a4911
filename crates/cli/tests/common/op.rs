//! The test OpenID Provider (`oidc-provider` from npm, tests/testbed/start-op.sh) and the
//! headless browser (tests/testbed/op-browser.sh) that approves its logins.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

    /// The state directory start-op.sh wrote (`op.env`), for testbed scripts that take it.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
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
