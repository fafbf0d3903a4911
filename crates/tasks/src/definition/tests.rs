//! The task definitions' specification: each reader and check, on the files users write.

use super::placeholders::PLACEHOLDER;
use super::*;

struct Env(BTreeMap<&'static str, &'static str>);
impl Vars for Env {
    fn get(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.to_string())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `dir/secrets` laid out as a mounted secret volume: `<fromSecretName>/<fromSecretKey>`.
fn secret_volume(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let secrets = dir.join("secrets");
    for (name, value) in files {
        let p = secrets.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }
    secrets
}

#[test]
fn credkeepers_own_tasks_read_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "tasks.yaml",
        "tasks:\n- name: whoami\n  schedule: '*/5 * * * *'\n  command: [rucio, whoami, --account, '{{ ACCOUNT }}']\n  env: {X: 'a {{ ACCOUNT }}'}\n  timeout: 2m\n  retries: 2\n  backoff: 10s\n  concurrency: Forbid\n  startingDeadlineSeconds: 120\n  jitter: 5s\n  credentials: {bearer: {scopes: 'read:/data', audience: https://rucio.example}}\n",
    );
    let tasks = load(&p, &Options::default()).unwrap();
    let t = &tasks[0];
    assert_eq!(
        (t.timeout_secs, t.retries, t.backoff_secs, t.jitter_secs),
        (Some(120), 2, 10, 5)
    );
    assert_eq!(t.concurrency, Concurrency::Forbid);
    assert_eq!(t.starting_deadline_secs, Some(120));
    assert_eq!(t.names, vec!["ACCOUNT"]);
    assert!(
        t.command[3].starts_with(PLACEHOLDER),
        "a placeholder, not a value"
    );
    let vars = Env(BTreeMap::from([("ACCOUNT", "robot")]));
    let r = t.render(&vars, &Options::default()).unwrap();
    assert_eq!(r.command, vec!["rucio", "whoami", "--account", "robot"]);
    assert_eq!(r.env["X"], "a robot");
    let err = validate(&tasks, &Env(BTreeMap::new()), &Options::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("task `whoami` uses {{ ACCOUNT }}, which is not defined"),
        "{err}"
    );
}

#[test]
fn a_secret_is_refused_on_the_command_line_and_allowed_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("DB_PASSWORD"), "s3cr3t-value\n").unwrap();
    struct Vars(crate::template::Sources);
    impl crate::template::Vars for Vars {
        fn get(&self, name: &str) -> Option<String> {
            (name == "ACCOUNT")
                .then(|| "robot".to_string())
                .or_else(|| self.0.get(name))
        }
        fn is_secret(&self, name: &str) -> bool {
            self.0.is_secret(name)
        }
    }
    let vars = Vars(crate::template::Sources {
        env: false,
        dirs: vec![volume],
        store: None,
    });
    let p = write(
        dir.path(),
        "tasks.yaml",
        "tasks:\n- name: argv\n  schedule: '@hourly'\n  command: [db-dump, --account, '{{ ACCOUNT }}', --password, '{{ DB_PASSWORD }}']\n- name: shell\n  schedule: '@hourly'\n  shell: true\n  command: 'db-dump --password {{ DB_PASSWORD }}'\n- name: env\n  schedule: '@hourly'\n  command: [db-dump, --account, '{{ ACCOUNT }}']\n  env: {DB_PASSWORD: '{{ DB_PASSWORD }}'}\n",
    );
    let tasks = load(&p, &Options::default()).unwrap();
    let options = Options::default();
    for (t, how) in [
        (&tasks[0], "have the command read it from its environment"),
        (&tasks[1], "refer to it as \"$DB_PASSWORD\" in the command"),
    ] {
        for err in [
            validate(std::slice::from_ref(t), &vars, &options).unwrap_err(),
            t.render(&vars, &options).err().unwrap(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains(&format!(
                    "task `{}`: {{{{ DB_PASSWORD }}}} is a secret and would be on the command line",
                    t.name
                )),
                "{err}"
            );
            assert!(err.contains(how), "{err}");
            assert!(!err.contains("s3cr3t"), "{err}");
        }
    }
    // In the environment it is where it belongs; a plain value may stay in argv.
    validate(&tasks[2..], &vars, &options).unwrap();
    let r = tasks[2].render(&vars, &options).unwrap();
    assert_eq!(r.command, vec!["db-dump", "--account", "robot"]);
    assert_eq!(r.env["DB_PASSWORD"], "s3cr3t-value");
    assert!(r.secrets.contains(&"s3cr3t-value".to_string()));
}

#[test]
fn rucio_task_manager_values_read_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secret_volume(dir.path(), &[("task-stubs/text", "hello from a secret")]);
    // The seed's example, unquoted template and all.
    let p = write(
        dir.path(),
        "values.yaml",
        "config:\n  RUCIO_CFG_RUCIO_HOST: https://rucio.example\n  RUCIO_CFG_AUTH_TYPE: userpass\nsecrets:\n  - name: TASK_STUBS_TEXT\n    fromSecretName: task-stubs\n    fromSecretKey: text\ncronjobs:\n  - name: stubs\n    minute: \"*/15\"\n    hour: \"*\"\n    day: \"*\"\n    month: \"*\"\n    weekday: \"*\"\n    task_file_yaml:\n      test-hello-world-stub:\n        description: Test hello world stub\n        module_name: tasks.stubs\n        class_name: StubHelloWorld\n        enabled: true\n        args:\n        kwargs:\n          text: {{ TASK_STUBS_TEXT }}\n  - name: by-path\n    minute: \"0\"\n    task_file_path: etc/tasks/stubs.yml\n",
    );
    let options = Options {
        runner: vec!["run-task-manager".into()],
        secret_dirs: vec![secrets.clone()],
        runner_dir: None,
        bearer_token_env: false,
        inherit: vec![],
    };
    let tasks = load(&p, &options).unwrap();
    assert_eq!(tasks.len(), 2);
    let stubs = &tasks[0];
    assert_eq!(stubs.schedule.describe(), "*/15 * * * * (UTC)");
    assert!(
        stubs.names.is_empty(),
        "declared secrets are defined: {:?}",
        stubs.names
    );
    validate(&tasks, &Env(BTreeMap::new()), &options).unwrap();
    let r = stubs.render(&Env(BTreeMap::new()), &options).unwrap();
    assert_eq!(r.env["TASK_STUBS_TEXT"], "hello from a secret");
    assert_eq!(r.env["RUCIO_CFG_RUCIO_HOST"], "https://rucio.example");
    assert!(
        r.task_file
            .unwrap()
            .contains("\"text\": \"hello from a secret\"")
    );
    assert!(r.secrets.contains(&"hello from a secret".to_string()));
    assert_eq!(tasks[1].env["TASK_FILE_PATH"], "etc/tasks/stubs.yml");
    assert_eq!(
        stubs.credentials.bearer, None,
        "userpass needs no bearer token"
    );
    // An oidc cronjob gets the bearer token its Rucio client would ask for.
    let oidc = write(
        dir.path(),
        "oidc.yaml",
        "config:\n  RUCIO_CFG_AUTH_TYPE: oidc\n  RUCIO_CFG_CLIENT_OIDC_AUDIENCE: https://rucio.example\ncronjobs:\n  - name: o\n    task_file_path: etc/tasks/o.yml\n",
    );
    let o = load(&oidc, &options).unwrap().remove(0);
    assert_eq!(
        o.credentials.bearer,
        Some(BearerSpec {
            provider: None,
            scopes: Scopes::parse("openid profile"),
            audience: Some("https://rucio.example".into()),
            env: false,
            upstream_routes: true,
        })
    );
    // The CLI default (no --no-bearer-token-env): the token also in BEARER_TOKEN, as upstream's entry point.
    let exported = Options {
        bearer_token_env: true,
        ..options.clone()
    };
    let o = load(&oidc, &exported).unwrap().remove(0);
    assert!(o.credentials.bearer.unwrap().env);
    // With the secret missing: an error that says so.
    let none = Options {
        runner: vec!["r".into()],
        secret_dirs: vec![dir.path().join("nowhere")],
        runner_dir: None,
        bearer_token_env: false,
        inherit: vec![],
    };
    let err = validate(&tasks, &Env(BTreeMap::new()), &none)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("secret task-stubs/text is not mounted"),
        "{err}"
    );
}

#[test]
fn values_load_as_helm_loads_them() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = secret_volume(
        dir.path(),
        &[
            ("s/number", "1234567890"),
            ("s/odd", "%Tq8&zL@2!'\"\\ x: y"),
        ],
    );
    let p = write(
        dir.path(),
        "values.yaml",
        "config:\n  rucio_cfg_client_account: robot\n  OIDC_TOKEN_ENDPOINT:\n  RETRIES: 3\nsecrets:\n  - name: number\n    fromSecretName: s\n    fromSecretKey: number\n  - name: ODD\n    fromSecretName: s\n    fromSecretKey: odd\ncronjobs:\n  - name: legacy\n    disabled: yes\n    minute: never\n    task_file_relpath: etc/tasks/old.yml\n  - name: inline\n    minute: 0\n    hour: 4\n    backoffLimit: 5\n    task_file_yaml:\n      z-task:\n        module_name: tasks.z\n        class_name: Z\n        enabled: true\n        args:\n        kwargs: {secret: \"{{ NUMBER }}\", odd: \"{{ ODD }}\", n: 1}\n      a-task:\n        module_name: tasks.a\n        class_name: A\n        enabled: yes\n        args:\n        kwargs: {}\n  - name: by-path\n    task_file_path: etc/tasks/stubs.yml\n    backoffLimit: 0\n",
    );
    let options = Options {
        secret_dirs: vec![secrets],
        ..Options::default()
    };
    let tasks = load(&p, &options).unwrap();
    // The disabled cronjob is skipped, its legacy key and bad schedule unread.
    let names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["inline", "by-path"]);
    let inline = &tasks[0];
    assert_eq!(inline.schedule.describe(), "0 4 * * * (UTC)");
    assert_eq!((inline.retries, tasks[1].retries), (5, 3));
    // Names upper-cased; null is the empty string, a number its digits.
    assert_eq!(inline.env["RUCIO_CFG_CLIENT_ACCOUNT"], "robot");
    assert_eq!(inline.env["OIDC_TOKEN_ENDPOINT"], "");
    assert_eq!(inline.env["RETRIES"], "3");
    // No runner named: upstream's entry point, from its directory.
    assert_eq!(inline.command, DEFAULT_RUNNER);
    assert_eq!(
        inline.workdir.as_deref(),
        Some(Path::new(DEFAULT_RUNNER_DIR))
    );
    validate(&tasks, &Env(BTreeMap::new()), &options).unwrap();
    let r = inline.render(&Env(BTreeMap::new()), &options).unwrap();
    let text = r.task_file.unwrap();
    // Tasks in the order of their names; values filled in stay strings.
    assert!(
        text.find("a-task").unwrap() < text.find("z-task").unwrap(),
        "{text}"
    );
    let file: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    let kwargs = &file["z-task"]["kwargs"];
    assert_eq!(kwargs["secret"], serde_norway::Value::from("1234567890"));
    assert_eq!(
        kwargs["odd"],
        serde_norway::Value::from("%Tq8&zL@2!'\"\\ x: y")
    );
    assert_eq!(kwargs["n"], serde_norway::Value::from(1));
    assert_eq!(file["a-task"]["enabled"], serde_norway::Value::from(true));
    assert!(file["a-task"]["args"].is_null());
    assert!(r.secrets.contains(&"1234567890".to_string()));
    // A cronjob with no task file that is not disabled is still an error.
    let bad = write(
        dir.path(),
        "bad.yaml",
        "cronjobs:\n  - name: legacy\n    task_file_relpath: etc/tasks/old.yml\n",
    );
    let err = load(&bad, &options).unwrap_err().to_string();
    assert!(
        err.contains("task `legacy`: neither task_file_yaml nor task_file_path"),
        "{err}"
    );
    let bad = write(
        dir.path(),
        "bad.yaml",
        "cronjobs:\n  - name: b\n    backoffLimit: often\n    task_file_path: x.yml\n",
    );
    let err = load(&bad, &options).unwrap_err().to_string();
    assert!(err.contains("task `b`: backoffLimit: `often`"), "{err}");
}

#[test]
fn bad_definitions_name_the_file_task_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    for (text, wanted) in [
        (
            "tasks:\n- name: a\n  schedule: '* * *'\n  command: [x]\n",
            "task `a`: `* * *` has 3 fields",
        ),
        (
            "tasks:\n- name: a\n  schedule: '@hourly'\n  command: 'x y'\n",
            "needs `shell: true`",
        ),
        (
            "tasks:\n- name: a\n  schedule: '@hourly'\n  command: [x]\n  timeout: soon\n",
            "timeout: `soon` is not a duration",
        ),
        (
            "tasks:\n- name: a\n  schedule: '@hourly'\n  command: [x]\n  colour: red\n",
            "unknown field `colour`",
        ),
        ("something: else\n", "neither `tasks`"),
        (
            "tasks:\n- name: a\n  schedule: '@hourly'\n  command: [rucio, whoami]\n  env: {RUCIO_CFG_AUTH_TYPE: oidc}\n",
            "task `a`: RUCIO_CFG_AUTH_TYPE oidc needs credentials.bearer",
        ),
    ] {
        let p = write(dir.path(), "t.yaml", text);
        let err = load(&p, &Options::default()).unwrap_err().to_string();
        assert!(err.contains(wanted), "{text}: {err}");
        assert!(err.starts_with(&p.display().to_string()), "{err}");
    }
}

#[test]
fn jinja_expressions_fill_values_files_as_j2_does_and_strings_stay_strings() {
    // Unquoted, as in the chart's examples, with characters that would end a YAML scalar.
    let text = "cronjobs:\n  - name: j\n    minute: 0\n    task_file_yaml:\n      t:\n        module_name: m\n        class_name: C\n        kwargs:\n          who: {{ WHO | lower }}\n          mode: {{ MODE | default('dry: run #1') }}\n          n: {{ N | int + 1 }}\n";
    let options = Options {
        runner: vec!["r".into()],
        ..Options::default()
    };
    let task = parse("v.yaml", text, &options).unwrap().remove(0);
    let vars = Env(BTreeMap::from([("WHO", "Robot"), ("N", "41")]));
    validate(std::slice::from_ref(&task), &vars, &options).unwrap();
    let file = task.render(&vars, &options).unwrap().task_file.unwrap();
    let parsed: serde_norway::Value = serde_norway::from_str(&file).unwrap();
    let kwargs = &parsed["t"]["kwargs"];
    assert_eq!(kwargs["who"], serde_norway::Value::from("robot"));
    assert_eq!(kwargs["mode"], serde_norway::Value::from("dry: run #1"));
    // `toYaml` quotes what it writes: a number computed here is still a string.
    assert_eq!(kwargs["n"], serde_norway::Value::from("42"));
    // Strict: a name an expression uses outside `default` must be defined, and a failing
    // filter is an error naming the expression.
    let missing = Env(BTreeMap::from([("N", "41")]));
    let err = validate(std::slice::from_ref(&task), &missing, &options).unwrap_err();
    assert!(
        matches!(&err, TaskError::Undefined { name, .. } if name == "WHO"),
        "{err}"
    );
    let bad = parse(
        "v.yaml",
        &text.replace("WHO | lower", "WHO | no_such_filter"),
        &options,
    )
    .unwrap();
    let err = validate(&bad, &vars, &options).unwrap_err().to_string();
    assert!(err.contains("{{ WHO | no_such_filter }}"), "{err}");
}

#[test]
fn a_task_file_is_refused_with_the_task_and_field_that_are_wrong() {
    use super::values::{TaskFileError, check_task_file};
    assert!(check_task_file("t:\n  module_name: m\n  class_name: C\n").is_ok());
    assert!(matches!(
        check_task_file("- a\n"),
        Err(TaskFileError::NotMapping)
    ));
    assert!(matches!(
        check_task_file("t: 1\n"),
        Err(TaskFileError::TaskNotMapping { task }) if task == "t"
    ));
    let err = check_task_file("t:\n  module_name: m\n").unwrap_err();
    assert!(
        matches!(err, TaskFileError::MissingKey { ref task, key: "class_name" } if task == "t"),
        "{err}"
    );
    assert_eq!(err.to_string(), "task file: `t` has no class_name");
    assert!(matches!(
        check_task_file("t: [\n"),
        Err(TaskFileError::Yaml(_))
    ));
}
