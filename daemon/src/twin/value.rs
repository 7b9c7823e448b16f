//! Values and qualities as the twin stores them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use super::spec::DataType;

/// A typed value: raw (as a source decoded it) or in engineering units (as the twin stores it).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// true / false.
    Bool(bool),
    /// Signed integer.
    Int(i64),
    /// Unsigned integer.
    UInt(u64),
    /// Floating point.
    Float(f64),
    /// Text; shared so that fan-out clones are cheap.
    String(Arc<str>),
}

impl Value {
    /// `number` (engineering units) as a value of a numeric `data_type`: rounded to the nearest
    /// integer for `integer` and `unsigned` (saturating at the type's ends, below 0 as 0 for
    /// `unsigned`, NaN as 0), a float otherwise. The one conversion of a computed number (a
    /// clamped write, an `on_loss` value) into a property's type.
    pub fn from_number(number: f64, data_type: DataType) -> Self {
        match data_type {
            DataType::Integer => Self::Int(number.round() as i64),
            DataType::Unsigned => Self::UInt(number.round().max(0.0) as u64),
            _ => Self::Float(number),
        }
    }

    /// The value as `f64`, for numeric kinds (`bool` gives 0 or 1). `None` for text.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Bool(b) => Some(f64::from(u8::from(*b))),
            Self::Int(i) => Some(*i as f64),
            Self::UInt(u) => Some(*u as f64),
            Self::Float(f) => Some(*f),
            Self::String(_) => None,
        }
    }

    /// The value as `i64` when it is an integer (or an integral float) that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Bool(b) => Some(i64::from(*b)),
            Self::Int(i) => Some(*i),
            Self::UInt(u) => i64::try_from(*u).ok(),
            Self::Float(f) if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64 => {
                Some(*f as i64)
            }
            _ => None,
        }
    }

    /// The value as `u64` when it is a non-negative integer (or integral float) that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Bool(b) => Some(u64::from(*b)),
            Self::Int(i) => u64::try_from(*i).ok(),
            Self::UInt(u) => Some(*u),
            Self::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64 => {
                Some(*f as u64)
            }
            _ => None,
        }
    }

    /// The value as `bool`: booleans, and integers 0 / 1.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Self::Bool(b) => Some(*b),
            Self::Int(0) | Self::UInt(0) => Some(false),
            Self::Int(1) | Self::UInt(1) => Some(true),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::UInt(u) => write!(f, "{u}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// The coarse quality of a value, as OPC UA status codes group them (OPC UA Part 4 §7.34.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QualityLevel {
    /// The value is current and trustworthy.
    Good,
    /// The value is usable with caution (for example stale).
    Uncertain,
    /// The value must not be used.
    Bad,
}

/// Why a value is not good. Each maps to one OPC UA status code in the northbound server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QualityReason {
    /// No reason: the value is good.
    None,
    /// Nothing has been read yet since start (OPC UA `Bad_WaitingForInitialData`).
    NotYetRead,
    /// The connection broke during a request (OPC UA `Bad_CommunicationError`).
    CommunicationFailure,
    /// The device did not answer within the timeout (OPC UA `Bad_Timeout`).
    Timeout,
    /// No connection to the device: refused, unreachable, or still reconnecting
    /// (OPC UA `Bad_NoCommunication`).
    NoConnection,
    /// The device answered with a protocol exception, e.g. Modbus exception code 04 "server
    /// device failure" (OPC UA `Bad_DeviceFailure`). Carries the protocol's code.
    DeviceException(u8),
    /// The reply could not be decoded into the binding's encoding (OPC UA `Bad_DecodingError`).
    DecodeError,
    /// The plugin that computes this derived value failed or is quarantined (OPC UA `Bad_InternalError`).
    PluginFailure,
    /// The plugin that computes this derived value reports that inputs it comes from are not
    /// good (OPC UA `Uncertain_SubNormal` when uncertain, Part 8 §6.3.2: "derived from multiple
    /// values and has less than the required number of Good values"; `Bad` when bad).
    InputsNotGood,
    /// The device answered with an error for this value's address or the binding does not match
    /// the device (OPC UA `Bad_ConfigurationError`).
    ConfigurationError,
    /// The value lies outside its engineering-unit range (OPC UA `Bad_OutOfRange`).
    OutOfRange,
    /// No fresh reading for several poll intervals; the last value is kept
    /// (OPC UA `Uncertain_LastUsableValue`).
    Stale,
    /// A good value whose source queue overflowed before it: samples between the last value and
    /// this one were lost (the Overflow bit of an OPC UA status code, Part 4 §7.39.1). The
    /// quality stays Good with this reason.
    Overflow,
}

impl QualityReason {
    /// Lowercase name for logs and metric labels (a bounded set).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::NotYetRead => "not_yet_read",
            Self::CommunicationFailure => "communication_failure",
            Self::Timeout => "timeout",
            Self::NoConnection => "no_connection",
            Self::DeviceException(_) => "device_exception",
            Self::DecodeError => "decode_error",
            Self::PluginFailure => "plugin_failure",
            Self::InputsNotGood => "inputs_not_good",
            Self::ConfigurationError => "configuration_error",
            Self::OutOfRange => "out_of_range",
            Self::Stale => "stale",
            Self::Overflow => "overflow",
        }
    }
}

/// Quality of a stored value: a level and the reason for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quality {
    /// Good, uncertain or bad.
    pub level: QualityLevel,
    /// Why, when not good.
    pub reason: QualityReason,
}

impl Quality {
    /// Good quality.
    pub const GOOD: Self = Self {
        level: QualityLevel::Good,
        reason: QualityReason::None,
    };

    /// Bad quality with a reason.
    pub const fn bad(reason: QualityReason) -> Self {
        Self {
            level: QualityLevel::Bad,
            reason,
        }
    }

    /// Uncertain quality with a reason.
    pub const fn uncertain(reason: QualityReason) -> Self {
        Self {
            level: QualityLevel::Uncertain,
            reason,
        }
    }

    /// Whether the level is good.
    pub fn is_good(self) -> bool {
        self.level == QualityLevel::Good
    }
}

impl fmt::Display for Quality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.level, self.reason) {
            (QualityLevel::Good, _) => f.write_str("good"),
            (QualityLevel::Uncertain, reason) => write!(f, "uncertain ({})", reason.as_str()),
            (QualityLevel::Bad, QualityReason::DeviceException(code)) => {
                write!(f, "bad (device exception {code:#04x})")
            }
            (QualityLevel::Bad, reason) => write!(f, "bad ({})", reason.as_str()),
        }
    }
}

/// A property's state as readers see it: value in engineering units, quality and timestamps.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The last value in engineering units; `None` until the first good reading.
    pub value: Option<Value>,
    /// Quality of `value`.
    pub quality: Quality,
    /// When the device produced the value, if the source knows (otherwise when it was read).
    pub source_time: Option<SystemTime>,
    /// When the twin last stored a change of value or quality.
    pub server_time: SystemTime,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_becomes_a_value_of_the_data_type() {
        let cases = [
            (2.5, DataType::Integer, Value::Int(3)),
            (-2.5, DataType::Integer, Value::Int(-3)),
            (1e300, DataType::Integer, Value::Int(i64::MAX)),
            (-0.4, DataType::Unsigned, Value::UInt(0)),
            (-7.0, DataType::Unsigned, Value::UInt(0)),
            (41.6, DataType::Unsigned, Value::UInt(42)),
            (f64::NAN, DataType::Unsigned, Value::UInt(0)),
            (0.25, DataType::Float, Value::Float(0.25)),
        ];
        for (number, data_type, expected) in cases {
            assert_eq!(
                Value::from_number(number, data_type),
                expected,
                "{number} as {data_type:?}"
            );
        }
    }
}
