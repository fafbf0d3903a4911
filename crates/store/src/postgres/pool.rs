//! A few connections kept open, and the bridge from the store's synchronous calls to
//! tokio-postgres. Small on purpose: the store holds at most `pool_size` connections, a
//! closed one (the database restarted, a network cut) is dropped and the next call makes a
//! new one, so a replica reconnects by itself.

use super::connect::Target;
use crate::backend::StoreError;
use std::sync::{Condvar, Mutex};
use std::time::Duration;
use tokio_postgres::Client;

/// Longest a call waits for the database (including for a free connection): past it the
/// caller gets an error instead of a hung request.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

pub(super) struct Pool {
    /// Drives the connections' sockets; callers only wait on their replies. An `Option`
    /// only so that `drop` can shut it down without blocking (a store may be dropped on an
    /// async runtime's thread, where a blocking runtime drop panics).
    rt: Option<tokio::runtime::Runtime>,
    target: Target,
    size: usize,
    state: Mutex<Slots>,
    returned: Condvar,
}

struct Slots {
    idle: Vec<Client>,
    /// Connections out with callers or being made.
    busy: usize,
}

impl Pool {
    pub(super) fn new(target: Target, size: usize) -> Result<Pool, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("credkeeper-postgres")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend {
                path: target.shown.clone(),
                message: format!("cannot start the database runtime: {e}"),
            })?;
        Ok(Pool {
            rt: Some(rt),
            target,
            size,
            state: Mutex::new(Slots {
                idle: Vec::new(),
                busy: 0,
            }),
            returned: Condvar::new(),
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt
            .as_ref()
            .expect("the runtime lives as long as the pool")
    }

    pub(super) fn shown(&self) -> &str {
        &self.target.shown
    }

    pub(super) fn error(&self, message: String) -> StoreError {
        StoreError::Backend {
            path: self.target.shown.clone(),
            message,
        }
    }

    fn db_error(&self, e: &tokio_postgres::Error) -> StoreError {
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.severity(), db.message()),
            None => {
                let mut text = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            }
        };
        self.error(message)
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        // Slots are two plain fields, consistent at every await-free step.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run `f` with a connection of the pool, waiting here (never on an async runtime's
    /// timer of the caller's) until it is done or `CALL_TIMEOUT` has passed.
    pub(super) fn run<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, tokio_postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut client = self.checkout()?;
        let outcome = blocking(|| {
            let _context = self.rt().enter();
            futures_executor::block_on(tokio::time::timeout(CALL_TIMEOUT, f(&mut client)))
        });
        match outcome {
            Ok(Ok(value)) => {
                self.checkin(Some(client));
                Ok(value)
            }
            Ok(Err(e)) => {
                let closed = client.is_closed();
                self.checkin((!closed).then_some(client));
                Err(self.db_error(&e))
            }
            Err(_) => {
                // The reply may still come: this connection cannot be trusted with the next call.
                self.checkin(None);
                Err(self.error(format!(
                    "the database did not answer within {} s",
                    CALL_TIMEOUT.as_secs()
                )))
            }
        }
    }

    fn checkout(&self) -> Result<Client, StoreError> {
        blocking(|| self.checkout_waiting())
    }

    fn checkout_waiting(&self) -> Result<Client, StoreError> {
        let deadline = std::time::Instant::now() + CALL_TIMEOUT;
        let mut slots = self.slots();
        loop {
            while let Some(client) = slots.idle.pop() {
                if !client.is_closed() {
                    slots.busy += 1;
                    return Ok(client);
                }
            }
            if slots.busy < self.size {
                slots.busy += 1;
                drop(slots);
                return self.connect().inspect_err(|_| self.checkin(None));
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(self.error(format!(
                    "all {} database connections stayed busy for {} s",
                    self.size,
                    CALL_TIMEOUT.as_secs()
                )));
            }
            slots = self
                .returned
                .wait_timeout(slots, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Give a connection back; `None` when it is gone (closed, or no longer trusted).
    fn checkin(&self, client: Option<Client>) {
        let mut slots = self.slots();
        slots.busy -= 1;
        slots.idle.extend(client);
        drop(slots);
        self.returned.notify_one();
    }

    fn connect(&self) -> Result<Client, StoreError> {
        let config = self.target.config.clone();
        let tls = self.target.tls.clone();
        let made = self.rt().spawn(async move {
            match tls {
                Some(tls) => {
                    let (client, connection) = config.connect(tls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
                None => {
                    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    Ok(client)
                }
            }
        });
        match futures_executor::block_on(made) {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.db_error(&e)),
            Err(e) => Err(self.error(format!("connecting failed: {e}"))),
        }
    }
}

/// Wait in `f` without holding up an async runtime's other tasks: on a worker of a
/// multi-threaded tokio runtime (the broker's), tokio first hands that worker's tasks to
/// another thread. A database round trip is far longer than SQLite's microseconds.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
