//! One tracker for every task: spawn with a child cancellation token, drain on shutdown — in two
//! stages, so a task that records what the others do (the change log) stops after them.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns and tracks the daemon's tasks.
///
/// Every task gets a child of the root cancellation token. A task that returns an error or panics
/// is logged and brings the daemon down deliberately (tasks that can recover, such as sources,
/// handle their own failures and only return on cancellation).
///
/// Shutdown has two stages: every task spawned with [`Self::spawn`] is cancelled first, and only
/// once they have all finished (or most of the deadline has passed) are the tasks spawned with
/// [`Self::spawn_last`] cancelled — the change log, which must still be writing while sources
/// close and plugins mark their outputs Bad, or those last changes would go unrecorded.
#[derive(Debug, Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    root: CancellationToken,
    /// The second stage: its own tracker and token (not a child of `root`).
    last: TaskTracker,
    last_token: CancellationToken,
    fatal: Arc<Mutex<Option<String>>>,
}

/// The part of the shutdown deadline kept for the second stage (the change log's final write and
/// `fdatasync`), when the first stage overruns: a quarter.
const LAST_STAGE_SHARE: u32 = 4;

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    /// A supervisor with a fresh root token.
    pub fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            root: CancellationToken::new(),
            last: TaskTracker::new(),
            last_token: CancellationToken::new(),
            fatal: Arc::new(Mutex::new(None)),
        }
    }

    /// The root token; cancelled when shutdown starts.
    pub fn token(&self) -> &CancellationToken {
        &self.root
    }

    /// Spawns a task named `name` on the current runtime. `task` receives a child token and must
    /// return soon after it is cancelled. An `Err` or a panic cancels everything.
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_cancellable(name, task);
    }

    /// Like [`Self::spawn`], and returns the task's own token: cancelling it stops just this task
    /// (used to restart one source on reload).
    pub fn spawn_cancellable<F, Fut>(&self, name: impl Into<String>, task: F) -> CancellationToken
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_in(&self.tracker, self.root.child_token(), name.into(), task)
    }

    /// Like [`Self::spawn`], in the second stage of shutdown: the task's token is cancelled only
    /// after every first-stage task has finished (or three quarters of the deadline have passed).
    /// An `Err` or a panic still cancels everything.
    pub fn spawn_last<F, Fut>(&self, name: impl Into<String>, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_in(&self.last, self.last_token.child_token(), name.into(), task);
    }

    fn spawn_in<F, Fut>(
        &self,
        tracker: &TaskTracker,
        token: CancellationToken,
        name: String,
        task: F,
    ) -> CancellationToken
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let own = token.clone();
        // The one place a task is spawned: everything else comes through here.
        #[allow(clippy::disallowed_methods)]
        let inner = tokio::spawn(task(token));
        let root = self.root.clone();
        let fatal = Arc::clone(&self.fatal);
        tracker.spawn(async move {
            let failure = match inner.await {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(format!("task {name} failed: {error:#}")),
                Err(join) if join.is_panic() => Some(format!("task {name} panicked")),
                Err(_) => None,
            };
            if let Some(message) = failure {
                super::events::TaskFailed {
                    task: &name,
                    message: &message,
                }
                .emit();
                fatal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(message);
                root.cancel();
            }
        });
        own
    }

    /// Resolves when shutdown has been requested (by [`Self::shutdown`] or a failing task).
    pub async fn cancelled(&self) {
        self.root.cancelled().await;
    }

    /// The first fatal task error, if any.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Cancels every task and waits up to `deadline` for them to finish: first the tasks of
    /// [`Self::spawn`] (for up to three quarters of `deadline` when they overrun), then those of
    /// [`Self::spawn_last`] (for what is left). Returns `true` when all finished in time;
    /// otherwise logs that some did not.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let end = tokio::time::Instant::now() + deadline;
        self.root.cancel();
        self.tracker.close();
        let first = tokio::time::timeout_at(end - deadline / LAST_STAGE_SHARE, self.tracker.wait())
            .await
            .is_ok();
        self.last_token.cancel();
        self.last.close();
        let last = tokio::time::timeout_at(end, self.last.wait()).await.is_ok();
        let drained = first && last;
        if !drained {
            super::events::ShutdownOverran { deadline }.emit();
        }
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_drains_cooperative_tasks() {
        let supervisor = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::channel(1);
        supervisor.spawn("worker", move |token| async move {
            token.cancelled().await;
            tx.send("drained").await?;
            Ok(())
        });
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        assert_eq!(rx.recv().await, Some("drained"));
        assert!(supervisor.fatal_error().is_none());
    }

    #[tokio::test]
    async fn a_failing_task_cancels_the_others() {
        let supervisor = Supervisor::new();
        supervisor.spawn("fails", |_| async { anyhow::bail!("boom") });
        supervisor.cancelled().await;
        assert_eq!(
            supervisor.fatal_error().as_deref(),
            Some("task fails failed: boom")
        );
    }

    /// A second-stage task is cancelled only after the first stage has finished, so it sees
    /// what first-stage tasks do while they stop.
    #[tokio::test]
    async fn the_last_stage_stops_after_every_other_task() {
        let supervisor = Supervisor::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let first = tx.clone();
        supervisor.spawn("source", move |token| async move {
            token.cancelled().await;
            // A slow close (a session's CloseSession), then a last act.
            tokio::task::yield_now().await;
            first.send("source stopped")?;
            Ok(())
        });
        supervisor.spawn_last("log", move |token| async move {
            token.cancelled().await;
            tx.send("log stopped")?;
            Ok(())
        });
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        assert_eq!(rx.recv().await, Some("source stopped"));
        assert_eq!(rx.recv().await, Some("log stopped"));
    }

    /// A first stage that overruns leaves the second a quarter of the deadline.
    #[tokio::test(start_paused = true)]
    async fn an_overrunning_first_stage_leaves_the_last_a_quarter() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stubborn", |_| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        supervisor.spawn_last("log", move |token| async move {
            token.cancelled().await;
            let _ = tx.send(tokio::time::Instant::now());
            Ok(())
        });
        let started = tokio::time::Instant::now();
        assert!(!supervisor.shutdown(Duration::from_secs(8)).await);
        let cancelled = rx.await.unwrap();
        assert_eq!(cancelled - started, Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_gives_up_after_the_deadline() {
        let supervisor = Supervisor::new();
        supervisor.spawn("stubborn", |_| async {
            std::future::pending::<()>().await;
            Ok(())
        });
        assert!(!supervisor.shutdown(Duration::from_secs(1)).await);
    }
}
