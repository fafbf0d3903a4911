//! The Kubernetes API as a keychain source: `kubernetes.io/dockerconfigjson` Secrets in
//! all namespaces, listed and then watched (as SOCI's kubeconfig keychain does), kept in
//! memory, looked up in a deterministic order — by namespace, then name — where SOCI's
//! choice among several secrets for one host is random.
//!
//! [`Kubeconfig`] finds the API server and the credentials (`$KUBECONFIG`,
//! `~/.kube/config`, or the in-cluster service account); [`Secrets`] is the cache that a
//! list fills and each watch event updates; [`KubeApi`] speaks the two HTTP calls.

use crate::dockerconfig::{Answer, DockerConfig};
use crate::{Credential, host};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DATA_KEY: &str = ".dockerconfigjson";

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("Kubernetes API {url}: {message}")]
    Api { url: String, message: String },
    #[error("a Kubernetes API answer: {0}")]
    Malformed(String),
}

/// Where the API is and how to authenticate to it. No `Debug`: it holds the client's
/// private key and token.
#[derive(Clone)]
pub struct Kubeconfig {
    pub server: String,
    /// PEM CA bundle for the server's certificate.
    pub ca_pem: Option<Vec<u8>>,
    pub token: Option<credkeeper_core::Secret>,
    /// PEM client certificate and key (mutual TLS), concatenated.
    pub client_identity_pem: Option<Vec<u8>>,
    pub insecure_skip_tls_verify: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    current_context: String,
    #[serde(default)]
    contexts: Vec<Named<ContextSpec>>,
    #[serde(default)]
    clusters: Vec<Named<ClusterSpec>>,
    #[serde(default)]
    users: Vec<Named<UserSpec>>,
}

#[derive(Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "context", alias = "cluster", alias = "user")]
    spec: T,
}

#[derive(Deserialize)]
struct ContextSpec {
    cluster: String,
    #[serde(default)]
    user: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ClusterSpec {
    server: String,
    #[serde(default)]
    certificate_authority: Option<PathBuf>,
    #[serde(default)]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct UserSpec {
    #[serde(default)]
    token: Option<String>,
    #[serde(default, rename = "tokenFile")]
    token_file: Option<PathBuf>,
    #[serde(default)]
    client_certificate_data: Option<String>,
    #[serde(default)]
    client_key_data: Option<String>,
    #[serde(default)]
    client_certificate: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
}

impl Kubeconfig {
    /// `$KUBECONFIG` (its first file), else `~/.kube/config`, else the in-cluster
    /// service account; `None` when there is none of them.
    pub fn discover(home: Option<&Path>) -> Result<Option<Kubeconfig>, KubeError> {
        let from_env = std::env::var_os("KUBECONFIG")
            .and_then(|v| std::env::split_paths(&v).next())
            .filter(|p| !p.as_os_str().is_empty());
        let path = from_env.or_else(|| home.map(|h| h.join(".kube/config")));
        if let Some(p) = path.filter(|p| p.exists()) {
            return Kubeconfig::load(&p).map(Some);
        }
        Ok(Kubeconfig::in_cluster())
    }

    /// The service account kubelet mounts into every pod.
    pub fn in_cluster() -> Option<Kubeconfig> {
        let dir = Path::new("/var/run/secrets/kubernetes.io/serviceaccount");
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let token = std::fs::read_to_string(dir.join("token")).ok()?;
        Some(Kubeconfig {
            server: format!("https://{host}:{port}"),
            ca_pem: std::fs::read(dir.join("ca.crt")).ok(),
            token: Some(credkeeper_core::Secret::new(token.trim())),
            client_identity_pem: None,
            insecure_skip_tls_verify: false,
        })
    }

    /// A kubeconfig file's current context. Paths in it are relative to the file.
    pub fn load(path: &Path) -> Result<Kubeconfig, KubeError> {
        let fail = |message: String| KubeError::Kubeconfig {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
        let file: FileConfig = serde_norway::from_str(&text).map_err(|e| fail(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let relative = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let read = |p: &Path| {
            std::fs::read(relative(p)).map_err(|e| fail(format!("{}: {e}", p.display())))
        };
        let decode = |what: &str, b64: &str| {
            STANDARD
                .decode(b64.trim())
                .map_err(|_| fail(format!("{what} is not base64")))
        };
        let context = file
            .contexts
            .iter()
            .find(|c| c.name == file.current_context)
            .ok_or_else(|| {
                fail(format!(
                    "no context `{}` (current-context)",
                    file.current_context
                ))
            })?;
        let cluster = file
            .clusters
            .iter()
            .find(|c| c.name == context.spec.cluster)
            .ok_or_else(|| fail(format!("no cluster `{}`", context.spec.cluster)))?;
        let empty = UserSpec::default();
        let user = file
            .users
            .iter()
            .find(|u| u.name == context.spec.user)
            .map(|u| &u.spec)
            .unwrap_or(&empty);
        let ca_pem = match (
            &cluster.spec.certificate_authority_data,
            &cluster.spec.certificate_authority,
        ) {
            (Some(data), _) => Some(decode("certificate-authority-data", data)?),
            (None, Some(p)) => Some(read(p)?),
            (None, None) => None,
        };
        let token = match (&user.token, &user.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(p)) => Some(String::from_utf8_lossy(&read(p)?).trim().to_string()),
            _ => None,
        };
        let cert = match (&user.client_certificate_data, &user.client_certificate) {
            (Some(d), _) => Some(decode("client-certificate-data", d)?),
            (None, Some(p)) => Some(read(p)?),
            _ => None,
        };
        let key = match (&user.client_key_data, &user.client_key) {
            (Some(d), _) => Some(decode("client-key-data", d)?),
            (None, Some(p)) => Some(read(p)?),
            _ => None,
        };
        let client_identity_pem = match (cert, key) {
            (Some(mut c), Some(k)) => {
                c.push(b'\n');
                c.extend(k);
                Some(c)
            }
            (None, None) => None,
            _ => {
                return Err(fail(
                    "a client certificate needs its key, and the other way round".into(),
                ));
            }
        };
        Ok(Kubeconfig {
            server: cluster.spec.server.trim_end_matches('/').to_string(),
            ca_pem,
            token: token.map(credkeeper_core::Secret::new),
            client_identity_pem,
            insecure_skip_tls_verify: cluster.spec.insecure_skip_tls_verify,
        })
    }
}

/// The docker configs of all `dockerconfigjson` Secrets, by (namespace, name).
#[derive(Default)]
pub struct Secrets {
    configs: BTreeMap<(String, String), DockerConfig>,
    /// Where a watch resumes.
    pub resource_version: String,
    /// Secrets whose `.dockerconfigjson` could not be read, with why (they are skipped).
    pub unreadable: BTreeMap<(String, String), Unreadable>,
}

/// Why a `dockerconfigjson` Secret is skipped. Never quotes its data.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("no .dockerconfigjson")]
    NoDockerConfigJson,
    #[error(".dockerconfigjson is not base64")]
    NotBase64,
    #[error(".dockerconfigjson is {0}")]
    Config(#[from] crate::dockerconfig::ParseError),
}

fn meta(object: &Value) -> Option<(String, String)> {
    let m = object.get("metadata")?;
    Some((
        m.get("namespace")?.as_str()?.to_string(),
        m.get("name")?.as_str()?.to_string(),
    ))
}

impl Secrets {
    /// From a `SecretList` (the answer of a list call).
    pub fn from_list(list: &Value) -> Result<Secrets, KubeError> {
        let mut secrets = Secrets {
            resource_version: list
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            ..Default::default()
        };
        let items = list
            .get("items")
            .and_then(Value::as_array)
            .ok_or_else(|| KubeError::Malformed("a SecretList without items".into()))?;
        for item in items {
            secrets.upsert(item);
        }
        Ok(secrets)
    }

    fn upsert(&mut self, secret: &Value) {
        let Some(key) = meta(secret) else { return };
        if secret.get("type").and_then(Value::as_str) != Some(SECRET_TYPE) {
            self.configs.remove(&key);
            return;
        }
        let parsed = secret
            .pointer(&format!("/data/{}", DATA_KEY.replace('/', "~1")))
            .and_then(Value::as_str)
            .ok_or(Unreadable::NoDockerConfigJson)
            .and_then(|b64| STANDARD.decode(b64).map_err(|_| Unreadable::NotBase64))
            .and_then(|bytes| Ok(DockerConfig::parse(&bytes)?));
        match parsed {
            Ok(config) => {
                self.unreadable.remove(&key);
                self.configs.insert(key, config);
            }
            Err(why) => {
                self.configs.remove(&key);
                self.unreadable.insert(key, why);
            }
        }
    }

    /// Apply one watch event (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`; `ERROR` is
    /// returned, e.g. 410 Gone: the caller lists again).
    pub fn apply(&mut self, event: &Value) -> Result<(), KubeError> {
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let object = event.get("object").unwrap_or(&Value::Null);
        if let Some(rv) = object
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
        {
            self.resource_version = rv.to_string();
        }
        match kind {
            "ADDED" | "MODIFIED" => self.upsert(object),
            "DELETED" => {
                if let Some(key) = meta(object) {
                    self.configs.remove(&key);
                    self.unreadable.remove(&key);
                }
            }
            "BOOKMARK" => {}
            "ERROR" => {
                return Err(KubeError::Malformed(format!(
                    "watch error: {}",
                    object
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("unknown")
                )));
            }
            other => return Err(KubeError::Malformed(format!("watch event type `{other}`"))),
        }
        Ok(())
    }

    /// The first secret, by namespace then name, holding a credential for `server`;
    /// with the secret's `namespace/name`.
    pub fn lookup(&self, server: &str) -> Option<(Credential, String)> {
        let wanted = host::normalise(server);
        self.configs.iter().find_map(|((ns, name), config)| {
            let origin = format!("secret {ns}/{name}");
            match config.lookup(&wanted, Path::new(&origin)) {
                Ok(Answer::Credential(c)) => Some((c, format!("{ns}/{name}"))),
                _ => None,
            }
        })
    }

    pub fn len(&self) -> usize {
        self.configs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }
}

/// The two calls: list the secrets, then watch them from the list's resource version.
pub struct KubeApi {
    config: Kubeconfig,
    client: reqwest::Client,
}

impl KubeApi {
    pub fn new(config: Kubeconfig) -> Result<KubeApi, KubeError> {
        let fail = |message: String| KubeError::Api {
            url: config.server.clone(),
            message,
        };
        let mut builder =
            reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
        if let Some(pem) = &config.ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|e| fail(e.to_string()))?;
            builder = builder.tls_certs_only(certs);
        }
        if let Some(pem) = &config.client_identity_pem {
            builder = builder
                .identity(reqwest::Identity::from_pem(pem).map_err(|e| fail(e.to_string()))?);
        }
        if config.insecure_skip_tls_verify {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder.build().map_err(|e| fail(e.to_string()))?;
        Ok(KubeApi { config, client })
    }

    fn url(&self, query: &str) -> String {
        format!(
            "{}/api/v1/secrets?fieldSelector=type%3D{}{query}",
            self.config.server,
            SECRET_TYPE.replace('/', "%2F")
        )
    }

    fn request(&self, url: &str) -> reqwest::RequestBuilder {
        let mut r = self.client.get(url).header("accept", "application/json");
        if let Some(t) = &self.config.token {
            r = r.bearer_auth(t.expose());
        }
        r
    }

    async fn send(&self, url: &str) -> Result<reqwest::Response, KubeError> {
        let fail = |message: String| KubeError::Api {
            url: url.to_string(),
            message,
        };
        let response = self
            .request(url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body: Value = response.json().await.unwrap_or(Value::Null);
            let why = body.get("message").and_then(Value::as_str).unwrap_or("");
            return Err(fail(format!("HTTP {} {why}", status.as_u16())));
        }
        Ok(response)
    }

    /// List every `dockerconfigjson` Secret (all namespaces).
    pub async fn list(&self) -> Result<Secrets, KubeError> {
        let url = self.url("");
        let body: Value = self
            .send(&url)
            .await?
            .json()
            .await
            .map_err(|e| KubeError::Malformed(e.to_string()))?;
        Secrets::from_list(&body)
    }

    /// Watch from `secrets.resource_version`, applying each event, until the server ends
    /// the watch (then list again and watch again) or an event is an error.
    pub async fn watch(&self, secrets: &mut Secrets) -> Result<(), KubeError> {
        let from = secrets.resource_version.clone();
        self.watch_events(&from, |event| secrets.apply(event)).await
    }

    /// The same, handing each event to `on_event` (for a cache shared behind a lock).
    pub async fn watch_events(
        &self,
        resource_version: &str,
        mut on_event: impl FnMut(&Value) -> Result<(), KubeError>,
    ) -> Result<(), KubeError> {
        let url = self.url(&format!(
            "&watch=true&allowWatchBookmarks=true&resourceVersion={resource_version}"
        ));
        let mut response = self.send(&url).await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| KubeError::Api {
            url: url.clone(),
            message: e.to_string(),
        })? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let event: Value = serde_json::from_slice(&line)
                    .map_err(|e| KubeError::Malformed(e.to_string()))?;
                on_event(&event)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(ns: &str, name: &str, host: &str, user: &str, rv: &str) -> Value {
        let config =
            json!({"auths": {host: {"auth": STANDARD.encode(format!("{user}:pw-{user}"))}}});
        json!({
            "metadata": {"namespace": ns, "name": name, "resourceVersion": rv},
            "type": SECRET_TYPE,
            "data": {".dockerconfigjson": STANDARD.encode(config.to_string())},
        })
    }

    #[test]
    fn a_list_then_watch_events_keep_the_cache_and_the_choice_is_deterministic() {
        let list = json!({
            "kind": "SecretList",
            "metadata": {"resourceVersion": "100"},
            "items": [
                secret("team-b", "pull", "registry.example:5000", "b", "90"),
                secret("team-a", "pull", "registry.example:5000", "a", "91"),
                {"metadata": {"namespace": "x", "name": "broken"}, "type": SECRET_TYPE, "data": {".dockerconfigjson": "!!"}},
            ],
        });
        let mut s = Secrets::from_list(&list).unwrap();
        assert_eq!(s.resource_version, "100");
        assert_eq!(s.len(), 2);
        assert_eq!(s.unreadable.len(), 1);
        let why = &s.unreadable[&("x".to_string(), "broken".to_string())];
        assert!(matches!(why, Unreadable::NotBase64), "{why}");
        // Two secrets for one host: namespace order decides, every time.
        let (c, origin) = s.lookup("https://registry.example:5000/v2/").unwrap();
        assert_eq!((c.username.as_str(), origin.as_str()), ("a", "team-a/pull"));
        s.apply(&json!({"type": "DELETED", "object": secret("team-a", "pull", "registry.example:5000", "a", "101")}))
            .unwrap();
        assert_eq!(s.lookup("registry.example:5000").unwrap().0.username, "b");
        s.apply(&json!({"type": "MODIFIED", "object": secret("team-b", "pull", "other.example", "b2", "102")}))
            .unwrap();
        assert!(s.lookup("registry.example:5000").is_none());
        assert_eq!(
            s.lookup("other.example").unwrap().0.secret.expose(),
            "pw-b2"
        );
        s.apply(&json!({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "150"}}}))
            .unwrap();
        assert_eq!(s.resource_version, "150");
        let gone = s.apply(&json!({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}}));
        assert!(
            gone.unwrap_err()
                .to_string()
                .contains("too old resource version")
        );
    }

    #[test]
    fn a_kubeconfig_names_the_server_the_ca_and_the_token() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok-from-file\n").unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: ctx\ncontexts:\n- name: ctx\n  context:\n    cluster: c\n    user: u\n- name: other\n  context:\n    cluster: nope\nclusters:\n- name: c\n  cluster:\n    server: https://10.0.0.1:6443/\n    certificate-authority-data: {}\nusers:\n- name: u\n  user:\n    tokenFile: token\n",
                STANDARD.encode("-----BEGIN CERTIFICATE-----\n")
            ),
        )
        .unwrap();
        let k = Kubeconfig::load(&path).unwrap();
        assert_eq!(k.server, "https://10.0.0.1:6443");
        assert_eq!(k.token.unwrap().expose(), "tok-from-file");
        assert!(
            k.ca_pem
                .unwrap()
                .starts_with(b"-----BEGIN CERTIFICATE-----")
        );
        std::fs::write(&path, "current-context: missing\ncontexts: []\n").unwrap();
        let err = Kubeconfig::load(&path).err().unwrap().to_string();
        assert!(err.contains("no context `missing`"), "{err}");
    }
}
