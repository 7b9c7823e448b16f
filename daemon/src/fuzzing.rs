//! Fuzz target bodies (feature `fuzzing`): one function per target, each taking arbitrary bytes,
//! never panicking for any input, and checking a few cheap properties beyond that.
//!
//! The cargo-fuzz crate `daemon/fuzz/` calls them from its `fuzz_target!`s, and
//! `tests/fuzz_corpus.rs` runs every file of each saved corpus (`daemon/fuzz/corpus/<target>/`)
//! through them as ordinary tests, so the test command needs no instrumented build. A broken
//! property is an `assert!` here: libFuzzer reports it as a crash like any other panic.
//! How to run a campaign, and the figures measured: `docs/fuzzing.md`.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use arbitrary::{Arbitrary, Unstructured};
use opcua::types::{
    BinaryDecodable, ContextOwned, DataValue, DecodingOptions, NamespaceMap, Variant,
};

use crate::config::ConfigError;
use crate::config::sources::modbus::RegisterTable;
use crate::control::rule;
use crate::opcua_values::{from_variant, to_variant};
use crate::plugins::contract::{
    DerivedValues, MAX_REASON_BYTES, OutputCaps, Outputs, Setpoint, WriteProposal, reason,
};
use crate::plugins::runner::{DerivedVerdict, ProposalVerdict, check_derived, check_proposal};
use crate::sources::modbus::codec::{Encoding, Layout, WordOrder};
use crate::sources::modbus::plan::{self, Block, Limits, Point};
use crate::sources::modbus::poller::{Data, decode_block};
use crate::twin::model::Scaling;
use crate::twin::{DataType, PropertyId, QualityReason, Value};

/// The file name configurations are parsed as: in a folder that does not exist, so that checks
/// of referenced files (plugin components) answer the same on every machine.
const CONFIG_FILE: &str = "/nonexistent/twinloom-fuzz/twinloom.toml";

/// Every data type a property can have.
const DATA_TYPES: [DataType; 5] = [
    DataType::Bool,
    DataType::Integer,
    DataType::Unsigned,
    DataType::Float,
    DataType::String,
];

/// Feeds the bytes, when they are UTF-8, to the configuration loader as a file's text
/// (`config::parse`: both passes, shape and validation).
///
/// Checks: parse never panics and never reads a file; an invalid configuration has at least one
/// diagnostic, sorted by position, each with a message and a `line:col` inside the text (line
/// 1..=lines, column 1..=characters of that line + 1); a valid one builds its twin model, which
/// holds every asset, and every property's scaling is finite with a non-zero scale (writes
/// divide by it).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::config::parse(Path::new(CONFIG_FILE), text) {
        Ok(config) => {
            let model = config.twin_model();
            for asset in config.asset_specs() {
                assert!(
                    model.asset_by_path(&asset.path).is_some(),
                    "asset `{}` is missing from the model",
                    asset.path
                );
            }
            for property in model.properties() {
                let Scaling { scale, offset } = property.scaling;
                assert!(
                    scale.is_finite() && scale != 0.0 && offset.is_finite(),
                    "`{}` passed validation with scale {scale} and offset {offset}",
                    property.path
                );
            }
        }
        Err(ConfigError::Invalid(diagnostics)) => {
            assert!(!diagnostics.is_empty(), "invalid without a diagnostic");
            let lines: Vec<&str> = text.split('\n').collect();
            for pair in diagnostics.windows(2) {
                assert!(
                    (pair[0].line, pair[0].column) <= (pair[1].line, pair[1].column),
                    "diagnostics out of order: {} then {}",
                    pair[0],
                    pair[1]
                );
            }
            for diagnostic in &diagnostics {
                assert!(
                    !diagnostic.message.is_empty(),
                    "empty message: {diagnostic}"
                );
                assert!(
                    (1..=lines.len()).contains(&diagnostic.line),
                    "line outside the text ({} lines): {diagnostic}",
                    lines.len()
                );
                let columns = lines[diagnostic.line - 1].chars().count() + 1;
                assert!(
                    (1..=columns).contains(&diagnostic.column),
                    "column outside line {} ({columns} columns): {diagnostic}",
                    diagnostic.line
                );
                let shown = diagnostic.to_string();
                assert!(shown.starts_with(CONFIG_FILE), "{shown}");
            }
        }
        Err(error @ ConfigError::Read { .. }) => panic!("parse read a file: {error}"),
    }
}

/// One binding of the Modbus target, before it is made one that validation accepts.
#[derive(Debug, Arbitrary)]
struct PointSeed {
    address: u16,
    encoding: u8,
    order: u8,
    bit: u8,
    length: u8,
}

/// The Modbus target's input.
#[derive(Debug, Arbitrary)]
struct ModbusCase {
    table: u8,
    max_len: u16,
    max_gap: u16,
    points: Vec<PointSeed>,
    /// Registers (or bits, low bit of each) the device answers with, repeated as needed.
    reply: Vec<u16>,
    /// Registers (or bits) each reply falls short of the block; negative: longer.
    shortfall: Vec<i8>,
    /// A value to write through every layout.
    write: ValueSeed,
    scale: f64,
    offset: f64,
}

/// A twin value.
#[derive(Debug, Arbitrary)]
enum ValueSeed {
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    String(String),
}

impl ValueSeed {
    fn value(&self) -> Value {
        match self {
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(i) => Value::Int(*i),
            Self::UInt(u) => Value::UInt(*u),
            Self::Float(f) => Value::Float(*f),
            Self::String(s) => Value::String(s.as_str().into()),
        }
    }
}

/// Most bindings one Modbus case plans (a device's bindings of one table and poll interval).
const MAX_MODBUS_POINTS: usize = 256;

/// Feeds a device's bindings of one table (made valid as `config::sources::modbus` requires: bit 0..=15,
/// string length 1..=125, an order the encoding accepts, within 0..=65535) and request limits
/// (1..=125 registers or 1..=2000 bits per read) to the block planner, then replies of any length
/// to the per-block decoder (`poller::decode_block`, the codec per point), and a value to every
/// layout's encoder.
///
/// Checks: every point is in exactly one block; a block spans exactly its points (start at the
/// lowest, end at the highest end), within 0..=65535, and is no longer than the limit unless it
/// holds one point that is (so never past the protocol's 125 registers / 2000 bits, Modbus
/// Application Protocol v1.1b3 §6.1, §6.3); `plan::split` halves keep every point and span only
/// their own, down to single points; each block's reply gives one reading per point, in order,
/// the codec's value when the reply covers the point and `DecodeError` otherwise; a decoded value
/// encodes back to the same registers where the codec promises it (integers, non-NaN floats) and
/// otherwise decodes the same again (bool, bit, string, NaN); a value the encoder accepts gives
/// exactly the layout's registers and decodes to that value as the encoding holds it; raw →
/// engineering conversion gives the property's data type or an error.
pub fn modbus(data: &[u8]) {
    let Ok(case) = ModbusCase::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let table = [
        RegisterTable::Coil,
        RegisterTable::Discrete,
        RegisterTable::Input,
        RegisterTable::Holding,
    ][usize::from(case.table % 4)];
    let bits = table.is_bits();
    let limits = Limits {
        max_registers: 1 + case.max_len % 125,
        max_bits: 1 + case.max_len % 2000,
        max_gap_registers: case.max_gap,
        max_gap_bits: case.max_gap,
    };
    let (max_len, max_gap) = if bits {
        (u32::from(limits.max_bits), u32::from(limits.max_gap_bits))
    } else {
        (
            u32::from(limits.max_registers),
            u32::from(limits.max_gap_registers),
        )
    };
    let points: Vec<Point> = case
        .points
        .iter()
        .take(MAX_MODBUS_POINTS)
        .enumerate()
        .map(|(i, seed)| valid_point(i as u32, seed, bits))
        .collect();

    let blocks = plan::plan(table, points.clone(), &limits);
    let mut seen = vec![0u32; points.len()];
    let mut previous_start = 0u16;
    for block in &blocks {
        assert_eq!(block.table, table);
        assert!(block.start >= previous_start, "blocks out of order");
        previous_start = block.start;
        check_block_span(block);
        let single_wide = block.points.len() == 1 && u32::from(block.points[0].width) > max_len;
        assert!(
            u32::from(block.count) <= max_len || single_wide,
            "block of {} past the limit {max_len}",
            block.count
        );
        let protocol = if bits { 2000 } else { 125 };
        assert!(u32::from(block.count) <= protocol, "block past §6.1/§6.3");
        let mut end = u32::from(block.start);
        for point in &block.points {
            seen[point.property.0 as usize] += 1;
            assert!(
                u32::from(point.address).saturating_sub(end) <= max_gap,
                "gap past the limit"
            );
            end = end.max(point.end());
        }
        check_splits(block);
    }
    assert!(seen.iter().all(|n| *n == 1), "points not planned once each");

    let mut words = case.reply.iter().copied().cycle();
    let mut shortfalls = case.shortfall.iter().copied().cycle();
    let mut readings = Vec::new();
    for block in &blocks {
        let shortfall = shortfalls.next().unwrap_or(0);
        let len = (i32::from(block.count) - i32::from(shortfall)).max(0) as usize;
        let reply: Vec<u16> = if case.reply.is_empty() {
            vec![0; len]
        } else {
            words.by_ref().take(len).collect()
        };
        let data = if bits {
            Data::Bits(reply.iter().map(|w| w & 1 == 1).collect())
        } else {
            Data::Words(reply.clone())
        };
        readings.clear();
        let _ = decode_block(block, &data, &mut readings);
        assert_eq!(readings.len(), block.points.len());
        for (point, reading) in block.points.iter().zip(&readings) {
            assert_eq!(reading.property, point.property);
            let offset = usize::from(point.address - block.start);
            let covered = reply.get(offset..offset + usize::from(point.width));
            let expected = match covered {
                Some(slice) if bits => Ok(Value::Bool(slice[0] & 1 == 1)),
                Some(slice) => point
                    .layout
                    .decode(slice)
                    .map_err(|_| QualityReason::DecodeError),
                None => Err(QualityReason::DecodeError),
            };
            assert!(
                outcome_eq(&reading.outcome, &expected),
                "{point:?}: {:?} instead of {expected:?}",
                reading.outcome
            );
            if let (Some(slice), Ok(value), false) = (covered, &reading.outcome, bits) {
                check_reencode(&point.layout, slice, value);
            }
            if let Ok(raw) = &reading.outcome {
                check_to_eu(raw, case.scale, case.offset);
            }
        }
    }

    let value = case.write.value();
    for point in &points {
        check_encode(&point.layout, &value);
    }
}

/// A point that `config::sources::modbus` validation would accept, from its seed.
fn valid_point(id: u32, seed: &PointSeed, bits: bool) -> Point {
    let encoding = if bits {
        Encoding::Bool
    } else {
        Encoding::ALL[usize::from(seed.encoding) % Encoding::ALL.len()]
    };
    let order = WordOrder::ALL[usize::from(seed.order) % WordOrder::ALL.len()];
    let layout = Layout {
        encoding,
        order: if encoding.accepts(order) {
            order
        } else {
            WordOrder::Abcd
        },
        bit: if encoding == Encoding::Bit {
            seed.bit % 16
        } else {
            0
        },
        length: if encoding == Encoding::String {
            1 + u16::from(seed.length) % 125
        } else {
            0
        },
    };
    let width = if bits { 1 } else { layout.registers() as u16 };
    let address = seed.address.min((65_536 - u32::from(width)) as u16);
    Point {
        property: PropertyId(id),
        address,
        width,
        layout,
    }
}

/// A block starts at its lowest point, ends at its points' highest end, inside the address space.
fn check_block_span(block: &Block) {
    assert!(!block.points.is_empty(), "empty block");
    let start = block.points.iter().map(|p| p.address).min().unwrap_or(0);
    let end = block.points.iter().map(Point::end).max().unwrap_or(0);
    assert_eq!(
        block.start, start,
        "block does not start at its first point"
    );
    assert_eq!(
        u32::from(block.start) + u32::from(block.count),
        end,
        "block does not end at its last point"
    );
    assert!(end <= 65_536, "block past the address space");
}

/// Splitting a block, and its halves again down to single points, keeps every point once and
/// each half spans only its own points.
fn check_splits(block: &Block) {
    let mut pending = vec![block.clone()];
    let mut singles = Vec::new();
    while let Some(part) = pending.pop() {
        match plan::split(&part) {
            Some((left, right)) => {
                assert_eq!(left.points.len() + right.points.len(), part.points.len());
                for half in [&left, &right] {
                    assert!(!half.points.is_empty(), "empty half");
                    check_block_span(half);
                    assert!(half.count <= part.count, "half longer than its block");
                }
                pending.push(left);
                pending.push(right);
            }
            None => {
                assert_eq!(
                    part.points.len(),
                    1,
                    "split refused a block of several points"
                );
                singles.push(part.points[0].property);
            }
        }
    }
    let mut planned: Vec<PropertyId> = block.points.iter().map(|p| p.property).collect();
    planned.sort_by_key(|p| p.0);
    singles.sort_by_key(|p| p.0);
    assert_eq!(planned, singles, "splitting lost or doubled points");
}

/// Whether two reading outcomes are the same (NaN equal to NaN of the same bits).
fn outcome_eq(a: &Result<Value, QualityReason>, b: &Result<Value, QualityReason>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => value_eq(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    }
}

/// Value equality with floats compared by bits, so NaN equals the same NaN.
fn value_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
        _ => a == b,
    }
}

/// Registers that decoded to `value` encode back: to the same registers for integers and non-NaN
/// floats; for bool, bit, string and NaN (which drop information) to registers that decode the
/// same.
fn check_reencode(layout: &Layout, registers: &[u16], value: &Value) {
    let registers = &registers[..layout.registers()];
    let encoded = layout
        .encode(value)
        .unwrap_or_else(|e| panic!("{layout:?}: decoded {value} does not encode: {e}"));
    let exact = match layout.encoding {
        Encoding::Bool | Encoding::Bit | Encoding::String => false,
        Encoding::F32 | Encoding::F64 => !matches!(value, Value::Float(f) if f.is_nan()),
        _ => true,
    };
    if exact {
        assert_eq!(
            encoded, registers,
            "{layout:?}: {value} does not round-trip"
        );
    } else {
        let again = layout
            .decode(&encoded)
            .unwrap_or_else(|e| panic!("{layout:?}: re-encoded {value} does not decode: {e}"));
        let same = match (&again, value) {
            (Value::Float(a), Value::Float(b)) => a.is_nan() && b.is_nan(),
            _ => again == *value,
        };
        assert!(
            same,
            "{layout:?}: {value} decodes as {again} after encoding"
        );
    }
}

/// A value the encoder takes gives the layout's registers and decodes to that value as the
/// encoding holds it: integers exactly (floats rounded), floats to the nearest f32 for `f32`,
/// text as written without trailing blanks.
fn check_encode(layout: &Layout, value: &Value) {
    let Ok(words) = layout.encode(value) else {
        return;
    };
    assert_eq!(words.len(), layout.registers(), "{layout:?}: wrong length");
    let decoded = layout
        .decode(&words)
        .unwrap_or_else(|e| panic!("{layout:?}: encoded {value} does not decode: {e}"));
    let expected = match (layout.encoding, value) {
        (Encoding::Bool | Encoding::Bit, _) => value.as_bool().map(Value::Bool),
        (Encoding::F32, v) => v.as_f64().map(|f| Value::Float(f64::from(f as f32))),
        (Encoding::F64, v) => v.as_f64().map(Value::Float),
        (Encoding::String, Value::String(text)) => {
            let text = text.split('\0').next().unwrap_or_default();
            Some(Value::String(text.trim_end().into()))
        }
        (Encoding::I16 | Encoding::I32 | Encoding::I64, v) => rounded(v)
            .and_then(|i| i64::try_from(i).ok())
            .map(Value::Int),
        (_, v) => rounded(v)
            .and_then(|i| u64::try_from(i).ok())
            .map(Value::UInt),
    };
    let expected =
        expected.unwrap_or_else(|| panic!("{layout:?}: {value} encoded though it cannot"));
    assert!(
        value_eq(&decoded, &expected)
            || matches!((&decoded, &expected), (Value::Float(a), Value::Float(b)) if a.is_nan() && b.is_nan()),
        "{layout:?}: {value} encodes to {words:04X?}, which decodes as {decoded}, not {expected}"
    );
}

/// An integral view of a value for the integer encodings (floats rounded half away from zero).
fn rounded(value: &Value) -> Option<i128> {
    match value {
        Value::Float(f) if f.is_finite() => Some(f.round() as i128),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        _ => None,
    }
}

/// Raw → engineering units for every data type, unscaled and with `scale`/`offset` made
/// what validation accepts (finite, non-zero scale): each result is of the asked data type.
fn check_to_eu(raw: &Value, scale: f64, offset: f64) {
    let scale = if scale.is_finite() && scale != 0.0 {
        scale
    } else {
        1.0
    };
    let offset = if offset.is_finite() { offset } else { 0.0 };
    for scaling in [Scaling::IDENTITY, Scaling { scale, offset }] {
        for data_type in DATA_TYPES {
            if let Ok(eu) = scaling.to_eu(raw, data_type) {
                let kind_ok = matches!(
                    (data_type, &eu),
                    (DataType::Bool, Value::Bool(_))
                        | (DataType::Integer, Value::Int(_))
                        | (DataType::Unsigned, Value::UInt(_))
                        | (DataType::Float, Value::Float(_))
                        | (DataType::String, Value::String(_))
                );
                assert!(kind_ok, "{raw} → {eu} for a {data_type:?} property");
            }
        }
    }
}

/// The decoding context of the OPC UA target: the standard types' loaders and conservative
/// limits (8 KiB strings and byte strings, 8192 array elements, async-opcua's minimal nesting
/// depth, 64 KiB messages).
fn opcua_context() -> &'static ContextOwned {
    static CONTEXT: OnceLock<ContextOwned> = OnceLock::new();
    CONTEXT.get_or_init(|| {
        let options = DecodingOptions {
            max_message_size: 64 * 1024,
            ..DecodingOptions::minimal()
        };
        ContextOwned::new_default(NamespaceMap::new(), options)
    })
}

/// Feeds the bytes to async-opcua's binary decoder as a `DataValue` (OPC UA Part 6 §5.2.2.17:
/// a variant, status code and timestamps, as a data change notification carries it); what it
/// decodes goes through the OPC UA source's `readings` and `opcua_values::from_variant`. The
/// 16 bytes after the data value, if any, are a scaling (scale, offset; little-endian f64).
///
/// Checks: one reading per bound property; a bad status gives failed readings, a good one with a
/// variant the twin has no kind for gives `DecodeError`; a source time is after 1601-01-01 (DateTime's
/// null, none at all); a value that comes back from
/// `from_variant` survives `from_variant(to_variant(v)) == v` (NaN as NaN); raw → engineering
/// conversion gives the property's data type or an error.
pub fn opcua_value(data: &[u8]) {
    let context = opcua_context().context();
    let mut stream = Cursor::new(data);
    let Ok(value) = DataValue::decode(&mut stream, &context) else {
        return;
    };
    let rest = &data[stream.position() as usize..];
    let float = |at: usize| {
        rest.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(f64::NAN, f64::from_le_bytes)
    };
    let (scale, offset) = (float(0), float(8));

    let properties = [PropertyId(0), PropertyId(1)];
    let readings = crate::sources::opcua::readings(&value, &properties);
    assert_eq!(readings.len(), properties.len());
    let raw = value.value.as_ref().and_then(from_variant);
    for (reading, property) in readings.iter().zip(properties) {
        assert_eq!(reading.property, property);
        if value.status().is_bad() {
            assert!(reading.outcome.is_err(), "bad status gave a value");
        } else {
            let expected = raw.clone().ok_or(QualityReason::DecodeError);
            assert!(outcome_eq(&reading.outcome, &expected), "{reading:?}");
            if let Some(time) = reading.source_time {
                // 1601-01-01 and earlier is DateTime's null (Part 6 §5.2.2.5): no source time.
                let null = Duration::from_secs(11_644_473_600);
                assert!(
                    time.duration_since(UNIX_EPOCH).is_ok()
                        || UNIX_EPOCH.duration_since(time).is_ok_and(|d| d < null),
                    "source time at or before 1601: {time:?}"
                );
            }
        }
    }
    let Some(raw) = raw else {
        return;
    };
    let variant: Variant = to_variant(&raw);
    let back = from_variant(&variant).expect("a twin value's variant converts back");
    let same = value_eq(&back, &raw)
        || matches!((&back, &raw), (Value::Float(a), Value::Float(b)) if a.is_nan() && b.is_nan());
    assert!(same, "{raw} came back as {back}");
    check_to_eu(&raw, scale, offset);
}

/// A setpoint of a proposal.
#[derive(Debug, Arbitrary)]
enum SetpointSeed {
    Boolean(bool),
    Integer(i64),
    Float(f64),
}

/// One write proposal as a plugin returns it.
#[derive(Debug, Arbitrary)]
struct ProposalSeed {
    index: u32,
    value: SetpointSeed,
    reason_start: u32,
    reason_len: u32,
}

/// The plugin-outputs target's input: the plugin's lists and one call's outputs.
#[derive(Debug, Arbitrary)]
struct PluginCase {
    owned: u8,
    writable: Vec<u8>,
    caps: (u8, u8, u16),
    indices: Vec<u32>,
    values: Vec<f64>,
    qualities: Vec<u8>,
    proposals: Vec<ProposalSeed>,
    reasons: String,
}

/// Feeds one call's outputs as a plugin could return them (any indices, values, quality bytes,
/// setpoints, reason ranges and text, columns of any lengths) to the host's checks: the output
/// caps (`OutputCaps::check`, with small caps from the input and the defaults), then the checks
/// against the owned and writable lists (`check_derived`, `check_proposal`) and `reason`.
///
/// Checks: the caps refuse exactly columns of different lengths and counts past a cap; every
/// derived value gets one verdict, taken only for an index inside the owned list and then for
/// that property, with a finite value unless its quality is bad (a bad one fails the property
/// with `InputsNotGood`, an uncertain one carries that reason); every proposal outside the
/// writable list is refused, one inside is typed to its property's data type (a float only when
/// finite, an unsigned only when not negative) or refused by `data-type` or `finite`; a reason is
/// at most `MAX_REASON_BYTES` of the reasons, taken from where the proposal says.
pub fn plugin_outputs(data: &[u8]) {
    let Ok(case) = PluginCase::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let owned: Vec<PropertyId> = (0..u32::from(case.owned % 64))
        .map(|i| PropertyId(1000 + i))
        .collect();
    let writable: Vec<(PropertyId, DataType)> = case
        .writable
        .iter()
        .take(32)
        .enumerate()
        .map(|(i, t)| {
            (
                PropertyId(2000 + i as u32),
                DATA_TYPES[usize::from(*t) % DATA_TYPES.len()],
            )
        })
        .collect();
    let outputs = Outputs {
        values: DerivedValues {
            indices: case.indices,
            values: case.values,
            qualities: case.qualities,
        },
        proposals: case
            .proposals
            .into_iter()
            .map(|p| WriteProposal {
                index: p.index,
                value: match p.value {
                    SetpointSeed::Boolean(b) => Setpoint::Boolean(b),
                    SetpointSeed::Integer(i) => Setpoint::Integer(i),
                    SetpointSeed::Float(f) => Setpoint::Float(f),
                },
                reason_start: p.reason_start,
                reason_len: p.reason_len,
            })
            .collect(),
        reasons: case.reasons,
    };
    let small = OutputCaps {
        derived_values: usize::from(case.caps.0),
        proposals: usize::from(case.caps.1),
        string_bytes: usize::from(case.caps.2),
    };
    let values = &outputs.values;
    let count = values.indices.len();
    let columns_ok = values.values.len() == count && values.qualities.len() == count;
    for caps in [small, OutputCaps::default()] {
        let fits = columns_ok
            && count <= caps.derived_values
            && outputs.proposals.len() <= caps.proposals
            && outputs.reasons.len() <= caps.string_bytes;
        let checked = caps.check(outputs.clone());
        assert_eq!(checked.is_ok(), fits, "caps {caps:?} decided wrongly");
        if let Ok(checked) = checked {
            // Debug text: NaN values are equal there, unlike with `==`.
            assert_eq!(
                format!("{checked:?}"),
                format!("{outputs:?}"),
                "the caps check changed the outputs"
            );
        }
    }
    if !columns_ok {
        return;
    }

    let stamp = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let verdicts: Vec<DerivedVerdict> = check_derived(values, &owned, stamp).collect();
    assert_eq!(verdicts.len(), count, "not one verdict per derived value");
    for (i, verdict) in verdicts.iter().enumerate() {
        let (index, value, quality) = (values.indices[i], values.values[i], values.qualities[i]);
        let property = owned.get(index as usize).copied();
        match verdict {
            DerivedVerdict::OwnedIndex { index: got } => {
                assert_eq!((*got, property), (index, None));
            }
            DerivedVerdict::NotFinite {
                property: got,
                value: v,
            } => {
                assert_eq!(Some(*got), property);
                assert!(!v.is_finite() && quality < 2, "rejected a good value");
            }
            DerivedVerdict::Taken(reading) => {
                assert_eq!(
                    Some(reading.property),
                    property,
                    "derived value misdirected"
                );
                match (quality, &reading.outcome) {
                    (2.., Err(QualityReason::InputsNotGood)) => {}
                    (0 | 1, Ok(Value::Float(v))) => {
                        assert!(v.is_finite() && v.to_bits() == value.to_bits());
                        let uncertain = reading.quality
                            == Some(crate::twin::Quality::uncertain(
                                QualityReason::InputsNotGood,
                            ));
                        assert_eq!(uncertain, quality == 1, "quality lost");
                        assert_eq!(reading.source_time, Some(stamp));
                    }
                    _ => panic!("quality {quality} gave {reading:?}"),
                }
            }
        }
    }
    for proposal in &outputs.proposals {
        let slot = writable.get(proposal.index as usize).copied();
        match (check_proposal(proposal, &writable), slot) {
            (ProposalVerdict::WritableIndex, None) => {}
            (ProposalVerdict::Typed { property, value }, Some((id, data_type))) => {
                assert_eq!(property, id);
                let fits = match (&proposal.value, data_type, &value) {
                    (Setpoint::Boolean(a), DataType::Bool, Value::Bool(b)) => a == b,
                    (Setpoint::Integer(a), DataType::Integer, Value::Int(b)) => a == b,
                    (Setpoint::Integer(a), DataType::Unsigned, Value::UInt(b)) => {
                        u64::try_from(*a) == Ok(*b)
                    }
                    (Setpoint::Float(a), DataType::Float, Value::Float(b)) => {
                        a.is_finite() && a == b
                    }
                    _ => false,
                };
                assert!(fits, "{proposal:?} typed as {value} for {data_type:?}");
            }
            (ProposalVerdict::Value { property, rule }, Some((id, _))) => {
                assert_eq!(property, id);
                assert!(rule == rule::DATA_TYPE || rule == rule::FINITE, "{rule}");
            }
            (verdict, slot) => panic!("{proposal:?} against {slot:?} gave {verdict:?}"),
        }
        let text = reason(&outputs, proposal);
        assert!(text.len() <= MAX_REASON_BYTES, "reason not cut");
        if !text.is_empty() {
            let start = proposal.reason_start as usize;
            assert!(
                outputs.reasons.get(start..start + text.len()) == Some(text),
                "reason not taken from its range"
            );
            assert!(text.len() <= proposal.reason_len as usize);
        }
    }
}
