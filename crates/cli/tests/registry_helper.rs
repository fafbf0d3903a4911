//! `docker-credential-credkeeper`: the credential-helper protocol exactly as docker and
//! skopeo use it, and the keychain's order of sources.

mod common;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The credkeeper binary under the helper's name, in a directory for PATH.
fn helper_bin(user: &User) -> PathBuf {
    let bin = user.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let link = bin.join("docker-credential-credkeeper");
    if !link.exists() {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_credkeeper"), &link).unwrap();
    }
    bin
}

fn path_with(dirs: &[&Path]) -> String {
    let mut parts: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    parts.push(std::env::var("PATH").unwrap_or_default());
    parts.join(":")
}

fn helper(user: &User, args: &[&str], stdin: &[u8]) -> Run {
    let bin = helper_bin(user);
    let mut cmd = user.cmd();
    cmd.env("PATH", path_with(&[&bin]))
        .env("CREDKEEPER_STATE_DIR", user.path("state"));
    let mut child = Command::new(bin.join("docker-credential-credkeeper"))
        .args(args)
        .envs(
            cmd.get_envs()
                .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))),
        )
        .env("HOME", user.home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    Run::from(out)
}

#[test]
fn the_protocol_get_store_list_erase_version() {
    let user = User::new();
    let not_found = helper(&user, &["get"], b"127.0.0.1:5000");
    assert_eq!(not_found.code, 1);
    assert_eq!(
        not_found.stdout.trim(),
        "credentials not found in native keychain"
    );
    assert!(!user.path("state").exists(), "a get creates no state");

    helper(&user, &["store"], b"{\"ServerURL\":\"http://127.0.0.1:5000/v2/\",\"Username\":\"tester\",\"Secret\":\"s3cret-value\"}\n").ok();
    let got = helper(&user, &["get"], b"127.0.0.1:5000").ok();
    let v: serde_json::Value = serde_json::from_str(&got.stdout).unwrap();
    assert_eq!(v["ServerURL"], "127.0.0.1:5000");
    assert_eq!(v["Username"], "tester");
    assert_eq!(v["Secret"], "s3cret-value");

    let listed = helper(&user, &["list"], b"").ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&listed.stdout).unwrap(),
        serde_json::json!({"127.0.0.1:5000": "tester"})
    );
    assert!(
        helper(&user, &["version"], b"")
            .ok()
            .stdout
            .starts_with("credkeeper ")
    );

    // Sealed at rest.
    for entry in std::fs::read_dir(user.path("state")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"s3cret-value"));
    }

    helper(&user, &["erase"], b"127.0.0.1:5000").ok();
    let again = helper(&user, &["erase"], b"127.0.0.1:5000");
    assert_eq!(
        (again.code, again.stdout.trim()),
        (1, "credentials not found in native keychain")
    );
}

#[test]
fn bad_requests_get_the_protocols_answers() {
    let user = User::new();
    let usage = "Usage: docker-credential-credkeeper <store|get|erase|list|version>";
    for args in [&["fetch"][..], &[][..], &["get", "extra"][..]] {
        let run = helper(&user, args, b"");
        assert_eq!((run.code, run.stdout.trim()), (1, usage), "{args:?}");
    }
    let run = helper(&user, &["get"], b"   \n");
    assert_eq!(
        (run.code, run.stdout.trim()),
        (1, "no credentials server URL")
    );
    let run = helper(
        &user,
        &["store"],
        b"{\"ServerURL\":\"r.io\",\"Secret\":\"x\"}",
    );
    assert_eq!(
        (run.code, run.stdout.trim()),
        (1, "no credentials username")
    );
    let run = helper(&user, &["store"], b"{not json");
    assert_eq!(run.code, 1);
    assert!(run.stdout.contains("not helper JSON"), "{}", run.stdout);
    let huge = vec![b'a'; 1 << 20];
    let run = helper(&user, &["get"], &huge);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.contains("larger than 65536 bytes"),
        "{}",
        run.stdout
    );
    let run = helper(
        &user,
        &["store"],
        b"{\"ServerURL\":\"r.io\",\"Username\":\"u\",\"Secret\":\"\xff\xfe\"}",
    );
    assert_eq!(run.code, 1);
}

fn write_json(path: &Path, value: serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, value.to_string()).unwrap();
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn the_keychain_order_is_stated_and_explained_without_secrets() {
    let user = User::new();
    let home = user.home.path();
    write_json(
        &home.join(".docker/config.json"),
        serde_json::json!({"auths": {"docker.example": {"auth": b64("dockeruser:docker-pass")}}}),
    );
    let auth_file = user.path("auth.json");
    write_json(
        &auth_file,
        serde_json::json!({"auths": {"docker.example": {"auth": b64("other:other-pass")}, "podman.example": {"auth": b64("pod:pod-pass")}}}),
    );
    let get = |target: &str| {
        Run::from(
            user.cmd()
                .args(["registry", "get", "--explain", target])
                .env("REGISTRY_AUTH_FILE", &auth_file)
                .output()
                .unwrap(),
        )
    };
    // The docker config comes first.
    let run = get("docker.example/team/app:1").ok();
    assert!(
        run.stdout.contains("\"Username\":\"dockeruser\""),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("docker config"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("docker-pass"),
        "--explain never shows a secret"
    );
    // Not in the docker config: the auth file answers.
    let run = get("podman.example").ok();
    assert!(run.stdout.contains("\"Username\":\"pod\""));
    assert!(
        run.stderr
            .contains(&format!("containers auth {}", auth_file.display())),
        "{}",
        run.stderr
    );
    // Nowhere: a clear failure, every source named.
    let run = get("nowhere.example");
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("no credential for nowhere.example"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing for nowhere.example"),
        "{}",
        run.stderr
    );
    // An explicit --user wins over everything.
    let run = get("docker.example");
    assert!(run.stdout.contains("dockeruser"));
    let run = Run::from(
        user.cmd()
            .args(["registry", "get", "docker.example", "--user", "me:mine"])
            .output()
            .unwrap(),
    )
    .ok();
    assert!(run.stdout.contains("\"Username\":\"me\""));
}

#[test]
fn a_malformed_config_is_reported_not_skipped() {
    let user = User::new();
    let home = user.home.path();
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(home.join(".docker/config.json"), "{\"auths\": {").unwrap();
    write_json(
        &home.join(".config/containers/auth.json"),
        serde_json::json!({"auths": {"r.io": {"auth": b64("u:p")}}}),
    );
    let run = Run::from(
        user.cmd()
            .args(["registry", "get", "r.io"])
            .output()
            .unwrap(),
    );
    run.fails(1, ".docker/config.json");
    let got = helper(&user, &["get"], b"r.io");
    assert_eq!(got.code, 1);
    assert!(
        got.stdout.contains(".docker/config.json"),
        "a broken source is a real error: {}",
        got.stdout
    );
}

#[test]
fn kubernetes_secret_volumes_are_read_through_their_atomic_switch() {
    let user = User::new();
    let vol = user.path("pull-secret");
    std::fs::create_dir_all(&vol).unwrap();
    // The kubelet's layout: ..data → ..<timestamp>/, key file → ..data/<key>.
    let version = |n: u32, pass: &str| {
        let d = vol.join(format!("..2026_11_24_{n}"));
        write_json(
            &d.join(".dockerconfigjson"),
            serde_json::json!({"auths": {"k8s.example": {"auth": b64(&format!("k8s:{pass}"))}}}),
        );
        d
    };
    let v1 = version(1, "first-password");
    let v2 = version(2, "second-password");
    std::os::unix::fs::symlink(v1.file_name().unwrap(), vol.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/.dockerconfigjson", vol.join(".dockerconfigjson")).unwrap();

    // Swap versions the way the kubelet does (new symlink renamed over ..data) while reading.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (vol, stop) = (vol.clone(), stop.clone());
        let names = [
            v1.file_name().unwrap().to_owned(),
            v2.file_name().unwrap().to_owned(),
        ];
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let tmp = vol.join("..data_tmp");
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(&names[i % 2], &tmp).unwrap();
                std::fs::rename(&tmp, vol.join("..data")).unwrap();
                i += 1;
            }
        })
    };
    for _ in 0..20 {
        let run = Run::from(
            user.cmd()
                .args(["registry", "get", "k8s.example"])
                .env("CREDKEEPER_REGISTRY_SECRET_DIRS", &vol)
                .output()
                .unwrap(),
        )
        .ok();
        assert!(
            run.stdout.contains("first-password") || run.stdout.contains("second-password"),
            "{}",
            run.stdout
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    swapper.join().unwrap();
}
