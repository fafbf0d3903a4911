//! `credkeeper store`: the store itself — moving an embedded SQLite store to the
//! PostgreSQL database a fleet of brokers shares, and rotating the issuer key it keeps.

use crate::config::Global;
use anyhow::{Context, bail};
use credkeeper_store::{PostgresSettings, PostgresStore, SqliteStore, StoreSettings};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Copy the SQLite store (of --config's broker, or --state-dir) into an empty
    /// PostgreSQL database, rows still sealed, and check every table's count
    Migrate(MigrateArgs),
    /// Add a new issuer signing key to the store: every broker sharing it publishes the key
    /// at its next refresher pass and signs with it after --lead; the old key stays
    /// published until the last token it signed has expired
    RotateIssuerKey(RotateArgs),
}

#[derive(clap::Args)]
pub struct RotateArgs {
    /// Seconds between publishing the new key and signing with it: longer than relying
    /// parties cache the JWKS
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub lead: u32,
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
    match command {
        Command::Migrate(args) => migrate(args, global),
        Command::RotateIssuerKey(args) => rotate(args, global),
    }
}

fn rotate(args: RotateArgs, global: &Global) -> anyhow::Result<()> {
    let config = super::serve::load(global)?;
    let state = super::serve::state_dir(global, &config, false)?;
    if let Some(file) = &config.issuer.key_file {
        bail!(
            "the issuer key is the file {} ([issuer] key_file), not kept in the store: rotate it by replacing the file",
            file.display()
        );
    }
    let store = credkeeper_store::open(&config.store.settings(&state))?;
    let url = config.issuer.url.clone().unwrap_or_default();
    let settings = config.issuer.settings(&url, &state);
    let (kid, from) =
        credkeeper_server::issuer_keys::rotate(&store, &settings, i64::from(args.lead))?;
    eprintln!(
        "New issuer key {kid} in the store at {}: published by every broker at its next \
         refresher pass, signing from {from}.",
        store.location()
    );
    Ok(())
}

fn migrate(args: MigrateArgs, global: &Global) -> anyhow::Result<()> {
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
