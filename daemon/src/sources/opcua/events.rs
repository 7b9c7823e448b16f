//! The OPC UA source's events: one type per occurrence, whose `emit` writes the log line and moves
//! the connection gauge and the readiness flag together, from one place.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::{MetricSet, SourceLabels};

/// The OPC UA source's metric families (`twinloom_opcua_source_*`), registered the first time an
/// OPC UA source starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpcUaSourceMetrics {
    /// 1 while the source's session is up.
    connected: Family<SourceLabels, Gauge>,
    /// Times the server went silent for 3 keep-alive intervals (OPC UA Part 4 §6.7).
    stalls: Family<SourceLabels, Counter>,
    /// Session keep-alives (Reads of ServerStatus.State) that failed.
    keep_alive_failures: Family<SourceLabels, Counter>,
    /// Publish requests that failed (timed out, refused).
    publish_failures: Family<SourceLabels, Counter>,
    /// Data changes that arrived with the Overflow bit (samples lost in the server's queue).
    overflows: Family<SourceLabels, Counter>,
    /// NotificationMessages got back with Republish after their Publish response was lost.
    republished: Family<SourceLabels, Counter>,
    /// NotificationMessages missed that the server no longer had (or that were not asked for).
    lost_notifications: Family<SourceLabels, Counter>,
}

impl MetricSet for OpcUaSourceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.sub_registry_with_prefix("opcua").register(
            "source_connected",
            "1 while an OPC UA source's session is up",
            metrics.connected.clone(),
        );
        let opcua = registry.sub_registry_with_prefix("opcua");
        opcua.register(
            "source_stalls",
            "Times an OPC UA source's server sent neither keep-alive nor publish response for 3 keep-alive intervals",
            metrics.stalls.clone(),
        );
        opcua.register(
            "source_keep_alive_failures",
            "Session keep-alive reads an OPC UA source's server did not answer in time or answered bad",
            metrics.keep_alive_failures.clone(),
        );
        opcua.register(
            "source_publish_failures",
            "Publish requests of an OPC UA source that failed",
            metrics.publish_failures.clone(),
        );
        opcua.register(
            "source_overflows",
            "Data changes an OPC UA source received with the Overflow bit (samples lost in the server's queue)",
            metrics.overflows.clone(),
        );
        opcua.register(
            "source_republished",
            "NotificationMessages an OPC UA source got back with Republish after missing them",
            metrics.republished.clone(),
        );
        opcua.register(
            "source_lost_notifications",
            "NotificationMessages an OPC UA source missed and could not get back (Bad_MessageNotAvailable)",
            metrics.lost_notifications.clone(),
        );
        metrics
    }
}

/// One source's counters (series of [`OpcUaSourceMetrics`]'s families).
#[derive(Debug, Clone)]
pub(crate) struct SourceCounters {
    pub stalls: Counter,
    pub keep_alive_failures: Counter,
    pub publish_failures: Counter,
    pub overflows: Counter,
    pub republished: Counter,
    pub lost_notifications: Counter,
}

impl OpcUaSourceMetrics {
    /// The `connected` gauge of source `id`.
    pub fn connected(&self, id: &str) -> Gauge {
        self.connected
            .get_or_create(&SourceLabels {
                source: id.to_owned(),
            })
            .clone()
    }

    /// The counters of source `id`.
    pub fn counters(&self, id: &str) -> SourceCounters {
        let labels = SourceLabels {
            source: id.to_owned(),
        };
        SourceCounters {
            stalls: self.stalls.get_or_create(&labels).clone(),
            keep_alive_failures: self.keep_alive_failures.get_or_create(&labels).clone(),
            publish_failures: self.publish_failures.get_or_create(&labels).clone(),
            overflows: self.overflows.get_or_create(&labels).clone(),
            republished: self.republished.get_or_create(&labels).clone(),
            lost_notifications: self.lost_notifications.get_or_create(&labels).clone(),
        }
    }
}

/// A session is up and its subscription is being made.
#[derive(Debug)]
pub(crate) struct SessionUp<'a> {
    pub source: &'a str,
    pub endpoint: &'a str,
}

impl SessionUp<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(1);
        ready.set(true);
        tracing::info!(source = %self.source, endpoint = %self.endpoint, "OPC UA source connected");
    }
}

/// The client library reconnected the session by itself: a new secure channel and ActivateSession
/// on the old session (`ReactivatedSession`), or a new session when the server no longer knew it
/// (`NewSession`); either way its subscription was transferred (TransferSubscriptions with initial
/// values) or, where the server could not, created again.
#[derive(Debug)]
pub(crate) struct SessionResumed<'a> {
    pub source: &'a str,
    pub mode: &'a dyn std::fmt::Debug,
}

impl SessionResumed<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(1);
        ready.set(true);
        tracing::info!(source = %self.source, mode = ?self.mode, "OPC UA source reconnected");
    }
}

/// The connection to the server broke; async-opcua reconnects (see [`SessionResumed`]).
#[derive(Debug)]
pub(crate) struct ConnectionLost<'a> {
    pub source: &'a str,
    pub status: &'a opcua::types::StatusCode,
}

impl ConnectionLost<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(0);
        ready.fail(&format!("connection lost: {}", self.status));
        tracing::warn!(source = %self.source, status = %self.status, "OPC UA connection lost; reconnecting");
    }
}

/// A session ended (failed to start, failed, or closed); the next attempt comes after `retry_in`.
#[derive(Debug)]
pub(crate) struct SessionEnded<'a> {
    pub source: &'a str,
    pub endpoint: &'a str,
    /// Why, when it failed.
    pub error: Option<&'a anyhow::Error>,
    pub retry_in: Duration,
}

impl SessionEnded<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(0);
        match self.error {
            Some(error) => ready.fail(&format!("{error:#}")),
            None => ready.set(false),
        }
        if let Some(error) = self.error {
            tracing::warn!(source = %self.source, endpoint = %self.endpoint, %error, retry_in = ?self.retry_in, "OPC UA connection failed");
        }
    }
}

/// A binding's `nsu=` namespace URI is not in the server's namespace array: its properties are
/// Bad_ConfigurationError and no monitored item is created for it.
#[derive(Debug)]
pub(crate) struct NamespaceUnknown<'a> {
    pub source: &'a str,
    pub namespace: &'a str,
}

impl NamespaceUnknown<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, namespace = %self.namespace, "Server has no such namespace; its bindings are bad (configuration error)");
    }
}

/// The server refused to create a monitored item: its properties go bad.
#[derive(Debug)]
pub(crate) struct MonitoredItemRefused<'a> {
    pub source: &'a str,
    pub node: &'a opcua::types::NodeId,
    pub status: opcua::types::StatusCode,
}

impl MonitoredItemRefused<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, node = %self.node, status = %self.status, "Server refused a monitored item; check the NodeId");
    }
}

/// Neither a keep-alive nor a publish response came for 3 keep-alive intervals (OPC UA Part 4
/// §6.7): every property of the source is bad (`NoConnection`, last value kept) and the source
/// closes the secure channel so that async-opcua reconnects.
#[derive(Debug)]
pub(crate) struct ServerStalled<'a> {
    pub source: &'a str,
    /// How long the server has been silent.
    pub silent_for: Duration,
}

impl ServerStalled<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag, counters: &SourceCounters) {
        connected.set(0);
        ready.fail(&format!(
            "server stalled: no keep-alive or publish response for {:?}",
            self.silent_for
        ));
        counters.stalls.inc();
        tracing::warn!(source = %self.source, silent_for = ?self.silent_for, "OPC UA server stalled: no keep-alive or publish response; reconnecting");
    }
}

/// A reconnect attempt failed; async-opcua tries again after its backoff.
#[derive(Debug)]
pub(crate) struct ReconnectFailed<'a> {
    pub source: &'a str,
    pub status: opcua::types::StatusCode,
}

impl ReconnectFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, status = %self.status, "OPC UA reconnect failed");
    }
}

/// A session keep-alive or a Publish request failed (counted; async-opcua logs the detail).
#[derive(Debug)]
pub(crate) enum RequestFailed {
    KeepAlive(opcua::types::StatusCode),
    Publish(opcua::types::StatusCode),
}

impl RequestFailed {
    pub fn emit(&self, source: &str, counters: &SourceCounters) {
        match self {
            Self::KeepAlive(status) => {
                counters.keep_alive_failures.inc();
                tracing::debug!(%source, %status, "OPC UA keep-alive failed");
            }
            Self::Publish(status) => {
                counters.publish_failures.inc();
                tracing::debug!(%source, %status, "OPC UA publish failed");
            }
        }
    }
}

/// The server changed the subscription's status (StatusChangeNotification, Part 4 §7.26.4; e.g.
/// Bad_Timeout: it expired): the source starts over with a new session and subscription.
#[derive(Debug)]
pub(crate) struct SubscriptionStatusChanged<'a> {
    pub source: &'a str,
    pub status: opcua::types::StatusCode,
}

impl SubscriptionStatusChanged<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, status = %self.status, "OPC UA subscription ended by the server; subscribing again");
    }
}

/// After a reconnect the subscription could not be kept (ActivateSession's session no longer had
/// it, or TransferSubscriptions to the new session failed with `status`): the source deleted it
/// and created it again with its monitored items; what it still missed is lost
/// ([`NotificationsLost`]).
#[derive(Debug)]
pub(crate) struct SubscriptionCreatedAgain<'a> {
    pub source: &'a str,
    /// The subscription id before the reconnect.
    pub old: u32,
    /// The new one's.
    pub new: u32,
    /// Why the old one could not be kept (SetPublishingMode's or TransferSubscriptions' answer).
    pub status: opcua::types::StatusCode,
}

impl SubscriptionCreatedAgain<'_> {
    pub fn emit(&self) {
        tracing::info!(source = %self.source, old = self.old, new = self.new, status = %self.status, "OPC UA subscription created again after the reconnect");
    }
}

/// A write the source could not carry out (the gate gets the error too).
#[derive(Debug)]
pub(crate) struct WriteFailed<'a> {
    pub source: &'a str,
    pub property: &'a str,
    pub error: &'a crate::twin::WriteError,
}

impl WriteFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, property = %self.property, error = %self.error, "Write failed");
    }
}

/// The Read after a Good write got no value (the write stands; the twin shows the value once the
/// subscription reports it).
#[derive(Debug)]
pub(crate) struct ReadBackFailed<'a> {
    pub source: &'a str,
    pub node: &'a opcua::types::NodeId,
    pub status: opcua::types::StatusCode,
}

impl ReadBackFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, node = %self.node, status = %self.status, "Read-back after a write failed");
    }
}

/// A binding's browse path did not resolve (TranslateBrowsePathsToNodeIds, OPC UA Part 4 §5.8.4):
/// its properties are Bad_ConfigurationError and get no monitored item; the others run.
#[derive(Debug)]
pub(crate) struct BrowsePathUnresolved<'a> {
    pub source: &'a str,
    pub browse_path: &'a str,
    pub status: opcua::types::StatusCode,
}

impl BrowsePathUnresolved<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, browse_path = %self.browse_path, status = %self.status, "Browse path does not resolve on the server; its bindings are bad (configuration error)");
    }
}

/// A writable variable's DataType or ValueRank could not be read after a connect: writes to its
/// properties are refused (not writable) until the next connect.
#[derive(Debug)]
pub(crate) struct WriteTargetUnreadable<'a> {
    pub source: &'a str,
    pub reason: &'a str,
}

impl WriteTargetUnreadable<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, reason = %self.reason, "Writable variable's type unknown; writes to it are refused");
    }
}

/// NotificationMessages the subscription skipped came back with Republish (OPC UA Part 4
/// §5.13.6) and were applied (older samples as late ones: to the change log, not the current
/// value).
#[derive(Debug)]
pub(crate) struct Republished<'a> {
    pub source: &'a str,
    pub subscription_id: u32,
    pub messages: u64,
}

impl Republished<'_> {
    pub fn emit(&self, counters: &SourceCounters) {
        counters.republished.inc_by(self.messages);
        tracing::info!(source = %self.source, subscription_id = self.subscription_id, messages = self.messages, "Missed OPC UA notifications republished");
    }
}

/// NotificationMessages the subscription skipped are lost: the server no longer had them
/// (Bad_MessageNotAvailable), refused Republish, or there were more than the source asks for.
/// The change log records an `upstream` gap.
#[derive(Debug)]
pub(crate) struct NotificationsLost<'a> {
    pub source: &'a str,
    pub subscription_id: u32,
    pub messages: u64,
    /// The Republish answer, when one came.
    pub status: Option<opcua::types::StatusCode>,
}

impl NotificationsLost<'_> {
    pub fn emit(&self, counters: &SourceCounters, twin: &crate::twin::Twin) {
        counters.lost_notifications.inc_by(self.messages);
        twin.upstream_lost(self.messages);
        tracing::warn!(source = %self.source, subscription_id = self.subscription_id, messages = self.messages, status = ?self.status, "Missed OPC UA notifications are lost (the server could not republish them); the change log records a gap");
    }
}
