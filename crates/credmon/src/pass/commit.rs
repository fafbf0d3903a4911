//! The pass's credential files, made durable in groups. Each refresh or signature stages
//! its files, gives back its concurrency permit and waits; one task commits everything
//! waiting with a [`credkeeper_sink::batch::Committer`] and answers each. While one commit
//! runs the next group gathers, and each sync serves two groups, so the syncs a pass pays
//! grow with how long it takes, not with how many credentials it writes; a lone refresh
//! is committed at once.

use crate::error::PassError;
use credkeeper_sink::SinkError;
use credkeeper_sink::batch::{Committer, Replacement};
use credkeeper_sink::spare::Spares;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

type Waiting = (Replacement, oneshot::Sender<Result<(), PassError>>);

/// Where a pass's tasks hand their staged files. The committing task ends once every
/// clone is dropped and the last group is answered.
#[derive(Clone)]
pub(super) struct Commits {
    waiting: mpsc::UnboundedSender<Waiting>,
    /// The credential directory held for spares, if this pass got it: held by the
    /// committing task too, until the last exchange is durable.
    spares: Option<Arc<Spares>>,
}

impl Commits {
    pub(super) fn start(spares: Option<Spares>) -> (Commits, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let spares = spares.map(Arc::new);
        let held = spares.clone();
        let committing = tokio::spawn(async move {
            run(rx).await;
            drop(held);
        });
        let commits = Commits {
            waiting: tx,
            spares,
        };
        (commits, committing)
    }

    /// What staging may write over: the directory's spares, when this pass holds it.
    pub(super) fn spares(&self) -> Option<&Spares> {
        self.spares.as_deref()
    }

    /// Give back `permit` (the provider and the signer are done with), then wait until
    /// `files` are in place and durable.
    pub(super) async fn place(
        &self,
        files: Replacement,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Result<(), PassError> {
        drop(permit);
        let (tx, rx) = oneshot::channel();
        self.waiting
            .send((files, tx))
            .map_err(|_| PassError::Uncommitted)?;
        rx.await.unwrap_or(Err(PassError::Uncommitted))
    }
}

async fn run(mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    let mut committer = Committer::default();
    loop {
        let mut group = Vec::new();
        while let Ok(w) = waiting.try_recv() {
            group.push(w);
        }
        if group.is_empty() {
            // Nothing more to share a sync with: make the renamed group durable now.
            if committer.pending() {
                committer = on_blocking_thread(committer, Committer::finish).await;
                continue;
            }
            let Some(first) = waiting.recv().await else {
                break;
            };
            group.push(first);
            while let Ok(w) = waiting.try_recv() {
                group.push(w);
            }
        }
        let group: Vec<_> = group
            .into_iter()
            .map(|(files, answer)| (answer, files))
            .collect();
        committer = on_blocking_thread(committer, move |c| c.commit(group)).await;
    }
}

type Answer = oneshot::Sender<Result<(), PassError>>;

/// Run one step of `committer` off the async threads and answer whom it completed. A
/// panic loses the committer and drops its answers (each waiter reports Uncommitted);
/// the pass goes on with a new one.
async fn on_blocking_thread(
    mut committer: Committer<Answer>,
    step: impl FnOnce(&mut Committer<Answer>) -> Vec<(Answer, Result<(), SinkError>)> + Send + 'static,
) -> Committer<Answer> {
    let started = std::time::Instant::now();
    let stepped = tokio::task::spawn_blocking(move || {
        let done = step(&mut committer);
        (committer, done)
    })
    .await;
    let Ok((committer, done)) = stepped else {
        return Committer::default();
    };
    tracing::debug!(
        "{} credentials' files durable after {} ms",
        done.len(),
        started.elapsed().as_millis()
    );
    for (answer, result) in done {
        let _ = answer.send(result.map_err(PassError::from));
    }
    committer
}
