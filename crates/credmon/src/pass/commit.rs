//! The pass's credential files, made durable in groups. Each refresh or signature stages
//! its files, gives back its concurrency permit and waits; one task commits everything
//! waiting with [`credkeeper_sink::batch::commit`] and answers each. While one commit
//! runs the next group gathers, so the syncs a pass pays grow with how long it takes, not
//! with how many credentials it writes; a lone refresh is committed at once.

use crate::error::PassError;
use credkeeper_sink::batch::{self, Replacement};
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};

type Waiting = (Replacement, oneshot::Sender<Result<(), PassError>>);

/// Where a pass's tasks hand their staged files. The committing task ends once every
/// clone is dropped and the last group is answered.
#[derive(Clone)]
pub(super) struct Commits(mpsc::UnboundedSender<Waiting>);

impl Commits {
    pub(super) fn start() -> (Commits, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Commits(tx), tokio::spawn(run(rx)))
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
        self.0
            .send((files, tx))
            .map_err(|_| PassError::Uncommitted)?;
        rx.await.unwrap_or(Err(PassError::Uncommitted))
    }
}

async fn run(mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    while let Some(first) = waiting.recv().await {
        let mut group = vec![first];
        while let Ok(more) = waiting.try_recv() {
            group.push(more);
        }
        let (files, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let (count, started) = (files.len(), std::time::Instant::now());
        // A panic in the commit drops the answers: each waiter then reports Uncommitted.
        let Ok(results) = tokio::task::spawn_blocking(move || batch::commit(files)).await else {
            continue;
        };
        tracing::debug!(
            "committed {count} credentials' files in {} ms",
            started.elapsed().as_millis()
        );
        for (answer, result) in answers.into_iter().zip(results) {
            let _ = answer.send(result.map_err(PassError::from));
        }
    }
}
