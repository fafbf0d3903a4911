//! The `credkeeper` binary run as an isolated user: one-shot runs and background ones.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
