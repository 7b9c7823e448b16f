//! Publish responses into the twin: each NotificationMessage (OPC UA Part 4 §7.25) becomes one
//! batch of readings, its data changes looked up by client handle; a StatusChangeNotification
//! (Part 4 §7.26.4, e.g. Bad_Timeout when the server let the subscription expire) goes to the
//! session task. Sequence numbers are followed ([`Sequence`]): a NotificationMessage that skips
//! some (a lost Publish response, also one lost with a broken connection: the subscription lives
//! on in the reactivated session or is transferred to a new one, its numbers going on) sends the
//! missing numbers to the session task, which asks the server for them with Republish
//! (Part 4 §5.13.6) and applies what comes back through [`Applier`] — older samples the twin
//! keeps out of the current value (`Twin::apply`, late samples).

use std::sync::Arc;

use opcua::client::{MonitoredItemMap, OnSubscriptionNotificationCore};
use opcua::types::{
    DataChangeNotification, ExtensionObject, NotificationMessage, StatusChangeNotification,
    StatusCode,
};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;

use super::readings;
use crate::twin::{PropertyId, Reading, Twin};

/// Status changes that end the subscription, waiting for the session task; more are dropped
/// (one is enough to start over).
pub(super) const STATUS_CHANGES_QUEUED: usize = 4;

/// Sequence numbers found missing, waiting for the session task; when full, further ones are
/// counted lost at once (the session task is busy republishing hundreds already).
pub(super) const GAPS_QUEUED: usize = 64;

/// NotificationMessages asked for with Republish per gap, at most; beyond that the rest of the
/// gap counts as lost without asking (a server keeps few: Part 4 §5.13.1.1 asks for at least the
/// messages of one keep-alive interval… in practice tens).
pub const MAX_REPUBLISH_PER_GAP: u32 = 256;

/// The sequence number after `n` (Part 4 §7.25: 1 … 2³²−1, then 1 again; 0 is never used).
pub fn next_sequence_number(n: u32) -> u32 {
    if n == u32::MAX { 1 } else { n + 1 }
}

/// Sequence numbers a subscription skipped: `count` of them from `first` on (wrapping per
/// [`next_sequence_number`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missing {
    /// The first missing sequence number.
    pub first: u32,
    /// How many are missing (at least 1).
    pub count: u32,
}

impl Missing {
    /// The missing sequence numbers in order.
    pub fn numbers(self) -> impl Iterator<Item = u32> {
        std::iter::successors(Some(self.first), |n| Some(next_sequence_number(*n)))
            .take(self.count as usize)
    }
}

/// One subscription's sequence numbers as they arrive (OPC UA Part 4 §7.25): the last one seen,
/// and what a new one skipped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sequence {
    /// The last NotificationMessage's number, or the one before a keep-alive's (a keep-alive
    /// carries the number the next NotificationMessage will have, Part 4 §5.13.1.1).
    last: Option<u32>,
}

impl Sequence {
    /// Takes the sequence number of a NotificationMessage (`keep_alive`: one without data,
    /// whose number is the next one's); returns what it skipped since the last one. Number 1
    /// after anything but 2³²−1 is a subscription created anew (its numbers start again, Part 4
    /// §5.13.2): no gap. A number at or behind the last one (within 2³¹) is an old message
    /// again: no gap, the last one kept.
    pub fn take(&mut self, number: u32, keep_alive: bool) -> Option<Missing> {
        if number == 0 {
            return None;
        }
        // The number the message "used": a keep-alive's is the next one's, not its own.
        let used = if keep_alive {
            if number == 1 { u32::MAX } else { number - 1 }
        } else {
            number
        };
        let Some(last) = self.last else {
            self.last = Some(used);
            return None;
        };
        let expected = next_sequence_number(last);
        if number == 1 && expected != 1 {
            // Started again: a new subscription (or the keep-alive of one).
            self.last = Some(used);
            return None;
        }
        // Numbers from `expected` up to, not including, `number` (skipping 0 if they wrap).
        let raw = number.wrapping_sub(expected);
        if raw > u32::MAX / 2 {
            // At or behind the last one: an old message again.
            return None;
        }
        self.last = Some(used);
        let count = raw - u32::from(number < expected);
        (count > 0).then_some(Missing {
            first: expected,
            count,
        })
    }
}

/// Turns NotificationMessages into twin batches: the callback's and the session task's (for
/// republished ones) share what they need.
pub(super) struct Applier {
    twin: Arc<Twin>,
    /// Properties by client handle: handle `h` is `by_handle[h - 1]` (the source numbers its
    /// monitored items from 1; 0 is async-opcua's "assign one").
    by_handle: Arc<Vec<Vec<PropertyId>>>,
    status_changes: mpsc::Sender<StatusCode>,
    overflows: Counter,
    /// The batch being built, kept for its capacity.
    batch: Vec<Reading>,
}

impl Applier {
    /// An applier into `twin`; `by_handle[h - 1]` are client handle `h`'s properties.
    pub fn new(
        twin: Arc<Twin>,
        by_handle: Arc<Vec<Vec<PropertyId>>>,
        status_changes: mpsc::Sender<StatusCode>,
        overflows: Counter,
    ) -> Self {
        Self {
            twin,
            by_handle,
            status_changes,
            overflows,
            batch: Vec::new(),
        }
    }

    /// Another applier into the same twin with the same handles and counters.
    pub fn share(&self) -> Self {
        Self::new(
            Arc::clone(&self.twin),
            Arc::clone(&self.by_handle),
            self.status_changes.clone(),
            self.overflows.clone(),
        )
    }

    /// Adds the readings of one DataChangeNotification to the batch. A value with the Overflow
    /// bit (Part 4 §7.39.1: the server's queue for the item overflowed, samples were lost) is
    /// counted; the bit itself travels in the status code the twin keeps verbatim
    /// ([`readings`]).
    fn data_changes(&mut self, changes: DataChangeNotification) {
        for change in changes.monitored_items.into_iter().flatten() {
            let Some(properties) = (change.client_handle as usize)
                .checked_sub(1)
                .and_then(|i| self.by_handle.get(i))
            else {
                continue;
            };
            if change.value.status().overflow() {
                self.overflows.inc();
            }
            self.batch.extend(readings(&change.value, properties));
        }
    }

    /// Adds one notification's readings to the batch; a status change that ends the subscription
    /// goes to the session task when `live`.
    fn object(&mut self, object: ExtensionObject, live: bool) {
        if object.inner_is::<DataChangeNotification>() {
            if let Some(changes) = object.into_inner_as::<DataChangeNotification>() {
                self.data_changes(*changes);
            }
        } else if live
            && object.inner_is::<StatusChangeNotification>()
            && let Some(change) = object.into_inner_as::<StatusChangeNotification>()
            && ends_subscription(change.status)
        {
            let _ = self.status_changes.try_send(change.status);
        }
    }

    /// Applies one NotificationMessage: every data change in it as one batch.
    pub fn apply(&mut self, message: NotificationMessage) {
        if self.collect(message, true) {
            self.twin.apply(&self.batch);
        }
    }

    /// Applies one NotificationMessage got back with Republish, after newer ones: its values
    /// older than the twin's go to the change log as late samples (`Twin::apply_recovered`).
    /// A status change in it is history and ignored. Above all, node-opcua (2.182) moves the
    /// subscription of a session closed at its timeout to its orphan engine with a
    /// Good_SubscriptionTransferred NotificationMessage of the subscription itself, numbered,
    /// when that session still had Publish requests. The message sits in the retransmission queue
    /// and comes back here with Republish after the source's new session took the subscription.
    /// Taken as current, it ended the subscription that had just been transferred.
    pub fn apply_recovered(&mut self, message: NotificationMessage) {
        if self.collect(message, false) {
            self.twin.apply_recovered(&self.batch);
        }
    }

    /// Fills the batch from `message` (`live`: just published, not republished); whether it
    /// holds any reading.
    fn collect(&mut self, message: NotificationMessage, live: bool) -> bool {
        self.batch.clear();
        for object in message.notification_data.into_iter().flatten() {
            self.object(object, live);
        }
        !self.batch.is_empty()
    }
}

/// Whether a StatusChangeNotification's status says the subscription is gone from this session
/// (Part 4 §5.13.1.1: Bad_Timeout, it expired; §5.13.7: Good_SubscriptionTransferred, another
/// session took it). Other statuses are not the subscription's end and are left alone.
fn ends_subscription(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::BadTimeout | StatusCode::GoodSubscriptionTransferred
    )
}

/// The subscription's callback: follows the sequence numbers and applies each
/// NotificationMessage's data changes to the twin as one batch.
pub(super) struct Notifications {
    applier: Applier,
    sequence: Sequence,
    /// Missing sequence numbers, for the session task to republish.
    gaps: mpsc::Sender<Missing>,
    /// Missing ones the full queue could not take (the session task counts them lost).
    unqueued: Arc<std::sync::atomic::AtomicU64>,
}

impl Notifications {
    /// The callback: applies through `applier`, sends what a message skipped to `gaps` (when
    /// full, adds the count to `unqueued`).
    pub fn new(
        applier: Applier,
        gaps: mpsc::Sender<Missing>,
        unqueued: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Self {
            applier,
            sequence: Sequence::default(),
            gaps,
            unqueued,
        }
    }
}

impl OnSubscriptionNotificationCore for Notifications {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _monitored_items: MonitoredItemMap<'_>,
    ) {
        let keep_alive = notification
            .notification_data
            .as_ref()
            .is_none_or(Vec::is_empty);
        if let Some(missing) = self.sequence.take(notification.sequence_number, keep_alive)
            && self.gaps.try_send(missing).is_err()
        {
            self.unqueued.fetch_add(
                u64::from(missing.count),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        if !keep_alive {
            self.applier.apply(notification);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(numbers: &[(u32, bool)]) -> Vec<Missing> {
        let mut sequence = Sequence::default();
        numbers
            .iter()
            .filter_map(|(n, keep_alive)| sequence.take(*n, *keep_alive))
            .collect()
    }

    #[test]
    fn gaps_in_sequence_numbers_are_found_wrapping_past_zero() {
        let missing = |first, count| Missing { first, count };
        // In order, keep-alives carrying the next number: nothing missing.
        assert_eq!(
            run(&[(1, false), (2, false), (3, true), (3, false), (4, true)]),
            []
        );
        // 3 and 4 lost.
        assert_eq!(run(&[(1, false), (2, false), (5, false)]), [missing(3, 2)]);
        // 3 lost, then a keep-alive announcing 4.
        assert_eq!(run(&[(2, false), (4, true)]), [missing(3, 1)]);
        // A keep-alive first: the next is its number.
        assert_eq!(run(&[(7, true), (7, false), (9, false)]), [missing(8, 1)]);
        // Wrapping: 2³²−1 then 1 is in order; 2³²−2 then 2 misses 2³²−1 and 1 (never 0).
        assert_eq!(run(&[(u32::MAX, false), (1, false)]), []);
        assert_eq!(
            run(&[(u32::MAX - 1, false), (2, false)]),
            [missing(u32::MAX, 2)]
        );
        assert_eq!(
            missing(u32::MAX, 2).numbers().collect::<Vec<_>>(),
            [u32::MAX, 1]
        );
        // A subscription created anew starts at 1: no gap. An old message again: no gap.
        assert_eq!(run(&[(40, false), (1, false), (2, false)]), []);
        assert_eq!(run(&[(40, false), (38, false), (41, false)]), []);
    }
}
