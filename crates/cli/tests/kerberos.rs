//! Robots that prove who they are with a Kerberos keytab (HTTP Negotiate against a real
//! MIT KDC) or with a JWT from an issuer the broker trusts, and every Kerberos failure a
//! robot's operator can meet, each named so they can fix it.

mod common;
use common::*;
use std::io::{Read, Write};

fn config(kdc: &Kdc, extra: &str) -> String {
    format!(
        r#"
[server]
kerberos_keytab = "{keytab}"

[issuer]
authz_template = "read:/user/{{username}}"
audience = "https://storage.example"

[[robot]]
name = "ci"
username = "ci-robot"
auth = {{ kerberos_principal = "robot/ci.example" }}
providers = ["local"]
scopes = ["read:/user/{{username}}", "read:/data"]
audiences = ["*"]

[[robot]]
name = "two"
auth = {{ kerberos_principal = "robot2/ci.example@TEST.REALM" }}
providers = ["local"]
scopes = ["read:/user/{{username}}"]
audiences = ["*"]
{extra}"#,
        keytab = kdc.get("KRB5_SERVICE_KEYTAB")
    )
}

/// A broker in the realm (its krb5.conf gives the default realm and the replay cache).
fn broker(user: &User, kdc: &Kdc, config_text: &str) -> Broker {
    let path = user.path("broker.toml");
    std::fs::write(&path, config_text).unwrap();
    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    Broker::start_cmd(
        cmd,
        &user.path("state"),
        &["--config", path.to_str().unwrap()],
    )
}

/// `credkeeper get --server URL -k KEYTAB ...` in the realm's environment.
fn get(user: &User, kdc: &Kdc, server: &str, keytab: &str, extra: &[&str]) -> Run {
    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    let out = user.path("bt");
    cmd.args(["get", "--server", server, "-k", keytab, "-o"])
        .arg(&out)
        .args(extra);
    Run::from(cmd.output().unwrap())
}

#[test]
fn a_robot_with_a_keytab_gets_its_token_over_spnego_and_the_broker_proves_itself() {
    let kdc = Kdc::start();
    let user = User::new();
    let broker = broker(&user, &kdc, &config(&kdc, ""));
    // `localhost` (HTTP/localhost) and the IP (HTTP/127.0.0.1) both have service keys.
    let by_name = broker.url.replace("127.0.0.1", "localhost");
    let keytab = kdc.get("KRB5_ROBOT_KEYTAB");
    get(&user, &kdc, &by_name, keytab, &["-v"]).ok();
    let token = read(&user.path("bt"));
    let c = claims(&token);
    assert_eq!(c["sub"], "ci-robot");
    assert_eq!(c["scope"], "read:/user/ci-robot");
    let audit = last_audit(&broker.state);
    assert_eq!(audit["robot"], "ci");
    assert_eq!(audit["auth"], "kerberos");
    assert_eq!(audit["result"], "vended");

    // The principal named without its realm gets the default realm; scopes within policy.
    std::fs::remove_file(user.path("bt")).unwrap();
    get(
        &user,
        &kdc,
        &broker.url,
        keytab,
        &[
            "robot/ci.example",
            "--scopes",
            "read:/data",
            "--audience",
            "https://x.example",
        ],
    )
    .ok();
    let c = claims(&read(&user.path("bt")));
    assert_eq!(c["scope"], "read:/data");
    assert_eq!(c["aud"], "https://x.example");

    // The robot's one human login, asked for with its keytab: a one-time web link.
    let mut login = user.cmd();
    kdc.apply(&mut login);
    login.args(["login", "--server", &broker.url, "-k", keytab]);
    let link = Run::from(login.output().unwrap()).ok();
    assert!(
        link.stdout
            .trim()
            .starts_with(&format!("{}/login/", broker.url)),
        "{}",
        link.stdout
    );
    assert!(link.stderr.contains("to log in for ci"), "{}", link.stderr);

    // The second robot's keytab is another robot: its own policy applies.
    std::fs::remove_file(user.path("bt")).unwrap();
    get(
        &user,
        &kdc,
        &broker.url,
        kdc.get("KRB5_ROBOT2_KEYTAB"),
        &["--scopes", "read:/data"],
    )
    .fails(1, "robot `two` may not have scope read:/data");
}

#[test]
fn kerberos_failures_say_what_is_wrong_and_send_nothing_when_the_keytab_is_unsafe() {
    let kdc = Kdc::start();
    let user = User::new();
    let broker = broker(&user, &kdc, &config(&kdc, ""));
    let keytab = kdc.get("KRB5_ROBOT_KEYTAB");

    // A principal the KDC knows but no robot is bound to.
    get(
        &user,
        &kdc,
        &broker.url,
        kdc.get("KRB5_STRANGER_KEYTAB"),
        &[],
    )
    .fails(
        1,
        "Kerberos principal stranger/ci.example@TEST.REALM is not bound to any robot",
    );

    // An unsafe keytab is refused before anything is sent.
    let lines_before = std::fs::read_to_string(broker.state.join("audit.log"))
        .unwrap()
        .lines()
        .count();
    let open = user.path("open.keytab");
    std::fs::copy(keytab, &open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    get(&user, &kdc, &broker.url, open.to_str().unwrap(), &[])
        .fails(1, &format!("run `chmod 600 {}`", open.display()));
    let lines_after = std::fs::read_to_string(broker.state.join("audit.log"))
        .unwrap()
        .lines()
        .count();
    assert_eq!(lines_before, lines_after, "nothing reached the broker");

    // No keytab at all: how to name one.
    get(&user, &kdc, &broker.url, "/nonexistent/robot.keytab", &[])
        .fails(1, "-k/--keytab or KRB5_KTNAME");
    let mut none = user.cmd();
    kdc.apply(&mut none);
    let run = Run::from(
        none.args(["get", "--server", &broker.url])
            .output()
            .unwrap(),
    );
    run.fails(1, "-k/--keytab FILE (or KRB5_KTNAME)");

    // A principal that is not in the keytab.
    get(&user, &kdc, &broker.url, keytab, &["robot2/ci.example"])
        .fails(1, "the keytab holds no key for that principal");

    // A principal the KDC has deleted.
    kdc.kadmin("delprinc -force robot2/ci.example");
    get(&user, &kdc, &broker.url, kdc.get("KRB5_ROBOT2_KEYTAB"), &[])
        .fails(1, "the KDC does not know this principal");

    // A client clock two hours off. MIT clients correct their offset from the KDC's
    // answers (kdc_timesync, on by default); where a site turned that off, the KDC
    // refuses the skewed request.
    let lib = faketime_lib().expect("libfaketime: scripts/test installs the faketime package");
    let no_timesync = user.path("krb5-no-timesync.conf");
    std::fs::write(
        &no_timesync,
        read(std::path::Path::new(kdc.get("KRB5_CONFIG")))
            .replace("[libdefaults]", "[libdefaults]\n    kdc_timesync = 0"),
    )
    .unwrap();
    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    cmd.env("KRB5_CONFIG", &no_timesync)
        .env("LD_PRELOAD", &lib)
        .env("FAKETIME", "+2h")
        .args(["get", "--server", &broker.url, "-k", keytab, "-o", "-"]);
    Run::from(cmd.output().unwrap()).fails(1, "synchronise the clock");
    // A broker whose clock is off refuses every client, and says why.
    let mut skewed = user.cmd();
    kdc.apply(&mut skewed);
    skewed.env("LD_PRELOAD", &lib).env("FAKETIME", "-2h");
    let skewed = Broker::start_cmd(
        skewed,
        &user.path("skewed-state"),
        &["--config", user.path("broker.toml").to_str().unwrap()],
    );
    get(&user, &kdc, &skewed.url, keytab, &[]).fails(1, "synchronise the clock");
    drop(skewed);

    // The KDC down.
    kdc.stop();
    get(&user, &kdc, &broker.url, keytab, &[]).fails(1, "no KDC answered");
}

fn faketime_lib() -> Option<std::path::PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(std::path::PathBuf::from)
    .find(|p| p.exists())
}

#[test]
fn a_server_that_cannot_prove_it_is_the_broker_is_not_believed() {
    let kdc = Kdc::start();
    let user = User::new();
    // Answers every request with a token and no Kerberos reply.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(1) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf);
            let body = r#"{"access_token":"eyJhbGciOiJFUzI1NiJ9.eyJleHAiOjQxMDI0NDQ4MDB9.c2ln","expires_in":3600}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let server = format!("http://localhost:{}", addr.port());
    get(&user, &kdc, &server, kdc.get("KRB5_ROBOT_KEYTAB"), &[])
        .fails(1, "did not prove it is the broker");
    assert!(!user.path("bt").exists(), "nothing written");
}

#[test]
fn a_broker_without_a_keytab_says_so_to_kerberos_clients() {
    let kdc = Kdc::start();
    let user = User::new();
    let broker = Broker::start(&user, &user.path("state"), &["--dev"]);
    get(&user, &kdc, &broker.url, kdc.get("KRB5_ROBOT_KEYTAB"), &[])
        .fails(1, "this broker has no Kerberos keytab");
    // A config binding a robot to Kerberos without a keytab is refused at start.
    let path = user.path("bad.toml");
    std::fs::write(
        &path,
        "[[robot]]\nname = \"ci\"\nauth = { kerberos_principal = \"robot/ci.example\" }\nproviders = [\"local\"]\n",
    )
    .unwrap();
    user.run(&[
        "serve",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
    .fails(1, "set server.kerberos_keytab");
}

#[test]
fn a_robot_with_a_jwt_from_a_trusted_issuer_needs_no_keytab() {
    let user = User::new();
    // The trusted issuer: another broker's local issuer (a Kubernetes API server's
    // service-account issuer is met the same way: discovery, then its JWKS).
    let a = Broker::start(&user, &user.path("a"), &["--dev"]);
    let dev_get: Vec<String> = a
        .stdout_first_line
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let robot_at = dev_get.iter().position(|w| w == "--robot").unwrap();
    let secret_at = dev_get.iter().position(|w| w == "--secret-file").unwrap();
    let mint = |audience: &str, out: &str| {
        user.run(&[
            "get",
            "--server",
            &a.url,
            "--robot",
            &dev_get[robot_at + 1],
            "--secret-file",
            &dev_get[secret_at + 1],
            "--audience",
            audience,
            "--scopes",
            "compute.read",
            "-o",
            user.path(out).to_str().unwrap(),
        ])
        .ok();
        user.path(out)
    };
    let sa_token = mint("https://broker-b.example", "sa.jwt");
    let subject = claims(&read(&sa_token))["sub"]
        .as_str()
        .unwrap()
        .to_string();
    let config = user.path("b.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[robot]]
name = "cronjob"
auth = {{ jwt_issuer = "{issuer}", jwt_subject = "{subject}", jwt_audience = "https://broker-b.example" }}
providers = ["local"]
scopes = ["read:/user/{{username}}"]
audiences = ["*"]
"#,
            issuer = a.url
        ),
    )
    .unwrap();
    let b = Broker::start(
        &user,
        &user.path("b"),
        &["--config", config.to_str().unwrap()],
    );
    let out = user.path("bt");
    user.run(&[
        "get",
        "--server",
        &b.url,
        "--jwt-file",
        sa_token.to_str().unwrap(),
        "--scopes",
        "read:/user/cronjob",
        "-o",
        out.to_str().unwrap(),
    ])
    .ok();
    assert_eq!(claims(&read(&out))["sub"], "cronjob");
    let audit = last_audit(&b.state);
    assert_eq!(
        (audit["robot"].as_str(), audit["auth"].as_str()),
        (Some("cronjob"), Some("jwt"))
    );

    // A token minted for another audience is not accepted here.
    let other = mint("https://elsewhere.example", "other.jwt");
    user.run(&[
        "get",
        "--server",
        &b.url,
        "--jwt-file",
        other.to_str().unwrap(),
        "-o",
        "-",
    ])
    .fails(1, "does not include https://broker-b.example");
    // Nor a tampered one.
    let tampered = user.path("tampered.jwt");
    let t = read(&sa_token);
    let mut parts: Vec<&str> = t.trim().split('.').collect();
    let forged = {
        use base64::Engine;
        let mut c = claims(&t);
        c["sub"] = serde_json::Value::String(subject.clone());
        c["exp"] = serde_json::json!(4102444800i64);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(c.to_string())
    };
    parts[1] = &forged;
    std::fs::write(&tampered, parts.join(".")).unwrap();
    user.run(&[
        "get",
        "--server",
        &b.url,
        "--jwt-file",
        tampered.to_str().unwrap(),
        "-o",
        "-",
    ])
    .fails(1, "signature does not match");
    // A valid token of the same issuer for a subject no robot is bound to.
    let b2 = user.path("b2.toml");
    std::fs::write(&b2, read(&config).replace(&subject, "someone-else")).unwrap();
    drop(b);
    let b = Broker::start(&user, &user.path("b2"), &["--config", b2.to_str().unwrap()]);
    user.run(&[
        "get",
        "--server",
        &b.url,
        "--jwt-file",
        sa_token.to_str().unwrap(),
        "-o",
        "-",
    ])
    .fails(1, "no robot is bound to JWT subject");
}

#[test]
fn a_robots_first_login_at_a_provider_is_a_device_flow_a_human_completes_for_the_keytab() {
    let kdc = Kdc::start();
    let op = Op::start();
    let user = User::new();
    let extra = format!(
        r#"
[[provider]]
name = "op"
issuer = "{}"
client_id = "device-client"
scopes = "read write"
"#,
        op.issuer()
    );
    let text = config(&kdc, &extra).replace(
        "providers = [\"local\"]\nscopes = [\"read:/user/{username}\", \"read:/data\"]",
        "providers = [\"local\", \"op\"]\nscopes = [\"read:/user/{username}\", \"read:/data\", \"read\", \"write\"]",
    );
    assert!(text.contains("\"op\"]"), "{text}");
    let broker = broker(&user, &kdc, &text);
    let keytab = kdc.get("KRB5_ROBOT_KEYTAB");

    // Before the login the robot has nothing at the provider.
    get(
        &user,
        &kdc,
        &broker.url,
        keytab,
        &["--provider", "op", "--scopes", "read"],
    )
    .fails(1, "a human must log in once for it");

    let mut cmd = user.cmd();
    kdc.apply(&mut cmd);
    cmd.args([
        "login",
        "--server",
        &broker.url,
        "-k",
        keytab,
        "--provider",
        "op",
    ]);
    let mut login = Spawned::start(cmd);
    let code = login.wait_for("enter the code:");
    approve_device(&op, &code, "alice");
    let (status, stderr) = login.finish();
    assert_eq!(status, 0, "{stderr}");
    assert!(
        stderr.contains("The broker now holds the robot's credential at provider `op`"),
        "{stderr}"
    );
    assert!(!stderr.contains("refresh"), "{stderr}");

    // From now on the robot's keytab is all it takes.
    get(
        &user,
        &kdc,
        &broker.url,
        keytab,
        &["--provider", "op", "--scopes", "read"],
    )
    .ok();
    let c = claims(&read(&user.path("bt")));
    assert_eq!(c["iss"], op.issuer());
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["scope"], "read");

    // Another robot cannot start logins for a provider its policy does not list.
    let mut other = user.cmd();
    kdc.apply(&mut other);
    other.args([
        "login",
        "--server",
        &broker.url,
        "-k",
        kdc.get("KRB5_ROBOT2_KEYTAB"),
        "--provider",
        "op",
    ]);
    Run::from(other.output().unwrap()).fails(1, "robot `two` may not use provider `op`");
}

/// Kerberos is loaded when used, never at start: a broker without a keytab maps no
/// Kerberos library, and a machine without MIT krb5 gets one line naming the package.
#[test]
fn kerberos_is_loaded_only_by_the_first_kerberos_operation() {
    let user = User::new();
    let broker = Broker::start(&user, &user.path("state"), &["--dev"]);
    let pid = broker.child.as_ref().unwrap().id();
    let maps = read(std::path::Path::new(&format!("/proc/{pid}/maps")));
    assert!(maps.contains("credkeeper"), "{maps}");
    for lib in ["libgssapi_krb5", "libkrb5", "libk5crypto"] {
        assert!(!maps.contains(lib), "serve --dev mapped {lib}:\n{maps}");
    }

    let keytab = user.secret_file("robot.keytab", "\u{5}\u{2}", 0o600);
    let mut cmd = user.cmd();
    cmd.env(
        "CREDKEEPER_GSSAPI_LIBRARY",
        "/nonexistent/libgssapi_krb5.so.2",
    )
    .args(["get", "--server", &broker.url, "-k"])
    .arg(&keytab)
    .args(["-o", "-"]);
    let run = Run::from(cmd.output().unwrap()).fails(1, "apt-get install libgssapi-krb5-2");
    assert!(
        run.stderr.contains("/nonexistent/libgssapi_krb5.so.2"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.trim().lines().count(),
        1,
        "one line:\n{}",
        run.stderr
    );

    // Everything that is not Kerberos still works without it.
    let mut cmd = user.cmd();
    cmd.env(
        "CREDKEEPER_GSSAPI_LIBRARY",
        "/nonexistent/libgssapi_krb5.so.2",
    )
    .args([
        "--insecure-loopback",
        "get",
        "--server",
        &broker.url,
        "--robot",
        "dev",
    ])
    .arg("--secret-file")
    .arg(user.path("state").join("dev-robot.secret"))
    .args(["-o", "-"]);
    let run = Run::from(cmd.output().unwrap()).ok();
    assert!(run.stdout.trim().starts_with("ey"), "{}", run.stdout);
}
