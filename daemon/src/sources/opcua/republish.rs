//! Getting back NotificationMessages the subscription skipped (OPC UA Part 4 §5.13.6, Republish).
//!
//! async-opcua 0.19 tracks no sequence numbers and keeps TransferSubscriptions'
//! availableSequenceNumbers to itself; the source's callback follows them
//! ([`super::notifications::Sequence`]) and hands every gap here: a Publish response lost on the
//! way (never acknowledged, so still in the server's retransmission queue), also one lost with a
//! broken connection — whether async-opcua then reactivated the old session, where the
//! subscription lives on, or the source transferred the subscription to a new session
//! (`OpcUaClient::after_reconnect`): either way its numbers go on and its next message or
//! keep-alive shows the gap. Each missing number is asked for with Republish, in order, while the
//! connection is up; what comes back is applied like any NotificationMessage — through
//! `Twin::apply_recovered`, so a sample older than the twin's current value is a late sample for
//! the change log and never replaces that value — and acknowledged by async-opcua with the next
//! Publish. Bad_MessageNotAvailable (the server no longer has it), any other refusal, more than
//! [`MAX_REPUBLISH_PER_GAP`] missing at once, or a subscription that had to be created again with
//! numbers still missing: the messages are lost — counted, logged, and an `upstream` gap in the
//! change log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opcua::client::Session;
use opcua::types::StatusCode;

use super::OpcUaClient;
use super::events;
use super::notifications::{Applier, MAX_REPUBLISH_PER_GAP, Missing};
use super::session::{ConnectionDown, Events, drive};

/// The session task's side of Republish: the sequence numbers still to ask for.
pub(super) struct Republisher {
    /// Applies what comes back (shares the callback's handles and twin).
    applier: Applier,
    /// Gaps the callback could not queue (its queue was full): counted lost.
    unqueued: Arc<AtomicU64>,
    /// Sequence numbers to ask for, in order.
    pending: VecDeque<u32>,
}

impl Republisher {
    /// A republisher applying through `applier`; `unqueued` is the callback's count of missing
    /// numbers it could not queue.
    pub fn new(applier: Applier, unqueued: Arc<AtomicU64>) -> Self {
        Self {
            applier,
            unqueued,
            pending: VecDeque::new(),
        }
    }

    /// Whether there are sequence numbers to ask for or losses to report.
    pub fn has_work(&self) -> bool {
        !self.pending.is_empty() || self.unqueued.load(Ordering::Relaxed) > 0
    }
}

impl OpcUaClient {
    /// Takes a gap the callback found: its first [`MAX_REPUBLISH_PER_GAP`] numbers are asked for,
    /// the rest are lost at once.
    pub(super) fn missing(
        &self,
        republisher: &mut Republisher,
        missing: Missing,
        subscription: u32,
    ) {
        let asked = missing.count.min(MAX_REPUBLISH_PER_GAP);
        republisher
            .pending
            .extend(missing.numbers().take(asked as usize));
        if missing.count > asked {
            self.lost(subscription, u64::from(missing.count - asked), None);
        }
    }

    /// The subscription was replaced (created again after a reconnect): what it still missed is
    /// lost, the numbers its callback could not queue too.
    pub(super) fn forget_pending(&self, republisher: &mut Republisher, subscription: u32) {
        let pending =
            republisher.pending.len() as u64 + republisher.unqueued.swap(0, Ordering::Relaxed);
        republisher.pending.clear();
        if pending > 0 {
            self.lost(subscription, pending, None);
        }
    }

    fn lost(&self, subscription: u32, messages: u64, status: Option<StatusCode>) {
        events::NotificationsLost {
            source: &self.config.id,
            subscription_id: subscription,
            messages,
            status,
        }
        .emit(&self.counters, &self.twin);
    }

    /// Asks for every pending sequence number with Republish, in order, applying what comes
    /// back. Bad_MessageNotAvailable loses that message; any other refusal loses the rest of
    /// the queue (the subscription is gone or the server cannot republish).
    ///
    /// Errors: the connection broke or the event loop ended ([`ConnectionDown`]); the number
    /// being asked for stays pending (asked again after async-opcua reconnected).
    pub(super) async fn republish(
        &self,
        republisher: &mut Republisher,
        session: &Session,
        events: &mut Events,
        subscription: u32,
    ) -> Result<(), ConnectionDown> {
        let unqueued = republisher.unqueued.swap(0, Ordering::Relaxed);
        if unqueued > 0 {
            self.lost(subscription, unqueued, None);
        }
        let (mut got, mut lost) = (0u64, 0u64);
        let mut refused = None;
        while let Some(&number) = republisher.pending.front() {
            let answer = drive(events, session.republish(subscription, number)).await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(down) => {
                    self.republished(subscription, got, lost, refused);
                    return Err(down);
                }
            };
            republisher.pending.pop_front();
            match answer {
                Ok(message) => {
                    got += 1;
                    republisher.applier.apply_recovered(message);
                }
                Err(error) if error.status() == StatusCode::BadMessageNotAvailable => {
                    lost += 1;
                    refused = Some(error.status());
                }
                Err(error) => {
                    lost += 1 + republisher.pending.len() as u64;
                    republisher.pending.clear();
                    refused = Some(error.status());
                }
            }
        }
        self.republished(subscription, got, lost, refused);
        Ok(())
    }

    fn republished(&self, subscription: u32, got: u64, lost: u64, status: Option<StatusCode>) {
        if got > 0 {
            events::Republished {
                source: &self.config.id,
                subscription_id: subscription,
                messages: got,
            }
            .emit(&self.counters);
        }
        if lost > 0 {
            self.lost(subscription, lost, status);
        }
    }
}
