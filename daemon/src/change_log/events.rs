//! The change log's events: one type per occurrence, whose `emit` writes the log line, moves the
//! metrics (`twinloom_change_log_*`) and sets the readiness condition together.

use std::path::Path;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::format::GapReason;
use super::store::{Deleted, StoreError};
use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::MetricSet;

/// Labels of the lost-changes series: the gap's reason (a fixed set, [`GapReason::as_str`]).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GapLabels {
    /// `overflow`, `disk-full`, `write-failed`, `sync-failed`, `unclean-stop`, `damaged-tail`.
    pub reason: String,
}

/// The change log's metric families (`twinloom_change_log_*`).
#[derive(Debug, Clone)]
pub struct ChangeLogMetrics {
    /// Records written (changes, gaps, start and stop records).
    pub records: Counter,
    /// Changes the twin accepted that the log does not hold, by reason (each also a gap record).
    pub lost: Family<GapLabels, Counter>,
    /// Gap records written, by reason.
    pub gaps: Family<GapLabels, Counter>,
    /// Bytes written to segments.
    pub bytes_written: Counter,
    /// Bytes of all segments on disk.
    pub disk_bytes: Gauge,
    /// 1 while the log is not writing (disk full, write failed).
    pub degraded: Gauge,
    /// Seconds per `fdatasync` of a segment.
    pub sync: Histogram,
    /// Segments deleted (budget or every cursor past them).
    pub segments_deleted: Counter,
}

impl MetricSet for ChangeLogMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            records: Counter::default(),
            lost: Family::default(),
            gaps: Family::default(),
            bytes_written: Counter::default(),
            disk_bytes: Gauge::default(),
            degraded: Gauge::default(),
            sync: Histogram::new(exponential_buckets(0.00005, 2.0, 17)),
            segments_deleted: Counter::default(),
        };
        let sub = registry.sub_registry_with_prefix("change_log");
        sub.register(
            "records",
            "Records written to the change log",
            metrics.records.clone(),
        );
        sub.register(
            "lost_changes",
            "Changes the twin accepted that the change log does not hold, by reason (each written as a gap record)",
            metrics.lost.clone(),
        );
        sub.register(
            "gaps",
            "Gap records written, by reason",
            metrics.gaps.clone(),
        );
        sub.register(
            "written_bytes",
            "Bytes written to change log segments",
            metrics.bytes_written.clone(),
        );
        sub.register(
            "disk_bytes",
            "Bytes of all change log segments on disk",
            metrics.disk_bytes.clone(),
        );
        sub.register(
            "degraded",
            "1 while the change log is not writing (disk full, I/O error)",
            metrics.degraded.clone(),
        );
        sub.register(
            "sync_seconds",
            "Seconds per fdatasync of a change log segment",
            metrics.sync.clone(),
        );
        sub.register(
            "deleted_segments",
            "Change log segments deleted (over the budget, or read by every consumer)",
            metrics.segments_deleted.clone(),
        );
        metrics
    }
}

fn labels(reason: GapReason) -> GapLabels {
    GapLabels {
        reason: reason.as_str().to_owned(),
    }
}

/// The log opened (and, with a damaged tail or after an unclean stop, says so).
#[derive(Debug)]
pub(crate) struct Opened<'a> {
    pub dir: &'a Path,
    pub next_offset: u64,
    pub segments: usize,
    pub clean: bool,
    pub cut: Option<&'a (u64, String)>,
    pub reserve_bytes: u64,
}

impl Opened<'_> {
    pub fn emit(&self, ready: &ReadyFlag) {
        if let Some((bytes, damage)) = self.cut {
            tracing::warn!(dir = %self.dir.display(), bytes, %damage, "Change log tail cut at open (a write a crash interrupted, or damage); a gap record says so");
        }
        if !self.clean {
            tracing::warn!(dir = %self.dir.display(), "The daemon before did not stop cleanly: changes it had not written are lost; a gap record says so");
        }
        tracing::info!(dir = %self.dir.display(), next_offset = self.next_offset, segments = self.segments, reserve_bytes = self.reserve_bytes, "Change log opened");
        ready.set(true);
    }
}

/// The log could not be opened: it stays unready; live data, OPC UA and writes go on.
#[derive(Debug)]
pub(crate) struct Unavailable<'a> {
    pub dir: &'a Path,
    pub error: &'a StoreError,
}

impl Unavailable<'_> {
    pub fn emit(&self, metrics: &ChangeLogMetrics) {
        metrics.degraded.set(1);
        tracing::error!(dir = %self.dir.display(), error = %self.error, "Cannot open the change log; changes are not logged until the daemon restarts");
    }
}

/// The log stopped writing (disk full, a write failed): changes are counted until it resumes.
#[derive(Debug)]
pub(crate) struct Degraded<'a> {
    pub reason: GapReason,
    pub error: &'a StoreError,
}

impl Degraded<'_> {
    pub fn emit(&self, metrics: &ChangeLogMetrics, ready: &ReadyFlag) {
        metrics.degraded.set(1);
        ready.set(false);
        tracing::error!(reason = self.reason.as_str(), error = %self.error, "Change log stopped writing; live data, OPC UA and writes go on, lost changes are counted");
    }
}

/// The log writes again; a gap record names what it missed.
#[derive(Debug)]
pub(crate) struct Resumed {
    pub reason: GapReason,
    pub lost: u64,
}

impl Resumed {
    pub fn emit(&self, metrics: &ChangeLogMetrics, ready: &ReadyFlag) {
        metrics.degraded.set(0);
        ready.set(true);
        tracing::warn!(
            reason = self.reason.as_str(),
            lost = self.lost,
            "Change log resumed; a gap record names the changes it missed"
        );
    }
}

/// A gap record was written: changes the log does not hold.
#[derive(Debug)]
pub(crate) struct GapWritten {
    pub reason: GapReason,
    pub lost: Option<u64>,
    pub offset: u64,
}

impl GapWritten {
    pub fn emit(&self, metrics: &ChangeLogMetrics) {
        metrics.gaps.get_or_create(&labels(self.reason)).inc();
        // An upstream gap counts lost messages, not changes (the source logs and counts them).
        if let Some(lost) = self.lost.filter(|_| self.reason != GapReason::Upstream) {
            metrics
                .lost
                .get_or_create(&labels(self.reason))
                .inc_by(lost);
        }
        if self.reason == GapReason::Overflow {
            tracing::warn!(lost = ?self.lost, offset = self.offset, "Change log fell behind the twin; a gap record counts the changes it could not take");
        }
    }
}

/// An `fdatasync` failed: the segment is never synced again, its unsynced records are void.
#[derive(Debug)]
pub(crate) struct SyncFailed<'a> {
    pub error: &'a StoreError,
    pub void: &'a std::ops::Range<u64>,
}

impl SyncFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = %self.error, first = self.void.start, end = self.void.end, "Change log fdatasync failed; those records may not survive a power loss, the log goes on in a new segment");
    }
}

/// Old segments were deleted; a consumer whose cursor was in them reads a gap.
#[derive(Debug)]
pub(crate) struct SegmentsDeleted<'a> {
    pub deleted: &'a Deleted,
}

impl SegmentsDeleted<'_> {
    pub fn emit(&self, metrics: &ChangeLogMetrics) {
        metrics
            .segments_deleted
            .inc_by(self.deleted.segments as u64);
        match &self.deleted.unread {
            Some(unread) => tracing::warn!(
                segments = self.deleted.segments,
                bytes = self.deleted.bytes,
                first = unread.start,
                end = unread.end,
                "Change log over its budget (max_disk): deleted segments a consumer had not read; it will read a gap"
            ),
            None => tracing::debug!(
                segments = self.deleted.segments,
                bytes = self.deleted.bytes,
                "Change log segments deleted"
            ),
        }
    }
}

/// The budget could not be enforced (a cursor unreadable, a segment not deletable).
#[derive(Debug)]
pub(crate) struct BudgetFailed<'a> {
    pub error: &'a StoreError,
}

impl BudgetFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(error = %self.error, "Cannot enforce the change log's budget");
    }
}
