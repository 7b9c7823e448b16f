//! OEE plugin: overall equipment effectiveness of packaging machines, from their state and counters.
//!
//! Inputs per machine (subscribe to them): `state` (0 stopped, 1 running, 2 micro-stop, 3 fault),
//! `good_count` and `reject_count` (pieces, monotonically increasing). Config: `ideal_rate`, the
//! machine's nameplate rate in pieces per minute.
//!
//! Outputs per machine, in percent, since the plugin started (bind them with
//! `{ plugin = "<name>" }`): `availability` = running time / elapsed time; `performance` =
//! pieces / (running minutes × ideal rate); `quality` = good / (good + rejects); `oee` = their
//! product (the definition of Nakajima's TPM, as in ISO 22400-2 §5.5.x). Times come from the
//! values' source timestamps and the host's ticks, never from a clock of the plugin's own.

use std::collections::HashMap;

use serde::Deserialize;
use twinloom_plugin::{ChangeBatch, DerivedValue, Outputs, Plugin, Quality};

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Nameplate rate, pieces per minute.
    ideal_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    State,
    Good,
    Reject,
}

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

/// The plugin's state: one [`Machine`] per asset.
#[derive(Debug)]
pub struct Oee {
    ideal_rate: f64,
    inputs: Vec<(String, Input)>,
    machines: HashMap<String, Machine>,
    now_ms: i64,
}

impl Oee {
    /// Builds the state from the settings and the subscribed property paths.
    ///
    /// Errors: bad settings, or a subscribed property the plugin does not understand.
    pub fn new(config: &str, properties: Vec<String>) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        if settings.ideal_rate.is_nan() || settings.ideal_rate <= 0.0 {
            return Err("ideal_rate must be positive".into());
        }
        let mut inputs = Vec::new();
        for path in properties {
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
            inputs.push((asset.to_owned(), input));
        }
        Ok(Self {
            ideal_rate: settings.ideal_rate,
            inputs,
            machines: HashMap::new(),
            now_ms: 0,
        })
    }

    fn outputs(&self) -> Outputs {
        let mut values = Vec::new();
        let mut assets: Vec<&String> = self.machines.keys().collect();
        assets.sort();
        for asset in assets {
            if let Some((a, p, q, oee)) = self.machines[asset].figures(self.now_ms, self.ideal_rate)
            {
                for (name, value) in [
                    ("availability", a),
                    ("performance", p),
                    ("quality", q),
                    ("oee", oee),
                ] {
                    values.push(DerivedValue {
                        property: format!("{asset}/{name}"),
                        value,
                    });
                }
            }
        }
        Outputs {
            values,
            proposals: Vec::new(),
        }
    }
}

impl Plugin for Oee {
    fn init(config: &str, properties: Vec<String>) -> Result<Self, String> {
        Self::new(config, properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch) -> Outputs {
        for i in 0..batch.properties.len() {
            if batch.qualities[i] != Quality::Good {
                continue;
            }
            let Some((asset, input)) = self.inputs.get(batch.properties[i] as usize) else {
                continue;
            };
            let (value, at) = (batch.values[i], batch.source_times_ms[i]);
            self.now_ms = self.now_ms.max(at);
            let machine = self.machines.entry(asset.clone()).or_default();
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

    fn on_tick(&mut self, now_ms: i64) -> Outputs {
        self.now_ms = self.now_ms.max(now_ms);
        for machine in self.machines.values_mut() {
            machine.advance(now_ms);
        }
        self.outputs()
    }
}

twinloom_plugin::export_plugin!(Oee);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, value};

    #[test]
    fn a_textbook_shift() {
        // Ideal 100 /min. 60 minutes: 45 running, 15 stopped; 4 000 pieces, 200 rejects.
        let properties = vec![
            "l1/filler/state".into(),
            "l1/filler/good_count".into(),
            "l1/filler/reject_count".into(),
        ];
        let mut oee = Oee::new("ideal_rate = 100.0", properties).unwrap();
        oee.on_changes(&batch(&[(0, 1.0, 0), (1, 1000.0, 0), (2, 50.0, 0)]));
        oee.on_changes(&batch(&[(0, 0.0, 45 * 60_000)]));
        let out = oee.on_changes(&batch(&[(1, 4800.0, 60 * 60_000), (2, 250.0, 60 * 60_000)]));
        let (a, p, q, total) = (
            value(&out, "l1/filler/availability"),
            value(&out, "l1/filler/performance"),
            value(&out, "l1/filler/quality"),
            value(&out, "l1/filler/oee"),
        );
        assert!((a - 75.0).abs() < 1e-9, "{a}");
        // 4 000 pieces in 45 min at 100 /min ideal = 4 000 / 4 500.
        assert!((p - 4000.0 / 4500.0 * 100.0).abs() < 1e-9, "{p}");
        assert!((q - 95.0).abs() < 1e-9, "{q}");
        assert!(
            (total - 0.75 * (4000.0 / 4500.0) * 0.95 * 100.0).abs() < 1e-9,
            "{total}"
        );
    }

    #[test]
    fn ticks_advance_time_and_bad_values_are_ignored() {
        let properties = vec![
            "m/state".into(),
            "m/good_count".into(),
            "m/reject_count".into(),
        ];
        let mut oee = Oee::new("ideal_rate = 60.0", properties).unwrap();
        oee.on_changes(&batch(&[(0, 1.0, 0), (1, 0.0, 0), (2, 0.0, 0)]));
        let mut bad = batch(&[(0, 0.0, 30_000)]);
        bad.qualities[0] = Quality::Bad;
        oee.on_changes(&bad);
        let out = oee.on_tick(60_000);
        // Still running for the whole minute: the bad "stopped" reading did not count.
        assert!((value(&out, "m/availability") - 100.0).abs() < 1e-9);
    }

    #[test]
    fn bad_settings_and_unknown_inputs_are_refused() {
        assert!(Oee::new("ideal_rate = 0.0", vec![]).is_err());
        assert!(Oee::new("rate = 1", vec![]).is_err());
        assert!(Oee::new("ideal_rate = 1.0", vec!["m/speed".into()]).is_err());
    }
}
