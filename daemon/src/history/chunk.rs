//! A series' samples as one compressed chunk: what the historian stores per key.
//!
//! Samples follow each other with one control byte and only what changed (all integers LEB128,
//! signed ones zigzag):
//!
//! ```text
//! control  u8   bits 0–2 value: 0 same as the previous sample, 1 none, 2 false, 3 true,
//!                 4 int (zigzag delta from the previous int), 5 uint, 6 float (XOR with the
//!                 previous float: a byte of leading/trailing zero-byte counts, then the middle
//!                 bytes), 7 string (length, UTF-8)
//!               bit 3 quality follows (level byte, reason byte, and a device exception code
//!                 byte or an upstream status code u32 LE)
//!               bit 4 server-time offset follows (zigzag µs: server time − source time, as a
//!                 change from the previous sample's)
//!               bit 5 the sample is flagged (see [`Sample::flagged`])
//!               bit 6 time follows (zigzag µs: delta-of-delta of the source timestamps);
//!                 absent = the same step as before
//!               bit 7 (with value 6) the float is a decimal instead: one varint
//!                 `zigzag(m − m_prev) << 4 | code`, the value `m / 10^code` (code 0–9) or
//!                 `m × 10^-(code − 9)` (code 10–15, as `raw × 0.01` computes it), `m_prev` the
//!                 previous float times the same power of ten, rounded (0 when there is none)
//! ```
//!
//! The first sample's deltas are from zero. A sample sampled at a steady period with an
//! unchanged value and quality costs one byte; a float that moved a few steps of its last
//! decimal digit (a scaled register, a value with a fixed resolution) two.

use std::sync::Arc;

// The change log's varints: one encoding for both formats.
use crate::change_log::format::{
    put_reason, put_varint, put_zigzag, take_reason, take_varint, take_zigzag,
};
use crate::twin::{Quality, QualityLevel, Value};

/// One stored sample of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Its SourceTimestamp: when the device produced the value (the twin's server time when the
    /// source gives none), µs since the Unix epoch. History is indexed by it.
    pub time: i64,
    /// When the twin stored the change, µs since the Unix epoch.
    pub server_time: i64,
    /// The value in engineering units; `None` when there was none (a bad sample before any value).
    pub value: Option<Value>,
    /// Its quality: good, uncertain or bad, with the reason and upstream status code.
    pub quality: Quality,
    /// Stored but outside the window history is kept in order for: older than
    /// [`super::LATE_WINDOW`] behind the series' newest sample, or dated in the future
    /// (counted in `twinloom_history_flagged_samples_total`).
    pub flagged: bool,
}

/// The chunk could not be decoded (a damaged store).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("damaged history chunk: {0}")]
pub struct Damaged(pub &'static str);

/// Appends samples to a chunk's bytes.
#[derive(Debug, Clone, Default)]
pub struct Encoder {
    bytes: Vec<u8>,
    count: u32,
    time: i64,
    step: i64,
    offset: i64,
    value: Option<Value>,
    quality: Option<Quality>,
}

impl Encoder {
    /// Appends `sample` (any time order: deltas may be negative).
    pub fn push(&mut self, sample: &Sample) {
        let at = self.bytes.len();
        self.bytes.push(0);
        let mut control = 0u8;
        let kind = if self.count > 0 && same(&self.value, &sample.value) {
            0
        } else {
            match &sample.value {
                None => 1,
                Some(Value::Bool(false)) => 2,
                Some(Value::Bool(true)) => 3,
                Some(Value::Int(v)) => {
                    let previous = match self.value {
                        Some(Value::Int(p)) => p,
                        _ => 0,
                    };
                    put_zigzag(&mut self.bytes, v.wrapping_sub(previous));
                    4
                }
                Some(Value::UInt(v)) => {
                    put_varint(&mut self.bytes, *v);
                    5
                }
                Some(Value::Float(v)) => {
                    let previous = match self.value {
                        Some(Value::Float(p)) => p,
                        _ => 0.0,
                    };
                    if let Some(header) = decimal(*v, previous) {
                        put_varint(&mut self.bytes, header);
                        control |= 1 << 7;
                    } else {
                        put_xor(&mut self.bytes, v.to_bits() ^ previous.to_bits());
                    }
                    6
                }
                Some(Value::String(s)) => {
                    put_varint(&mut self.bytes, s.len() as u64);
                    self.bytes.extend_from_slice(s.as_bytes());
                    7
                }
            }
        };
        control |= kind;
        if self.quality != Some(sample.quality) {
            control |= 1 << 3;
            put_quality(&mut self.bytes, sample.quality);
            self.quality = Some(sample.quality);
        }
        let offset = sample.server_time.wrapping_sub(sample.time);
        if offset != self.offset {
            control |= 1 << 4;
            put_zigzag(&mut self.bytes, offset.wrapping_sub(self.offset));
            self.offset = offset;
        }
        if sample.flagged {
            control |= 1 << 5;
        }
        let step = sample.time.wrapping_sub(self.time);
        if step != self.step || self.count == 0 {
            control |= 1 << 6;
            put_zigzag(&mut self.bytes, step.wrapping_sub(self.step));
            self.step = step;
        }
        self.time = sample.time;
        self.bytes[at] = control;
        self.value.clone_from(&sample.value);
        self.count += 1;
    }

    /// Samples appended.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The encoded bytes so far.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoded bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// Encodes `samples` as one chunk.
pub fn encode(samples: &[Sample]) -> Vec<u8> {
    let mut encoder = Encoder::default();
    for sample in samples {
        encoder.push(sample);
    }
    encoder.into_bytes()
}

/// Decodes a chunk's bytes into `out` (appended, in stored order).
///
/// Errors: [`Damaged`] when the bytes are not a chunk.
pub fn decode(mut bytes: &[u8], out: &mut Vec<Sample>) -> Result<(), Damaged> {
    let mut time = 0i64;
    let mut step = 0i64;
    let mut offset = 0i64;
    let mut value: Option<Value> = None;
    let mut quality = Quality::GOOD;
    let cursor = &mut bytes;
    while !cursor.is_empty() {
        let control = u8_of(cursor)?;
        value = match control & 7 {
            0 => value,
            1 => None,
            2 => Some(Value::Bool(false)),
            3 => Some(Value::Bool(true)),
            4 => {
                let previous = match value {
                    Some(Value::Int(p)) => p,
                    _ => 0,
                };
                Some(Value::Int(previous.wrapping_add(zigzag(cursor)?)))
            }
            5 => Some(Value::UInt(varint(cursor)?)),
            6 => {
                let previous = match value {
                    Some(Value::Float(p)) => p,
                    _ => 0.0,
                };
                if control & (1 << 7) != 0 {
                    Some(Value::Float(from_decimal(varint(cursor)?, previous)))
                } else {
                    Some(Value::Float(f64::from_bits(
                        previous.to_bits() ^ xor(cursor)?,
                    )))
                }
            }
            _ => {
                let len = usize::try_from(varint(cursor)?).map_err(|_| SHORT)?;
                let text = take(cursor, len)?;
                let text = std::str::from_utf8(text).map_err(|_| Damaged("string not UTF-8"))?;
                Some(Value::String(Arc::from(text)))
            }
        };
        if control & (1 << 3) != 0 {
            quality = get_quality(cursor)?;
        }
        if control & (1 << 4) != 0 {
            offset = offset.wrapping_add(zigzag(cursor)?);
        }
        if control & (1 << 6) != 0 {
            step = step.wrapping_add(zigzag(cursor)?);
        }
        time = time.wrapping_add(step);
        out.push(Sample {
            time,
            server_time: time.wrapping_add(offset),
            value: value.clone(),
            quality,
            flagged: control & (1 << 5) != 0,
        });
    }
    Ok(())
}

/// Whether two values are the same stored value (floats bit for bit).
fn same(a: &Option<Value>, b: &Option<Value>) -> bool {
    match (a, b) {
        (Some(Value::Float(x)), Some(Value::Float(y))) => x.to_bits() == y.to_bits(),
        (a, b) => a == b,
    }
}

const SHORT: Damaged = Damaged("chunk ends inside a sample");

/// 10^s for the decimal scales a float may be stored at (exact in f64).
const SCALES: [f64; 10] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The steps 10^-s (s 1–6) of the multiplied form, as a scaled register's `raw × 0.01` gives.
const STEPS: [f64; 6] = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6];

/// A decimal form's code (the header's low 4 bits): 0–9 `m / 10^code`, 10–15
/// `m × 10^-(code − 9)`. Returns 10^s (what `m` counts) and the step of the multiplied form.
fn form(code: usize) -> (f64, Option<f64>) {
    if code < SCALES.len() {
        (SCALES[code], None)
    } else {
        (SCALES[code - 9], Some(STEPS[code - 10]))
    }
}

/// The float of `m` in form `code`: the same operation on both sides of the codec.
fn value_of(m: i64, code: usize) -> f64 {
    match form(code) {
        (scale, None) => m as f64 / scale,
        (_, Some(step)) => m as f64 * step,
    }
}

/// `x × scale` rounded to an integer (saturating; NaN is 0): the same on both sides.
fn scaled(x: f64, scale: f64) -> i64 {
    (x * scale).round() as i64
}

/// The decimal header of `v` after `previous` (see the module doc): the first form (codes 0–15)
/// that gives back `v` bit for bit from an integer `|m| < 2^53`; `None` when none does.
fn decimal(v: f64, previous: f64) -> Option<u64> {
    if !v.is_finite() {
        return None;
    }
    for code in 0..16 {
        let (scale, _) = form(code);
        let m = scaled(v, scale);
        if m.unsigned_abs() >= 1 << 53 {
            continue;
        }
        if value_of(m, code).to_bits() == v.to_bits() {
            let delta = m.wrapping_sub(scaled(previous, scale));
            let zz = ((delta << 1) ^ (delta >> 63)) as u64;
            return (zz < 1 << 59).then_some((zz << 4) | code as u64);
        }
    }
    None
}

/// The float a decimal header stands for after `previous`.
fn from_decimal(header: u64, previous: f64) -> f64 {
    let code = (header & 0xf) as usize;
    let zz = header >> 4;
    let delta = ((zz >> 1) as i64) ^ -((zz & 1) as i64);
    value_of(scaled(previous, form(code).0).wrapping_add(delta), code)
}

fn u8_of(cursor: &mut &[u8]) -> Result<u8, Damaged> {
    let (&first, rest) = cursor.split_first().ok_or(SHORT)?;
    *cursor = rest;
    Ok(first)
}

fn take<'a>(cursor: &mut &'a [u8], n: usize) -> Result<&'a [u8], Damaged> {
    if cursor.len() < n {
        return Err(SHORT);
    }
    let (head, rest) = cursor.split_at(n);
    *cursor = rest;
    Ok(head)
}

fn varint(cursor: &mut &[u8]) -> Result<u64, Damaged> {
    take_varint(cursor).map_err(|why| why.map_or(SHORT, Damaged))
}

fn zigzag(cursor: &mut &[u8]) -> Result<i64, Damaged> {
    take_zigzag(cursor).map_err(|why| why.map_or(SHORT, Damaged))
}

/// A non-zero XOR of two floats' bits: its leading and trailing zero bytes counted in one byte
/// (high and low nibble), then the bytes between, most significant first.
fn put_xor(out: &mut Vec<u8>, x: u64) {
    let lead = (x.leading_zeros() / 8).min(7) as u8;
    let trail = if x == 0 {
        0
    } else {
        (x.trailing_zeros() / 8) as u8
    };
    let trail = trail.min(7 - lead);
    out.push((lead << 4) | trail);
    let bytes = x.to_be_bytes();
    out.extend_from_slice(&bytes[usize::from(lead)..8 - usize::from(trail)]);
}

fn xor(cursor: &mut &[u8]) -> Result<u64, Damaged> {
    let counts = u8_of(cursor)?;
    let (lead, trail) = (usize::from(counts >> 4), usize::from(counts & 0xf));
    if lead + trail > 8 {
        return Err(Damaged("float XOR counts out of range"));
    }
    let middle = take(cursor, 8 - lead - trail)?;
    let mut bytes = [0u8; 8];
    bytes[lead..8 - trail].copy_from_slice(middle);
    Ok(u64::from_be_bytes(bytes))
}

fn put_quality(out: &mut Vec<u8>, quality: Quality) {
    out.push(match quality.level {
        QualityLevel::Good => 0,
        QualityLevel::Uncertain => 1,
        QualityLevel::Bad => 2,
    });
    put_reason(out, quality.reason);
}

fn get_quality(cursor: &mut &[u8]) -> Result<Quality, Damaged> {
    let level = match u8_of(cursor)? {
        0 => QualityLevel::Good,
        1 => QualityLevel::Uncertain,
        2 => QualityLevel::Bad,
        _ => return Err(Damaged("unknown quality level")),
    };
    let reason = take_reason(cursor).map_err(|why| why.map_or(SHORT, Damaged))?;
    Ok(Quality { level, reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::QualityReason;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
            any::<i64>().prop_map(|v| Some(Value::Int(v))),
            any::<u64>().prop_map(|v| Some(Value::UInt(v))),
            any::<f64>().prop_map(|v| Some(Value::Float(v))),
            (any::<i32>(), 0..12i32)
                .prop_map(|(m, s)| Some(Value::Float(f64::from(m) / 10f64.powi(s)))),
            (any::<i32>(), 1..7i32)
                .prop_map(|(m, s)| Some(Value::Float(f64::from(m) * 10f64.powi(-s)))),
            "[a-zé]{0,8}".prop_map(|s| Some(Value::String(Arc::from(s.as_str())))),
        ]
    }

    fn quality() -> impl Strategy<Value = Quality> {
        prop_oneof![
            Just(Quality::GOOD),
            Just(Quality::uncertain(QualityReason::Stale)),
            Just(Quality::bad(QualityReason::Timeout)),
            any::<u8>().prop_map(|c| Quality::bad(QualityReason::DeviceException(c))),
            any::<u32>().prop_map(Quality::from_status_code),
        ]
    }

    proptest! {
        #[test]
        fn chunks_round_trip(samples in prop::collection::vec(
            (any::<i64>(), -1_000_000i64..1_000_000, value(), quality(), any::<bool>()), 0..50)
        ) {
            let samples: Vec<Sample> = samples
                .into_iter()
                .map(|(time, offset, value, quality, flagged)| Sample {
                    time,
                    server_time: time.wrapping_add(offset),
                    value,
                    quality,
                    flagged,
                })
                .collect();
            let mut decoded = Vec::new();
            decode(&encode(&samples), &mut decoded).unwrap();
            prop_assert_eq!(decoded.len(), samples.len());
            for (a, b) in decoded.iter().zip(&samples) {
                prop_assert!(same(&a.value, &b.value));
                prop_assert_eq!((a.time, a.server_time, a.quality, a.flagged),
                    (b.time, b.server_time, b.quality, b.flagged));
            }
        }
    }

    /// Floats that are short decimals (and their neighbours by a few steps) cost two bytes;
    /// others round-trip bit for bit through the XOR form (table).
    #[test]
    fn decimal_floats_are_small_and_every_float_round_trips() {
        let cases: [(&[f64], Option<usize>); 7] = [
            (&[20.35, 20.36], Some(2)),
            (&[20.35, 20.32], Some(2)),
            (&[1.0, 4.0], Some(2)),
            (&[0.1 + 0.2, 0.1], None),
            (&[3.0 * 0.1, 4.0 * 0.1], Some(2)),
            (&[f64::NAN, -0.0], None),
            (&[1e300, 2.5e-7], None),
        ];
        for (values, second_costs) in cases {
            // The first value twice, so that the steady period costs nothing by the last.
            let values = [values[0], values[0], values[1]];
            let samples: Vec<Sample> = values
                .iter()
                .enumerate()
                .map(|(i, v)| Sample {
                    time: i as i64 * 1_000_000,
                    server_time: i as i64 * 1_000_000,
                    value: Some(Value::Float(*v)),
                    quality: Quality::GOOD,
                    flagged: false,
                })
                .collect();
            let bytes = encode(&samples);
            let mut decoded = Vec::new();
            decode(&bytes, &mut decoded).unwrap();
            for (a, b) in decoded.iter().zip(&samples) {
                assert!(same(&a.value, &b.value), "{values:?}");
            }
            if let Some(cost) = second_costs {
                assert_eq!(
                    bytes.len() - encode(&samples[..2]).len(),
                    cost,
                    "{values:?}"
                );
            }
        }
    }

    #[test]
    fn a_steady_unchanged_sample_costs_one_byte() {
        let sample = |i: i64| Sample {
            time: 1_000_000 * i,
            server_time: 1_000_000 * i + 3,
            value: Some(Value::Float(20.5)),
            quality: Quality::GOOD,
            flagged: false,
        };
        let head = encode(&[sample(0), sample(1)]).len();
        let all = encode(&(0..102).map(sample).collect::<Vec<_>>()).len();
        assert_eq!(all - head, 100);
    }
}
