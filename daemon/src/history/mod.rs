//! The embedded historian: a consumer of the change log (its own cursor, [`CURSOR`]) that keeps
//! every historized property's changes in time-split redb files and answers range reads for OPC
//! UA HistoryRead (issue #30; `docs/history.md`).
//!
//! - **Ingest**: one supervised task reads the log from its cursor, applies each property's
//!   `history_deadband` and `history_max_interval`, and buffers samples per series in memory
//!   (at most [`MAX_BUFFERED`]); every [`FLUSH_INTERVAL`] (or when the buffer is full, or at
//!   shutdown) it writes them as compressed chunks ([`chunk`]) into the file of their time
//!   ([`store`]), each file in one `fsync`ed transaction, and only then commits its cursor. A
//!   restart re-reads from the cursor and skips what a file already holds (`ingested_through`),
//!   so `kill -9` loses nothing and duplicates nothing.
//! - **Time**: samples are indexed by SourceTimestamp (the twin's server time when the source
//!   gives none). A sample up to [`LATE_WINDOW_US`] behind its series' newest is stored in time
//!   order (counted as late); older, or dated more than [`FUTURE_TOLERANCE_US`] ahead of when the
//!   twin stored it, it is stored flagged and counted.
//! - **Gaps**: a change-log gap record (changes the log does not hold) is kept and read back as
//!   a value with `Bad_DataLost` at its time.
//! - **Retention**: whole files whose span ended more than `retention` ago are deleted, and the
//!   oldest files past `max_disk`.

pub mod chunk;
mod events;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::change_log::{ChangeLog, Entry, GapReason, Record, SeriesTable};
use crate::config::history::HistoryConfig;
use crate::context::ComponentContext;
use crate::runtime::ReadyFlag;
use crate::twin::model::{Deadband, EuRange, HistoryPolicy};
use crate::twin::{PropertyId, Value};

pub use chunk::Sample;
pub use events::HistoryMetrics;
pub use store::{HistoryStoreError, Store, StoredGap};

/// The historian's folder in the state folder.
pub const DIR_NAME: &str = "history";

/// The historian's change-log cursor name.
pub const CURSOR: &str = "history";

/// How far (µs) a sample may be behind its series' newest and still be kept in order (1 h).
pub const LATE_WINDOW_US: i64 = 3600 * 1_000_000;

/// How far (µs) a SourceTimestamp may be ahead of the twin's server time before the sample is
/// flagged as future-dated (1 min).
pub const FUTURE_TOLERANCE_US: i64 = 60 * 1_000_000;

/// Longest time samples stay in memory before they are written (and the cursor moves).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// Most samples held in memory before a flush (≈ 64 bytes each).
pub const MAX_BUFFERED: usize = 262_144;

/// Change-log entries taken per wake before the task looks at its timers again.
const READ_BATCH: usize = 8192;

/// How often `history_max_interval` and retention are looked at.
const TICK: Duration = Duration::from_secs(1);

/// How often retention and `max_disk` are enforced.
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// The line `/readyz` shows while the historian cannot store.
pub const READY_CONDITION: &str = "history is not storing (see the log)";

/// A point of a series' history as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    /// A stored sample.
    Sample(Sample),
    /// A recorded loss (a change-log gap) at this time (µs): served as `Bad_DataLost`.
    Lost {
        /// µs since the Unix epoch.
        time: i64,
    },
}

impl Point {
    /// The sample, when it is one.
    pub fn into_sample(self) -> Option<Sample> {
        match self {
            Self::Sample(sample) => Some(sample),
            Self::Lost { .. } => None,
        }
    }

    /// Its time, µs since the Unix epoch.
    pub fn time(&self) -> i64 {
        match self {
            Self::Sample(s) => s.time,
            Self::Lost { time } => *time,
        }
    }
}

/// µs since the Unix epoch of `at`.
pub fn micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// One series' ingest state.
#[derive(Debug, Default)]
struct SeriesState {
    policy: Option<(HistoryPolicy, Option<EuRange>)>,
    /// Samples not yet written.
    buffer: Vec<Sample>,
    /// The last sample stored in order (for the deadband and max interval), and when (wall µs).
    last: Option<(Sample, i64)>,
    /// The newest in-order SourceTimestamp, µs.
    newest: i64,
}

#[derive(Debug, Default)]
struct Buffers {
    series: HashMap<u32, SeriesState>,
    gaps: Vec<StoredGap>,
    /// What a flush under way is writing (visible to reads until it is durable).
    in_flight: Vec<(u32, Sample)>,
    in_flight_gaps: Vec<StoredGap>,
    buffered: usize,
    /// The earliest time (µs) among buffered and in-flight samples and gaps: what the archive
    /// holds before a file does ([`Historian::start_of_archive`]).
    earliest: Option<i64>,
}

impl Buffers {
    /// Notes a buffered sample or gap at `time` (µs).
    fn note(&mut self, time: i64) {
        self.buffered += 1;
        self.earliest = Some(self.earliest.map_or(time, |e| e.min(time)));
    }

    /// The earliest time among what is still buffered or in flight, computed again (after a
    /// flush: what it wrote is in the files now).
    fn recompute_earliest(&mut self) {
        let samples = self
            .series
            .values()
            .flat_map(|s| s.buffer.iter().map(|s| s.time));
        let in_flight = self.in_flight.iter().map(|(_, s)| s.time);
        let gaps = self.gaps.iter().chain(&self.in_flight_gaps).map(|g| g.time);
        self.earliest = samples.chain(in_flight).chain(gaps).min();
    }
}

#[derive(Debug)]
struct Shared {
    store: Store,
    buffers: Mutex<Buffers>,
    /// Series id per property (by `PropertyId` index); `None` for a property not historized.
    series: Vec<Option<u32>>,
    /// The change-log offset after the last entry taken (buffered or stored).
    taken: tokio::sync::watch::Sender<u64>,
}

/// A running historian: what HistoryRead reads.
#[derive(Debug, Clone)]
pub struct Historian {
    shared: Arc<Shared>,
}

impl Historian {
    /// Closes the historian's files for good (its task has stopped): what a reload does before
    /// the new components open them again ([`store::Store::close`]).
    pub fn close(&self) {
        self.shared.store.close();
    }

    /// The series of `property`, when it is historized.
    pub fn series_of(&self, property: PropertyId) -> Option<u32> {
        self.shared.series.get(property.index()).copied().flatten()
    }

    /// The oldest time (µs) history may hold — `StartOfArchive` and `StartOfOnlineArchive`
    /// (OPC UA Part 11 §5.2.2): the oldest file's start, or the start of the file a buffered
    /// sample older than every file goes to; `None` while history holds nothing. Computed on
    /// each call, so it follows retention deleting files and the first sample of an empty
    /// archive.
    pub fn start_of_archive(&self) -> Option<i64> {
        let earliest = self
            .shared
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .earliest;
        let buffered = earliest.map(|t| self.shared.store.file_for(t));
        match (self.shared.store.start_of_archive(), buffered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The change-log offset after the last entry the historian has taken: what it has read is
    /// readable from then on (buffered or stored).
    pub fn taken(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.taken.subscribe()
    }

    /// The historian's folder.
    pub fn dir(&self) -> &Path {
        self.shared.store.dir()
    }

    /// Every point of `series` with `range.start <= time < range.end` (µs), in time order
    /// (samples with equal times in the order the twin stored them), stored or still buffered,
    /// gaps as [`Point::Lost`]. Blocking file I/O: call it off the async runtime.
    ///
    /// Errors: a history file cannot be read or a chunk decoded.
    pub fn read(&self, series: u32, range: Range<i64>) -> Result<Vec<Point>, HistoryStoreError> {
        let mut samples = Vec::new();
        let mut gaps = Vec::new();
        {
            // Buffered first: a flush finishing meanwhile is then read from its file (a sample
            // seen twice is dropped below), never missed.
            let buffers = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let within = |t: i64| range.start <= t && t < range.end;
            if let Some(state) = buffers.series.get(&series) {
                samples.extend(state.buffer.iter().filter(|s| within(s.time)).cloned());
            }
            samples.extend(
                buffers
                    .in_flight
                    .iter()
                    .filter(|(s, sample)| *s == series && within(sample.time))
                    .map(|(_, sample)| sample.clone()),
            );
            gaps.extend(
                buffers
                    .gaps
                    .iter()
                    .chain(&buffers.in_flight_gaps)
                    .filter(|g| within(g.time))
                    .copied(),
            );
        }
        if let Err(error) = self
            .shared
            .store
            .read(series, range.clone(), &mut samples, &mut gaps)
        {
            events::ReadError { error: &error }.emit();
            return Err(error);
        }
        samples.sort_by_key(|s| (s.time, s.server_time));
        // A flush that finished between the two looks shows its samples twice (the twin never
        // hands over two equal changes in a row).
        samples.dedup();
        gaps.sort_by_key(|g| (g.time, g.offset));
        gaps.dedup();
        let mut points: Vec<Point> = Vec::with_capacity(samples.len() + gaps.len());
        let mut gaps = gaps.into_iter().peekable();
        for sample in samples {
            while let Some(gap) = gaps.next_if(|g| g.time <= sample.time) {
                points.push(Point::Lost { time: gap.time });
            }
            points.push(Point::Sample(sample));
        }
        points.extend(gaps.map(|g| Point::Lost { time: g.time }));
        Ok(points)
    }

    /// The last sample of `series` at or before `time` (µs) — a bounding value — looking back
    /// to the start of the archive (recorded losses passed over).
    ///
    /// Errors: as [`Self::read`].
    pub fn at_or_before(
        &self,
        series: u32,
        time: i64,
    ) -> Result<Option<Sample>, HistoryStoreError> {
        let (found, _) =
            self.nearest(series, time, false, true, |p| matches!(p, Point::Sample(_)))?;
        Ok(found.and_then(Point::into_sample))
    }

    /// The first sample of `series` at or after `time` (µs) — a bounding value — looking
    /// forward to now (recorded losses passed over).
    ///
    /// Errors: as [`Self::read`].
    pub fn at_or_after(&self, series: u32, time: i64) -> Result<Option<Sample>, HistoryStoreError> {
        let (found, _) =
            self.nearest(series, time, true, true, |p| matches!(p, Point::Sample(_)))?;
        Ok(found.and_then(Point::into_sample))
    }

    /// The nearest point of `series` from `time` (µs) that `accept`s, looking `forward` (to
    /// now) or back (to the start of the archive), `time` itself included when `inclusive`;
    /// with whether any point was passed over on the way (a value skipped: OPC UA Part 13
    /// §3.1.8's "Bad values between").
    ///
    /// Errors: as [`Self::read`].
    pub fn nearest(
        &self,
        series: u32,
        time: i64,
        forward: bool,
        inclusive: bool,
        accept: impl Fn(&Point) -> bool,
    ) -> Result<(Option<Point>, bool), HistoryStoreError> {
        let mut skipped = false;
        let mut width = 3_600_000_000i64;
        if forward {
            let ceiling = micros(SystemTime::now()).saturating_add(FUTURE_TOLERANCE_US * 60);
            let mut start = if inclusive {
                time
            } else {
                time.saturating_add(1)
            };
            while start <= ceiling {
                let end = start.saturating_add(width);
                for point in self.read(series, start..end)? {
                    if accept(&point) {
                        return Ok((Some(point), skipped));
                    }
                    skipped = true;
                }
                start = end;
                width = width.saturating_mul(4);
            }
        } else {
            let floor = self
                .start_of_archive()
                .unwrap_or(time)
                .min(time)
                .saturating_sub(store::MAX_CHUNK_SPAN_US);
            let mut end = if inclusive {
                time.saturating_add(1)
            } else {
                time
            };
            loop {
                let start = end.saturating_sub(width).max(floor);
                for point in self.read(series, start..end)?.into_iter().rev() {
                    if accept(&point) {
                        return Ok((Some(point), skipped));
                    }
                    skipped = true;
                }
                if start <= floor {
                    break;
                }
                end = start;
                width = width.saturating_mul(4);
            }
        }
        Ok((None, skipped))
    }
}

/// Opens `<state dir>/history`, resolves each property's series from the change log's series
/// table and spawns the ingest task, reading `log` from the historian's cursor.
///
/// A historian that cannot open is logged and left unready (`None`): everything else goes on.
pub fn start(
    config: &HistoryConfig,
    log: &ChangeLog,
    context: ComponentContext<'_>,
) -> Option<Historian> {
    let metrics: HistoryMetrics = context.metrics.set();
    let ready = context.readiness.register(READY_CONDITION);
    let dir = context.state_dir.join(DIR_NAME);
    let opened = Store::open(&dir, store::span_for(config.retention))
        .map_err(|e| e.to_string())
        .and_then(|store| {
            let table = SeriesTable::load(log.dir()).map_err(|e| e.to_string())?;
            let cursor = crate::change_log::cursors(log.dir())
                .map_err(|e| e.to_string())?
                .get(CURSOR)
                .copied();
            Ok((store, table, cursor))
        });
    let (store, table, cursor) = match opened {
        Ok(parts) => parts,
        Err(error) => {
            events::Unavailable {
                dir: &dir,
                error: &error,
            }
            .emit(&metrics, &ready);
            return None;
        }
    };
    let by_path: HashMap<String, u32> = table.paths().into_iter().map(|(id, p)| (p, id)).collect();
    let model = context.twin.model();
    let mut series = vec![None; model.properties().len()];
    let mut buffers = Buffers::default();
    for (index, property) in model.properties().iter().enumerate() {
        let decl = model.decl(PropertyId(index as u32));
        let Some(&id) = by_path.get(&property.path) else {
            continue;
        };
        let state = buffers.series.entry(id).or_default();
        state.policy = Some((decl.history, decl.range));
        if decl.history.historizing {
            series[index] = Some(id);
        }
    }
    let files = store.start_of_archive().map_or(0, |_| 1);
    let shared = Arc::new(Shared {
        store,
        buffers: Mutex::new(buffers),
        series,
        taken: tokio::sync::watch::Sender::new(0),
    });
    let log_end = *log.subscribe().borrow();
    let mut from = cursor.unwrap_or(0);
    let replaced = from > log_end || shared.store.max_ingested() > log_end;
    if replaced {
        // The log is not the one this history was read from (restored elsewhere, or the log
        // folder was removed): read the new log from its start; nothing of it is stored yet.
        shared.store.forget_ingested();
        from = 0;
    }
    events::Opened {
        dir: &dir,
        files,
        from,
    }
    .emit(&ready);
    let ingest = Ingest {
        shared: Arc::clone(&shared),
        log: log.clone(),
        position: from,
        fresh: cursor.is_none() || replaced,
        metrics,
        ready,
        retention: config.retention,
        max_disk: config.max_disk.as_u64(),
    };
    context
        .supervisor
        .spawn("history", move |token| ingest.run(token));
    Some(Historian { shared })
}

/// The ingest task's state.
struct Ingest {
    shared: Arc<Shared>,
    log: ChangeLog,
    /// The offset after the last entry taken.
    position: u64,
    /// No cursor yet: a `deleted` gap at the very start is the log's own past, not a loss.
    fresh: bool,
    metrics: HistoryMetrics,
    ready: ReadyFlag,
    retention: Duration,
    max_disk: u64,
}

impl Ingest {
    async fn run(mut self, token: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        let mut reader = self.log.reader(self.position);
        let mut written = self.log.subscribe();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_flush = Instant::now();
        let mut last_retention = Instant::now() - RETENTION_INTERVAL;
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    // Whatever the log already holds, then a last flush.
                    while let Ok(Some(entry)) = reader.try_next() {
                        self.take(entry);
                    }
                    self.flush().await;
                    return Ok(());
                }
                entry = reader.next_wait(&mut written) => match entry {
                    Ok(entry) => {
                        self.take(entry);
                        for _ in 0..READ_BATCH {
                            match reader.try_next() {
                                Ok(Some(entry)) => self.take(entry),
                                _ => break,
                            }
                        }
                        self.shared.taken.send_replace(self.position);
                    }
                    Err(error) => {
                        events::ReadFailed { error: &error.to_string() }.emit(&self.metrics, &self.ready);
                        tokio::select! {
                            () = token.cancelled() => {}
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        reader = self.log.reader(self.position);
                    }
                },
                _ = tick.tick() => {
                    self.heartbeats();
                    if last_retention.elapsed() >= RETENTION_INTERVAL {
                        last_retention = Instant::now();
                        self.enforce().await;
                    }
                }
            }
            let buffered = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .buffered;
            if buffered >= MAX_BUFFERED || (last_flush.elapsed() >= FLUSH_INTERVAL) {
                self.flush().await;
                last_flush = Instant::now();
            }
        }
    }

    /// Takes one change-log entry.
    fn take(&mut self, entry: Entry) {
        let first = std::mem::take(&mut self.fresh);
        let offset = entry.offset;
        self.position = offset + 1;
        match entry.record {
            Record::Change {
                series,
                value,
                quality,
                source_time,
                server_time,
                ..
            } => {
                let server = micros(server_time);
                let time = source_time.map_or(server, micros);
                if offset
                    < self
                        .shared
                        .store
                        .ingested_through(self.shared.store.file_for(time))
                {
                    return;
                }
                let mut buffers = self
                    .shared
                    .buffers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let state = buffers.series.entry(series).or_default();
                let (policy, range) = state.policy.unwrap_or((
                    HistoryPolicy {
                        historizing: true,
                        ..Default::default()
                    },
                    None,
                ));
                if !policy.historizing {
                    return;
                }
                let mut sample = Sample {
                    time,
                    server_time: server,
                    value,
                    quality,
                    flagged: false,
                };
                let in_order = time >= state.newest;
                if time > server.saturating_add(FUTURE_TOLERANCE_US) {
                    sample.flagged = true;
                    self.metrics
                        .flagged
                        .get_or_create(&events::FlagLabels {
                            why: "future".into(),
                        })
                        .inc();
                } else if time < state.newest.saturating_sub(LATE_WINDOW_US) {
                    sample.flagged = true;
                    self.metrics
                        .flagged
                        .get_or_create(&events::FlagLabels {
                            why: "too-old".into(),
                        })
                        .inc();
                } else if !in_order {
                    self.metrics.late.inc();
                }
                if in_order && !sample.flagged {
                    if let Some((last, _)) = &state.last
                        && within_deadband(&policy.deadband, range, last, &sample)
                    {
                        self.metrics.filtered.inc();
                        return;
                    }
                    state.newest = time;
                    state.last = Some((sample.clone(), micros(SystemTime::now())));
                }
                state.buffer.push(sample);
                buffers.note(time);
            }
            Record::Gap {
                reason, lost, at, ..
            } => {
                if first && reason == GapReason::Deleted {
                    return;
                }
                let time = micros(at);
                if offset
                    < self
                        .shared
                        .store
                        .ingested_through(self.shared.store.file_for(time))
                {
                    return;
                }
                self.metrics.gaps.inc();
                let mut buffers = self
                    .shared
                    .buffers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                buffers.gaps.push(StoredGap { time, offset, lost });
                buffers.note(time);
            }
            _ => {}
        }
    }

    /// Stores the last value again for series whose `history_max_interval` has passed.
    fn heartbeats(&mut self) {
        let now = micros(SystemTime::now());
        let mut buffers = self
            .shared
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut added = 0;
        for state in buffers.series.values_mut() {
            let Some((
                HistoryPolicy {
                    historizing: true,
                    max_interval: Some(interval),
                    ..
                },
                _,
            )) = state.policy
            else {
                continue;
            };
            let interval = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
            let Some((last, stored_at)) = &mut state.last else {
                continue;
            };
            if now.saturating_sub(*stored_at) < interval || now <= state.newest {
                continue;
            }
            let sample = Sample {
                time: now,
                server_time: now,
                value: last.value.clone(),
                quality: last.quality,
                flagged: false,
            };
            *stored_at = now;
            *last = sample.clone();
            state.newest = now;
            state.buffer.push(sample);
            added += 1;
        }
        buffers.buffered += added;
        if added > 0 {
            buffers.earliest = Some(buffers.earliest.map_or(now, |e| e.min(now)));
        }
    }

    /// Writes everything buffered into the files, then commits the cursor.
    async fn flush(&mut self) {
        let through = self.position;
        let empty = {
            let buffers = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            buffers.buffered == 0 && buffers.in_flight.is_empty()
        };
        if empty {
            // Nothing to store; the cursor may still move past records that hold no sample.
            self.commit_cursor(through).await;
            return;
        }
        let (writes, samples) = {
            let mut buffers = self
                .shared
                .buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let mut in_flight = std::mem::take(&mut buffers.in_flight);
            for (id, state) in &mut buffers.series {
                in_flight.extend(state.buffer.drain(..).map(|s| (*id, s)));
            }
            let mut gaps = std::mem::take(&mut buffers.in_flight_gaps);
            gaps.append(&mut buffers.gaps);
            buffers.buffered = 0;
            let mut writes: BTreeMap<i64, store::FileWrite> = BTreeMap::new();
            for (id, sample) in &in_flight {
                writes
                    .entry(self.shared.store.file_for(sample.time))
                    .or_default()
                    .samples
                    .entry(*id)
                    .or_default()
                    .push(sample.clone());
            }
            for gap in &gaps {
                writes
                    .entry(self.shared.store.file_for(gap.time))
                    .or_default()
                    .gaps
                    .push(*gap);
            }
            let samples = in_flight.len() as u64;
            buffers.in_flight = in_flight;
            buffers.in_flight_gaps = gaps;
            (writes, samples)
        };
        let shared = Arc::clone(&self.shared);
        let written = tokio::task::spawn_blocking(move || {
            for (start, write) in writes {
                shared.store.write(start, write, through, through)?;
            }
            Ok::<_, HistoryStoreError>(())
        })
        .await;
        match written {
            Ok(Ok(())) => {
                {
                    let mut buffers = self
                        .shared
                        .buffers
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    buffers.in_flight.clear();
                    buffers.in_flight_gaps.clear();
                    buffers.recompute_earliest();
                }
                events::Flushed { samples }.emit(&self.metrics, &self.ready);
                self.commit_cursor(through).await;
            }
            Ok(Err(error)) => events::FlushFailed {
                error: &error.to_string(),
            }
            .emit(&self.metrics, &self.ready),
            Err(error) => events::FlushFailed {
                error: &error.to_string(),
            }
            .emit(&self.metrics, &self.ready),
        }
    }

    async fn commit_cursor(&self, through: u64) {
        let log = self.log.clone();
        let committed =
            tokio::task::spawn_blocking(move || log.commit_cursor(CURSOR, through)).await;
        match committed {
            Ok(Ok(())) => {}
            Ok(Err(error)) => events::FlushFailed {
                error: &error.to_string(),
            }
            .emit(&self.metrics, &self.ready),
            Err(error) => events::FlushFailed {
                error: &error.to_string(),
            }
            .emit(&self.metrics, &self.ready),
        }
    }

    async fn enforce(&self) {
        let shared = Arc::clone(&self.shared);
        let older_than = micros(SystemTime::now())
            .saturating_sub(i64::try_from(self.retention.as_micros()).unwrap_or(i64::MAX));
        let max_disk = self.max_disk;
        let enforced = tokio::task::spawn_blocking(move || {
            let deleted = shared.store.enforce(older_than, max_disk);
            // Files no in-order sample goes to any more: their small chunks merged.
            let compacted = shared
                .store
                .compact_closed(micros(SystemTime::now()).saturating_sub(LATE_WINDOW_US));
            (deleted, compacted, shared.store.disk_bytes())
        })
        .await;
        if let Ok((deleted, compacted, bytes)) = enforced {
            self.metrics.disk_bytes.set(bytes as i64);
            match deleted {
                Ok(0) => {}
                Ok(files) => events::Enforced::Deleted(files).emit(&self.metrics),
                Err(error) => events::Enforced::Failed(&error).emit(&self.metrics),
            }
            match compacted {
                Ok(0) => {}
                Ok(files) => events::Compacted::Files(files).emit(),
                Err(error) => events::Compacted::Failed(&error).emit(),
            }
        }
    }
}

/// Whether `new` is within `deadband` of `last` (same quality, numeric values): not stored.
fn within_deadband(
    deadband: &Deadband,
    range: Option<EuRange>,
    last: &Sample,
    new: &Sample,
) -> bool {
    let threshold = deadband.threshold(range);
    if threshold <= 0.0 || last.quality != new.quality {
        return false;
    }
    let number = |v: &Option<Value>| match v {
        Some(Value::Float(f)) => Some(*f),
        Some(Value::Int(i)) => Some(*i as f64),
        Some(Value::UInt(u)) => Some(*u as f64),
        _ => None,
    };
    match (number(&last.value), number(&new.value)) {
        (Some(a), Some(b)) => (a - b).abs() <= threshold,
        _ => false,
    }
}

/// The historian's folder for the state folder `state_dir`.
pub fn dir_in(state_dir: &Path) -> PathBuf {
    state_dir.join(DIR_NAME)
}

#[cfg(test)]
mod tests;
