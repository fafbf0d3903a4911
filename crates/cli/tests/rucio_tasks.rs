//! `credkeeper tasks run` with the real `rucio` client as the task, against a real Rucio
//! 41.5.1 server (`tests/testbed/start-rucio.sh`): `rucio whoami` prints the account for
//! userpass (the task gets a session token, never the password), for OIDC with a token from
//! the test OpenID Provider through the broker (kept fresh while a task outlives it), and
//! for X.509 over TLS with a test CA, and for OIDC with the token straight from the issuer
//! (client credentials, no broker); a wrong password fails the run before it starts; the
//! run's rucio.cfg is the image's own with every `RUCIO_CFG_<SECTION>_<OPTION>` merged on.
//! `rucio` exits 0 when authentication fails inside a command, so the output is checked.

mod common;
use common::*;

/// A real Rucio server; with an OpenID Provider's issuer, its client `robot-client` is
/// mapped to the account robot.
fn rucio(oidc_issuer: Option<&str>) -> Peer {
    match oidc_issuer {
        Some(i) => Peer::start(
            "rucio",
            &[
                ("RUCIO_OIDC_ISSUER", i),
                ("RUCIO_OIDC_SUBJECT", "robot-client"),
            ],
            &[],
        ),
        None => Peer::start("rucio", &[], &[]),
    }
}

/// A task `long` running `command` (a shell string) as Rucio's account robot with auth
/// type oidc, its bearer token asked with scope read and the test audience (`provider`:
/// a broker's provider, `"provider: op, "`, or nothing).
fn oidc_task(user: &User, rucio: &Peer, command: &str, provider: &str) -> std::path::PathBuf {
    let file = user.path("tasks.yaml");
    std::fs::write(
        &file,
        format!(
            r#"tasks:
  - name: long
    schedule: '@hourly'
    shell: true
    command: {command}
    env:
      RUCIO_CFG_AUTH_TYPE: oidc
      RUCIO_CFG_RUCIO_HOST: {url}
      RUCIO_CFG_ACCOUNT: robot
    credentials:
      bearer: {{{provider}scopes: read, audience: "https://api.test.example"}}
"#,
            url = rucio.get("RUCIO_URL"),
        ),
    )
    .unwrap();
    file
}

fn tasks_run(user: &User, file: &std::path::Path, task: &str, env: &[(&str, &str)]) -> Run {
    let mut cmd = user.cmd();
    cmd.args(["tasks", "run"])
        .arg(file)
        .args(["--task", task])
        .envs(env.iter().copied());
    Run::from(cmd.output().unwrap())
}

#[test]
fn rucio_whoami_as_a_task_with_userpass_and_x509_and_a_wrong_password_fails_first() {
    let rucio = rucio(None);
    let user = User::new();
    let password = read(std::path::Path::new(rucio.get("RUCIO_PASSWORD_FILE")))
        .trim()
        .to_string();
    // Secrets from a mounted volume: the password, the client certificate and key.
    let secrets = user.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("ROBOT_PASSWORD"), &password).unwrap();
    std::fs::copy(rucio.get("RUCIO_CLIENT_CERT"), secrets.join("ROBOT_CERT")).unwrap();
    std::fs::copy(rucio.get("RUCIO_CLIENT_KEY"), secrets.join("ROBOT_KEY")).unwrap();
    // The image's own rucio.cfg (host and account in it, not in the task's variables): the
    // run's config is merged onto it, as upstream's image merges RUCIO_CFG_*.
    let url = rucio.get("RUCIO_URL");
    let image_cfg =
        format!("[common]\nloglevel = DEBUG\n\n[client]\nrucio_host = {url}\naccount = robot\n");
    let base = user.path("image-rucio.cfg");
    std::fs::write(&base, image_cfg).unwrap();
    let file = user.path("tasks.yaml");
    std::fs::write(
        &file,
        format!(
            r#"tasks:
  - name: userpass
    schedule: '@hourly'
    shell: true
    command: '{bin} whoami; env | grep -c "^RUCIO_CFG_"; grep -c password "$RUCIO_CONFIG"; true'
    env:
      RUCIO_CFG_AUTH_TYPE: userpass
      RUCIO_CFG_RUCIO_HOST: {url}
      RUCIO_CFG_ACCOUNT: robot
      RUCIO_CFG_USERNAME: robot
      RUCIO_CFG_PASSWORD: {{{{ ROBOT_PASSWORD }}}}
  - name: x509
    schedule: '@hourly'
    shell: true
    command: '{bin} whoami; stat -c %a "$(dirname "$RUCIO_CONFIG")/client.key"'
    env:
      RUCIO_CFG_AUTH_TYPE: x509
      RUCIO_CFG_RUCIO_HOST: {tls}
      RUCIO_CFG_ACCOUNT: robot
      RUCIO_CFG_CA_CERT: {ca}
      RUCIO_CFG_CLIENT_CERT_VALUE: "{{{{ ROBOT_CERT }}}}"
      RUCIO_CFG_CLIENT_KEY_VALUE: "{{{{ ROBOT_KEY }}}}"
  - name: merged
    schedule: '@hourly'
    shell: true
    command: '{bin} whoami; grep -E "^(loglevel|rucio_host|schema|password) = " "$RUCIO_CONFIG"; true'
    env:
      RUCIO_CONFIG: {base}
      RUCIO_CFG_CLIENT_AUTH_TYPE: userpass
      RUCIO_CFG_CLIENT_USERNAME: robot
      RUCIO_CFG_CLIENT_PASSWORD: "{{{{ ROBOT_PASSWORD }}}}"
      RUCIO_CFG_POLICY_SCHEMA: generic
"#,
            base = base.display(),
            bin = rucio.get("RUCIO_BIN"),
            url = rucio.get("RUCIO_URL"),
            tls = rucio.get("RUCIO_TLS_URL"),
            ca = rucio.get("RUCIO_CA_CERT"),
        ),
    )
    .unwrap();
    let dir = secrets.display().to_string();
    let validate = user.run(&[
        "tasks",
        "validate",
        file.to_str().unwrap(),
        "--secret-dir",
        &dir,
    ]);
    validate.ok();
    let with_dir = |task: &str| {
        let mut cmd = user.cmd();
        for k in ["RUCIO_ACCOUNT", "RUCIO_CLIENT_CERT", "RUCIO_CLIENT_KEY"] {
            cmd.env_remove(k);
        }
        cmd.args([
            "tasks",
            "run",
            file.to_str().unwrap(),
            "--task",
            task,
            "--secret-dir",
            &dir,
        ]);
        Run::from(cmd.output().unwrap())
    };
    let up = with_dir("userpass").ok();
    assert!(up.stdout.contains("account    : robot"), "{}", up.stdout);
    // No RUCIO_CFG_* reached the task, and its rucio.cfg holds no password.
    assert!(up.stdout.ends_with("0\n0\n"), "{}", up.stdout);
    assert!(!up.stdout.contains(&password));
    let x = with_dir("x509").ok();
    assert!(x.stdout.contains("account    : robot"), "{}", x.stdout);
    assert!(x.stdout.ends_with("600\n"), "{}", x.stdout);
    assert!(!x.stdout.contains("PRIVATE KEY"), "{}", x.stdout);

    let m = with_dir("merged").ok();
    assert!(m.stdout.contains("account    : robot"), "{}", m.stdout);
    assert!(
        m.stdout.ends_with(&format!(
            "loglevel = DEBUG\nrucio_host = {url}\nschema = generic\n"
        )),
        "{}",
        m.stdout
    );

    // A wrong password: the run fails, the command never starts.
    std::fs::write(secrets.join("ROBOT_PASSWORD"), "not-the-password").unwrap();
    let wrong = with_dir("userpass").fails(1, "authentication failed: Rucio at");
    assert!(
        wrong
            .stderr
            .contains("Cannot authenticate to account robot"),
        "{}",
        wrong.stderr
    );
    assert!(!wrong.stdout.contains("account"), "{}", wrong.stdout);
}

#[test]
fn an_oidc_task_that_outlives_its_token_keeps_working_with_the_broker_keeping_it_fresh() {
    // Access tokens live 20 s; the task runs `rucio whoami` twice, 25 s apart.
    let op = Op::start_with(&[("OP_AT_TTL", "20")]);
    let rucio = rucio(Some(op.issuer()));
    let user = User::new();
    let secret = user.secret_file("op-robot.secret", "robot-secret", 0o600);
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[provider]]
name = "op"
issuer = "{issuer}"
client_id = "robot-client"
client_secret_file = "{secret}"

[[robot]]
name = "tasks"
auth = {{ secret = true }}
providers = ["op"]
scopes = ["read"]
audiences = ["*"]
"#,
            issuer = op.issuer(),
            secret = secret.display()
        ),
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &["tasks"]);
    let broker = Broker::start(&user, &state, &["--config", config.to_str().unwrap()]);
    let bin = rucio.get("RUCIO_BIN");
    let file = oidc_task(
        &user,
        &rucio,
        &format!("'{bin} whoami; sleep 25; {bin} whoami'"),
        "provider: op, ",
    );
    let robot_secret = user.path("tasks.secret");
    let run = tasks_run(
        &user,
        &file,
        "long",
        &[
            ("CREDKEEPER_SERVER", &broker.url),
            ("CREDKEEPER_ROBOT", "tasks"),
            ("CREDKEEPER_SECRET_FILE", robot_secret.to_str().unwrap()),
        ],
    )
    .ok();
    assert_eq!(
        run.stdout.matches("account    : robot").count(),
        2,
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("Cannot authenticate"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_oidc_task_and_a_values_files_oidc_cronjob_get_their_token_straight_from_the_issuer() {
    let op = Op::start();
    let rucio = rucio(Some(op.issuer()));
    let user = User::new();
    let secret = user.secret_file("client.secret", "robot-secret", 0o600);
    // The token source: the provider's robot client, straight.
    let issuer = [
        ("CREDKEEPER_ISSUER", op.issuer()),
        ("CREDKEEPER_CLIENT_ID", "robot-client"),
        ("CREDKEEPER_CLIENT_SECRET_FILE", secret.to_str().unwrap()),
    ];
    // Then a client without WLCG token discovery (rucio-clients before 2025, as in the
    // seed-era image), which reads only the config's auth_token_file_path: with
    // BEARER_TOKEN_FILE hidden from it, it still gets the token there.
    let bin = rucio.get("RUCIO_BIN");
    for command in [
        format!("'{bin} whoami'"),
        format!("'env -u BEARER_TOKEN_FILE {bin} whoami'"),
    ] {
        let file = oidc_task(&user, &rucio, &command, "");
        let run = tasks_run(&user, &file, "long", &issuer)
            .ok()
            .never_shows(&["robot-secret"]);
        assert!(run.stdout.contains("account    : robot"), "{}", run.stdout);
        assert!(
            !run.stdout.contains("Cannot authenticate"),
            "{}",
            run.stdout
        );
    }

    // rucio-task-manager's values file has no `credentials`: its oidc cronjob gets the
    // token its client would ask for (here the server's scope and audience).
    let runner = user.path("rtm-run");
    std::fs::write(
        &runner,
        format!(
            "#!/bin/sh\ntest -f \"$TASK_FILE_PATH\" || exit 9\nexec {} whoami\n",
            rucio.get("RUCIO_BIN")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    let values = user.path("values.yaml");
    std::fs::write(
        &values,
        format!(
            "config:\n  RUCIO_CFG_RUCIO_HOST: {}\n  RUCIO_CFG_ACCOUNT: robot\n  RUCIO_CFG_AUTH_TYPE: oidc\n  RUCIO_CFG_CLIENT_OIDC_SCOPE: read\n  RUCIO_CFG_CLIENT_OIDC_AUDIENCE: https://api.test.example\ncronjobs:\n  - name: whoami\n    minute: '*/10'\n    task_file_yaml:\n      who:\n        module_name: tasks.who\n        class_name: Who\n",
            rucio.get("RUCIO_URL")
        ),
    )
    .unwrap();
    let run = tasks_run(
        &user,
        &values,
        "whoami",
        &[
            &issuer[..],
            &[("CREDKEEPER_TASKS_RUNNER", runner.to_str().unwrap())],
        ]
        .concat(),
    )
    .ok()
    .never_shows(&["robot-secret"]);
    assert!(run.stdout.contains("account    : robot"), "{}", run.stdout);
}

/// rucio-task-manager's runner stand-in: `rucio whoami` as upstream's tasks run it, then what
/// the task was given: both BEARER_TOKEN and BEARER_TOKEN_FILE (the same token), the Rucio
/// token cache (mode, and `rucio whoami` again finding the token only there: no bearer
/// variables, no auth_token_file_path), and how many of the routes' secrets it can see.
fn checking_runner(user: &User, rucio: &Peer) -> std::path::PathBuf {
    let runner = user.path("rtm-check");
    std::fs::write(
        &runner,
        format!(
            r#"#!/bin/sh
test -f "$TASK_FILE_PATH" || exit 9
{bin} whoami
test -n "$BEARER_TOKEN" && test "$BEARER_TOKEN" = "$(cat "$BEARER_TOKEN_FILE")" && echo "bearer: both"
cache=$(ls "$TMPDIR"/*/.rucio_*/auth_token_for_account_robot) && echo "cache: $(stat -c %a "$cache")"
grep -v '^auth_token_file_path' "$RUCIO_CONFIG" > "$TMPDIR/plain.cfg"
RUCIO_CONFIG=$TMPDIR/plain.cfg env -u BEARER_TOKEN -u BEARER_TOKEN_FILE {bin} whoami | sed 's/^/cache only: /'
echo "secrets seen: $(env | grep -c -e '^OIDC_CLIENT_SECRET=' -e '^OIDC_AGENT_AUTH_CLIENT_CFG')"
"#,
            bin = rucio.get("RUCIO_BIN")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).unwrap();
    runner
}

/// A values file whose one cronjob `whoami` runs as Rucio's account robot with auth type
/// oidc, its `config` holding `config` besides, its `secrets` read from `<secret-dir>/rtm/<NAME>`.
fn upstream_values(
    user: &User,
    rucio: &Peer,
    name: &str,
    config: &str,
    secrets: &[&str],
) -> std::path::PathBuf {
    let mut text = format!(
        "config:\n  RUCIO_CFG_CLIENT_RUCIO_HOST: {}\n  RUCIO_CFG_CLIENT_ACCOUNT: robot\n  RUCIO_CFG_CLIENT_AUTH_TYPE: oidc\n  RUCIO_CFG_CLIENT_OIDC_SCOPE: read\n  RUCIO_CFG_CLIENT_OIDC_AUDIENCE: https://api.test.example\n{config}",
        rucio.get("RUCIO_URL")
    );
    if !secrets.is_empty() {
        text.push_str("secrets:\n");
        for s in secrets {
            text.push_str(&format!(
                "  - name: {s}\n    fromSecretName: rtm\n    fromSecretKey: {s}\n"
            ));
        }
    }
    text.push_str("cronjobs:\n  - name: whoami\n    minute: 0\n    task_file_yaml:\n      who:\n        module_name: tasks.who\n        class_name: Who\n");
    let file = user.path(&format!("{name}.yaml"));
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn values_cronjobs_get_their_token_by_each_of_upstreams_routes_and_rucio_whoami_works() {
    let op = Op::start();
    // alice: the oidc-agent account's user; robot-client: client credentials.
    let rucio = Peer::start(
        "rucio",
        &[
            ("RUCIO_OIDC_ISSUER", op.issuer()),
            ("RUCIO_OIDC_SUBJECT", "alice,robot-client"),
        ],
        &[],
    );
    let user = User::new();
    let runner = checking_runner(&user, &rucio);
    let secret_dir = user.path("secrets");
    let rtm = secret_dir.join("rtm");
    std::fs::create_dir_all(&rtm).unwrap();
    let put = |name: &str, value: &str| std::fs::write(rtm.join(name), value).unwrap();
    // Nothing from credkeeper's own sources: no --server, no --issuer.
    let run = |values: &std::path::Path, mounted: Option<&std::path::Path>| {
        let mut cmd = user.cmd();
        // -v: the log line that names the route.
        cmd.args(["-v", "tasks", "run"])
            .arg(values)
            .args(["--task", "whoami", "--secret-dir"])
            .arg(&secret_dir)
            .arg("--access-token-file")
            .arg(mounted.map_or_else(|| user.path("no-mounted-token"), |m| m.to_path_buf()))
            .env("CREDKEEPER_TASKS_RUNNER", &runner);
        Run::from(cmd.output().unwrap())
    };
    let works = |r: &Run, route: &str| {
        assert!(
            r.stdout.contains("account    : robot") && !r.stdout.contains("Cannot authenticate"),
            "{route}: {}\n{}",
            r.stdout,
            r.stderr
        );
        assert!(r.stdout.contains("bearer: both\n"), "{route}: {}", r.stdout);
        assert!(r.stdout.contains("cache: 600\n"), "{route}: {}", r.stdout);
        assert!(
            r.stdout.contains("cache only: account    : robot"),
            "{route}: the client finds the token in its own cache: {}",
            r.stdout
        );
        assert!(
            r.stdout.contains("secrets seen: 0\n"),
            "{route}: {}",
            r.stdout
        );
        assert!(
            r.stderr
                .contains(&format!("bearer token from the task's {route}")),
            "{route}: {}",
            r.stderr
        );
    };

    // 2. Client credentials at OIDC_TOKEN_ENDPOINT, the secret from a mounted secret.
    put("OIDC_CLIENT_SECRET", "robot-secret");
    let cc = upstream_values(
        &user,
        &rucio,
        "client-credentials",
        &format!(
            "  OIDC_CLIENT_ID: robot-client\n  OIDC_TOKEN_ENDPOINT: {}\n",
            op.get("OP_TOKEN_ENDPOINT")
        ),
        &["OIDC_CLIENT_SECRET"],
    );
    let r = run(&cc, None).ok().never_shows(&["robot-secret"]);
    works(&r, "client credentials");

    // 3. An oidc-agent account made by the real oidc-gen (logged in as alice).
    let agent_file = user.path("agent.enc");
    let made = std::process::Command::new(testbed().join("oidc-agent-account.sh"))
        .arg(op.state_dir())
        .args(["rucio-auth", "agent-pass-1234"])
        .arg(&agent_file)
        .env("ACCOUNT_SCOPE", "openid offline_access read")
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "oidc-agent-account.sh: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    put("OIDC_AGENT_AUTH_CLIENT_CFG_VALUE", &read(&agent_file));
    put("OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD", "agent-pass-1234");
    let agent = upstream_values(
        &user,
        &rucio,
        "agent",
        "",
        &[
            "OIDC_AGENT_AUTH_CLIENT_CFG_VALUE",
            "OIDC_AGENT_AUTH_CLIENT_CFG_PASSWORD",
        ],
    );
    let r = run(&agent, None).ok().never_shows(&["agent-pass-1234"]);
    works(&r, "oidc-agent account");

    // 4. OIDC_ACCESS_TOKEN as given (a token the site got elsewhere), and 1. the same token
    // in a mounted file, which wins over everything else.
    let token_file = user.path("access_token");
    let secret = user.secret_file("robot.secret", "robot-secret", 0o600);
    let mut args = vec!["get"];
    args.extend(op.robot_client_args(&secret));
    args.extend([
        "-o",
        token_file.to_str().unwrap(),
        "--scopes",
        "read",
        "--audience",
        "https://api.test.example",
    ]);
    user.run(&args).ok();
    let token = read(&token_file).trim().to_string();
    put("OIDC_ACCESS_TOKEN", &token);
    let given = upstream_values(&user, &rucio, "given", "", &["OIDC_ACCESS_TOKEN"]);
    works(&run(&given, None).ok(), "OIDC_ACCESS_TOKEN");
    works(&run(&cc, Some(&token_file)).ok(), "mounted token file");

    // No route and no source: the run fails before the command starts, saying what to give.
    let none = upstream_values(&user, &rucio, "none", "", &[]);
    let r = run(&none, None).fails(1, "names no way to get one");
    assert!(!r.stdout.contains("account"), "{}", r.stdout);
}
