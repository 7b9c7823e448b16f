//! The twin's structure: asset types, assets and their properties, built once from a validated config.

use std::collections::HashMap;
use std::time::Duration;

use crate::twin::spec::{Access, AssetSpec, DataType, DeadbandConfig, TypeConfig, WritePolicy};
use crate::twin::units::{self, EngineeringUnit};
use crate::twin::value::Value;

/// Dense index of a property in the twin, `0..model.properties().len()`. O(1) lookups everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PropertyId(pub u32);

impl PropertyId {
    /// The index as `usize`.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Dense index of an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssetId(pub u32);

/// Dense index of an asset type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TypeId(pub u32);

/// An engineering-unit range `[low, high]` (OPC UA Part 8 §5.6.2 `Range`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EuRange {
    /// Lowest valid value, in engineering units.
    pub low: f64,
    /// Highest valid value, in engineering units.
    pub high: f64,
}

impl EuRange {
    /// Whether `value` lies within the range, ends included.
    pub fn contains(&self, value: f64) -> bool {
        value >= self.low && value <= self.high
    }
}

/// A change filter (OPC UA Part 8 §6.2, Part 4 §7.22.2 `DataChangeFilter`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Deadband {
    /// Every change of value is published.
    #[default]
    None,
    /// A change is published when |new − last published| exceeds this many engineering units.
    Absolute(f64),
    /// A change is published when it exceeds this percentage of the EU range's span.
    Percent(f64),
}

impl Deadband {
    /// The threshold in engineering units; 0 means "any change".
    pub fn threshold(&self, range: Option<EuRange>) -> f64 {
        match (*self, range) {
            (Self::None, _) => 0.0,
            (Self::Absolute(units), _) => units,
            (Self::Percent(percent), Some(range)) => percent / 100.0 * (range.high - range.low),
            (Self::Percent(_), None) => 0.0,
        }
    }
}

/// Linear scaling between the raw value a source reads and the engineering value the twin stores:
/// `eu = raw × scale + offset`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scaling {
    /// Multiplier, non-zero.
    pub scale: f64,
    /// Added after multiplying, in engineering units.
    pub offset: f64,
}

impl Default for Scaling {
    fn default() -> Self {
        Self::IDENTITY
    }
}

/// Why a raw value could not become an engineering value of the property's data type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("raw value {raw} cannot become a {data_type:?} property value")]
pub struct ConversionError {
    /// The raw value, printed.
    pub raw: String,
    /// The property's data type.
    pub data_type: DataType,
}

impl Scaling {
    /// A binding's scaling as configured: `raw × scale + offset`, each defaulting to the identity
    /// (scale 1, offset 0) when not set.
    pub fn configured(scale: Option<f64>, offset: Option<f64>) -> Self {
        Self {
            scale: scale.unwrap_or(1.0),
            offset: offset.unwrap_or(0.0),
        }
    }

    /// No scaling.
    pub const IDENTITY: Self = Self {
        scale: 1.0,
        offset: 0.0,
    };

    /// Whether this is the identity (values pass through untouched, integers stay exact).
    pub fn is_identity(&self) -> bool {
        self.scale == 1.0 && self.offset == 0.0
    }

    /// Raw → engineering units, converted to the property's data type.
    /// Integers are rounded to the nearest integer after scaling.
    ///
    /// Errors: when the raw kind cannot become that data type (text into a number, a negative
    /// number into `unsigned`, a value that overflows).
    pub fn to_eu(&self, raw: &Value, data_type: DataType) -> Result<Value, ConversionError> {
        let fail = || ConversionError {
            raw: raw.to_string(),
            data_type,
        };
        if self.is_identity() {
            return match data_type {
                DataType::Bool => raw.as_bool().map(Value::Bool),
                DataType::Integer => raw.as_i64().map(Value::Int),
                DataType::Unsigned => raw.as_u64().map(Value::UInt),
                DataType::Float => raw.as_f64().map(Value::Float),
                DataType::String => match raw {
                    Value::String(s) => Some(Value::String(s.clone())),
                    _ => None,
                },
            }
            .ok_or_else(fail);
        }
        let eu = raw.as_f64().ok_or_else(fail)? * self.scale + self.offset;
        match data_type {
            DataType::Float => Ok(Value::Float(eu)),
            DataType::Integer => Value::Float(eu.round())
                .as_i64()
                .map(Value::Int)
                .ok_or_else(fail),
            DataType::Unsigned => Value::Float(eu.round())
                .as_u64()
                .map(Value::UInt)
                .ok_or_else(fail),
            DataType::Bool | DataType::String => Err(fail()),
        }
    }

    /// Engineering units → raw, the inverse used for writes: `raw = (eu − offset) / scale`.
    /// Gives a float when scaled; the codec rounds and range-checks it for the wire encoding.
    pub fn to_raw(&self, eu: &Value) -> Value {
        match eu.as_f64() {
            Some(v) if !self.is_identity() => Value::Float((v - self.offset) / self.scale),
            _ => eu.clone(),
        }
    }
}

/// A property as declared by an asset type.
#[derive(Debug, Clone)]
pub struct PropertyDecl {
    /// Name, unique within the type.
    pub name: String,
    /// Data type of the engineering value.
    pub data_type: DataType,
    /// Engineering unit, if any.
    pub unit: Option<&'static EngineeringUnit>,
    /// Free text.
    pub description: Option<String>,
    /// EU range, if declared.
    pub range: Option<EuRange>,
    /// Change filter.
    pub deadband: Deadband,
    /// Read-only or read-write.
    pub access: Access,
    /// Write limits in engineering units.
    pub limits: Option<EuRange>,
    /// Clamping, rate and interval of writes.
    pub write_policy: WritePolicy,
    /// What the historian keeps of it (when `[history]` is configured).
    pub history: HistoryPolicy,
}

/// What the historian keeps of one property (`historizing`, `history_deadband`,
/// `history_max_interval` of its type's declaration).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct HistoryPolicy {
    /// Whether its changes are stored at all.
    pub historizing: bool,
    /// A change within this of the last stored value is not stored (quality changes always are).
    pub deadband: Deadband,
    /// The last value is stored again when nothing was stored for this long.
    pub max_interval: Option<Duration>,
}

/// An asset type (an OPC UA ObjectType).
#[derive(Debug, Clone)]
pub struct AssetType {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Declared properties, in config order.
    pub properties: Vec<PropertyDecl>,
}

/// An asset instance.
#[derive(Debug, Clone)]
pub struct Asset {
    /// `/`-separated path, e.g. `plant-a/line1/press1`.
    pub path: String,
    /// Its type.
    pub type_id: TypeId,
    /// Free text.
    pub description: Option<String>,
    /// Its properties, in the type's declaration order.
    pub properties: Vec<PropertyId>,
}

/// One property of one asset.
#[derive(Debug, Clone)]
pub struct PropertyDef {
    /// Its asset.
    pub asset: AssetId,
    /// Index of its declaration in the asset type.
    pub decl: usize,
    /// Full path `asset/path/property`.
    pub path: String,
    /// Raw → engineering scaling from its binding.
    pub scaling: Scaling,
    /// How often its source refreshes it (the binding's poll interval), for stale detection.
    pub refresh_interval: Option<Duration>,
}

/// The twin's structure. Immutable once built; shared behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct TwinModel {
    types: Vec<AssetType>,
    assets: Vec<Asset>,
    properties: Vec<PropertyDef>,
    property_by_path: HashMap<String, PropertyId>,
    asset_by_path: HashMap<String, AssetId>,
}

impl TwinModel {
    /// Builds the model from asset types and assets that passed validation (the configuration
    /// makes both: `Config::twin_model`). Entries that validation would reject (unknown types) are
    /// skipped rather than panicking.
    pub fn build(types: &[TypeConfig], assets: &[AssetSpec]) -> Self {
        let mut model = Self::default();
        let mut type_ids = HashMap::new();
        for (i, ty) in types.iter().enumerate() {
            type_ids.insert(ty.name.as_str(), TypeId(i as u32));
            model.types.push(AssetType {
                name: ty.name.clone(),
                description: ty.description.clone(),
                properties: ty
                    .properties
                    .iter()
                    .map(|p| PropertyDecl {
                        name: p.name.clone(),
                        data_type: p.data_type,
                        unit: p.unit.as_deref().and_then(units::lookup),
                        description: p.description.clone(),
                        range: p.range.map(|[low, high]| EuRange { low, high }),
                        deadband: match p.deadband {
                            None => Deadband::None,
                            Some(DeadbandConfig::Absolute(v)) => Deadband::Absolute(v),
                            Some(DeadbandConfig::Percent(v)) => Deadband::Percent(v),
                        },
                        access: p.access,
                        limits: p.limits.map(|[low, high]| EuRange { low, high }),
                        write_policy: WritePolicy {
                            clamp: p.clamp,
                            max_rate: p.max_rate,
                            min_write_interval: p.min_write_interval,
                            on_loss: p.on_loss,
                            select_before_operate: p.select_before_operate,
                        },
                        history: HistoryPolicy {
                            historizing: p.historizing,
                            deadband: match p.history_deadband {
                                None => Deadband::None,
                                Some(DeadbandConfig::Absolute(v)) => Deadband::Absolute(v),
                                Some(DeadbandConfig::Percent(v)) => Deadband::Percent(v),
                            },
                            max_interval: p.history_max_interval,
                        },
                    })
                    .collect(),
            });
        }
        for asset in assets {
            let Some(&type_id) = type_ids.get(asset.type_name.as_str()) else {
                continue;
            };
            let asset_id = AssetId(model.assets.len() as u32);
            let mut properties = Vec::new();
            for (decl_index, decl) in model.types[type_id.0 as usize]
                .properties
                .iter()
                .enumerate()
            {
                let id = PropertyId(model.properties.len() as u32);
                let binding = asset.bindings.get(&decl.name);
                let path = format!("{}/{}", asset.path, decl.name);
                model.property_by_path.insert(path.clone(), id);
                model.properties.push(PropertyDef {
                    asset: asset_id,
                    decl: decl_index,
                    path,
                    scaling: binding.map(|b| b.scaling).unwrap_or_default(),
                    refresh_interval: binding.and_then(|b| b.refresh_interval),
                });
                properties.push(id);
            }
            model.asset_by_path.insert(asset.path.clone(), asset_id);
            model.assets.push(Asset {
                path: asset.path.clone(),
                type_id,
                description: asset.description.clone(),
                properties,
            });
        }
        model
    }

    /// All asset types.
    pub fn types(&self) -> &[AssetType] {
        &self.types
    }

    /// All assets.
    pub fn assets(&self) -> &[Asset] {
        &self.assets
    }

    /// All properties, indexed by [`PropertyId`].
    pub fn properties(&self) -> &[PropertyDef] {
        &self.properties
    }

    /// The property with this id. Panics on an id from another model.
    pub fn property(&self, id: PropertyId) -> &PropertyDef {
        &self.properties[id.index()]
    }

    /// The declaration (data type, unit, range, ...) of a property.
    pub fn decl(&self, id: PropertyId) -> &PropertyDecl {
        let def = self.property(id);
        let asset = &self.assets[def.asset.0 as usize];
        &self.types[asset.type_id.0 as usize].properties[def.decl]
    }

    /// The asset owning a property.
    pub fn asset_of(&self, id: PropertyId) -> &Asset {
        &self.assets[self.property(id).asset.0 as usize]
    }

    /// The type of an asset.
    pub fn type_of(&self, asset: &Asset) -> &AssetType {
        &self.types[asset.type_id.0 as usize]
    }

    /// The property at `asset/path/property`, in O(1).
    pub fn property_by_path(&self, path: &str) -> Option<PropertyId> {
        self.property_by_path.get(path).copied()
    }

    /// The property `name` of the asset at `asset_path`.
    pub fn property_of(&self, asset_path: &str, name: &str) -> Option<PropertyId> {
        let asset = &self.assets[self.asset_by_path.get(asset_path)?.0 as usize];
        let ty = &self.types[asset.type_id.0 as usize];
        let index = ty.properties.iter().position(|p| p.name == name)?;
        Some(asset.properties[index])
    }

    /// The asset at `path`, in O(1).
    pub fn asset_by_path(&self, path: &str) -> Option<&Asset> {
        self.asset_by_path
            .get(path)
            .map(|id| &self.assets[id.0 as usize])
    }
}
