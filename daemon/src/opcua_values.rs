//! OPC UA variants ⇄ twin values, shared by the OPC UA server (client writes) and the OPC UA
//! source (data changes). Built-in types from OPC UA Part 6 §5.1.2.

use opcua::types::{UAString, Variant};

use crate::twin::Value;

/// The twin value of a variant: Boolean, the integer types, Float/Double and String.
/// `None` for kinds the twin has no use for (arrays, structures, byte strings, ...).
pub fn from_variant(variant: &Variant) -> Option<Value> {
    Some(match variant {
        Variant::Boolean(b) => Value::Bool(*b),
        Variant::SByte(v) => Value::Int(i64::from(*v)),
        Variant::Int16(v) => Value::Int(i64::from(*v)),
        Variant::Int32(v) => Value::Int(i64::from(*v)),
        Variant::Int64(v) => Value::Int(*v),
        Variant::Byte(v) => Value::UInt(u64::from(*v)),
        Variant::UInt16(v) => Value::UInt(u64::from(*v)),
        Variant::UInt32(v) => Value::UInt(u64::from(*v)),
        Variant::UInt64(v) => Value::UInt(*v),
        Variant::Float(v) => Value::Float(f64::from(*v)),
        Variant::Double(v) => Value::Float(*v),
        Variant::String(s) => Value::String(s.as_ref().into()),
        _ => return None,
    })
}

/// The variant of a twin value: Boolean, Int64, UInt64, Double or String.
pub fn to_variant(value: &Value) -> Variant {
    match value {
        Value::Bool(b) => Variant::Boolean(*b),
        Value::Int(i) => Variant::Int64(*i),
        Value::UInt(u) => Variant::UInt64(*u),
        Value::Float(f) => Variant::Double(*f),
        Value::String(s) => Variant::String(UAString::from(s.as_ref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_widening() {
        for value in [
            Value::Bool(true),
            Value::Int(-5),
            Value::UInt(7),
            Value::Float(1.5),
            Value::String("x".into()),
        ] {
            assert_eq!(from_variant(&to_variant(&value)), Some(value));
        }
        assert_eq!(from_variant(&Variant::Float(0.5)), Some(Value::Float(0.5)));
        assert_eq!(from_variant(&Variant::UInt16(9)), Some(Value::UInt(9)));
        assert_eq!(from_variant(&Variant::ByteString(Default::default())), None);
    }
}
