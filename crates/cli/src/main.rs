//! The `credkeeper` command: flags in, library calls, messages and exit codes out.
//!
//! Each subcommand lives in `cmd/<name>.rs` and only turns flags into calls on the
//! library crates; errors become one-line messages here. Exit codes: 0 success,
//! 1 failure, 2 usage error, 130 interrupted.

// std's runtime set-up is skipped for a faster start (see start.rs); unit tests keep
// the test harness's own `main`.
#![cfg_attr(not(test), no_main)]

mod cmd;
mod config;
mod math;
mod prompt;
#[cfg(not(test))]
mod start;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "credkeeper",
    version,
    about = "Get, keep fresh and hand out OAuth2/OIDC tokens for automated workloads",
    long_about = "credkeeper gets OAuth2/OIDC bearer tokens and keeps them fresh.\n\n\
        `credkeeper login` does the one interactive login; afterwards `credkeeper get` \
        puts a valid token in a file (WLCG Bearer Token Discovery) without a human, \
        reusing the token already there when it has enough time left.",
    after_help = "Exit status: 0 success, 1 failure, 2 usage error, 130 interrupted.\n\
        Configuration: flags override CREDKEEPER_* variables, which override the \
        config file (--config, default $XDG_CONFIG_HOME/credkeeper/config.toml)."
)]
struct Cli {
    #[command(flatten)]
    global: config::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Put a valid token in a file, reusing the one there when it has --minsecs left
    Get(Box<cmd::get::Args>),
    /// Log in once interactively (device code, or --browser) and store the refresh token
    Login(cmd::login::LoginArgs),
    /// Revoke and delete the stored refresh token for an issuer
    Logout(cmd::login::LogoutArgs),
    /// Inspect or verify a token
    #[command(subcommand)]
    Token(cmd::token::Command),
    /// Run the broker: robot token API, local issuer, refresher (`--dev`: zero config)
    Serve(cmd::serve::Args),
    /// Give a broker robot a new secret (stored hashed; written once to a 0600 file)
    RobotSecret(cmd::serve::RobotSecretArgs),
    /// The broker's store: move a SQLite store to a fleet's PostgreSQL
    #[command(subcommand)]
    Store(cmd::store::Command),
    /// Keep an HTCondor credential directory fresh (scitokens-credmon compatible)
    Credmon(cmd::credmon::Args),
    /// Registry credentials: the keychain and the Docker credential helper
    #[command(subcommand)]
    Registry(cmd::registry::Command),
    /// Scheduled tasks with their credentials (rucio-task-manager's formats too)
    #[command(subcommand)]
    Tasks(cmd::tasks::Command),
}

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// A failure whose message has already been shown, carrying its exit code.
#[derive(Debug)]
pub struct Exit(pub u8);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

/// Logs go to standard error, or to `file` (appended; daemons such as `credmon` log to
/// HTCondor's log file), human-readable or JSON.
fn init_logging(global: &config::Global, file: Option<std::fs::File>) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("CREDKEEPER_LOG").unwrap_or_else(|_| {
            // Every crate of ours, none of the dependencies': a directive's target matches
            // by prefix, so `credkeeper` covers credkeeper_core, credkeeper_tasks, ...
            tracing_subscriber::EnvFilter::new(format!("credkeeper={level}"))
        });
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let to_file = file.is_some();
    let writer = match file {
        Some(f) => BoxMakeWriter::new(std::sync::Mutex::new(f)),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(!to_file && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match (global.log_format, to_file) {
        (LogFormat::Json, _) => builder.json().init(),
        // A log file keeps times; a terminal does not need them.
        (LogFormat::Human, true) => builder.init(),
        (LogFormat::Human, false) => builder.without_time().init(),
    }
}

/// The whole command, from the arguments to the exit status ([`start`] calls it).
#[cfg_attr(test, allow(dead_code))]
fn run() -> u8 {
    // Installed (or linked) as docker-credential-credkeeper, the binary is that helper:
    // one action as the only argument, the protocol's own usage message otherwise.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let program = if args.is_empty() {
        Default::default()
    } else {
        args.remove(0)
    };
    if std::path::Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "docker-credential-credkeeper")
    {
        let rest: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let action = match rest.as_slice() {
            [one] => one.as_str(),
            _ => "usage",
        };
        let state = std::env::var_os("CREDKEEPER_STATE_DIR").map(std::path::PathBuf::from);
        crypto_ready();
        return cmd::registry::helper_main(action, state) as u8;
    }
    // `--version` alone is asked by scripts and probes in loops: answered before clap builds
    // the whole command tree (the same text clap prints).
    if let [flag] = args.as_slice()
        && (flag == "--version" || flag == "-V")
    {
        let ours = env!("CARGO_PKG_VERSION");
        // As htgettoken or igwn-robot-get, the version of the tool whose flags are
        // followed comes first: scripts compare it.
        match persona(&program) {
            None => println!("credkeeper {ours}"),
            Some(p) => println!("{} (credkeeper {ours})", persona_version(p)),
        }
        return 0;
    }
    let cli = match persona(&program) {
        // Installed as htgettoken or igwn-robot-get: `credkeeper get` with that tool's
        // defaults, options from HTGETTOKENOPTS first (as htgettoken reads them).
        Some(persona) => {
            let mut argv = vec![
                std::ffi::OsString::from("credkeeper"),
                "get".into(),
                "--persona".into(),
                persona.into(),
            ];
            if let Some(opts) = std::env::var_os("HTGETTOKENOPTS") {
                argv.extend(opts.to_string_lossy().split_whitespace().map(Into::into));
            }
            argv.extend(args);
            parse(argv)
        }
        None => parse(std::iter::once(program).chain(args).collect()),
    };
    let log_file = match &cli.command {
        Command::Credmon(args) => match cmd::credmon::log_file(args) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("credkeeper: {e:#}");
                return 1;
            }
        },
        _ => None,
    };
    init_logging(&cli.global, log_file);
    match dispatch(cli) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => *code,
            None => {
                eprintln!("credkeeper: {}", one_line(&e));
                1
            }
        },
    }
}

/// The command line, parsed. `get` runs from cron and mostly just reuses its file, so most
/// of its start-up was clap building the tree of every command: it is parsed against a tree
/// holding `get` alone. Anything else (another command, help, a version flag, any error)
/// goes through the whole tree, so what a user sees is the same.
fn parse(argv: Vec<std::ffi::OsString>) -> Cli {
    parse_get_alone(&argv).unwrap_or_else(|| Cli::parse_from(argv))
}

fn parse_get_alone(argv: &[std::ffi::OsString]) -> Option<Cli> {
    use clap::{Args, FromArgMatches};
    let asks_for_help = |a: &std::ffi::OsString| {
        ["-h", "--help", "help", "-V", "--version"]
            .iter()
            .any(|h| a == h)
    };
    if !argv.iter().skip(1).any(|a| a == "get") || argv.iter().any(asks_for_help) {
        return None;
    }
    let mut tree = config::Global::augment_args(clap::Command::new("credkeeper"))
        .subcommand(cmd::get::Args::augment_args(clap::Command::new("get")));
    let matches = tree.try_get_matches_from_mut(argv).ok()?;
    let cli = Cli::from_arg_matches(&matches).ok();
    // Freeing clap's tree and matches took a fifth of its parse (callgrind); the process
    // ends soon and returns the memory at once.
    std::mem::forget((tree, matches));
    cli
}

/// The release of each stood-in tool whose options and defaults `get --persona` follows.
fn persona_version(persona: &str) -> &'static str {
    match persona {
        "htgettoken" => "2.2",
        _ => "0.3.3",
    }
}

/// The tool this binary stands in for, by the name it was run as.
fn persona(program: &std::ffi::OsStr) -> Option<&'static str> {
    match std::path::Path::new(program).file_name()?.to_str()? {
        "htgettoken" => Some("htgettoken"),
        "igwn-robot-get" => Some("igwn-robot-get"),
        _ => None,
    }
}

/// How a command runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One thread; Ctrl-C stops it at once (nothing is half-written: every sink writes
    /// atomically).
    Command,
    /// A daemon on one thread that shuts down on its own signals.
    Daemon,
    /// A server using every core, shutting down on its own signals.
    Server,
}

fn block_on(work: impl Future<Output = anyhow::Result<()>>, mode: Mode) -> anyhow::Result<()> {
    let runtime = match mode {
        Mode::Server => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(|e| anyhow::anyhow!("cannot start: {e}"))?;
    let graceful = mode != Mode::Command;
    runtime.block_on(async {
        if graceful {
            return work.await;
        }
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => {
                prompt::clear_line();
                eprintln!("credkeeper: interrupted; nothing was changed");
                Err(Exit(130).into())
            }
        }
    })
}

/// aws-lc is built without its load-time constructor (.cargo/config.toml): its CPU-feature
/// probe runs here, before any command that may use crypto. Only `--version` and `get`'s
/// reuse check (reading a file and decoding a JWT, no crypto) run before it, so no key is
/// ever set up under one set of CPU features and used under another.
fn crypto_ready() {
    aws_lc_rs::init();
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    if !matches!(cli.command, Command::Get(_)) {
        crypto_ready();
    }
    // The broker's commands read the broker's config; the rest read the client's.
    let settings = || config::Settings::load(&global);
    match cli.command {
        Command::Get(args) => {
            let settings = settings()?;
            let plan = cmd::get::plan(&args, &settings)?;
            if plan.reused() {
                return Ok(());
            }
            crypto_ready();
            block_on(cmd::get::fetch(plan, *args, &settings), Mode::Command)
        }
        Command::Login(args) => {
            let settings = settings()?;
            block_on(cmd::login::login(args, &settings), Mode::Command)
        }
        Command::Logout(args) => {
            let settings = settings()?;
            block_on(cmd::login::logout(args, &settings), Mode::Command)
        }
        Command::Token(c) => {
            let settings = settings()?;
            block_on(cmd::token::run(c, &settings), Mode::Command)
        }
        Command::Serve(args) => block_on(cmd::serve::run(args, &global), Mode::Server),
        Command::Credmon(args) => block_on(cmd::credmon::run(args, &global), Mode::Daemon),
        Command::RobotSecret(args) => cmd::serve::robot_secret(args, &global),
        Command::Store(command) => cmd::store::run(command, &global),
        Command::Registry(cmd::registry::Command::Token(args)) => block_on(
            cmd::registry::token(args, global.state_dir.clone(), global.cafile.clone()),
            Mode::Command,
        ),
        Command::Registry(cmd::registry::Command::CriProxy(args)) => {
            block_on(cmd::registry::cri_proxy(args), Mode::Server)
        }
        Command::Registry(c) => cmd::registry::run(c, global.state_dir.clone()),
        Command::Tasks(cmd::tasks::Command::Validate(f)) => cmd::tasks::validate(&f, &settings()?),
        Command::Tasks(cmd::tasks::Command::Secret(c)) => cmd::tasks::secret(c, &settings()?),
        Command::Tasks(cmd::tasks::Command::List(f)) => cmd::tasks::list(&f, &settings()?),
        Command::Tasks(cmd::tasks::Command::History {
            task,
            limit,
            output,
        }) => cmd::tasks::history(&task, limit, output, &settings()?),
        Command::Tasks(cmd::tasks::Command::Serve(args)) => {
            let settings = settings()?;
            block_on(cmd::tasks::serve(args, &settings), Mode::Server)
        }
        Command::Tasks(cmd::tasks::Command::Run(args)) => {
            let settings = settings()?;
            block_on(cmd::tasks::run(args, &settings), Mode::Daemon)
        }
    }
}

/// The error and its causes on one line, without repeating a cause a message already quotes.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    /// build.rs links libgcc's unwinder in statically: a panic (in a runtime's task, say)
    /// must still unwind to whoever catches it, not abort the process.
    #[test]
    fn a_panic_unwinds_through_the_statically_linked_unwinder() {
        // The panic hook is left alone (it is process-wide, and the harness captures its
        // message); a broken unwinder would abort the whole test binary here.
        let caught = std::panic::catch_unwind(|| panic!("on purpose"));
        assert!(caught.is_err());
    }
}
