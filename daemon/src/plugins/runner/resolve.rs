//! Resolving a plugin's properties against the twin's model: its inputs (from its `subscribe`
//! patterns), its owned properties (those bound to it with `{ plugin = "name" }`) and its
//! writable properties (its `writes` list). Each list's order is the index the plugin uses.

use std::collections::HashMap;

use crate::config::model::{AssetConfig, PluginConfig};
use crate::config::sources::BindingConfig;
use crate::plugins::contract::{DataType as WireType, WritableProperty};
use crate::plugins::runtime::Properties;
use crate::twin::{DataType, PropertyId, TwinModel};

/// A plugin's properties, resolved.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Resolved {
    /// Input properties, in index order (the order of the twin's assets, then of the patterns'
    /// property names); each at most once.
    pub inputs: Vec<PropertyId>,
    /// Input property → its index in a change batch.
    pub index: HashMap<PropertyId, u32>,
    /// Owned properties, in index order (the twin's order): where derived values go.
    pub owned: Vec<PropertyId>,
    /// Writable properties with their data types, in the order of the `writes` list.
    pub writable: Vec<(PropertyId, DataType)>,
    /// All three lists as paths, as handed to the plugin's `init`.
    pub properties: Properties,
}

/// The contract's data type for a writable property: booleans, integers (signed or unsigned)
/// and floats; `None` for a type a proposal cannot carry (strings).
fn wire_type(data_type: DataType) -> Option<WireType> {
    match data_type {
        DataType::Bool => Some(WireType::Boolean),
        DataType::Float => Some(WireType::Float),
        DataType::String => None,
        _ => Some(WireType::Integer),
    }
}

/// Resolves `plugin`'s inputs, owned and writable properties in `model`; `assets` are the
/// configured assets (their bindings name the plugin that computes a property). `writes` entries
/// were checked at config load; one that does not resolve is left out.
pub(super) fn resolve(
    plugin: &PluginConfig,
    assets: &[AssetConfig],
    model: &TwinModel,
) -> Resolved {
    let mut inputs = Vec::new();
    for asset in model.assets() {
        for subscription in plugin.subscribe.iter().filter(|s| s.matches(&asset.path)) {
            for name in &subscription.properties {
                if let Some(id) = model.property_of(&asset.path, name)
                    && !inputs.contains(&id)
                {
                    inputs.push(id);
                }
            }
        }
    }
    let mut owned = Vec::new();
    for asset in assets {
        for (name, binding) in &asset.bindings {
            if let BindingConfig::Plugin(b) = binding
                && b.plugin == plugin.name
                && let Some(id) = model.property_of(&asset.path, name)
            {
                owned.push(id);
            }
        }
    }
    owned.sort_by_key(|id: &PropertyId| id.index());
    owned.dedup();
    let writable: Vec<(PropertyId, DataType)> = plugin
        .writes
        .iter()
        .filter_map(|path| model.property_by_path(path))
        .map(|id| (id, model.decl(id).data_type))
        .filter(|(_, data_type)| wire_type(*data_type).is_some())
        .collect();
    let path = |id: &PropertyId| model.property(*id).path.clone();
    let properties = Properties {
        inputs: inputs.iter().map(path).collect(),
        owned: owned.iter().map(path).collect(),
        writable: writable
            .iter()
            .filter_map(|(id, data_type)| {
                Some(WritableProperty {
                    path: path(id),
                    data_type: wire_type(*data_type)?,
                })
            })
            .collect(),
    };
    Resolved {
        index: inputs
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect(),
        inputs,
        owned,
        writable,
        properties,
    }
}
