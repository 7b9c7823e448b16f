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
//! Reading ([`scan`], [`verify`]): a segment whose first record is a `journal-resumed` or
//! `journal-recovered` record with `void: [a, b]`, `seq` b and `prev` the hash of record `a - 1`
//! explains everything of `a..b` before it: records, a torn line or garbage in the earlier
//! segments are void — neither acknowledged nor corruption ([`Verified::void`]). Damage that no
//! such record explains is corruption: [`verify`] names the record.
//!
//! Opening ([`Journal::open`]) never cuts a record the head counts. Damage beyond what the head
//! counts is the tail of a batch a crash interrupted (nothing in it was acknowledged): cut off. A
//! head that the chain does not reach or match, or damage among the records it counts, makes
//! [`Journal::open`] fail with [`JournalError::Corrupted`] (the control gate then refuses every
//! write) until an operator runs [`recover`] (`twinloom audit recover`): it accepts the intact
//! records as they are and appends, in a new segment, a record stating that decision:
//! `{"kind":"journal-recovered","time","void":[first,end],"head":{"count","hash"}|null,"found",
//! "damage","decision","seq":end,"prev"}`, then rewrites the head.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::Supervisor;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records queued for the writer before `append` waits.
pub const JOURNAL_QUEUE_CAPACITY: usize = 4096;

/// The `kind` of the record that resumes the journal after a failed commit.
pub const RESUMED: &str = "journal-resumed";

/// The `kind` of the record `twinloom audit recover` appends.
pub const RECOVERED: &str = "journal-recovered";

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
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// The head file's content: `count` is the sequence number after the last committed record,
/// `hash` that record's hash.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Head {
    count: u64,
    hash: String,
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.jsonl")
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
    match std::fs::read(dir.join("head.json")) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| JournalError::Corrupted(format!("head.json: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(e)),
    }
}

/// Replaces the head file (temporary file, rename); with `durable`, also syncs the file and the
/// folder.
fn write_head(dir: &Path, head: &Head, durable: bool) -> Result<(), JournalError> {
    let temporary = dir.join("head.json.partial");
    let text = serde_json::to_vec(head).map_err(|e| JournalError::Io(e.to_string()))?;
    let mut file = File::create(&temporary).map_err(io)?;
    file.write_all(&text).map_err(io)?;
    if durable {
        file.sync_all().map_err(io)?;
    }
    drop(file);
    std::fs::rename(&temporary, dir.join("head.json")).map_err(io)?;
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

/// What a scan of a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Intact records in chain order (ascending `seq`; void ranges left out).
    pub records: Vec<Map<String, Value>>,
    /// The hash of the last intact record ([`GENESIS`] when none).
    pub last_hash: String,
    /// The sequence number after the last intact record (0 when none).
    pub next_seq: u64,
    /// The void ranges, in order.
    pub void: Vec<Void>,
    /// The first damage that nothing explains, if any (nothing after it is read).
    pub damage: Option<Damage>,
    /// The head file's count and hash, if there is one.
    pub head: Option<(u64, String)>,
    /// The segment files.
    pub segments: Vec<PathBuf>,
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

/// The segments whose first line is a resume or recovery record.
fn explaining(segments: &[PathBuf]) -> Result<Vec<Explains>, JournalError> {
    let mut found = Vec::new();
    for (segment, path) in segments.iter().enumerate() {
        let mut first = String::new();
        if BufReader::new(File::open(path).map_err(io)?)
            .read_line(&mut first)
            .is_err()
        {
            continue;
        }
        let Some(text) = first.strip_suffix('\n') else {
            continue;
        };
        if let Some((from, to)) = serde_json::from_str(text)
            .ok()
            .as_ref()
            .and_then(names_void)
        {
            found.push(Explains { segment, from, to });
        }
    }
    Ok(found)
}

/// Reads every record of the journal in `dir`, checking the chain, up to the first damage that
/// nothing explains.
///
/// Errors: the folder or a segment cannot be read; the head file does not parse.
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let head = read_head(dir)?.map(|h| (h.count, h.hash));
    let mut scan = scan_segments(dir)?;
    scan.head = head;
    Ok(scan)
}

/// [`scan`] without the head file.
fn scan_segments(dir: &Path) -> Result<Scan, JournalError> {
    let segments = segments(dir)?;
    let explains = explaining(&segments)?;
    let mut scan = Scan {
        records: Vec::new(),
        last_hash: GENESIS.to_owned(),
        next_seq: 0,
        void: Vec::new(),
        damage: None,
        head: None,
        segments,
    };
    let mut index = 0;
    'segments: while index < scan.segments.len() {
        let segment = scan.segments[index].clone();
        let mut reader = BufReader::new(File::open(&segment).map_err(io)?);
        let (mut offset, mut number) = (0u64, 0u64);
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
            let mut line = String::new();
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
                    scan.records.push(parsed);
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

/// What [`verify`] found in an intact journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Every intact record, in order.
    pub records: Vec<Map<String, Value>>,
    /// The void ranges (refused commits, recoveries), in order.
    pub void: Vec<Void>,
    /// Segment files.
    pub segments: usize,
}

/// Checks the journal in `dir`: every record continues the chain (void ranges explained by the
/// record after them), and the head's count and hash match a record (records after the head are
/// the last batch, written before a crash let the head follow).
///
/// Errors: [`JournalError::Corrupted`] naming the first damaged record that nothing explains
/// (with segment and line), or the head that the records do not reach or do not match.
pub fn verify(dir: &Path) -> Result<Verified, JournalError> {
    let scan = scan(dir)?;
    if let Some(damage) = &scan.damage {
        return Err(JournalError::Corrupted(damage.to_string()));
    }
    check_head(&scan)?;
    Ok(Verified {
        segments: scan.segments.len(),
        records: scan.records,
        void: scan.void,
    })
}

/// The head against the intact records: record `count - 1` is one of them and has its hash.
fn check_head(scan: &Scan) -> Result<(), JournalError> {
    let Some((count, hash)) = &scan.head else {
        return Ok(());
    };
    let Some(last) = count.checked_sub(1) else {
        return Ok(());
    };
    let seq_of = |r: &Map<String, Value>| r.get("seq").and_then(Value::as_u64).unwrap_or(0);
    let Ok(index) = scan.records.binary_search_by_key(&last, seq_of) else {
        return Err(JournalError::Corrupted(if *count > scan.next_seq {
            format!(
                "the head says {count} records, the journal has {}: records {}..{count} were cut off",
                scan.next_seq, scan.next_seq
            )
        } else {
            format!("the head counts record {last}, which is void")
        }));
    };
    // The hash of record count-1 is the `prev` of the record after it, or the last hash.
    let expected = match scan.records.get(index + 1) {
        Some(next) => next.get("prev").and_then(Value::as_str).unwrap_or(""),
        None => scan.last_hash.as_str(),
    };
    if expected != hash {
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

/// For an operator, after [`Journal::open`] refused the journal in `dir` (a head the records do
/// not reach or match, damage nothing explains, a head file that does not parse): accepts the
/// intact records as they are and appends, in a new segment, a [`RECOVERED`] record chained to
/// the last of them that states the decision (what the head said, what the journal holds, the
/// damage, the void range: sequence numbers from the damage up to past any the head or a segment
/// names, so none is handed out twice); syncs it and rewrites the head to match. Afterwards
/// [`verify`] passes and the journal opens. Run it only while no daemon has the journal open.
///
/// Errors: [`JournalError::Intact`] when there is nothing to recover; reading or writing failed
/// ([`JournalError::Io`]).
pub fn recover(dir: &Path) -> Result<Recovered, JournalError> {
    let (head, head_error) = match read_head(dir) {
        Ok(head) => (head, None),
        Err(JournalError::Corrupted(why)) => (None, Some(why)),
        Err(other) => return Err(other),
    };
    let mut scan = scan_segments(dir)?;
    scan.head = head.clone().map(|h| (h.count, h.hash));
    let problem = match (&head_error, &scan.damage, check_head(&scan)) {
        (Some(why), _, _) => why.clone(),
        (None, Some(damage), _) => damage.to_string(),
        (None, None, Err(error)) => error.to_string(),
        (None, None, Ok(())) => return Err(JournalError::Intact),
    };
    // Past every sequence number the head or any segment may hold: a segment's records are
    // numbered from its name, one per line.
    let mut end = scan.next_seq.max(head.as_ref().map_or(0, |h| h.count));
    for segment in &scan.segments {
        let first = segment
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        let bytes = std::fs::read(segment).map_err(io)?;
        let lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count() as u64;
        // Past the segment's name too: a new segment must sort after every one there is.
        end = end.max(first + lines.max(1));
    }
    let from = scan.next_seq;
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
        "prev": scan.last_hash,
    });
    let line = record.to_string();
    let path = dir.join(segment_name(end));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    sync_dir(dir)?;
    write_head(
        dir,
        &Head {
            count: end + 1,
            hash: line_hash(&line),
        },
        true,
    )?;
    Ok(Recovered {
        problem,
        void: (from, end),
        seq: end,
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

/// The writer's state: the open segment, the next sequence number, the chain's synced end, and
/// the failure not yet resumed from.
#[derive(Debug)]
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
}

impl Writer {
    /// Writes `batch` and syncs it; on success every record has its `seq` and the head follows.
    /// Returns the first record's sequence number. Within `retry_after` of a failure, with
    /// `hold_off`, refuses without touching the disk.
    fn commit(
        &mut self,
        batch: &mut [Map<String, Value>],
        hold_off: bool,
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
        let first = self.next_seq;
        let mut seq = first;
        let mut hash = self.last_hash.clone();
        let mut text = String::new();
        let mut push = |record: &mut Map<String, Value>| -> Result<(), JournalError> {
            record.insert("seq".into(), Value::from(seq));
            record.insert("prev".into(), Value::from(hash.clone()));
            let line =
                serde_json::to_string(record).map_err(|e| JournalError::Io(e.to_string()))?;
            hash = line_hash(&line);
            text.push_str(&line);
            text.push('\n');
            seq += 1;
            Ok(())
        };
        if let Some(failure) = &self.failure {
            let Value::Object(mut resumed) = json!({
                "kind": RESUMED,
                "time": now(),
                "void": [failure.void_from, first],
                "error": failure.error,
                "failed_commits": failure.commits,
            }) else {
                unreachable!("json! of an object")
            };
            push(&mut resumed)?;
        }
        for record in batch.iter_mut() {
            push(record)?;
        }
        let end = seq;
        let batch_first = end - batch.len() as u64;
        match self.write(&text, first, end, &hash) {
            Ok(()) => {
                self.next_seq = end;
                self.last_hash = hash;
                self.failure = None;
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
    /// named `first` when there is none or it is full), syncs it and replaces the head.
    fn write(&mut self, text: &str, first: u64, end: u64, hash: &str) -> Result<(), JournalError> {
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
        let head = Head {
            count: end,
            hash: hash.to_owned(),
        };
        write_head(&self.config.dir, &head, false)
    }
}

/// A journal's writing end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::Sender<Append>,
}

/// What opening found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// Intact records in the journal.
    pub records: u64,
    /// Bytes of a torn tail that were cut off (0 when the last write was whole).
    pub cut_bytes: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, cuts a torn tail beyond what the head
    /// counts and starts its writer under `supervisor`.
    ///
    /// Errors: the folder cannot be created or read; [`JournalError::Corrupted`] when a record
    /// the head counts is damaged and nothing explains it, or the head does not match the records
    /// (an operator's [`recover`] decides), or damage before the last segment without a head.
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
        Self::open_with(config, supervisor, observer, Arc::default())
    }

    /// [`Journal::open_observed`] whose writer fails the next `fail_syncs` syncs.
    fn open_with(
        config: JournalConfig,
        supervisor: &Supervisor,
        observer: CommitObserver,
        fail_syncs: Arc<AtomicU32>,
    ) -> Result<(Self, Opened), JournalError> {
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let scan = scan(&config.dir)?;
        let counted = scan.head.as_ref().map_or(0, |(count, _)| *count);
        if let Some(damage) = &scan.damage
            && damage.record < counted
        {
            return Err(JournalError::Corrupted(format!(
                "{damage}, which the head counts (it says {counted} records)"
            )));
        }
        check_head(&scan)?;
        let cut_bytes = match &scan.damage {
            Some(damage) => cut(&scan, damage)?,
            None => 0,
        };
        let writer = Writer {
            file: None,
            next_seq: scan.next_seq,
            last_hash: scan.last_hash,
            failure: None,
            config,
            fail_syncs,
        };
        let opened = Opened {
            records: scan.records.len() as u64,
            cut_bytes,
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
fn cut(scan: &Scan, damage: &Damage) -> Result<u64, JournalError> {
    let at = scan
        .segments
        .iter()
        .position(|s| *s == damage.segment)
        .unwrap_or(0);
    let later = &scan.segments[at + 1..];
    if !later.is_empty() && scan.head.is_none() {
        return Err(JournalError::Corrupted(damage.to_string()));
    }
    let file = OpenOptions::new()
        .write(true)
        .open(&damage.segment)
        .map_err(io)?;
    let mut cut_bytes = file.metadata().map_err(io)?.len() - damage.offset;
    file.set_len(damage.offset)
        .and_then(|()| file.sync_all())
        .map_err(io)?;
    for segment in later {
        cut_bytes += std::fs::metadata(segment).map_err(io)?.len();
        std::fs::remove_file(segment).map_err(io)?;
    }
    if !later.is_empty() {
        sync_dir(scan.segments[0].parent().unwrap_or(Path::new(".")))?;
    }
    Ok(cut_bytes)
}

/// The writer task: batches what is queued, commits it off the async workers, answers. It ends
/// when every [`Journal`] handle is gone, not on shutdown's cancellation: the tasks that write
/// records (the control gate's last refusal summary) stop at the same time and their last
/// records must still reach the disk; shutdown waits for them as for any task. Ending after a
/// failed commit not yet resumed, it writes the resume record alone (if the disk takes it).
async fn run(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Append>,
    observer: CommitObserver,
) -> anyhow::Result<()> {
    let mut queued = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            if writer.failure.is_some() {
                tokio::task::spawn_blocking(move || {
                    let _ = writer.commit(&mut [], false);
                })
                .await?;
            }
            return Ok(());
        };
        queued.push(first);
        while let Ok(more) = rx.try_recv() {
            queued.push(more);
        }
        let (mut records, acks): (Vec<_>, Vec<_>) =
            queued.drain(..).map(|a| (a.record, a.ack)).unzip();
        let (back, result) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let result = writer.commit(&mut records, true);
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
        assert_eq!(verified.records.len(), 20);
        assert!(verified.segments > 2, "{}", verified.segments);
        // Reopened, the chain goes on where it ended.
        let supervisor = Supervisor::new();
        let (journal, opened) = reopen(dir.path(), &supervisor);
        assert_eq!(
            opened,
            Opened {
                records: 20,
                cut_bytes: 0
            }
        );
        assert_eq!(journal.append(json!({ "after": true })).await, Ok(20));
        assert_eq!(verify(dir.path()).unwrap().records.len(), 21);
        assert_eq!(
            journal.append(json!(["not", "an", "object"])).await,
            Err(JournalError::NotAnObject)
        );
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
        assert_eq!(opened.records, 5);
        assert_eq!(opened.cut_bytes, torn.len() as u64);
        assert_eq!(journal.append(json!({ "next": 1 })).await, Ok(5));
        assert_eq!(verify(dir.path()).unwrap().records.len(), 6);
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
        let (journal, _) =
            Journal::open_with(config, supervisor, Arc::new(|_| {}), Arc::clone(&fail)).unwrap();
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
        let verified = verify(dir.path()).unwrap();
        let kept: Vec<u64> = verified
            .records
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(kept, [0, 1, 3, 4, 5]);
        assert_eq!(verified.records[2]["kind"], RESUMED);
        assert_eq!(verified.records[2]["void"], json!([2, 3]));
        assert_eq!(
            verified.records[2]["prev"],
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
        assert_eq!(
            opened,
            Opened {
                records: 5,
                cut_bytes: 0
            }
        );
        assert_eq!(journal.append(json!({ "i": 5 })).await, Ok(6));
        assert_eq!(verify(dir.path()).unwrap().records.len(), 6);
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
        let verified = verify(dir.path()).unwrap();
        assert_eq!(
            verified
                .void
                .iter()
                .map(|v| (v.from, v.to))
                .collect::<Vec<_>>(),
            [(1, 4)]
        );
        assert_eq!(verified.records[1]["failed_commits"], 2);
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
        let verified = verify(dir.path()).unwrap();
        assert_eq!(verified.records.len(), 2);
        assert_eq!(verified.records[1]["kind"], RESUMED);
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
        let verified = verify(dir.path()).unwrap();
        assert_eq!(verified.records.len(), 4);
        let record = &verified.records[3];
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
        assert_eq!(opened.records, 4);
        assert_eq!(journal.append(json!({ "after": true })).await, Ok(11));
        assert_eq!(verify(dir.path()).unwrap().records.len(), 5);
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
        assert_eq!(verify(dir.path()).unwrap().records.len(), 5);

        std::fs::write(&head, "").unwrap();
        assert!(verify(dir.path()).is_err());
        let recovered = recover(dir.path()).unwrap();
        assert!(
            recovered.problem.starts_with("head.json"),
            "{}",
            recovered.problem
        );
        let verified = verify(dir.path()).unwrap();
        assert_eq!(verified.records.len(), 6);
        assert_eq!(verified.records[5]["head"], Value::Null);
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
        assert_eq!(
            opened,
            Opened {
                records: 4,
                cut_bytes: 12 + 20
            }
        );
        assert_eq!(std::fs::metadata(&segment).unwrap().len(), length);
        assert_eq!(segments(dir.path()).unwrap().len(), 1);
        assert_eq!(journal.append(json!({ "next": 1 })).await, Ok(4));
        assert_eq!(verify(dir.path()).unwrap().records.len(), 5);
    }
}
