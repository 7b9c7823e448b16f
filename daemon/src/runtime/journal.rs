//! A durable, tamper-evident, append-only journal of JSON records: the audit log's store (and,
//! later, history's).
//!
//! On disk, a folder holds segments `<seq of first record, 20 digits>.jsonl` and a head file
//! `head.json`. Each segment is JSON lines; every record carries its sequence number `seq`
//! (from 0, contiguous over all segments) and `prev`, the SHA-256 (hex) of the previous record's
//! line (64 zeros for the first): one chain over the whole journal, continued across rotation, so
//! an edited, removed or reordered record breaks it. The head file holds the record count and the
//! hash of the last record as of the last commit; a journal that has fewer records than its head
//! says was cut off.
//!
//! Writing: [`Journal::append`] queues a record and waits until it is on disk. One writer task
//! takes every record queued meanwhile as one batch (group commit): writes the lines, `fdatasync`s
//! the segment, then replaces the head (write to a temporary file, rename; the head may lag behind
//! after a crash, never run ahead). A segment past [`JournalConfig::segment_bytes`] is closed and
//! the next batch starts a new one. Before each batch the writer checks that the file system
//! keeps [`JournalConfig::reserve_bytes`] free; when it does not, or a write or sync fails, the
//! batch is refused ([`JournalError`]) and nothing of it counts as written.
//!
//! Opening recovers a torn tail: a last line without its newline, or one that does not parse or
//! does not continue the chain, in the last segment (what a crash during a write leaves) is cut
//! off. Damage anywhere else is corruption: [`Journal::open`] refuses the journal and [`verify`]
//! names the record.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::Supervisor;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Records queued for the writer before `append` waits.
pub const JOURNAL_QUEUE_CAPACITY: usize = 4096;

/// Where and how a journal keeps its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The folder of segments and head file (created when missing).
    pub dir: PathBuf,
    /// A segment is closed once it holds this many bytes. Default 64 MiB.
    pub segment_bytes: u64,
    /// Bytes the file system must keep free for a batch to be written. Default 64 MiB.
    pub reserve_bytes: u64,
}

impl JournalConfig {
    /// Defaults for a journal in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            reserve_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a journal cannot be opened or a record was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or syncing failed.
    #[error("journal I/O failed: {0}")]
    Io(String),
    /// The file system has less free space than the reserve.
    #[error("journal disk full: {free} bytes free, {reserve} kept in reserve")]
    DiskFull {
        /// Free bytes.
        free: u64,
        /// The reserve.
        reserve: u64,
    },
    /// A record before the tail is damaged, or the head says more records than there are.
    #[error("journal corrupted: {0}")]
    Corrupted(String),
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

/// The head file's content.
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

/// A damaged record: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub segment: PathBuf,
    /// Its line, from 1.
    pub line: u64,
    /// The record number the line should hold.
    pub record: u64,
    /// What is wrong.
    pub why: String,
    /// Byte offset of the line in the segment.
    offset: u64,
}

/// What a scan of a journal found.
#[derive(Debug, Clone, PartialEq)]
pub struct Scan {
    /// Intact records, in order.
    pub records: Vec<Map<String, Value>>,
    /// The hash of the last intact record ([`GENESIS`] when none).
    pub last_hash: String,
    /// The first damaged line, if any (nothing after it is read).
    pub damage: Option<Damage>,
    /// The head file's count and hash, if there is one.
    pub head: Option<(u64, String)>,
    /// The segment files.
    pub segments: Vec<PathBuf>,
}

/// Reads every record of the journal in `dir`, checking the chain, up to the first damage.
///
/// Errors: the folder or a segment cannot be read; the head file does not parse.
pub fn scan(dir: &Path) -> Result<Scan, JournalError> {
    let segments = segments(dir)?;
    let head = read_head(dir)?.map(|h| (h.count, h.hash));
    let mut records = Vec::new();
    let mut last_hash = GENESIS.to_owned();
    let mut damage = None;
    'segments: for segment in &segments {
        let mut reader = BufReader::new(File::open(segment).map_err(io)?);
        let (mut offset, mut number) = (0u64, 0u64);
        loop {
            let mut line = String::new();
            let read = match reader.read_line(&mut line) {
                Ok(read) => read,
                Err(e) => {
                    // Not UTF-8: damaged from here.
                    damage = Some(Damage {
                        segment: segment.clone(),
                        line: number + 1,
                        record: records.len() as u64,
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
            let record = records.len() as u64;
            let why = check_line(&line, record, &last_hash);
            match why {
                Ok(parsed) => {
                    last_hash = line_hash(line.trim_end_matches('\n'));
                    records.push(parsed);
                }
                Err(why) => {
                    damage = Some(Damage {
                        segment: segment.clone(),
                        line: number,
                        record,
                        why,
                        offset,
                    });
                    break 'segments;
                }
            }
            offset += read as u64;
        }
    }
    Ok(Scan {
        records,
        last_hash,
        damage,
        head,
        segments,
    })
}

/// Checks one line as record `record` following `prev`.
fn check_line(line: &str, record: u64, prev: &str) -> Result<Map<String, Value>, String> {
    let Some(text) = line.strip_suffix('\n') else {
        return Err("the line has no end (a torn write)".into());
    };
    let parsed: Map<String, Value> =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    if parsed.get("seq").and_then(Value::as_u64) != Some(record) {
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
    /// Every record, in order.
    pub records: Vec<Map<String, Value>>,
    /// Segment files.
    pub segments: usize,
}

/// Checks the journal in `dir`: every record continues the chain, and the head's count and hash
/// match a record (records after the head are the last batch, written before a crash let the
/// head follow).
///
/// Errors: [`JournalError::Corrupted`] naming the first damaged record (with segment and line),
/// or the head that the records do not reach or do not match.
pub fn verify(dir: &Path) -> Result<Verified, JournalError> {
    let scan = scan(dir)?;
    if let Some(damage) = &scan.damage {
        return Err(JournalError::Corrupted(format!(
            "record {} ({}, line {}): {}",
            damage.record,
            damage.segment.display(),
            damage.line,
            damage.why
        )));
    }
    check_head(&scan)?;
    Ok(Verified {
        segments: scan.segments.len(),
        records: scan.records,
    })
}

fn check_head(scan: &Scan) -> Result<(), JournalError> {
    let Some((count, hash)) = &scan.head else {
        return Ok(());
    };
    let have = scan.records.len() as u64;
    if *count > have {
        return Err(JournalError::Corrupted(format!(
            "the head says {count} records, the journal has {have}: records {have}..{count} were cut off"
        )));
    }
    if *count > 0 {
        // The hash of record count-1 is the `prev` of record count, or the last hash.
        let expected = match scan.records.get(*count as usize) {
            Some(next) => next.get("prev").and_then(Value::as_str).unwrap_or(""),
            None => scan.last_hash.as_str(),
        };
        if expected != hash {
            return Err(JournalError::Corrupted(format!(
                "record {} does not have the hash the head holds",
                count - 1
            )));
        }
    }
    Ok(())
}

/// A record to write and where to say it is on disk.
#[derive(Debug)]
struct Append {
    record: Map<String, Value>,
    ack: oneshot::Sender<Result<u64, JournalError>>,
}

/// Told how long each group commit took (write, `fdatasync`, head), e.g. to feed a histogram.
pub type CommitObserver = std::sync::Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// The writer's state: the open segment and the chain's end.
#[derive(Debug)]
struct Writer {
    config: JournalConfig,
    file: Option<(File, u64)>,
    count: u64,
    last_hash: String,
}

impl Writer {
    /// Writes `batch` and syncs it; on success every record has its `seq` and the head follows.
    fn commit(&mut self, batch: &mut [Map<String, Value>]) -> Result<u64, JournalError> {
        let free = fs4::available_space(&self.config.dir).map_err(io)?;
        if free < self.config.reserve_bytes {
            return Err(JournalError::DiskFull {
                free,
                reserve: self.config.reserve_bytes,
            });
        }
        let first = self.count;
        let mut text = String::new();
        let mut hash = self.last_hash.clone();
        for (i, record) in batch.iter_mut().enumerate() {
            record.insert("seq".into(), Value::from(first + i as u64));
            record.insert("prev".into(), Value::from(hash.clone()));
            let line =
                serde_json::to_string(record).map_err(|e| JournalError::Io(e.to_string()))?;
            hash = line_hash(&line);
            text.push_str(&line);
            text.push('\n');
        }
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
            File::open(&self.config.dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            self.file = Some((file, size));
        }
        let Some((file, size)) = self.file.as_mut() else {
            return Err(JournalError::Closed);
        };
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_data());
        if let Err(error) = written {
            // The segment's end is unknown: the next batch starts a new segment after recovery
            // would cut this one's torn tail; refuse until the daemon reopens the journal.
            self.file = None;
            return Err(io(error));
        }
        *size += text.len() as u64;
        self.count += batch.len() as u64;
        self.last_hash = hash;
        let head = Head {
            count: self.count,
            hash: self.last_hash.clone(),
        };
        let temporary = self.config.dir.join("head.json.partial");
        let head_text = serde_json::to_vec(&head).map_err(|e| JournalError::Io(e.to_string()))?;
        std::fs::write(&temporary, head_text)
            .and_then(|()| std::fs::rename(&temporary, self.config.dir.join("head.json")))
            .map_err(io)?;
        Ok(first)
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
    /// Records in the journal.
    pub records: u64,
    /// Bytes of a torn tail that were cut off (0 when the last write was whole).
    pub cut_bytes: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `config.dir`, recovers a torn tail and starts its writer
    /// under `supervisor`.
    ///
    /// Errors: the folder cannot be created or read; a record before the tail is damaged or the
    /// head says more records than there are ([`JournalError::Corrupted`]).
    pub fn open(
        config: JournalConfig,
        supervisor: &Supervisor,
    ) -> Result<(Self, Opened), JournalError> {
        Self::open_observed(config, supervisor, std::sync::Arc::new(|_| {}))
    }

    /// [`Journal::open`], telling `observer` how long each group commit takes.
    ///
    /// Errors: as [`Journal::open`].
    pub fn open_observed(
        config: JournalConfig,
        supervisor: &Supervisor,
        observer: CommitObserver,
    ) -> Result<(Self, Opened), JournalError> {
        std::fs::create_dir_all(&config.dir).map_err(io)?;
        let scan = scan(&config.dir)?;
        let mut cut_bytes = 0;
        if let Some(damage) = &scan.damage {
            if Some(&damage.segment) != scan.segments.last() {
                return Err(JournalError::Corrupted(format!(
                    "record {} ({}, line {}): {}",
                    damage.record,
                    damage.segment.display(),
                    damage.line,
                    damage.why
                )));
            }
            // A torn tail: cut the last segment at the damaged line.
            let file = OpenOptions::new()
                .write(true)
                .open(&damage.segment)
                .map_err(io)?;
            let length = file.metadata().map_err(io)?.len();
            cut_bytes = length - damage.offset;
            file.set_len(damage.offset)
                .and_then(|()| file.sync_all())
                .map_err(io)?;
        }
        check_head(&scan)?;
        let writer = Writer {
            file: None,
            count: scan.records.len() as u64,
            last_hash: scan.last_hash,
            config,
        };
        let opened = Opened {
            records: writer.count,
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
    /// ([`JournalError::DiskFull`], [`JournalError::Io`]); [`JournalError::Closed`] when the
    /// writer has stopped.
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

/// The writer task: batches what is queued, commits it off the async workers, answers. It ends
/// when every [`Journal`] handle is gone, not on shutdown's cancellation: the tasks that write
/// records (the control gate's last refusal summary) stop at the same time and their last
/// records must still reach the disk; shutdown waits for them as for any task.
async fn run(
    mut writer: Writer,
    mut rx: mpsc::Receiver<Append>,
    observer: CommitObserver,
) -> anyhow::Result<()> {
    let mut queued = Vec::new();
    loop {
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        queued.push(first);
        while let Ok(more) = rx.try_recv() {
            queued.push(more);
        }
        let (mut records, acks): (Vec<_>, Vec<_>) =
            queued.drain(..).map(|a| (a.record, a.ack)).unzip();
        let (back, result) = tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            let result = writer.commit(&mut records);
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
    use serde_json::json;

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
}
