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
use crate::twin::{PropertyId, Sample, Twin, TwinModel};

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
    /// Every interlock in configuration order, with the properties it guards.
    all: Vec<(Arc<Interlock>, Vec<PropertyId>)>,
}

/// One interlock as it stands now ([`Interlocks::states`]): what the web view shows.
#[derive(Debug, Clone)]
pub struct InterlockState {
    /// Its name.
    pub name: String,
    /// Its condition's text (whitespace collapsed).
    pub condition: String,
    /// The properties it guards.
    pub applies_to: Vec<PropertyId>,
    /// Every property the condition reads, with the sample it was evaluated on.
    pub inputs: Vec<(PropertyId, Sample)>,
    /// `Ok` when writes to its properties may go on; else why not (an input not Good, or the
    /// condition false with its inputs' values): the text a refused write gets.
    pub holds: Result<(), String>,
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
            let mut guarded = Vec::with_capacity(spec.applies_to.len());
            for path in spec.applies_to {
                let property = id(path).map_err(|why| format!("interlock `{name}`: {why}"))?;
                out.by_property
                    .entry(property)
                    .or_default()
                    .push(Arc::clone(&interlock));
                guarded.push(property);
            }
            out.all.push((interlock, guarded));
        }
        Ok(out)
    }

    /// Every interlock in configuration order, evaluated against the twin's current values
    /// (what [`Self::check`] would say for the properties it guards).
    pub fn states(&self, twin: &Twin) -> Vec<InterlockState> {
        self.all
            .iter()
            .map(|(interlock, applies_to)| {
                let inputs: Vec<(PropertyId, Sample)> = interlock
                    .inputs
                    .iter()
                    .map(|&input| (input, twin.sample(input)))
                    .collect();
                InterlockState {
                    name: interlock.name.clone(),
                    condition: interlock.text.clone(),
                    applies_to: applies_to.clone(),
                    holds: evaluate(interlock, &inputs, twin.model()),
                    inputs,
                }
            })
            .collect()
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
            let inputs: Vec<(PropertyId, Sample)> = interlock
                .inputs
                .iter()
                .map(|&input| (input, twin.sample(input)))
                .collect();
            evaluate(interlock, &inputs, twin.model()).map_err(|why| ControlError::Interlock {
                name: interlock.name.clone(),
                why,
            })?;
        }
        Ok(())
    }
}

/// Whether `interlock` holds on `inputs` (its inputs' samples, in its order); else why not: an
/// input that is not Good, or the condition false with its inputs' values.
fn evaluate(
    interlock: &Interlock,
    inputs: &[(PropertyId, Sample)],
    model: &TwinModel,
) -> Result<(), String> {
    let path = |input: PropertyId| &model.property(input).path;
    for (input, sample) in inputs {
        if !sample.quality.is_good() || sample.value.is_none() {
            return Err(format!(
                "input `{}` is not Good ({:?}, {})",
                path(*input),
                sample.quality.level,
                sample.quality.reason.as_str()
            ));
        }
    }
    let samples: HashMap<PropertyId, &Sample> = inputs.iter().map(|(id, s)| (*id, s)).collect();
    let holds = interlock
        .condition
        .evaluate(&|input: &PropertyId| samples[input].value.clone());
    if !holds {
        let mut why = format!("`{}` is false (", interlock.text);
        for (i, (input, sample)) in inputs.iter().enumerate() {
            let separator = if i == 0 { "" } else { ", " };
            let value = sample
                .value
                .as_ref()
                .map_or_else(String::new, ToString::to_string);
            let _ = write!(why, "{separator}{} = {value}", path(*input));
        }
        why.push(')');
        return Err(why);
    }
    Ok(())
}
