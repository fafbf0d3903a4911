//! `credkeeper registry cri-proxy` between a CRI client playing kubelet (`cri.py`) and a
//! real containerd 1.6 with its CRI plugin (`tests/testbed/start-containerd.sh`), pulling
//! from an authenticated registry: every call passes through unchanged, errors included,
//! and the pull's credential is then served by the helper — from memory only.

mod common;
use common::*;
use std::process::{Command, Stdio};

/// `cri.py -e ENDPOINT ARGS…`, the password (when any) through CRI_PASSWORD.
fn cri(endpoint: &str, args: &[&str], password: Option<&str>) -> Run {
    let mut cmd = Command::new(testbed().join("cri.py"));
    cmd.args(["-e", endpoint]).args(args);
    if let Some(p) = password {
        cmd.env("CRI_PASSWORD", p);
    }
    Run::from(cmd.output().unwrap())
}

fn helper_get(user: &User, keychain: &std::path::Path, host: &str) -> Run {
    let bin = user.path("bin");
    let helper = bin.join("docker-credential-credkeeper");
    if !helper.exists() {
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_credkeeper"), &helper).unwrap();
    }
    let mut cmd = Command::new(helper);
    user.hermetic(&mut cmd);
    let mut child = cmd
        .arg("get")
        .env("CREDKEEPER_CRI_KEYCHAIN", keychain)
        .env("CREDKEEPER_STATE_DIR", user.path("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(host.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
}

#[test]
fn the_cri_proxy_passes_every_call_through_and_offers_the_pulls_credential_from_memory() {
    let registry = Registry::start();
    let containerd = Peer::start("containerd", &[], &["--purge"]);
    let user = User::new();
    let image = registry.get("REGISTRY_IMAGE").to_string();
    let host = registry.get("REGISTRY_HOST").to_string();
    let (login, password) = (
        registry.get("REGISTRY_USER"),
        registry.get("REGISTRY_PASSWORD"),
    );
    let direct = containerd.get("CONTAINERD_ENDPOINT").to_string();
    let sock = user.path("proxy.sock");
    let endpoint = format!("unix://{}", sock.display());
    let keychain = user.path("proxy.sock.keychain");

    let mut cmd = user.cmd();
    cmd.args([
        "registry",
        "cri-proxy",
        "--listen",
        &endpoint,
        "--upstream",
        &direct,
        "-v",
    ]);
    let mut proxy = Spawned::start(cmd);
    proxy.wait_for("credkeeper cri-proxy listening on");
    use std::os::unix::fs::PermissionsExt;
    for s in [&sock, &keychain] {
        let mode = std::fs::metadata(s).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", s.display());
    }

    // The RuntimeService passes through.
    let version: serde_json::Value =
        serde_json::from_str(&cri(&endpoint, &["version"], None).ok().stdout).unwrap();
    assert_eq!(version["runtime_name"], "containerd");

    // containerd's error for a pull without credentials reaches the client unchanged.
    let refused_direct = cri(&direct, &["pull", &image], None);
    let refused = cri(&endpoint, &["pull", &image], None);
    assert_eq!(refused.code, 1);
    assert_eq!(
        refused.stderr, refused_direct.stderr,
        "same status code and message"
    );
    assert!(
        refused.stderr.contains("401 Unauthorized"),
        "{}",
        refused.stderr
    );
    let none = helper_get(&user, &keychain, &host);
    assert_eq!(none.code, 1);
    assert_eq!(
        none.stdout.trim(),
        "credentials not found in native keychain",
        "nothing kept from a refused pull"
    );

    // kubelet's pull with the secret's credential: through, and kept.
    let pulled = cri(&endpoint, &["pull", &image, "-u", login], Some(password)).ok();
    assert!(pulled.stdout.starts_with("sha256:"), "{}", pulled.stdout);
    let found = helper_get(&user, &keychain, &host).ok();
    let answer: serde_json::Value = serde_json::from_str(&found.stdout).unwrap();
    assert_eq!(answer["Username"], login);
    assert_eq!(answer["Secret"], password);
    let status: serde_json::Value =
        serde_json::from_str(&cri(&endpoint, &["status", &image], None).ok().stdout).unwrap();
    assert!(status.to_string().contains("test/hello"), "{status}");

    // A wrong password fails as containerd says, and does not replace the good one.
    let wrong = cri(
        &endpoint,
        &["pull", &image, "-u", login],
        Some("not-the-password"),
    );
    assert_eq!(wrong.code, 1);
    let still: serde_json::Value =
        serde_json::from_str(&helper_get(&user, &keychain, &host).ok().stdout).unwrap();
    assert_eq!(still["Secret"], password);

    // RemoveImage forgets it.
    cri(&endpoint, &["rm", &image], None).ok();
    let gone = helper_get(&user, &keychain, &host);
    assert_eq!(gone.code, 1);
    assert_eq!(
        gone.stdout.trim(),
        "credentials not found in native keychain"
    );

    // Memory only: not in the proxy's log, not in any file it could have written.
    let (code, log) = proxy.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("pull credential kept"), "{log}");
    assert!(!log.contains(password), "the proxy logged the password");
    assert!(
        !sock.exists() && !keychain.exists(),
        "sockets removed on stop"
    );
    assert_no_file_holds(user.home.path(), password);
}
