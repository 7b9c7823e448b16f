//! OEE plugin: overall equipment effectiveness of packaging machines, from their state and counters.
//!
//! Inputs per machine (subscribe to them): `state` (0 stopped, 1 running, 2 micro-stop, 3 fault),
//! `good_count` and `reject_count` (pieces, monotonically increasing). Config: `ideal_rate`, the
//! machine's nameplate rate in pieces per minute.
//!
//! Outputs per machine, in percent, since the plugin started (bind them with
//! `{ plugin = "<name>" }`; an output that is not bound to the plugin is not computed):
//! `availability` = running time / elapsed time; `performance` = pieces / (running minutes ×
//! ideal rate); `quality` = good / (good + rejects); `oee` = their product (the definition of
//! Nakajima's TPM, as in ISO 22400-2 §5.5.x). Times come from the values' source timestamps and
//! the host's ticks, never from a clock of the plugin's own.
//!
//! Quality. Only good samples count (a good sample whose value is not finite is ignored
//! altogether); a machine keeps computing from its last good values, and each output carries the
//! worst quality of the latest samples of the inputs it comes from: `availability` of `state`,
//! `quality` of `good_count` and `reject_count`, `performance` and `oee` of all three. So an
//! output is uncertain while one of its inputs is uncertain, bad while one is bad, and good again
//! with their next good samples. An input that has had no sample yet counts as good (the outputs
//! appear only once `good_count` and `reject_count` have had a good sample).

use std::collections::HashMap;

use serde::Deserialize;
use twinloom_plugin::{Call, ChangeBatch, Outputs, Plugin, Properties, Quality};

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Nameplate rate, pieces per minute.
    ideal_rate: f64,
}

/// What a subscribed property is; the discriminant indexes [`Asset::qualities`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    State = 0,
    Good = 1,
    Reject = 2,
}

/// The output property names, in the order of [`Asset::outputs`] and of [`Machine::figures`].
const OUTPUTS: [&str; 4] = ["availability", "performance", "quality", "oee"];

/// Running totals of one machine.
#[derive(Debug, Default, Clone)]
pub struct Machine {
    state: Option<f64>,
    since_ms: Option<i64>,
    started_ms: Option<i64>,
    running_ms: i64,
    good: Option<(f64, f64)>,
    reject: Option<(f64, f64)>,
}

impl Machine {
    /// Accounts the time since the last event up to `now_ms` to the current state.
    fn advance(&mut self, now_ms: i64) {
        if let (Some(state), Some(since)) = (self.state, self.since_ms)
            && now_ms > since
        {
            if state == 1.0 {
                self.running_ms += now_ms - since;
            }
            self.since_ms = Some(now_ms);
        }
        self.started_ms.get_or_insert(now_ms);
        self.since_ms.get_or_insert(now_ms);
    }

    /// (availability, performance, quality, oee) in percent, once there is something to say.
    pub fn figures(&self, now_ms: i64, ideal_rate: f64) -> Option<(f64, f64, f64, f64)> {
        let elapsed = now_ms - self.started_ms?;
        let (good0, good) = self.good?;
        let (reject0, reject) = self.reject?;
        if elapsed <= 0 {
            return None;
        }
        let availability = self.running_ms as f64 / elapsed as f64;
        let pieces = (good - good0) + (reject - reject0);
        let running_min = self.running_ms as f64 / 60_000.0;
        let performance = if running_min > 0.0 && ideal_rate > 0.0 {
            (pieces / (running_min * ideal_rate)).min(1.0)
        } else {
            0.0
        };
        let quality = if pieces > 0.0 {
            (good - good0) / pieces
        } else {
            1.0
        };
        Some((
            availability * 100.0,
            performance * 100.0,
            quality * 100.0,
            availability * performance * quality * 100.0,
        ))
    }
}

/// One machine asset: its totals, where its outputs go and how good its inputs are.
#[derive(Debug)]
struct Asset {
    /// Index in [`Properties::owned`] of `availability`, `performance`, `quality` and `oee`;
    /// none where the output is not bound to the plugin.
    outputs: [Option<u32>; 4],
    /// Quality of the latest sample of `state`, `good_count` and `reject_count` (good before
    /// the first).
    qualities: [Quality; 3],
    machine: Machine,
}

impl Asset {
    /// The quality of each output, in the order of [`Asset::outputs`]: the worst of the latest
    /// qualities of the inputs it is computed from.
    fn output_qualities(&self) -> [Quality; 4] {
        let [state, good, reject] = self.qualities;
        let counts = good.worst(reject);
        let all = state.worst(counts);
        [state, all, counts, all]
    }
}

/// The plugin's state: one [`Asset`] per machine with a subscribed input.
#[derive(Debug)]
pub struct Oee {
    ideal_rate: f64,
    /// Asset index and kind of each subscribed property, in [`Properties::inputs`] order.
    inputs: Vec<(usize, Input)>,
    assets: Vec<Asset>,
    now_ms: i64,
}

impl Oee {
    /// Builds the state from the settings and the instance's properties: the subscribed inputs
    /// (`<asset path>/state`, `good_count`, `reject_count`) and the owned outputs it looks up
    /// (`<asset path>/availability`, `performance`, `quality`, `oee`; the ones not bound to the
    /// plugin are not produced).
    ///
    /// Errors: bad settings, or a subscribed property the plugin does not understand.
    pub fn new(config: &str, properties: &Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        if settings.ideal_rate.is_nan() || settings.ideal_rate <= 0.0 {
            return Err("ideal_rate must be positive".into());
        }
        let mut inputs = Vec::with_capacity(properties.inputs.len());
        let mut assets = Vec::new();
        let mut by_path = HashMap::new();
        for path in &properties.inputs {
            let (asset, name) = path
                .rsplit_once('/')
                .ok_or_else(|| format!("`{path}` is not a property path"))?;
            let input = match name {
                "state" => Input::State,
                "good_count" => Input::Good,
                "reject_count" => Input::Reject,
                other => {
                    return Err(format!(
                        "cannot use property `{other}`; subscribe to state, good_count, reject_count"
                    ));
                }
            };
            let index = *by_path.entry(asset).or_insert_with(|| {
                assets.push(Asset {
                    outputs: OUTPUTS.map(|name| properties.owned_index(&format!("{asset}/{name}"))),
                    qualities: [Quality::Good; 3],
                    machine: Machine::default(),
                });
                assets.len() - 1
            });
            inputs.push((index, input));
        }
        Ok(Self {
            ideal_rate: settings.ideal_rate,
            inputs,
            assets,
            now_ms: 0,
        })
    }

    fn outputs(&self) -> Outputs {
        let mut outputs = Outputs::with_capacity(4 * self.assets.len());
        for asset in &self.assets {
            let Some((a, p, q, oee)) = asset.machine.figures(self.now_ms, self.ideal_rate) else {
                continue;
            };
            let values = asset.outputs.iter().zip([a, p, q, oee]);
            for ((owned, value), quality) in values.zip(asset.output_qualities()) {
                // Derived values must be finite; one that is not is left out.
                if let Some(owned) = *owned
                    && value.is_finite()
                {
                    outputs.set_with_quality(owned, value, quality);
                }
            }
        }
        outputs
    }
}

impl Plugin for Oee {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        Self::new(config, &properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, _call: &Call) -> Outputs {
        for i in 0..batch.properties.len() {
            let Some(&(asset, input)) = self.inputs.get(batch.properties[i] as usize) else {
                continue;
            };
            let (value, quality) = (batch.values[i], batch.qualities[i]);
            let asset = &mut self.assets[asset];
            if quality != Quality::Good {
                // Not counted: the outputs go on from the last good values, marked with this.
                asset.qualities[input as usize] = quality;
                continue;
            }
            if !value.is_finite() {
                continue;
            }
            asset.qualities[input as usize] = Quality::Good;
            let at = batch.source_times_ms[i];
            self.now_ms = self.now_ms.max(at);
            let machine = &mut asset.machine;
            machine.advance(at);
            match input {
                Input::State => machine.state = Some(value),
                Input::Good => {
                    machine.good = Some((machine.good.map_or(value, |(first, _)| first), value))
                }
                Input::Reject => {
                    machine.reject = Some((machine.reject.map_or(value, |(first, _)| first), value))
                }
            }
        }
        self.outputs()
    }

    fn on_tick(&mut self, call: &Call) -> Outputs {
        self.now_ms = self.now_ms.max(call.now_ms);
        // A machine's time starts with its first good sample.
        for asset in &mut self.assets {
            if asset.machine.started_ms.is_some() {
                asset.machine.advance(call.now_ms);
            }
        }
        self.outputs()
    }
}

twinloom_plugin::export_plugin!(Oee);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, properties};

    const AVAILABILITY: u32 = 0;
    const PERFORMANCE: u32 = 1;
    const QUALITY: u32 = 2;
    const OEE: u32 = 3;

    /// A machine at `asset` with all three inputs and all four outputs, in their usual order.
    fn machine(config: &str, asset: &str) -> Oee {
        let inputs = ["state", "good_count", "reject_count"].map(|p| format!("{asset}/{p}"));
        let owned = OUTPUTS.map(|p| format!("{asset}/{p}"));
        let properties = properties(
            &inputs.each_ref().map(String::as_str),
            &owned.each_ref().map(String::as_str),
            &[],
        );
        Oee::new(config, &properties).unwrap()
    }

    fn value(outputs: &Outputs, owned: u32) -> f64 {
        outputs.value(owned).expect("a value").0
    }

    fn quality(outputs: &Outputs, owned: u32) -> Quality {
        outputs.value(owned).expect("a value").1
    }

    #[test]
    fn a_textbook_shift() {
        // Ideal 100 /min. 60 minutes: 45 running, 15 stopped; 4 000 pieces, 200 rejects.
        let mut oee = machine("ideal_rate = 100.0", "l1/filler");
        let call = Call::at(0);
        oee.on_changes(
            &batch(&[(0, 1.0, 0), (1, 1000.0, 0), (2, 50.0, 0)]).view(),
            &call,
        );
        oee.on_changes(&batch(&[(0, 0.0, 45 * 60_000)]).view(), &call);
        let out = oee.on_changes(
            &batch(&[(1, 4800.0, 60 * 60_000), (2, 250.0, 60 * 60_000)]).view(),
            &call,
        );
        let (a, p, q, total) = (
            value(&out, AVAILABILITY),
            value(&out, PERFORMANCE),
            value(&out, QUALITY),
            value(&out, OEE),
        );
        assert!((a - 75.0).abs() < 1e-9, "{a}");
        // 4 000 pieces in 45 min at 100 /min ideal = 4 000 / 4 500.
        assert!((p - 4000.0 / 4500.0 * 100.0).abs() < 1e-9, "{p}");
        assert!((q - 95.0).abs() < 1e-9, "{q}");
        assert!(
            (total - 0.75 * (4000.0 / 4500.0) * 0.95 * 100.0).abs() < 1e-9,
            "{total}"
        );
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
    }

    #[test]
    fn ticks_advance_time_and_bad_values_are_ignored() {
        let mut oee = machine("ideal_rate = 60.0", "m");
        oee.on_changes(
            &batch(&[(0, 1.0, 0), (1, 0.0, 0), (2, 0.0, 0)]).view(),
            &Call::at(0),
        );
        let mut bad = batch(&[(0, 0.0, 30_000)]);
        bad.qualities[0] = Quality::Bad;
        oee.on_changes(&bad.view(), &Call::at(30_000));
        let out = oee.on_tick(&Call::at(60_000));
        // Still running for the whole minute: the bad "stopped" reading did not count.
        assert!((value(&out, AVAILABILITY) - 100.0).abs() < 1e-9);
        // ... but it is the latest state there is: availability says so.
        assert_eq!(quality(&out, AVAILABILITY), Quality::Bad);
    }

    #[test]
    fn a_bad_input_makes_the_outputs_it_feeds_bad_until_its_next_good_sample() {
        let mut oee = machine("ideal_rate = 60.0", "m");
        oee.on_changes(
            &batch(&[(0, 1.0, 0), (1, 0.0, 0), (2, 0.0, 0)]).view(),
            &Call::at(0),
        );
        let out = oee.on_tick(&Call::at(60_000));
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        // The reject counter goes bad (no value): availability does not depend on it.
        let mut bad = batch(&[(2, f64::NAN, 70_000)]);
        bad.qualities[0] = Quality::Bad;
        let out = oee.on_changes(&bad.view(), &Call::at(70_000));
        assert_eq!(quality(&out, AVAILABILITY), Quality::Good);
        for owned in [PERFORMANCE, QUALITY, OEE] {
            assert_eq!(quality(&out, owned), Quality::Bad, "{owned}");
        }
        // Computed on from the last good values: 60 pieces in the running minute, none rejected.
        let out = oee.on_changes(&batch(&[(1, 60.0, 80_000)]).view(), &Call::at(80_000));
        assert!((value(&out, QUALITY) - 100.0).abs() < 1e-9);
        assert_eq!(quality(&out, QUALITY), Quality::Bad);
        // An uncertain state: availability and what depends on it are uncertain, not worse
        // than the bad counter.
        let mut uncertain = batch(&[(0, 1.0, 90_000)]);
        uncertain.qualities[0] = Quality::Uncertain;
        let out = oee.on_changes(&uncertain.view(), &Call::at(90_000));
        assert_eq!(quality(&out, AVAILABILITY), Quality::Uncertain);
        assert_eq!(quality(&out, PERFORMANCE), Quality::Bad);
        // Good samples again: good outputs.
        let out = oee.on_changes(
            &batch(&[(2, 0.0, 120_000), (0, 1.0, 120_000)]).view(),
            &Call::at(120_000),
        );
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn only_the_outputs_bound_to_the_plugin_are_produced() {
        // Two machines; only b's `oee` and a's `availability` are bound to the plugin.
        let properties = properties(
            &[
                "a/state",
                "a/good_count",
                "a/reject_count",
                "b/state",
                "b/good_count",
                "b/reject_count",
            ],
            &["b/oee", "a/availability"],
            &[],
        );
        let mut oee = Oee::new("ideal_rate = 60.0", &properties).unwrap();
        let samples: Vec<(u32, f64, i64)> = (0..6).map(|i| (i, 1.0, 0)).collect();
        oee.on_changes(&batch(&samples).view(), &Call::at(0));
        let out = oee.on_tick(&Call::at(60_000));
        let indices: Vec<u32> = out.values().map(|(i, _, _)| i).collect();
        assert_eq!(indices, [1, 0]);
        assert!((value(&out, 1) - 100.0).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_and_unknown_inputs_are_refused() {
        let none = properties(&[], &[], &[]);
        assert!(Oee::new("ideal_rate = 0.0", &none).is_err());
        assert!(Oee::new("rate = 1", &none).is_err());
        assert!(Oee::new("ideal_rate = 1.0", &properties(&["m/speed"], &[], &[])).is_err());
    }
}
