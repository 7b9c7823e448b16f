//! Publish responses into the twin: each NotificationMessage (OPC UA Part 4 §7.25) becomes one
//! batch of readings, its data changes looked up by client handle; a StatusChangeNotification
//! (Part 4 §7.26.4, e.g. Bad_Timeout when the server let the subscription expire) goes to the
//! session task.

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

/// The subscription's callback: applies each NotificationMessage's data changes to the twin as
/// one batch.
pub(super) struct Notifications {
    twin: Arc<Twin>,
    /// Properties by client handle: handle `h` is `by_handle[h - 1]` (the source numbers its
    /// monitored items from 1; 0 is async-opcua's "assign one").
    by_handle: Arc<Vec<Vec<PropertyId>>>,
    status_changes: mpsc::Sender<StatusCode>,
    overflows: Counter,
    /// The batch being built, kept for its capacity.
    batch: Vec<Reading>,
}

impl Notifications {
    /// A callback applying to `twin`; `by_handle[h - 1]` are client handle `h`'s properties.
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

    fn object(&mut self, object: ExtensionObject) {
        if object.inner_is::<DataChangeNotification>() {
            if let Some(changes) = object.into_inner_as::<DataChangeNotification>() {
                self.data_changes(*changes);
            }
        } else if object.inner_is::<StatusChangeNotification>()
            && let Some(change) = object.into_inner_as::<StatusChangeNotification>()
            && ends_subscription(change.status)
        {
            let _ = self.status_changes.try_send(change.status);
        }
    }

    /// Applies one NotificationMessage: every data change in it as one batch.
    pub fn apply(&mut self, message: NotificationMessage) {
        self.batch.clear();
        for object in message.notification_data.into_iter().flatten() {
            self.object(object);
        }
        if !self.batch.is_empty() {
            self.twin.apply(&self.batch);
        }
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

impl OnSubscriptionNotificationCore for Notifications {
    fn on_subscription_notification(
        &mut self,
        notification: NotificationMessage,
        _monitored_items: MonitoredItemMap<'_>,
    ) {
        self.apply(notification);
    }
}
