//! `credkeeper store`: the store itself — moving an embedded SQLite store to the
//! PostgreSQL database a fleet of brokers shares.

use crate::config::Global;
use anyhow::{Context, bail};
use credkeeper_store::{PostgresSettings, PostgresStore, SqliteStore, StoreSettings};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy the SQLite store (of --config's broker, or --state-dir) into an empty
    /// PostgreSQL database, rows still sealed, and check every table's count
    Migrate(MigrateArgs),
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The database: postgres://user@host:port/db?sslmode=verify-full
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// File holding only the database password (0600); else PGPASSWORD, PGPASSFILE or
    /// ~/.pgpass
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// CA certificates (PEM) the database server's certificate must chain to
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    let Command::Migrate(args) = command;
    let config = super::serve::load(global)?;
    let state = super::serve::state_dir(global, &config, false)?;
    let StoreSettings::Sqlite { dir } = config.store.settings(&state) else {
        bail!("the broker's [store] is PostgreSQL already; `store migrate` copies a SQLite store");
    };
    if !SqliteStore::exists(&dir) {
        bail!("no SQLite store in {} (credentials.db)", dir.display());
    }
    let source = SqliteStore::open(&dir)?;
    // The rows stay sealed: the database opens them with the SQLite store's own key file,
    // which every replica must then be given.
    let key_file = SqliteStore::key_file(&dir);
    let target = PostgresStore::open(&PostgresSettings {
        url: args.to,
        password_file: args.password_file,
        ca_file: args.ca_file,
        pool_size: 1,
        key_file: key_file.clone(),
    })?;
    let before: u64 = target.counts()?.iter().map(|(_, n)| n).sum();
    if before > 0 {
        bail!(
            "{} already holds {before} row(s): migrate into an empty database",
            credkeeper_store::Backend::location(&target)
        );
    }
    let dump = source.export().context("reading the SQLite store")?;
    target.import(&dump)?;
    let (want, got) = (dump.counts(), target.counts()?);
    for ((table, n), (_, m)) in want.iter().zip(&got) {
        eprintln!("{table:<14} {n:>8} copied, {m:>8} in the database");
    }
    if want != got {
        bail!("the counts differ: the copy is incomplete");
    }
    eprintln!(
        "Done. Point every broker at it: [store] url = \"{}\" and key_file = \"{}\" (a copy of \
         that file on each replica, e.g. a Kubernetes Secret).",
        credkeeper_store::Backend::location(&target),
        key_file.display()
    );
    Ok(())
}
