//! Registry host names as clients spell them, reduced to one key.

/// Docker Hub's legacy key, which docker and SOCI look up.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// The registry host of a server URL, config key or image reference:
/// `https://127.0.0.1:5000/v2/` → `127.0.0.1:5000`; `127.0.0.1:5000/test/hello:1` →
/// `127.0.0.1:5000`; `ubuntu`, `library/ubuntu`, `docker.io/x`, `index.docker.io` and
/// Docker Hub's legacy URL → `docker.io`.
pub fn normalise(input: &str) -> String {
    let s = input.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let first = s.split('/').next().unwrap_or("");
    let has_slash = s.contains('/');
    // An image without a registry part (`ubuntu`, `library/ubuntu:22.04`) is on Docker Hub;
    // a first component is a host when it has a dot, a port, or is localhost.
    let is_host = first.contains('.') || first.contains(':') || first == "localhost";
    let host = if is_host || (!has_slash && input.contains("://")) {
        first
    } else {
        "docker.io"
    };
    match host.to_ascii_lowercase().as_str() {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io".to_string(),
        h => h.to_string(),
    }
}

/// `127.0.0.1:5000/test/hello:1` → (`127.0.0.1:5000`, `test/hello`); Docker Hub's short
/// names get their `library/`.
pub fn reference(image: &str) -> (String, String) {
    // An image reference without `/` is a Docker Hub short name (`ubuntu:22.04`), never a
    // `host:port`.
    let registry = if image.contains('/') {
        normalise(image)
    } else {
        "docker.io".to_string()
    };
    let without_digest = image.split('@').next().unwrap_or(image);
    let mut path: Vec<&str> = without_digest.split('/').collect();
    let first_is_host = path.len() > 1
        && (path[0].contains('.') || path[0].contains(':') || path[0] == "localhost");
    if first_is_host {
        path.remove(0);
    }
    let mut repo = path.join("/");
    // A tag follows the last `:` of the last component.
    let slash = repo.rfind('/').map_or(0, |i| i + 1);
    if let Some(colon) = repo[slash..].rfind(':') {
        repo.truncate(slash + colon);
    }
    if registry == "docker.io" && !repo.contains('/') {
        repo = format!("library/{repo}");
    }
    (registry, repo)
}

/// The manifest an image reference names: its digest, else its tag, else `latest`
/// (`127.0.0.1:5000/test/hello:1` → `1`, `a/b@sha256:ab` → `sha256:ab`).
pub fn manifest(image: &str) -> String {
    if let Some((_, digest)) = image.rsplit_once('@') {
        return digest.to_string();
    }
    let last = image.rsplit('/').next().unwrap_or("");
    last.split_once(':')
        .map_or_else(|| "latest".to_string(), |(_, t)| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_name_a_digest_a_tag_or_latest() {
        assert_eq!(manifest("127.0.0.1:5000/test/hello:1"), "1");
        assert_eq!(manifest("registry.example/a/b/c@sha256:ab"), "sha256:ab");
        assert_eq!(manifest("ubuntu:22.04"), "22.04");
        assert_eq!(manifest("localhost:5000/app"), "latest");
        assert_eq!(manifest("ubuntu"), "latest");
    }

    #[test]
    fn image_references_split_into_registry_and_repository() {
        assert_eq!(
            reference("127.0.0.1:5000/test/hello:1"),
            ("127.0.0.1:5000".into(), "test/hello".into())
        );
        assert_eq!(
            reference("registry.example/a/b/c@sha256:ab"),
            ("registry.example".into(), "a/b/c".into())
        );
        assert_eq!(
            reference("ubuntu:22.04"),
            ("docker.io".into(), "library/ubuntu".into())
        );
        assert_eq!(
            reference("localhost:5000/app"),
            ("localhost:5000".into(), "app".into())
        );
    }

    #[test]
    fn every_spelling_of_a_host_is_one_key() {
        for (input, host) in [
            ("127.0.0.1:5000", "127.0.0.1:5000"),
            ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
            ("127.0.0.1:5000/test/hello:1", "127.0.0.1:5000"),
            ("https://index.docker.io/v1/", "docker.io"),
            ("ubuntu", "docker.io"),
            ("library/ubuntu:22.04", "docker.io"),
            ("docker.io/library/ubuntu", "docker.io"),
            ("ghcr.io/org/img@sha256:abc", "ghcr.io"),
            ("localhost/x", "localhost"),
            ("Registry.Example.ORG", "registry.example.org"),
        ] {
            assert_eq!(normalise(input), host, "{input}");
        }
    }
}
