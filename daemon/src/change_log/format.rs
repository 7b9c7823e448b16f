//! The change log's on-disk format: segments of length-prefixed, CRC-32C-checked batches.
//!
//! A segment file `<first offset, 20 digits>.log` starts with the 8 bytes [`SEGMENT_MAGIC`], then
//! batches back to back. A batch, all integers little-endian:
//!
//! ```text
//! len   u32   bytes of `body`
//! crc   u32   CRC-32C (Castagnoli; RFC 3720 §B.4) of `body`
//! body:
//!   offset  u64   offset of the first record (offsets rise by one per record, log-wide)
//!   count   u32   records in the batch
//!   time    i64   base time, µs since the Unix epoch (when the batch was built)
//!   records ...   `count` records
//! ```
//!
//! A record starts with its kind byte:
//!
//! - `0` change: `series` (LEB128), value (tag byte: `0` none, `1` false, `2` true, `3` int
//!   (zigzag LEB128), `4` uint (LEB128), `5` float (f64, 8 bytes), `6` string (LEB128 length,
//!   UTF-8)), quality (level byte `0` good `1` uncertain `2` bad; reason byte; a device exception's
//!   code byte or an upstream status code's u32), server time (zigzag LEB128 µs from the batch's
//!   base time), source time (`0` none, or `1` and zigzag LEB128 µs before the server time).
//! - `1` gap: reason byte ([`GapReason`]), lost changes (LEB128; 0 = unknown), first and end
//!   offset of a void range (LEB128 each; equal when none), time (zigzag LEB128 µs from base).
//! - `2` started, `3` stopped: time (zigzag LEB128 µs from base).
//! - `4` late change: the fields of a change; a value older (by source time) than the one the twin
//!   held, so never the current value ([`Record::Change`]'s `late`). Added after version 1's
//!   first release: logs without it read as before; a reader that predates it stops at the
//!   first such record as damage.
//!
//! A float change takes ≈ 13–19 bytes (series 1–2, tag, 8, quality 2, server time 1–3 — it is
//! up to ≈ 10 ms before the base —, source time 1–3); 18.8 measured at 100 000 changes/s.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::twin::{Quality, QualityLevel, QualityReason, Value};

/// The first 8 bytes of every segment (format version 1).
pub const SEGMENT_MAGIC: &[u8; 8] = b"TWLCLOG1";

/// Bytes before a batch's body: `len` and `crc`.
pub const FRAME_HEADER: usize = 8;

/// Largest batch body the reader accepts; a longer `len` is damage. The writer cuts batches well
/// below it ([`super::store::MAX_BATCH_BYTES`]).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// CRC-32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CRC.checksum(bytes)
}

/// Why a gap record is in the log: changes the twin accepted that the log does not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GapReason {
    /// The tap's hand-off was full (the log fell behind the twin): `lost` changes not taken.
    Overflow,
    /// The disk was full (or below the log's reserve): `lost` changes not written while degraded.
    DiskFull,
    /// A write failed: `lost` changes not written while degraded.
    WriteFailed,
    /// An `fdatasync` failed: the records `first..end` may not survive a power loss (the segment
    /// is never synced again; the log goes on in a new one).
    SyncFailed,
    /// The daemon before this start did not stop cleanly (killed, crashed, shutdown deadline):
    /// changes its tap still held are lost, how many is unknown.
    UncleanStop,
    /// Opening found a damaged tail and cut `first..end`-offset bytes off (see the log line).
    DamagedTail,
    /// Reader side only, never stored: segments holding `first..end` were deleted before this
    /// reader got to them (the budget `max_disk` forced it).
    Deleted,
    /// A source's server no longer had messages the source missed (an OPC UA Republish answered
    /// Bad_MessageNotAvailable, Part 4 §5.13.6): `lost` counts those *messages*; how many changes
    /// they held is unknown. Recorded when the loss is found, after the newer changes.
    Upstream,
}

impl GapReason {
    /// The reason's name for logs, metric labels and `twinloom change-log dump`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overflow => "overflow",
            Self::DiskFull => "disk-full",
            Self::WriteFailed => "write-failed",
            Self::SyncFailed => "sync-failed",
            Self::UncleanStop => "unclean-stop",
            Self::DamagedTail => "damaged-tail",
            Self::Deleted => "deleted",
            Self::Upstream => "upstream",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::Overflow => 0,
            Self::DiskFull => 1,
            Self::WriteFailed => 2,
            Self::SyncFailed => 3,
            Self::UncleanStop => 4,
            Self::DamagedTail => 5,
            Self::Deleted => 6,
            Self::Upstream => 7,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::Overflow,
            1 => Self::DiskFull,
            2 => Self::WriteFailed,
            3 => Self::SyncFailed,
            4 => Self::UncleanStop,
            5 => Self::DamagedTail,
            6 => Self::Deleted,
            7 => Self::Upstream,
            _ => return None,
        })
    }
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A change the twin accepted.
    Change {
        /// The property's series id (`series` table; stable across configuration changes).
        series: u32,
        /// The value in engineering units; `None` before the first good reading.
        value: Option<Value>,
        /// Its quality, reason and upstream status code.
        quality: Quality,
        /// When the device produced the value, if known.
        source_time: Option<SystemTime>,
        /// When the twin stored the change (a late one: when it arrived).
        server_time: SystemTime,
        /// A late sample: its source time is older than the value the twin held, so it never
        /// was the property's current value (OPC UA clients kept seeing the newer one). It
        /// belongs to the property's history at its source time, not to its live stream.
        late: bool,
    },
    /// Changes the log does not hold, and why.
    Gap {
        /// Why.
        reason: GapReason,
        /// How many changes, when known.
        lost: Option<u64>,
        /// Offsets `first..end` whose records may be missing (empty when none).
        void: std::ops::Range<u64>,
        /// When the gap was recorded.
        at: SystemTime,
    },
    /// A daemon started writing the log.
    Started {
        /// When.
        at: SystemTime,
    },
    /// A daemon stopped cleanly: everything its tap took is in the log before this record.
    Stopped {
        /// When.
        at: SystemTime,
    },
}

/// A record and its offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The record's offset: its place in the log, never reused.
    pub offset: u64,
    /// The record.
    pub record: Record,
}

/// Damage found while decoding a batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damaged {
    /// Fewer bytes than the frame announces: a write that did not finish (or is under way).
    #[error("torn batch: {need} bytes announced, {have} present")]
    Torn {
        /// Bytes the frame needs.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// The checksum does not match, or the frame or a record cannot be decoded.
    #[error("corrupted batch: {0}")]
    Corrupted(&'static str),
}

fn micros(at: SystemTime) -> i64 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_micros()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

fn from_micros(us: i64) -> Result<SystemTime, Damaged> {
    let at = if us >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_micros(us as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_micros(us.unsigned_abs()))
    };
    at.ok_or(Damaged::Corrupted("time out of range"))
}

/// Appends `v` as an unsigned LEB128 varint (7 bits a byte, least significant first; 1–10
/// bytes). Shared with the historian's chunks (`history::chunk`).
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-mapped (0, -1, 1, -2 … → 0, 1, 2, 3 …) as a varint.
pub(crate) fn put_zigzag(out: &mut Vec<u8>, v: i64) {
    put_varint(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Takes a varint ([`put_varint`]) off the front of `bytes`.
///
/// Errors: `Err(None)` when the bytes end inside it, `Err(Some(why))` when it is longer than
/// 10 bytes.
pub(crate) fn take_varint(bytes: &mut &[u8]) -> Result<u64, Option<&'static str>> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(None)?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(Some("varint longer than 10 bytes"))
}

/// Takes a zigzag varint ([`put_zigzag`]) off the front of `bytes`; errors as [`take_varint`].
pub(crate) fn take_zigzag(bytes: &mut &[u8]) -> Result<i64, Option<&'static str>> {
    let v = take_varint(bytes)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Builds one batch: [`Self::push`] records, then [`Self::finish`] the frame.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    base_us: i64,
    first: u64,
}

impl BatchBuilder {
    /// A batch whose first record gets offset `first` and whose times count from `base`,
    /// reusing `buf`'s allocation.
    pub fn new(mut buf: Vec<u8>, first: u64, base: SystemTime) -> Self {
        buf.clear();
        buf.extend_from_slice(&[0; FRAME_HEADER]);
        buf.extend_from_slice(&first.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        let base_us = micros(base);
        buf.extend_from_slice(&base_us.to_le_bytes());
        Self {
            buf,
            count: 0,
            base_us,
            first,
        }
    }

    /// Records so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Bytes so far, frame included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The offset the next record gets.
    pub fn next_offset(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    fn time(&mut self, at: SystemTime) {
        put_zigzag(&mut self.buf, micros(at).saturating_sub(self.base_us));
    }

    /// Appends `record`; returns its offset.
    pub fn push(&mut self, record: &Record) -> u64 {
        let offset = self.next_offset();
        let out = &mut self.buf;
        match record {
            Record::Change {
                series,
                value,
                quality,
                source_time,
                server_time,
                late,
            } => {
                out.push(if *late { 4 } else { 0 });
                put_varint(out, u64::from(*series));
                match value {
                    None => out.push(0),
                    Some(Value::Bool(false)) => out.push(1),
                    Some(Value::Bool(true)) => out.push(2),
                    Some(Value::Int(i)) => {
                        out.push(3);
                        put_zigzag(out, *i);
                    }
                    Some(Value::UInt(u)) => {
                        out.push(4);
                        put_varint(out, *u);
                    }
                    Some(Value::Float(f)) => {
                        out.push(5);
                        out.extend_from_slice(&f.to_le_bytes());
                    }
                    Some(Value::String(s)) => {
                        out.push(6);
                        put_varint(out, s.len() as u64);
                        out.extend_from_slice(s.as_bytes());
                    }
                }
                out.push(match quality.level {
                    QualityLevel::Good => 0,
                    QualityLevel::Uncertain => 1,
                    QualityLevel::Bad => 2,
                });
                put_reason(out, quality.reason);
                let server = micros(*server_time);
                put_zigzag(out, server.saturating_sub(self.base_us));
                match source_time {
                    None => out.push(0),
                    Some(at) => {
                        out.push(1);
                        put_zigzag(out, server.saturating_sub(micros(*at)));
                    }
                }
            }
            Record::Gap {
                reason,
                lost,
                void,
                at,
            } => {
                out.push(1);
                out.push(reason.code());
                put_varint(out, lost.unwrap_or(0));
                put_varint(out, void.start);
                put_varint(out, void.end);
                self.time(*at);
            }
            Record::Started { at } => {
                out.push(2);
                self.time(*at);
            }
            Record::Stopped { at } => {
                out.push(3);
                self.time(*at);
            }
        }
        self.count += 1;
        offset
    }

    /// The framed batch (length and checksum filled in).
    pub fn finish(mut self) -> Vec<u8> {
        let count_at = FRAME_HEADER + 8;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        let body_len = (self.buf.len() - FRAME_HEADER) as u32;
        let crc = crc32c(&self.buf[FRAME_HEADER..]);
        self.buf[0..4].copy_from_slice(&body_len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }
}

/// Appends a quality reason: one code byte (0–12), then a device exception's code (1 byte) or an
/// upstream StatusCode (4 bytes, little-endian). The change log's and the historian's form.
pub(crate) fn put_reason(out: &mut Vec<u8>, reason: QualityReason) {
    match reason {
        QualityReason::None => out.push(0),
        QualityReason::NotYetRead => out.push(1),
        QualityReason::CommunicationFailure => out.push(2),
        QualityReason::Timeout => out.push(3),
        QualityReason::NoConnection => out.push(4),
        QualityReason::DeviceException(code) => {
            out.push(5);
            out.push(code);
        }
        QualityReason::DecodeError => out.push(6),
        QualityReason::PluginFailure => out.push(7),
        QualityReason::InputsNotGood => out.push(8),
        QualityReason::ConfigurationError => out.push(9),
        QualityReason::OutOfRange => out.push(10),
        QualityReason::Stale => out.push(11),
        QualityReason::Upstream(code) => {
            out.push(12);
            out.extend_from_slice(&code.to_le_bytes());
        }
    }
}

/// Reads a body's fields in order.
struct Cursor<'a> {
    bytes: &'a [u8],
}

const SHORT: Damaged = Damaged::Corrupted("record runs past the batch");

impl Cursor<'_> {
    fn u8(&mut self) -> Result<u8, Damaged> {
        let (&first, rest) = self.bytes.split_first().ok_or(SHORT)?;
        self.bytes = rest;
        Ok(first)
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Damaged> {
        if self.bytes.len() < n {
            return Err(SHORT);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, Damaged> {
        take_varint(&mut self.bytes).map_err(|why| why.map_or(SHORT, Damaged::Corrupted))
    }

    fn zigzag(&mut self) -> Result<i64, Damaged> {
        take_zigzag(&mut self.bytes).map_err(|why| why.map_or(SHORT, Damaged::Corrupted))
    }
}

fn reason(cursor: &mut Cursor<'_>) -> Result<QualityReason, Damaged> {
    take_reason(&mut cursor.bytes).map_err(|why| why.map_or(SHORT, Damaged::Corrupted))
}

/// Takes a quality reason ([`put_reason`]) off the front of `bytes`.
///
/// Errors: `Err(None)` when the bytes end inside it, `Err(Some(why))` for an unknown code.
pub(crate) fn take_reason(bytes: &mut &[u8]) -> Result<QualityReason, Option<&'static str>> {
    let code = take_bytes(bytes, 1)?[0];
    Ok(match code {
        0 => QualityReason::None,
        1 => QualityReason::NotYetRead,
        2 => QualityReason::CommunicationFailure,
        3 => QualityReason::Timeout,
        4 => QualityReason::NoConnection,
        5 => QualityReason::DeviceException(take_bytes(bytes, 1)?[0]),
        6 => QualityReason::DecodeError,
        7 => QualityReason::PluginFailure,
        8 => QualityReason::InputsNotGood,
        9 => QualityReason::ConfigurationError,
        10 => QualityReason::OutOfRange,
        11 => QualityReason::Stale,
        12 => {
            let code = take_bytes(bytes, 4)?;
            QualityReason::Upstream(u32::from_le_bytes([code[0], code[1], code[2], code[3]]))
        }
        _ => return Err(Some("unknown quality reason")),
    })
}

/// The first `n` of `bytes`, taken off; `Err(None)` when there are fewer.
fn take_bytes<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], Option<&'static str>> {
    if bytes.len() < n {
        return Err(None);
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

/// The frame at the start of `bytes`: its total length (frame header included), or why there is
/// no whole, intact batch there. `Torn` when `bytes` ends before the batch does.
pub fn frame_len(bytes: &[u8]) -> Result<usize, Damaged> {
    if bytes.len() < FRAME_HEADER {
        return Err(Damaged::Torn {
            need: FRAME_HEADER,
            have: bytes.len(),
        });
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    if !(20..=MAX_BODY).contains(&len) {
        return Err(Damaged::Corrupted("batch length out of range"));
    }
    Ok(FRAME_HEADER + len)
}

/// Decodes the whole frame `frame` (as [`frame_len`] measured it) into `out`; returns the
/// offset after its last record.
///
/// Errors: [`Damaged::Corrupted`] when the checksum does not match or a record cannot be read.
pub fn decode(frame: &[u8], out: &mut Vec<Entry>) -> Result<u64, Damaged> {
    let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let body = &frame[FRAME_HEADER..];
    if crc32c(body) != crc {
        return Err(Damaged::Corrupted("checksum mismatch"));
    }
    let mut cursor = Cursor { bytes: body };
    let first = u64::from_le_bytes(cursor.take(8)?.try_into().map_err(|_| SHORT)?);
    let count = u32::from_le_bytes(cursor.take(4)?.try_into().map_err(|_| SHORT)?);
    let base = i64::from_le_bytes(cursor.take(8)?.try_into().map_err(|_| SHORT)?);
    for i in 0..u64::from(count) {
        let record = match cursor.u8()? {
            kind @ (0 | 4) => {
                let series =
                    u32::try_from(cursor.varint()?).map_err(|_| Damaged::Corrupted("series"))?;
                let value = match cursor.u8()? {
                    0 => None,
                    1 => Some(Value::Bool(false)),
                    2 => Some(Value::Bool(true)),
                    3 => Some(Value::Int(cursor.zigzag()?)),
                    4 => Some(Value::UInt(cursor.varint()?)),
                    5 => Some(Value::Float(f64::from_le_bytes(
                        cursor.take(8)?.try_into().map_err(|_| SHORT)?,
                    ))),
                    6 => {
                        let len = usize::try_from(cursor.varint()?).map_err(|_| SHORT)?;
                        let text = std::str::from_utf8(cursor.take(len)?)
                            .map_err(|_| Damaged::Corrupted("string not UTF-8"))?;
                        Some(Value::String(text.into()))
                    }
                    _ => return Err(Damaged::Corrupted("unknown value tag")),
                };
                let level = match cursor.u8()? {
                    0 => QualityLevel::Good,
                    1 => QualityLevel::Uncertain,
                    2 => QualityLevel::Bad,
                    _ => return Err(Damaged::Corrupted("unknown quality level")),
                };
                let reason = reason(&mut cursor)?;
                let server = base.saturating_add(cursor.zigzag()?);
                let source_time = match cursor.u8()? {
                    0 => None,
                    1 => Some(from_micros(server.saturating_sub(cursor.zigzag()?))?),
                    _ => return Err(Damaged::Corrupted("unknown source time tag")),
                };
                Record::Change {
                    series,
                    value,
                    quality: Quality { level, reason },
                    source_time,
                    server_time: from_micros(server)?,
                    late: kind == 4,
                }
            }
            1 => {
                let reason = GapReason::from_code(cursor.u8()?)
                    .ok_or(Damaged::Corrupted("unknown gap reason"))?;
                let lost = cursor.varint()?;
                let void = cursor.varint()?..cursor.varint()?;
                let at = from_micros(base.saturating_add(cursor.zigzag()?))?;
                Record::Gap {
                    reason,
                    lost: (lost > 0).then_some(lost),
                    void,
                    at,
                }
            }
            2 => Record::Started {
                at: from_micros(base.saturating_add(cursor.zigzag()?))?,
            },
            3 => Record::Stopped {
                at: from_micros(base.saturating_add(cursor.zigzag()?))?,
            },
            _ => return Err(Damaged::Corrupted("unknown record kind")),
        };
        out.push(Entry {
            offset: first + i,
            record,
        });
    }
    if !cursor.bytes.is_empty() {
        return Err(Damaged::Corrupted("bytes after the last record"));
    }
    Ok(first + u64::from(count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn time(us: i64) -> SystemTime {
        from_micros(us).unwrap()
    }

    fn value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
            any::<i64>().prop_map(|i| Some(Value::Int(i))),
            any::<u64>().prop_map(|u| Some(Value::UInt(u))),
            // NaN never equals itself; its bits round-trip all the same.
            any::<f64>()
                .prop_filter("not NaN", |f| !f.is_nan())
                .prop_map(|f| Some(Value::Float(f))),
            ".{0,20}".prop_map(|s| Some(Value::String(s.as_str().into()))),
        ]
    }

    fn quality() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::GOOD),
            Just(Quality::bad(QualityReason::Timeout)),
            any::<u8>().prop_map(|c| Quality::bad(QualityReason::DeviceException(c))),
            any::<u32>().prop_map(Quality::from_status_code),
            Just(Quality::uncertain(QualityReason::Stale)),
        ]
    }

    fn record() -> impl Strategy<Value = Record> {
        let t = -1_000_000_000_000i64..4_000_000_000_000_000;
        prop_oneof![
            (
                any::<u32>(),
                value(),
                quality(),
                proptest::option::of(t.clone()),
                t.clone(),
                any::<bool>(),
            )
                .prop_map(|(series, value, quality, source, server, late)| {
                    Record::Change {
                        series,
                        value,
                        quality,
                        source_time: source.map(time),
                        server_time: time(server),
                        late,
                    }
                }),
            // Every stored reason (6, `deleted`, is the reader's own).
            (0u8..7, 0u64..1000, 0u64..10, t.clone()).prop_map(|(r, lost, n, at)| Record::Gap {
                reason: GapReason::from_code(if r == 6 { 7 } else { r }).unwrap(),
                lost: (lost > 0).then_some(lost),
                void: 5..5 + n,
                at: time(at),
            }),
            t.clone().prop_map(|at| Record::Started { at: time(at) }),
            t.prop_map(|at| Record::Stopped { at: time(at) }),
        ]
    }

    proptest! {
        #[test]
        fn batches_round_trip(records in proptest::collection::vec(record(), 1..40), first in 0u64..1 << 40) {
            let mut batch = BatchBuilder::new(Vec::new(), first, time(1_700_000_000_000_000));
            for record in &records {
                batch.push(record);
            }
            let frame = batch.finish();
            prop_assert_eq!(frame_len(&frame).unwrap(), frame.len());
            let mut out = Vec::new();
            let end = decode(&frame, &mut out).unwrap();
            prop_assert_eq!(end, first + records.len() as u64);
            let decoded: Vec<Record> = out.iter().map(|e| e.record.clone()).collect();
            prop_assert_eq!(decoded, records);
        }
    }

    #[test]
    fn a_flipped_bit_or_a_short_frame_is_damage() {
        let mut batch = BatchBuilder::new(Vec::new(), 7, time(0));
        batch.push(&Record::Started { at: time(5) });
        let frame = batch.finish();
        for byte in FRAME_HEADER..frame.len() {
            let mut bad = frame.clone();
            bad[byte] ^= 0x10;
            assert!(decode(&bad, &mut Vec::new()).is_err(), "byte {byte}");
        }
        assert!(matches!(frame_len(&frame[..5]), Err(Damaged::Torn { .. })));
    }

    // Any bytes with a valid checksum decode or are refused as damage, never a panic.
    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 20..300)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
            frame.extend_from_slice(&crc32c(&body).to_le_bytes());
            frame.extend_from_slice(&body);
            let _ = decode(&frame, &mut Vec::new());
        }
    }

    /// The CRC-32C check value (RFC 3720 §B.4 and the CRC catalogue: "123456789" → 0xE3069283).
    #[test]
    fn the_checksum_is_crc32c() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
