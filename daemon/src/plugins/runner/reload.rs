//! Hot reload: one watcher on the plugin files' folders, and per plugin a reloader task that reads,
//! fingerprints and loads a changed file off the plugin's call path, then hands the new version to
//! the plugin's runner.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::ReloadOutcome;
use super::events::{self, Refusal};
use crate::plugins::runtime::{PluginError, PluginRuntime};
use crate::runtime::Supervisor;
use crate::telemetry::Metrics;

/// How long a plugin file must be quiet after a change before it is read: writers that truncate
/// and then write in pieces (`cp`) produce several events.
pub const RELOAD_DEBOUNCE: Duration = Duration::from_millis(300);

/// A request to look at a plugin's file again.
#[derive(Debug)]
pub(super) struct Check {
    /// Also leave quarantine when the file is unchanged (a SIGHUP, not a file event).
    pub retry: bool,
    pub reply: Option<oneshot::Sender<ReloadOutcome>>,
}

/// A loaded new version (or, with `None`, a request to leave quarantine) for a runner.
#[derive(Debug)]
pub(super) struct Swap<C> {
    pub component: Option<C>,
    pub replies: Vec<oneshot::Sender<ReloadOutcome>>,
}

/// A cheap fingerprint of a plugin file, to tell a changed file from a touched one.
pub(super) fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// Watches the folders of the plugin files and asks a plugin's reloader to look when its file
/// is created, written, renamed over or removed. Without a working watcher (inotify limits),
/// SIGHUP still reloads.
pub(super) fn watch(files: &[(PathBuf, mpsc::Sender<Check>)], supervisor: &Supervisor) {
    use notify::{EventKind, RecursiveMode, Watcher};
    let targets = files.to_vec();
    let handler = move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for (file, checks) in &targets {
            if event.paths.iter().any(|p| p == file) {
                let _ = checks.try_send(Check {
                    retry: false,
                    reply: None,
                });
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(watcher) => watcher,
        Err(error) => {
            events::WatchFailed { error: &error }.emit();
            return;
        }
    };
    let mut folders: Vec<PathBuf> = files
        .iter()
        .filter_map(|(file, _)| file.parent().map(PathBuf::from))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        if let Err(error) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
            events::FolderWatchFailed {
                folder: &folder,
                error: &error,
            }
            .emit();
        }
    }
    supervisor.spawn("plugin-watch", move |token| async move {
        token.cancelled().await;
        drop(watcher);
        Ok(())
    });
}

/// Reads, fingerprints and loads a plugin's file when asked, off the plugin's call path, and
/// hands a changed version to the runner.
pub(super) struct Reloader<R: PluginRuntime> {
    pub plugin: String,
    pub file: PathBuf,
    pub fingerprint: Option<u64>,
    pub runtime: R,
    pub metrics: Metrics,
}

impl<R: PluginRuntime> Reloader<R> {
    pub async fn run(
        mut self,
        mut checks: mpsc::Receiver<Check>,
        swaps: mpsc::Sender<Swap<R::Component>>,
        token: CancellationToken,
    ) -> anyhow::Result<()> {
        loop {
            let first = tokio::select! {
                () = token.cancelled() => return Ok(()),
                check = checks.recv() => match check {
                    Some(check) => check,
                    None => return Ok(()),
                },
            };
            let mut retry = first.retry;
            let mut replies: Vec<_> = first.reply.into_iter().collect();
            // Wait until the file has been quiet for a moment.
            while let Ok(Some(more)) = tokio::time::timeout(RELOAD_DEBOUNCE, checks.recv()).await {
                retry |= more.retry;
                replies.extend(more.reply);
            }
            let outcome = match std::fs::read(&self.file) {
                Err(error) => {
                    events::FileUnreadable {
                        plugin: &self.plugin,
                        file: &self.file,
                        error: &error,
                    }
                    .emit();
                    ReloadOutcome::Refused(error.to_string())
                }
                Ok(bytes) if Some(fingerprint(&bytes)) == self.fingerprint => {
                    if retry {
                        let swap = Swap {
                            component: None,
                            replies,
                        };
                        if swaps.send(swap).await.is_err() {
                            return Ok(());
                        }
                        continue;
                    }
                    ReloadOutcome::Unchanged
                }
                Ok(bytes) => {
                    self.fingerprint = Some(fingerprint(&bytes));
                    tracing::info!(plugin = %self.plugin, file = %self.file.display(), "Plugin file changed; compiling the new version");
                    let runtime = self.runtime.clone();
                    let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes))
                        .await
                        .unwrap_or_else(|e| Err(PluginError::HostPanic(e.to_string())));
                    match loaded {
                        Ok(component) => {
                            let swap = Swap {
                                component: Some(component),
                                replies,
                            };
                            if swaps.send(swap).await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                        Err(error) => {
                            events::VersionRefused {
                                plugin: &self.plugin,
                                why: Refusal::Compile(&error),
                            }
                            .emit(&self.metrics);
                            ReloadOutcome::Refused(error.to_string())
                        }
                    }
                }
            };
            for reply in replies {
                let _ = reply.send(outcome.clone());
            }
        }
    }
}
