//! Task definitions: credkeeper's own YAML, and rucio-task-manager's formats as they are —
//! its Helm values file (`config`, `secrets`, `cronjobs`) and its task files (task name →
//! `description`, `module_name`, `class_name`, `enabled`, `args`, `kwargs`), run through a
//! configured runner command.
//!
//! `{{ VAR }}` may appear anywhere in a file, quoted or not. Before the YAML is read, each
//! is replaced by a placeholder, so a definition never holds a secret's value: values are
//! filled in when a run starts ([`Task::render`]), and every name must be defined then or
//! at [`validate`] time.
//!
//! A values file reads as rucio-task-manager's chart reads it ([`crate::helm`]): a disabled
//! cronjob is skipped before anything else in it is read, schedule fields may be numbers,
//! `config` names are upper-cased and a null value is the empty string, `backoffLimit`
//! (default 3) is the number of retries, and an inline task file is written as `toYaml`
//! writes it — keys sorted, so its tasks run in the order of their names — with every
//! string double-quoted, so a value filled in stays a string whatever its characters.

mod own;
mod placeholders;
mod values;

use own::{OwnFile, own_task};
pub use placeholders::fill;
use placeholders::{fill_with, placeholder_names, protect, required_names};
use values::{Values, values_tasks};

use crate::schedule::{Schedule, parse_duration};
use crate::template::{self, FillError, Slot, Vars};
use credkeeper_core::{Scopes, TokenAsk};
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
    pub scopes: Option<Scopes>,
    #[serde(default)]
    pub audience: Option<String>,
    /// Also give the token itself in `BEARER_TOKEN`, as rucio-task-manager's entry point
    /// did (for gfal and task code that read only that): a copy from the run's start, never
    /// renewed. WLCG token discovery (the Rucio client's included) prefers it to
    /// `BEARER_TOKEN_FILE`, so a run that outlives the token then fails; without it an
    /// inherited `BEARER_TOKEN` is removed so that the fresh file is what is found.
    #[serde(default)]
    pub env: bool,
    /// A rucio-task-manager values cronjob: the token may come from one of upstream's own
    /// routes named in its environment ([`crate::upstream`]), before the configured source.
    #[serde(skip)]
    pub upstream_routes: bool,
}

/// Seconds a task's bearer token must have left when it is handed over.
const BEARER_MIN_SECS: i64 = 60;

impl BearerSpec {
    /// What the run asks its token source for.
    pub fn ask(&self) -> TokenAsk {
        TokenAsk {
            provider: self.provider.clone(),
            scopes: self.scopes.clone(),
            audience: self.audience.clone(),
            min_secs: BEARER_MIN_SECS,
        }
    }
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
    /// Names of the scheduler's own environment the task also gets, beyond
    /// [`crate::run::BASE_ENVIRONMENT`] (nothing else of it reaches a task).
    pub inherit: Vec<String>,
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

/// rucio-task-manager's image entry point's last step (`etc/docker/docker-entrypoint.sh`),
/// run in [`DEFAULT_RUNNER_DIR`]: every task of the file in `TASK_FILE_PATH`, in order.
pub const DEFAULT_RUNNER: &[&str] = &[
    "sh",
    "-c",
    "exec python3 src/run.py -vt \"$TASK_FILE_PATH\"",
];

/// The image's `WORKDIR` (`RUCIO_TASK_MANAGER_ROOT`); a relative `task_file_path` is
/// relative to it.
pub const DEFAULT_RUNNER_DIR: &str = "/opt/rucio-task-manager";

/// How rucio-task-manager definitions run, and where its secrets are mounted.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The site's rucio-task-manager entry point (argv); the task file is in
    /// `TASK_FILE_PATH`. Empty: [`DEFAULT_RUNNER`] in [`DEFAULT_RUNNER_DIR`].
    pub runner: Vec<String>,
    /// The directory the runner starts in (default: [`DEFAULT_RUNNER_DIR`] for the default
    /// runner, the scheduler's own for another).
    pub runner_dir: Option<PathBuf>,
    /// Where `secrets` entries are mounted: `<dir>/<fromSecretName>/<fromSecretKey>`.
    pub secret_dirs: Vec<PathBuf>,
    /// A values cronjob's bearer token is also given in `BEARER_TOKEN` ([`BearerSpec::env`]).
    pub bearer_token_env: bool,
    /// Names of the scheduler's environment every values cronjob also gets (the format has
    /// no key for it; a pod's environment is its `config` and `secrets`).
    pub inherit: Vec<String>,
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
        // Expressions are checked by evaluating them, as a run will.
        t.render(vars, options)?;
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
        let undefined = |e: FillError| match e {
            FillError::Undefined(name) => TaskError::Undefined {
                file: self.file.clone(),
                task: self.name.clone(),
                name: name.trim_start_matches("secret:").to_string(),
            },
            FillError::Expression { expr, message } => TaskError::Task {
                file: self.file.clone(),
                task: self.name.clone(),
                message: format!("{{{{ {expr} }}}}: {message}"),
            },
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
            // Every string of a task file is double-quoted (crate::helm::to_yaml): a value
            // filled in is escaped for it, and stays a string whatever its characters.
            .map(|t| fill_with(t, &with, crate::helm::quote))
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
mod tests;
