//! A real PostgreSQL 15 for tests, started by the testbed (tests/testbed/start-postgres.sh)
//! on loopback with TLS and a password; each test takes a database of its own. Shared by
//! the store's tests and the broker's (`#[path]`-included there).
#![allow(dead_code)]

use credkeeper_store::PostgresSettings;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

pub fn testbed() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/testbed")
}

pub struct Server {
    dir: tempfile::TempDir,
    env: HashMap<String, String>,
}

fn run(script: &str, args: &[&str]) {
    let out = Command::new(testbed().join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Server {
    /// The server the tests running now share; started on first use, stopped when the
    /// last of them drops it.
    pub fn shared() -> Arc<Server> {
        static SHARED: Mutex<Weak<Server>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(server) = shared.upgrade() {
            return server;
        }
        let server = Arc::new(Server::start());
        *shared = Arc::downgrade(&server);
        server
    }

    /// A server of one's own (for taking it down under a running broker).
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("pg");
        run("start-postgres.sh", &[state.to_str().unwrap()]);
        let text = std::fs::read_to_string(state.join("pg.env")).unwrap();
        let env = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Server { dir, env }
    }

    pub fn var(&self, name: &str) -> &str {
        self.env
            .get(name)
            .unwrap_or_else(|| panic!("pg.env has no {name}"))
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// A new empty database; its URL (no password in it).
    pub fn new_database(&self) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(
            "pg-newdb.sh",
            &[self.state().to_str().unwrap(), name.as_str()],
        );
        self.var("PG_URL")
            .replace("/credkeeper?", &format!("/{name}?"))
    }

    /// Settings for `url`, with the password file and CA the testbed made.
    pub fn settings(&self, url: &str, key_file: &Path) -> PostgresSettings {
        PostgresSettings {
            url: url.to_string(),
            password_file: Some(self.var("PG_PASSWORD_FILE").into()),
            ca_file: Some(self.var("PG_CA_FILE").into()),
            pool_size: 4,
            key_file: key_file.to_path_buf(),
        }
    }

    /// A broker's `[store]` section for the database at `url` (with the testbed's password
    /// file and CA) and the sealing key file `key_file`.
    pub fn store_section(&self, url: &str, key_file: &Path) -> String {
        format!(
            "[store]\nurl = \"{url}\"\npassword_file = \"{}\"\nca_file = \"{}\"\nkey_file = \"{}\"\n",
            self.var("PG_PASSWORD_FILE"),
            self.var("PG_CA_FILE"),
            key_file.display()
        )
    }

    /// Stop or start the server, keeping its data and port (pg-ctl.sh).
    pub fn ctl(&self, action: &str) {
        run("pg-ctl.sh", &[self.state().to_str().unwrap(), action]);
    }

    /// Everything in `url`'s database as pg_dump writes it (text).
    pub fn dump(&self, url: &str) -> Vec<u8> {
        let out = Command::new(Path::new(self.var("PG_BIN")).join("pg_dump"))
            .arg(
                url.replace("sslmode=verify-full", "sslmode=verify-full&sslrootcert=")
                    + self.var("PG_CA_FILE"),
            )
            .env("PGPASSFILE", self.var("PG_PASSFILE"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new(testbed().join("stop-postgres.sh"))
            .arg(self.state())
            .output();
    }
}
