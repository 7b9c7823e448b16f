//! Interlocks: conditions over twin properties that must hold for writes to the properties they
//! guard (`[[control.interlocks]]`). Operational interlocks, not safety functions: Twinloom is
//! not an IEC 61511 safety system.
//!
//! The gate checks them when it decides a write (rule `interlock`, after the per-property rules
//! and before the origin's budget is spent) and again just before the write is carried out, so
//! a condition that stopped holding while the write waited its turn stops it. An input whose
//! quality is not Good refuses the write whatever the condition would say (fail safe).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::ControlError;
use crate::twin::condition::{self, Condition};
use crate::twin::{PropertyId, Twin, TwinModel};

/// One interlock, resolved against the twin model.
#[derive(Debug)]
struct Interlock {
    name: String,
    text: String,
    condition: Condition<PropertyId>,
    /// Every property the condition reads, once each, in text order.
    inputs: Vec<PropertyId>,
}

/// An interlock as configured: its name, the property paths it guards, its condition's text.
#[derive(Debug, Clone, Copy)]
pub struct InterlockSpec<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Guarded properties, `<asset path>/<property>`.
    pub applies_to: &'a [String],
    /// The condition (`crate::twin::condition` syntax).
    pub condition: &'a str,
}

/// Every interlock, by the property it guards. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Interlocks {
    by_property: HashMap<PropertyId, Vec<Arc<Interlock>>>,
}

impl Interlocks {
    /// Resolves `specs` against `model`.
    ///
    /// Errors: a condition that does not parse or type-check, or a path the model does not have
    /// (configuration validation reports these first, with positions; this is the backstop).
    pub fn compile<'a>(
        specs: impl IntoIterator<Item = InterlockSpec<'a>>,
        model: &TwinModel,
    ) -> Result<Self, String> {
        let id = |path: &str| {
            model
                .property_by_path(path)
                .ok_or_else(|| format!("there is no property `{path}`"))
        };
        let mut out = Self::default();
        for spec in specs {
            let name = spec.name;
            let parsed = condition::parse(spec.condition, |path| {
                id(path).map(|property| model.decl(property).data_type)
            })
            .map_err(|errors| {
                let first = &errors[0];
                format!(
                    "interlock `{name}`: {} (at byte {})",
                    first.message, first.offset
                )
            })?;
            let resolved = parsed
                .resolve(&mut |path: &String| id(path))
                .map_err(|why| format!("interlock `{name}`: {why}"))?;
            let mut inputs: Vec<PropertyId> = Vec::new();
            for property in resolved.properties() {
                if !inputs.contains(property) {
                    inputs.push(*property);
                }
            }
            let interlock = Arc::new(Interlock {
                name: name.to_owned(),
                text: spec
                    .condition
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                condition: resolved,
                inputs,
            });
            for path in spec.applies_to {
                let guarded = id(path).map_err(|why| format!("interlock `{name}`: {why}"))?;
                out.by_property
                    .entry(guarded)
                    .or_default()
                    .push(Arc::clone(&interlock));
            }
        }
        Ok(out)
    }

    /// Whether any interlock guards `property`.
    pub fn guards(&self, property: PropertyId) -> bool {
        self.by_property.contains_key(&property)
    }

    /// Checks every interlock guarding `property` against the twin's current values.
    ///
    /// Errors: [`ControlError::Interlock`] naming the first interlock that does not hold and
    /// why: an input that is not Good, or the condition false with its inputs' values.
    pub fn check(&self, twin: &Twin, property: PropertyId) -> Result<(), ControlError> {
        let Some(interlocks) = self.by_property.get(&property) else {
            return Ok(());
        };
        for interlock in interlocks {
            let samples: HashMap<PropertyId, _> = interlock
                .inputs
                .iter()
                .map(|&input| (input, twin.sample(input)))
                .collect();
            let path = |input: PropertyId| &twin.model().property(input).path;
            for &input in &interlock.inputs {
                let sample = &samples[&input];
                if !sample.quality.is_good() || sample.value.is_none() {
                    return Err(ControlError::Interlock {
                        name: interlock.name.clone(),
                        why: format!(
                            "input `{}` is not Good ({:?}, {})",
                            path(input),
                            sample.quality.level,
                            sample.quality.reason.as_str()
                        ),
                    });
                }
            }
            let holds = interlock
                .condition
                .evaluate(&|input: &PropertyId| samples[input].value.clone());
            if !holds {
                let mut why = format!("`{}` is false (", interlock.text);
                for (i, &input) in interlock.inputs.iter().enumerate() {
                    let separator = if i == 0 { "" } else { ", " };
                    let value = samples[&input]
                        .value
                        .as_ref()
                        .map_or_else(String::new, ToString::to_string);
                    let _ = write!(why, "{separator}{} = {value}", path(input));
                }
                why.push(')');
                return Err(ControlError::Interlock {
                    name: interlock.name.clone(),
                    why,
                });
            }
        }
        Ok(())
    }
}
