//! A durable, tamper-evident, append-only journal of JSON records: the audit log's store (and,
//! later, history's).
//!
//! On disk, a folder holds segments `<seq of first record, 20 digits>.jsonl` and a head file
//! `head.json`. Each segment is JSON lines; every record carries its sequence number `seq` and
//! `prev`, the SHA-256 (hex) of the line of the record before it in the chain (64 zeros for the
//! first): one chain over the whole journal, continued across segments, so an edited, removed or
//! reordered record breaks it. Sequence numbers rise by one from record to record and are never
//! handed out twice; the only gaps are **void ranges** (below), each explained by the record
//! after it.
//!
//! The head file holds `count`, the sequence number after the last record of the last commit
//! (void numbers are spent, so with void ranges this is more than the number of records), and
//! `hash`, that record's hash. Record `count - 1` must be in the chain with that hash; records
//! after it are the last batch, written before a crash let the head follow (the head is replaced
//! after the segment is synced: it may lag, never run ahead).
//!
//! Writing: [`Journal::append`] queues a record and waits until it is on disk. One writer task
//! takes every record queued meanwhile as one batch (group commit): writes the lines, `fdatasync`s
//! the segment, then replaces the head (temporary file, rename). A segment past
//! [`JournalConfig::segment_bytes`] is closed and the next batch starts a new one. Before each
//! batch the writer checks that the file system keeps [`JournalConfig::reserve_bytes`] free; when
//! it does not the batch is refused ([`JournalError::DiskFull`]) and nothing of it is written.
//!
//! **A failed write, `fdatasync` or head replacement** refuses the batch ([`JournalError::Io`]):
//! its callers are told it is not on disk (the control gate then writes nothing to a device).
//! The segment is dropped and never synced again (after a failed `fdatasync` Linux may have
//! dropped the dirty pages and cleared the error, so a second sync or a read-back proves nothing),
//! and the batch's sequence numbers are spent: whatever of them reached the disk is **void**. For
//! [`JournalConfig::retry_after`] the journal refuses every append without touching the disk
//! ([`JournalError::Suspended`]); the next batch after that starts a new segment whose first
//! record is a `journal-resumed` record:
//! `{"kind":"journal-resumed","time","void":[first,end],"error","failed_commits","seq":end,"prev"}`
//! — `void` the half-open range of spent sequence numbers, `error` the first failure, `prev` the
//! hash of the last record whose sync succeeded (record `first - 1`). If that commit fails too,
//! the range grows and the next attempt names it all. When the writer stops with a failure not
//! yet resumed (shutdown), it tries once more, so a clean stop leaves an honest chain.
//!
//! Reading ([`verify`], [`records`]; one line at a time): a segment whose first record is a `journal-resumed` or
//! `journal-recovered` record with `void: [a, b]`, `seq` b and `prev` the hash of record `a - 1`
//! explains everything of `a..b` before it: records, a torn line or garbage in the earlier
//! segments are void — neither acknowledged nor corruption ([`Verified::void`]). Damage that no
//! such record explains is corruption: [`verify`] names the record.
//!
//! Sealing ([`super::seal`]): when the folder holds a sealing key, the writer appends a
//! `journal-seal` record as each epoch ends and seals the head at every commit; [`verify_with`]
//! with the verification key checks them. Archiving ([`archive`]): whole old segments move to
//! another folder after a `journal-archived` record names where the live chain now starts.
//!
//! Every file is opened with `O_NOFOLLOW`: a symbolic link in the folder is refused.
//!
//! Opening ([`Journal::open`]) reads the head and the segments from the one holding the head's
//! last record on, not the history before (that is [`verify`]'s), and never cuts a record the
//! head counts. Damage beyond what the head
//! counts is the tail of a batch a crash interrupted (nothing in it was acknowledged): cut off. A
//! head that the chain does not reach or match, or damage among the records it counts, makes
//! [`Journal::open`] fail with [`JournalError::Corrupted`] (the control gate then refuses every
//! write) until an operator runs [`recover`] (`twinloom audit recover`): it accepts the intact
//! records as they are and appends, in a new segment, a record stating that decision:
//! `{"kind":"journal-recovered","time","void":[first,end],"head":{"count","hash"}|null,"found",
//! "damage","decision","seq":end,"prev"}`, then rewrites the head.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::Supervisor;
use super::events;
use super::seal::{SEAL, SealChecker, SealingKey, VerifyKey};

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records queued for the writer before `append` waits.
pub const JOURNAL_QUEUE_CAPACITY: usize = 4096;

/// The `kind` of the record that resumes the journal after a failed commit.
pub const RESUMED: &str = "journal-resumed";

/// The `kind` of the record `twinloom audit recover` appends.
pub const RECOVERED: &str = "journal-recovered";

/// The `kind` of the record [`archive`] appends: where the live folder's chain legitimately
/// starts.
pub const ARCHIVED: &str = "journal-archived";

/// The head file's name.
pub const HEAD_FILE: &str = "head.json";

/// The clock the writer reads epochs from (a test seam; the system clock in the daemon).
type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Where and how a journal keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The folder of segments and head file (created when missing).
    pub dir: PathBuf,
    /// A segment is closed once it holds this many bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// Bytes the file system must keep free for a batch to be written. Default 64 MiB.
    pub reserve_bytes: u64,
    /// After a failed commit, appends are refused this long before the journal tries again in a
    /// new segment (a failing disk costs one attempt, and one small segment, per interval).
    /// Default 1 s.
    pub retry_after: Duration,
}

impl JournalConfig {
    /// Defaults for a journal in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            reserve_bytes: 64 * 1024 * 1024,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Why a journal cannot be opened or a record was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing failed.
    #[error("journal I/O failed: {0}")]
    Io(String),
    /// A commit failed within [`JournalConfig::retry_after`]: appends are refused until then.
    #[error("journal suspended after a failed commit: {0}")]
    Suspended(String),
    /// The file system has less free space than the reserve.
    #[error("journal disk full: {free} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Free bytes.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// A record is damaged and nothing explains it, or the head does not match the records.
    #[error("journal corrupted: {0}")]
    Corrupted(String),
    /// The sealing key or a verification key is missing, malformed or does not fit.
    #[error("journal sealing: {0}")]
    Sealing(String),
    /// [`recover`] found an intact journal.
    #[error("the journal is intact: nothing to recover")]
    Intact,
    /// The record is not a JSON object.
    #[error("a journal record must be a JSON object")]
    NotAnObject,
    /// The writer has stopped.
    #[error("the journal is closed")]
    Closed,
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "an adaptor for map_err, which hands the error over"
)]
fn io(error: std::io::Error) -> JournalError {
    JournalError::Io(error.to_string())
}

/// The hash of a record's line, hex.
pub fn line_hash(line: &str) -> String {
    format!("{:x}", Sha256::digest(line.as_bytes()))
}

fn now() -> String {
    now_at(SystemTime::now())
}

/// The head file's content: `count` is the sequence number after the last committed record,
/// `hash` that record's hash; when the journal is sealed, `key` (the key id), `epoch` and `seal`
/// (HMAC-SHA256 of epoch, count and hash with that epoch's sealing key, [`super::seal`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Head {
    count: u64,
    hash: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    epoch: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seal: Option<String>,
}

impl Head {
    /// The head of `count` records whose last has `hash`, sealed with `key` when there is one.
    fn new(count: u64, hash: String, key: Option<&SealingKey>) -> Self {
        Self {
            count,
            key: key.map(|k| k.id().to_owned()),
            epoch: key.map(SealingKey::epoch),
            seal: key.map(|k| k.seal_head(count, &hash)),
            hash,
        }
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
}

/// The sequence number a segment's name gives (its first record's).
fn segment_seq(segment: &Path) -> u64 {
    segment
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Opens `path` for reading, refusing a symbolic link (a link planted in the journal's folder
/// must not make the journal read another file; [`super::trusted::open_no_follow`]).
fn open_read(path: &Path) -> std::io::Result<File> {
    super::trusted::open_no_follow(path)
}

/// The segments of `dir`, in order.
fn segments(dir: &Path) -> Result<Vec<PathBuf>, JournalError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn read_head(dir: &Path) -> Result<Option<Head>, JournalError> {
    let mut bytes = Vec::new();
    match open_read(&dir.join(HEAD_FILE)).and_then(|mut f| f.read_to_end(&mut bytes)) {
        Ok(_) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| JournalError::Corrupted(format!("{HEAD_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JournalError::Io(format!("{HEAD_FILE}: {e}"))),
    }
}

/// Replaces the head file (temporary file, rename); with `durable`, also syncs the file and the
/// folder.
fn write_head(dir: &Path, head: &Head, durable: bool) -> Result<(), JournalError> {
    let temporary = dir.join("head.json.partial");
    let text = serde_json::to_vec(head).map_err(|e| JournalError::Io(e.to_string()))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)
        .map_err(io)?;
    file.write_all(&text).map_err(io)?;
    if durable {
        file.sync_all().map_err(io)?;
    }
    drop(file);
    std::fs::rename(&temporary, dir.join(HEAD_FILE)).map_err(io)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A damaged record: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// Its line, from 1.
    pub line: u64,
    /// The sequence number the line should hold.
    pub record: u64,
    /// What is wrong.
    pub why: String,
    /// Byte offset of the line in the segment.
    offset: u64,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} ({}, line {}): {}",
            self.record,
            self.segment.display(),
            self.line,
            self.why
        )
    }
}

/// Sequence numbers `from..to` that are void: refused when they were written (a failed commit)
/// or given up by an operator ([`recover`]), explained by record `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Void {
    /// The first void sequence number.
    pub from: u64,
    /// One past the last: the sequence number of the record that explains the range.
    pub to: u64,
    /// That record's kind: [`RESUMED`] or [`RECOVERED`].
    pub kind: String,
    /// Its `error` (a failed commit) or `decision` (a recovery).
    pub why: String,
}

/// What a walk along the chain found.
#[derive(Debug, Clone, PartialEq)]
struct Walk {
    /// Intact records read.
    records: u64,
    /// The first record read: its sequence number and `prev` (0 and [`GENESIS`] from the start
    /// of the chain).
    start: (u64, String),
    /// The hash of the last intact record (the start's `prev` when none).
    last_hash: String,
    /// The sequence number after the last intact record.
    next_seq: u64,
    /// The kind of the last intact record.
    last_kind: Option<String>,
    /// The void ranges, in order.
    void: Vec<Void>,
    /// The first damage that nothing explains, if any (nothing after it is read).
    damage: Option<Damage>,
    /// Every segment file of the folder.
    segments: Vec<PathBuf>,
    /// Segment files read.
    read: usize,
}

/// A segment that starts with a resume or recovery record: `void: [from, to]`, `seq` `to`.
#[derive(Debug, Clone, Copy)]
struct Explains {
    segment: usize,
    from: u64,
    to: u64,
}

/// The void range a resume or recovery record names, if `record` is one (`seq` = its end).
fn names_void(record: &Map<String, Value>) -> Option<(u64, u64)> {
    let kind = record.get("kind").and_then(Value::as_str)?;
    if kind != RESUMED && kind != RECOVERED {
        return None;
    }
    let void = record.get("void")?.as_array()?;
    let (from, to) = (void.first()?.as_u64()?, void.get(1)?.as_u64()?);
    (from <= to && record.get("seq").and_then(Value::as_u64) == Some(to)).then_some((from, to))
}

/// The first line of `segment` as a JSON object, if it is a whole one.
fn first_record(segment: &Path) -> Result<Option<Map<String, Value>>, JournalError> {
    let mut first = String::new();
    if BufReader::new(open_read(segment).map_err(io)?)
        .read_line(&mut first)
        .is_err()
    {
        return Ok(None);
    }
    Ok(first
        .strip_suffix('\n')
        .and_then(|text| serde_json::from_str(text).ok()))
}

/// The segments from `from` on whose first line is a resume or recovery record (one line read
/// per segment).
fn explaining(segments: &[PathBuf], from: usize) -> Result<Vec<Explains>, JournalError> {
    let mut found = Vec::new();
    for (segment, path) in segments.iter().enumerate().skip(from) {
        if let Some((from, to)) = first_record(path)?.as_ref().and_then(names_void) {
            found.push(Explains { segment, from, to });
        }
    }
    Ok(found)
}

/// Told each intact record in chain order with its line's hash; an error stops the walk.
type Visit<'a> = dyn FnMut(&Map<String, Value>, &str) -> Result<(), JournalError> + 'a;

/// Walks the chain of `segments` from segment `from` to the end, one line at a time (memory: one
/// line, the void ranges and one entry per explaining segment), checking that every record
/// continues it, up to the first damage nothing explains. The walk starts at the first record of
/// segment `from` as it is (its `seq` is the segment's name, its `prev` taken as it stands),
/// except that segment 0 starts at [`GENESIS`]: checking where it starts is the caller's.
///
/// Errors: a segment cannot be opened or read (a symbolic link among them); what `visit` returns.
fn walk(segments: Vec<PathBuf>, from: usize, visit: &mut Visit<'_>) -> Result<Walk, JournalError> {
    let start = match segments.get(from) {
        None => (0, GENESIS.to_owned()),
        Some(segment) if segment_seq(segment) == 0 => (0, GENESIS.to_owned()),
        Some(segment) => (
            segment_seq(segment),
            first_record(segment)?
                .and_then(|r| r.get("prev").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_default(),
        ),
    };
    let explains = explaining(&segments, from)?;
    let mut scan = Walk {
        records: 0,
        last_hash: start.1.clone(),
        next_seq: start.0,
        start,
        last_kind: None,
        void: Vec::new(),
        damage: None,
        segments,
        read: 0,
    };
    let mut index = from;
    'segments: while index < scan.segments.len() {
        let segment = scan.segments[index].clone();
        let mut reader = BufReader::new(open_read(&segment).map_err(io)?);
        scan.read += 1;
        let (mut offset, mut number) = (0u64, 0u64);
        let mut line = String::new();
        loop {
            // A later segment starting with a resume or recovery record whose range starts here
            // (the one with the widest range when a resume failed and was resumed again):
            // the rest up to it is void. At a segment's start, the segment itself may be it.
            let skip_to = explains
                .iter()
                .filter(|e| {
                    e.from == scan.next_seq
                        && (e.segment > index || (e.segment == index && number == 0))
                })
                .max_by_key(|e| (e.to, e.segment));
            if let Some(e) = skip_to
                && e.segment != index
            {
                index = e.segment;
                continue 'segments;
            }
            line.clear();
            let read = match reader.read_line(&mut line) {
                Ok(read) => read,
                Err(e) => {
                    // Not UTF-8: damaged from here.
                    scan.damage = Some(Damage {
                        segment,
                        line: number + 1,
                        record: scan.next_seq,
                        why: e.to_string(),
                        offset,
                    });
                    break 'segments;
                }
            };
            if read == 0 {
                break;
            }
            number += 1;
            match check_line(&line, scan.next_seq, &scan.last_hash, number == 1) {
                Ok(parsed) => {
                    let seq = parsed.get("seq").and_then(Value::as_u64).unwrap_or(0);
                    if number == 1
                        && let Some((from, to)) = names_void(&parsed)
                    {
                        scan.void.push(Void {
                            from,
                            to,
                            kind: parsed
                                .get("kind")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            why: parsed
                                .get("error")
                                .or_else(|| parsed.get("decision"))
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        });
                    }
                    scan.last_hash = line_hash(line.trim_end_matches('\n'));
                    scan.next_seq = seq + 1;
                    scan.records += 1;
                    scan.last_kind = parsed
                        .get("kind")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    visit(&parsed, &scan.last_hash)?;
                }
                Err(why) => {
                    scan.damage = Some(Damage {
                        segment,
                        line: number,
                        record: scan.next_seq,
                        why,
                        offset,
                    });
                    break 'segments;
                }
            }
            offset += read as u64;
        }
        index += 1;
    }
    Ok(scan)
}

/// Checks one line as record `record` following `prev`; the first line of a segment may be a
/// resume or recovery record whose void range starts at `record`.
fn check_line(
    line: &str,
    record: u64,
    prev: &str,
    first_in_segment: bool,
) -> Result<Map<String, Value>, String> {
    let Some(text) = line.strip_suffix('\n') else {
        return Err("the line has no end (a torn write)".into());
    };
    let parsed: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    let explained = first_in_segment && names_void(&parsed).is_some_and(|(from, _)| from == record);
    if !explained && parsed.get("seq").and_then(Value::as_u64) != Some(record) {
        return Err(format!(
            "seq is {}, expected {record}",
            parsed.get("seq").map_or("missing".into(), Value::to_string)
        ));
    }
    if parsed.get("prev").and_then(Value::as_str) != Some(prev) {
        return Err("prev is not the hash of the record before: the chain is broken".into());
    }
    Ok(parsed)
}

/// Reads every intact record of the journal in `dir` in chain order, up to the first damage that
/// nothing explains, without checking the head (e.g. while a daemon writes). Memory grows with
/// the journal: for tests and small journals; [`verify_with`] streams.
///
/// Errors: the folder or a segment cannot be read.
pub fn records(dir: &Path) -> Result<Vec<Map<String, Value>>, JournalError> {
    let mut records = Vec::new();
    walk(segments(dir)?, 0, &mut |record, _| {
        records.push(record.clone());
        Ok(())
    })?;
    Ok(records)
}

/// Bytes [`tail`] reads at a time, from a segment's end backwards.
const TAIL_BLOCK: u64 = 64 * 1024;

/// The last `n` whole records of the journal in `dir`, oldest first, reading each segment from
/// its end backwards (the last segment first) — what a display of the latest records needs,
/// however long the journal. Nothing is checked: a line that is not a JSON object, and an
/// unfinished last line (a write under way), are skipped; [`verify`] is what checks the chain.
/// Takes no lock: a daemon may be appending.
///
/// Errors: the folder or a segment cannot be read.
pub fn tail(dir: &Path, n: usize) -> Result<Vec<Map<String, Value>>, JournalError> {
    use std::io::{Seek, SeekFrom};
    let mut newest_first: Vec<Map<String, Value>> = Vec::new();
    for segment in segments(dir)?.iter().rev() {
        if newest_first.len() >= n {
            break;
        }
        let mut file = open_read(segment).map_err(io)?;
        let mut end = file.metadata().map_err(io)?.len();
        // Bytes after the last line feed seen so far (the start of a line read in the next block).
        let mut carry: Vec<u8> = Vec::new();
        let mut last_line = true;
        while newest_first.len() < n {
            let start = end.saturating_sub(TAIL_BLOCK);
            let mut block = vec![0; usize::try_from(end - start).unwrap_or(0)];
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            file.read_exact(&mut block).map_err(io)?;
            block.extend_from_slice(&carry);
            let mut lines: Vec<&[u8]> = block.split(|&b| b == b'\n').collect();
            // The piece after the file's last line feed is an unfinished line (or empty); while
            // no line feed is found it goes on in the block before.
            if last_line {
                lines.pop();
                last_line = lines.is_empty() && start > 0;
            }
            // The first piece may be the end of a line that starts in an earlier block.
            let first = if start > 0 && !lines.is_empty() {
                lines.remove(0).to_vec()
            } else {
                Vec::new()
            };
            for line in lines.iter().rev() {
                if newest_first.len() >= n {
                    break;
                }
                if let Ok(record) = serde_json::from_slice::<Map<String, Value>>(line) {
                    newest_first.push(record);
                }
            }
            if start == 0 {
                break;
            }
            carry = first;
            end = start;
        }
    }
    newest_first.reverse();
    Ok(newest_first)
}

/// What the seals of a journal say, checked with the verification keys given to [`verify_with`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sealing {
    /// Seal records checked.
    pub seals: u64,
    /// The epoch of the first and of the last seal.
    pub epochs: Option<(u64, u64)>,
    /// The sequence number of the last seal.
    pub last_seal: Option<u64>,
    /// Records after the last seal (the current epoch's, or a crash's): the chain vouches for
    /// them, no seal does yet. All records when there is no seal.
    pub unsealed_tail: u64,
    /// Epochs `[from, to)` between two seals of one key that have no seal: the daemon was not
    /// running then, or records were removed by someone holding a later key. At most
    /// [`MAX_GAPS`] are listed; `more_gaps` counts the rest.
    pub gaps: Vec<(u64, u64)>,
    /// Gaps beyond [`MAX_GAPS`].
    pub more_gaps: u64,
    /// The epoch the head was sealed in.
    pub head_epoch: u64,
}

/// Gaps between seals listed by [`Sealing::gaps`].
pub const MAX_GAPS: usize = 32;

/// What [`verify`] found in an intact journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Intact records.
    pub records: u64,
    /// The void ranges (refused commits, recoveries), in order.
    pub void: Vec<Void>,
    /// Segment files.
    pub segments: usize,
    /// The sequence number of the first record: 0, or where an [`ARCHIVED`] record says the
    /// folder's chain starts after older segments were archived.
    pub start: u64,
    /// Seal records in the chain (checked or not).
    pub seal_records: u64,
    /// With verification keys, what the seals say; `None` for a chain-only check.
    pub sealing: Option<Sealing>,
}

/// Checks the journal in `dir`, chain only: [`verify_with`] without keys.
///
/// Errors: as [`verify_with`].
pub fn verify(dir: &Path) -> Result<Verified, JournalError> {
    verify_with(dir, &[], &mut |_| {})
}

/// What [`verify_collect`] found: the report and every record.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// What [`verify`] says.
    pub verified: Verified,
    /// Every intact record, in order.
    pub records: Vec<Map<String, Value>>,
}

/// [`verify`], collecting every record (memory grows with the journal: for tests and tools).
///
/// Errors: as [`verify_with`].
pub fn verify_collect(dir: &Path) -> Result<Collected, JournalError> {
    let mut records = Vec::new();
    let verified = verify_with(dir, &[], &mut |record| records.push(record.clone()))?;
    Ok(Collected { verified, records })
}

/// Checks the journal in `dir`, streaming it segment by segment and record by record (memory does
/// not grow with the journal): every record continues the chain (void ranges explained by the
/// record after them); a chain that does not start at record 0 starts where an [`ARCHIVED`]
/// record says; the head file exists and its count and hash match a record (records after the
/// head are the last batch, written before a crash let the head follow). With `keys` (the
/// verification keys [`super::seal::setup`] printed), also every seal record and the head's seal:
/// a journal changed, cut or re-chained without the sealing key fails here even when its chain
/// holds. `visit` is told every intact record in order.
///
/// Errors: [`JournalError::Corrupted`] naming the first damaged record that nothing explains
/// (with segment and line), the head that is missing or that the records do not reach or match,
/// a start no archive record explains, or (with keys) the first seal that does not match, a seal
/// of a key not given, a head that is not sealed or whose seal does not match, no seal at all;
/// [`JournalError::Io`] when a file cannot be read.
pub fn verify_with(
    dir: &Path,
    keys: &[VerifyKey],
    visit: &mut dyn FnMut(&Map<String, Value>),
) -> Result<Verified, JournalError> {
    let head = read_head(dir)?.ok_or_else(|| {
        JournalError::Corrupted(format!(
            "{HEAD_FILE} is missing: without it a cut-off tail cannot be told from an intact journal (the daemon writes it at every commit)"
        ))
    })?;
    let mut checkers: Vec<SealChecker> = keys.iter().map(VerifyKey::checker).collect();
    let mut sealing = Sealing::default();
    let mut last_epoch: Option<(String, u64)> = None;
    let mut seal_records = 0;
    let mut counted_hash = None;
    let mut archived_starts: Vec<(u64, String)> = Vec::new();
    let mut visit_one = |record: &Map<String, Value>, hash: &str| -> Result<(), JournalError> {
        let seq = record.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if Some(seq) == head.count.checked_sub(1) {
            counted_hash = Some(hash.to_owned());
        }
        match record.get("kind").and_then(Value::as_str) {
            Some(SEAL) => {
                seal_records += 1;
                if !checkers.is_empty() {
                    let bad = |why: String| JournalError::Corrupted(format!("record {seq}: {why}"));
                    let id = record.get("key").and_then(Value::as_str).unwrap_or("");
                    let epoch = record.get("epoch").and_then(Value::as_u64);
                    let seal = record.get("seal").and_then(Value::as_str);
                    let prev = record.get("prev").and_then(Value::as_str).unwrap_or("");
                    let (Some(epoch), Some(seal)) = (epoch, seal) else {
                        return Err(bad("a seal record without its epoch or seal".into()));
                    };
                    let checker = checkers.iter_mut().find(|c| c.id() == id).ok_or_else(|| {
                        bad(format!(
                            "sealed with key {id}, not with a verification key given ({})",
                            keys.iter()
                                .map(VerifyKey::id)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    })?;
                    checker.check_record(epoch, seq, prev, seal).map_err(bad)?;
                    if let Some((last_id, last)) = &last_epoch
                        && last_id == id
                        && epoch > last + 1
                    {
                        if sealing.gaps.len() < MAX_GAPS {
                            sealing.gaps.push((last + 1, epoch));
                        } else {
                            sealing.more_gaps += 1;
                        }
                    }
                    last_epoch = Some((id.to_owned(), epoch));
                    sealing.seals += 1;
                    sealing.epochs = Some((sealing.epochs.map_or(epoch, |(f, _)| f), epoch));
                    sealing.last_seal = Some(seq);
                    sealing.unsealed_tail = 0;
                    visit(record);
                    return Ok(());
                }
            }
            Some(ARCHIVED) => {
                if let Some(kept) = record.get("kept_from")
                    && let (Some(seq), Some(prev)) = (
                        kept.get("seq").and_then(Value::as_u64),
                        kept.get("prev").and_then(Value::as_str),
                    )
                {
                    archived_starts.push((seq, prev.to_owned()));
                }
            }
            _ => {}
        }
        sealing.unsealed_tail += 1;
        visit(record);
        Ok(())
    };
    let walked = walk(segments(dir)?, 0, &mut visit_one)?;
    if let Some(damage) = &walked.damage {
        return Err(JournalError::Corrupted(damage.to_string()));
    }
    if walked.start.0 != 0 && !archived_starts.contains(&walked.start) {
        return Err(JournalError::Corrupted(format!(
            "the chain starts at record {}, and no archive record in it says so: records before {} were removed",
            walked.start.0, walked.start.0
        )));
    }
    check_head(&head, &walked, counted_hash.as_deref())?;
    if !keys.is_empty() {
        let (Some(id), Some(epoch), Some(seal)) = (&head.key, head.epoch, &head.seal) else {
            return Err(JournalError::Corrupted(if sealing.seals == 0 {
                format!(
                    "nothing in {} is sealed: no seal record and an unsealed head (was `twinloom audit setup-keys` run, and has the daemon written since?)",
                    dir.display()
                )
            } else {
                "the head is not sealed, yet the journal is: the head was rewritten without the sealing key".into()
            }));
        };
        let checker = checkers.iter_mut().find(|c| c.id() == id).ok_or_else(|| {
            JournalError::Corrupted(format!(
                "the head is sealed with key {id}, not with a verification key given"
            ))
        })?;
        checker
            .check_head(epoch, head.count, &head.hash, seal)
            .map_err(JournalError::Corrupted)?;
        sealing.head_epoch = epoch;
    }
    Ok(Verified {
        records: walked.records,
        segments: walked.segments.len(),
        void: walked.void,
        start: walked.start.0,
        seal_records,
        sealing: (!keys.is_empty()).then_some(sealing),
    })
}

/// The head against a walk: record `count - 1` is one of its intact records (`counted_hash` its
/// hash, when the walk met it) and has the head's hash.
fn check_head(head: &Head, walked: &Walk, counted_hash: Option<&str>) -> Result<(), JournalError> {
    let Some(last) = head.count.checked_sub(1) else {
        return Ok(());
    };
    let Some(found) = counted_hash else {
        return Err(JournalError::Corrupted(if head.count > walked.next_seq {
            format!(
                "the head says {} records, the journal has {}: records {}..{} were cut off",
                head.count, walked.next_seq, walked.next_seq, head.count
            )
        } else {
            format!("the head counts record {last}, which is void")
        }));
    };
    if found != head.hash {
        return Err(JournalError::Corrupted(format!(
            "record {last} does not have the hash the head holds"
        )));
    }
    Ok(())
}

/// What [`recover`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// What was wrong.
    pub problem: String,
    /// Intact records accepted as they are (sequence numbers below `void.0`).
    pub void: (u64, u64),
    /// The recovery record's sequence number (`void.1`).
    pub seq: u64,
}

/// Writes `line` (record `seq`) alone into a new segment of `dir`, syncs it and the folder, and
/// rewrites the head to it (sealed with the folder's sealing key, if it has one), durably.
///
/// Errors: [`JournalError::Io`]; [`JournalError::Sealing`] when the sealing state does not parse.
fn append_alone(dir: &Path, seq: u64, line: &str) -> Result<(), JournalError> {
    let key = SealingKey::load(dir)?;
    let path = dir.join(segment_name(seq));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(io)?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    sync_dir(dir)?;
    write_head(
        dir,
        &Head::new(seq + 1, line_hash(line), key.as_ref()),
        true,
    )
}

/// For an operator, after [`Journal::open`] refused the journal in `dir` (a head the records do
/// not reach or match, damage nothing explains, a head file that does not parse): accepts the
/// intact records as they are and appends, in a new segment, a [`RECOVERED`] record chained to
/// the last of them that states the decision (what the head said, what the journal holds, the
/// damage, the void range: sequence numbers from the damage up to past any the head or a segment
/// names, so none is handed out twice); syncs it and rewrites the head to match (sealed, when the
/// folder has a sealing key). Afterwards [`verify`] passes and the journal opens. Run it only
/// while no daemon has the journal open.
///
/// Errors: [`JournalError::Intact`] when there is nothing to recover; reading or writing failed
/// ([`JournalError::Io`]).
pub fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    let (head, head_error) = match read_head(dir) {
        Ok(head) => (head, None),
        Err(JournalError::Corrupted(why)) => (None, Some(why)),
        Err(other) => return Err(other),
    };
    let counted = head.as_ref().and_then(|h| h.count.checked_sub(1));
    let mut counted_hash = None;
    let walked = walk(segments(dir)?, 0, &mut |record, hash| {
        if record.get("seq").and_then(Value::as_u64) == counted && counted.is_some() {
            counted_hash = Some(hash.to_owned());
        }
        Ok(())
    })?;
    let head_check = match &head {
        Some(head) => check_head(head, &walked, counted_hash.as_deref()),
        None => Err(JournalError::Corrupted(format!("{HEAD_FILE} is missing"))),
    };
    let problem = match (&head_error, &walked.damage, head_check) {
        (Some(why), _, _) => why.clone(),
        (None, Some(damage), _) => damage.to_string(),
        (None, None, Err(error)) if walked.records > 0 || head.is_some() => error.to_string(),
        (None, None, _) => return Err(JournalError::Intact),
    };
    // Past every sequence number the head or any segment may hold: a segment's records are
    // numbered from its name, one per line.
    let mut end = walked.next_seq.max(head.as_ref().map_or(0, |h| h.count));
    for segment in &walked.segments {
        let mut lines = 0u64;
        for line in BufReader::new(open_read(segment).map_err(io)?).split(b'\n') {
            if !line.map_err(io)?.is_empty() {
                lines += 1;
            }
        }
        // Past the segment's name too: a new segment must sort after every one there is.
        end = end.max(segment_seq(segment) + lines.max(1));
    }
    let from = walked.next_seq;
    let decision = if from == end {
        format!("the records before {from} are accepted as they are")
    } else {
        format!(
            "the records before {from} are accepted as they are; sequence numbers {from}..{end} are void"
        )
    };
    let record = json!({
        "kind": RECOVERED,
        "time": now(),
        "void": [from, end],
        "head": head.as_ref().map(|h| json!({ "count": h.count, "hash": h.hash })),
        "head_error": head_error,
        "found": from,
        "damage": problem,
        "decision": decision,
        "seq": end,
        "prev": walked.last_hash,
    });
    append_alone(dir, end, &record.to_string())?;
    Ok(Recovered {
        problem,
        void: (from, end),
        seq: end,
    })
}

/// What [`archive`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archived {
    /// Segment files moved.
    pub segments: usize,
    /// The sequence numbers they held: `[first, kept_from)`.
    pub records: (u64, u64),
    /// The archive record's sequence number (none when nothing was old enough).
    pub seq: Option<u64>,
}

/// The `time` of the last record of `segment` that parses and has one.
fn last_time(segment: &Path) -> Result<Option<SystemTime>, JournalError> {
    let mut last = None;
    for line in BufReader::new(open_read(segment).map_err(io)?).lines() {
        let line = line.map_err(io)?;
        let time = serde_json::from_str::<Map<String, Value>>(&line)
            .ok()
            .and_then(|r| r.get("time").and_then(Value::as_str).map(str::to_owned))
            .and_then(|t| humantime::parse_rfc3339_weak(&t).ok());
        if time.is_some() {
            last = time;
        }
    }
    Ok(last)
}

/// Moves `from` to `to`: a rename, or across file systems a copy (synced) and a removal.
fn move_file(from: &Path, to: &Path) -> Result<(), JournalError> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let mut source = open_read(from).map_err(io)?;
            let mut target = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(to)
                .map_err(io)?;
            std::io::copy(&mut source, &mut target)
                .and_then(|_| target.sync_all())
                .map_err(io)?;
            std::fs::remove_file(from).map_err(io)
        }
        Err(e) => Err(io(e)),
    }
}

/// For an operator, with the daemon stopped: moves the whole segments of the journal in `dir`
/// whose every record is older than `before` (by the last record's `time`; never the last
/// segment) to the folder `to` (created when missing), oldest first, and records the archive
/// point in the chain first: an [`ARCHIVED`] record
/// `{"kind":"journal-archived","time","before","to","segments","records":[first,kept],
/// "kept_from":{"seq","prev"},"seq","prev"}` in a new segment, the head rewritten (sealed with
/// the folder's sealing key, if any). [`verify`] of `dir` then accepts `kept_from` as the
/// chain's start; `to` gets its own head, so it verifies alone too (archive into the same folder
/// each time: its chain then continues). A crash before the move leaves an archive record and
/// every segment: run it again.
///
/// Errors: [`JournalError::Corrupted`] when the journal does not verify (nothing is moved);
/// [`JournalError::Io`].
pub fn archive(dir: &Path, before: SystemTime, to: &Path) -> Result<Archived, JournalError> {
    verify(dir)?;
    let all = segments(dir)?;
    // The oldest segments, all older than `before`, the one after each starting with a whole
    // record (the new start).
    let mut moving = 0;
    let mut kept_from = None;
    while moving + 1 < all.len() {
        if last_time(&all[moving])?.is_none_or(|t| t >= before) {
            break;
        }
        let Some(next) = first_record(&all[moving + 1])? else {
            break;
        };
        let (Some(seq), Some(prev)) = (
            next.get("seq").and_then(Value::as_u64),
            next.get("prev").and_then(Value::as_str),
        ) else {
            break;
        };
        // The archive's head: the last intact record before the kept start (before a void
        // range the kept start's resume record names).
        let count = names_void(&next).map_or(seq, |(from, _)| from);
        kept_from = Some((seq, prev.to_owned(), count));
        moving += 1;
    }
    let first = all.first().map_or(0, |s| segment_seq(s));
    let Some((kept, kept_prev, archive_count)) = kept_from else {
        return Ok(Archived {
            segments: 0,
            records: (first, first),
            seq: None,
        });
    };
    // The archive point, chained to the end of the journal: verify walks to it.
    let walked = walk(all.clone(), 0, &mut |_, _| Ok(()))?;
    let seq = walked.next_seq;
    let record = json!({
        "kind": ARCHIVED,
        "time": now(),
        "before": humantime::format_rfc3339(before).to_string(),
        "to": to.display().to_string(),
        "segments": moving,
        "records": [first, kept],
        "kept_from": { "seq": kept, "prev": kept_prev },
        "seq": seq,
        "prev": walked.last_hash,
    });
    append_alone(dir, seq, &record.to_string())?;
    std::fs::create_dir_all(to).map_err(io)?;
    for segment in &all[..moving] {
        let name = segment.file_name().unwrap_or_default();
        move_file(segment, &to.join(name))?;
    }
    sync_dir(to)?;
    sync_dir(dir)?;
    let key = SealingKey::load(dir)?;
    write_head(to, &Head::new(archive_count, kept_prev, key.as_ref()), true)?;
    Ok(Archived {
        segments: moving,
        records: (first, kept),
        seq: Some(seq),
    })
}

/// A record to write and where to say it is on disk.
#[derive(Debug)]
struct Append {
    record: Map<String, Value>,
    ack: oneshot::Sender<Result<u64, JournalError>>,
}

/// Told how long each group commit took (write, `fdatasync`, head), e.g. to feed a histogram.
pub type CommitObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Since the last commit whose sync succeeded, the commits that failed.
#[derive(Debug)]
struct Failure {
    /// The first spent sequence number (the last synced record's + 1).
    void_from: u64,
    /// The first failure.
    error: String,
    /// Failed commits.
    commits: u64,
    /// When the last failed.
    at: Instant,
}

/// The writer's sealing: the current epoch's key and whether records follow the last seal.
#[derive(Debug)]
struct Sealer {
    key: SealingKey,
    /// Records follow the last seal (or there is none yet).
    unsealed: bool,
    /// The key on disk is the current one (false after a failed replacement: retried at the next
    /// commit).
    stored: bool,
    /// No seal-only commit before this (after one failed).
    retry_at: Option<Instant>,
}

/// Why a commit is made: what it seals besides its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// While running: when the epoch is over, seal it (even an idle one) and move on.
    Running,
    /// At open: when the stored epoch is over, seal it if records follow its last seal, and move
    /// on (the epochs the daemon did not run get no seal).
    Opening,
    /// At stop: seal what follows the last seal, in the current epoch (or in the epoch that is
    /// over, then moving on).
    Closing,
}

/// The writer's state: the open segment, the next sequence number, the chain's synced end, and
/// the failure not yet resumed from.
struct Writer {
    config: JournalConfig,
    /// The segment being written and its size (none after a failure or at open).
    file: Option<(File, u64)>,
    /// The next sequence number to hand out; a failed commit's are spent, never handed out again.
    next_seq: u64,
    /// The hash of the last record whose sync succeeded.
    last_hash: String,
    /// Set by a failed commit, cleared by the commit that resumes.
    failure: Option<Failure>,
    /// Syncs to fail before any succeeds (a test seam; 0 in the daemon).
    fail_syncs: Arc<AtomicU32>,
    /// The sealing key, when the folder has one.
    sealer: Option<Sealer>,
    /// The time epochs are read from.
    clock: Clock,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("dir", &self.config.dir)
            .field("next_seq", &self.next_seq)
            .field("failure", &self.failure)
            .field("sealer", &self.sealer)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// How long until the current epoch ends and a seal is due (zero when overdue), if sealing.
    fn seal_due_in(&self) -> Option<Duration> {
        let sealer = self.sealer.as_ref()?;
        let until = sealer
            .key
            .epoch_end()
            .duration_since((self.clock)())
            .unwrap_or_default();
        Some(match sealer.retry_at {
            Some(at) => until.max(at.saturating_duration_since(Instant::now())),
            None => until,
        })
    }

    /// Writes `batch` and syncs it; on success every record has its `seq` and the head follows.
    /// Returns the first record's sequence number. Within `retry_after` of a failure, with
    /// `hold_off`, refuses without touching the disk. When sealing, writes the seal `moment`
    /// calls for before the batch, moves the key on after the sync and seals the head.
    fn commit(
        &mut self,
        batch: &mut [Map<String, Value>],
        hold_off: bool,
        moment: Moment,
    ) -> Result<u64, JournalError> {
        if let Some(failure) = &self.failure
            && hold_off
            && failure.at.elapsed() < self.config.retry_after
        {
            return Err(JournalError::Suspended(failure.error.clone()));
        }
        let free = fs4::available_space(&self.config.dir).map_err(io)?;
        if free < self.config.reserve_bytes {
            return Err(JournalError::DiskFull {
                free,
                reserve: self.config.reserve_bytes,
            });
        }
        // What to seal, and the key afterwards.
        let now = (self.clock)();
        let (seal, next_key) = match &self.sealer {
            None => (false, None),
            Some(sealer) => {
                let due = now >= sealer.key.epoch_end();
                let seal = match moment {
                    Moment::Running => due,
                    Moment::Opening => due && sealer.unsealed,
                    Moment::Closing => due || sealer.unsealed,
                };
                let epoch = if due {
                    sealer.key.epoch_at(now).max(sealer.key.epoch() + 1)
                } else {
                    sealer.key.epoch()
                };
                (seal, Some(sealer.key.evolved_to(epoch)))
            }
        };
        let first = self.next_seq;
        let mut seq = first;
        let mut hash = self.last_hash.clone();
        let mut text = String::new();
        let mut sealed = None;
        // Sets `seq` and `prev` (and, given a key, the `seal` over them) and adds the line.
        let mut push = |record: &mut Map<String, Value>,
                        key: Option<&SealingKey>|
         -> Result<(u64, String), JournalError> {
            let at = (seq, hash.clone());
            if let Some(key) = key {
                record.insert("seal".into(), Value::from(key.seal_record(seq, &hash)));
            }
            record.insert("seq".into(), Value::from(seq));
            record.insert("prev".into(), Value::from(hash.clone()));
            let line =
                serde_json::to_string(record).map_err(|e| JournalError::Io(e.to_string()))?;
            hash = line_hash(&line);
            text.push_str(&line);
            text.push('\n');
            seq += 1;
            Ok(at)
        };
        if let Some(failure) = &self.failure {
            let Value::Object(mut resumed) = json!({
                "kind": RESUMED,
                "time": now_at(now),
                "void": [failure.void_from, first],
                "error": failure.error,
                "failed_commits": failure.commits,
            }) else {
                unreachable!("json! of an object")
            };
            push(&mut resumed, None)?;
        }
        if seal && let Some(sealer) = &self.sealer {
            let Value::Object(mut record) = json!({
                "kind": SEAL,
                "time": now_at(now),
                "key": sealer.key.id(),
                "epoch": sealer.key.epoch(),
            }) else {
                unreachable!("json! of an object")
            };
            let (at, prev) = push(&mut record, Some(&sealer.key))?;
            sealed = Some((sealer.key.epoch(), at, prev));
        }
        for record in batch.iter_mut() {
            push(record, None)?;
        }
        let end = seq;
        let batch_first = end - batch.len() as u64;
        let written = if text.is_empty() {
            Ok(())
        } else {
            self.write(&text, first, end, &hash, next_key.as_ref())
        };
        match written {
            Ok(()) => {
                self.next_seq = end;
                self.last_hash = hash;
                self.failure = None;
                if let (Some(sealer), Some(next)) = (self.sealer.as_mut(), next_key) {
                    if let Some((epoch, seq, hash)) = &sealed {
                        events::EpochSealed {
                            dir: &self.config.dir,
                            key: sealer.key.id(),
                            epoch: *epoch,
                            seq: *seq,
                            hash,
                        }
                        .emit();
                    }
                    sealer.unsealed = !batch.is_empty() || (sealer.unsealed && sealed.is_none());
                    if next.epoch() != sealer.key.epoch() {
                        // The old key is overwritten in memory as it is dropped (zeroized).
                        sealer.key = next;
                        sealer.stored = false;
                    }
                    if !sealer.stored {
                        match sealer.key.store(&self.config.dir) {
                            Ok(()) => sealer.stored = true,
                            Err(error) => events::SealingKeyNotReplaced {
                                dir: &self.config.dir,
                                epoch: sealer.key.epoch(),
                                error: &error,
                            }
                            .emit(),
                        }
                    }
                }
                Ok(batch_first)
            }
            Err(error) => {
                // Never sync this segment again; the batch's sequence numbers are spent.
                self.file = None;
                self.next_seq = end;
                let before = self.failure.take();
                self.failure = Some(Failure {
                    void_from: before.as_ref().map_or(first, |f| f.void_from),
                    commits: before.as_ref().map_or(0, |f| f.commits) + 1,
                    error: before.map_or_else(|| error.to_string(), |f| f.error),
                    at: Instant::now(),
                });
                Err(error)
            }
        }
    }

    /// Writes `text` (records `first..end`, the last with hash `hash`) to the segment (a new one
    /// named `first` when there is none or it is full), syncs it and replaces the head (sealed
    /// with `key`, when sealing).
    fn write(
        &mut self,
        text: &str,
        first: u64,
        end: u64,
        hash: &str,
        key: Option<&SealingKey>,
    ) -> Result<(), JournalError> {
        if self
            .file
            .as_ref()
            .is_some_and(|(_, size)| *size >= self.config.segment_bytes)
        {
            self.file = None;
        }
        if self.file.is_none() {
            let path = self.config.dir.join(segment_name(first));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io)?;
            let size = file.metadata().map_err(io)?.len();
            // A new segment's name must reach the disk too.
            sync_dir(&self.config.dir)?;
            self.file = Some((file, size));
        }
        let Some((file, size)) = self.file.as_mut() else {
            return Err(JournalError::Closed);
        };
        file.write_all(text.as_bytes()).map_err(io)?;
        let injected = self
            .fail_syncs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if injected {
            return Err(JournalError::Io("injected fdatasync failure".into()));
        }
        file.sync_data().map_err(io)?;
        *size += text.len() as u64;
        write_head(
            &self.config.dir,
            &Head::new(end, hash.to_owned(), key),
            false,
        )
    }
}

fn now_at(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// A journal's writing end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Append>,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// Bytes of a torn tail that were cut off (0 when the last write was whole).
    pub cut_bytes: u64,
    /// Segment files read: the one holding the head's record and those after it, not the
    /// history before ([`verify`] reads that).
    pub segments_read: usize,
    /// The sealing key's id and epoch, when the folder is sealed.
    pub sealing: Option<(String, u64)>,
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, cuts a torn tail beyond what the head
    /// counts and starts its writer under `supervisor`. It reads the head and the segments from
    /// the one holding the head's last record on (usually the last one), not the whole history:
    /// damage in older segments is [`verify`]'s to find. When the folder has a sealing key
    /// ([`super::seal`]), an epoch that ended while no daemon ran is sealed now (if records
    /// follow its last seal) and the key moves on to the current epoch.
    ///
    /// Errors: the folder cannot be created or read (a symbolic link for a segment or the head
    /// included); [`JournalError::Corrupted`] when a record the head counts is damaged and
    /// nothing explains it, or the head does not match the records (an operator's [`recover`]
    /// decides), or damage before the last segment without a head; [`JournalError::Sealing`]
    /// when the sealing state does not parse.
    pub fn open(
        config: JournalConfig,
        supervisor: &Supervisor,
    ) -> Result<(Self, Opened), JournalError> {
        Self::open_observed(config, supervisor, Arc::new(|_| {}))
    }

    /// [`Journal::open`], telling `observer` how long each group commit takes.
    ///
    /// Errors: as [`Journal::open`].
    pub fn open_observed(
        config: JournalConfig,
        supervisor: &Supervisor,
        observer: CommitObserver,
    ) -> Result<(Self, Opened), JournalError> {
        Self::open_with(
            config,
            supervisor,
            observer,
            Arc::default(),
            Arc::new(SystemTime::now),
        )
    }

    /// [`Journal::open_observed`] whose writer fails the next `fail_syncs` syncs and reads the
    /// time from `clock`.
    fn open_with(
        config: JournalConfig,
        supervisor: &Supervisor,
        observer: CommitObserver,
        fail_syncs: Arc<AtomicU32>,
        clock: Clock,
    ) -> Result<(Self, Opened), JournalError> {
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let head = read_head(&config.dir)?;
        let all = segments(&config.dir)?;
        let counted = head.as_ref().and_then(|h| h.count.checked_sub(1));
        // The segment holding the head's last record: the last one named at or before it.
        let from = counted.map_or(0, |last| {
            all.iter()
                .rposition(|s| segment_seq(s) <= last)
                .unwrap_or(0)
        });
        let mut counted_hash = None;
        let walked = walk(all, from, &mut |record, hash| {
            if counted.is_some() && record.get("seq").and_then(Value::as_u64) == counted {
                counted_hash = Some(hash.to_owned());
            }
            Ok(())
        })?;
        let count = head.as_ref().map_or(0, |h| h.count);
        if let Some(damage) = &walked.damage
            && damage.record < count
        {
            return Err(JournalError::Corrupted(format!(
                "{damage}, which the head counts (it says {count} records)"
            )));
        }
        if let Some(head) = &head {
            check_head(head, &walked, counted_hash.as_deref())?;
        }
        let cut_bytes = match &walked.damage {
            Some(damage) => cut(&walked, damage, head.is_some())?,
            None => 0,
        };
        let sealer = SealingKey::load(&config.dir)?.map(|key| Sealer {
            key,
            unsealed: walked.records > 0 && walked.last_kind.as_deref() != Some(SEAL),
            stored: true,
            retry_at: None,
        });
        let mut writer = Writer {
            file: None,
            next_seq: walked.next_seq,
            last_hash: walked.last_hash,
            failure: None,
            config,
            fail_syncs,
            sealer,
            clock,
        };
        if writer.sealer.is_some() {
            // A failure here is the next append's: an I/O error leaves the writer resuming (the
            // seal is written then), a full disk refuses it as it would have anyway.
            let _ = writer.commit(&mut [], false, Moment::Opening);
        }
        let opened = Opened {
            next_seq: writer.next_seq,
            cut_bytes,
            segments_read: walked.read,
            sealing: writer
                .sealer
                .as_ref()
                .map(|s| (s.key.id().to_owned(), s.key.epoch())),
        };
        let (tx, rx) = mpsc::channel(JOURNAL_QUEUE_CAPACITY);
        supervisor.spawn("journal-writer", move |_token| run(writer, rx, observer));
        Ok((Self { tx }, opened))
    }

    /// Appends `record` (a JSON object; `seq` and `prev` are set here) and waits until it is on
    /// disk. Returns its sequence number.
    ///
    /// Errors: [`JournalError::NotAnObject`]; the batch could not be written
    /// ([`JournalError::DiskFull`], [`JournalError::Io`]), or a commit failed less than
    /// [`JournalConfig::retry_after`] ago ([`JournalError::Suspended`]); [`JournalError::Closed`]
    /// when the writer has stopped.
    pub async fn append(&self, record: Value) -> Result<u64, JournalError> {
        let Value::Object(record) = record else {
            return Err(JournalError::NotAnObject);
        };
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Append { record, ack })
            .await
            .map_err(|_| JournalError::Closed)?;
        done.await.map_err(|_| JournalError::Closed)?
    }
}

/// Cuts the tail from `damage` on, which the head does not count (nothing in it was
/// acknowledged): the damaged segment at the damaged line and, when there is a head to say the
/// records before are the journal, any later segment (a failed commit's, never resumed).
/// Returns the bytes cut.
///
/// Errors: [`JournalError::Corrupted`] for damage before the last segment without a head;
/// cutting failed.
fn cut(walked: &Walk, damage: &Damage, has_head: bool) -> Result<u64, JournalError> {
    let at = walked
        .segments
        .iter()
        .position(|s| *s == damage.segment)
        .unwrap_or(0);
    let later = &walked.segments[at + 1..];
    if !later.is_empty() && !has_head {
        return Err(JournalError::Corrupted(damage.to_string()));
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&damage.segment)
        .map_err(io)?;
    let mut cut_bytes = file.metadata().map_err(io)?.len() - damage.offset;
    file.set_len(damage.offset)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    for segment in later {
        cut_bytes += std::fs::symlink_metadata(segment).map_err(io)?.len();
        std::fs::remove_file(segment).map_err(io)?;
    }
    if !later.is_empty() {
        sync_dir(walked.segments[0].parent().unwrap_or(Path::new(".")))?;
    }
    Ok(cut_bytes)
}

/// The longest the writer sleeps without a record or a seal due.
const IDLE: Duration = Duration::from_secs(3600);

/// The writer task: batches what is queued, commits it off the async workers, answers; when
/// sealing, seals each epoch as it ends even without records. It ends when every [`Journal`]
/// handle is gone, not on shutdown's cancellation: the tasks that write records (the control
/// gate's last refusal summary) stop at the same time and their last records must still reach
/// the disk; shutdown waits for them as for any task. Ending, it seals what follows the last
/// seal and, after a failed commit not yet resumed, writes the resume record (if the disk takes
/// it).
async fn run(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Append>,
    observer: CommitObserver,
) -> anyhow::Result<()> {
    let mut queued = Vec::new();
    loop {
        let due_in = writer.seal_due_in();
        let received = tokio::select! {
            received = rx.recv() => Some(received),
            () = tokio::time::sleep(due_in.unwrap_or(IDLE)), if due_in.is_some() => None,
        };
        let first = match received {
            // An epoch ended: its seal, alone.
            None => {
                writer = tokio::task::spawn_blocking(move || {
                    let failed = writer.commit(&mut [], true, Moment::Running).is_err();
                    if let Some(sealer) = writer.sealer.as_mut() {
                        sealer.retry_at = failed.then(|| {
                            Instant::now() + writer.config.retry_after.max(Duration::from_secs(1))
                        });
                    }
                    writer
                })
                .await?;
                continue;
            }
            Some(None) => {
                if writer.failure.is_some() || writer.sealer.as_ref().is_some_and(|s| s.unsealed) {
                    tokio::task::spawn_blocking(move || {
                        let _ = writer.commit(&mut [], false, Moment::Closing);
                    })
                    .await?;
                }
                return Ok(());
            }
            Some(Some(first)) => first,
        };
        queued.push(first);
        while let Ok(more) = rx.try_recv() {
            queued.push(more);
        }
        let (mut records, acks): (Vec<_>, Vec<_>) =
            queued.drain(..).map(|a| (a.record, a.ack)).unzip();
        let (back, result) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = writer.commit(&mut records, true, Moment::Running);
            (writer, result.map(|first| (first, started.elapsed())))
        })
        .await?;
        let result = result.map(|(first, took)| {
            observer(took);
            first
        });
        writer = back;
        for (i, ack) in acks.into_iter().enumerate() {
            let _ = ack.send(result.clone().map(|first| first + i as u64));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(dir: &Path) -> Vec<String> {
        segments(dir)
            .unwrap()
            .iter()
            .flat_map(|s| {
                std::fs::read_to_string(s)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Opens the journal in `dir` again, without a free-space reserve.
    fn reopen(dir: &Path, supervisor: &Supervisor) -> (Journal, Opened) {
        let config = JournalConfig {
            reserve_bytes: 0,
            ..JournalConfig::new(dir)
        };
        Journal::open(config, supervisor).unwrap()
    }

    async fn write(dir: &Path, config: impl FnOnce(&mut JournalConfig), n: u64) -> Supervisor {
        let supervisor = Supervisor::new();
        let mut settings = JournalConfig::new(dir);
        settings.reserve_bytes = 0;
        config(&mut settings);
        let (journal, _) = Journal::open(settings, &supervisor).unwrap();
        // Half the records one at a time (one batch each), half at once (group commits).
        for i in 0..n / 2 {
            assert_eq!(journal.append(json!({ "i": i })).await, Ok(i));
        }
        let waiting: Vec<_> = (n / 2..n)
            .map(|i| {
                let journal = journal.clone();
                async move { journal.append(json!({ "i": i })).await }
            })
            .collect();
        let mut seqs: Vec<u64> = futures::future::join_all(waiting)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        seqs.sort_unstable();
        assert_eq!(seqs, (n / 2..n).collect::<Vec<_>>());
        supervisor
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_chain_across_rotated_segments_and_reopen_continues_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = write(dir.path(), |c| c.segment_bytes = 300, 20).await;
        assert!(supervisor.shutdown(std::time::Duration::from_secs(5)).await);
        let verified = verify(dir.path()).unwrap();
        assert_eq!(verified.records, 20);
        assert!(verified.segments > 2, "{}", verified.segments);
        // Reopened, the chain goes on where it ended.
        let supervisor = Supervisor::new();
        let (journal, opened) = reopen(dir.path(), &supervisor);
        assert_eq!((opened.next_seq, opened.cut_bytes), (20, 0));
        assert_eq!(journal.append(json!({ "after": true })).await, Ok(20));
        assert_eq!(verify(dir.path()).unwrap().records, 21);
        assert_eq!(
            journal.append(json!(["not", "an", "object"])).await,
            Err(JournalError::NotAnObject)
        );
    }

    #[test]
    fn tail_reads_the_last_records_across_blocks_and_segments_and_skips_an_unfinished_line() {
        let dir = tempfile::tempdir().unwrap();
        let line = |i: u64| format!("{{\"i\":{i},\"pad\":\"{}\"}}\n", "x".repeat(50));
        // Segment 0: records 0..3000 (≈ 200 KiB: several of tail's blocks); segment 3000: two
        // more and an unfinished line.
        let first: String = (0..3000).map(line).collect();
        std::fs::write(dir.path().join(segment_name(0)), first).unwrap();
        let second = format!("{}{}{{\"i\":50", line(3000), line(3001));
        std::fs::write(dir.path().join(segment_name(3000)), second).unwrap();
        let numbers = |records: Vec<Map<String, Value>>| -> Vec<u64> {
            records.iter().map(|r| r["i"].as_u64().unwrap()).collect()
        };
        assert_eq!(numbers(tail(dir.path(), 3).unwrap()), [2999, 3000, 3001]);
        let many = numbers(tail(dir.path(), 2500).unwrap());
        assert_eq!(many, (502..3002).collect::<Vec<_>>());
        assert_eq!(numbers(tail(dir.path(), 10_000).unwrap()).len(), 3002);
        assert!(tail(dir.path(), 0).unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_edited_record_or_a_cut_off_tail_fails_verification_with_its_record_number() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), |_| {}, 10).await;
        let segment = segments(dir.path()).unwrap().remove(0);
        let original = std::fs::read_to_string(&segment).unwrap();
        // Record 4 (written alone, so `i` is 4) edited: record 5's `prev` no longer matches.
        let edited = original.replacen("{\"i\":4,", "{\"i\":44,", 1);
        assert_ne!(edited, original);
        std::fs::write(&segment, &edited).unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("record 5") && error.contains("chain is broken"),
            "{error}"
        );
        // Whole records cut off the end: the chain holds, the head does not.
        let kept: String = original.lines().take(7).map(|l| format!("{l}\n")).collect();
        std::fs::write(&segment, kept).unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("the head says 10 records, the journal has 7"),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_torn_tail_is_cut_at_open_and_the_chain_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), |_| {}, 5).await;
        let segment = segments(dir.path()).unwrap().remove(0);
        let torn = b"{\"seq\":5,\"prev\":\"ab";
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(torn).unwrap();
        drop(file);
        assert!(
            verify(dir.path())
                .unwrap_err()
                .to_string()
                .contains("record 5")
        );
        let supervisor = Supervisor::new();
        let (journal, opened) = reopen(dir.path(), &supervisor);
        assert_eq!(opened.next_seq, 5);
        assert_eq!(opened.cut_bytes, torn.len() as u64);
        assert_eq!(journal.append(json!({ "next": 1 })).await, Ok(5));
        assert_eq!(verify(dir.path()).unwrap().records, 6);
        assert_eq!(lines(dir.path()).len(), 6);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_the_free_space_reserve_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new();
        let config = JournalConfig {
            reserve_bytes: u64::MAX,
            ..JournalConfig::new(dir.path())
        };
        let (journal, _) = Journal::open(config, &supervisor).unwrap();
        assert!(matches!(
            journal.append(json!({ "a": 1 })).await,
            Err(JournalError::DiskFull {
                reserve: u64::MAX,
                ..
            })
        ));
        assert!(lines(dir.path()).is_empty());
    }

    /// A journal in `dir` whose writer fails the next syncs `fail` holds, retrying after
    /// `retry_after`.
    fn faulty(
        dir: &Path,
        retry_after: Duration,
        supervisor: &Supervisor,
    ) -> (Journal, Arc<AtomicU32>) {
        let config = JournalConfig {
            reserve_bytes: 0,
            retry_after,
            ..JournalConfig::new(dir)
        };
        let fail = Arc::new(AtomicU32::new(0));
        let (journal, _) = Journal::open_with(
            config,
            supervisor,
            Arc::new(|_| {}),
            Arc::clone(&fail),
            Arc::new(SystemTime::now),
        )
        .unwrap();
        (journal, fail)
    }

    /// Every `seq` on disk, in every line that parses, over all segments.
    fn seqs_on_disk(dir: &Path) -> Vec<u64> {
        lines(dir)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_refuses_its_batch_and_the_journal_resumes_in_a_new_segment() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new();
        let (journal, fail) = faulty(dir.path(), Duration::ZERO, &supervisor);
        assert_eq!(journal.append(json!({ "i": 0 })).await, Ok(0));
        assert_eq!(journal.append(json!({ "i": 1 })).await, Ok(1));
        fail.store(1, Ordering::SeqCst);
        assert_eq!(
            journal.append(json!({ "i": 2 })).await,
            Err(JournalError::Io("injected fdatasync failure".into()))
        );
        // Seq 2 is spent; the next batch starts a new segment with the resume record (seq 3).
        assert_eq!(journal.append(json!({ "i": 3 })).await, Ok(4));
        assert_eq!(journal.append(json!({ "i": 4 })).await, Ok(5));
        let names: Vec<String> = segments(dir.path())
            .unwrap()
            .iter()
            .map(|s| s.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, [segment_name(0), segment_name(3)]);
        // The refused record reached the first segment (the failure was the sync): it is void.
        let first = std::fs::read_to_string(dir.path().join(segment_name(0))).unwrap();
        assert_eq!(first.lines().count(), 3);
        let Collected { verified, records } = verify_collect(dir.path()).unwrap();
        let kept: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(kept, [0, 1, 3, 4, 5]);
        assert_eq!(records[2]["kind"], RESUMED);
        assert_eq!(records[2]["void"], json!([2, 3]));
        assert_eq!(
            records[2]["prev"],
            json!(line_hash(first.lines().nth(1).unwrap()))
        );
        assert_eq!(
            verified.void,
            [Void {
                from: 2,
                to: 3,
                kind: RESUMED.into(),
                why: "journal I/O failed: injected fdatasync failure".into()
            }]
        );
        // A torn line after the void record (what a power loss could leave) is void too.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(segment_name(0)))
            .unwrap();
        file.write_all(b"{\"seq\":2,\"pr").unwrap();
        drop(file);
        assert_eq!(verify(dir.path()).unwrap().void.len(), 1);
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);

        // Reopened, the chain goes on after the resume; no sequence number was handed out twice.
        let supervisor = Supervisor::new();
        let (journal, opened) = reopen(dir.path(), &supervisor);
        assert_eq!((opened.next_seq, opened.cut_bytes), (6, 0));
        assert_eq!(journal.append(json!({ "i": 5 })).await, Ok(6));
        assert_eq!(verify(dir.path()).unwrap().records, 6);
        let mut seqs = seqs_on_disk(dir.path());
        let all = seqs.len();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(seqs.len(), all, "{seqs:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_resume_widens_the_void_and_appends_wait_out_the_retry_interval() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new();
        let (journal, fail) = faulty(dir.path(), Duration::ZERO, &supervisor);
        assert_eq!(journal.append(json!({ "i": 0 })).await, Ok(0));
        fail.store(2, Ordering::SeqCst);
        assert!(journal.append(json!({ "i": 1 })).await.is_err());
        // The resume (seq 2) and its batch (seq 3) fail too: 1..4 are void.
        assert!(journal.append(json!({ "i": 2 })).await.is_err());
        assert_eq!(journal.append(json!({ "i": 3 })).await, Ok(5));
        let Collected { verified, records } = verify_collect(dir.path()).unwrap();
        assert_eq!(
            verified
                .void
                .iter()
                .map(|v| (v.from, v.to))
                .collect::<Vec<_>>(),
            [(1, 4)]
        );
        assert_eq!(records[1]["failed_commits"], 2);
        assert_eq!(segments(dir.path()).unwrap().len(), 3);
        drop(journal);

        // Within the retry interval, appends are refused without touching the disk.
        let dir = tempfile::tempdir().unwrap();
        let (journal, fail) = faulty(dir.path(), Duration::from_secs(3600), &supervisor);
        assert_eq!(journal.append(json!({ "i": 0 })).await, Ok(0));
        fail.store(1, Ordering::SeqCst);
        assert!(journal.append(json!({ "i": 1 })).await.is_err());
        assert!(matches!(
            journal.append(json!({ "i": 2 })).await,
            Err(JournalError::Suspended(_))
        ));
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        // Stopping, the writer resumes once more: the chain names the void.
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        let Collected { verified, records } = verify_collect(dir.path()).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1]["kind"], RESUMED);
        assert_eq!(verified.void[0].from, 1);
        assert_eq!(verified.void[0].to, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_the_head_counts_are_never_cut_and_recover_records_the_decision() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), |_| {}, 10).await;
        let segment = segments(dir.path()).unwrap().remove(0);
        let original = std::fs::read_to_string(&segment).unwrap();
        // Three records and a torn fourth line: the head says 10.
        let mut damaged: String = original.lines().take(3).map(|l| format!("{l}\n")).collect();
        damaged.push_str("{\"seq\":3,\"pr");
        std::fs::write(&segment, &damaged).unwrap();
        let supervisor = Supervisor::new();
        let config = JournalConfig {
            reserve_bytes: 0,
            ..JournalConfig::new(dir.path())
        };
        let error = Journal::open(config.clone(), &supervisor).unwrap_err();
        assert!(
            matches!(&error, JournalError::Corrupted(e) if e.contains("record 3") && e.contains("which the head counts")),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&segment).unwrap(), damaged);
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(error.contains("record 3"), "{error}");
        // Only the whole records left: the head does not match.
        std::fs::write(&segment, &damaged[..damaged.rfind("{\"seq\":3").unwrap()]).unwrap();
        let error = Journal::open(config.clone(), &supervisor)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("the head says 10 records, the journal has 3"),
            "{error}"
        );

        let recovered = recover(dir.path()).unwrap();
        assert_eq!(recovered.void, (3, 10));
        assert_eq!(recovered.seq, 10);
        assert!(recovered.problem.contains("the head says 10 records"));
        let Collected { verified, records } = verify_collect(dir.path()).unwrap();
        assert_eq!(records.len(), 4);
        let record = &records[3];
        assert_eq!(record["kind"], RECOVERED);
        assert_eq!(record["head"]["count"], 10);
        assert_eq!(record["found"], 3);
        assert_eq!(
            (
                verified.void[0].from,
                verified.void[0].to,
                verified.void[0].kind.as_str()
            ),
            (3, 10, RECOVERED)
        );
        // The daemon opens it again and goes on after the recovery record.
        let (journal, opened) = Journal::open(config, &supervisor).unwrap();
        assert_eq!(opened.next_seq, 11);
        assert_eq!(journal.append(json!({ "after": true })).await, Ok(11));
        assert_eq!(verify(dir.path()).unwrap().records, 5);
        assert_eq!(recover(dir.path()), Err(JournalError::Intact));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recover_accepts_a_head_whose_hash_differs_and_an_unreadable_head() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), |_| {}, 4).await;
        let head = dir.path().join("head.json");
        std::fs::write(&head, format!("{{\"count\":4,\"hash\":\"{GENESIS}\"}}")).unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("record 3 does not have the hash the head holds"),
            "{error}"
        );
        assert_eq!(recover(dir.path()).unwrap().void, (4, 4));
        assert_eq!(verify(dir.path()).unwrap().records, 5);

        std::fs::write(&head, "").unwrap();
        assert!(verify(dir.path()).is_err());
        let recovered = recover(dir.path()).unwrap();
        assert!(
            recovered.problem.starts_with("head.json"),
            "{}",
            recovered.problem
        );
        let Collected { records, .. } = verify_collect(dir.path()).unwrap();
        assert_eq!(records.len(), 6);
        assert_eq!(records[5]["head"], Value::Null);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unacknowledged_tail_beyond_the_head_is_cut_even_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), |_| {}, 4).await;
        // What a power loss after a failed sync and a failed resumption could leave: a torn line
        // after the last record the head counts, and a later segment with a torn resume record.
        let segment = segments(dir.path()).unwrap().remove(0);
        let length = std::fs::metadata(&segment).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
        file.write_all(b"{\"seq\":4,\"pr").unwrap();
        drop(file);
        std::fs::write(dir.path().join(segment_name(5)), b"{\"kind\":\"journal-res").unwrap();
        let supervisor = Supervisor::new();
        let (journal, opened) = reopen(dir.path(), &supervisor);
        assert_eq!((opened.next_seq, opened.cut_bytes), (4, 12 + 20));
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), length);
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        assert_eq!(journal.append(json!({ "next": 1 })).await, Ok(4));
        assert_eq!(verify(dir.path()).unwrap().records, 5);
    }
}

#[cfg(test)]
mod sealing_tests {
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::runtime::seal;

    const T0: u64 = 1_800_000_000;
    const EPOCH: u64 = 60;

    /// A clock at `secs` (Unix seconds) that the test moves.
    fn clock(secs: &Arc<AtomicU64>) -> Clock {
        let secs = Arc::clone(secs);
        Arc::new(move || SystemTime::UNIX_EPOCH + Duration::from_secs(secs.load(Ordering::SeqCst)))
    }

    fn open_at(dir: &Path, secs: &Arc<AtomicU64>, supervisor: &Supervisor) -> (Journal, Opened) {
        let config = JournalConfig {
            reserve_bytes: 0,
            segment_bytes: 600,
            ..JournalConfig::new(dir)
        };
        Journal::open_with(
            config,
            supervisor,
            Arc::new(|_| {}),
            Arc::default(),
            clock(secs),
        )
        .unwrap()
    }

    /// Rewrites every segment's chain (each `prev` recomputed from the line before, as someone
    /// without the key would after an edit) and the head to match, keeping the head's old
    /// sealing fields.
    fn rechain(dir: &Path) {
        let mut prev = GENESIS.to_owned();
        let mut count = 0;
        for segment in segments(dir).unwrap() {
            let mut text = String::new();
            for line in std::fs::read_to_string(&segment).unwrap().lines() {
                let mut record: Map<String, Value> = serde_json::from_str(line).unwrap();
                record.insert("prev".into(), Value::from(prev.clone()));
                let line = serde_json::to_string(&record).unwrap();
                prev = line_hash(&line);
                count = record["seq"].as_u64().unwrap() + 1;
                text.push_str(&line);
                text.push('\n');
            }
            std::fs::write(&segment, text).unwrap();
        }
        let mut head = read_head(dir).unwrap().unwrap();
        head.count = count;
        head.hash = prev;
        std::fs::write(dir.join(HEAD_FILE), serde_json::to_vec(&head).unwrap()).unwrap();
    }

    fn copy(from: &Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
            }
        }
        to
    }

    fn seal_epochs(dir: &Path) -> Vec<u64> {
        records(dir)
            .unwrap()
            .iter()
            .filter(|r| r.get("kind").and_then(Value::as_str) == Some(SEAL))
            .map(|r| r["epoch"].as_u64().unwrap())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seals_across_epochs_verify_with_the_key_and_an_edited_cut_or_rechained_log_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let secs = Arc::new(AtomicU64::new(T0));
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(T0);
        let key = seal::setup(dir.path(), Duration::from_secs(EPOCH), start, false).unwrap();
        let keys = [key.to_string().parse::<VerifyKey>().unwrap()];
        let supervisor = Supervisor::new();
        let (journal, opened) = open_at(dir.path(), &secs, &supervisor);
        assert_eq!(opened.sealing, Some((key.id(), 0)));
        for i in 0..3 {
            journal.append(json!({ "i": i })).await.unwrap();
        }
        // Epoch 0 ends: the next commit seals it first, then the key moves on.
        secs.fetch_add(EPOCH, Ordering::SeqCst);
        assert_eq!(journal.append(json!({ "i": 3 })).await, Ok(4));
        secs.fetch_add(EPOCH + 5, Ordering::SeqCst);
        journal.append(json!({ "i": 4 })).await.unwrap();
        assert_eq!(seal_epochs(dir.path()), [0, 1]);
        let state = seal::SealingKey::load(dir.path()).unwrap().unwrap();
        assert_eq!(state.epoch(), 2, "the old key is replaced on disk");
        let verified = verify_with(dir.path(), &keys, &mut |_| {}).unwrap();
        let sealing = verified.sealing.unwrap();
        assert_eq!(
            (
                sealing.seals,
                sealing.epochs,
                sealing.unsealed_tail,
                sealing.head_epoch
            ),
            (2, Some((0, 1)), 1, 2)
        );
        // Stopping seals the tail; a start five epochs later moves the key on without a seal
        // for the epochs no daemon ran, and the next seal shows the gap.
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        assert_eq!(seal_epochs(dir.path()), [0, 1, 2]);
        secs.fetch_add(5 * EPOCH, Ordering::SeqCst);
        let supervisor = Supervisor::new();
        let (journal, opened) = open_at(dir.path(), &secs, &supervisor);
        assert_eq!(opened.sealing, Some((key.id(), 7)));
        journal.append(json!({ "i": 5 })).await.unwrap();
        secs.fetch_add(EPOCH, Ordering::SeqCst);
        journal.append(json!({ "i": 6 })).await.unwrap();
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        let sealing = verify_with(dir.path(), &keys, &mut |_| {})
            .unwrap()
            .sealing
            .unwrap();
        assert_eq!(seal_epochs(dir.path()), [0, 1, 2, 7, 8]);
        assert_eq!(
            (sealing.gaps.clone(), sealing.unsealed_tail),
            (vec![(3, 7)], 0)
        );

        // An edited record, the chain recomputed: the chain holds, the seal after it does not.
        let edited = copy(dir.path());
        let segment = segments(edited.path()).unwrap().remove(0);
        let text = std::fs::read_to_string(&segment).unwrap();
        std::fs::write(&segment, text.replacen("{\"i\":1,", "{\"i\":11,", 1)).unwrap();
        assert!(verify(edited.path()).is_err());
        rechain(edited.path());
        let chain_only = verify(edited.path()).unwrap();
        assert_eq!(chain_only.seal_records, 5);
        let error = verify_with(edited.path(), &keys, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("record 3: the seal of epoch 0 does not match"),
            "{error}"
        );

        // A cut tail (the last seals gone) with the head rewritten: the head's seal gives it away.
        let cut = copy(dir.path());
        let last = segments(cut.path()).unwrap().pop().unwrap();
        let all = lines(cut.path());
        let keep = all.len() - 3;
        std::fs::remove_file(&last).unwrap();
        for segment in segments(cut.path()).unwrap() {
            std::fs::remove_file(segment).unwrap();
        }
        let text: String = all[..keep].iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(cut.path().join(segment_name(0)), text).unwrap();
        rechain(cut.path());
        assert!(verify(cut.path()).is_ok());
        let error = verify_with(cut.path(), &keys, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(error.contains("the head's seal"), "{error}");
        // ... or with the head's seal taken out.
        let head = read_head(cut.path()).unwrap().unwrap();
        let bare = Head::new(head.count, head.hash, None);
        std::fs::write(
            cut.path().join(HEAD_FILE),
            serde_json::to_vec(&bare).unwrap(),
        )
        .unwrap();
        let error = verify_with(cut.path(), &keys, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(error.contains("the head is not sealed"), "{error}");

        // Another key; no head at all.
        let other = tempfile::tempdir().unwrap();
        let other = seal::setup(other.path(), Duration::from_secs(EPOCH), start, false).unwrap();
        let error = verify_with(dir.path(), &[other], &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("not with a verification key given"),
            "{error}"
        );
        std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(error.contains("head.json is missing"), "{error}");
    }

    fn lines(dir: &Path) -> Vec<String> {
        segments(dir)
            .unwrap()
            .iter()
            .flat_map(|s| {
                std::fs::read_to_string(s)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    async fn write_many(dir: &Path, n: u64) {
        let supervisor = Supervisor::new();
        let secs = Arc::new(AtomicU64::new(T0));
        let (journal, _) = open_at(dir, &secs, &supervisor);
        for i in 0..n {
            journal
                .append(json!({ "time": now(), "i": i }))
                .await
                .unwrap();
        }
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn opening_reads_only_the_segment_of_the_head_and_a_symlinked_segment_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_many(dir.path(), 40).await;
        let count = segments(dir.path()).unwrap().len();
        assert!(count > 3, "{count}");
        let supervisor = Supervisor::new();
        let secs = Arc::new(AtomicU64::new(T0));
        let (journal, opened) = open_at(dir.path(), &secs, &supervisor);
        assert_eq!((opened.next_seq, opened.segments_read), (40, 1));
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);

        // Segment 0 replaced by a link to a copy elsewhere: neither read nor written through.
        let elsewhere = tempfile::tempdir().unwrap();
        let first = dir.path().join(segment_name(0));
        let target = elsewhere.path().join("copy.jsonl");
        std::fs::copy(&first, &target).unwrap();
        std::fs::remove_file(&first).unwrap();
        std::os::unix::fs::symlink(&target, &first).unwrap();
        let error = verify(dir.path()).unwrap_err();
        assert!(
            matches!(&error, JournalError::Io(e) if e.contains("symbolic links")),
            "{error}"
        );
        // A head that is a link is refused too.
        let head = dir.path().join(HEAD_FILE);
        std::fs::rename(&head, elsewhere.path().join("head.json")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("head.json"), &head).unwrap();
        let error = Journal::open(JournalConfig::new(dir.path()), &Supervisor::new()).unwrap_err();
        assert!(
            matches!(&error, JournalError::Io(e) if e.contains("head.json")),
            "{error}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn archive_moves_old_segments_and_verify_starts_at_the_archive_point() {
        let dir = tempfile::tempdir().unwrap();
        write_many(dir.path(), 40).await;
        let before = segments(dir.path()).unwrap();
        let to = dir.path().join("archive");
        let later = SystemTime::now() + Duration::from_secs(3600);
        let archived = archive(dir.path(), later, &to).unwrap();
        assert_eq!(archived.segments, before.len() - 1);
        assert_eq!(segments(&to).unwrap().len(), before.len() - 1);
        let live = verify_collect(dir.path()).unwrap();
        assert_eq!(live.verified.start, archived.records.1);
        assert_eq!(live.records.last().unwrap()["kind"], ARCHIVED);
        assert_eq!(verify(&to).unwrap().records, archived.records.1);
        // Nothing older than a time before every record.
        let early = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(archive(dir.path(), early, &to).unwrap().seq, None);
        // The journal goes on; the first live segment removed is found.
        let supervisor = Supervisor::new();
        let (journal, _) = open_at(dir.path(), &Arc::new(AtomicU64::new(T0)), &supervisor);
        assert_eq!(journal.append(json!({ "after": true })).await, Ok(41));
        drop(journal);
        assert!(supervisor.shutdown(Duration::from_secs(5)).await);
        assert!(verify(dir.path()).is_ok());
        write_many(dir.path(), 30).await;
        let first = segments(dir.path()).unwrap().remove(0);
        std::fs::remove_file(first).unwrap();
        let error = verify(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no archive record in it says so"), "{error}");
    }
}
