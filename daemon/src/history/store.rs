//! The historian's files: one redb database per time span, so that retention deletes whole files.
//!
//! `<state>/history/<start, Unix seconds, 12 digits>-<span seconds>.redb` holds the chunks whose
//! first sample's SourceTimestamp falls in `start..start + span`, and the gap records dated
//! there. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `chunks` | (series id u32, first sample's time µs i64, sequence u64) | (last sample's time µs i64, samples u32, chunk bytes, [`super::chunk`]) |
//! | `gaps` | (time µs i64, change-log offset u64) | (reason code u8, lost changes u64, 0 = unknown) |
//! | `meta` | `"ingested_through"` | the change-log offset after the last entry whose samples this file holds |
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (its data
//! `fsync`ed before the commit returns); `ingested_through` is in the same transaction, so a
//! restart from an older change-log cursor skips what a file already holds (no duplicates).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::chunk::{self, Sample};

/// A chunk's key: (series, first time µs, sequence).
type ChunkKey = (u32, i64, u64);
/// A chunk: (last time µs, samples, bytes).
type ChunkValue = (i64, u32, &'static [u8]);

/// Chunks by key.
const CHUNKS: TableDefinition<'_, ChunkKey, ChunkValue> = TableDefinition::new("chunks");
/// Gaps: (time µs, offset) → (reason code, lost changes).
const GAPS: TableDefinition<'_, (i64, u64), (u8, u64)> = TableDefinition::new("gaps");
/// Meta: name → number.
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const INGESTED_THROUGH: &str = "ingested_through";
/// Meta: 1 once the file was compacted ([`Store::compact`]).
const COMPACTED: &str = "compacted";

/// The suffix of a compacted file being written (deleted at open: a crash left it unfinished).
const COMPACTING: &str = ".compacting";

/// Samples written per transaction of a compaction (≈ 5–10 MB of chunks: bounds the memory
/// redb holds for it).
const COMPACT_COMMIT_SAMPLES: usize = 4_000_000;

/// Sequence numbers of chunks a compaction writes start here (a flush's are its change-log
/// offset × 2^20 + n: never this high).
const COMPACT_SEQUENCE: u64 = 1 << 63;

/// The file a writer (the historian's flush and retention, `twinloom backup`) holds an exclusive
/// `flock(2)` on while it changes or copies the folder's files.
pub const WRITE_LOCK: &str = "write.lock";

/// Takes the folder's write lock (waiting for it); released when the returned file is dropped.
///
/// Errors: the lock file cannot be opened or locked.
pub fn write_lock(dir: &Path) -> Result<std::fs::File, HistoryStoreError> {
    let path = dir.join(WRITE_LOCK);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    file.lock().map_err(|e| io_error(&path, e))?;
    Ok(file)
}

/// The longest time span one chunk covers: a chunk's first time is at most this before any of
/// its samples, so a read from `t` looks at chunks starting from `t − MAX_CHUNK_SPAN` on.
pub const MAX_CHUNK_SPAN_US: i64 = 2 * 3600 * 1_000_000;

/// Most samples in one chunk.
pub const MAX_CHUNK_SAMPLES: usize = 4096;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum HistoryStoreError {
    /// A file or folder operation failed.
    #[error("{path}: {error}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
    /// redb failed (I/O, a damaged file).
    #[error("{path}: {error}")]
    Db {
        /// The file.
        path: PathBuf,
        /// The error.
        error: redb::Error,
    },
    /// A stored chunk cannot be decoded.
    #[error("{path}: {error}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        error: chunk::Damaged,
    },
}

/// A gap record the historian keeps: changes the change log does not hold, served as a value
/// with `Bad_DataLost` (OPC UA Part 11 §6.3.2, Table 8) at `time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredGap {
    /// When the gap was recorded, µs since the Unix epoch.
    pub time: i64,
    /// The change log's offset of the gap record.
    pub offset: u64,
    /// Changes lost, when known.
    pub lost: Option<u64>,
}

/// What one flush writes into one file.
#[derive(Debug, Default)]
pub struct FileWrite {
    /// Samples per series (any order: they are sorted and cut into chunks here).
    pub samples: BTreeMap<u32, Vec<Sample>>,
    /// Gap records.
    pub gaps: Vec<StoredGap>,
}

/// One file of the store.
#[derive(Debug)]
struct File {
    path: PathBuf,
    db: Arc<Database>,
    span_us: i64,
    ingested_through: u64,
    /// Its chunks were merged ([`Store::compact`]).
    compacted: bool,
}

/// The historian's folder of time-split redb files.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The span of files created from now on, µs.
    span_us: i64,
    /// Open files by start time (µs).
    files: Mutex<BTreeMap<i64, File>>,
    /// Set by [`Store::close`]: nothing is written or opened any more.
    closed: std::sync::atomic::AtomicBool,
}

fn db_error(path: &Path, error: impl Into<redb::Error>) -> HistoryStoreError {
    HistoryStoreError::Db {
        path: path.to_owned(),
        error: error.into(),
    }
}

fn io_error(path: &Path, error: std::io::Error) -> HistoryStoreError {
    HistoryStoreError::Io {
        path: path.to_owned(),
        error,
    }
}

/// The span of history files for `retention`: an eighth of it, from 1 h to 1 day, in whole hours.
pub fn span_for(retention: std::time::Duration) -> std::time::Duration {
    let hours = (retention.as_secs() / 8 / 3600).clamp(1, 24);
    std::time::Duration::from_secs(hours * 3600)
}

/// The start (µs) and span (µs) a file name says.
fn parse_name(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".redb")?;
    let (start, span) = stem.split_once('-')?;
    let (start, span) = (start.parse::<i64>().ok()?, span.parse::<i64>().ok()?);
    (span > 0).then_some((start * 1_000_000, span * 1_000_000))
}

fn file_name(start_us: i64, span_us: i64) -> String {
    format!("{:012}-{}.redb", start_us / 1_000_000, span_us / 1_000_000)
}

impl Store {
    /// Opens (creating) the folder `dir` and every history file in it; new files span `span`.
    ///
    /// Errors: the folder cannot be created or read, or a file cannot be opened by redb.
    pub fn open(dir: &Path, span: std::time::Duration) -> Result<Self, HistoryStoreError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let entry = entry.map_err(|e| io_error(dir, e))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(COMPACTING))
            {
                // A compaction that did not finish: the file it was replacing is whole.
                std::fs::remove_file(entry.path()).map_err(|e| io_error(&entry.path(), e))?;
                continue;
            }
            let Some((start, span_us)) = entry.file_name().to_str().and_then(parse_name) else {
                continue;
            };
            let path = entry.path();
            let file = open_file(&path, span_us)?;
            files.insert(start, file);
        }
        Ok(Self {
            dir: dir.to_owned(),
            span_us: i64::try_from(span.as_micros()).unwrap_or(i64::MAX),
            files: Mutex::new(files),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Closes every file (redb opens a file once per process: a new store in the same process,
    /// after a reload, can then open them) and refuses writes from then on; reads find nothing.
    pub fn close(&self) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        files.clear();
    }

    /// The start (µs) of the file a sample at `time` (µs) goes to: an existing file covering
    /// it, else a new span-aligned one.
    pub fn file_for(&self, time: i64) -> i64 {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((start, file)) = files.range(..=time).next_back()
            && time < start.saturating_add(file.span_us)
        {
            return *start;
        }
        time.div_euclid(self.span_us) * self.span_us
    }

    /// The change-log offset up to which file `start` holds its samples (0 when it does not
    /// exist): a replayed entry before it is already stored.
    pub fn ingested_through(&self, start: i64) -> u64 {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.get(&start).map_or(0, |f| f.ingested_through)
    }

    /// Forgets every file's `ingested_through` (in memory): the change log was replaced (its
    /// offsets start again below what the files hold, e.g. after a restore on another machine),
    /// so no entry of it is already stored.
    pub fn forget_ingested(&self) {
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        for file in files.values_mut() {
            file.ingested_through = 0;
        }
    }

    /// The highest `ingested_through` of any file.
    pub fn max_ingested(&self) -> u64 {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .values()
            .map(|f| f.ingested_through)
            .max()
            .unwrap_or(0)
    }

    /// The time (µs) of the oldest file's start, if any.
    pub fn start_of_archive(&self) -> Option<i64> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.keys().next().copied()
    }

    /// Writes `write` into file `start` (created when missing) in one transaction that also
    /// sets its `ingested_through` to `through`; `sequence` makes chunk keys unique (the
    /// flush's change-log offset). Returns the chunks written.
    ///
    /// Errors: redb cannot write or commit (the samples are then not stored; the caller keeps
    /// its cursor where it was).
    pub fn write(
        &self,
        start: i64,
        write: FileWrite,
        through: u64,
        sequence: u64,
    ) -> Result<usize, HistoryStoreError> {
        let _lock = write_lock(&self.dir)?;
        let (db, path) = {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(io_error(
                    &self.dir,
                    std::io::Error::other("the history store is closed"),
                ));
            }
            let file = match files.entry(start) {
                std::collections::btree_map::Entry::Occupied(file) => file.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let path = self.dir.join(file_name(start, self.span_us));
                    slot.insert(open_file(&path, self.span_us)?)
                }
            };
            (Arc::clone(&file.db), file.path.clone())
        };
        let txn = db.begin_write().map_err(|e| db_error(&path, e))?;
        let mut chunks = 0;
        {
            let mut table = txn.open_table(CHUNKS).map_err(|e| db_error(&path, e))?;
            let mut seq = sequence << 20;
            for (series, mut samples) in write.samples {
                samples.sort_by_key(|s| (s.time, s.server_time));
                chunks += put_chunks(&mut table, series, &samples, &mut seq)
                    .map_err(|e| db_error(&path, e))?;
            }
            let mut gaps = txn.open_table(GAPS).map_err(|e| db_error(&path, e))?;
            for gap in &write.gaps {
                gaps.insert((gap.time, gap.offset), (0u8, gap.lost.unwrap_or(0)))
                    .map_err(|e| db_error(&path, e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| db_error(&path, e))?;
            meta.insert(INGESTED_THROUGH, through)
                .map_err(|e| db_error(&path, e))?;
        }
        txn.commit().map_err(|e| db_error(&path, e))?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get_mut(&start) {
            file.ingested_through = file.ingested_through.max(through);
        }
        Ok(chunks)
    }

    /// The samples of `series` with `range.start <= time < range.end` (µs), from every file, in
    /// no particular order, into `out`; and the gaps dated in the range into `gaps`.
    ///
    /// Errors: a file cannot be read or a chunk decoded.
    pub fn read(
        &self,
        series: u32,
        range: Range<i64>,
        out: &mut Vec<Sample>,
        gaps: &mut Vec<StoredGap>,
    ) -> Result<(), HistoryStoreError> {
        let overlapping: Vec<(Arc<Database>, PathBuf)> = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            files
                .range(..range.end)
                .filter(|(start, file)| {
                    start.saturating_add(file.span_us)
                        > range.start.saturating_sub(MAX_CHUNK_SPAN_US)
                })
                .map(|(_, file)| (Arc::clone(&file.db), file.path.clone()))
                .collect()
        };
        let mut decoded = Vec::new();
        for (db, path) in overlapping {
            let txn = db.begin_read().map_err(|e| db_error(&path, e))?;
            match txn.open_table(CHUNKS) {
                Ok(table) => {
                    let from = (series, range.start.saturating_sub(MAX_CHUNK_SPAN_US), 0);
                    let to = (series, range.end, 0);
                    for item in table.range(from..to).map_err(|e| db_error(&path, e))? {
                        let (_, value) = item.map_err(|e| db_error(&path, e))?;
                        let (last, _, bytes) = value.value();
                        if last < range.start {
                            continue;
                        }
                        decoded.clear();
                        chunk::decode(bytes, &mut decoded).map_err(|error| {
                            HistoryStoreError::Damaged {
                                path: path.clone(),
                                error,
                            }
                        })?;
                        out.extend(
                            decoded
                                .drain(..)
                                .filter(|s| range.start <= s.time && s.time < range.end),
                        );
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(db_error(&path, e)),
            }
            match txn.open_table(GAPS) {
                Ok(table) => {
                    for item in table
                        .range((range.start, 0)..(range.end, 0))
                        .map_err(|e| db_error(&path, e))?
                    {
                        let (key, value) = item.map_err(|e| db_error(&path, e))?;
                        let (time, offset) = key.value();
                        let (_, lost) = value.value();
                        gaps.push(StoredGap {
                            time,
                            offset,
                            lost: (lost > 0).then_some(lost),
                        });
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(db_error(&path, e)),
            }
        }
        Ok(())
    }

    /// Deletes whole files that ended before `older_than` (µs), then the oldest files while the
    /// folder holds more than `max_disk` bytes (never the newest). Returns the files deleted.
    ///
    /// Errors: a file cannot be deleted or measured.
    pub fn enforce(&self, older_than: i64, max_disk: u64) -> Result<usize, HistoryStoreError> {
        let _lock = write_lock(&self.dir)?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut deleted = 0;
        let expired: Vec<i64> = files
            .iter()
            .filter(|(start, file)| start.saturating_add(file.span_us) <= older_than)
            .map(|(start, _)| *start)
            .collect();
        for start in expired {
            if let Some(file) = files.remove(&start) {
                std::fs::remove_file(&file.path).map_err(|e| io_error(&file.path, e))?;
                deleted += 1;
            }
        }
        loop {
            let mut total = 0u64;
            for file in files.values() {
                total += std::fs::metadata(&file.path)
                    .map_err(|e| io_error(&file.path, e))?
                    .len();
            }
            if total <= max_disk || files.len() <= 1 {
                break;
            }
            if let Some((_, file)) = files.pop_first() {
                std::fs::remove_file(&file.path).map_err(|e| io_error(&file.path, e))?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Compacts every file not compacted yet whose span ended before `before` (µs): the
    /// historian calls it with now − [`super::LATE_WINDOW_US`], when no more in-order samples
    /// go there. Returns the files compacted.
    ///
    /// Errors: as [`Self::compact`] (the files before it are compacted).
    pub fn compact_closed(&self, before: i64) -> Result<usize, HistoryStoreError> {
        let closed: Vec<i64> = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            files
                .iter()
                .filter(|(start, f)| !f.compacted && start.saturating_add(f.span_us) <= before)
                .map(|(start, _)| *start)
                .collect()
        };
        let mut done = 0;
        for start in closed {
            if self.compact(start)? {
                done += 1;
            }
        }
        Ok(done)
    }

    /// Rewrites file `start` with each series' samples merged into as few chunks as they fit
    /// ([`MAX_CHUNK_SAMPLES`], [`MAX_CHUNK_SPAN_US`]): a flush every few seconds writes small
    /// chunks, each with its key and B-tree overhead. The new file is written beside the old one
    /// (`<name>.compacting`, transactions of [`COMPACT_COMMIT_SAMPLES`], the last `fsync`ed),
    /// compacted by redb, then renamed over it; a crash before the rename leaves the old file
    /// whole. Reads under way finish on the old file. Returns whether it compacted (false: no
    /// such file, or already done).
    ///
    /// Errors: a file cannot be read, written or renamed, or a chunk decoded.
    pub fn compact(&self, start: i64) -> Result<bool, HistoryStoreError> {
        let _lock = write_lock(&self.dir)?;
        let (old, path) = {
            let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                return Ok(false);
            }
            match files.get(&start) {
                Some(file) if !file.compacted => (Arc::clone(&file.db), file.path.clone()),
                _ => return Ok(false),
            }
        };
        let mut name = path.file_name().unwrap_or_default().to_owned();
        name.push(COMPACTING);
        let temporary = path.with_file_name(name);
        match std::fs::remove_file(&temporary) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&temporary, e)),
        }
        let mut new = Database::create(&temporary).map_err(|e| db_error(&temporary, e))?;
        let read = old.begin_read().map_err(|e| db_error(&path, e))?;
        let mut seq = COMPACT_SEQUENCE;
        let mut pending = 0usize;
        let mut txn = new.begin_write().map_err(|e| db_error(&temporary, e))?;
        let commit_early = |txn: redb::WriteTransaction| -> Result<(), HistoryStoreError> {
            let mut txn = txn;
            txn.set_durability(redb::Durability::None)
                .map_err(|e| db_error(&temporary, e))?;
            txn.commit().map_err(|e| db_error(&temporary, e))
        };
        match read.open_table(CHUNKS) {
            Ok(chunks) => {
                let mut series: Option<u32> = None;
                let mut samples: Vec<Sample> = Vec::new();
                let mut entries = chunks.iter().map_err(|e| db_error(&path, e))?;
                loop {
                    let entry = entries.next().transpose().map_err(|e| db_error(&path, e))?;
                    let next = entry.as_ref().map(|(key, _)| key.value().0);
                    if next != series && !samples.is_empty() {
                        // One series done: its samples in time order, as chunks.
                        samples.sort_by_key(|s| (s.time, s.server_time));
                        let id = series.unwrap_or_default();
                        {
                            let mut table = txn
                                .open_table(CHUNKS)
                                .map_err(|e| db_error(&temporary, e))?;
                            put_chunks(&mut table, id, &samples, &mut seq)
                                .map_err(|e| db_error(&temporary, e))?;
                        }
                        pending += samples.len();
                        samples.clear();
                        if pending >= COMPACT_COMMIT_SAMPLES {
                            commit_early(txn)?;
                            txn = new.begin_write().map_err(|e| db_error(&temporary, e))?;
                            pending = 0;
                        }
                    }
                    let Some((_, value)) = entry else { break };
                    series = next;
                    let (_, _, bytes) = value.value();
                    chunk::decode(bytes, &mut samples).map_err(|error| {
                        HistoryStoreError::Damaged {
                            path: path.clone(),
                            error,
                        }
                    })?;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(db_error(&path, e)),
        }
        {
            match read.open_table(GAPS) {
                Ok(gaps) => {
                    let mut table = txn.open_table(GAPS).map_err(|e| db_error(&temporary, e))?;
                    for item in gaps.iter().map_err(|e| db_error(&path, e))? {
                        let (key, value) = item.map_err(|e| db_error(&path, e))?;
                        table
                            .insert(key.value(), value.value())
                            .map_err(|e| db_error(&temporary, e))?;
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(db_error(&path, e)),
            }
            let through = match read.open_table(META) {
                Ok(meta) => meta
                    .get(INGESTED_THROUGH)
                    .map_err(|e| db_error(&path, e))?
                    .map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(db_error(&path, e)),
            };
            let mut meta = txn.open_table(META).map_err(|e| db_error(&temporary, e))?;
            meta.insert(INGESTED_THROUGH, through)
                .map_err(|e| db_error(&temporary, e))?;
            meta.insert(COMPACTED, 1)
                .map_err(|e| db_error(&temporary, e))?;
        }
        txn.commit().map_err(|e| db_error(&temporary, e))?;
        drop(read);
        while new
            .compact(redb::CompactionMode::Maximum)
            .map_err(|e| db_error(&temporary, e))?
        {}
        std::fs::rename(&temporary, &path).map_err(|e| io_error(&path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&self.dir, e))?;
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = files.get_mut(&start) {
            file.db = Arc::new(new);
            file.compacted = true;
        }
        Ok(true)
    }

    /// Bytes of all files.
    pub fn disk_bytes(&self) -> u64 {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .values()
            .filter_map(|f| std::fs::metadata(&f.path).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Writes `samples` (sorted by time) of `series` as chunks of at most [`MAX_CHUNK_SAMPLES`]
/// samples spanning less than [`MAX_CHUNK_SPAN_US`], keyed from sequence `seq` on. Returns the
/// chunks written.
fn put_chunks(
    table: &mut redb::Table<'_, ChunkKey, ChunkValue>,
    series: u32,
    samples: &[Sample],
    seq: &mut u64,
) -> Result<usize, redb::StorageError> {
    let mut chunks = 0;
    let mut rest = samples;
    while let Some(first) = rest.first() {
        let len = rest
            .iter()
            .take(MAX_CHUNK_SAMPLES)
            .take_while(|s| s.time - first.time < MAX_CHUNK_SPAN_US)
            .count();
        let (head, tail) = rest.split_at(len);
        let bytes = chunk::encode(head);
        let last = head[head.len() - 1].time;
        table.insert(
            (series, first.time, *seq),
            (last, head.len() as u32, bytes.as_slice()),
        )?;
        *seq += 1;
        chunks += 1;
        rest = tail;
    }
    Ok(chunks)
}

fn open_file(path: &Path, span_us: i64) -> Result<File, HistoryStoreError> {
    let db = Database::create(path).map_err(|e| db_error(path, e))?;
    let (ingested_through, compacted) = {
        let txn = db.begin_read().map_err(|e| db_error(path, e))?;
        match txn.open_table(META) {
            Ok(table) => {
                let get = |key| -> Result<u64, HistoryStoreError> {
                    Ok(table
                        .get(key)
                        .map_err(|e| db_error(path, e))?
                        .map_or(0, |v| v.value()))
                };
                (get(INGESTED_THROUGH)?, get(COMPACTED)? == 1)
            }
            Err(redb::TableError::TableDoesNotExist(_)) => (0, false),
            Err(e) => return Err(db_error(path, e)),
        }
    };
    Ok(File {
        path: path.to_owned(),
        db: Arc::new(db),
        span_us,
        ingested_through,
        compacted,
    })
}
