//! The Kubernetes API keychain's list and watch calls against a **fake** API server that
//! replays recorded responses (no kube-apiserver can run here; see the README): the
//! requests it makes (path, field selector, bearer token, resource version) and what it
//! does with the answers.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use credkeeper_registry::kube::{KubeApi, Kubeconfig};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

fn secret(ns: &str, name: &str, host: &str, user: &str, rv: u32) -> serde_json::Value {
    let config = serde_json::json!({"auths": {host: {"auth": STANDARD.encode(format!("{user}:pw-{user}"))}}});
    serde_json::json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"namespace": ns, "name": name, "resourceVersion": rv.to_string()},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": STANDARD.encode(config.to_string())},
    })
}

/// Serves one list answer, then one watch stream of `events` (one JSON per line, sent in
/// separate chunks), and records every request line and Authorization header.
fn fake_api(
    list: serde_json::Value,
    events: Vec<serde_json::Value>,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            log.lock()
                .unwrap()
                .push(format!("{} | {auth}", request.trim()));
            if request.contains("watch=true") {
                write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").unwrap();
                for e in &events {
                    let line = format!("{e}\n");
                    write!(stream, "{:x}\r\n{line}\r\n", line.len()).unwrap();
                    stream.flush().unwrap();
                }
                write!(stream, "0\r\n\r\n").unwrap();
            } else {
                let body = list.to_string();
                write!(stream, "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len()).unwrap();
            }
        }
    });
    (url, seen)
}

#[tokio::test]
async fn list_then_watch_keeps_the_secrets_a_recorded_api_server_sends() {
    let list = serde_json::json!({
        "kind": "SecretList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "500"},
        "items": [secret("ci", "pull", "registry.example:5000", "first", 400)],
    });
    let events = vec![
        serde_json::json!({"type": "ADDED", "object": secret("a-team", "pull", "registry.example:5000", "second", 501)}),
        serde_json::json!({"type": "MODIFIED", "object": secret("ci", "pull", "other.example", "first", 502)}),
        serde_json::json!({"type": "BOOKMARK", "object": {"kind": "Secret", "metadata": {"resourceVersion": "510"}}}),
    ];
    let (url, seen) = fake_api(list, events);
    let config = Kubeconfig {
        server: url,
        ca_pem: None,
        token: Some(credkeeper_core::Secret::new("sa-token")),
        client_identity_pem: None,
        insecure_skip_tls_verify: false,
    };
    let api = KubeApi::new(config).unwrap();
    let mut secrets = api.list().await.unwrap();
    assert_eq!(
        secrets.lookup("registry.example:5000").unwrap().0.username,
        "first"
    );
    api.watch(&mut secrets).await.unwrap();
    // The added secret sorts first (namespace a-team < ci); the modified one moved hosts.
    let (cred, origin) = secrets.lookup("registry.example:5000").unwrap();
    assert_eq!(
        (cred.username.as_str(), origin.as_str()),
        ("second", "a-team/pull")
    );
    assert_eq!(secrets.lookup("other.example").unwrap().0.username, "first");
    assert_eq!(secrets.resource_version, "510");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen[0].starts_with(
            "GET /api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson HTTP/1.1"
        ),
        "{seen:?}"
    );
    assert!(
        seen[1].contains("&watch=true&allowWatchBookmarks=true&resourceVersion=500 "),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|l| l.ends_with("| authorization: Bearer sa-token")),
        "{seen:?}"
    );
}
