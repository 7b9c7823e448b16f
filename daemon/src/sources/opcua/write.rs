//! The OPC UA source's write side: [`OpcUaWriter`], a [`DeviceWriter`] that writes a variable's
//! Value attribute (OPC UA Part 4 §5.10.4 Write) and reads it back (§5.10.2 Read, `maxAge` 0).
//!
//! The session task publishes what a write needs into a [`Link`] once the session is up and the
//! writable nodes' DataType and ValueRank are read (after every connect), and clears it when the
//! connection is lost: a write while it is clear is answered [`WriteError::NotConnected`] at
//! once, never queued for a later connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use opcua::client::services::{Read, Write};
use opcua::client::{Session, UARequest};
use opcua::core::ResponseMessage;
use opcua::types::{
    AttributeId, DataTypeId, DataValue, NodeId, NumericRange, ReadValueId, StatusCode,
    TimestampsToReturn, UAString, Variant, WriteRequest, WriteValue,
};

use super::events;
use crate::sources::{DeviceWrite, DeviceWriter};
use crate::twin::model::Scaling;
use crate::twin::spec::DataType;
use crate::twin::{PropertyId, Twin, Value, WriteError};

/// A writable variable as the server describes it after a connect.
#[derive(Debug, Clone)]
pub(super) struct WriteTarget {
    /// The resolved NodeId.
    pub node: NodeId,
    /// The variable's DataType attribute (a NodeId of namespace 0 for the built-in types).
    pub data_type: NodeId,
    /// The variable's ValueRank attribute (Part 3 §5.6.2: −1 scalar, −2 any, −3 scalar or one
    /// dimension, ≥ 0 arrays).
    pub value_rank: i32,
    /// Engineering units ⇄ raw value.
    pub scaling: Scaling,
    /// The property's data type, for the read-back.
    pub property_type: DataType,
}

/// An up session and the writable properties' targets; a property whose variable did not
/// resolve (or whose attributes could not be read) has the reason instead.
pub(super) struct Connected {
    pub session: Arc<Session>,
    pub targets: HashMap<PropertyId, Result<WriteTarget, String>>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected")
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

/// Shared between the session task (which sets and clears it) and the writer. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(super) struct Link(Arc<std::sync::RwLock<Option<Arc<Connected>>>>);

impl Link {
    /// Writes may go out through `connected`.
    pub fn set(&self, connected: Connected) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(connected));
    }

    /// The connection is down: writes are answered `NotConnected`.
    pub fn clear(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn get(&self) -> Option<Arc<Connected>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The write side of one OPC UA source. One write is in flight at a time, so writes reach the
/// server in the order the gate decided them; a write waiting behind a slow one is dropped at its
/// deadline ([`WriteError::Expired`]), never sent after it.
#[derive(Debug)]
pub struct OpcUaWriter {
    source: String,
    link: Link,
    timeout: Duration,
    twin: Arc<Twin>,
    turn: tokio::sync::Mutex<()>,
}

impl OpcUaWriter {
    pub(super) fn new(source: &str, link: Link, timeout: Duration, twin: Arc<Twin>) -> Self {
        Self {
            source: source.to_owned(),
            link,
            timeout,
            twin,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    async fn write_now(&self, write: &DeviceWrite) -> Result<Option<Value>, WriteError> {
        let connected = self.link.get().ok_or(WriteError::NotConnected)?;
        let target = match connected.targets.get(&write.property) {
            None => return Err(WriteError::NotBound),
            Some(Err(detail)) => {
                return Err(WriteError::NotWritable {
                    detail: detail.clone(),
                });
            }
            Some(Ok(target)) => target,
        };
        if !(-3..=-1).contains(&target.value_rank) {
            return Err(WriteError::NotWritable {
                detail: format!(
                    "the variable holds arrays (ValueRank {})",
                    target.value_rank
                ),
            });
        }
        let raw = target.scaling.to_raw(&write.value);
        let variant = to_variant_of(&raw, &target.data_type)?;
        let now = std::time::Instant::now();
        if !write.is_due(now) {
            return Err(WriteError::Expired);
        }
        // timeoutHint: the server may drop the request once the gate's deadline has passed
        // (Part 4 §7.32). The client waits for the answer for the source's timeout even past the
        // deadline (the gate audits a late answer); async-opcua's builder ties the two together,
        // so its header is taken and the request sent on the channel directly.
        let mut header = Write::new(&connected.session).header().clone();
        header.timeout_hint = u32::try_from((write.deadline - now).as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        let request = WriteRequest {
            request_header: header,
            nodes_to_write: Some(vec![WriteValue {
                node_id: target.node.clone(),
                attribute_id: AttributeId::Value as u32,
                index_range: NumericRange::None,
                // The value only: no status, no timestamps (many PLC servers answer
                // Bad_WriteNotSupported to a DataValue with timestamps, Part 4 §5.10.4.2).
                value: DataValue {
                    value: Some(variant),
                    ..Default::default()
                },
            }]),
        };
        write.check_guard()?;
        let answer = connected
            .session
            .channel()
            .send(request, self.timeout)
            .await;
        let status = match answer {
            Ok(ResponseMessage::Write(response)) => {
                let service = response.response_header.service_result;
                if !service.is_good() {
                    return Err(request_failed(service));
                }
                response
                    .results
                    .and_then(|r| r.first().copied())
                    .unwrap_or(StatusCode::BadUnexpectedError)
            }
            Ok(ResponseMessage::ServiceFault(fault)) => {
                return Err(request_failed(fault.response_header.service_result));
            }
            Ok(_) => StatusCode::BadUnknownResponse,
            Err(error) => return Err(request_failed(error.status())),
        };
        if !status.is_good() {
            return Err(refused(status));
        }
        Ok(self.read_back(&connected.session, target).await)
    }

    /// Reads the variable back with `maxAge` 0 (the server reads its device; Part 4 §5.10.2):
    /// what it holds in engineering units, or `None` when the read failed (logged: the write
    /// itself was answered Good).
    async fn read_back(&self, session: &Session, target: &WriteTarget) -> Option<Value> {
        let answer = Read::new(session)
            .timeout(self.timeout)
            .nodes_to_read(vec![ReadValueId::from(target.node.clone())])
            .timestamps_to_return(TimestampsToReturn::Neither)
            .max_age(0.0)
            .send(session.channel())
            .await;
        let read = match answer {
            Ok(response) => response.results.and_then(|mut r| r.pop()),
            Err(error) => {
                events::ReadBackFailed {
                    source: &self.source,
                    node: &target.node,
                    status: error.status(),
                }
                .emit();
                return None;
            }
        };
        let value = read.as_ref().and_then(|v| {
            if v.status().is_good() {
                v.value.as_ref()
            } else {
                None
            }
        });
        let eu = value
            .and_then(crate::opcua_values::from_variant)
            .and_then(|raw| target.scaling.to_eu(&raw, target.property_type).ok());
        if eu.is_none() {
            events::ReadBackFailed {
                source: &self.source,
                node: &target.node,
                status: read.map_or(StatusCode::BadUnexpectedError, |v| v.status()),
            }
            .emit();
        }
        eu
    }
}

#[async_trait::async_trait]
impl DeviceWriter for OpcUaWriter {
    /// Writes `write.value` (engineering units) to the property's variable: inverse scaling,
    /// conversion to the variable's DataType with a range check, the Write service on the Value
    /// attribute only (Part 4 §5.10.4) with the time left to the deadline as `timeoutHint` (the
    /// answer awaited for the source's `timeout`, past the deadline if need be), then
    /// a Read with `maxAge` 0. Waits for the server's answer. Keeps [`DeviceWriter`]'s contract:
    /// not sent once the deadline has passed ([`WriteError::Expired`]), the guard called last
    /// before sending ([`WriteError::Held`]).
    ///
    /// Errors: [`WriteError::NotConnected`] at once while the session is down (or when it breaks
    /// during the write); [`WriteError::NotWritable`] for a variable that did not resolve or
    /// holds arrays, or that the server answers Bad_NotWritable; [`WriteError::OutOfRange`] for
    /// a value outside the variable's type (nothing sent) or Bad_OutOfRange;
    /// [`WriteError::Encoding`] for a type the twin cannot write or Bad_TypeMismatch;
    /// [`WriteError::Timeout`] without an answer in time; [`WriteError::DeviceRejected`] with the
    /// status code otherwise (Bad_UserAccessDenied, …).
    async fn write(&self, write: DeviceWrite) -> Result<Option<Value>, WriteError> {
        if self.link.get().is_none() {
            return Err(WriteError::NotConnected);
        }
        let _turn = tokio::select! {
            turn = self.turn.lock() => turn,
            () = tokio::time::sleep_until(write.deadline.into()) => return Err(WriteError::Expired),
        };
        let outcome = self.write_now(&write).await;
        match &outcome {
            Ok(_) => {
                tracing::debug!(source = %self.source, property = %self.twin.model().property(write.property).path, value = %write.value, "Wrote value")
            }
            Err(WriteError::Expired | WriteError::Held { .. }) => {}
            Err(error) => events::WriteFailed {
                source: &self.source,
                property: &self.twin.model().property(write.property).path,
                error,
            }
            .emit(),
        }
        outcome
    }
}

/// A Write's status code as a write error (Part 4 §5.10.4.4 and §7.39).
fn refused(status: StatusCode) -> WriteError {
    let detail = format!("OPC UA {status} ({:#010X})", status.bits());
    match status {
        StatusCode::BadNotWritable => WriteError::NotWritable { detail },
        StatusCode::BadOutOfRange => WriteError::OutOfRange { detail },
        StatusCode::BadTypeMismatch => WriteError::Encoding { detail },
        StatusCode::BadTimeout => WriteError::Timeout,
        _ => WriteError::DeviceRejected { detail },
    }
}

/// A request that failed as a whole: no answer in time, the connection gone, or a service fault.
fn request_failed(status: StatusCode) -> WriteError {
    match status {
        StatusCode::BadTimeout | StatusCode::BadRequestTimeout => WriteError::Timeout,
        StatusCode::BadNotConnected
        | StatusCode::BadConnectionClosed
        | StatusCode::BadSecureChannelClosed
        | StatusCode::BadCommunicationError
        | StatusCode::BadServerNotConnected
        | StatusCode::BadSessionClosed
        | StatusCode::BadSessionIdInvalid => WriteError::NotConnected,
        other => refused(other),
    }
}

/// The variant of DataType `data_type` (a built-in type of Part 6 §5.1.2, or the abstract
/// BaseDataType/Number/Integer/UInteger, where the value's own kind goes) for a raw value:
/// integers from integers or from floats rounded to the nearest, Float and Double from any number,
/// Boolean from a boolean, String from a string.
///
/// Errors: [`WriteError::OutOfRange`] when the value does not fit the type (70 000 into Int16, a
/// negative value into UInt16, 1e39 into Float, NaN into an integer);
/// [`WriteError::Encoding`] for a kind the type does not take or a DataType the source cannot
/// write (structures, enumerations, byte strings, …).
pub fn to_variant_of(raw: &Value, data_type: &NodeId) -> Result<Variant, WriteError> {
    let type_name = |id: &NodeId| match id.as_data_type_id() {
        Ok(t) => format!("{t:?}"),
        Err(_) => id.to_string(),
    };
    let out_of_range = || WriteError::OutOfRange {
        detail: format!(
            "{raw} does not fit the variable's DataType {}",
            type_name(data_type)
        ),
    };
    let wrong_kind = || WriteError::Encoding {
        detail: format!(
            "{raw} cannot be written to DataType {}",
            type_name(data_type)
        ),
    };
    let Ok(kind) = data_type.as_data_type_id() else {
        return Err(wrong_kind());
    };
    // A whole number of `raw`, if any: integers as they are, floats rounded (NaN and infinities
    // are out of range).
    let whole = || -> Result<i128, WriteError> {
        match raw {
            Value::Int(i) => Ok(i128::from(*i)),
            Value::UInt(u) => Ok(i128::from(*u)),
            Value::Float(f) if f.is_finite() && f.abs() < 1e38 => Ok(f.round() as i128),
            Value::Float(_) => Err(out_of_range()),
            Value::Bool(_) | Value::String(_) => Err(wrong_kind()),
        }
    };
    macro_rules! int {
        ($variant:ident, $t:ty) => {
            <$t>::try_from(whole()?)
                .map(Variant::$variant)
                .map_err(|_| out_of_range())
        };
    }
    let number = || raw.as_f64().filter(|_| !matches!(raw, Value::Bool(_)));
    match kind {
        DataTypeId::Boolean => match raw {
            Value::Bool(b) => Ok(Variant::Boolean(*b)),
            _ => Err(wrong_kind()),
        },
        DataTypeId::SByte => int!(SByte, i8),
        DataTypeId::Byte => int!(Byte, u8),
        DataTypeId::Int16 => int!(Int16, i16),
        DataTypeId::UInt16 => int!(UInt16, u16),
        DataTypeId::Int32 => int!(Int32, i32),
        DataTypeId::UInt32 => int!(UInt32, u32),
        DataTypeId::Int64 => int!(Int64, i64),
        DataTypeId::UInt64 => int!(UInt64, u64),
        DataTypeId::Float => {
            let v = number().ok_or_else(wrong_kind)?;
            if v.is_finite() && v.abs() <= f64::from(f32::MAX) {
                Ok(Variant::Float(v as f32))
            } else {
                Err(out_of_range())
            }
        }
        DataTypeId::Double | DataTypeId::Duration => {
            let v = number().ok_or_else(wrong_kind)?;
            if v.is_finite() {
                Ok(Variant::Double(v))
            } else {
                Err(out_of_range())
            }
        }
        DataTypeId::String => match raw {
            Value::String(s) => Ok(Variant::String(UAString::from(s.as_ref()))),
            _ => Err(wrong_kind()),
        },
        DataTypeId::BaseDataType | DataTypeId::Number => Ok(crate::opcua_values::to_variant(raw)),
        DataTypeId::Integer => int!(Int64, i64),
        DataTypeId::UInteger => int!(UInt64, u64),
        _ => Err(wrong_kind()),
    }
}

/// The DataType and ValueRank attributes of `node`, in that order (Part 3 §5.6.2).
pub(super) fn type_attributes(node: &NodeId) -> [ReadValueId; 2] {
    [
        ReadValueId {
            node_id: node.clone(),
            attribute_id: AttributeId::DataType as u32,
            ..Default::default()
        },
        ReadValueId {
            node_id: node.clone(),
            attribute_id: AttributeId::ValueRank as u32,
            ..Default::default()
        },
    ]
}

/// A write target from the DataType and ValueRank read at [`type_attributes`].
///
/// Errors: the reason, when either read failed (a missing node: Bad_NodeIdUnknown; an object:
/// Bad_AttributeIdInvalid).
pub(super) fn target_from(
    node: &NodeId,
    data_type: Option<&DataValue>,
    value_rank: Option<&DataValue>,
    scaling: Scaling,
    property_type: DataType,
) -> Result<WriteTarget, String> {
    let failed = |v: Option<&DataValue>| {
        format!(
            "cannot read the DataType and ValueRank of {node}: {}",
            v.map_or(StatusCode::BadUnexpectedError, DataValue::status)
        )
    };
    let data_type = match data_type
        .filter(|v| v.status().is_good())
        .and_then(|v| v.value.as_ref())
    {
        Some(Variant::NodeId(id)) => (**id).clone(),
        _ => return Err(failed(data_type)),
    };
    let value_rank = match value_rank
        .filter(|v| v.status().is_good())
        .and_then(|v| v.value.as_ref())
    {
        Some(Variant::Int32(rank)) => *rank,
        _ => return Err(failed(value_rank)),
    };
    Ok(WriteTarget {
        node: node.clone(),
        data_type,
        value_rank,
        scaling,
        property_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_convert_to_the_variables_type_with_a_range_check() {
        let t = |id: DataTypeId| NodeId::from(id);
        let cases: Vec<(Value, DataTypeId, Result<Variant, &str>)> = vec![
            (
                Value::Float(21.5),
                DataTypeId::Float,
                Ok(Variant::Float(21.5)),
            ),
            (Value::Int(3), DataTypeId::Double, Ok(Variant::Double(3.0))),
            (Value::Float(1e39), DataTypeId::Float, Err("out-of-range")),
            (
                Value::Float(-7.6),
                DataTypeId::Int16,
                Ok(Variant::Int16(-8)),
            ),
            (
                Value::Int(32_767),
                DataTypeId::Int16,
                Ok(Variant::Int16(32_767)),
            ),
            (Value::Int(32_768), DataTypeId::Int16, Err("out-of-range")),
            (Value::Int(-1), DataTypeId::UInt16, Err("out-of-range")),
            (
                Value::Float(f64::NAN),
                DataTypeId::Int32,
                Err("out-of-range"),
            ),
            (
                Value::UInt(u64::MAX),
                DataTypeId::Int64,
                Err("out-of-range"),
            ),
            (
                Value::UInt(u64::MAX),
                DataTypeId::UInt64,
                Ok(Variant::UInt64(u64::MAX)),
            ),
            (
                Value::Bool(true),
                DataTypeId::Boolean,
                Ok(Variant::Boolean(true)),
            ),
            (Value::Int(1), DataTypeId::Boolean, Err("encoding")),
            (Value::Bool(true), DataTypeId::Int16, Err("encoding")),
            (Value::Bool(true), DataTypeId::Double, Err("encoding")),
            (
                Value::String("x".into()),
                DataTypeId::String,
                Ok(Variant::String("x".into())),
            ),
            (Value::Float(1.0), DataTypeId::ByteString, Err("encoding")),
        ];
        for (raw, id, expected) in cases {
            let got = to_variant_of(&raw, &t(id));
            match (expected, got) {
                (Ok(want), Ok(got)) => assert_eq!(got, want, "{raw} → {id:?}"),
                (Err("out-of-range"), Err(WriteError::OutOfRange { .. })) => {}
                (Err("encoding"), Err(WriteError::Encoding { .. })) => {}
                (want, got) => panic!("{raw} → {id:?}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn write_statuses_map_to_write_errors() {
        assert!(matches!(
            refused(StatusCode::BadUserAccessDenied),
            WriteError::DeviceRejected { detail } if detail.contains("BadUserAccessDenied")
        ));
        assert!(matches!(
            refused(StatusCode::BadNotWritable),
            WriteError::NotWritable { .. }
        ));
        assert!(matches!(
            refused(StatusCode::BadOutOfRange),
            WriteError::OutOfRange { .. }
        ));
        assert!(matches!(
            refused(StatusCode::BadTypeMismatch),
            WriteError::Encoding { .. }
        ));
        assert_eq!(
            request_failed(StatusCode::BadConnectionClosed),
            WriteError::NotConnected
        );
        assert_eq!(request_failed(StatusCode::BadTimeout), WriteError::Timeout);
    }
}
