//! The lossless tap: every change the twin publishes, in order, for the change log.
//!
//! Unlike a fan-out [`super::Subscription`], which coalesces a slow subscriber to the latest
//! change per property, the tap never replaces a change: it queues up to its capacity and, when
//! full, **counts** what it cannot take. [`Twin::apply`](super::Twin::apply) hands changes over
//! under a short mutex and never waits for the reader. Once the queue has overflowed, every
//! further change is counted as lost too until the reader drains it, so the loss sits at one place
//! in the order: after every change [`TapReceiver::drain`] returns and before every change a
//! later drain returns. The reader turns the count into a gap record (issue #28, point 1).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::fanout::Change;

/// Changes the change log's tap holds before it counts further ones as lost: about 0.65 s of
/// 100 000 changes/s (≈ 80 bytes each, ≈ 5 MiB at most).
pub const TAP_CAPACITY: usize = 65_536;

#[derive(Debug, Default)]
struct Pending {
    queue: VecDeque<Change>,
    /// Changes not taken since the last drain (the queue was full).
    lost: u64,
}

#[derive(Debug)]
pub(crate) struct TapShared {
    capacity: usize,
    pending: Mutex<Pending>,
    notify: Notify,
    lost_total: AtomicU64,
}

impl TapShared {
    /// Takes `changes` (in order), or counts them as lost. Never waits for the reader.
    pub(crate) fn push(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut lost = 0;
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            for change in changes {
                if pending.lost == 0 && pending.queue.len() < self.capacity {
                    pending.queue.push_back(change.clone());
                } else {
                    pending.lost += 1;
                    lost += 1;
                }
            }
        }
        if lost > 0 {
            self.lost_total.fetch_add(lost, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }
}

/// A tap's new shared state with room for `capacity` changes (at least 1).
pub(crate) fn shared(capacity: usize) -> Arc<TapShared> {
    Arc::new(TapShared {
        capacity: capacity.max(1),
        pending: Mutex::new(Pending::default()),
        notify: Notify::new(),
        lost_total: AtomicU64::new(0),
    })
}

/// The reading side of the twin's tap ([`super::Twin::tap`]). Dropping it leaves the tap in
/// place (still counting); a new [`super::Twin::tap`] replaces it.
#[derive(Debug)]
pub struct TapReceiver {
    pub(crate) shared: Arc<TapShared>,
}

impl TapReceiver {
    /// Moves every queued change into `out`, in the order the twin published them, and returns
    /// how many changes were lost (not taken, the queue being full) right after them. Does not
    /// wait.
    pub fn drain(&self, out: &mut Vec<Change>) -> u64 {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        out.extend(pending.queue.drain(..));
        std::mem::take(&mut pending.lost)
    }

    /// Waits until the twin has handed over something since the last wait (cancel-safe).
    pub async fn changed(&self) {
        self.shared.notify.notified().await;
    }

    /// Changes lost by this tap since it was made.
    pub fn lost_total(&self) -> u64 {
        self.shared.lost_total.load(Ordering::Relaxed)
    }
}
