//! A running `credkeeper serve`, requests to it, and its audit log.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

    /// [`Broker::http`] from the local address `source` (any of 127.0.0.0/8).
    pub fn http_from(&self, source: &str, method: &str, path: &str, body: &str) -> (u16, String) {
        curl(&self.url, method, path, None, Some(body), Some(source))
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
    curl(base, method, path, auth, body, None)
}

fn curl(
    base: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<&str>,
    source: Option<&str>,
) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .arg(format!("{base}{path}"));
    if let Some(address) = source {
        cmd.args(["--interface", address]);
    }
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
