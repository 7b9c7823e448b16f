//! What the twin is built from: its settings and the asset types as declared (the `[twin]` and
//! `[[types]]` sections deserialize straight into these), and each asset with its bound
//! properties' scaling and refresh interval ([`AssetSpec`], resolved from the sources by the
//! configuration). Plain data: the twin's builder input, below every other module.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use super::model::Scaling;

/// `[twin]`: how the twin treats values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwinConfig {
    /// A property whose source has delivered nothing for this many poll intervals becomes
    /// `Uncertain` (stale), keeping its last value. Range 2..=1000, default 3.
    #[serde(default = "default_stale_after_polls")]
    pub stale_after_polls: u32,
}

impl Default for TwinConfig {
    fn default() -> Self {
        Self {
            stale_after_polls: default_stale_after_polls(),
        }
    }
}

fn default_stale_after_polls() -> u32 {
    3
}

/// `[[types]]`: an asset type, shared by every asset of that kind (an OPC UA ObjectType).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeConfig {
    /// Type name, unique, e.g. `HydraulicPress`.
    pub name: String,
    /// Free text shown to OPC UA clients.
    #[serde(default)]
    pub description: Option<String>,
    /// The properties every asset of this type has.
    pub properties: Vec<PropertyConfig>,
}

/// One property declared by an asset type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyConfig {
    /// Property name, unique within the type, e.g. `oil_temperature`.
    pub name: String,
    /// Data type of the value in engineering units.
    pub data_type: DataType,
    /// Engineering unit: a UNECE code (`CEL`) or symbol (`°C`).
    #[serde(default)]
    pub unit: Option<String>,
    /// Free text shown to OPC UA clients.
    #[serde(default)]
    pub description: Option<String>,
    /// Engineering-unit range `[low, high]` (OPC UA EURange); values outside it are marked out of range.
    #[serde(default)]
    pub range: Option<[f64; 2]>,
    /// Change filter: `{ absolute = 0.2 }` (engineering units) or `{ percent = 1.0 }` (of the range).
    #[serde(default)]
    pub deadband: Option<DeadbandConfig>,
    /// `read-only` (default) or `read-write` (a setpoint clients and plugins may propose to write).
    #[serde(default)]
    pub access: Access,
    /// Write limits `[low, high]` in engineering units; writes outside are refused by the control gate.
    #[serde(default)]
    pub limits: Option<[f64; 2]>,
    /// With `limits`: a write outside them is clamped to them instead of refused.
    #[serde(default)]
    pub clamp: bool,
    /// Largest rate of change a write may make, engineering units per second: the step from the
    /// last value written over the time since it was.
    #[serde(default)]
    pub max_rate: Option<f64>,
    /// Shortest time between two writes to the property, e.g. `"2s"`.
    #[serde(default, with = "humantime_serde")]
    pub min_write_interval: Option<Duration>,
    /// What the gate does when the property's controller is lost (its plugin quarantined or
    /// unloaded, the plant disarmed, the audit log unwritable): `"hold"` (default: leave the
    /// last value) or `{ write = <value> }` (a safe value, e.g. `{ write = 0.0 }` for a heater).
    #[serde(default)]
    pub on_loss: OnLoss,
    /// Select-before-operate: a write must follow a select (the OPC UA method `Select` of the
    /// property) by the same user within this time, e.g. `"10s"`; an unused select expires.
    #[serde(default, with = "humantime_serde")]
    pub select_before_operate: Option<Duration>,
    /// Whether the historian keeps this property's changes when `[history]` is configured.
    /// Default true (every property is historized); `false` leaves it out.
    #[serde(default = "default_historizing")]
    pub historizing: bool,
    /// The historian's own change filter, like `deadband`: `{ absolute = 0.5 }` (engineering
    /// units) or `{ percent = 1.0 }` (of the range): a change within it of the last stored value
    /// is not stored (a change of quality always is). Numeric properties only.
    #[serde(default)]
    pub history_deadband: Option<DeadbandConfig>,
    /// Store a sample at least this often even without a change (the last value again, with
    /// its quality), e.g. `"15m"`; from 1 s. None by default.
    #[serde(default, with = "humantime_serde")]
    pub history_max_interval: Option<Duration>,
}

fn default_historizing() -> bool {
    true
}

/// `on_loss` of a setpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum OnLoss {
    /// Leave the last value written.
    #[default]
    Hold,
    /// Write this value (through the gate, without its rules: it is the fallback).
    Write(SafeValue),
}

/// The value an `on_loss = { write = ... }` writes: a boolean or a number in engineering units.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SafeValue {
    /// For a boolean setpoint.
    Bool(bool),
    /// For a numeric setpoint.
    Number(f64),
}

/// How the control gate treats writes to one property, beside its access, type and limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WritePolicy {
    /// Clamp a write outside the limits to them instead of refusing it.
    pub clamp: bool,
    /// Largest rate of change, engineering units per second.
    pub max_rate: Option<f64>,
    /// Shortest time between two writes.
    pub min_write_interval: Option<Duration>,
    /// What happens when the controller is lost.
    pub on_loss: OnLoss,
    /// How long a select lasts, when writes need one first.
    pub select_before_operate: Option<Duration>,
}

/// The data type of a property's engineering-unit value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    /// true / false.
    Bool,
    /// Signed 64-bit integer.
    Integer,
    /// Unsigned 64-bit integer.
    Unsigned,
    /// 64-bit IEEE 754 float.
    Float,
    /// UTF-8 text.
    String,
}

impl DataType {
    /// Whether ranges, deadbands and scaling apply.
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Integer | Self::Unsigned | Self::Float)
    }
}

/// Who may change a property.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Process value: read only.
    #[default]
    ReadOnly,
    /// Setpoint: writes go through the control gate.
    ReadWrite,
}

/// Deadband as written in the config (OPC UA Part 8 §6.2 DeadbandType Absolute / Percent).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum DeadbandConfig {
    /// A change is published when it exceeds this many engineering units.
    Absolute(f64),
    /// A change is published when it exceeds this percentage (0..=100) of the EU range.
    Percent(f64),
}

/// One asset as the twin needs it: path, type, and per bound property how its raw values scale
/// and how often its source refreshes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AssetSpec {
    /// Hierarchical path, `/`-separated, e.g. `plant-a/line1/press1`.
    pub path: String,
    /// Name of its asset type.
    pub type_name: String,
    /// Free text shown to OPC UA clients.
    pub description: Option<String>,
    /// Bound properties by name; a property without an entry is unbound (identity scaling, never
    /// stale).
    pub bindings: HashMap<String, BindingSpec>,
}

/// What the twin needs of one binding.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BindingSpec {
    /// Raw → engineering-unit scaling.
    pub scaling: Scaling,
    /// How often the source refreshes the value (a poll interval), for stale detection; `None`
    /// for values that arrive only on change (subscriptions, plugins).
    pub refresh_interval: Option<Duration>,
}

/// Every plugin has a status object in the twin (and so in the OPC UA address space) at
/// [`plugin_status_path`], of this type: its `state` (`unloaded`, `running`, `backing-off`,
/// `quarantined`), `last_fault` (the last fault's message, empty when none) and `failures`
/// (consecutive faults). The name is reserved for it.
pub const PLUGIN_STATUS_TYPE: &str = "TwinloomPlugin";

/// The first path segment of the daemon's own objects (`twinloom/plugins/<name>`), reserved:
/// configured assets cannot use it.
pub const SYSTEM_ROOT: &str = "twinloom";

/// When some property is read-write, the twin has the control gate's status object at
/// `twinloom/control`, of this type: `armed` (whether plugins' proposals are written). Its
/// methods `Arm` (operator role) and `Disarm` (any session) arm and disarm the plant.
pub const CONTROL_STATUS_TYPE: &str = "TwinloomControl";

/// The path of the control status object's `property`.
pub fn control_status_path(property: &str) -> String {
    format!("{SYSTEM_ROOT}/control/{property}")
}

/// The [`CONTROL_STATUS_TYPE`] type.
pub fn control_status_type() -> TypeConfig {
    TypeConfig {
        name: CONTROL_STATUS_TYPE.to_owned(),
        description: Some(
            "The control gate: whether the plant is armed; Arm (operator role) and Disarm (any session)".to_owned(),
        ),
        properties: vec![status_property(
            "armed",
            "Whether plugins' proposals are written (false after a start unless [control] armed = true)",
            DataType::Bool,
        )],
    }
}

/// A read-only property of a status object.
fn status_property(name: &str, description: &str, data_type: DataType) -> PropertyConfig {
    PropertyConfig {
        name: name.to_owned(),
        data_type,
        unit: None,
        description: Some(description.to_owned()),
        range: None,
        deadband: None,
        access: Access::ReadOnly,
        limits: None,
        clamp: false,
        max_rate: None,
        min_write_interval: None,
        on_loss: OnLoss::Hold,
        select_before_operate: None,
        historizing: true,
        history_deadband: None,
        history_max_interval: None,
    }
}

/// The path of plugin `name`'s status object.
pub fn plugin_status_path(name: &str) -> String {
    format!("{SYSTEM_ROOT}/plugins/{name}")
}

/// The [`PLUGIN_STATUS_TYPE`] type.
pub fn plugin_status_type() -> TypeConfig {
    let text = status_property;
    TypeConfig {
        name: PLUGIN_STATUS_TYPE.to_owned(),
        description: Some(
            "A plugin instance's state, as its runner sees it; its ClearQuarantine method (operator role) starts a quarantined plugin again".to_owned(),
        ),
        properties: vec![
            text(
                "state",
                "unloaded, running, backing-off (restarting after a fault) or quarantined",
                DataType::String,
            ),
            text(
                "last_fault",
                "The last fault's message; empty when there was none",
                DataType::String,
            ),
            text(
                "failures",
                "Faults in a row (0 once a call succeeds)",
                DataType::Unsigned,
            ),
        ],
    }
}
