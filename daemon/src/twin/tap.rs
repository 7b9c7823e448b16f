//! The lossless tap: every change the twin publishes, in order, for the change log — and what
//! only the log gets: late samples ([`Tapped::Late`], older than the value the twin holds) and
//! losses a source reports ([`Tapped::UpstreamLost`]).
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

/// One item of the tap, in the order the twin handed it over.
#[derive(Debug, Clone, PartialEq)]
pub enum Tapped {
    /// A change the twin stored as the property's current sample (and published to subscribers).
    Change(Change),
    /// A late sample: its source timestamp is older than the current sample's, so the twin did
    /// not store it (OPC UA clients keep the newest) and published it to no subscriber; it
    /// belongs to the property's history (e.g. a notification an OPC UA source got back with
    /// Republish after a lost Publish response). Its `server_time` is when it arrived.
    Late(Change),
    /// A source learned that changes it should have received are lost upstream (e.g. an OPC UA
    /// server no longer had the NotificationMessages the source missed, Part 4 §5.13.6
    /// Bad_MessageNotAvailable): `messages` of them, their changes unknown.
    UpstreamLost {
        /// Upstream messages lost (not changes: how many changes they held is unknown).
        messages: u64,
    },
}

#[derive(Debug, Default)]
struct Pending {
    queue: VecDeque<Tapped>,
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
    /// Takes `changes` (in order) with the late samples `late` among them (`(i, change)` goes
    /// before `changes[i]`; `i` ascending, `changes.len()` for after the last), or counts them as
    /// lost. Never waits for the reader.
    pub(crate) fn push(&self, changes: &[Change], late: &[(usize, Change)]) {
        if changes.is_empty() && late.is_empty() {
            return;
        }
        let mut lost = 0;
        {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut late = late.iter().peekable();
            let mut take = |pending: &mut Pending, item: Tapped| {
                if pending.lost == 0 && pending.queue.len() < self.capacity {
                    pending.queue.push_back(item);
                } else {
                    pending.lost += 1;
                    lost += 1;
                }
            };
            for (i, change) in changes.iter().enumerate() {
                while let Some((_, sample)) = late.next_if(|(at, _)| *at <= i) {
                    take(&mut pending, Tapped::Late(sample.clone()));
                }
                take(&mut pending, Tapped::Change(change.clone()));
            }
            for (_, sample) in late {
                take(&mut pending, Tapped::Late(sample.clone()));
            }
        }
        if lost > 0 {
            self.lost_total.fetch_add(lost, Ordering::Relaxed);
        }
        self.notify.notify_one();
    }

    /// Takes a source's report of `messages` upstream messages lost (never counted as the tap's
    /// own loss: it is recorded even when the queue is full, one item beyond its capacity).
    pub(crate) fn push_upstream_lost(&self, messages: u64) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queue
            .push_back(Tapped::UpstreamLost { messages });
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
    /// Moves every queued item into `out`, in the order the twin handed them over, and returns
    /// how many changes were lost (not taken, the queue being full) right after them. Does not
    /// wait.
    pub fn drain(&self, out: &mut Vec<Tapped>) -> u64 {
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
