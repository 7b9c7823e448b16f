//! Resolving a plugin's properties against the twin's model: its inputs (from its `subscribe`
//! patterns) and its outputs (the properties bound to it with `{ plugin = "name" }`).

use std::collections::HashMap;

use crate::config::model::{AssetConfig, PluginConfig};
use crate::config::sources::BindingConfig;
use crate::twin::{PropertyId, TwinModel};

/// A plugin's properties, resolved.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Resolved {
    /// Input properties, in index order (the order of the twin's assets, then of the patterns'
    /// property names); each at most once.
    pub inputs: Vec<PropertyId>,
    /// Their paths, as handed to the plugin's `init`.
    pub input_names: Vec<String>,
    /// Input property → its index in a change batch.
    pub index: HashMap<PropertyId, u32>,
    /// Output property path → property: where the plugin's derived values may go.
    pub outputs: HashMap<String, PropertyId>,
}

/// Resolves `plugin`'s inputs and outputs in `model`; `assets` are the configured assets (their
/// bindings name the plugin that computes a property).
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
    let mut outputs = HashMap::new();
    for asset in assets {
        for (name, binding) in &asset.bindings {
            if let BindingConfig::Plugin(b) = binding
                && b.plugin == plugin.name
                && let Some(id) = model.property_of(&asset.path, name)
            {
                outputs.insert(format!("{}/{name}", asset.path), id);
            }
        }
    }
    Resolved {
        input_names: inputs
            .iter()
            .map(|id| model.property(*id).path.clone())
            .collect(),
        index: inputs
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u32))
            .collect(),
        inputs,
        outputs,
    }
}
