//! Sparkplug B payloads: the protobuf messages written from the specification's schema
//! (Sparkplug 3.0 §6.4.1, "Google Protocol Buffer Schema", `proto2`), with `prost`'s derive and
//! no `.proto` file; the twin's values, qualities and declarations as metrics.
//!
//! Only what an edge node sends and reads is declared: `Payload`, `Metric`, `PropertySet`,
//! `PropertyValue`. Fields an edge node never uses (metadata, data sets, templates, extensions)
//! are skipped by the decoder as unknown fields.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::twin::model::PropertyDecl;
use crate::twin::{DataType, Quality, QualityLevel, Sample, Value};

/// A Sparkplug B payload (§6.4.1 `Payload`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    /// When the message was sent: milliseconds since the Unix epoch, UTC.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// The metrics.
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<Metric>,
    /// The message's sequence number, 0–255 (none in NDEATH, NCMD, DCMD).
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    /// A schema identifier (unused by Twinloom).
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    /// An opaque body (unused by Twinloom).
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// A metric (§6.4.1 `Payload.Metric`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The name: in births (and commands that do not use the alias).
    #[prost(string, optional, tag = "1")]
    pub name: Option<String>,
    /// The alias: in births beside the name, alone in DATA messages.
    #[prost(uint64, optional, tag = "2")]
    pub alias: Option<u64>,
    /// When the value was produced: milliseconds since the Unix epoch, UTC.
    #[prost(uint64, optional, tag = "3")]
    pub timestamp: Option<u64>,
    /// The [`datatype`] code.
    #[prost(uint32, optional, tag = "4")]
    pub datatype: Option<u32>,
    /// A stored value published after an outage: hosts must not take it as the current one.
    #[prost(bool, optional, tag = "5")]
    pub is_historical: Option<bool>,
    /// Not to be stored as a tag by hosts.
    #[prost(bool, optional, tag = "6")]
    pub is_transient: Option<bool>,
    /// The value is null (no value field then).
    #[prost(bool, optional, tag = "7")]
    pub is_null: Option<bool>,
    /// Properties (`engUnit`, `engLow`, `engHigh`, `Quality`, `StatusCode`).
    #[prost(message, optional, tag = "9")]
    pub properties: Option<PropertySet>,
    /// The value.
    #[prost(oneof = "MetricValue", tags = "10, 11, 12, 13, 14, 15, 16")]
    pub value: Option<MetricValue>,
}

/// A metric's value (§6.4.1 `Metric.value`, the scalar members).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum MetricValue {
    /// Int8, Int16, Int32 (two's complement in 32 bits), UInt8, UInt16, UInt32.
    #[prost(uint32, tag = "10")]
    IntValue(u32),
    /// Int64 (two's complement), UInt64, DateTime.
    #[prost(uint64, tag = "11")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "12")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "13")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "14")]
    BooleanValue(bool),
    /// String, Text, UUID.
    #[prost(string, tag = "15")]
    StringValue(String),
    /// Bytes, File.
    #[prost(bytes = "vec", tag = "16")]
    BytesValue(Vec<u8>),
}

/// A set of properties (§6.4.1 `Payload.PropertySet`): `keys[i]` names `values[i]`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertySet {
    /// The names.
    #[prost(string, repeated, tag = "1")]
    pub keys: Vec<String>,
    /// The values.
    #[prost(message, repeated, tag = "2")]
    pub values: Vec<PropertyValue>,
}

/// A property's value (§6.4.1 `Payload.PropertyValue`, the scalar members).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PropertyValue {
    /// The [`datatype`] code.
    #[prost(uint32, optional, tag = "1")]
    pub r#type: Option<u32>,
    /// The value is null.
    #[prost(bool, optional, tag = "2")]
    pub is_null: Option<bool>,
    /// The value.
    #[prost(oneof = "PropertyValueValue", tags = "3, 4, 5, 6, 7, 8")]
    pub value: Option<PropertyValueValue>,
}

/// A property value's value (§6.4.1 `PropertyValue.value`, the scalar members).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PropertyValueValue {
    /// 8 to 32-bit integers.
    #[prost(uint32, tag = "3")]
    IntValue(u32),
    /// 64-bit integers.
    #[prost(uint64, tag = "4")]
    LongValue(u64),
    /// Float.
    #[prost(float, tag = "5")]
    FloatValue(f32),
    /// Double.
    #[prost(double, tag = "6")]
    DoubleValue(f64),
    /// Boolean.
    #[prost(bool, tag = "7")]
    BooleanValue(bool),
    /// String.
    #[prost(string, tag = "8")]
    StringValue(String),
}

/// Sparkplug data type codes (§6.4.16, the `DataType` enum) that Twinloom uses.
pub mod datatype {
    /// Signed 32-bit integer (the `Quality` property).
    pub const INT32: u32 = 3;
    /// Signed 64-bit integer (`bdSeq`, the twin's `integer`).
    pub const INT64: u32 = 4;
    /// Unsigned 32-bit integer (the `StatusCode` property).
    pub const UINT32: u32 = 7;
    /// Unsigned 64-bit integer (the twin's `unsigned`).
    pub const UINT64: u32 = 8;
    /// 64-bit float (the twin's `float`, `engLow`, `engHigh`).
    pub const DOUBLE: u32 = 10;
    /// Boolean (the twin's `bool`, `Node Control/Rebirth`).
    pub const BOOLEAN: u32 = 11;
    /// UTF-8 string (the twin's `string`, `engUnit`).
    pub const STRING: u32 = 12;
}

/// Sparkplug quality codes of the `Quality` property (§6.4.7, "Quality Codes").
pub mod quality {
    /// BAD.
    pub const BAD: i32 = 0;
    /// GOOD (never sent: a metric without `Quality` is good).
    pub const GOOD: i32 = 192;
    /// STALE: Twinloom's Uncertain.
    pub const STALE: i32 = 500;
}

/// The Sparkplug data type of a twin data type: `bool` → Boolean, `integer` → Int64,
/// `unsigned` → UInt64, `float` → Double, `string` → String.
pub fn datatype_of(data_type: DataType) -> u32 {
    match data_type {
        DataType::Bool => datatype::BOOLEAN,
        DataType::Integer => datatype::INT64,
        DataType::Unsigned => datatype::UINT64,
        DataType::Float => datatype::DOUBLE,
        DataType::String => datatype::STRING,
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A twin value as a metric value of `data_type`'s Sparkplug type (Int64 as two's complement in
/// `long_value`, §6.4.16).
pub fn metric_value(value: &Value) -> MetricValue {
    match value {
        Value::Bool(b) => MetricValue::BooleanValue(*b),
        Value::Int(i) => MetricValue::LongValue(*i as u64),
        Value::UInt(u) => MetricValue::LongValue(*u),
        Value::Float(f) => MetricValue::DoubleValue(*f),
        Value::String(s) => MetricValue::StringValue(s.to_string()),
    }
}

/// A command's metric value as a twin value for a property of `data_type`, read the way the
/// metric's own `datatype` (when given) says; `None` when absent or of another kind.
pub fn command_value(metric: &Metric, data_type: DataType) -> Option<Value> {
    let signed = |v: u64| match metric.datatype {
        Some(1..=3) => Some(i64::from(v as u32 as i32)),
        Some(4) | None => Some(v as i64),
        Some(5..=8) => i64::try_from(v).ok(),
        _ => None,
    };
    let value = match (metric.value.as_ref()?, data_type) {
        (MetricValue::BooleanValue(b), _) => Value::Bool(*b),
        (MetricValue::DoubleValue(f), _) => Value::Float(*f),
        (MetricValue::FloatValue(f), _) => Value::Float(f64::from(*f)),
        (MetricValue::StringValue(s), _) => Value::String(s.as_str().into()),
        (MetricValue::IntValue(v), DataType::Unsigned)
            if metric.datatype.is_none_or(|t| t >= 5) =>
        {
            Value::UInt(u64::from(*v))
        }
        (MetricValue::IntValue(v), _) => Value::Int(signed(u64::from(*v))?),
        (MetricValue::LongValue(v), DataType::Unsigned) if metric.datatype != Some(4) => {
            Value::UInt(*v)
        }
        (MetricValue::LongValue(v), _) => Value::Int(signed(*v)?),
        (MetricValue::BytesValue(_), _) => return None,
    };
    Some(value)
}

/// The `Quality` code of a twin quality: none for Good, [`quality::STALE`] for Uncertain,
/// [`quality::BAD`] for Bad.
pub fn quality_code(quality: Quality) -> Option<i32> {
    match quality.level {
        QualityLevel::Good => None,
        QualityLevel::Uncertain => Some(quality::STALE),
        QualityLevel::Bad => Some(quality::BAD),
    }
}

/// What a metric of a property says besides its value.
#[derive(Debug, Clone, Copy)]
pub struct Describe<'a> {
    /// The property's declaration: `engUnit`, `engLow`, `engHigh` in births.
    pub decl: Option<&'a PropertyDecl>,
    /// The quality's OPC UA status code (`StatusCode`) when it is not Good (OPC UA Part 4 §7.39).
    pub status_code: u32,
}

/// The metric of a sample: the value (or `is_null`), the source timestamp (else the server
/// timestamp), and the properties: `Quality` (Int32) and `StatusCode` (UInt32) unless Good,
/// and with `describe.decl` (births) `engUnit` (String), `engLow` and `engHigh` (Double).
/// `name` in births, `alias` always.
pub fn sample_metric(
    name: Option<&str>,
    alias: u64,
    data_type: DataType,
    sample: &Sample,
    describe: Describe<'_>,
) -> Metric {
    let mut properties = PropertySet::default();
    if let Some(decl) = describe.decl {
        if let Some(unit) = decl.unit {
            push_property(
                &mut properties,
                "engUnit",
                datatype::STRING,
                PropertyValueValue::StringValue(unit.symbol.to_owned()),
            );
        }
        if let Some(range) = decl.range {
            push_property(
                &mut properties,
                "engLow",
                datatype::DOUBLE,
                PropertyValueValue::DoubleValue(range.low),
            );
            push_property(
                &mut properties,
                "engHigh",
                datatype::DOUBLE,
                PropertyValueValue::DoubleValue(range.high),
            );
        }
    }
    if let Some(code) = quality_code(sample.quality) {
        push_property(
            &mut properties,
            "Quality",
            datatype::INT32,
            PropertyValueValue::IntValue(code as u32),
        );
        push_property(
            &mut properties,
            "StatusCode",
            datatype::UINT32,
            PropertyValueValue::IntValue(describe.status_code),
        );
    }
    Metric {
        name: name.map(str::to_owned),
        alias: Some(alias),
        timestamp: Some(millis(sample.source_time.unwrap_or(sample.server_time))),
        datatype: Some(datatype_of(data_type)),
        is_null: sample.value.is_none().then_some(true),
        properties: (!properties.keys.is_empty()).then_some(properties),
        value: sample.value.as_ref().map(metric_value),
        ..Default::default()
    }
}

fn push_property(set: &mut PropertySet, key: &str, r#type: u32, value: PropertyValueValue) {
    set.keys.push(key.to_owned());
    set.values.push(PropertyValue {
        r#type: Some(r#type),
        is_null: None,
        value: Some(value),
    });
}

/// The `bdSeq` metric (§6.4.18 and §6.4.19: Int64 in NBIRTH and NDEATH).
pub fn bd_seq_metric(bd_seq: u8) -> Metric {
    Metric {
        name: Some("bdSeq".to_owned()),
        datatype: Some(datatype::INT64),
        value: Some(MetricValue::LongValue(u64::from(bd_seq))),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::twin::QualityReason;

    fn sample(value: Option<Value>, quality: Quality) -> Sample {
        Sample {
            value,
            quality,
            source_time: Some(UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123)),
            server_time: UNIX_EPOCH,
        }
    }

    fn property<'a>(metric: &'a Metric, key: &str) -> Option<&'a PropertyValue> {
        let set = metric.properties.as_ref()?;
        let i = set.keys.iter().position(|k| k == key)?;
        set.values.get(i)
    }

    #[test]
    fn tck_id_payloads_propertyset_quality_value_type_and_value() {
        let cases = [
            (Quality::GOOD, None),
            (Quality::uncertain(QualityReason::Stale), Some(500)),
            (Quality::bad(QualityReason::NoConnection), Some(0)),
        ];
        for (quality, expected) in cases {
            let metric = sample_metric(
                None,
                7,
                DataType::Float,
                &sample(Some(Value::Float(1.5)), quality),
                Describe {
                    decl: None,
                    status_code: 0x8031_0000,
                },
            );
            let got = property(&metric, "Quality");
            match expected {
                None => assert!(got.is_none() && property(&metric, "StatusCode").is_none()),
                Some(code) => {
                    let got = got.expect("a Quality property");
                    assert_eq!(got.r#type, Some(datatype::INT32));
                    assert_eq!(got.value, Some(PropertyValueValue::IntValue(code)));
                    let status = property(&metric, "StatusCode").expect("a StatusCode");
                    assert_eq!(status.r#type, Some(datatype::UINT32));
                    assert_eq!(
                        status.value,
                        Some(PropertyValueValue::IntValue(0x8031_0000))
                    );
                }
            }
        }
    }

    #[test]
    fn twin_values_round_trip_through_the_wire_format() {
        let cases = [
            (DataType::Bool, Value::Bool(true), datatype::BOOLEAN),
            (DataType::Integer, Value::Int(-5), datatype::INT64),
            (DataType::Unsigned, Value::UInt(u64::MAX), datatype::UINT64),
            (DataType::Float, Value::Float(-0.25), datatype::DOUBLE),
            (
                DataType::String,
                Value::String("on".into()),
                datatype::STRING,
            ),
        ];
        for (data_type, value, code) in cases {
            let metric = sample_metric(
                Some("x"),
                1,
                data_type,
                &sample(Some(value.clone()), Quality::GOOD),
                Describe {
                    decl: None,
                    status_code: 0,
                },
            );
            assert_eq!(metric.datatype, Some(code));
            assert_eq!(metric.timestamp, Some(1_700_000_000_123));
            let payload = Payload {
                timestamp: Some(1),
                metrics: vec![metric],
                seq: Some(3),
                ..Default::default()
            };
            let decoded = Payload::decode(payload.encode_to_vec().as_slice()).expect("decodes");
            assert_eq!(decoded, payload);
            assert_eq!(
                command_value(&decoded.metrics[0], data_type),
                Some(value),
                "{data_type:?}"
            );
        }
    }

    #[test]
    fn a_missing_value_is_null_without_a_value() {
        let metric = sample_metric(
            Some("x"),
            1,
            DataType::Float,
            &sample(None, Quality::bad(QualityReason::NotYetRead)),
            Describe {
                decl: None,
                status_code: 0x8032_0000,
            },
        );
        assert_eq!((metric.is_null, metric.value), (Some(true), None));
    }

    #[test]
    fn commands_in_narrower_types_are_read_by_their_datatype() {
        let int32 = Metric {
            datatype: Some(3),
            value: Some(MetricValue::IntValue((-7i32) as u32)),
            ..Default::default()
        };
        assert_eq!(
            command_value(&int32, DataType::Integer),
            Some(Value::Int(-7))
        );
        let uint32 = Metric {
            datatype: Some(7),
            value: Some(MetricValue::IntValue(4_000_000_000)),
            ..Default::default()
        };
        assert_eq!(
            command_value(&uint32, DataType::Unsigned),
            Some(Value::UInt(4_000_000_000))
        );
        let bytes = Metric {
            value: Some(MetricValue::BytesValue(vec![1])),
            ..Default::default()
        };
        assert_eq!(command_value(&bytes, DataType::Integer), None);
    }
}
