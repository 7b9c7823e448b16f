//! PID plugin: one control loop that holds a process value at its setpoint by proposing an
//! output (e.g. a heater's power) through the control gate.
//!
//! Inputs (subscribe to them): the process value `process_value` (PV, engineering units), the
//! output's own read value `output` (the device's current value: the loop tracks it while it does
//! not write), optionally the setpoint `setpoint_property` (SP; otherwise the fixed `setpoint`)
//! and a boolean `auto_property` (1 = automatic; otherwise always automatic). The output must be
//! in the plugin's `writes` list.
//!
//! Algorithm: the ISA ("ideal") PID in position form, evaluated on every call (changes and
//! ticks), dt the time since the previous evaluation (at most 10 s):
//!
//! - e = SP − PV (`action = "reverse"`, the default: heating, the output rises when PV is below
//!   SP) or PV − SP (`action = "direct"`: cooling);
//! - P = kp · e; D = −s · kp · td · dPV/dt with s = 1 for reverse and −1 for direct action
//!   (derivative on the measurement: a setpoint step gives no derivative kick; dPV/dt filtered
//!   with the time constant td / 8);
//! - I += kp · dt / ti · e (none when `ti` = 0), with **anti-windup** by conditional
//!   integration: I does not change while P + I + D is beyond a limit and e pushes it further;
//!   I itself stays within [output_min, output_max];
//! - u = clamp(P + I + D, output_min, output_max), proposed when it differs from the last
//!   proposal by at least `min_step` (or the last one was not written).
//!
//! **Bumpless transfer**: while the loop does not write — in manual (`auto_property` false),
//! while its last proposal was not written (the plant disarmed, a rule refused it, shadow mode, a
//! device error; a proposal superseded by the loop's own newer one counts as written), and before
//! its first evaluation — I tracks the output's read value (I = u_read − P − D, within the
//! limits), so the first automatic output continues from where the device is (exactly, unless
//! P alone lies beyond the output range).
//!
//! Quality: an evaluation needs a Good PV (and a Good SP when it comes from a property); without
//! one the loop proposes nothing and holds its state. Owned outputs are optional: bind
//! `<asset>/pid_error` (SP − PV in PV units) and `<asset>/pid_output` (the last computed output)
//! of the output's asset to the plugin to see them.
//!
//! Config keys:
//!
//! | key                 | unit            | default     | meaning                                   |
//! |---------------------|-----------------|-------------|-------------------------------------------|
//! | `process_value`     | path            | required    | PV property                               |
//! | `output`            | path            | required    | the output, in `writes` and subscribed    |
//! | `setpoint`          | PV units        | —           | fixed SP (or `setpoint_property`)          |
//! | `setpoint_property` | path            | —           | SP property                               |
//! | `auto_property`     | path            | —           | boolean: automatic when 1                 |
//! | `kp`                | output / PV     | required    | proportional gain, > 0                    |
//! | `ti`                | s               | 0           | integral time (0: none)                   |
//! | `td`                | s               | 0           | derivative time                           |
//! | `output_min`        | output units    | 0           | lowest output                             |
//! | `output_max`        | output units    | 100         | highest output                            |
//! | `action`            | —               | `reverse`   | `reverse` (heating) or `direct` (cooling) |
//! | `min_step`          | output units    | 0           | smallest change worth proposing           |

use serde::Deserialize;
use twinloom_plugin::{Call, ChangeBatch, Outcome, Outputs, Plugin, Properties, Quality, Setpoint};

/// Longest dt an evaluation integrates over, s (a long pause is not a long integration).
const MAX_DT_S: f64 = 10.0;

/// N of the derivative filter: the PV's slope is filtered with the time constant td / N.
const DERIVATIVE_FILTER: f64 = 8.0;

/// Control action.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action {
    /// e = SP − PV: the output rises when PV falls (heating).
    #[default]
    Reverse,
    /// e = PV − SP: the output rises when PV rises (cooling).
    Direct,
}

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    process_value: String,
    output: String,
    #[serde(default)]
    setpoint: Option<f64>,
    #[serde(default)]
    setpoint_property: Option<String>,
    #[serde(default)]
    auto_property: Option<String>,
    kp: f64,
    #[serde(default)]
    ti: f64,
    #[serde(default)]
    td: f64,
    #[serde(default)]
    output_min: f64,
    #[serde(default = "default_output_max")]
    output_max: f64,
    #[serde(default)]
    action: Action,
    #[serde(default)]
    min_step: f64,
}

fn default_output_max() -> f64 {
    100.0
}

/// The latest sample of an input.
#[derive(Debug, Clone, Copy)]
struct Latest {
    value: f64,
    quality: Quality,
}

impl Latest {
    fn good(self) -> Option<f64> {
        (self.quality == Quality::Good && self.value.is_finite()).then_some(self.value)
    }
}

/// What the loop remembers of the previous evaluation.
#[derive(Debug, Clone, Copy)]
struct Previous {
    at_ms: i64,
    pv: f64,
    slope: f64,
}

/// One PID loop.
#[derive(Debug)]
pub struct Pid {
    settings: Settings,
    /// Input indices.
    pv_input: u32,
    output_input: u32,
    setpoint_input: Option<u32>,
    auto_input: Option<u32>,
    /// Writable index of the output.
    writable: u32,
    /// Owned indices of `pid_error` and `pid_output`, when bound.
    error_output: Option<u32>,
    output_output: Option<u32>,
    pv: Option<Latest>,
    read_back: Option<Latest>,
    sp: Option<Latest>,
    auto: bool,
    /// The previous evaluation: time, PV and filtered PV slope.
    last: Option<Previous>,
    /// The integral term, output units.
    integral: f64,
    /// The last proposed output, and whether the gate wrote the last proposal.
    proposed: Option<f64>,
    written: bool,
    /// The latest computed output and error.
    output: Option<f64>,
    error: Option<f64>,
}

impl Pid {
    /// A loop for `config` over `properties`.
    ///
    /// Errors: a config that does not parse or whose values are out of range, an input that is
    /// not subscribed, an output not in `writes`.
    pub fn new(config: &str, properties: &Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        if !(settings.kp.is_finite() && settings.kp > 0.0) {
            errors.push(format!("kp must be a positive number, got {}", settings.kp));
        }
        for (key, value) in [
            ("ti", settings.ti),
            ("td", settings.td),
            ("min_step", settings.min_step),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                errors.push(format!("{key} must be 0 or more, got {value}"));
            }
        }
        if !(settings.output_min.is_finite()
            && settings.output_max.is_finite()
            && settings.output_min < settings.output_max)
        {
            errors.push(format!(
                "output_min {} must be below output_max {}",
                settings.output_min, settings.output_max
            ));
        }
        match (&settings.setpoint, &settings.setpoint_property) {
            (Some(_), Some(_)) => {
                errors.push("give `setpoint` or `setpoint_property`, not both".into())
            }
            (None, None) => {
                errors.push("a setpoint is needed: `setpoint` or `setpoint_property`".into())
            }
            (Some(sp), None) if !sp.is_finite() => {
                errors.push(format!("setpoint {sp} is not finite"))
            }
            _ => {}
        }
        let input = |path: &str, errors: &mut Vec<String>| {
            let index = properties.input_index(path);
            if index.is_none() {
                errors.push(format!(
                    "`{path}` is not among the plugin's inputs: subscribe to it"
                ));
            }
            index
        };
        let pv_input = input(&settings.process_value, &mut errors);
        let output_input = input(&settings.output, &mut errors);
        let setpoint_input = settings
            .setpoint_property
            .as_deref()
            .map(|path| input(path, &mut errors));
        let auto_input = settings
            .auto_property
            .as_deref()
            .map(|path| input(path, &mut errors));
        let writable = properties.writable_index(&settings.output);
        if writable.is_none() {
            errors.push(format!(
                "`{}` is not in the plugin's `writes` list",
                settings.output
            ));
        }
        if !errors.is_empty() {
            return Err(errors.join("; "));
        }
        let asset = settings
            .output
            .rsplit_once('/')
            .map_or("", |(asset, _)| asset)
            .to_owned();
        Ok(Self {
            pv_input: pv_input.unwrap_or_default(),
            output_input: output_input.unwrap_or_default(),
            setpoint_input: setpoint_input.flatten(),
            auto_input: auto_input.flatten(),
            writable: writable.unwrap_or_default(),
            error_output: properties.owned_index(&format!("{asset}/pid_error")),
            output_output: properties.owned_index(&format!("{asset}/pid_output")),
            sp: settings.setpoint.map(|value| Latest {
                value,
                quality: Quality::Good,
            }),
            settings,
            pv: None,
            read_back: None,
            auto: true,
            last: None,
            integral: 0.0,
            proposed: None,
            written: false,
            output: None,
            error: None,
        })
    }

    fn take(&mut self, batch: &ChangeBatch<'_>) {
        for i in 0..batch.properties.len() {
            let input = batch.properties[i];
            let latest = Latest {
                value: batch.values[i],
                quality: batch.qualities[i],
            };
            if input == self.pv_input {
                self.pv = Some(latest);
            }
            if input == self.output_input {
                self.read_back = Some(latest);
            }
            if Some(input) == self.setpoint_input {
                self.sp = Some(latest);
            }
            if Some(input) == self.auto_input {
                self.auto = latest.good().is_some_and(|v| v != 0.0);
            }
        }
    }

    /// Whether the latest proposal's outcome (if any arrived) says the loop's writes reach the
    /// device (written, or superseded by its own newer proposal).
    fn outcomes(&mut self, call: &Call) {
        if let Some(last) = call
            .outcomes
            .iter()
            .filter(|o| o.index == self.writable)
            .max_by_key(|o| o.proposal)
        {
            // Superseded: a newer proposal of this loop replaced it, which the gate carries out.
            self.written = matches!(last.outcome, Outcome::Written | Outcome::Superseded);
        }
    }

    /// One evaluation at `now_ms`.
    fn evaluate(&mut self, now_ms: i64) -> Outputs {
        let mut outputs = Outputs::new();
        let (Some(pv), Some(sp)) = (
            self.pv.and_then(Latest::good),
            self.sp.and_then(Latest::good),
        ) else {
            return self.report(outputs, Quality::Bad);
        };
        let s = &self.settings;
        let sign = match s.action {
            Action::Reverse => 1.0,
            Action::Direct => -1.0,
        };
        let error = sign * (sp - pv);
        let previous = self.last;
        let dt = previous.map_or(0.0, |last| {
            ((now_ms - last.at_ms) as f64 / 1000.0).clamp(0.0, MAX_DT_S)
        });
        // The PV's slope, filtered with the time constant td / DERIVATIVE_FILTER (a first-order
        // filter as in the ISA form's derivative), so quantised or closely spaced samples give
        // no derivative spikes.
        let slope = match previous {
            Some(last) if dt > 0.0 => {
                let raw = (pv - last.pv) / dt;
                let filter = s.td / DERIVATIVE_FILTER;
                last.slope + (raw - last.slope) * dt / (dt + filter)
            }
            Some(last) => last.slope,
            None => 0.0,
        };
        self.last = Some(Previous {
            at_ms: now_ms,
            pv,
            slope,
        });
        let p = s.kp * error;
        let d = -sign * s.kp * s.td * slope;
        let tracking = !self.auto || !self.written || self.proposed.is_none();
        match (tracking, self.read_back.and_then(Latest::good)) {
            // Bumpless: the output continues from where the device is.
            (true, Some(current)) => {
                self.integral = (current - p - d).clamp(s.output_min, s.output_max);
            }
            // Nothing to continue from yet: wait for the output's read value.
            (true, None) => return self.report(outputs, Quality::Good),
            (false, _) if s.ti > 0.0 => {
                let candidate = self.integral + s.kp * dt / s.ti * error;
                let unclamped = p + candidate + d;
                let winding = (unclamped > s.output_max && error > 0.0)
                    || (unclamped < s.output_min && error < 0.0);
                if !winding {
                    self.integral = candidate.clamp(s.output_min, s.output_max);
                }
            }
            (false, _) => {}
        }
        let u = (p + self.integral + d).clamp(s.output_min, s.output_max);
        self.output = Some(u);
        self.error = Some(sp - pv);
        if self.auto {
            let changed = self
                .proposed
                .is_none_or(|last| (u - last).abs() >= s.min_step && u != last);
            // Proposing again while the last one was not written keeps asking (the plant may
            // have been armed meanwhile).
            if changed || !self.written {
                outputs.propose(
                    self.writable,
                    Setpoint::Float(u),
                    format!("PID: SP {sp:.3} PV {pv:.3} error {:.3} → {u:.3}", sp - pv),
                );
                self.proposed = Some(u);
            }
        }
        self.report(outputs, Quality::Good)
    }

    fn report(&self, mut outputs: Outputs, quality: Quality) -> Outputs {
        if let (Some(index), Some(error)) = (self.error_output, self.error) {
            outputs.set_with_quality(index, error, quality);
        }
        if let (Some(index), Some(output)) = (self.output_output, self.output) {
            outputs.set_with_quality(index, output, quality);
        }
        outputs
    }
}

impl Plugin for Pid {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        Self::new(config, &properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, call: &Call) -> Outputs {
        self.outcomes(call);
        self.take(batch);
        self.evaluate(call.now_ms)
    }

    fn on_tick(&mut self, call: &Call) -> Outputs {
        self.outcomes(call);
        self.evaluate(call.now_ms)
    }
}

twinloom_plugin::export_plugin!(Pid);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, properties};
    use twinloom_plugin::{DataType, ProposalOutcome};

    const PV: u32 = 0;
    const OUT: u32 = 1;
    const SP: u32 = 2;
    const AUTO: u32 = 3;

    fn pid(extra: &str) -> Pid {
        let config = format!(
            "process_value = \"t/pv\"\noutput = \"t/out\"\nsetpoint_property = \"t/sp\"\nauto_property = \"t/auto\"\noutput_min = 0.0\noutput_max = 80.0\n{extra}"
        );
        Pid::new(
            &config,
            &properties(
                &["t/pv", "t/out", "t/sp", "t/auto"],
                &["t/pid_error", "t/pid_output"],
                &[("t/out", DataType::Float)],
            ),
        )
        .unwrap()
    }

    fn written(seq: u64) -> Call {
        Call {
            now_ms: 0,
            outcomes: vec![ProposalOutcome {
                proposal: seq,
                index: 0,
                outcome: Outcome::Written,
            }],
        }
    }

    fn proposed(outputs: &Outputs) -> Option<f64> {
        outputs.proposals().last().map(|p| match p.value {
            Setpoint::Float(v) => v,
            ref other => panic!("{other:?}"),
        })
    }

    #[test]
    fn the_first_output_continues_from_the_devices_value_bumplessly() {
        let mut pid = pid("kp = 2.0\nti = 10.0");
        let first = pid.on_changes(
            &batch(&[(PV, 38.0, 0), (OUT, 25.0, 0), (SP, 40.0, 0), (AUTO, 1.0, 0)]).view(),
            &Call::at(1_000),
        );
        // P = 2 · 2 = 4, I tracks 25 − 4 = 21: the output is the device's 25.
        assert_eq!(proposed(&first), Some(25.0));
        // Written: from now on it integrates: I = 21 + 2 · 1 / 10 · 2 = 21.4, u = 25.4.
        let mut call = written(0);
        call.now_ms = 2_000;
        let next = pid.on_tick(&call);
        assert!((proposed(&next).unwrap() - 25.4).abs() < 1e-9, "{next:?}");
        assert!((next.value(0).unwrap().0 - 2.0).abs() < 1e-12);
    }

    #[test]
    fn the_integral_does_not_wind_up_at_the_output_limit() {
        let mut pid = pid("kp = 10.0\nti = 1.0");
        pid.on_changes(
            &batch(&[(PV, 20.0, 0), (OUT, 80.0, 0), (SP, 40.0, 0), (AUTO, 1.0, 0)]).view(),
            &Call::at(0),
        );
        let mut integral = pid.integral;
        for second in 1..=100 {
            let mut call = written(second - 1);
            call.now_ms = second as i64 * 1000;
            let out = pid.on_tick(&call);
            // Saturated high: nothing new to propose, and the integral does not grow.
            assert!(out.proposals().is_empty(), "{out:?}");
            assert!(pid.integral <= integral + 1e-12);
            integral = pid.integral;
        }
        // PV reaches SP: the output leaves the limit at once instead of after unwinding.
        let out = pid.on_changes(&batch(&[(PV, 40.5, 0)]).view(), &Call::at(101_000));
        assert!(proposed(&out).unwrap() < 80.0, "{out:?}");
    }

    #[test]
    fn in_manual_it_tracks_the_device_and_proposes_nothing() {
        let mut pid = pid("kp = 2.0\nti = 10.0");
        let out = pid.on_changes(
            &batch(&[(PV, 38.0, 0), (OUT, 12.0, 0), (SP, 40.0, 0), (AUTO, 0.0, 0)]).view(),
            &Call::at(0),
        );
        assert!(out.proposals().is_empty());
        let out = pid.on_changes(&batch(&[(OUT, 17.0, 0)]).view(), &Call::at(5_000));
        assert!(out.proposals().is_empty());
        // Back to auto: the first output is the device's current 17 (P = 4, I = 13).
        let out = pid.on_changes(&batch(&[(AUTO, 1.0, 0)]).view(), &Call::at(6_000));
        assert_eq!(proposed(&out), Some(17.0));
    }

    #[test]
    fn a_pv_that_is_not_good_holds_the_loop() {
        let mut pid = pid("kp = 2.0\nti = 10.0");
        let mut bad = batch(&[(PV, 30.0, 0), (OUT, 12.0, 0), (SP, 40.0, 0)]);
        bad.qualities[0] = Quality::Bad;
        let out = pid.on_changes(&bad.view(), &Call::at(0));
        assert!(out.proposals().is_empty());
    }

    #[test]
    fn direct_action_raises_the_output_when_pv_is_above_sp() {
        let mut pid = pid("kp = 2.0\naction = \"direct\"");
        let out = pid.on_changes(
            &batch(&[(PV, 30.0, 0), (OUT, 10.0, 0), (SP, 25.0, 0), (AUTO, 1.0, 0)]).view(),
            &Call::at(0),
        );
        assert_eq!(proposed(&out), Some(10.0)); // bumpless first
        let mut call = written(0);
        call.now_ms = 1_000;
        let out = pid.on_changes(&batch(&[(PV, 31.0, 0)]).view(), &call);
        // e = PV − SP grew from 5 to 6: P grew by kp · 1 = 2 (no integral: ti = 0).
        assert!((proposed(&out).unwrap() - 12.0).abs() < 1e-9, "{out:?}");
    }

    #[test]
    fn bad_settings_are_reported_together() {
        let error = Pid::new(
            "process_value = \"t/x\"\noutput = \"t/y\"\nkp = -1.0\noutput_min = 5.0\noutput_max = 1.0",
            &properties(&["t/pv"], &[], &[]),
        )
        .unwrap_err();
        for expected in [
            "kp must be a positive number",
            "output_min 5 must be below output_max 1",
            "a setpoint is needed",
            "`t/x` is not among the plugin's inputs",
            "`t/y` is not in the plugin's `writes` list",
        ] {
            assert!(error.contains(expected), "{expected}: {error}");
        }
    }
}
