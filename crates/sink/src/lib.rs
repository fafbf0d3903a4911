//! credkeeper-sink: where tokens are delivered, the last stage of the flow
//! (source → store → refresher → **sink**).
//!
//! What it is for:
//! - [`Sink`]: one place a token goes. [`TokenFile`] (atomic, mode 0600, the WLCG Bearer
//!   Token Discovery file by default) and [`Stdout`] here; the daemons that deliver to
//!   directories of their own (credmon's HTCondor credential directory, a task's private
//!   run directory) implement it on top of [`file`].
//! - [`condor`]: the HTCondor credential directory's files (`.top` / `.use` in
//!   scitokens-credmon's shapes, the CredD's key files), for credmon and the broker's web
//!   login alike.
//! - [`file`]: replacing a file so that a reader never sees a partial one.
//! - [`batch`]: replacing many files with one durable commit (two file-system syncs for
//!   all of them), for a pass that rewrites thousands.
//! - [`spare`]: each batch-replaced file's previous version kept beside it and written over
//!   next time, so that a pass neither creates nor frees a file per credential.
//! - [`discovery`]: where a token is found (WLCG Bearer Token Discovery).
//! - [`perm`]: the ssh-style refusal of secret files that others can read, for the files
//!   credkeeper is handed (client secrets, keys) as for the ones it writes.
//!
//! What it is not: it never decides which token to write or when, and never talks to an
//! issuer or a store.

pub mod batch;
pub mod condor;
pub mod discovery;
pub mod file;
pub mod perm;
pub mod spare;

pub use discovery::{TokenLocation, default_path, discover, uid};
pub use file::{SinkError, read, write_atomic, write_private, write_token};

use credkeeper_core::Secret;
use std::fmt;
use std::path::PathBuf;

/// One place a token is delivered to.
pub trait Sink: fmt::Display {
    /// Put `token` there; a reader sees the old token or this one, never a mix.
    fn deliver(&self, token: &Secret) -> Result<(), SinkError>;
    /// The token there now, if one can be read back.
    fn existing(&self) -> Option<Secret>;
}

/// A token file: the token and a newline, replaced atomically with mode 0600.
pub struct TokenFile(pub PathBuf);

impl TokenFile {
    /// The file WLCG Bearer Token Discovery writes to: `$BEARER_TOKEN_FILE`, else
    /// `$XDG_RUNTIME_DIR/bt_u<uid>`, else `/tmp/bt_u<uid>`.
    pub fn discovered() -> TokenFile {
        TokenFile(default_path())
    }
}

impl Sink for TokenFile {
    fn deliver(&self, token: &Secret) -> Result<(), SinkError> {
        write_token(&self.0, token)
    }

    fn existing(&self) -> Option<Secret> {
        read(&self.0).ok()
    }
}

impl fmt::Display for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.display())
    }
}

/// Standard output (`-o -`): the token and a newline, for a pipe.
pub struct Stdout;

impl Sink for Stdout {
    fn deliver(&self, token: &Secret) -> Result<(), SinkError> {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", token.expose())
            .and_then(|()| out.flush())
            .map_err(|source| SinkError::Write {
                path: PathBuf::from("-"),
                source,
            })
    }

    fn existing(&self) -> Option<Secret> {
        None
    }
}

impl fmt::Display for Stdout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output")
    }
}
