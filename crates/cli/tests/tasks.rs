//! `credkeeper tasks`: definitions checked before anything runs, a task run with a bearer
//! token from a real broker (`serve --dev`) in a private file that is gone afterwards, a
//! failed authentication that fails the run before the command starts, rucio-task-manager's
//! values file run through a runner with its secrets from a mounted volume, its own real
//! values files (`tests/data/rucio-task-manager/`) loaded as its chart loads them and an
//! inline task read back by PyYAML as its `run.py` reads it, a stop by
//! SIGTERM that leaves nothing behind, the scheduler's concurrency policies and reloads,
//! and a scheduler restart that makes up a missed run (or counts it missed).

mod common;
use common::*;
use std::process::Command;

struct Dev {
    user: User,
    broker: Broker,
    robot: String,
    secret_file: String,
}

fn dev() -> Dev {
    let user = User::new();
    let broker = Broker::start(&user, &user.path("state"), &["--dev"]);
    let words: Vec<String> = broker
        .stdout_first_line
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let at = |flag: &str| words[words.iter().position(|w| w == flag).unwrap() + 1].clone();
    Dev {
        robot: at("--robot"),
        secret_file: at("--secret-file"),
        user,
        broker,
    }
}

impl Dev {
    fn tasks(&self, args: &[&str]) -> Command {
        let mut cmd = self.user.cmd();
        cmd.arg("tasks")
            .args(args)
            .env("CREDKEEPER_SERVER", &self.broker.url)
            .env("CREDKEEPER_ROBOT", &self.robot)
            .env("CREDKEEPER_SECRET_FILE", &self.secret_file);
        cmd
    }

    fn write(&self, name: &str, text: &str) -> String {
        let p = self.user.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

#[test]
fn a_task_runs_with_a_fresh_bearer_token_in_a_private_file_that_is_gone_afterwards() {
    let d = dev();
    let seen = d.user.path("seen-token");
    let file = d.write(
        "tasks.yaml",
        &format!(
            "tasks:\n- name: copy-token\n  schedule: '*/10 * * * *'\n  shell: true\n  command: 'cp \"$BEARER_TOKEN_FILE\" {0}; stat -c %a \"$BEARER_TOKEN_FILE\"; echo \"$BEARER_TOKEN_FILE\" > {0}.path; cat \"$BEARER_TOKEN_FILE\"; echo \"$GREETING\"'\n  env: {{GREETING: 'hello {{{{ WHO }}}}'}}\n  credentials:\n    bearer: {{scopes: 'read:/data', audience: https://storage.example}}\n",
            seen.display()
        ),
    );
    // Validation first: WHO is not defined anywhere.
    let run = Run::from(d.tasks(&["validate", &file]).output().unwrap());
    run.fails(1, "task `copy-token` uses {{ WHO }}, which is not defined");
    let ok = Run::from(
        d.tasks(&["validate", &file])
            .env("WHO", "world")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(ok.stderr.contains("1 task(s) valid"));
    let listed = Run::from(
        d.tasks(&["list", &file])
            .env("WHO", "s3cret-value")
            .output()
            .unwrap(),
    )
    .ok();
    assert!(
        listed.stdout.contains("copy-token") && listed.stdout.contains("*/10 * * * * (UTC)"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains("s3cret-value"));

    let prom = d.user.path("copy-token.prom");
    let out = Run::from(
        d.tasks(&["run", &file, "--task", "copy-token"])
            .env("CREDKEEPER_TASKS_METRICS", &prom)
            .env("WHO", "world")
            .output()
            .unwrap(),
    )
    .ok();
    // Neither the token nor a templated value reaches the captured output.
    assert_eq!(out.stdout, "600\n[redacted]\nhello [redacted]\n");
    let c = claims(&read(&seen));
    assert_eq!(c["scope"], "read:/data");
    assert_eq!(c["aud"], "https://storage.example");
    let path = read(std::path::Path::new(&format!("{}.path", seen.display())));
    assert!(
        !std::path::Path::new(path.trim()).exists(),
        "the run's token file is removed"
    );
    let audit = last_audit(&d.broker.state);
    assert_eq!(
        (audit["robot"].as_str(), audit["result"].as_str()),
        (Some(d.robot.as_str()), Some("vended"))
    );
    // A CronJob's run leaves the task's metrics, from its history, for the node exporter.
    let metrics = read(&prom);
    assert!(
        metrics.contains("credkeeper_task_succeeded_total{task=\"copy-token\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("credkeeper_task_failed_total{task=\"copy-token\"} 0\n"),
        "{metrics}"
    );
    // The run is in the history, its output as captured (redacted).
    let history = d
        .user
        .run(&["tasks", "history", "copy-token", "--output"])
        .ok();
    assert!(
        history.stdout.contains("      0        1  ok"),
        "{}",
        history.stdout
    );
    assert!(
        history.stdout.contains("    | hello [redacted]"),
        "{}",
        history.stdout
    );
    // The list shows the last run and its result.
    let listed = Run::from(d.tasks(&["list", &file]).output().unwrap()).ok();
    let row = listed.stdout.lines().nth(1).unwrap().to_string();
    assert!(
        row.starts_with("copy-token") && row.ends_with(" ok") && row.contains("enabled"),
        "{}",
        listed.stdout
    );
}

#[test]
fn a_failed_authentication_fails_the_run_and_the_command_never_starts() {
    let d = dev();
    let marker = d.user.path("ran");
    let file = d.write(
        "tasks.yaml",
        &format!(
            "tasks:\n- name: guarded\n  schedule: '@hourly'\n  command: [touch, '{}']\n  credentials:\n    bearer: {{scopes: 'compute.admin'}}\n",
            marker.display()
        ),
    );
    let out = Run::from(
        d.tasks(&["run", &file, "--task", "guarded"])
            .output()
            .unwrap(),
    );
    out.fails(1, "authentication failed: the broker refused");
    assert!(!marker.exists());
    let history = d.user.run(&["tasks", "history", "guarded"]).ok();
    assert!(
        history.stdout.contains("authentication failed"),
        "{}",
        history.stdout
    );
    let listed = Run::from(d.tasks(&["list", &file]).output().unwrap()).ok();
    assert!(
        listed
            .stdout
            .lines()
            .nth(1)
            .unwrap()
            .contains(" authentication failed: "),
        "{}",
        listed.stdout
    );
    // Without a broker at all: a clear error before anything runs.
    let mut cmd = d.user.cmd();
    cmd.args(["tasks", "run", &file, "--task", "guarded"]);
    Run::from(cmd.output().unwrap()).fails(1, "a broker with --server");
}

#[test]
fn bearer_token_is_given_in_the_environment_only_when_asked_and_an_inherited_one_never() {
    let d = dev();
    let file = d.write(
        "tasks.yaml",
        "tasks:\n- name: plain\n  schedule: '@hourly'\n  shell: true\n  command: 'echo \"${BEARER_TOKEN:-none}\"'\n  credentials: {bearer: {scopes: 'read:/data'}}\n- name: exported\n  schedule: '@hourly'\n  shell: true\n  command: 'test \"$BEARER_TOKEN\" = \"$(cat \"$BEARER_TOKEN_FILE\")\" && echo same'\n  credentials: {bearer: {scopes: 'read:/data', env: true}}\n",
    );
    for (task, printed) in [("plain", "none\n"), ("exported", "same\n")] {
        let mut run = d.tasks(&["run", &file, "--task", task]);
        // credkeeper's own environment holds a stale token: WLCG discovery would prefer it.
        run.env("BEARER_TOKEN", "stale-inherited-token");
        let out = Run::from(run.output().unwrap()).ok();
        assert_eq!(out.stdout, printed, "{task}: {}", out.stderr);
    }
}

#[test]
fn rucio_task_managers_values_file_runs_through_the_runner_with_its_secrets() {
    let d = dev();
    let secrets = d.user.path("secrets");
    std::fs::create_dir_all(secrets.join("task-stubs")).unwrap();
    std::fs::write(
        secrets.join("task-stubs/text"),
        "hello from the secret volume\n",
    )
    .unwrap();
    let runner = d.write(
        "runner.sh",
        "#!/bin/sh\necho \"account=$RUCIO_CFG_ACCOUNT\"\nstat -c %a \"$TASK_FILE_PATH\"\ncat \"$TASK_FILE_PATH\"\n",
    );
    Command::new("chmod")
        .args(["755", &runner])
        .status()
        .unwrap();
    // The seed's values file, with its unquoted template.
    let values = d.write(
        "values.yaml",
        "config:\n  RUCIO_CFG_ACCOUNT: robot\n  TASK_MANAGER_ENV: test\nsecrets:\n  - name: TASK_STUBS_TEXT\n    fromSecretName: task-stubs\n    fromSecretKey: text\ncronjobs:\n  - name: stubs\n    minute: \"*/15\"\n    hour: \"*\"\n    day: \"*\"\n    month: \"*\"\n    weekday: \"*\"\n    task_file_yaml:\n      test-hello-world-stub:\n        description: Test hello world stub\n        module_name: tasks.stubs\n        class_name: StubHelloWorld\n        enabled: true\n        args:\n        kwargs:\n          text: {{ TASK_STUBS_TEXT }}\n  - name: old\n    task_file_relpath: etc/tasks/old.yml\n    disabled: yes\n",
    );
    let secret_dir = secrets.display().to_string();
    let flags = ["--runner", &runner, "--secret-dir", &secret_dir];
    let mut validate = d.tasks(&["validate", &values]);
    validate.args(flags);
    Run::from(validate.output().unwrap()).ok();
    let mut list = d.tasks(&["list", &values]);
    list.args(flags);
    let listed = Run::from(list.output().unwrap()).ok();
    // A disabled cronjob is skipped as the chart skips it, whatever it holds.
    assert!(
        listed.stdout.contains("stubs") && !listed.stdout.contains("old"),
        "{}",
        listed.stdout
    );
    let mut run = d.tasks(&["run", &values, "--task", "stubs"]);
    run.args(flags);
    let out = Run::from(run.output().unwrap()).ok();
    assert!(
        out.stdout.starts_with("account=robot\n600\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("\"module_name\": \"tasks.stubs\""),
        "{}",
        out.stdout
    );
    // The secret's value went into the task file, and is redacted from what was captured.
    assert!(
        out.stdout.contains("\"text\": \"[redacted]\""),
        "{}",
        out.stdout
    );
    // The secret missing from the volume: validation names it.
    std::fs::remove_file(secrets.join("task-stubs/text")).unwrap();
    let mut validate = d.tasks(&["validate", &values]);
    validate.args(flags);
    Run::from(validate.output().unwrap()).fails(1, "secret task-stubs/text is not mounted");
}

/// rucio-task-manager's own files (`tests/data/rucio-task-manager/`, see its README).
fn upstream(name: &str) -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/rucio-task-manager")
        .join(name)
        .display()
        .to_string()
}

/// The task names `tasks list` printed.
fn listed(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn rucio_task_managers_own_values_files_load_as_helm_loads_them() {
    // A broker whose robot may have what an oidc cronjob's Rucio client asks for: its
    // default scope `openid profile` and audience `rucio`.
    let user = User::new();
    let config = user.path("broker.toml");
    std::fs::write(
        &config,
        "[[robot]]\nname = \"tasks\"\nauth = { secret = true }\nproviders = [\"local\"]\nscopes = [\"openid\", \"profile\"]\naudiences = [\"rucio\"]\n",
    )
    .unwrap();
    let state = user.path("state");
    robot_secrets(&user, &config, &state, &["tasks"]);
    let broker = Broker::start(&user, &state, &["--config", config.to_str().unwrap()]);
    let d = Dev {
        robot: "tasks".into(),
        secret_file: user.path("tasks.secret").display().to_string(),
        user,
        broker,
    };
    // The secret volume a site mounts: <fromSecretName>/<fromSecretKey>, for every secret
    // the files name (a missing one keeps the chart's pod from starting, and fails here).
    // The oidc-agent account is empty, so upstream's agent route is not taken and the token
    // comes from the broker (each route's own test is in rucio_tasks.rs).
    let secrets = d.user.path("secrets");
    for (name, value) in [
        ("oidc-agent-auth-client/cfg", ""),
        ("oidc-agent-auth-client/password", "agent-password"),
        ("kube/cfg.dev", "apiVersion: v1"),
        ("rucio-cfg-client/certificate", "cert"),
        ("rucio-cfg-client/key", "key"),
        ("oidc-service-client/id", "client-id"),
        ("oidc-service-client/secret", "client-secret"),
        ("task-sync-iam-rucio/client_secret", "1234567890"),
    ] {
        let p = secrets.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }
    let secret_dir = secrets.display().to_string();
    // Each file validates and lists the cronjobs its chart would deploy: not the disabled
    // ones (two with the legacy task_file_relpath), whatever their schedules' types.
    for (file, cronjobs) in [
        ("values.template-b10a941.yaml", &["stubs"][..]),
        ("values-f2c437f.yaml", &["sync-iam-rucio"][..]),
        ("values.dev-6518646.yaml", &["sync-iam-rucio-dev"][..]),
        ("values-d536744.yaml", &[][..]),
    ] {
        let path = upstream(file);
        let mut validate = d.tasks(&["validate", &path, "--secret-dir", &secret_dir]);
        let valid = Run::from(validate.output().unwrap()).ok();
        assert!(
            valid
                .stderr
                .contains(&format!("{} task(s) valid", cronjobs.len())),
            "{file}: {}",
            valid.stderr
        );
        let list = Run::from(d.tasks(&["list", &path]).output().unwrap()).ok();
        assert_eq!(listed(&list.stdout), cronjobs, "{file}: {}", list.stdout);
    }

    // Its inline task, through a runner that reads the task file as run.py does (PyYAML
    // safe_load): the secret filled in is still the string it is, whatever its characters.
    let runner = d.write(
        "runner.py",
        &format!(
            r#"#!/usr/bin/env python3
import os, yaml
tasks = yaml.safe_load(open(os.environ["TASK_FILE_PATH"]))
kwargs = tasks["sync-iam-rucio-dev"]["kwargs"]
secret = open("{secret}").read().rstrip("\n")
print("tasks", list(tasks))
print("secret", type(kwargs["client_secret"]).__name__, kwargs["client_secret"] == secret)
print("dry_run", repr(kwargs["dry_run"]), "quota", repr(kwargs["rse_quota"]))
print("groups", kwargs["rucio_user_iam_groups"], "args", tasks["sync-iam-rucio-dev"]["args"])
print("VOMS", os.environ["VOMS"], "username", repr(os.environ.get("RUCIO_CFG_USERNAME")))
print("kube", os.environ["KUBE_CONFIG_VALUE"] == "apiVersion: v1")
"#,
            secret = secrets.join("task-sync-iam-rucio/client_secret").display()
        ),
    );
    Command::new("chmod")
        .args(["755", &runner])
        .status()
        .unwrap();
    let run = |secret: &str| {
        std::fs::write(secrets.join("task-sync-iam-rucio/client_secret"), secret).unwrap();
        let mut run = d.tasks(&[
            "run",
            &upstream("values-f2c437f.yaml"),
            "--task",
            "sync-iam-rucio",
            "--runner",
            &runner,
            "--secret-dir",
            &secret_dir,
        ]);
        Run::from(run.output().unwrap()).ok().never_shows(&[secret])
    };
    for secret in ["1234567890", "%Tq8&zL@2!'\"\\ x: {y}"] {
        let out = run(secret);
        assert!(
            out.stdout.starts_with(
                "tasks ['sync-iam-rucio-dev']\nsecret str True\ndry_run False quota 1000000000000\ngroups ['escape/ska'] args None\nVOMS skatelescope.eu username None\nkube True\n"
            ),
            "{}\n{}",
            out.stdout,
            out.stderr
        );
    }

    // No --runner: upstream's entry point, `python3 src/run.py -vt "$TASK_FILE_PATH"`,
    // in its directory, where today's `stubs` cronjob's relative task_file_path is. A
    // stand-in run.py there reads its -t file with PyYAML as the real one does.
    let root = d.user.path("rucio-task-manager");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join("etc/tasks")).unwrap();
    std::fs::copy(
        upstream("stubs-b10a941.yml"),
        root.join("etc/tasks/stubs.yml"),
    )
    .unwrap();
    std::fs::write(
        root.join("src/run.py"),
        "import os, sys, yaml\nprint(sys.argv[1:], os.getcwd())\nprint(list(yaml.safe_load(open(sys.argv[2]))))\n",
    )
    .unwrap();
    let mut stubs = d.tasks(&[
        "run",
        &upstream("values.template-b10a941.yaml"),
        "--task",
        "stubs",
        "--secret-dir",
        &secret_dir,
        "--runner-dir",
        root.to_str().unwrap(),
    ]);
    let out = Run::from(stubs.output().unwrap()).ok();
    assert_eq!(
        out.stdout,
        format!(
            "['-vt', 'etc/tasks/stubs.yml'] {}\n['test-hello-world-stub', 'test-rucio-api-stub']\n",
            root.display()
        )
    );
}

#[test]
fn a_task_stopped_by_sigterm_leaves_no_credentials_and_a_killed_runs_are_swept_next_time() {
    let d = dev();
    let started = d.user.path("started");
    let file = d.write(
        "tasks.yaml",
        &format!(
            "tasks:\n- name: long\n  schedule: '@hourly'\n  shell: true\n  command: 'echo \"$BEARER_TOKEN_FILE $$\" > {}; sleep 60'\n  credentials:\n    bearer: {{scopes: 'read:/data'}}\n- name: quick\n  schedule: '@hourly'\n  command: ['true']\n",
            started.display()
        ),
    );
    // The run's token file and the task's shell pid, once it has started.
    let start = || {
        std::fs::write(&started, "").unwrap();
        let mut cmd = d.tasks(&["run", &file, "--task", "long"]);
        cmd.env("XDG_RUNTIME_DIR", d.user.home.path());
        let child = cmd.spawn().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while read(&started).trim().is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the task did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let seen = read(&started);
        let (token_file, pid) = seen.trim().split_once(' ').unwrap();
        assert!(std::path::Path::new(token_file).exists());
        (child, token_file.to_string(), pid.parse::<i32>().unwrap())
    };
    let (mut child, token_file, _) = start();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    assert!(
        !std::path::Path::new(&token_file).exists(),
        "the token file is removed on SIGTERM"
    );

    // SIGKILL leaves no chance to clean up: the next credkeeper removes what was left.
    let (mut child, token_file, task_pid) = start();
    // SAFETY: kill(2) on our own child, then on the process group the task leads.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    unsafe { libc::kill(-task_pid, libc::SIGKILL) };
    let run_dir = std::path::Path::new(&token_file).parent().unwrap();
    assert!(run_dir.exists(), "left behind by SIGKILL");
    let mut cmd = d.tasks(&["run", &file, "--task", "quick"]);
    cmd.env("XDG_RUNTIME_DIR", d.user.home.path());
    let next = Run::from(cmd.output().unwrap()).ok();
    assert!(!run_dir.exists(), "swept by the next run");
    assert!(
        next.stderr.contains("removed") && next.stderr.contains(&run_dir.display().to_string()),
        "{}",
        next.stderr
    );
}

#[test]
fn the_scheduler_runs_tasks_when_due_with_their_concurrency_policy_and_reloads() {
    let d = dev();
    let dir = d.user.home.path().display().to_string();
    let file = d.write(
        "sched.yaml",
        &format!(
            "tasks:\n\
- name: tick\n  schedule: '@every 1s'\n  shell: true\n  command: 'date +%s >> {dir}/ticks'\n\
- name: forbid\n  schedule: '@every 1s'\n  concurrency: Forbid\n  shell: true\n  command: 'mkdir {dir}/lock 2>/dev/null || echo OVERLAP >> {dir}/forbid; echo run >> {dir}/forbid; sleep 2.5; rmdir {dir}/lock'\n\
- name: replace\n  schedule: '@every 1s'\n  concurrency: Replace\n  shell: true\n  command: 'echo start >> {dir}/replace; sleep 5; echo end >> {dir}/replace'\n"
        ),
    );
    let metrics = d.user.path("tasks.prom");
    let mut cmd = d.tasks(&[
        "serve",
        &file,
        "--grace",
        "2",
        "--metrics-file",
        metrics.to_str().unwrap(),
    ]);
    cmd.env("XDG_RUNTIME_DIR", d.user.home.path());
    let mut serve = Spawned::start(cmd);
    serve.wait_for("task(s) scheduled");
    std::thread::sleep(std::time::Duration::from_millis(5500));
    // A new task in the file: picked up without a restart.
    let mut text = read(std::path::Path::new(&file));
    text.push_str(&format!(
        "- name: added\n  schedule: '@every 1s'\n  shell: true\n  command: 'echo added >> {dir}/added'\n"
    ));
    std::fs::write(&file, &text).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(4500));
    // A reload with an undefined name is refused as the start would be; the tasks in
    // effect keep running.
    std::fs::write(
        &file,
        format!(
            "{text}- name: broken\n  schedule: '@every 1s'\n  command: [echo, '{{{{ NOPE }}}}']\n"
        ),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (code, log) = serve.terminate();
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("reload failed, keeping the definitions in effect")
            && log.contains("task `broken` uses {{ NOPE }}, which is not defined"),
        "{log}"
    );
    let lines = |name: &str| {
        read(&d.user.path(name))
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(lines("ticks").len() >= 7, "{:?}", lines("ticks"));
    let forbid = lines("forbid");
    assert!(
        !forbid.contains(&"OVERLAP".to_string()),
        "Forbid never overlaps: {forbid:?}"
    );
    assert!(forbid.len() >= 2, "{forbid:?}");
    let replace = lines("replace");
    assert!(
        replace.iter().filter(|l| *l == "start").count() >= 5,
        "{replace:?}"
    );
    assert!(
        !replace.contains(&"end".to_string()),
        "each run was replaced by the next: {replace:?}"
    );
    assert!(!lines("added").is_empty(), "the reloaded definition ran");
    assert!(log.contains("due run skipped: Forbid"), "{log}");
    let prom = read(&metrics);
    let count = |family: &str, task: &str| -> u64 {
        let prefix = format!("{family}{{task=\"{task}\"}} ");
        prom.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("credkeeper_task_succeeded_total", "tick") >= 7,
        "{prom}"
    );
    assert!(
        count("credkeeper_task_skipped_total", "forbid") >= 1,
        "{prom}"
    );
    assert!(
        count("credkeeper_task_last_success_timestamp_seconds", "tick") > 1_700_000_000,
        "{prom}"
    );
    let history = d.user.run(&["tasks", "history", "tick"]).ok();
    assert!(history.stdout.lines().count() >= 7, "{}", history.stdout);
    // Nothing of any run is left in the runtime directory.
    let leftovers: Vec<_> = std::fs::read_dir(d.user.home.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("credkeeper-task-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_scheduler_restart_makes_up_a_missed_run_within_its_deadline_and_counts_the_rest() {
    let user = User::new();
    let dir = user.home.path().display().to_string();
    let file = user.path("sched.yaml");
    std::fs::write(
        &file,
        format!(
            "tasks:\n\
- name: made-up\n  schedule: '@every 10s'\n  startingDeadlineSeconds: 60\n  shell: true\n  command: 'date +%s >> {dir}/made-up'\n\
- name: too-late\n  schedule: '@every 10s'\n  startingDeadlineSeconds: 2\n  shell: true\n  command: 'date +%s >> {dir}/too-late'\n"
        ),
    )
    .unwrap();
    let metrics = user.path("tasks.prom");
    let serve = || {
        let mut cmd = user.cmd();
        cmd.args(["-v", "tasks", "serve"])
            .arg(&file)
            .args(["--metrics-file", metrics.to_str().unwrap()]);
        let mut s = Spawned::start(cmd);
        s.wait_for("task(s) scheduled");
        s
    };
    let lines = |name: &str| -> Vec<i64> {
        std::fs::read_to_string(user.path(name))
            .unwrap_or_default()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let until = |what: &str, ok: &dyn Fn() -> bool, secs: u64| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while !ok() {
            assert!(
                std::time::Instant::now() < end,
                "waited {secs} s for {what}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let recorded = |task: &str, runs: usize| {
        let out = user.run(&["tasks", "history", task]);
        out.code == 0 && out.stdout.lines().count() == runs + 1
    };
    let stop = |s: Spawned| {
        let (code, log) = s.terminate();
        assert_eq!(code, 0, "{log}");
        log
    };

    // Both run at the first 10 s slot; the scheduler then goes down.
    let first = serve();
    until(
        "the first runs",
        &|| recorded("made-up", 1) && recorded("too-late", 1),
        25,
    );
    stop(first);
    let slot = lines("made-up")[0] / 10 * 10;
    // Down over the next slot; back 3 s after it, 7 s before the one after.
    let back = slot + 13;
    let now = chrono_now();
    assert!(now < back, "the first run was recorded late");
    std::thread::sleep(std::time::Duration::from_secs((back - now) as u64));

    let second = serve();
    until("the made-up run", &|| lines("made-up").len() == 2, 5);
    let made_up_at = lines("made-up")[1];
    assert!(
        made_up_at < slot + 20,
        "made up at start ({made_up_at}), not at the next slot ({})",
        slot + 20
    );
    assert_eq!(
        lines("too-late").len(),
        1,
        "3 s late is past its 2 s deadline"
    );
    let prom = read(&metrics);
    for (task, missed) in [("made-up", 0), ("too-late", 1)] {
        assert!(
            prom.contains(&format!(
                "credkeeper_task_missed_total{{task=\"{task}\"}} {missed}\n"
            )) || (missed == 0 && !prom.contains(&format!("missed_total{{task=\"{task}\"}}"))),
            "{prom}"
        );
    }
    let log = stop(second);
    assert!(
        log.contains("making up a run missed while the scheduler was down"),
        "{log}"
    );
    assert!(
        log.contains("runs missed while the scheduler was down"),
        "{log}"
    );
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_secret_kept_in_the_store_fills_the_environment_sealed_and_never_the_command_line() {
    let user = User::new();
    let set = |name: &str, stdin: &str| {
        let mut cmd = user.cmd();
        cmd.args(["tasks", "secret", "set", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        // A name refused before the value is read may close the pipe first.
        if let Err(e) = written {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
        Run::from(child.wait_with_output().unwrap())
    };
    set("DB_PASSWORD", "store-secret-value\n")
        .ok()
        .never_shows(&["store-secret-value"]);
    set("1BAD", "x").fails(1, "`1BAD` cannot be a {{ NAME }}");
    set("EMPTY", "\n").fails(1, "the value of EMPTY is empty; nothing was stored");
    let listed = user.run(&["tasks", "secret", "list"]).ok();
    assert!(listed.stdout.contains("DB_PASSWORD"), "{}", listed.stdout);
    assert!(!listed.stdout.contains("EMPTY") && !listed.stdout.contains("store-secret"));

    let out = user.path("seen");
    let file = user.path("tasks.yaml");
    std::fs::write(
        &file,
        format!(
            "tasks:\n- name: env\n  schedule: '@hourly'\n  shell: true\n  command: 'echo \"$DB_PASSWORD\" > {}; echo \"password is $DB_PASSWORD\"'\n  env: {{DB_PASSWORD: '{{{{ DB_PASSWORD }}}}'}}\n- name: argv\n  schedule: '@hourly'\n  command: [echo, '{{{{ DB_PASSWORD }}}}']\n",
            out.display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    user.run(&["tasks", "validate", f]).fails(
        1,
        "task `argv`: {{ DB_PASSWORD }} is a secret and would be on the command line",
    );
    let run = user.run(&["tasks", "run", f, "--task", "env"]).ok();
    assert_eq!(run.stdout, "password is [redacted]\n");
    assert_eq!(read(&out), "store-secret-value\n");
    user.run(&["tasks", "run", f, "--task", "argv"])
        .fails(1, "would be on the command line")
        .never_shows(&["store-secret-value"]);
    let history = user
        .run(&["tasks", "history", "env", "--output"])
        .ok()
        .never_shows(&["store-secret-value"]);
    assert!(history.stdout.contains("[redacted]"), "{}", history.stdout);
    let state = user.path(".local/share/credkeeper");
    assert!(
        state.join("credentials.db").is_file(),
        "the store is where we look"
    );
    assert_no_file_holds(&state, "store-secret-value");

    // Forgotten: the name is undefined again, and says where it could come from.
    user.run(&["tasks", "secret", "delete", "DB_PASSWORD"]).ok();
    user.run(&["tasks", "secret", "delete", "DB_PASSWORD"])
        .fails(1, "no secret DB_PASSWORD");
    std::fs::write(&out, "").unwrap();
    user.run(&["tasks", "run", f, "--task", "env"])
        .fails(1, "{{ DB_PASSWORD }}, which is not defined")
        .fails(1, "credkeeper tasks secret set DB_PASSWORD");
    assert_eq!(read(&out), "", "the command never started");
}

#[test]
fn a_task_gets_its_declared_environment_and_nothing_else_of_the_schedulers() {
    let user = User::new();
    let file = user.path("env.yaml");
    std::fs::write(
        &file,
        r#"tasks:
- name: env
  schedule: '@hourly'
  command: [sh, -c, 'echo "canary=${SCHEDULER_CANARY:-none} wanted=${WANTED:-none} mine=$MINE home=${HOME:+set} path=${PATH:+set} lang=$LANG lc=$LC_TIME"']
  inherit: [WANTED]
  env: {MINE: x}
"#,
    )
    .unwrap();
    // A secret exported to the scheduler (CI variables, a shell's history of exports).
    let with_env = |cmd: &mut Command| {
        cmd.env("SCHEDULER_CANARY", "s3cret-canary")
            .env("WANTED", "yes")
            .env("LANG", "C.UTF-8")
            .env("LC_TIME", "C");
    };
    let mut cmd = user.cmd();
    cmd.args(["tasks", "run"])
        .arg(&file)
        .args(["--task", "env"]);
    with_env(&mut cmd);
    let out = Run::from(cmd.output().unwrap()).ok();
    assert_eq!(
        out.stdout,
        "canary=none wanted=yes mine=x home=set path=set lang=C.UTF-8 lc=C\n"
    );

    // A values cronjob: the format has no key for it, so --inherit-env names it; the
    // runner is argv as a shell splits it, quotes keeping a word whole.
    let values = user.path("values.yaml");
    std::fs::write(
        &values,
        "config:\n  VOMS: skatelescope.eu\ncronjobs:\n  - name: env\n    minute: 0\n    task_file_yaml:\n      t:\n        module_name: m\n        class_name: C\n",
    )
    .unwrap();
    let mut cmd = user.cmd();
    cmd.args(["tasks", "run"])
        .arg(&values)
        .args([
            "--task",
            "env",
            "--inherit-env",
            "WANTED",
            "--runner",
            r#"sh -c 'echo "$0" a  b; echo ${WANTED:-none} ${SCHEDULER_CANARY:-none} $VOMS' 'one  word'"#,
        ]);
    with_env(&mut cmd);
    let out = Run::from(cmd.output().unwrap()).ok();
    assert_eq!(out.stdout, "one  word a b\nyes none skatelescope.eu\n");

    // Names that are not variable names are refused, naming the task.
    std::fs::write(
        &file,
        "tasks:\n- name: env\n  schedule: '@hourly'\n  command: ['true']\n  inherit: [NOT-A-NAME]\n",
    )
    .unwrap();
    user.run(&["tasks", "validate", file.to_str().unwrap()])
        .fails(
            1,
            "task `env`: inherit: `NOT-A-NAME` is not an environment variable name",
        );
    // An unclosed quote in --runner is an error, not a split guess.
    user.run(&[
        "tasks",
        "validate",
        values.to_str().unwrap(),
        "--runner",
        "sh -c 'echo",
    ])
    .fails(1, "--runner `sh -c 'echo`");
}
