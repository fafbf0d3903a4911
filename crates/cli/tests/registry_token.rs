//! `credkeeper serve` as the token server of a real registry (CNCF distribution 2.8.2 with
//! token auth): skopeo pulls with a robot's identity, gets exactly what the robot's policy
//! allows, and a robot with a keytab pulls through `docker-credential-credkeeper` with no
//! registry password anywhere.

mod common;
use common::*;
use std::process::Command;

const SERVICE: &str = "testbed-registry";
const ISSUER: &str = "credkeeper-test-tokens";

struct Setup {
    user: User,
    broker: Broker,
    registry: Peer,
    kdc: Kdc,
}

fn setup(algorithm: &str) -> Setup {
    let kdc = Kdc::start();
    let user = User::new();
    let dir = user.home.path();
    let keygen = match algorithm {
        "ES256" => "-newkey ec -pkeyopt ec_paramgen_curve:P-256",
        _ => "-newkey rsa:2048",
    };
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl req -x509 {keygen} -nodes -keyout signer.key -out signer.pem -days 2 -subj /CN=credkeeper-registry-tokens && chmod 600 signer.key"
        ))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
kerberos_keytab = "{keytab}"

[registry]
service = "{SERVICE}"
issuer = "{ISSUER}"
key_file = "{dir}/signer.key"
cert_file = "{dir}/signer.pem"
algorithm = "{algorithm}"

[[robot]]
name = "puller"
auth = {{ secret = true, kerberos_principal = "robot/ci.example" }}
registry = ["repository:test/*:pull"]

[[robot]]
name = "nobody"
auth = {{ secret = true }}
"#,
            keytab = kdc.get("KRB5_SERVICE_KEYTAB"),
            dir = dir.display()
        ),
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &["puller", "nobody"]);
    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    let broker = Broker::start_cmd(cmd, &state, &["--config", config.to_str().unwrap()]);
    let realm = format!("{}/registry/token", broker.url);
    let cert = format!("{}/signer.pem", dir.display());
    let registry = Registry::start_with(&[
        ("REG_AUTH", "token"),
        ("REG_TOKEN_REALM", &realm),
        ("REG_TOKEN_SERVICE", SERVICE),
        ("REG_TOKEN_ISSUER", ISSUER),
        ("REG_TOKEN_ROOTCERT", &cert),
    ]);
    Setup {
        user,
        broker,
        registry,
        kdc,
    }
}

impl Setup {
    fn skopeo(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("skopeo");
        self.user.hermetic(&mut cmd);
        cmd.args(["--policy", self.registry.get("REGISTRY_SKOPEO_POLICY")])
            .args(args)
            .env_remove("DOCKER_CONFIG")
            .env("REGISTRY_AUTH_FILE", self.user.path("auth.json"))
            .output()
            .unwrap()
    }

    fn creds(&self, robot: &str) -> String {
        format!(
            "{robot}:{}",
            read(&self.user.path(&format!("{robot}.secret"))).trim()
        )
    }

    fn inspect(&self, creds: Option<&str>) -> std::process::Output {
        let image = format!("docker://{}", self.registry.get("REGISTRY_IMAGE"));
        let mut args = vec!["inspect", "--tls-verify=false"];
        let c;
        if let Some(creds) = creds {
            c = format!("--creds={creds}");
            args.push(&c);
        }
        args.push(&image);
        self.skopeo(&args)
    }
}

#[test]
fn skopeo_pulls_with_a_robot_identity_and_gets_only_what_the_policy_allows() {
    let s = setup("RS256");
    std::fs::write(s.user.path("auth.json"), "{}").unwrap();
    let ok = s.inspect(Some(&s.creds("puller")));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(inspected["Digest"], s.registry.get("REGISTRY_IMAGE_DIGEST"));
    let vend = audit_lines(&s.broker.state)
        .into_iter()
        .rev()
        .find(|l| l["provider"] == "registry")
        .unwrap();
    assert_eq!(vend["robot"], "puller");
    assert_eq!(vend["auth"], "secret");
    assert_eq!(vend["scope"], "repository:test/hello:pull");
    assert_eq!(vend["audience"], SERVICE);

    // A robot with no registry policy gets a token with no access: the registry refuses.
    let denied = s.inspect(Some(&s.creds("nobody")));
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    assert!(
        stderr.contains("unauthorized") || stderr.contains("denied"),
        "{stderr}"
    );
    // A wrong secret does not get a token at all.
    let wrong = s.inspect(Some("puller:not-the-secret"));
    assert!(!wrong.status.success());
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        stderr.contains("unauthorized") || stderr.contains("denied"),
        "refused, not failed otherwise: {stderr}"
    );
    // Pull rights do not give push rights.
    let push = s.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("--src-creds={}", s.creds("puller")),
        &format!("--dest-creds={}", s.creds("puller")),
        &format!("docker://{}", s.registry.get("REGISTRY_IMAGE")),
        &format!("docker://{}/test/copy:1", s.registry.get("REGISTRY_HOST")),
    ]);
    assert!(!push.status.success(), "push must be refused");
    let stderr = String::from_utf8_lossy(&push.stderr);
    assert!(
        stderr.contains("unauthorized") || stderr.contains("denied"),
        "refused, not failed otherwise: {stderr}"
    );

    // The token itself: RS256 with the certificate chain, aud a string, the access granted.
    let (code, body) = s.broker.http(
        "GET",
        &format!("/registry/token?service={SERVICE}&scope=repository:test/hello:pull,push&scope=repository:other:pull"),
        Some(("puller", read(&s.user.path("puller.secret")).trim())),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    let token = answer["token"].as_str().unwrap();
    let c = claims(token);
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "puller");
    assert_eq!(
        c["access"],
        serde_json::json!([{"type": "repository", "name": "test/hello", "actions": ["pull"]}])
    );
    use base64::Engine;
    let header: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["x5c"].as_array().unwrap().len(), 1);
    // Another service's tokens are not made here.
    let (code, _) = s.broker.http(
        "GET",
        "/registry/token?service=elsewhere&scope=repository:test/hello:pull",
        Some(("puller", read(&s.user.path("puller.secret")).trim())),
        None,
    );
    assert_eq!(code, 400);
}

#[test]
fn a_robot_with_a_keytab_pulls_through_the_helper_with_no_registry_password_anywhere() {
    let s = setup("ES256");
    let host = s.registry.get("REGISTRY_HOST").to_string();
    let bin = s.user.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_credkeeper"),
        bin.join("docker-credential-credkeeper"),
    )
    .unwrap();
    std::fs::write(
        s.user.path("auth.json"),
        serde_json::json!({"credHelpers": {host.clone(): "credkeeper"}}).to_string(),
    )
    .unwrap();
    let image = format!("docker://{}", s.registry.get("REGISTRY_IMAGE"));
    let pull = |keytab: &str| {
        let mut cmd = Command::new("skopeo");
        s.user.hermetic(&mut cmd);
        s.kdc.apply(&mut cmd);
        cmd.args(["--policy", s.registry.get("REGISTRY_SKOPEO_POLICY")])
            .args(["inspect", "--tls-verify=false", &image])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("REGISTRY_AUTH_FILE", s.user.path("auth.json"))
            .env("CREDKEEPER_SERVER", &s.broker.url)
            .env("CREDKEEPER_INSECURE_LOOPBACK", "true")
            .env("KRB5_KTNAME", keytab)
            .env_remove("DOCKER_CONFIG")
            .output()
            .unwrap()
    };
    let ok = pull(s.kdc.get("KRB5_ROBOT_KEYTAB"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let inspected: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(inspected["Digest"], s.registry.get("REGISTRY_IMAGE_DIGEST"));
    // The registry token was traded for the identity token the helper got with Kerberos.
    let lines = audit_lines(&s.broker.state);
    let by_kerberos = lines
        .iter()
        .any(|l| l["provider"] == "registry" && l["auth"] == "kerberos" && l["robot"] == "puller");
    let by_identity = lines.iter().any(|l| {
        l["provider"] == "registry"
            && l["auth"] == "identity-token"
            && l["scope"] == "repository:test/hello:pull"
    });
    assert!(by_kerberos && by_identity, "{lines:#?}");

    // A keytab no robot is bound to: the helper fails loudly rather than pulling anonymously.
    let refused = pull(s.kdc.get("KRB5_STRANGER_KEYTAB"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("not bound to any robot"), "{stderr}");

    // A forged identity token is refused by the token server.
    let form = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("{}/registry/token", s.broker.url))
        .args([
            "--data-urlencode",
            "grant_type=refresh_token",
            "--data-urlencode",
            &format!("service={SERVICE}"),
            "--data-urlencode",
            "scope=repository:test/hello:pull",
            "--data-urlencode",
            "refresh_token=eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJwdWxsZXIifQ.c2ln",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&form.stdout);
    assert!(text.ends_with("401"), "{text}");
}

#[test]
fn the_kubelet_credential_provider_answers_from_the_same_keychain() {
    let s = setup("RS256");
    let host = s.registry.get("REGISTRY_HOST").to_string();
    let request = serde_json::json!({
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
        "kind": "CredentialProviderRequest",
        "image": s.registry.get("REGISTRY_IMAGE"),
    });
    let provider = |keytab: Option<&str>, input: &str| {
        let mut cmd = s.user.cmd();
        s.kdc.apply(&mut cmd);
        cmd.env("CREDKEEPER_SERVER", &s.broker.url)
            .args([
                "registry",
                "kubelet-credential-provider",
                "--cache-duration",
                "120",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(k) = keytab {
            cmd.env("KRB5_KTNAME", k);
        }
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    };
    // The node's robot identity: an identity token as the password of user `<token>`.
    let out = provider(Some(s.kdc.get("KRB5_ROBOT_KEYTAB")), &request.to_string()).ok();
    let response: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(response["kind"], "CredentialProviderResponse");
    assert_eq!(response["cacheKeyType"], "Registry");
    assert_eq!(response["cacheDuration"], "120s");
    let auth = &response["auth"][&host];
    assert_eq!(auth["username"], "<token>");
    // What containerd then does with it: the password grant at the token server.
    let form = Command::new("curl")
        .args(["-s", "-X", "POST"])
        .arg(format!("{}/registry/token", s.broker.url))
        .args([
            "--data-urlencode",
            "grant_type=password",
            "--data-urlencode",
            "username=<token>",
        ])
        .arg("--data-urlencode")
        .arg(format!("password={}", auth["password"].as_str().unwrap()))
        .args(["--data-urlencode", &format!("service={SERVICE}")])
        .args(["--data-urlencode", "scope=repository:test/hello:pull"])
        .output()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&form.stdout).unwrap();
    let c = claims(answer["token"].as_str().unwrap());
    assert_eq!(c["sub"], "puller");
    assert_eq!(c["access"][0]["actions"], serde_json::json!(["pull"]));

    // No source knows the registry: an empty auth, and the kubelet pulls without.
    let out = provider(None, &request.to_string()).ok();
    let response: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(response["auth"], serde_json::json!({}));
    // Not a request: exit 1 with the reason.
    provider(None, r#"{"kind":"Pod"}"#).fails(1, "the CredentialProviderRequest on standard input");
}

#[test]
fn registry_token_follows_the_challenge_with_whatever_the_keychain_holds() {
    let s = setup("RS256");
    let image = s.registry.get("REGISTRY_IMAGE").to_string();
    let token = |extra: &[&str], keytab: Option<&str>| {
        let mut cmd = s.user.cmd();
        s.kdc.apply(&mut cmd);
        cmd.args(["registry", "token", &image, "--check"])
            .args(extra);
        if let Some(k) = keytab {
            cmd.env("CREDKEEPER_SERVER", &s.broker.url)
                .env("KRB5_KTNAME", k);
        }
        Run::from(cmd.output().unwrap())
    };
    // A user and password (here the robot's name and secret): GET the realm with Basic.
    let puller_secret = read(&s.user.path("puller.secret"));
    let mut cmd = s.user.cmd();
    cmd.args(["registry", "token", &image, "--check", "--user", "puller"])
        .env("CREDKEEPER_REGISTRY_PASSWORD", puller_secret.trim());
    let basic = Run::from(cmd.output().unwrap()).ok();
    assert!(
        basic.stderr.contains("the token opens test/hello:1"),
        "{}",
        basic.stderr
    );
    assert_eq!(claims(basic.stdout.trim())["sub"], "puller");
    // The robot's keytab: an identity token from the broker, traded with refresh_token.
    let kerberos = token(&["--explain"], Some(s.kdc.get("KRB5_ROBOT_KEYTAB"))).ok();
    assert!(
        kerberos
            .stderr
            .contains("an identity token for testbed-registry"),
        "{}",
        kerberos.stderr
    );
    assert_eq!(claims(kerberos.stdout.trim())["sub"], "puller");
    // Asking for push gets a token without push: the check still passes for pull (HEAD).
    let push = token(&["--push"], Some(s.kdc.get("KRB5_ROBOT_KEYTAB"))).ok();
    assert_eq!(
        claims(push.stdout.trim())["access"][0]["actions"],
        serde_json::json!(["pull"])
    );
    // A robot without registry rights gets a token that opens nothing.
    let nobody_secret = read(&s.user.path("nobody.secret"));
    let mut cmd = s.user.cmd();
    cmd.args(["registry", "token", &image, "--check", "--user", "nobody"])
        .env("CREDKEEPER_REGISTRY_PASSWORD", nobody_secret.trim());
    Run::from(cmd.output().unwrap()).fails(1, "the token does not open test/hello:1 (HTTP 401)");
    // Wrong credentials: the token server's refusal, named.
    let mut cmd = s.user.cmd();
    cmd.args(["registry", "token", &image, "--user", "puller"])
        .env("CREDKEEPER_REGISTRY_PASSWORD", "wrong");
    Run::from(cmd.output().unwrap()).fails(1, "refused (401)");
}

/// `POST /registry/token` with an OAuth2 form (curl `--data-urlencode` each field):
/// (HTTP status, body).
fn post_form(s: &Setup, fields: &[String]) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", "POST"])
        .arg(format!("{}/registry/token", s.broker.url));
    for f in fields {
        cmd.arg("--data-urlencode").arg(f);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn password_form(s: &Setup, scopes: &[&str]) -> Vec<String> {
    let mut fields = vec![
        "grant_type=password".to_string(),
        "username=puller".to_string(),
        format!("password={}", read(&s.user.path("puller.secret")).trim()),
        format!("service={SERVICE}"),
    ];
    fields.extend(scopes.iter().map(|s| format!("scope={s}")));
    fields
}

#[test]
fn a_token_form_with_the_scope_field_repeated_is_read_whole() {
    let s = setup("ES256");
    // skopeo's retry after `insufficient_scope` repeats `scope`, as GET may.
    let (code, body) = post_form(
        &s,
        &password_form(
            &s,
            &[
                "repository:test/hello:pull",
                "repository:test/other:pull,push",
            ],
        ),
    );
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        claims(answer["token"].as_str().unwrap())["access"],
        serde_json::json!([
            {"type": "repository", "name": "test/hello", "actions": ["pull"]},
            {"type": "repository", "name": "test/other", "actions": ["pull"]}
        ])
    );
    // A wrong secret in the form: refused, and audited as no robot (`auth` none), as the
    // same secret over Basic is.
    let mut wrong = password_form(&s, &[]);
    wrong[2] = "password=not-the-secret".into();
    let (code, body) = post_form(&s, &wrong);
    assert_eq!(code, 401, "{body}");
    let denied = last_audit(&s.broker.state);
    assert_eq!(
        (denied["robot"].as_str(), denied["auth"].as_str()),
        (Some("puller"), Some("none")),
        "{denied}"
    );
    // A form without a grant type is a bad request that says so.
    let (code, body) = post_form(&s, &[format!("service={SERVICE}")]);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("grant_type"), "{body}");
}

#[test]
fn a_repository_name_outside_the_reference_grammar_is_not_granted() {
    let s = setup("ES256");
    let secret = read(&s.user.path("puller.secret"));
    let get_pull = |name: &str| {
        let query = url_query(&format!("repository:{name}:pull"));
        s.broker.http(
            "GET",
            &format!("/registry/token?service={SERVICE}&scope={query}"),
            Some(("puller", secret.trim())),
            None,
        )
    };
    // `test/*` must not reach `other/x` by climbing out of `test/`.
    for name in [
        "test/../other/x",
        "test/./x",
        "test//x",
        "test/X",
        "test/a%2fb",
    ] {
        let (code, body) = get_pull(name);
        assert_eq!(code, 400, "{name}: {body}");
        assert!(
            body.contains("not a repository name"),
            "{name}: says what is wrong: {body}"
        );
        let (code, body) = post_form(
            &s,
            &password_form(&s, &[&format!("repository:{name}:pull")]),
        );
        assert_eq!(code, 400, "{name}: {body}");
    }
    // Names in the grammar still get what the policy allows, a host prefix included.
    for (name, granted) in [
        ("test/a.b_c__d-e--f/g", true),
        ("localhost:5000/test/x", false),
    ] {
        let (code, body) = get_pull(name);
        assert_eq!(code, 200, "{name}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let access = claims(answer["token"].as_str().unwrap())["access"].clone();
        assert_eq!(
            access.as_array().unwrap().len(),
            usize::from(granted),
            "{access}"
        );
    }
}

/// `text` percent-encoded for a query string.
fn url_query(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
