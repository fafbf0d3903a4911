//! credkeeper's own task files: `tasks:`, each with its schedule, command and credentials.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OwnFile {
    #[serde(default)]
    pub(super) tasks: Vec<OwnTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OwnTask {
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
    inherit: Vec<String>,
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
pub(super) enum CommandSpec {
    Argv(Vec<String>),
    Line(String),
}

pub(super) fn own_task(file: &str, t: OwnTask) -> Result<Task, TaskError> {
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
    let schedule =
        Schedule::parse(&t.schedule, t.timezone.as_deref()).map_err(|e| task_err(e.to_string()))?;
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
    if let Some(bad) = t.inherit.iter().find(|n| !template::valid_name(n)) {
        return Err(task_err(format!(
            "inherit: `{bad}` is not an environment variable name (letters, digits, _; not a digit first)"
        )));
    }
    let mut names: Vec<String> = command.iter().flat_map(|c| required_names(c)).collect();
    names.extend(t.env.values().flat_map(|v| required_names(v)));
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
        inherit: t.inherit,
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
