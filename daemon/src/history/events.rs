//! The historian's events: one type per occurrence, whose `emit` writes the log line and moves the
//! metrics (`twinloom_history_*`) and the readiness condition together.

use std::path::Path;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::store::HistoryStoreError;
use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::MetricSet;

/// Labels of the flagged-samples series: why a sample was flagged (a fixed set).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FlagLabels {
    /// `too-old` (more than the late window behind the series' newest sample) or `future`.
    pub why: String,
}

/// The historian's metric families (`twinloom_history_*`).
#[derive(Debug, Clone)]
pub struct HistoryMetrics {
    /// Samples stored (flushed into files).
    pub samples: Counter,
    /// Samples that arrived behind their series' newest one within the late window (stored in order).
    pub late: Counter,
    /// Samples stored flagged, by why.
    pub flagged: Family<FlagLabels, Counter>,
    /// Changes not stored because they were within `history_deadband`.
    pub filtered: Counter,
    /// Gap records of the change log kept (served as `Bad_DataLost`).
    pub gaps: Counter,
    /// Bytes of all history files.
    pub disk_bytes: Gauge,
    /// Files deleted by retention or the budget.
    pub files_deleted: Counter,
    /// 1 while the historian cannot store (see the log).
    pub degraded: Gauge,
}

impl MetricSet for HistoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            samples: Counter::default(),
            late: Counter::default(),
            flagged: Family::default(),
            filtered: Counter::default(),
            gaps: Counter::default(),
            disk_bytes: Gauge::default(),
            files_deleted: Counter::default(),
            degraded: Gauge::default(),
        };
        let sub = registry.sub_registry_with_prefix("history");
        sub.register(
            "samples",
            "Samples stored by the historian",
            metrics.samples.clone(),
        );
        sub.register(
            "late_samples",
            "Samples that arrived behind their series' newest sample (within the late window: stored in time order)",
            metrics.late.clone(),
        );
        sub.register(
            "flagged_samples",
            "Samples stored flagged: older than the late window or dated in the future",
            metrics.flagged.clone(),
        );
        sub.register(
            "filtered_changes",
            "Changes not stored because they were within history_deadband",
            metrics.filtered.clone(),
        );
        sub.register(
            "gaps",
            "Change log gap records kept by the historian (served as Bad_DataLost)",
            metrics.gaps.clone(),
        );
        sub.register(
            "disk_bytes",
            "Bytes of all history files",
            metrics.disk_bytes.clone(),
        );
        sub.register(
            "deleted_files",
            "History files deleted by retention or max_disk",
            metrics.files_deleted.clone(),
        );
        sub.register(
            "degraded",
            "1 while the historian cannot store samples",
            metrics.degraded.clone(),
        );
        metrics
    }
}

/// The historian could not open its folder: no history this run.
#[derive(Debug)]
pub struct Unavailable<'a> {
    /// The folder.
    pub dir: &'a Path,
    /// Why.
    pub error: &'a str,
}

impl Unavailable<'_> {
    /// Logs it and marks the historian unready.
    pub fn emit(&self, metrics: &HistoryMetrics, ready: &ReadyFlag) {
        metrics.degraded.set(1);
        ready.set(false);
        tracing::error!(dir = %self.dir.display(), error = %self.error, "History is unavailable");
    }
}

/// The historian opened its folder and reads the change log from `from`.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The folder.
    pub dir: &'a Path,
    /// Files found.
    pub files: usize,
    /// The change-log offset it resumes from.
    pub from: u64,
}

impl Opened<'_> {
    /// Logs it and marks the historian ready.
    pub fn emit(&self, ready: &ReadyFlag) {
        ready.set(true);
        tracing::info!(dir = %self.dir.display(), files = self.files, from = self.from, "History opened");
    }
}

/// A flush could not be stored (or the cursor not committed): the samples stay buffered and the
/// flush is tried again.
#[derive(Debug)]
pub struct FlushFailed<'a> {
    /// Why.
    pub error: &'a str,
}

impl FlushFailed<'_> {
    /// Logs it and marks the historian degraded and unready.
    pub fn emit(&self, metrics: &HistoryMetrics, ready: &ReadyFlag) {
        metrics.degraded.set(1);
        ready.set(false);
        tracing::error!(error = %self.error, "History could not store samples; trying again");
    }
}

/// A flush succeeded (after a failure: the historian is healthy again).
#[derive(Debug)]
pub struct Flushed {
    /// Samples stored.
    pub samples: u64,
}

impl Flushed {
    /// Counts it and marks the historian ready.
    pub fn emit(&self, metrics: &HistoryMetrics, ready: &ReadyFlag) {
        metrics.samples.inc_by(self.samples);
        metrics.degraded.set(0);
        ready.set(true);
    }
}

/// The change log could not be read: the historian stops reading until it can.
#[derive(Debug)]
pub struct ReadFailed<'a> {
    /// Why.
    pub error: &'a str,
}

impl ReadFailed<'_> {
    /// Logs it.
    pub fn emit(&self, metrics: &HistoryMetrics, ready: &ReadyFlag) {
        metrics.degraded.set(1);
        ready.set(false);
        tracing::error!(error = %self.error, "History cannot read the change log");
    }
}

/// Retention or the budget deleted files, or could not.
#[derive(Debug)]
pub enum Enforced<'a> {
    /// Files deleted.
    Deleted(usize),
    /// Deleting failed.
    Failed(&'a HistoryStoreError),
}

impl Enforced<'_> {
    /// Logs and counts it.
    pub fn emit(&self, metrics: &HistoryMetrics) {
        match self {
            Self::Deleted(files) => {
                metrics.files_deleted.inc_by(*files as u64);
                tracing::info!(files, "History files deleted (retention or max_disk)");
            }
            Self::Failed(error) => {
                tracing::warn!(%error, "History files could not be deleted");
            }
        }
    }
}

/// Closed files' chunks were merged ([`super::store::Store::compact`]), or could not be.
#[derive(Debug)]
pub enum Compacted<'a> {
    /// Files compacted.
    Files(usize),
    /// Compacting failed (the file stays as it was; tried again at the next tick).
    Failed(&'a HistoryStoreError),
}

impl Compacted<'_> {
    /// Logs it.
    pub fn emit(&self) {
        match self {
            Self::Files(files) => {
                tracing::debug!(files, "History files compacted");
            }
            Self::Failed(error) => {
                tracing::warn!(%error, "A history file could not be compacted");
            }
        }
    }
}

/// A HistoryRead could not read the store.
#[derive(Debug)]
pub struct ReadError<'a> {
    /// Why.
    pub error: &'a HistoryStoreError,
}

impl ReadError<'_> {
    /// Logs it.
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "History read failed");
    }
}
