//! One tracker for every task: spawn with a child cancellation token, drain on shutdown.

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
#[derive(Debug, Clone)]
pub struct Supervisor {
    tracker: TaskTracker,
    root: CancellationToken,
    fatal: Arc<Mutex<Option<String>>>,
}

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
        let name = name.into();
        let token = self.root.child_token();
        let own = token.clone();
        // The one place a task is spawned: everything else comes through here.
        #[allow(clippy::disallowed_methods)]
        let inner = tokio::spawn(task(token));
        let root = self.root.clone();
        let fatal = Arc::clone(&self.fatal);
        self.tracker.spawn(async move {
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

    /// Cancels every task and waits up to `deadline` for them to finish.
    /// Returns `true` when all finished in time; otherwise logs that some did not.
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        self.root.cancel();
        self.tracker.close();
        let drained = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
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
