//! Connections from outside: how many at once, and how long each may take.
//!
//! Anyone who can reach the port can open connections before authenticating, so nothing
//! they hold may be unbounded:
//! - at most [`Limits::max_connections`] at once, below the file-descriptor limit so the
//!   broker keeps descriptors for its store, its log files and its own requests. At the
//!   cap, the connection that has waited longest without a request in progress (a slow
//!   client still sending its head, or an idle keep-alive) is closed to make room; only
//!   when every connection is busy does accepting wait, and a log line says so;
//! - a request head must arrive within [`Limits::header_timeout`], and a kept-alive
//!   connection must start its next request within it too (hyper's header read timer runs
//!   from the moment it waits for a head);
//! - a request body must arrive within [`Limits::body_timeout`].
//!
//! What it is not: routing, authentication, rate limits per caller (those are the
//! router's layers).

use axum::Router;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};

/// What one peer may hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
}

impl Limits {
    /// The connection cap that leaves a quarter of the process's descriptor limit (at
    /// least 64) to everything else, and at most 10,000.
    pub fn default_max_connections() -> usize {
        let soft = raise_fd_limit();
        (soft.saturating_sub(64) * 3 / 4).clamp(16, 10_000)
    }
}

/// Raise the soft descriptor limit to the hard one (capped at 65,536), as servers do:
/// systemd's default soft limit of 1,024 is kept for programs that use `select`. Returns
/// the soft limit in effect.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 1024;
    }
    let want = limit.rlim_max.min(65_536);
    if want > limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; raising the soft limit up to the
        // hard one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return want as usize;
        }
    }
    limit.rlim_cur as usize
}

/// A connection as the cap sees it.
struct Tracked {
    /// Since when it has had no request in progress (`u64::MAX`: one is in progress), in
    /// milliseconds since the server started.
    idle_since: AtomicU64,
    close: Notify,
}

const BUSY: u64 = u64::MAX;

/// The open connections.
struct Table {
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    freed: Notify,
    started: Instant,
    max: usize,
}

impl Table {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Tracked>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Room for one more: at the cap, the connection idle the longest leaves the table and
    /// is told to close at once. `false` when every connection is busy.
    fn make_room(&self) -> bool {
        let mut open = self.lock();
        if open.len() < self.max {
            return true;
        }
        let oldest = open
            .iter()
            .map(|(id, t)| (t.idle_since.load(Ordering::Relaxed), *id))
            .filter(|(since, _)| *since != BUSY)
            .min();
        match oldest.and_then(|(_, id)| open.remove(&id)) {
            Some(t) => {
                t.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Serve `app` on `listener` until `stop` turns true, then let the requests in flight
/// finish.
pub async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    L::Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let table = Arc::new(Table {
        open: Mutex::new(HashMap::new()),
        freed: Notify::new(),
        started: Instant::now(),
        max: limits.max_connections.max(1),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_id = 0u64;
    let mut warned_at: Option<Instant> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        while !table.make_room() {
            if warned_at.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                tracing::warn!(
                    "connection limit of {} reached and every connection is busy; new \
                     connections wait (raise [server] max_connections, and LimitNOFILE)",
                    table.max
                );
                warned_at = Some(Instant::now());
            }
            tokio::select! {
                _ = table.freed.notified() => {}
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        if *stop.borrow() {
            break;
        }
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            // A sender gone without a word (its task panicked) is a stop too: `changed`
            // would answer at once for ever, and this loop would spin.
            changed = stop.changed() => match changed {
                Ok(()) => continue,
                Err(_) => break,
            },
        };
        while tasks.try_join_next().is_some() {}
        next_id += 1;
        let id = next_id;
        let tracked = Arc::new(Tracked {
            idle_since: AtomicU64::new(table.now_ms()),
            close: Notify::new(),
        });
        table.lock().insert(id, tracked.clone());
        let (table, app, mut stop) = (table.clone(), app.clone(), stop.clone());
        tasks.spawn(async move {
            let service = Tracking {
                app,
                peer,
                tracked: tracked.clone(),
                table: table.clone(),
                body_timeout: limits.body_timeout,
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection closed: {e}");
                    }
                }
                // Evicted with no request in progress: nothing is lost by closing now
                // (hyper's graceful shutdown would wait for a half-sent head).
                _ = tracked.close.notified() => {
                    tracing::debug!("connection closed to make room under the cap");
                }
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
                }
            }
            table.lock().remove(&id);
            table.freed.notify_one();
        });
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The address a request came from (none for a request that did not come through
/// [`serve`]). The address is the connection's: behind a reverse proxy, the proxy's.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub Option<IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<Peer>()
            .copied()
            .unwrap_or(Peer(None)))
    }
}

/// The router, marking its connection busy while a request is in progress and giving
/// the request body its deadline.
#[derive(Clone)]
struct Tracking {
    app: Router,
    /// Given to each request as [`Peer`].
    peer: SocketAddr,
    tracked: Arc<Tracked>,
    table: Arc<Table>,
    body_timeout: Duration,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracking {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, req: hyper::Request<Incoming>) -> Self::Future {
        use tower::ServiceExt;
        self.tracked.idle_since.store(BUSY, Ordering::Relaxed);
        let mut req = req.map(|body| {
            axum::body::Body::new(Deadline {
                inner: body,
                sleep: Box::pin(tokio::time::sleep(self.body_timeout)),
            })
        });
        req.extensions_mut().insert(Peer(Some(self.peer.ip())));
        let (app, tracked, table) = (self.app.clone(), self.tracked.clone(), self.table.clone());
        Box::pin(async move {
            let response = app.oneshot(req).await;
            tracked.idle_since.store(table.now_ms(), Ordering::Relaxed);
            response
        })
    }
}

/// A request body that fails once its deadline passes before its end.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

/// The body came too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimeout;

impl Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
