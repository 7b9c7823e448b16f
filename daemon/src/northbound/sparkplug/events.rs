//! The Sparkplug edge node's events: one type per occurrence, whose `emit` writes the log line
//! and moves the node's metrics (`twinloom_sparkplug_*`) and readiness together.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::MetricSet;

/// Labels of the published-messages series: the Sparkplug message type (a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `NBIRTH`, `DBIRTH`, `NDATA`, `DDATA`, `DDEATH`, `NDEATH`, `marker`.
    pub kind: String,
}

/// Labels of the metric-changes series: live or historical (a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamLabels {
    /// `live` or `historical`.
    pub stream: String,
}

/// Labels of the commands series (a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `written`, `refused` (by the gate), `not-accepted` (`accept_commands = false`),
    /// `unknown-metric`, `bad-value`, `rebirth`, `unsupported-ncmd`, `undecodable`.
    pub outcome: String,
}

/// The edge node's metric families (`twinloom_sparkplug_*`).
#[derive(Debug, Clone)]
pub struct SparkplugMetrics {
    /// MQTT messages published, by Sparkplug message type.
    pub messages: Family<KindLabels, Counter>,
    /// Metric values published, live or historical.
    pub metrics: Family<StreamLabels, Counter>,
    /// Change log records not yet published (the backlog), in records.
    pub backlog: Gauge,
    /// Age of the oldest unpublished change (the backlog's head), in seconds.
    pub backlog_age: Gauge,
    /// MQTT sessions after the first (reconnects and primary-host restarts).
    pub reconnects: Counter,
    /// Seconds from publishing a cursor marker to its PUBACK.
    pub puback: Histogram,
    /// Metric values written to a connection again after an earlier connection of this
    /// process had written them and no marker's PUBACK confirmed them (at least once; exact:
    /// counted by change log offset when rumqttc reports the publish written).
    pub duplicates: Counter,
    /// Changes the change log does not hold, published as a gap (`Twinloom/Change Log Gaps`).
    pub gaps: Counter,
    /// Commands (NCMD, DCMD metrics), by outcome.
    pub commands: Family<CommandLabels, Counter>,
}

impl MetricSet for SparkplugMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            messages: Family::default(),
            metrics: Family::default(),
            backlog: Gauge::default(),
            backlog_age: Gauge::default(),
            reconnects: Counter::default(),
            puback: Histogram::new(exponential_buckets(0.0001, 2.0, 17)),
            duplicates: Counter::default(),
            gaps: Counter::default(),
            commands: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("sparkplug");
        sub.register(
            "messages",
            "MQTT messages published by the Sparkplug edge node, by message type",
            metrics.messages.clone(),
        );
        sub.register(
            "metric_values",
            "Metric values published, live or historical (store and forward)",
            metrics.metrics.clone(),
        );
        sub.register(
            "backlog_records",
            "Change log records not yet published to the broker",
            metrics.backlog.clone(),
        );
        sub.register(
            "backlog_age_seconds",
            "Age of the oldest change not yet published",
            metrics.backlog_age.clone(),
        );
        sub.register(
            "reconnects",
            "MQTT sessions started after the first",
            metrics.reconnects.clone(),
        );
        sub.register(
            "puback_seconds",
            "Seconds from a cursor marker's PUBLISH to its PUBACK",
            metrics.puback.clone(),
        );
        sub.register(
            "duplicate_records",
            "Metric values written again after a lost PUBACK (delivery is at least once)",
            metrics.duplicates.clone(),
        );
        sub.register(
            "gap_changes",
            "Changes the change log does not hold, published as gaps",
            metrics.gaps.clone(),
        );
        sub.register(
            "commands",
            "NCMD and DCMD metrics received, by outcome",
            metrics.commands.clone(),
        );
        metrics
    }
}

impl SparkplugMetrics {
    /// Counts one published message of `kind`.
    pub fn published(&self, kind: &str) {
        self.messages
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Counts `n` published metric values of `stream` (`live`, `historical`).
    pub fn values(&self, stream: &str, n: usize) {
        self.metrics
            .get_or_create(&StreamLabels {
                stream: stream.to_owned(),
            })
            .inc_by(n as u64);
    }

    fn command(&self, outcome: &str) {
        self.commands
            .get_or_create(&CommandLabels {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// An MQTT session is up and the births are out.
#[derive(Debug)]
pub(super) struct Online<'a> {
    pub server: &'a str,
    pub bd_seq: u8,
    pub devices: usize,
    pub backlog: u64,
}

impl Online<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(true);
        tracing::info!(
            server = self.server,
            bd_seq = self.bd_seq,
            devices = self.devices,
            backlog_records = self.backlog,
            "Sparkplug edge node online: births published"
        );
    }
}

/// An MQTT session could not be made or was lost.
#[derive(Debug)]
pub(super) struct SessionLost<'a> {
    pub server: &'a str,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl SessionLost<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(false);
        tracing::warn!(
            server = self.server,
            error = self.error,
            retry_in = %humantime::format_duration(self.retry_in),
            "Sparkplug MQTT session lost or refused; changes wait in the change log"
        );
    }
}

/// The session starts (not the first): counted.
#[derive(Debug)]
pub(super) struct Reconnecting;

impl Reconnecting {
    pub fn emit(&self, metrics: &SparkplugMetrics) {
        metrics.reconnects.inc();
    }
}

/// Waiting for the primary host application's `STATE` (online: true).
#[derive(Debug)]
pub(super) struct WaitingForHost<'a> {
    pub host: &'a str,
}

impl WaitingForHost<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(false);
        tracing::info!(
            host = self.host,
            "Sparkplug primary host is not online: publishing nothing"
        );
    }
}

/// The primary host went offline: NDEATH, disconnect, start over.
#[derive(Debug)]
pub(super) struct HostOffline<'a> {
    pub host: &'a str,
}

impl HostOffline<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(false);
        tracing::warn!(
            host = self.host,
            "Sparkplug primary host went offline: NDEATH sent, starting a new session"
        );
    }
}

/// A command was refused before the control gate (not accepted, unknown metric, bad value,
/// an NCMD other than a rebirth, an undecodable payload).
#[derive(Debug)]
pub(super) struct CommandRefused<'a> {
    pub topic: &'a str,
    pub metric: &'a str,
    pub outcome: &'static str,
}

impl CommandRefused<'_> {
    pub fn emit(&self, metrics: &SparkplugMetrics) {
        metrics.command(self.outcome);
        tracing::warn!(
            topic = self.topic,
            metric = self.metric,
            outcome = self.outcome,
            "Sparkplug command refused"
        );
    }
}

/// The control gate answered a DCMD write (its own log line and audit record say the rest).
#[derive(Debug)]
pub(super) struct CommandDecided {
    pub written: bool,
}

impl CommandDecided {
    pub fn emit(&self, metrics: &SparkplugMetrics) {
        metrics.command(if self.written { "written" } else { "refused" });
    }
}

/// A rebirth was requested by NCMD `Node Control/Rebirth`.
#[derive(Debug)]
pub(super) struct RebirthRequested;

impl RebirthRequested {
    pub fn emit(&self, metrics: &SparkplugMetrics) {
        metrics.command("rebirth");
        tracing::info!("Sparkplug rebirth requested by NCMD: births published again");
    }
}

/// The change log does not hold `lost` changes: published as a gap.
#[derive(Debug)]
pub(super) struct GapPublished {
    pub lost: u64,
    pub reason: &'static str,
}

impl GapPublished {
    pub fn emit(&self, metrics: &SparkplugMetrics) {
        metrics.gaps.inc_by(self.lost);
        tracing::warn!(
            lost = self.lost,
            reason = self.reason,
            "Change log gap published to Sparkplug (Twinloom/Change Log Gaps)"
        );
    }
}

/// The publisher cannot read the change log (or has none): it waits and retries.
#[derive(Debug)]
pub(super) struct LogUnreadable<'a> {
    pub error: &'a str,
}

impl LogUnreadable<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(false);
        tracing::warn!(
            error = self.error,
            "Sparkplug cannot read the change log; nothing is published until it can"
        );
    }
}

/// The cursor could not be committed (it stays where it was: more duplicates after a restart).
#[derive(Debug)]
pub(super) struct CursorNotCommitted<'a> {
    pub error: &'a str,
}

impl CursorNotCommitted<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            error = self.error,
            "Sparkplug cannot commit its change log cursor"
        );
    }
}
