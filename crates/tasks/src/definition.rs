//! Task definitions: credkeeper's own YAML, and rucio-task-manager's formats as they are —
//! its Helm values file (`config`, `secrets`, `cronjobs`) and its task files (task name →
//! `description`, `module_name`, `class_name`, `enabled`, `args`, `kwargs`), run through a
//! configured runner command.
//!
//! `{{ VAR }}` may appear anywhere in a file, quoted or not. Before the YAML is read, each
//! is replaced by a placeholder, so a definition never holds a secret's value: values are
//! filled in when a run starts ([`Task::render`]), and every name must be defined then or
//! at [`validate`] time.

use crate::schedule::{Schedule, parse_duration};
use crate::template::{self, Vars};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: task `{task}`: {message}")]
    Task {
        file: String,
        task: String,
        message: String,
    },
    #[error(
        "{file}: task `{task}` uses {{{{ {name} }}}}, which is not defined (not in the environment, a secret directory, or credkeeper's store: `credkeeper tasks secret set {name}`)"
    )]
    Undefined {
        file: String,
        task: String,
        name: String,
    },
}

/// Kubernetes CronJob concurrency policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum Concurrency {
    #[default]
    Allow,
    Forbid,
    Replace,
}

/// A bearer token the task needs, in a private file exported as `BEARER_TOKEN_FILE`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BearerSpec {
    /// A broker provider (or `local`), when the token source is a broker.
    #[serde(default)]
    pub provider: Option<String>,
    #[serde(default)]
    pub scopes: Option<String>,
    #[serde(default)]
    pub audience: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default)]
    pub bearer: Option<BearerSpec>,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub name: String,
    pub file: String,
    pub schedule: Schedule,
    /// argv (placeholders for `{{ VAR }}` inside); with `shell`, one `sh -c` string.
    pub command: Vec<String>,
    pub shell: bool,
    pub env: BTreeMap<String, String>,
    pub workdir: Option<PathBuf>,
    pub timeout_secs: Option<i64>,
    pub retries: u32,
    pub backoff_secs: i64,
    pub concurrency: Concurrency,
    pub starting_deadline_secs: Option<i64>,
    pub jitter_secs: i64,
    pub credentials: Credentials,
    /// A task file written for this run and exported as `TASK_FILE_PATH` (rucio-task-manager).
    pub task_file: Option<String>,
    pub disabled: bool,
    /// The template names it uses.
    pub names: Vec<String>,
}

/// A printable marker YAML accepts anywhere a plain scalar may stand.
const PLACEHOLDER: &str = "\u{27e6}ck:";
const PLACEHOLDER_END: char = '\u{27e7}';

fn placeholder(name: &str) -> String {
    format!("{PLACEHOLDER}{name}{PLACEHOLDER_END}")
}

/// Replace `{{ NAME }}` by placeholders (so the YAML parses and holds no values).
fn protect(text: &str) -> String {
    struct Placeholders;
    impl Vars for Placeholders {
        fn get(&self, name: &str) -> Option<String> {
            Some(placeholder(name))
        }
    }
    template::render(text, &Placeholders).unwrap_or_else(|_| text.to_string())
}

/// Fill placeholders with values; the first undefined name is the error.
pub fn fill(text: &str, vars: &dyn Vars) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(PLACEHOLDER) {
        out.push_str(&rest[..i]);
        let after = &rest[i + PLACEHOLDER.len()..];
        let end = after
            .find(PLACEHOLDER_END)
            .ok_or_else(|| "a broken placeholder".to_string())?;
        let name = &after[..end];
        out.push_str(&vars.get(name).ok_or_else(|| name.to_string())?);
        rest = &after[end + PLACEHOLDER_END.len_utf8()..];
    }
    out.push_str(rest);
    Ok(out)
}

fn placeholder_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(PLACEHOLDER) {
        let after = &rest[i + PLACEHOLDER.len()..];
        let Some(end) = after.find(PLACEHOLDER_END) else {
            break;
        };
        names.push(after[..end].to_string());
        rest = &after[end + PLACEHOLDER_END.len_utf8()..];
    }
    names.sort();
    names.dedup();
    names
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnFile {
    #[serde(default)]
    tasks: Vec<OwnTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnTask {
    name: String,
    schedule: String,
    #[serde(default)]
    timezone: Option<String>,
    command: CommandSpec,
    #[serde(default)]
    shell: bool,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    workdir: Option<PathBuf>,
    #[serde(default)]
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(default)]
    backoff: Option<String>,
    #[serde(default)]
    concurrency: Concurrency,
    #[serde(
        default,
        rename = "startingDeadlineSeconds",
        alias = "starting_deadline_seconds"
    )]
    starting_deadline_seconds: Option<i64>,
    #[serde(default)]
    jitter: Option<String>,
    #[serde(default)]
    credentials: Credentials,
    #[serde(default)]
    disabled: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CommandSpec {
    Argv(Vec<String>),
    Line(String),
}

/// rucio-task-manager's Helm values.
#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    config: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    secrets: Vec<ValuesSecret>,
    #[serde(default)]
    cronjobs: Vec<ValuesCronjob>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ValuesSecret {
    name: String,
    from_secret_name: String,
    from_secret_key: String,
}

#[derive(Deserialize)]
struct ValuesCronjob {
    name: String,
    #[serde(default = "star")]
    minute: String,
    #[serde(default = "star")]
    hour: String,
    #[serde(default = "star")]
    day: String,
    #[serde(default = "star")]
    month: String,
    #[serde(default = "star")]
    weekday: String,
    #[serde(default)]
    task_file_path: Option<String>,
    #[serde(default)]
    task_file_yaml: Option<serde_norway::Value>,
    #[serde(default)]
    disabled: Option<serde_norway::Value>,
}

fn star() -> String {
    "*".into()
}

/// How rucio-task-manager definitions run, and where its secrets are mounted.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The site's rucio-task-manager entry point; the task file is in `TASK_FILE_PATH`.
    pub runner: Vec<String>,
    /// Where `secrets` entries are mounted: `<dir>/<fromSecretName>/<fromSecretKey>`.
    pub secret_dirs: Vec<PathBuf>,
}

fn yaml_truthy(v: &serde_norway::Value) -> bool {
    match v {
        serde_norway::Value::Bool(b) => *b,
        serde_norway::Value::String(s) => {
            matches!(s.to_ascii_lowercase().as_str(), "yes" | "true" | "on" | "y")
        }
        _ => false,
    }
}

fn scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}

/// Read one definitions file (any of the three formats, told apart by their keys).
pub fn load(path: &Path, options: &Options) -> Result<Vec<Task>, TaskError> {
    let file = path.display().to_string();
    let raw = std::fs::read_to_string(path).map_err(|e| TaskError::File {
        file: file.clone(),
        message: e.to_string(),
    })?;
    parse(&file, &raw, options)
}

/// Parse the text of one definitions file (what [`load`] reads from `path`): a
/// credkeeper `tasks` file or a rucio-task-manager values file (`cronjobs`), with its
/// `{{ NAME }}` templates left for [`Task::render`]. `file` names it in errors.
pub fn parse(file: &str, raw: &str, options: &Options) -> Result<Vec<Task>, TaskError> {
    let fail = |message: String| TaskError::File {
        file: file.to_string(),
        message,
    };
    let text = protect(raw);
    let value: serde_norway::Value =
        serde_norway::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let map = value
        .as_mapping()
        .ok_or_else(|| fail("not a YAML mapping".into()))?;
    let has = |k: &str| map.contains_key(serde_norway::Value::String(k.into()));
    if has("tasks") {
        let own: OwnFile =
            serde_norway::from_value(value.clone()).map_err(|e| fail(e.to_string()))?;
        own.tasks.into_iter().map(|t| own_task(file, t)).collect()
    } else if has("cronjobs") {
        let values: Values =
            serde_norway::from_value(value.clone()).map_err(|e| fail(e.to_string()))?;
        values_tasks(file, values, options)
    } else {
        // A task file on its own: run each enabled task once a day unless scheduled else.
        Err(fail(
            "neither `tasks` (credkeeper) nor `cronjobs` (rucio-task-manager values); a rucio-task-manager task file is named by a cronjob's task_file_path".into(),
        ))
    }
}

fn own_task(file: &str, t: OwnTask) -> Result<Task, TaskError> {
    let task_err = |message: String| TaskError::Task {
        file: file.to_string(),
        task: t.name.clone(),
        message,
    };
    if t.name.is_empty()
        || !t
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(task_err("names are letters, digits and - _ .".into()));
    }
    let schedule = Schedule::parse(&t.schedule, t.timezone.as_deref()).map_err(task_err)?;
    let duration = |what: &str, v: &Option<String>| -> Result<Option<i64>, TaskError> {
        v.as_deref()
            .map(|d| {
                parse_duration(d).ok_or_else(|| {
                    task_err(format!("{what}: `{d}` is not a duration (30s, 10m, 2h)"))
                })
            })
            .transpose()
    };
    let (command, shell) = match t.command {
        CommandSpec::Argv(a) if !a.is_empty() => (a, t.shell),
        CommandSpec::Line(l) if t.shell => (vec![l], true),
        CommandSpec::Line(_) => {
            return Err(task_err(
                "a command line needs `shell: true`; give argv as a list otherwise".into(),
            ));
        }
        CommandSpec::Argv(_) => return Err(task_err("empty command".into())),
    };
    if crate::rucio::wants_bearer(&t.env) && t.credentials.bearer.is_none() {
        return Err(task_err(
            "RUCIO_CFG_AUTH_TYPE oidc needs credentials.bearer, the token the run keeps fresh (e.g. {scopes: 'openid profile', audience: rucio})".into(),
        ));
    }
    let mut names: Vec<String> = command.iter().flat_map(|c| placeholder_names(c)).collect();
    names.extend(t.env.values().flat_map(|v| placeholder_names(v)));
    names.sort();
    names.dedup();
    Ok(Task {
        name: t.name.clone(),
        file: file.to_string(),
        timeout_secs: duration("timeout", &t.timeout)?,
        backoff_secs: duration("backoff", &t.backoff)?.unwrap_or(30),
        jitter_secs: duration("jitter", &t.jitter)?.unwrap_or(0),
        schedule,
        command,
        shell,
        env: t.env,
        workdir: t.workdir,
        retries: t.retries,
        concurrency: t.concurrency,
        starting_deadline_secs: t.starting_deadline_seconds,
        credentials: t.credentials,
        task_file: None,
        disabled: t.disabled,
        names,
    })
}

fn values_tasks(file: &str, values: Values, options: &Options) -> Result<Vec<Task>, TaskError> {
    let mut env: BTreeMap<String, String> = values
        .config
        .iter()
        .map(|(k, v)| (k.clone(), scalar(v)))
        .collect();
    // A secret is read from its mounted volume when the run starts.
    for s in &values.secrets {
        env.insert(
            s.name.clone(),
            placeholder(&format!(
                "secret:{}/{}",
                s.from_secret_name, s.from_secret_key
            )),
        );
    }
    let secret_names: Vec<String> = values.secrets.iter().map(|s| s.name.clone()).collect();
    let mut tasks = Vec::new();
    for job in values.cronjobs {
        let task_err = |message: String| TaskError::Task {
            file: file.to_string(),
            task: job.name.clone(),
            message,
        };
        if options.runner.is_empty() {
            return Err(task_err(
                "rucio-task-manager tasks need the site's runner command (--runner)".into(),
            ));
        }
        let pattern = format!(
            "{} {} {} {} {}",
            job.minute, job.hour, job.day, job.month, job.weekday
        );
        let schedule = Schedule::parse(&pattern, None).map_err(task_err)?;
        // Inline wins over a path, as in rucio-task-manager's chart.
        let (task_file, mut job_env) = match (&job.task_file_yaml, &job.task_file_path) {
            (Some(yaml), _) => (
                Some(serde_norway::to_string(yaml).map_err(|e| task_err(e.to_string()))?),
                env.clone(),
            ),
            (None, Some(path)) => {
                let mut e = env.clone();
                e.insert("TASK_FILE_PATH".into(), path.clone());
                (None, e)
            }
            (None, None) => {
                return Err(task_err("neither task_file_yaml nor task_file_path".into()));
            }
        };
        if let Some(text) = &task_file {
            check_task_file(text).map_err(task_err)?;
        }
        job_env.entry("RUCIO_CFG_AUTH_TYPE".into()).or_default();
        job_env.retain(|_, v| !v.is_empty());
        let mut names: Vec<String> = job_env
            .values()
            .flat_map(|v| placeholder_names(v))
            .collect();
        if let Some(t) = &task_file {
            names.extend(placeholder_names(t));
        }
        // Declared secrets are defined by their mount; the rest must come from elsewhere.
        names.retain(|n| !n.starts_with("secret:") && !secret_names.contains(n));
        names.sort();
        names.dedup();
        // The format has no credentials: an oidc task gets the token its client would.
        let credentials = Credentials {
            bearer: crate::rucio::values_bearer(&job_env),
        };
        tasks.push(Task {
            name: job.name.clone(),
            file: file.to_string(),
            schedule,
            command: options.runner.clone(),
            shell: false,
            env: job_env,
            workdir: None,
            timeout_secs: None,
            retries: 0,
            backoff_secs: 30,
            // A Kubernetes CronJob's default is Allow; rucio-task-manager's chart sets none.
            concurrency: Concurrency::Allow,
            starting_deadline_secs: None,
            jitter_secs: 0,
            credentials,
            task_file,
            disabled: job.disabled.as_ref().is_some_and(yaml_truthy),
            names,
        });
    }
    Ok(tasks)
}

/// A rucio-task-manager task file: task name → the fields its runner needs.
fn check_task_file(text: &str) -> Result<(), String> {
    let value: serde_norway::Value =
        serde_norway::from_str(text).map_err(|e| format!("task file: {e}"))?;
    let map = value
        .as_mapping()
        .ok_or("task file: not a mapping of task names")?;
    for (name, task) in map {
        let name = scalar(name);
        let t = task
            .as_mapping()
            .ok_or_else(|| format!("task file: `{name}` is not a mapping"))?;
        for key in ["module_name", "class_name"] {
            if !t.contains_key(serde_norway::Value::String(key.into())) {
                return Err(format!("task file: `{name}` has no {key}"));
            }
        }
    }
    Ok(())
}

/// Check every name every task uses is defined by `vars`; secrets from mounted volumes
/// must exist in one of `secret_dirs`.
pub fn validate(tasks: &[Task], vars: &dyn Vars, options: &Options) -> Result<(), TaskError> {
    for t in tasks {
        t.check_command_line(vars)?;
        for name in &t.names {
            if vars.get(name).is_none() {
                return Err(TaskError::Undefined {
                    file: t.file.clone(),
                    task: t.name.clone(),
                    name: name.clone(),
                });
            }
        }
        for v in t.env.values() {
            for name in placeholder_names(v)
                .iter()
                .filter_map(|n| n.strip_prefix("secret:"))
            {
                if secret_value(name, options).is_none() {
                    return Err(TaskError::Task {
                        file: t.file.clone(),
                        task: t.name.clone(),
                        message: format!(
                            "secret {name} is not mounted in any secret directory ({})",
                            options
                                .secret_dirs
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

fn secret_value(name_key: &str, options: &Options) -> Option<String> {
    template::from_dirs(&options.secret_dirs, name_key)
}

/// A task's argv, environment and task file with their values, for one run; also the
/// values filled in (to redact them from captured output).
pub struct Rendered {
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub task_file: Option<String>,
    pub secrets: Vec<String>,
}

impl Task {
    /// A secret on the command line is readable by every user of the machine (`ps`,
    /// `/proc/<pid>/cmdline`): a `{{ NAME }}` in the command whose value comes from a
    /// secret volume or a declared secret is refused; the environment is the place for it.
    fn check_command_line(&self, vars: &dyn Vars) -> Result<(), TaskError> {
        let declared_secret = |name: &str| {
            name.starts_with("secret:")
                || self.env.get(name).is_some_and(|v| {
                    placeholder_names(v)
                        .iter()
                        .any(|n| n.starts_with("secret:"))
                })
        };
        let secret = self
            .command
            .iter()
            .flat_map(|c| placeholder_names(c))
            .find(|name| declared_secret(name) || vars.is_secret(name));
        match secret {
            None => Ok(()),
            Some(name) => {
                let name = name.trim_start_matches("secret:");
                let how = if self.shell {
                    format!("refer to it as \"${name}\" in the command")
                } else {
                    "have the command read it from its environment".to_string()
                };
                Err(TaskError::Task {
                    file: self.file.clone(),
                    task: self.name.clone(),
                    message: format!(
                        "{{{{ {name} }}}} is a secret and would be on the command line, where every user of the machine can read it; put it in the task's env ({name}: '{{{{ {name} }}}}') and {how}"
                    ),
                })
            }
        }
    }

    pub fn render(&self, vars: &dyn Vars, options: &Options) -> Result<Rendered, TaskError> {
        self.check_command_line(vars)?;
        struct WithSecrets<'a> {
            vars: &'a dyn Vars,
            options: &'a Options,
            /// The task's own environment: a declared secret's name stands for its value.
            env: &'a BTreeMap<String, String>,
            used: std::cell::RefCell<Vec<String>>,
        }
        impl Vars for WithSecrets<'_> {
            fn get(&self, name: &str) -> Option<String> {
                let value = match name.strip_prefix("secret:") {
                    Some(key) => secret_value(key, self.options),
                    None => self.vars.get(name).or_else(|| {
                        let v = self.env.get(name)?;
                        placeholder_names(v)
                            .iter()
                            .all(|n| n.starts_with("secret:"))
                            .then(|| fill(v, self).ok())?
                    }),
                }?;
                self.used.borrow_mut().push(value.clone());
                Some(value)
            }
        }
        let with = WithSecrets {
            vars,
            options,
            env: &self.env,
            used: Default::default(),
        };
        let undefined = |name: String| TaskError::Undefined {
            file: self.file.clone(),
            task: self.name.clone(),
            name: name.trim_start_matches("secret:").to_string(),
        };
        let command = self
            .command
            .iter()
            .map(|c| fill(c, &with))
            .collect::<Result<Vec<_>, _>>()
            .map_err(undefined)?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| fill(v, &with).map(|v| (k.clone(), v)))
            .collect::<Result<BTreeMap<_, _>, _>>()
            .map_err(undefined)?;
        let task_file = self
            .task_file
            .as_deref()
            .map(|t| fill(t, &with))
            .transpose()
            .map_err(undefined)?;
        let mut secrets = with.used.into_inner();
        secrets.retain(|s| s.len() >= 4);
        Ok(Rendered {
            command,
            env,
            task_file,
            secrets,
        })
    }
}

#[cfg(test)]
mod tests {
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
                    err.contains(&format!("task `{}`: {{{{ DB_PASSWORD }}}} is a secret and would be on the command line", t.name)),
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
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(secrets.join("task-stubs")).unwrap();
        std::fs::write(secrets.join("task-stubs/text"), "hello from a secret\n").unwrap();
        // The seed's example, unquoted template and all.
        let p = write(
            dir.path(),
            "values.yaml",
            "config:\n  RUCIO_CFG_RUCIO_HOST: https://rucio.example\n  RUCIO_CFG_AUTH_TYPE: userpass\nsecrets:\n  - name: TASK_STUBS_TEXT\n    fromSecretName: task-stubs\n    fromSecretKey: text\ncronjobs:\n  - name: stubs\n    minute: \"*/15\"\n    hour: \"*\"\n    day: \"*\"\n    month: \"*\"\n    weekday: \"*\"\n    task_file_yaml:\n      test-hello-world-stub:\n        description: Test hello world stub\n        module_name: tasks.stubs\n        class_name: StubHelloWorld\n        enabled: true\n        args:\n        kwargs:\n          text: {{ TASK_STUBS_TEXT }}\n    disabled: yes\n  - name: by-path\n    minute: \"0\"\n    task_file_path: etc/tasks/stubs.yml\n",
        );
        let options = Options {
            runner: vec!["run-task-manager".into()],
            secret_dirs: vec![secrets.clone()],
        };
        let tasks = load(&p, &options).unwrap();
        assert_eq!(tasks.len(), 2);
        let stubs = &tasks[0];
        assert!(stubs.disabled);
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
        assert!(r.task_file.unwrap().contains("text: hello from a secret"));
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
                scopes: Some("openid profile".into()),
                audience: Some("https://rucio.example".into()),
            })
        );
        // Without the runner, or with the secret missing: errors that say so.
        let err = load(&p, &Options::default()).unwrap_err().to_string();
        assert!(err.contains("need the site's runner command"), "{err}");
        let none = Options {
            runner: vec!["r".into()],
            secret_dirs: vec![dir.path().join("nowhere")],
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
}
