//! The change log's files: segments (writing, rotating, cutting a damaged tail, deleting old
//! ones), the series table and the consumers' cursors.
//!
//! Writing follows the write-truth rule of the audit journal (`runtime::journal`): after a failed
//! `fdatasync` the segment is never synced again (Linux may have dropped the dirty pages and
//! cleared the error, so a second sync proves nothing); its unsynced records are named void in a
//! gap record and the log goes on in a new segment.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use super::format::{self, BatchBuilder, Damaged, Entry, FRAME_HEADER, Record, SEGMENT_MAGIC};

/// Largest batch the writer builds, in bytes (and at most a quarter of a segment, so segments
/// keep their size); a bigger hand-off is cut into several batches.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The series table's file name in the log's folder.
pub const SERIES_FILE: &str = "series";

/// The cursors' folder name in the log's folder.
pub const CURSORS_DIR: &str = "cursors";

/// What the change log's files can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The file system has less free space than the log's reserve (nothing was written).
    #[error("change log disk full: {free} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Bytes free.
        free: u64,
        /// The reserve, plus the batch about to be written.
        reserve: u64,
    },
    /// A write found the file system full (`ENOSPC`): like [`Self::Io`], and the log counts
    /// what it misses as a full disk.
    #[error("change log disk full: {0}")]
    NoSpace(String),
    /// A read, write, `fdatasync` or rename failed (the text names the file and the error).
    #[error("change log I/O failed: {0}")]
    Io(String),
    /// A file of the log cannot be understood (a damaged series table, a cursor that is no number).
    #[error("change log damaged: {0}")]
    Damaged(String),
    /// A cursor name that is not 1–64 of `a-z`, `0-9`, `-`, `_`.
    #[error("cursor name `{0}` must be 1 to 64 of a-z, 0-9, - and _")]
    BadCursorName(String),
}

fn io(what: &Path, error: &std::io::Error) -> StoreError {
    let text = format!("{}: {error}", what.display());
    if error.raw_os_error() == Some(libc::ENOSPC) {
        StoreError::NoSpace(text)
    } else {
        StoreError::Io(text)
    }
}

/// How big a segment grows before the next batch starts a new one: an eighth of `max_disk`,
/// from 64 KiB to 64 MiB (so the budget is kept to within one segment).
pub fn segment_bytes(max_disk: u64) -> u64 {
    (max_disk / 8).clamp(64 * 1024, 64 * 1024 * 1024)
}

/// A segment's file name: its first offset, 20 digits, `.log`.
pub fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The segments of `dir`, oldest first: (first offset, path, bytes).
///
/// Errors: the folder cannot be read.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf, u64)>, StoreError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, &e))?;
        let name = entry.file_name();
        let Some(base) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".log"))
            .filter(|n| n.len() == 20)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let size = entry.metadata().map_err(|e| io(&entry.path(), &e))?.len();
        out.push((base, entry.path(), size));
    }
    out.sort_by_key(|(base, _, _)| *base);
    Ok(out)
}

fn open_read(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| io(path, &e))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, &e))
}

/// What scanning one segment found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scanned {
    /// Bytes of whole, intact batches (magic included); where damage starts.
    pub valid_bytes: u64,
    /// The offset after the last intact record (the segment's base when none).
    pub end: u64,
    /// Records in intact batches.
    pub records: u64,
    /// The damage after `valid_bytes`, if any.
    pub damage: Option<Damaged>,
    /// Whether the last intact record is `Stopped`.
    pub ends_stopped: bool,
}

/// Reads segment `path` (first offset `base`) batch by batch, in constant memory beyond one
/// batch, handing each entry to `visit`.
///
/// Errors: the file cannot be read.
pub fn scan(path: &Path, base: u64, visit: &mut dyn FnMut(&Entry)) -> Result<Scanned, StoreError> {
    let file = open_read(path)?;
    let size = file.metadata().map_err(|e| io(path, &e))?.len();
    let mut scanned = Scanned {
        valid_bytes: 0,
        end: base,
        records: 0,
        damage: None,
        ends_stopped: false,
    };
    let mut magic = [0u8; 8];
    if size < 8 {
        scanned.damage = Some(Damaged::Torn {
            need: 8,
            have: size as usize,
        });
        return Ok(scanned);
    }
    file.read_exact_at(&mut magic, 0)
        .map_err(|e| io(path, &e))?;
    if &magic != SEGMENT_MAGIC {
        scanned.damage = Some(Damaged::Corrupted("not a change log segment"));
        return Ok(scanned);
    }
    let mut pos = 8u64;
    let mut frame = Vec::new();
    let mut entries = Vec::new();
    while pos < size {
        let mut header = [0u8; FRAME_HEADER];
        let have = (size - pos).min(FRAME_HEADER as u64) as usize;
        file.read_exact_at(&mut header[..have], pos)
            .map_err(|e| io(path, &e))?;
        let len = match format::frame_len(&header[..have]) {
            Ok(len) if (len as u64) <= size - pos => len,
            Ok(len) => {
                scanned.damage = Some(Damaged::Torn {
                    need: len,
                    have: (size - pos) as usize,
                });
                break;
            }
            Err(damage) => {
                scanned.damage = Some(damage);
                break;
            }
        };
        frame.resize(len, 0);
        file.read_exact_at(&mut frame, pos)
            .map_err(|e| io(path, &e))?;
        entries.clear();
        match format::decode(&frame, &mut entries) {
            Ok(end) if entries.first().is_none_or(|e| e.offset >= scanned.end) => {
                for entry in &entries {
                    visit(entry);
                }
                scanned.records += entries.len() as u64;
                scanned.ends_stopped = matches!(
                    entries.last(),
                    Some(Entry {
                        record: Record::Stopped { .. },
                        ..
                    })
                ) || (entries.is_empty() && scanned.ends_stopped);
                scanned.end = end;
            }
            Ok(_) => {
                scanned.damage = Some(Damaged::Corrupted("offsets go backwards"));
                break;
            }
            Err(damage) => {
                scanned.damage = Some(damage);
                break;
            }
        }
        pos += len as u64;
        scanned.valid_bytes = pos;
    }
    if scanned.damage.is_none() {
        scanned.valid_bytes = size;
    }
    Ok(scanned)
}

/// What opening the log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The offset the next record gets.
    pub next_offset: u64,
    /// Bytes cut off the last segment (a torn or corrupted tail), with what was wrong.
    pub cut: Option<(u64, String)>,
    /// Whether the log was empty or ended with a `Stopped` record (the last daemon stopped cleanly).
    pub clean: bool,
    /// Segments on disk.
    pub segments: usize,
}

/// Free bytes of the file system holding a path.
pub type FreeSpace = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// Settings of the store.
#[derive(Clone)]
pub struct StoreConfig {
    /// The log's folder.
    pub dir: PathBuf,
    /// The budget, bytes: past it the oldest segments are deleted.
    pub max_disk: u64,
    /// Free bytes the file system must keep after each batch ([`reserve_for`]).
    pub reserve_bytes: u64,
    /// Free bytes of the log's file system (`fs4::available_space`; a test seam).
    pub free_space: FreeSpace,
    /// `fdatasync`s still to fail on purpose (a test seam, 0 in the daemon).
    pub fail_syncs: Arc<AtomicU32>,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("dir", &self.dir)
            .field("max_disk", &self.max_disk)
            .field("reserve_bytes", &self.reserve_bytes)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// The daemon's settings for a log in `dir` with budget `max_disk` (bytes) beside a state
    /// folder `state_dir`, where the audit journal keeps `audit_reserve` bytes free
    /// (`[control] audit_reserve`).
    pub fn new(dir: PathBuf, max_disk: u64, state_dir: &Path, audit_reserve: u64) -> Self {
        let reserve_bytes = reserve_for(&dir, state_dir, audit_reserve);
        Self {
            dir,
            max_disk,
            reserve_bytes,
            free_space: Arc::new(|dir| fs4::available_space(dir)),
            fail_syncs: Arc::new(AtomicU32::new(0)),
        }
    }
}

/// The log's free-space reserve: on the file system of the state folder (where the audit log
/// lives) twice the audit's reserve `audit_reserve` (bytes; 128 MiB at the default 64 MiB), so a
/// filling disk stops the log while the audit still has as much again to write into; on a file
/// system of its own (a mount at `<state>/change-log`) none: the log fills it to `ENOSPC`, which
/// it handles like a full disk.
pub fn reserve_for(log_dir: &Path, state_dir: &Path, audit_reserve: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let device = |path: &Path| std::fs::metadata(path).map(|m| m.dev()).ok();
    match (device(log_dir), device(state_dir)) {
        (Some(log), Some(state)) if log != state => 0,
        _ => audit_reserve.saturating_mul(2),
    }
}

/// The open segment being written.
#[derive(Debug)]
struct Current {
    file: File,
    base: u64,
    size: u64,
    /// Whether some write since the last `fdatasync` is not synced yet.
    dirty: bool,
    /// The first offset written since the last `fdatasync`.
    unsynced_from: u64,
}

/// The writing side of the log's folder. Not shared: one writer task owns it.
#[derive(Debug)]
pub struct Store {
    config: StoreConfig,
    segment_bytes: u64,
    current: Option<Current>,
    next_offset: u64,
    /// Every segment on disk: first offset → bytes.
    sizes: BTreeMap<u64, u64>,
    buf: Vec<u8>,
    /// Bytes written to segments since open.
    bytes_written: u64,
}

/// A write that did not reach the log: the records lost and the offsets they spent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotWritten {
    /// Why.
    pub error: StoreError,
    /// Offsets spent by batches that may have reached the file in part (void).
    pub void: std::ops::Range<u64>,
    /// Change records among what was not written.
    pub changes: u64,
}

/// Segments [`Store::enforce_budget`] deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// Segments deleted.
    pub segments: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Offsets deleted that some cursor had not passed (the budget forced it): `first..end`.
    pub unread: Option<std::ops::Range<u64>>,
}

impl Store {
    /// Opens the log in `config.dir` (created `0700` when missing): cuts a torn or corrupted
    /// tail off the last segment (a segment left with no record is removed) and finds the next
    /// offset. Writing always starts a new segment.
    ///
    /// Errors: [`StoreError::Io`] when the folder or a segment cannot be read or cut.
    pub fn open(config: StoreConfig) -> Result<(Self, Opened), StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.dir)
            .map_err(|e| io(&config.dir, &e))?;
        let mut found = segments(&config.dir)?;
        let mut next_offset = 0;
        let mut cut = None;
        let mut clean = true;
        if let Some((base, path, size)) = found.last().cloned() {
            let scanned = scan(&path, base, &mut |_| {})?;
            next_offset = scanned.end;
            clean = scanned.ends_stopped;
            if let Some(damage) = &scanned.damage {
                cut = Some((size - scanned.valid_bytes, damage.to_string()));
            }
            if scanned.records == 0 {
                // Nothing intact in it (a segment begun just before a crash): removed; the one
                // before tells whether the last daemon stopped cleanly.
                std::fs::remove_file(&path).map_err(|e| io(&path, &e))?;
                found.pop();
                sync_dir(&config.dir)?;
                clean = match found.last() {
                    Some((base, path, _)) => {
                        let before = scan(path, *base, &mut |_| {})?;
                        next_offset = next_offset.max(before.end);
                        before.ends_stopped
                    }
                    None => true,
                };
            } else if cut.is_some() {
                let file = OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| io(&path, &e))?;
                file.set_len(scanned.valid_bytes)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| io(&path, &e))?;
                if let Some(last) = found.last_mut() {
                    last.2 = scanned.valid_bytes;
                }
            }
            // A cut tail may have held the `Stopped` record.
            clean = clean && cut.is_none();
        }
        let opened = Opened {
            next_offset,
            cut,
            clean,
            segments: found.len(),
        };
        let store = Self {
            segment_bytes: segment_bytes(config.max_disk),
            config,
            current: None,
            next_offset,
            sizes: found.into_iter().map(|(b, _, s)| (b, s)).collect(),
            buf: Vec::new(),
            bytes_written: 0,
        };
        Ok((store, opened))
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    /// Bytes written to segments since open (magic and frames included).
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Whether the segments on disk take more than the budget.
    pub fn over_budget(&self) -> bool {
        self.disk_bytes() > self.config.max_disk
    }

    /// Segments on disk.
    pub fn segment_count(&self) -> usize {
        self.sizes.len()
    }

    /// Bytes of every segment on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.sizes.values().sum()
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Whether something written is not yet synced.
    pub fn dirty(&self) -> bool {
        self.current.as_ref().is_some_and(|c| c.dirty)
    }

    /// Writes `records` in batches (one `write` each) at the next offsets; returns the offset
    /// after the last. Nothing is synced ([`Self::sync`] does).
    ///
    /// Errors: [`NotWritten`]: the disk is below the reserve (nothing written, no offset spent),
    /// or a write failed (the segment is dropped, the failed batch's offsets are void, and the
    /// records after it are not written either).
    pub fn append(&mut self, records: &[Record], now: SystemTime) -> Result<u64, NotWritten> {
        let mut rest = records;
        let limit = MAX_BATCH_BYTES.min(self.segment_bytes as usize / 4);
        while !rest.is_empty() {
            let mut batch = BatchBuilder::new(std::mem::take(&mut self.buf), self.next_offset, now);
            let mut taken = 0;
            for record in rest {
                batch.push(record);
                taken += 1;
                if batch.len() >= limit {
                    break;
                }
            }
            let first = self.next_offset;
            let end = batch.next_offset();
            // A failed write drops the segment unsynced: whatever of it was not synced is void.
            let unsynced = self.unsynced().start.min(first);
            let frame = batch.finish();
            let not_written = |error, void| NotWritten {
                error,
                void,
                changes: rest
                    .iter()
                    .filter(|r| matches!(r, Record::Change { .. }))
                    .count() as u64,
            };
            if let Err(error) = self.write_frame(&frame, first) {
                self.buf = frame;
                let void = if matches!(error, StoreError::DiskFull { .. }) {
                    first..first
                } else {
                    // The batch may be on disk in part: its offsets are spent.
                    self.next_offset = end;
                    unsynced..end
                };
                return Err(not_written(error, void));
            }
            self.buf = frame;
            self.next_offset = end;
            rest = &rest[taken..];
        }
        Ok(self.next_offset)
    }

    fn write_frame(&mut self, frame: &[u8], first: u64) -> Result<(), StoreError> {
        let free =
            (self.config.free_space)(&self.config.dir).map_err(|e| io(&self.config.dir, &e))?;
        let reserve = self.config.reserve_bytes + frame.len() as u64;
        if free < reserve {
            return Err(StoreError::DiskFull { free, reserve });
        }
        if self
            .current
            .as_ref()
            .is_some_and(|c| c.size > 8 && c.size + frame.len() as u64 > self.segment_bytes)
        {
            // Rotate: the full segment is synced once more (never after a failed sync: then it
            // was dropped already).
            self.sync()?;
            self.current = None;
        }
        if self.current.is_none() {
            self.current = Some(self.new_segment(first)?);
        }
        let Some(current) = self.current.as_mut() else {
            return Err(StoreError::Io("no segment".into()));
        };
        let path = self.config.dir.join(segment_name(current.base));
        if let Err(error) = current.file.write_all(frame) {
            // Never written to (or synced) again.
            self.current = None;
            return Err(io(&path, &error));
        }
        if !current.dirty {
            current.unsynced_from = first;
        }
        current.dirty = true;
        current.size += frame.len() as u64;
        self.bytes_written += frame.len() as u64;
        self.sizes.insert(current.base, current.size);
        Ok(())
    }

    fn new_segment(&mut self, base: u64) -> Result<Current, StoreError> {
        let path = self.config.dir.join(segment_name(base));
        let mut file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| io(&path, &e))?;
        let mut fail = |e: std::io::Error| {
            let _ = std::fs::remove_file(&path);
            io(&path, &e)
        };
        file.write_all(SEGMENT_MAGIC).map_err(&mut fail)?;
        // The new name must reach the disk with the segment's first sync.
        sync_dir(&self.config.dir)?;
        self.sizes.insert(base, 8);
        Ok(Current {
            file,
            base,
            size: 8,
            dirty: false,
            unsynced_from: base,
        })
    }

    /// `fdatasync`s the open segment when something is unsynced.
    ///
    /// Errors: the sync failed: the segment is dropped and never synced again; the caller
    /// records the void range [`Self::unsynced`] returned before (the log goes on in a new
    /// segment with the next write).
    pub fn sync(&mut self) -> Result<(), StoreError> {
        let Some(current) = self.current.as_mut() else {
            return Ok(());
        };
        if !current.dirty {
            return Ok(());
        }
        let injected = self
            .config
            .fail_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let result = if injected {
            Err(std::io::Error::other("injected fdatasync failure"))
        } else {
            current.file.sync_data()
        };
        match result {
            Ok(()) => {
                current.dirty = false;
                Ok(())
            }
            Err(error) => {
                let path = self.config.dir.join(segment_name(current.base));
                self.current = None;
                Err(io(&path, &error))
            }
        }
    }

    /// The offsets written but not yet synced (empty when all are synced).
    pub fn unsynced(&self) -> std::ops::Range<u64> {
        match &self.current {
            Some(c) if c.dirty => c.unsynced_from..self.next_offset,
            _ => self.next_offset..self.next_offset,
        }
    }

    /// Deletes the oldest closed segments while the log is over its budget, or while every
    /// cursor (when there is one) has passed them; never the segment being written.
    ///
    /// Errors: the cursors cannot be read, or a segment cannot be deleted.
    pub fn enforce_budget(&mut self) -> Result<Deleted, StoreError> {
        let cursors = cursors(&self.config.dir)?;
        let slowest = cursors.values().copied().min();
        let mut deleted = Deleted::default();
        let current = self.current.as_ref().map(|c| c.base);
        loop {
            let mut bases = self.sizes.keys().copied();
            let (Some(oldest), next) = (bases.next(), bases.next()) else {
                break;
            };
            if Some(oldest) == current {
                break;
            }
            let end = next.unwrap_or(self.next_offset);
            let read_by_all = slowest.is_some_and(|slowest| slowest >= end);
            let over = self.disk_bytes() > self.config.max_disk;
            if !read_by_all && !over {
                break;
            }
            let path = self.config.dir.join(segment_name(oldest));
            std::fs::remove_file(&path).map_err(|e| io(&path, &e))?;
            let size = self.sizes.remove(&oldest).unwrap_or(0);
            deleted.segments += 1;
            deleted.bytes += size;
            if !read_by_all && slowest.is_some_and(|s| s < end) {
                let from = slowest.unwrap_or(oldest).max(oldest);
                deleted.unread = Some(match deleted.unread {
                    Some(r) => r.start..end,
                    None => from..end,
                });
            }
        }
        Ok(deleted)
    }
}

fn check_cursor_name(name: &str) -> Result<(), StoreError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadCursorName(name.to_owned()))
    }
}

/// Every consumer's committed cursor in the log folder `dir`: name → the offset of the first
/// record it has not consumed yet.
///
/// Errors: the folder cannot be read, or a cursor file holds no number.
pub fn cursors(dir: &Path) -> Result<HashMap<String, u64>, StoreError> {
    let dir = dir.join(CURSORS_DIR);
    let mut out = HashMap::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&dir, &e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io(&dir, &e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if check_cursor_name(&name).is_err() {
            continue; // a temporary file of a commit under way
        }
        let text = std::fs::read_to_string(entry.path()).map_err(|e| io(&entry.path(), &e))?;
        let offset = text
            .trim()
            .parse()
            .map_err(|_| StoreError::Damaged(format!("cursor `{name}` is not an offset")))?;
        out.insert(name, offset);
    }
    Ok(out)
}

/// Commits consumer `name`'s cursor in the log folder `dir`: `offset` is the first record it
/// has not consumed (it will read from there after a restart). Durable when this returns
/// (temporary file, `fsync`, rename, folder `fsync`).
///
/// Errors: [`StoreError::BadCursorName`], or the file cannot be written.
pub fn commit_cursor(dir: &Path, name: &str, offset: u64) -> Result<(), StoreError> {
    check_cursor_name(name)?;
    let folder = dir.join(CURSORS_DIR);
    std::fs::create_dir_all(&folder).map_err(|e| io(&folder, &e))?;
    let tmp = folder.join(format!(".{name}.tmp"));
    let path = folder.join(name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| io(&tmp, &e))?;
    file.write_all(format!("{offset}\n").as_bytes())
        .and_then(|()| file.sync_data())
        .map_err(|e| io(&tmp, &e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, &e))?;
    sync_dir(&folder)
}

/// The persisted series table: property path → series id, in `<dir>/series`, one
/// `<id> <path>` line each. Ids are given once and never reused or changed, so a property keeps
/// its series when the configuration reorders, adds or removes properties (the twin's dense
/// `PropertyId` follows the configuration's order and does not).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesTable {
    by_path: HashMap<String, u32>,
    next: u32,
}

impl SeriesTable {
    /// Reads the table of the log folder `dir` (empty when there is none).
    ///
    /// Errors: the file cannot be read, or a line is not `<id> <path>`.
    pub fn load(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(SERIES_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(&path, &e)),
        };
        let mut table = Self::default();
        for (n, line) in text.lines().enumerate() {
            let parsed = line
                .split_once(' ')
                .and_then(|(id, path)| Some((id.parse::<u32>().ok()?, path)));
            let Some((id, property)) = parsed else {
                // A line torn by a crash can only be the last; it was never synced, so no
                // record names its id.
                if n + 1 == text.lines().count() && !text.ends_with('\n') {
                    break;
                }
                return Err(StoreError::Damaged(format!("series table line {}", n + 1)));
            };
            table.by_path.insert(property.to_owned(), id);
            table.next = table.next.max(id + 1);
        }
        Ok(table)
    }

    /// The id of each of `paths` (in their order), giving new ids to paths not in the table and
    /// appending them to the file (synced before this returns, so no record can name an id
    /// the table lacks).
    ///
    /// Errors: the file cannot be written.
    pub fn assign(&mut self, dir: &Path, paths: &[String]) -> Result<Vec<u32>, StoreError> {
        let mut added = String::new();
        let ids = paths
            .iter()
            .map(|path| {
                *self.by_path.entry(path.clone()).or_insert_with(|| {
                    let id = self.next;
                    self.next += 1;
                    added.push_str(&format!("{id} {path}\n"));
                    id
                })
            })
            .collect();
        if !added.is_empty() {
            let file_path = dir.join(SERIES_FILE);
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&file_path)
                .map_err(|e| io(&file_path, &e))?;
            file.write_all(added.as_bytes())
                .and_then(|()| file.sync_data())
                .map_err(|e| io(&file_path, &e))?;
            sync_dir(dir)?;
        }
        Ok(ids)
    }

    /// Path of each id, for readers.
    pub fn paths(&self) -> HashMap<u32, String> {
        self.by_path
            .iter()
            .map(|(p, id)| (*id, p.clone()))
            .collect()
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verified {
    /// Segments read.
    pub segments: usize,
    /// Records in intact batches.
    pub records: u64,
    /// The first offset on disk and the offset after the last.
    pub offsets: std::ops::Range<u64>,
    /// Gap records: offset, reason, changes lost (when known), void offsets.
    pub gaps: Vec<(
        u64,
        super::format::GapReason,
        Option<u64>,
        std::ops::Range<u64>,
    )>,
    /// Segments whose tail is not intact: file name, bytes after the last intact batch, what is
    /// wrong. In any but the newest segment, a write that failed (a gap record in the next
    /// segment names its offsets); in the newest, a crash's torn write (cut at the next open).
    pub damaged_tails: Vec<(String, u64, String)>,
    /// Offsets that go backwards or repeat from one segment to the next (never written so).
    pub out_of_order: Vec<String>,
}

/// Reads every segment of the log folder `dir`, batch by batch (constant memory), checking
/// each batch's checksum and that offsets rise across the whole log.
///
/// Errors: a segment cannot be read.
pub fn verify(dir: &Path) -> Result<Verified, StoreError> {
    let mut verified = Verified::default();
    let mut last_end: Option<u64> = None;
    for (base, path, size) in segments(dir)? {
        let name = segment_name(base);
        if last_end.is_some_and(|end| base < end) {
            verified.out_of_order.push(format!(
                "{name} starts at offset {base}, before the end of the segment before ({})",
                last_end.unwrap_or(0)
            ));
        }
        let mut gaps = Vec::new();
        let scanned = scan(&path, base, &mut |entry| {
            if let Record::Gap {
                reason, lost, void, ..
            } = &entry.record
            {
                gaps.push((entry.offset, *reason, *lost, void.clone()));
            }
        })?;
        if verified.segments == 0 {
            verified.offsets.start = base;
        }
        verified.segments += 1;
        verified.records += scanned.records;
        verified.gaps.extend(gaps);
        if let Some(damage) = scanned.damage {
            verified
                .damaged_tails
                .push((name, size - scanned.valid_bytes, damage.to_string()));
        }
        verified.offsets.end = scanned.end;
        last_end = Some(scanned.end);
    }
    Ok(verified)
}
