//! rucio-task-manager's Helm values file (`config`, `secrets`, `cronjobs`) and the task
//! files its cronjobs name, read as its chart and its entry point read them.

use super::placeholders::placeholder;
use super::*;

/// rucio-task-manager's Helm values.
#[derive(Deserialize)]
pub(super) struct Values {
    #[serde(default)]
    config: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    secrets: Vec<ValuesSecret>,
    /// Raw: a disabled cronjob is skipped before anything else in it is read.
    #[serde(default)]
    cronjobs: Vec<serde_norway::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ValuesSecret {
    name: String,
    from_secret_name: String,
    from_secret_key: String,
}

/// A cronjob of the values file. Its schedule fields may be numbers (`minute: 0`); keys
/// the chart does not read (the 2022 `task_file_relpath`) are ignored, as the chart does.
#[derive(Deserialize)]
pub(super) struct ValuesCronjob {
    // (Absent fields are None: serde's rule for Option.)
    name: String,
    minute: Option<serde_norway::Value>,
    hour: Option<serde_norway::Value>,
    day: Option<serde_norway::Value>,
    month: Option<serde_norway::Value>,
    weekday: Option<serde_norway::Value>,
    task_file_path: Option<serde_norway::Value>,
    task_file_yaml: Option<serde_norway::Value>,
    #[serde(rename = "backoffLimit")]
    backoff_limit: Option<serde_norway::Value>,
}

/// The chart's `backoffLimit | default 3`: absent, null or 0 (all false to `default`) is 3.
pub(super) const BACKOFF_LIMIT: u32 = 3;

pub(super) fn values_tasks(
    file: &str,
    values: Values,
    options: &Options,
) -> Result<Vec<Task>, TaskError> {
    // As the chart: names upper-cased, a value printed as a string (null: empty).
    let mut env: BTreeMap<String, String> = values
        .config
        .iter()
        .map(|(k, v)| (k.to_uppercase(), crate::helm::string(v)))
        .collect();
    // A secret is read from its mounted volume when the run starts.
    for s in &values.secrets {
        env.insert(
            s.name.to_uppercase(),
            placeholder(&format!(
                "secret:{}/{}",
                s.from_secret_name, s.from_secret_key
            )),
        );
    }
    let secret_names: Vec<String> = values
        .secrets
        .iter()
        .map(|s| s.name.to_uppercase())
        .collect();
    let (runner, workdir) = if options.runner.is_empty() {
        let dir = options.runner_dir.clone();
        (
            DEFAULT_RUNNER.iter().map(|a| a.to_string()).collect(),
            Some(dir.unwrap_or_else(|| PathBuf::from(DEFAULT_RUNNER_DIR))),
        )
    } else {
        (options.runner.clone(), options.runner_dir.clone())
    };
    let mut tasks = Vec::new();
    for (i, raw) in values.cronjobs.into_iter().enumerate() {
        // The seed-era chart renders nothing for a disabled cronjob, whatever it holds.
        let disabled = raw.get("disabled").is_some_and(crate::helm::truthy);
        if disabled {
            continue;
        }
        let job: ValuesCronjob = serde_norway::from_value(raw).map_err(|e| TaskError::File {
            file: file.to_string(),
            message: format!("cronjobs[{i}]: {e}"),
        })?;
        let task_err = |message: String| TaskError::Task {
            file: file.to_string(),
            task: job.name.clone(),
            message,
        };
        let field = |v: &Option<serde_norway::Value>| match v {
            None | Some(serde_norway::Value::Null) => "*".to_string(),
            Some(v) => crate::helm::string(v),
        };
        let pattern = format!(
            "{} {} {} {} {}",
            field(&job.minute),
            field(&job.hour),
            field(&job.day),
            field(&job.month),
            field(&job.weekday)
        );
        let schedule = Schedule::parse(&pattern, None).map_err(|e| task_err(e.to_string()))?;
        let retries = match &job.backoff_limit {
            Some(v) if crate::helm::truthy(v) => {
                crate::helm::string(v).parse::<u32>().map_err(|_| {
                    task_err(format!(
                        "backoffLimit: `{}` is not a number of retries",
                        crate::helm::string(v)
                    ))
                })?
            }
            _ => BACKOFF_LIMIT,
        };
        let task_file_path = job
            .task_file_path
            .as_ref()
            .filter(|v| crate::helm::truthy(v))
            .map(crate::helm::string);
        // Inline wins over a path, as in rucio-task-manager's chart; an inline file is
        // written as the chart's `toYaml` writes it: keys sorted, strings kept strings.
        let (task_file, job_env) = match (&job.task_file_yaml, task_file_path) {
            (Some(yaml), _) if crate::helm::truthy(yaml) => {
                (Some(crate::helm::to_yaml(yaml)), env.clone())
            }
            (_, Some(path)) => {
                let mut e = env.clone();
                e.insert("TASK_FILE_PATH".into(), path);
                (None, e)
            }
            _ => {
                return Err(task_err(
                    "neither task_file_yaml nor task_file_path (a cronjob the chart would run with no task file; `disabled: true` skips it)".into(),
                ));
            }
        };
        if let Some(text) = &task_file {
            check_task_file(text).map_err(|e| task_err(e.to_string()))?;
        }
        let mut names: Vec<String> = job_env.values().flat_map(|v| required_names(v)).collect();
        if let Some(t) = &task_file {
            names.extend(required_names(t));
        }
        // Declared secrets are defined by their mount; the rest must come from elsewhere.
        names.retain(|n| !n.starts_with("secret:") && !secret_names.contains(n));
        names.sort();
        names.dedup();
        // The format has no credentials: an oidc task gets the token its client would.
        let mut credentials = Credentials {
            bearer: crate::rucio::values_bearer(&job_env).map(|ask| BearerSpec {
                scopes: ask.scopes,
                audience: ask.audience,
                ..BearerSpec::default()
            }),
        };
        if let Some(b) = &mut credentials.bearer {
            b.env = options.bearer_token_env;
            b.upstream_routes = true;
        }
        tasks.push(Task {
            name: job.name.clone(),
            file: file.to_string(),
            schedule,
            command: runner.clone(),
            shell: false,
            env: job_env,
            inherit: options.inherit.clone(),
            workdir: workdir.clone(),
            timeout_secs: None,
            retries,
            backoff_secs: 30,
            // A Kubernetes CronJob's default is Allow; rucio-task-manager's chart sets none.
            concurrency: Concurrency::Allow,
            starting_deadline_secs: None,
            jitter_secs: 0,
            credentials,
            task_file,
            disabled: false,
            names,
        });
    }
    Ok(tasks)
}

/// What is wrong with a rucio-task-manager task file.
#[derive(Debug, thiserror::Error)]
pub(super) enum TaskFileError {
    #[error("task file: {0}")]
    Yaml(#[from] serde_norway::Error),
    #[error("task file: not a mapping of task names")]
    NotMapping,
    #[error("task file: `{task}` is not a mapping")]
    TaskNotMapping { task: String },
    #[error("task file: `{task}` has no {key}")]
    MissingKey { task: String, key: &'static str },
}

/// A rucio-task-manager task file: task name → the fields its runner needs.
pub(super) fn check_task_file(text: &str) -> Result<(), TaskFileError> {
    let value: serde_norway::Value = serde_norway::from_str(text)?;
    let map = value.as_mapping().ok_or(TaskFileError::NotMapping)?;
    for (name, task) in map {
        let task_name = || crate::helm::string(name);
        let t = task
            .as_mapping()
            .ok_or_else(|| TaskFileError::TaskNotMapping { task: task_name() })?;
        for key in ["module_name", "class_name"] {
            if !t.contains_key(serde_norway::Value::String(key.into())) {
                return Err(TaskFileError::MissingKey {
                    task: task_name(),
                    key,
                });
            }
        }
    }
    Ok(())
}
