//! `token inspect` and `token verify`: human times, exit statuses, and a one-line reason
//! for every token that must not be trusted.

mod common;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::*;

fn robot_token(user: &User, op: &Op, scopes: &str) -> std::path::PathBuf {
    let secret = user.secret_file("s", "robot-secret", 0o600);
    let out = user.path("tok");
    user.run(
        &[
            &["get"][..],
            &op.robot_client_args(&secret),
            &[
                "--scopes",
                scopes,
                "--audience",
                "https://api.test.example",
                "-o",
                out.to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .ok();
    out
}

fn forged(user: &User, header: serde_json::Value, claims: serde_json::Value, sig: &str) -> String {
    let text = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        sig
    );
    let p = user.path("forged");
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn inspect_shows_utc_dates_and_remaining_seconds() {
    let op = Op::start();
    let user = User::new();
    let tok = robot_token(&user, &op, "read");
    let run = user.run(&["token", "inspect", tok.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("alg: RS256"), "{}", run.stdout);
    assert!(run.stdout.contains("Z, in "), "{}", run.stdout);
    assert!(run.stdout.contains("Valid for "), "{}", run.stdout);

    let json = user
        .run(&["token", "inspect", "--json", tok.to_str().unwrap()])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["claims"]["sub"], "robot-client");
    assert!(v["times"]["exp"]["utc"].as_str().unwrap().ends_with('Z'));
    let remaining = v["remaining"].as_i64().unwrap();
    assert!((1..=60).contains(&remaining), "{remaining}");

    user.run(&["token", "inspect", "-m", "10", tok.to_str().unwrap()])
        .ok();
    assert_eq!(
        user.run(&["token", "inspect", "-m", "3600", tok.to_str().unwrap()])
            .code,
        1
    );
}

#[test]
fn inspect_reads_standard_input_and_the_discovery_location() {
    let op = Op::start();
    let user = User::new();
    let tok = robot_token(&user, &op, "read");
    let run = user
        .cmd()
        .args(["token", "inspect", "--json", "-"])
        .stdin(std::fs::File::open(&tok).unwrap())
        .output()
        .unwrap();
    assert!(run.status.success());
    let run = user
        .cmd()
        .args(["token", "inspect", "--json"])
        .env("BEARER_TOKEN_FILE", &tok)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(v["source"], tok.to_str().unwrap());
}

#[test]
fn verify_checks_issuer_audience_and_scope_semantics() {
    let op = Op::start();
    let user = User::new();
    let tok = robot_token(&user, &op, "storage.read:/data storage.modify:/out");
    let t = tok.to_str().unwrap();
    let iss = op.issuer();
    user.run(&[
        "token",
        "verify",
        t,
        "--issuer",
        iss,
        "--scope",
        "storage.read:/data/run1",
        "--scope",
        "storage.create:/out/x",
    ])
    .ok();
    user.run(&[
        "token",
        "verify",
        t,
        "--issuer",
        iss,
        "--scope",
        "storage.read:/database",
    ])
    .fails(1, "scope storage.read:/database is not granted");
    user.run(&[
        "token",
        "verify",
        t,
        "--issuer",
        iss,
        "--audience",
        "https://other.example",
    ])
    .fails(1, "does not include https://other.example");
    user.run(&["token", "verify", t, "--issuer", "http://127.0.0.1:1"])
        .fails(1, &format!("issuer is {iss}, expected http://127.0.0.1:1"));
    user.run(&["token", "verify", t, "--issuer", iss, "--profile", "wlcg"])
        .fails(1, "profile is unspecified, expected wlcg:1.0");
}

#[test]
fn the_scitokens_profile_is_recognised() {
    let op = Op::start_with(&[("OP_TOKEN_VER", "scitoken:2.0"), ("OP_JWT_ALG", "ES256")]);
    let user = User::new();
    let tok = robot_token(&user, &op, "storage.read:/");
    let run = user
        .run(&[
            "token",
            "verify",
            "--json",
            tok.to_str().unwrap(),
            "--profile",
            "scitokens",
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["algorithm"], "ES256");
    assert_eq!(v["profile"], "scitokens:2.0");
}

#[test]
fn untrustworthy_tokens_each_get_a_one_line_reason() {
    let op = Op::start_with(&[("OP_AT_TTL", "3")]);
    let user = User::new();
    let tok = robot_token(&user, &op, "read");
    let real = read(&tok);
    let real_claims = claims(&real);
    let sig = real.trim().rsplit('.').next().unwrap().to_string();
    let kid = {
        let h = real.split('.').next().unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        v["kid"].as_str().unwrap().to_string()
    };
    let iss = op.issuer();
    let check = |file: &str, reason: &str| {
        let run = user.run(&["token", "verify", file, "--issuer", iss, "--leeway", "0"]);
        let run = run.fails(1, reason);
        assert_eq!(
            run.stderr.trim().lines().count(),
            1,
            "one line: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("panicked"));
    };

    let none = forged(
        &user,
        serde_json::json!({"alg": "none"}),
        real_claims.clone(),
        "",
    );
    check(&none, "unsigned (alg `none`)");
    let hs = forged(
        &user,
        serde_json::json!({"alg": "HS256", "kid": kid}),
        real_claims.clone(),
        &sig,
    );
    check(&hs, "uses a shared secret");
    let mut changed = real_claims.clone();
    changed["sub"] = serde_json::json!("admin");
    let tampered = forged(
        &user,
        serde_json::json!({"alg": "RS256", "kid": kid}),
        changed,
        &sig,
    );
    check(&tampered, "signature does not match");
    let unknown = forged(
        &user,
        serde_json::json!({"alg": "RS256", "kid": "nope"}),
        real_claims,
        &sig,
    );
    check(&unknown, "no key `nope`");
    let garbage = user.path("garbage");
    std::fs::write(&garbage, "this is not a token\n").unwrap();
    check(
        garbage.to_str().unwrap(),
        "not a JWT: expected three dot-separated parts, found 1",
    );

    std::thread::sleep(std::time::Duration::from_millis(4200));
    check(tok.to_str().unwrap(), "expired at");
    let run = user.run(&["token", "inspect", tok.to_str().unwrap()]).ok();
    assert!(run.stdout.contains("Expired "), "{}", run.stdout);
}
