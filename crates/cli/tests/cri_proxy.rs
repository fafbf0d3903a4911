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

/// `credkeeper registry cri-proxy` listening on `<home>/proxy.sock` in front of
/// `upstream`, started: (the process, the socket, its endpoint).
fn start_proxy(
    user: &User,
    upstream: &str,
    verbosity: &str,
) -> (Spawned, std::path::PathBuf, String) {
    let sock = user.path("proxy.sock");
    let endpoint = format!("unix://{}", sock.display());
    let mut cmd = user.cmd();
    cmd.args([
        "registry",
        "cri-proxy",
        "--listen",
        &endpoint,
        "--upstream",
        upstream,
        verbosity,
    ]);
    let mut proxy = Spawned::start(cmd);
    proxy.wait_for("credkeeper cri-proxy listening on");
    (proxy, sock, endpoint)
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
    let (proxy, sock, endpoint) = start_proxy(&user, &direct, "-v");
    let keychain = user.path("proxy.sock.keychain");
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

/// HTTP/2 frames as (type, flags, stream, payload) from `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        if bytes.len() < 9 + len {
            break;
        }
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

#[test]
fn a_grpc_c_core_client_naming_the_socket_as_authority_is_served_and_resets_are_logged() {
    let containerd = Peer::start("containerd", &[], &["--purge"]);
    let user = User::new();
    let direct = containerd.get("CONTAINERD_ENDPOINT").to_string();
    let (proxy, sock, _) = start_proxy(&user, &direct, "-vv");

    // grpcio's own default :authority for a unix target: the socket's path, percent-encoded
    // (`tmp%2F…%2Fproxy.sock`), which is no URI authority.
    let python = testbed_python("setup-cri.sh");
    let script = r#"
import sys, grpc
sys.path.insert(0, sys.argv[1])
import v1_pb2, v1_pb2_grpc
channel = grpc.insecure_channel("unix://" + sys.argv[2], options=[("grpc.enable_http_proxy", 0)])
print(v1_pb2_grpc.RuntimeServiceStub(channel).Version(v1_pb2.VersionRequest(), timeout=20).runtime_name)
"#;
    let mut client = Command::new(python);
    client
        .arg("-I")
        .arg("-c")
        .arg(script)
        .arg(testbed().join(".cache/cri-py"))
        .arg(&sock);
    let version = Run::from(client.output().unwrap()).ok();
    assert_eq!(version.stdout.trim(), "containerd");

    // A request the HTTP/2 server resets (no :scheme): the reset is logged with its reason.
    use std::io::{Read, Write};
    let mut raw = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":path", "/runtime.v1.RuntimeService/Version"),
    ] {
        block.push(0);
        block.push(name.len() as u8);
        block.extend(name.as_bytes());
        block.push(value.len() as u8);
        block.extend(value.as_bytes());
    }
    let mut request = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    request.extend([0, 0, 0, 4, 0, 0, 0, 0, 0]);
    request.extend(&(block.len() as u32).to_be_bytes()[1..]);
    request.extend([1, 0x5, 0, 0, 0, 1]);
    request.extend(&block);
    raw.write_all(&request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let reset = loop {
        let n = raw.read(&mut buf).unwrap_or(0);
        assert!(n > 0, "no RST_STREAM: {got:?}");
        got.extend(&buf[..n]);
        if let Some(f) = frames(&got).into_iter().find(|f| f.0 == 3) {
            break f;
        }
    };
    assert_eq!(reset.2, 1);
    assert_eq!(reset.3, 1u32.to_be_bytes(), "PROTOCOL_ERROR");
    drop(raw);

    let (code, log) = proxy.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains(":authority") && log.contains("proxy.sock"),
        "the rewritten authority is logged at debug: {log}"
    );
    assert!(
        log.contains("reset") && log.contains("PROTOCOL_ERROR"),
        "{log}"
    );
}
