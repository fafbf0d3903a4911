//! The other testbed peers: MIT KDC, registry, test CA, the testbed's Python venvs.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

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
