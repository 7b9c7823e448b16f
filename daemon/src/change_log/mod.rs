//! The change log: every change the twin accepts, on disk, in order, once — what history,
//! Sparkplug and PostgreSQL read (issue #28; guarantees and format in `docs/change-log.md`).
//!
//! - **Tap** ([`crate::twin::Twin::tap`]): `Twin::apply` hands each change to a bounded queue
//!   ([`crate::twin::TAP_CAPACITY`]) and never waits; what does not fit is counted and written as
//!   a gap record ([`GapReason::Overflow`]).
//! - **Writer** (one supervised task): at most one `write` per [`WRITE_INTERVAL`] (10 ms), one
//!   `fdatasync` per `commit_window`; never a second sync of a segment whose sync failed (the
//!   audit journal's rule): its unsynced records are named void in a gap record and the log goes
//!   on in a new segment.
//! - **Disk**: a budget (`max_disk`; oldest segments deleted past it) and a free-space reserve
//!   above the audit's ([`store::reserve_for`]): a full disk stops the log (readiness
//!   `change-log` unmet, `twinloom_change_log_degraded` 1), never audited writes; the log retries
//!   every [`RETRY_INTERVAL`] and resumes with a gap record counting what it missed.
//! - **Readers** ([`Reader`]) stream from an offset in constant memory and wake on new data
//!   ([`ChangeLog::subscribe`]); consumers commit durable named cursors ([`commit_cursor`]);
//!   a segment is deleted once every cursor has passed it.
//! - **Series** ([`SeriesTable`]): records name a property by a persisted series id, not the
//!   twin's dense `PropertyId`, so reordering the configuration does not mix series.

mod events;
pub mod format;
pub mod reader;
pub mod store;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::config::change_log::ChangeLogConfig;
use crate::context::ComponentContext;
use crate::runtime::ReadyFlag;
use crate::twin::{TAP_CAPACITY, TapReceiver, Tapped};

pub use events::ChangeLogMetrics;
pub use format::{Entry, GapReason, Record};
pub use reader::{ReadError, Reader};
pub use store::{SeriesTable, StoreConfig, StoreError, Verified, commit_cursor, cursors, verify};

/// The log's folder in the state folder.
pub const DIR_NAME: &str = "change-log";

/// The shortest time between two `write`s: changes handed over meanwhile go out as one batch.
pub const WRITE_INTERVAL: Duration = Duration::from_millis(10);

/// How often a stopped (degraded) log tries to write again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// How often the writer looks at the cursors besides each new segment, a moved cursor and a
/// write that takes the log over its budget.
pub const BUDGET_INTERVAL: Duration = Duration::from_secs(1);

/// The line `/readyz` shows while the log is not writing.
pub const READY_CONDITION: &str = "change-log is not writing (disk full or I/O error; see the log)";

/// A running change log: where it is and how far it has written.
#[derive(Debug, Clone)]
pub struct ChangeLog {
    dir: PathBuf,
    written: watch::Receiver<u64>,
    /// Set when a cursor moved: the writer looks at the budget with its next write.
    cursor_moved: Arc<AtomicBool>,
}

impl ChangeLog {
    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset after the last record written (readable by a [`Reader`]), updated after each
    /// `write`; [`Reader::next_wait`] waits on it.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.written.clone()
    }

    /// A reader from offset `from` on.
    pub fn reader(&self, from: u64) -> Reader {
        Reader::new(&self.dir, from)
    }

    /// Commits consumer `name`'s cursor ([`commit_cursor`]) and has the writer look at the
    /// segments it may now delete with its next write (a cursor committed by another process is
    /// seen within [`BUDGET_INTERVAL`]).
    ///
    /// Errors: as [`commit_cursor`].
    pub fn commit_cursor(&self, name: &str, offset: u64) -> Result<(), StoreError> {
        commit_cursor(&self.dir, name, offset)?;
        self.cursor_moved.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// Where the log stands.
#[derive(Debug, Clone, PartialEq)]
enum State {
    Writing,
    /// Not writing since a failure: `lost` changes counted, `void` offsets spent by a batch that
    /// failed; the next try at `retry_at`.
    Degraded {
        reason: GapReason,
        lost: u64,
        void: std::ops::Range<u64>,
        retry_at: Instant,
    },
}

/// The writer task's state (moved into the blocking pool for each step).
struct Writer {
    store: store::Store,
    /// Series id per `PropertyId` index.
    series: Vec<u32>,
    commit_window: Duration,
    last_sync: Instant,
    state: State,
    /// Gap records to write before anything else (a failed sync's void range).
    gaps: Vec<Record>,
    records: Vec<Record>,
    metrics: ChangeLogMetrics,
    ready: ReadyFlag,
    written: watch::Sender<u64>,
    /// When the budget was last enforced, and the segments there were then.
    budget_checked: (Instant, usize),
    /// Bytes written as the metric last counted them.
    bytes_counted: u64,
    cursor_moved: Arc<AtomicBool>,
}

impl Writer {
    /// Writes `changes` (and the `lost` after them) or, degraded, counts them; syncs when the
    /// commit window is over (or `closing`); when `closing`, ends with a `Stopped` record.
    fn step(&mut self, changes: &[Tapped], lost: u64, closing: bool) {
        let now = SystemTime::now();
        let (mut changes, mut lost) = (changes, lost);
        if let State::Degraded {
            lost: missed,
            retry_at,
            ..
        } = &mut self.state
        {
            *missed += changes.len() as u64 + lost;
            if Instant::now() < *retry_at && !closing {
                return;
            }
        }
        if let State::Degraded {
            reason,
            lost: missed,
            void,
            ..
        } = self.state.clone()
        {
            self.enforce_budget();
            let gap = Record::Gap {
                reason,
                lost: Some(missed),
                void,
                at: now,
            };
            match self.store.append(std::slice::from_ref(&gap), now) {
                Ok(end) => {
                    events::Resumed {
                        reason,
                        lost: missed,
                    }
                    .emit(&self.metrics, &self.ready);
                    self.wrote(std::slice::from_ref(&gap), end);
                    self.state = State::Writing;
                }
                Err(failed) => {
                    if let State::Degraded { void, retry_at, .. } = &mut self.state {
                        if failed.void.end > failed.void.start {
                            *void = void.start.min(failed.void.start)..failed.void.end;
                        }
                        *retry_at = Instant::now() + RETRY_INTERVAL;
                    }
                    return;
                }
            }
            if !closing {
                return;
            }
            // Counted in the gap just written; only the `Stopped` record follows.
            (changes, lost) = (&[], 0);
        }
        let mut records = std::mem::take(&mut self.records);
        records.clear();
        records.append(&mut self.gaps);
        records.extend(changes.iter().map(|tapped| {
            let (change, late) = match tapped {
                Tapped::Change(change) => (change, false),
                Tapped::Late(change) => (change, true),
                Tapped::UpstreamLost { messages } => {
                    return Record::Gap {
                        reason: GapReason::Upstream,
                        lost: Some(*messages),
                        void: 0..0,
                        at: now,
                    };
                }
            };
            Record::Change {
                series: self
                    .series
                    .get(change.property.index())
                    .copied()
                    .unwrap_or(u32::MAX),
                value: change.sample.value.clone(),
                quality: change.sample.quality,
                source_time: change.sample.source_time,
                server_time: change.sample.server_time,
                late,
            }
        }));
        if lost > 0 {
            records.push(Record::Gap {
                reason: GapReason::Overflow,
                lost: Some(lost),
                void: 0..0,
                at: now,
            });
        }
        if closing {
            records.push(Record::Stopped { at: now });
        }
        if !records.is_empty() {
            match self.store.append(&records, now) {
                Ok(end) => self.wrote(&records, end),
                Err(failed) => {
                    let reason = match failed.error {
                        StoreError::DiskFull { .. } | StoreError::NoSpace(_) => GapReason::DiskFull,
                        _ => GapReason::WriteFailed,
                    };
                    events::Degraded {
                        reason,
                        error: &failed.error,
                    }
                    .emit(&self.metrics, &self.ready);
                    // Overflow counted in the gap is in `failed.changes`' batch only as a record:
                    // add it back as changes.
                    self.state = State::Degraded {
                        reason,
                        lost: failed.changes + lost,
                        void: failed.void,
                        retry_at: Instant::now() + RETRY_INTERVAL,
                    };
                }
            }
        }
        records.clear();
        self.records = records;
        if self.store.dirty() && (closing || self.last_sync.elapsed() >= self.commit_window) {
            self.sync();
        }
    }

    fn sync(&mut self) {
        let void = self.store.unsynced();
        let started = Instant::now();
        match self.store.sync() {
            Ok(()) => self.metrics.sync.observe(started.elapsed().as_secs_f64()),
            Err(error) => {
                events::SyncFailed {
                    error: &error,
                    void: &void,
                }
                .emit();
                self.gaps.push(Record::Gap {
                    reason: GapReason::SyncFailed,
                    lost: None,
                    void,
                    at: SystemTime::now(),
                });
            }
        }
        self.last_sync = Instant::now();
    }

    /// Counts what was written and tells readers.
    fn wrote(&mut self, records: &[Record], end: u64) {
        let first = end - records.len() as u64;
        self.metrics.records.inc_by(records.len() as u64);
        for (i, record) in records.iter().enumerate() {
            if let Record::Gap { reason, lost, .. } = record {
                events::GapWritten {
                    reason: *reason,
                    lost: *lost,
                    offset: first + i as u64,
                }
                .emit(&self.metrics);
            }
        }
        let bytes = self.store.bytes_written();
        self.metrics
            .bytes_written
            .inc_by(bytes - self.bytes_counted.min(bytes));
        self.bytes_counted = bytes;
        if self.budget_checked.0.elapsed() >= BUDGET_INTERVAL
            || self.budget_checked.1 != self.store.segment_count()
            || self.store.over_budget()
            || self.cursor_moved.swap(false, Ordering::Relaxed)
        {
            self.enforce_budget();
        }
        self.written.send_replace(end);
    }

    fn enforce_budget(&mut self) {
        match self.store.enforce_budget() {
            Ok(deleted) if deleted.segments > 0 => {
                events::SegmentsDeleted { deleted: &deleted }.emit(&self.metrics);
            }
            Ok(_) => {}
            Err(error) => events::BudgetFailed { error: &error }.emit(),
        }
        self.budget_checked = (Instant::now(), self.store.segment_count());
        self.metrics.disk_bytes.set(self.store.disk_bytes() as i64);
    }
}

/// Opens the log in `<state dir>/change-log`, takes the twin's tap and spawns the writer task —
/// in the supervisor's last shutdown stage, so it records what sources and plugins change while
/// they stop. Call it before any source starts, so the log sees every change from the first.
/// `audit_reserve` (bytes) is the audit journal's free-space reserve: the log keeps twice it free
/// on the same file system ([`store::reserve_for`]).
///
/// A log that cannot be opened is logged and left unready (`None`): live data, OPC UA and
/// operator writes go on without it.
pub fn start(
    config: &ChangeLogConfig,
    audit_reserve: u64,
    context: ComponentContext<'_>,
) -> Option<ChangeLog> {
    let dir = context.state_dir.join(DIR_NAME);
    let store = StoreConfig::new(
        dir,
        config.max_disk.as_u64(),
        context.state_dir,
        audit_reserve,
    );
    start_with(config, store, context)
}

/// [`start`] with the store's settings given (tests: a fake free-space figure, injected sync
/// failures).
pub fn start_with(
    config: &ChangeLogConfig,
    store_config: StoreConfig,
    context: ComponentContext<'_>,
) -> Option<ChangeLog> {
    let metrics: ChangeLogMetrics = context.metrics.set();
    let ready = context.readiness.register(READY_CONDITION);
    let dir = store_config.dir.clone();
    let reserve_bytes = store_config.reserve_bytes;
    let opened = store::Store::open(store_config).and_then(|(store, opened)| {
        let model = context.twin.model();
        let paths: Vec<String> = model.properties().iter().map(|p| p.path.clone()).collect();
        let series = SeriesTable::load(&dir)?.assign(&dir, &paths)?;
        Ok((store, opened, series))
    });
    let (store, opened, series) = match opened {
        Ok(parts) => parts,
        Err(error) => {
            events::Unavailable {
                dir: &dir,
                error: &error,
            }
            .emit(&metrics);
            return None;
        }
    };
    let tap = context.twin.tap(TAP_CAPACITY);
    let cursor_moved = Arc::new(AtomicBool::new(false));
    let (written, written_rx) = watch::channel(store.next_offset());
    let mut writer = Writer {
        store,
        series,
        commit_window: config.commit_window,
        last_sync: Instant::now(),
        state: State::Writing,
        gaps: Vec::new(),
        records: Vec::new(),
        metrics,
        ready: ready.clone(),
        written,
        budget_checked: (Instant::now(), 0),
        bytes_counted: 0,
        cursor_moved: Arc::clone(&cursor_moved),
    };
    events::Opened {
        dir: &dir,
        next_offset: opened.next_offset,
        segments: opened.segments,
        clean: opened.clean,
        cut: opened.cut.as_ref(),
        reserve_bytes,
    }
    .emit(&ready);
    let now = SystemTime::now();
    if !opened.clean {
        writer.gaps.push(Record::Gap {
            reason: if opened.cut.is_some() {
                GapReason::DamagedTail
            } else {
                GapReason::UncleanStop
            },
            lost: None,
            void: 0..0,
            at: now,
        });
    }
    writer.gaps.push(Record::Started { at: now });
    writer.step(&[], 0, false);
    writer.sync();
    context
        .supervisor
        .spawn_last("change-log", move |token| run(writer, tap, token));
    Some(ChangeLog {
        dir,
        written: written_rx,
        cursor_moved,
    })
}

/// The writer task: waits for the tap (or the commit window), holds off until [`WRITE_INTERVAL`]
/// after the last write, drains the tap and writes; on cancellation drains once more, writes
/// the `Stopped` record and syncs.
async fn run(
    mut writer: Writer,
    tap: TapReceiver,
    token: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let mut changes: Vec<Tapped> = Vec::new();
    let mut last_write = tokio::time::Instant::now();
    loop {
        let tick = match writer.state {
            State::Writing => writer.commit_window,
            State::Degraded { .. } => RETRY_INTERVAL,
        };
        let closing = tokio::select! {
            () = token.cancelled() => true,
            () = tap.changed() => false,
            () = tokio::time::sleep(tick) => false,
        };
        let closing = closing
            || tokio::select! {
                () = token.cancelled() => true,
                () = tokio::time::sleep_until(last_write + WRITE_INTERVAL) => false,
            };
        changes.clear();
        let lost = tap.drain(&mut changes);
        last_write = tokio::time::Instant::now();
        (writer, changes) = tokio::task::spawn_blocking(move || {
            writer.step(&changes, lost, closing);
            (writer, changes)
        })
        .await?;
        if closing {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests;
