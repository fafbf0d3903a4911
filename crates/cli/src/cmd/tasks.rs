//! `credkeeper tasks`: check, list and run scheduled tasks with their credentials.

use crate::config::{IssuerArgs, Settings};
use anyhow::Context;
use credkeeper_core::Secret;
use credkeeper_refresher::source::{BrokerSource, IssuerSource, TokenSource};
use credkeeper_tasks::Task;
use credkeeper_tasks::daemon::{self, Daemon, Definitions, Ended, TaskStore};
use credkeeper_tasks::definition::Options;
use credkeeper_tasks::run::RunOptions;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Check definition files: formats, schedules, and that every {{ VAR }} is defined
    Validate(Files),
    /// The tasks: schedule, next run time, last run and its result (never a secret value)
    List(Files),
    /// Run one task now and exit with its status (what a Kubernetes CronJob calls)
    Run(RunArgs),
    /// The scheduler: run every task when due, until SIGTERM
    Serve(ServeArgs),
    /// Secrets kept (sealed) in credkeeper's store for tasks' {{ NAME }}
    #[command(subcommand)]
    Secret(SecretCommand),
    /// A task's past runs, newest first (start, duration, status, attempts, reason)
    History {
        /// The task
        task: String,
        /// How many runs
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Also print each run's captured output (secrets were redacted before it was kept)
        #[arg(long)]
        output: bool,
    },
}

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Keep a secret: its value from standard input (typed without echo on a terminal) or
    /// --from-file, never from the command line
    Set {
        /// The name tasks use, as {{ NAME }}
        name: String,
        /// Read the value from this file (one trailing newline is dropped)
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
    /// The names kept and when each was set (never a value)
    List,
    /// Forget a secret
    Delete { name: String },
}

pub fn secret(cmd: SecretCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        SecretCommand::Set { name, from_file } => {
            anyhow::ensure!(
                credkeeper_tasks::template::valid_name(&name),
                "`{name}` cannot be a {{{{ NAME }}}}: use letters, digits and _, not starting with a digit"
            );
            let value = match &from_file {
                Some(path) => std::fs::read_to_string(path).with_context(|| {
                    format!("reading the value of {name} from {}", path.display())
                })?,
                None if std::io::stdin().is_terminal() => {
                    crate::prompt::read_hidden(&format!("Value of {name} (not shown): "))?
                }
                None => std::io::read_to_string(std::io::stdin())
                    .with_context(|| format!("reading the value of {name} from standard input"))?,
            };
            let value = value.strip_suffix('\n').unwrap_or(&value);
            anyhow::ensure!(
                !value.is_empty(),
                "the value of {name} is empty; nothing was stored"
            );
            super::open_store(settings)?.put_task_secret(&name, &Secret::new(value))?;
            eprintln!("{name} stored (sealed) in {}", settings.state_dir.display());
        }
        SecretCommand::List => {
            let names = match super::existing_store(settings)? {
                Some(store) => store.task_secret_names()?,
                None => Vec::new(),
            };
            println!("{:<32} SET (UTC)", "NAME");
            for (name, set) in names {
                println!("{name:<32} {set}");
            }
        }
        SecretCommand::Delete { name } => {
            let deleted = match super::existing_store(settings)? {
                Some(store) => store.delete_task_secret(&name)?,
                None => false,
            };
            anyhow::ensure!(
                deleted,
                "no secret {name} in {}",
                settings.state_dir.display()
            );
            eprintln!("{name} deleted");
        }
    }
    Ok(())
}

pub fn history(task: &str, limit: usize, output: bool, settings: &Settings) -> anyhow::Result<()> {
    let store = super::open_store(settings)?;
    let runs = store.runs(task, limit)?;
    anyhow::ensure!(
        !runs.is_empty(),
        "no runs of task `{task}` in the store at {}",
        store.location()
    );
    println!(
        "{:<22} {:>8} {:>7} {:>8}  REASON",
        "STARTED (UTC)", "SECONDS", "STATUS", "ATTEMPTS"
    );
    for r in &runs {
        let status = r.status.map_or("-".to_string(), |s| s.to_string());
        println!(
            "{:<22} {:>8} {:>7} {:>8}  {}",
            r.started.to_string(),
            r.ended.seconds_after(r.started),
            status,
            r.attempts,
            r.reason.as_deref().unwrap_or("ok")
        );
        if output && !r.output.is_empty() {
            for line in r.output.lines() {
                println!("    | {line}");
            }
        }
    }
    Ok(())
}

#[derive(clap::Args)]
#[command(
    after_help = "Definitions: credkeeper's YAML (`tasks:`), or rucio-task-manager's Helm \
values file (`config`, `secrets`, `cronjobs`) with its task files, read as its chart reads \
it (disabled cronjobs skipped, backoffLimit as retries, inline task files with their keys \
sorted and strings kept strings), each cronjob run through --runner. \
{{ VAR }} is filled from the environment, then from files named VAR in each --secret-dir, \
then from credkeeper's store (`tasks secret set VAR`); `secrets` entries are read from \
<secret-dir>/<fromSecretName>/<fromSecretKey>. A value from a secret directory or the store \
is refused in a task's command line: pass it in `env`."
)]
pub struct Files {
    /// Definition files
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// rucio-task-manager's entry point, run with TASK_FILE_PATH set: words as a shell
    /// splits them (quotes keep spaces), run without a shell [default: sh -c 'exec python3
    /// src/run.py -vt "$TASK_FILE_PATH"', upstream's image entry point, in
    /// /opt/rucio-task-manager]
    #[arg(long, value_name = "COMMAND", env = "CREDKEEPER_TASKS_RUNNER")]
    pub runner: Option<String>,
    /// The directory the runner starts in [default: /opt/rucio-task-manager with the
    /// default runner]
    #[arg(long, value_name = "DIR", env = "CREDKEEPER_TASKS_RUNNER_DIR")]
    pub runner_dir: Option<PathBuf>,
    /// Where secrets are mounted (a Kubernetes secret volume); repeatable
    #[arg(long = "secret-dir", value_name = "DIR")]
    pub secret_dirs: Vec<PathBuf>,
    /// Give a values cronjob's bearer token only in BEARER_TOKEN_FILE (kept fresh), not also
    /// in BEARER_TOKEN as rucio-task-manager's entry point does (gfal reads it): that copy
    /// is never renewed, and WLCG token discovery (the Rucio client's too) prefers it, so a
    /// run that outlives its token needs this
    #[arg(long, env = "CREDKEEPER_TASKS_NO_BEARER_TOKEN_ENV")]
    pub no_bearer_token_env: bool,
    /// A variable of credkeeper's own environment every values cronjob also gets, beyond
    /// PATH, HOME, USER, LOGNAME, SHELL, LANG, LANGUAGE, LC_*, TZ, TMPDIR and
    /// KUBERNETES_SERVICE_HOST/PORT; repeatable (credkeeper's tasks name theirs in
    /// `inherit`)
    #[arg(long = "inherit-env", value_name = "NAME")]
    pub inherit_env: Vec<String>,
}

#[derive(clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub files: Files,
    /// The task to run
    #[arg(long, value_name = "NAME")]
    pub task: String,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// Write the task's Prometheus metrics here after the run, from its kept history
    /// (the node exporter's textfile collector, for a CronJob per task)
    #[arg(long, value_name = "FILE", env = "CREDKEEPER_TASKS_METRICS")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(clap::Args)]
#[command(
    after_help = "Each enabled task starts when due (cron in its time zone, @every slots), \
with Kubernetes CronJob meanings: concurrency Allow, Forbid (skip while running), Replace \
(stop the running one); the latest run missed while the scheduler was down is made up at \
start if within startingDeadlineSeconds (unset: always), the others are counted as missed; \
jitter delays each start randomly. Definitions are read again on SIGHUP and when \
a file changes. SIGTERM/SIGINT: no new runs; running ones get --grace seconds, then stop."
)]
pub struct ServeArgs {
    #[command(flatten)]
    pub files: Files,
    #[command(flatten)]
    pub tokens: TokenArgs,
    /// Seconds running tasks get to finish on stop
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub grace: u64,
    /// Write Prometheus metrics here after every run (the node exporter's textfile
    /// collector): last success, runs by result, durations, skipped runs
    #[arg(long, value_name = "FILE", env = "CREDKEEPER_TASKS_METRICS")]
    pub metrics_file: Option<PathBuf>,
}

/// Where tasks' bearer tokens come from: a credkeeper broker, as the tasks' robot, or an
/// issuer directly (client credentials, or the refresh token `credkeeper login` stored).
#[derive(clap::Args)]
pub struct TokenArgs {
    /// The credkeeper broker that hands out the tasks' bearer tokens
    #[arg(long, value_name = "URL", env = "CREDKEEPER_SERVER")]
    pub server: Option<String>,
    /// The robot's keytab, for the broker
    #[arg(short = 'k', long, env = "KRB5_KTNAME", value_name = "FILE")]
    pub keytab: Option<PathBuf>,
    /// A JWT for the broker (a Kubernetes service-account token)
    #[arg(long, env = "CREDKEEPER_JWT_FILE", value_name = "FILE")]
    pub jwt_file: Option<PathBuf>,
    /// The broker robot, with --secret-file
    #[arg(long, env = "CREDKEEPER_ROBOT", value_name = "NAME")]
    pub robot: Option<String>,
    /// The broker robot's secret (a 0600 file), with --robot
    #[arg(long, env = "CREDKEEPER_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// Without --server: the issuer the tokens come from; a task's scopes and audience
    /// replace --scopes and --audience
    #[command(flatten)]
    pub issuer: IssuerArgs,
    /// The token file a site mounts for rucio-task-manager's values cronjobs (the first of
    /// its routes); used when it exists, is a file and only root or this user can write it
    #[arg(
        long,
        value_name = "FILE",
        env = "CREDKEEPER_TASKS_ACCESS_TOKEN_FILE",
        default_value = credkeeper_tasks::upstream::MOUNTED_TOKEN
    )]
    pub access_token_file: PathBuf,
}

impl TokenArgs {
    /// Whether a source is named (a broker, or an issuer here or in the config file).
    fn named(&self, settings: &Settings) -> bool {
        self.server.is_some() || self.issuer.issuer.is_some() || settings.file.issuer.is_some()
    }

    async fn source(&self, settings: &Settings) -> anyhow::Result<Arc<dyn TokenSource>> {
        let Some(server) = &self.server else {
            if !self.named(settings) {
                anyhow::bail!(
                    "name where tokens come from: a broker with --server (CREDKEEPER_SERVER), or an issuer with --issuer (CREDKEEPER_ISSUER)"
                );
            }
            // Never interactive: a task has no one to answer a login.
            let resolved = settings.resolve(&self.issuer)?;
            return Ok(Arc::new(IssuerSource::unattended(
                super::open_issuer(&resolved, settings).await?,
                resolved.ask(),
            )));
        };
        let login = super::RobotLogin {
            robot: self.robot.as_deref(),
            secret_file: self.secret_file.as_deref(),
            keytab: self.keytab.as_deref(),
            jwt_file: self.jwt_file.as_deref(),
            ..Default::default()
        };
        Ok(Arc::new(BrokerSource(super::broker_client(
            server, &login, settings,
        )?)))
    }
}

impl TokenArgs {
    /// What runs need; with `upstream`, rucio-task-manager's own token routes (its HTTP
    /// client is built only then).
    fn run_options(&self, upstream: bool, settings: &Settings) -> anyhow::Result<RunOptions> {
        Ok(RunOptions {
            upstream: match upstream {
                true => Some(Arc::new(credkeeper_tasks::upstream::Upstream {
                    http: settings.http()?,
                    policy: settings.policy,
                    mounted_token: self.access_token_file.clone(),
                })),
                false => None,
            },
            ..RunOptions::default()
        })
    }

    /// The source for `tasks` that need one: required when a task's bearer token can come
    /// from nowhere else (values cronjobs may name upstream's routes instead).
    async fn source_for(
        &self,
        tasks: &[&Task],
        settings: &Settings,
    ) -> anyhow::Result<Option<Arc<dyn TokenSource>>> {
        let required = tasks.iter().any(|t| {
            t.credentials
                .bearer
                .as_ref()
                .is_some_and(|b| !b.upstream_routes)
        });
        Ok(if required || self.named(settings) {
            Some(self.source(settings).await?)
        } else {
            None
        })
    }
}

impl Files {
    fn options(&self) -> anyhow::Result<Options> {
        let runner = match &self.runner {
            None => Vec::new(),
            Some(r) => match shlex::split(r) {
                Some(words) if !words.is_empty() => words,
                _ => anyhow::bail!(
                    "--runner `{r}`: not a command (empty, or an unclosed quote or trailing backslash)"
                ),
            },
        };
        if let Some(bad) = self
            .inherit_env
            .iter()
            .find(|n| !credkeeper_tasks::template::valid_name(n))
        {
            anyhow::bail!("--inherit-env `{bad}` is not an environment variable name");
        }
        Ok(Options {
            runner,
            runner_dir: self.runner_dir.clone(),
            secret_dirs: self.secret_dirs.clone(),
            bearer_token_env: !self.no_bearer_token_env,
            inherit: self.inherit_env.clone(),
        })
    }

    fn definitions(&self) -> anyhow::Result<Definitions> {
        Ok(Definitions {
            files: self.files.clone(),
            options: self.options()?,
        })
    }
}

pub fn validate(files: &Files, settings: &Settings) -> anyhow::Result<()> {
    let store =
        super::existing_store(settings)?.map(|s| s as Arc<dyn credkeeper_store::TaskSecrets>);
    let tasks = files.definitions()?.validated(store)?;
    eprintln!("{} task(s) valid", tasks.len());
    Ok(())
}

pub fn list(files: &Files, settings: &Settings) -> anyhow::Result<()> {
    let tasks = files.definitions()?.load()?;
    let store = super::existing_store(settings)?;
    let now = chrono_now();
    println!(
        "{:<24} {:<28} {:<22} {:<9} {:<22} LAST RESULT",
        "TASK", "SCHEDULE", "NEXT RUN (UTC)", "STATE", "LAST RUN (UTC)"
    );
    for t in &tasks {
        let next = t
            .schedule
            .next_after(now)
            .map(|n| n.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|| "never".into());
        let state = if t.disabled { "disabled" } else { "enabled" };
        let last = match &store {
            Some(s) => s.runs(&t.name, 1)?.into_iter().next(),
            None => None,
        };
        let (last_run, result) = match &last {
            Some(r) => (
                r.started.to_string(),
                r.reason.clone().unwrap_or_else(|| "ok".into()),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "{:<24} {:<28} {:<22} {state:<9} {last_run:<22} {result}",
            t.name,
            t.schedule.describe(),
            next
        );
    }
    Ok(())
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

pub async fn run(args: RunArgs, settings: &Settings) -> anyhow::Result<()> {
    let definitions = args.files.definitions()?;
    let task = definitions.find(definitions.load()?, &args.task)?;
    // One store for the secrets, the history and the metrics.
    let store = task_store(super::open_store(settings)?);
    let rendered = definitions.render(&task, &store)?;
    let tokens = if task.credentials.bearer.is_some() {
        args.tokens
            .source_for(&[&task], settings)
            .await
            .with_context(|| format!("task `{}` declares a bearer token", task.name))?
    } else {
        None
    };
    let upstream = task
        .credentials
        .bearer
        .as_ref()
        .is_some_and(|b| b.upstream_routes);
    let run_options = args.tokens.run_options(upstream, settings)?;
    let ended = daemon::run_one(
        &task,
        &rendered,
        &store,
        tokens,
        &run_options,
        args.metrics_file.as_deref(),
    )
    .await?;
    let outcome = match ended {
        Ended::Finished(outcome) => outcome,
        Ended::Terminated => {
            eprintln!(
                "credkeeper: task `{}` stopped by SIGTERM; its credentials were removed",
                task.name
            );
            return Err(crate::Exit(143).into());
        }
        Ended::Interrupted => {
            eprintln!(
                "credkeeper: task `{}` interrupted; its credentials were removed",
                task.name
            );
            return Err(crate::Exit(130).into());
        }
    };
    if !outcome.output.is_empty() {
        print!("{}", outcome.output);
    }
    let took = outcome.ended.seconds_after(outcome.started);
    match &outcome.reason {
        None => {
            tracing::info!(
                "task `{}` succeeded in {took} s ({} attempt(s))",
                task.name,
                outcome.attempts
            );
            Ok(())
        }
        Some(reason) => {
            eprintln!(
                "credkeeper: task `{}` failed after {} attempt(s) in {took} s: {reason}",
                task.name, outcome.attempts
            );
            Err(crate::Exit(outcome.exit_code().clamp(1, 255) as u8).into())
        }
    }
}

/// The store's task history and task secrets.
fn task_store(store: Arc<dyn credkeeper_store::Store>) -> TaskStore {
    TaskStore {
        history: store.clone(),
        secrets: store,
    }
}

/// `tasks serve`: the scheduler until SIGTERM/SIGINT; SIGHUP or a changed file reloads.
pub async fn serve(args: ServeArgs, settings: &Settings) -> anyhow::Result<()> {
    let definitions = args.files.definitions()?;
    // One store for the secrets and the history.
    let store = task_store(super::open_store(settings)?);
    let tasks = definitions.validated(Some(store.secrets.clone()))?;
    let scheduled = tasks.iter().filter(|t| !t.disabled).count();
    // With a source named, tokens are at hand even for bearer tasks a reload adds later.
    let tokens = args
        .tokens
        .source_for(&tasks.iter().collect::<Vec<_>>(), settings)
        .await?;
    drop(tasks);
    eprintln!("credkeeper tasks serve: {scheduled} task(s) scheduled");
    Daemon {
        definitions,
        store,
        tokens,
        // A reload may add a values cronjob that takes its token upstream's way.
        run_options: args.tokens.run_options(true, settings)?,
        grace_secs: args.grace,
        metrics_file: args.metrics_file,
    }
    .serve()
    .await?;
    Ok(())
}
