//! Reading the change log from an offset, in constant memory (one batch at a time), in this
//! process or another one (`twinloom change-log dump`).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::watch;

use super::format::{self, Damaged, Entry, FRAME_HEADER, GapReason, Record, SEGMENT_MAGIC};
use super::store::{self, StoreError};

/// A reader of the log in a folder, from an offset on. Each [`Self::try_next`] hands out the next
/// record, in offset order, each offset at most once. Where the offsets it wants were deleted
/// (the budget forced the oldest segments out) it hands out a [`GapReason::Deleted`] gap record
/// (at the first offset it could read) and goes on; where a segment's tail is damaged (a write
/// that failed) it goes on in the next segment, whose gap record names the void offsets.
#[derive(Debug)]
pub struct Reader {
    dir: PathBuf,
    /// The offset of the next record to hand out.
    next: u64,
    /// The segment being read: first offset, file, read position.
    segment: Option<(u64, File, u64)>,
    frame: Vec<u8>,
    pending: VecDeque<Entry>,
    /// A jump to a later segment over offsets `from..to`: unless that segment opens with a gap
    /// record naming them void, they were deleted.
    jumped: Option<std::ops::Range<u64>>,
}

/// Why reading stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The newest segment is damaged before its end, beyond a torn tail (a torn tail is a
    /// batch still being written, and waited for).
    #[error("segment {segment}: {damage}")]
    Damaged {
        /// The segment's file name.
        segment: String,
        /// What is wrong.
        damage: Damaged,
    },
}

impl Reader {
    /// A reader of the log folder `dir` whose first record will be the one at `from` (or the
    /// first after it that exists).
    pub fn new(dir: impl Into<PathBuf>, from: u64) -> Self {
        Self {
            dir: dir.into(),
            next: from,
            segment: None,
            frame: Vec::new(),
            pending: VecDeque::new(),
            jumped: None,
        }
    }

    /// The offset after the last record handed out (what a consumer commits as its cursor once
    /// it has dealt with everything before it).
    pub fn position(&self) -> u64 {
        self.next
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next record, or `None` when there is nothing more on disk yet. Does not wait.
    ///
    /// Errors: a file cannot be read, or the newest segment is damaged.
    pub fn try_next(&mut self) -> Result<Option<Entry>, ReadError> {
        loop {
            while let Some(entry) = self.pending.pop_front() {
                if entry.offset >= self.next {
                    self.next = entry.offset + 1;
                    return Ok(Some(entry));
                }
            }
            if self.segment.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            match self.read_batch()? {
                Some(()) => continue,
                None => {
                    // The end of this segment: go on to a later one, if there is one.
                    let Some((base, _, _)) = &self.segment else {
                        return Ok(None);
                    };
                    let later = store::segments(&self.dir)?
                        .into_iter()
                        .find(|(b, _, _)| b > base);
                    match later {
                        Some((later, _, _)) => {
                            if later > self.next {
                                self.jumped = Some(self.next..later);
                            }
                            self.next = self.next.max(later);
                            self.segment = None;
                        }
                        None => return Ok(None),
                    }
                }
            }
        }
    }

    /// Waits for the next record: returns it once it is on disk. `written` is the log's
    /// [`super::ChangeLog::subscribe`] (the offset after the last record written), so the reader
    /// wakes on new data instead of polling.
    ///
    /// Errors: as [`Self::try_next`]; and [`StoreError::Io`] when the log stopped (its writer ended).
    pub async fn next_wait(
        &mut self,
        written: &mut watch::Receiver<u64>,
    ) -> Result<Entry, ReadError> {
        loop {
            if let Some(entry) = self.try_next()? {
                return Ok(entry);
            }
            if written.changed().await.is_err() {
                // The writer is gone; what it wrote is on disk: one more look.
                return self
                    .try_next()?
                    .ok_or_else(|| StoreError::Io("the change log stopped".into()).into());
            }
        }
    }

    /// Opens the segment holding `self.next` (or the first after it); `false` when there is no
    /// segment at all.
    fn open_segment(&mut self) -> Result<bool, ReadError> {
        let found = store::segments(&self.dir)?;
        let Some(first) = found.first() else {
            return Ok(false);
        };
        let (base, path) = match found.iter().rev().find(|(b, _, _)| *b <= self.next) {
            Some((base, path, _)) => (*base, path.clone()),
            None => {
                // Deleted before this reader got to them.
                let (base, path) = (first.0, first.1.clone());
                // The gap takes the first deleted offset (no record has it any more).
                self.pending.push_back(Entry {
                    offset: self.next,
                    record: Record::Gap {
                        reason: GapReason::Deleted,
                        lost: None,
                        void: self.next..base,
                        at: SystemTime::now(),
                    },
                });
                let file = open(&path)?;
                self.segment = Some((base, file, 8));
                return Ok(true);
            }
        };
        let file = open(&path)?;
        let mut magic = [0u8; 8];
        if file.read_exact_at(&mut magic, 0).is_err() || &magic != SEGMENT_MAGIC {
            return Err(ReadError::Damaged {
                segment: store::segment_name(base),
                damage: Damaged::Corrupted("not a change log segment"),
            });
        }
        self.segment = Some((base, file, 8));
        Ok(true)
    }

    /// Reads the next whole batch of the open segment into `pending`: `Some` when one was read,
    /// `None` at its end (or a damaged tail followed by a later segment, or a batch still being
    /// written).
    fn read_batch(&mut self) -> Result<Option<()>, ReadError> {
        let Some((base, file, pos)) = self.segment.as_mut() else {
            return Ok(None);
        };
        let mut header = [0u8; FRAME_HEADER];
        let have = read_at_most(file, &mut header, *pos)?;
        if have == 0 {
            return Ok(None);
        }
        let damage = match format::frame_len(&header[..have]) {
            Ok(len) => {
                self.frame.resize(len, 0);
                let got = read_at_most(file, &mut self.frame, *pos)?;
                if got < len {
                    Damaged::Torn {
                        need: len,
                        have: got,
                    }
                } else {
                    let mut entries = Vec::new();
                    match format::decode(&self.frame, &mut entries) {
                        Ok(_) => {
                            if let Some(jumped) = self.jumped.take() {
                                let explained = matches!(
                                    entries.first(),
                                    Some(Entry { record: Record::Gap { void, .. }, .. })
                                        if void.start <= jumped.start && void.end >= jumped.end
                                );
                                if !explained {
                                    // Segments between were deleted (the budget) while this
                                    // reader was behind them.
                                    self.next = jumped.start;
                                    self.pending.push_back(Entry {
                                        offset: jumped.start,
                                        record: Record::Gap {
                                            reason: GapReason::Deleted,
                                            lost: None,
                                            void: jumped,
                                            at: SystemTime::now(),
                                        },
                                    });
                                }
                            }
                            self.pending.extend(entries);
                            *pos += len as u64;
                            return Ok(Some(()));
                        }
                        Err(damage) => damage,
                    }
                }
            }
            Err(damage) => damage,
        };
        // Damage: a later segment means this tail will never be completed.
        let base = *base;
        let later = store::segments(&self.dir)?
            .into_iter()
            .any(|(b, _, _)| b > base);
        match damage {
            _ if later => Ok(None),
            Damaged::Torn { .. } => Ok(None),
            damage => Err(ReadError::Damaged {
                segment: store::segment_name(base),
                damage,
            }),
        }
    }
}

fn open(path: &Path) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))
}

fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> Result<usize, StoreError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::Io(e.to_string())),
        }
    }
    Ok(done)
}
