//! `docker-credential-credkeeper` as skopeo really uses it: a private registry (CNCF
//! distribution 2.8.2 with htpasswd auth, `tests/testbed/start-registry.sh`) that skopeo can
//! inspect only with the credential credkeeper holds, found through `credHelpers`.

mod common;
use common::*;
use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn skopeo_pulls_with_the_credential_credkeeper_holds() {
    let reg = Registry::start();
    let user = User::new();
    let host = reg.get("REGISTRY_HOST");
    let bin = user.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_credkeeper"),
        bin.join("docker-credential-credkeeper"),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let state = user.path("state");

    // `docker login`'s half: store the credential through the helper protocol.
    let mut store = Command::new(bin.join("docker-credential-credkeeper"))
        .arg("store")
        .env("CREDKEEPER_STATE_DIR", &state)
        .env("HOME", user.home.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let request = serde_json::json!({
        "ServerURL": host,
        "Username": reg.get("REGISTRY_USER"),
        "Secret": reg.get("REGISTRY_PASSWORD"),
    });
    store
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{request}\n").as_bytes())
        .unwrap();
    assert!(store.wait().unwrap().success());

    let auth_file = user.path("auth.json");
    std::fs::write(
        &auth_file,
        serde_json::json!({"credHelpers": {host: "credkeeper"}}).to_string(),
    )
    .unwrap();
    let skopeo = |image: &str, auth: &std::path::Path| {
        Command::new("skopeo")
            .args([
                "--policy",
                reg.get("REGISTRY_SKOPEO_POLICY"),
                "inspect",
                "--tls-verify=false",
            ])
            .arg(format!("docker://{image}"))
            .env("PATH", &path)
            .env("HOME", user.home.path())
            .env("REGISTRY_AUTH_FILE", auth)
            .env("CREDKEEPER_STATE_DIR", &state)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    };
    let ok = skopeo(reg.get("REGISTRY_IMAGE"), &auth_file);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(inspected["Digest"], reg.get("REGISTRY_IMAGE_DIGEST"));

    // A host credkeeper does not know: "not found", so skopeo goes on without credentials
    // (and the registry refuses it) instead of failing on the helper.
    let other = user.path("other.json");
    let unknown_host = format!("127.0.0.1:{}", reg.get("REGISTRY_PORT"));
    std::fs::write(
        &other,
        serde_json::json!({"credHelpers": {unknown_host.clone(): "credkeeper"}}).to_string(),
    )
    .unwrap();
    let erase = Command::new(bin.join("docker-credential-credkeeper"))
        .arg("erase")
        .env("CREDKEEPER_STATE_DIR", &state)
        .env("HOME", user.home.path())
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(host.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(erase.success());
    let refused = skopeo(reg.get("REGISTRY_IMAGE"), &other);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("authentication required"), "{stderr}");
    assert!(
        !stderr.contains("error getting credentials"),
        "not-found must not be a helper error: {stderr}"
    );
}
