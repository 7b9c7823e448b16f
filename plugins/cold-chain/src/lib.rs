//! Cold-chain plugin: storage units for vaccines, blood and drugs (hospital and pharmacy fridges,
//! pharma warehouses) against their allowed temperature band.
//!
//! Inputs per storage unit (subscribe to them): `temperature` (°C, required) and `door_open`
//! (door contact, true when open; optional). Samples that are not good are excluded: the time
//! after one counts neither in or out of the band nor in the mean kinetic temperature, until the
//! next good sample. Each sample's value holds until the next (the samples are change-driven);
//! times come from the samples' source timestamps and the call's time, never from a clock of the
//! plugin's own, so a replay gives the same outputs.
//!
//! Outputs per unit (bind them with `{ plugin = "<name>" }`; one not bound is not produced):
//!
//! - `time_above`, `time_below` (s): cumulative time above `high` / below `low`.
//! - `excursion_time` (s): how long the unit has been out of the band without a break; 0 in it.
//! - `excursion_state`: 0 ok, 1 excursion (out of the band), 2 alarm: the excursion has lasted
//!   `alarm_delay`, or the cumulative time out of the band (above + below) has reached
//!   `alarm_cumulative`. The second stays: the product's allowance of time out of storage
//!   conditions is used up, whatever the temperature does next.
//! - `mkt` (°C): mean kinetic temperature over the last `mkt_window`, time-weighted over the good
//!   samples (USP <1079>, ICH Q1A(R2)):
//!
//!   ```text
//!   MKT = (ΔH/R) / (−ln( Σ dᵢ·exp(−ΔH/(R·Tᵢ)) / Σ dᵢ ))      Tᵢ in K, MKT in K
//!   ```
//!
//!   with ΔH = `activation_energy` (83.144 kJ/mol by default, so ΔH/R = 10 000 K), R = 8.3144
//!   J/(mol·K) as USP <1079> gives it, and dᵢ the time sample i held within the window.
//! - `door_open_time` (s): cumulative time the door contact said open.
//!
//! Quality: the temperature outputs carry the quality of the unit's latest temperature sample,
//! `door_open_time` that of its latest door sample.
//!
//! Config keys (all optional; an empty `config` uses the defaults, a 2–8 °C fridge):
//!
//! | key                 | unit   | default | range                              |
//! |---------------------|--------|---------|------------------------------------|
//! | `low`               | °C     | 2.0     | finite, < `high`                   |
//! | `high`              | °C     | 8.0     | finite, > `low`                    |
//! | `activation_energy` | kJ/mol | 83.144  | > 0                                |
//! | `mkt_window`        | s      | 86 400  | 0 < mkt_window ≤ 31 536 000 (1 y)  |
//! | `alarm_delay`       | s      | 1 800   | ≥ 0                                |
//! | `alarm_cumulative`  | s      | 7 200   | ≥ 0                                |

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use twinloom_plugin::{Call, ChangeBatch, Outputs, Plugin, Properties, Quality};

/// The gas constant as USP <1079> uses it, J/(mol·K).
pub const GAS_CONSTANT: f64 = 8.3144;

/// 0 °C in K.
const ZERO_CELSIUS: f64 = 273.15;

/// Longest accepted `mkt_window`, s (one year).
const MAX_MKT_WINDOW_S: f64 = 31_536_000.0;

/// Source times are clamped into ±2^53 ms (±285 000 years around 1970), so differences never
/// overflow an `i64`.
const TIME_LIMIT_MS: i64 = 1 << 53;

/// The output property names, in the order of [`Unit::outputs`].
const OUTPUTS: [&str; 6] = [
    "time_above",
    "time_below",
    "excursion_time",
    "excursion_state",
    "mkt",
    "door_open_time",
];

/// `excursion_state` values.
const OK: f64 = 0.0;
const EXCURSION: f64 = 1.0;
const ALARM: f64 = 2.0;

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Lower limit of the allowed band, °C.
    low: f64,
    /// Upper limit of the allowed band, °C.
    high: f64,
    /// Activation energy ΔH of the MKT, kJ/mol, > 0.
    activation_energy: f64,
    /// Span of the MKT, s.
    mkt_window: f64,
    /// Duration of one excursion that raises the alarm, s.
    alarm_delay: f64,
    /// Cumulative time out of the band that raises the alarm, s.
    alarm_cumulative: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            low: 2.0,
            high: 8.0,
            activation_energy: 83.144,
            mkt_window: 86_400.0,
            alarm_delay: 1_800.0,
            alarm_cumulative: 7_200.0,
        }
    }
}

impl Settings {
    /// Every semantic error, joined with "; ".
    fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if !(self.low.is_finite() && self.high.is_finite() && self.low < self.high) {
            errors.push(format!(
                "low and high must be finite with low < high, got {} and {}",
                self.low, self.high
            ));
        }
        if !(self.activation_energy.is_finite() && self.activation_energy > 0.0) {
            errors.push(format!(
                "activation_energy must be a positive number of kJ/mol, got {}",
                self.activation_energy
            ));
        }
        if !(self.mkt_window > 0.0 && self.mkt_window <= MAX_MKT_WINDOW_S) {
            errors.push(format!(
                "mkt_window must be in (0, {MAX_MKT_WINDOW_S}] s, got {}",
                self.mkt_window
            ));
        }
        for (key, value) in [
            ("alarm_delay", self.alarm_delay),
            ("alarm_cumulative", self.alarm_cumulative),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                errors.push(format!(
                    "{key} must be a number of seconds ≥ 0, got {value}"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Time-weighted sums of exp(−ΔH/(R·T)) over the good intervals within a sliding window.
///
/// Each weight is taken relative to `exp(−ΔH/(R·T_ref))` at 5 °C, so the sums stay near 1
/// instead of near 1e-16: MKT = (ΔH/R) / (ΔH/(R·T_ref) − ln(Σ dᵢ·wᵢ / Σ dᵢ)).
#[derive(Debug, Default)]
struct Kinetic {
    /// Closed intervals (start ms, end ms, relative weight), oldest first, not overlapping.
    intervals: VecDeque<(i64, i64, f64)>,
    /// Σ d·w and Σ d over `intervals`, d in ms.
    weighted: f64,
    duration: f64,
    /// Intervals dropped since the sums were last recomputed from scratch.
    dropped: usize,
}

/// The reference temperature of the relative weights, K.
const T_REF: f64 = ZERO_CELSIUS + 5.0;

impl Kinetic {
    /// The relative weight of `celsius` for ΔH/R = `h_over_r` K. `exp` and `ln` come from the
    /// `libm` crate (pure Rust): std's would call the platform's C library (glibc natively,
    /// wasi-libc in Wasm), whose last bits differ, and the Wasm and native builds of this plugin
    /// must agree to the bit.
    fn weight(celsius: f64, h_over_r: f64) -> f64 {
        libm::exp(h_over_r / T_REF - h_over_r / (celsius + ZERO_CELSIUS))
    }

    /// Adds the interval `[start, end)` (ms) held at relative weight `w`.
    fn push(&mut self, start: i64, end: i64, w: f64) {
        if end > start && w.is_finite() {
            self.intervals.push_back((start, end, w));
            let d = (end - start) as f64;
            self.weighted += d * w;
            self.duration += d;
        }
    }

    /// Drops the intervals that end at or before `from` (ms). Once as many have been dropped as
    /// remain, the sums are recomputed from the intervals (O(1) amortised), which also clears
    /// rounding error from the subtractions.
    fn expire(&mut self, from: i64) {
        while let Some(&(start, end, w)) = self.intervals.front() {
            if end > from {
                break;
            }
            self.intervals.pop_front();
            let d = (end - start) as f64;
            self.weighted -= d * w;
            self.duration -= d;
            self.dropped += 1;
        }
        if self.dropped > 0 && self.dropped >= self.intervals.len() {
            self.dropped = 0;
            (self.weighted, self.duration) =
                self.intervals
                    .iter()
                    .fold((0.0, 0.0), |(weighted, duration), &(start, end, w)| {
                        let d = (end - start) as f64;
                        (weighted + d * w, duration + d)
                    });
        }
    }

    /// The MKT (°C) over `[from, now)` with the open interval `ongoing` (start ms, relative
    /// weight) added; `None` without any good time in the window.
    fn mkt(&self, from: i64, now: i64, ongoing: Option<(i64, f64)>, h_over_r: f64) -> Option<f64> {
        let (mut weighted, mut duration) = (self.weighted, self.duration);
        // The oldest interval may start before the window: only its part inside counts.
        if let Some(&(start, _, w)) = self.intervals.front()
            && start < from
        {
            let outside = (from - start) as f64;
            weighted -= outside * w;
            duration -= outside;
        }
        if let Some((start, w)) = ongoing
            && now > start
        {
            let d = (now - start.max(from)) as f64;
            weighted += d * w;
            duration += d;
        }
        if duration <= 0.0 || weighted <= 0.0 {
            return None;
        }
        let kelvin = h_over_r / (h_over_r / T_REF - libm::log(weighted / duration));
        let celsius = kelvin - ZERO_CELSIUS;
        celsius.is_finite().then_some(celsius)
    }
}

/// The latest sample of an input: source time (ms), value, whether it was good.
#[derive(Debug, Clone, Copy)]
struct Latest {
    at_ms: i64,
    value: f64,
    good: bool,
}

/// One storage unit.
#[derive(Debug)]
struct Unit {
    /// Index in [`Properties::owned`] of each of [`OUTPUTS`]; none where not bound.
    outputs: [Option<u32>; 6],
    temperature: Option<Latest>,
    temperature_quality: Quality,
    door: Option<Latest>,
    door_quality: Quality,
    /// Closed time above / below the band and with the door open, ms.
    above_ms: i64,
    below_ms: i64,
    door_open_ms: i64,
    /// When the present excursion began (the first good sample out of the band), ms.
    excursion_since: Option<i64>,
    kinetic: Kinetic,
}

impl Unit {
    fn new(unit: &str, properties: &Properties) -> Self {
        Self {
            outputs: OUTPUTS.map(|name| properties.owned_index(&format!("{unit}/{name}"))),
            temperature: None,
            temperature_quality: Quality::Good,
            door: None,
            door_quality: Quality::Good,
            above_ms: 0,
            below_ms: 0,
            door_open_ms: 0,
            excursion_since: None,
            kinetic: Kinetic::default(),
        }
    }
}

/// Which input of a unit a subscribed property is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Input {
    Temperature,
    Door,
}

/// The plugin's state: one [`Unit`] per storage unit with a subscribed input.
#[derive(Debug)]
pub struct ColdChain {
    low: f64,
    high: f64,
    /// ΔH/R, K.
    h_over_r: f64,
    window_ms: i64,
    alarm_delay_ms: i64,
    alarm_cumulative_ms: i64,
    /// (unit index, which input) of each subscribed property, in [`Properties::inputs`] order.
    inputs: Vec<(usize, Input)>,
    units: Vec<Unit>,
    /// The latest time seen (a sample's or a call's), ms: time never runs backwards here.
    now_ms: i64,
}

impl ColdChain {
    /// Builds the state from the settings (`config` table as TOML text) and the instance's
    /// properties: the subscribed inputs (`<unit path>/temperature`, `<unit path>/door_open`)
    /// and the owned outputs it looks up per unit (see the crate docs).
    ///
    /// Errors: the config is not valid TOML for the settings, a setting is out of range (every
    /// such setting is named), or a subscribed property is neither input.
    pub fn new(config: &str, properties: &Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        settings.validate()?;
        let mut inputs = Vec::new();
        let mut units = Vec::new();
        let mut by_path = HashMap::new();
        for path in &properties.inputs {
            let (unit, name) = path
                .rsplit_once('/')
                .ok_or_else(|| format!("`{path}` is not a property path"))?;
            let input = match name {
                "temperature" => Input::Temperature,
                "door_open" => Input::Door,
                _ => {
                    return Err(format!(
                        "cannot use property `{path}`; the accepted inputs are: temperature, door_open"
                    ));
                }
            };
            let index = *by_path.entry(unit).or_insert_with(|| {
                units.push(Unit::new(unit, properties));
                units.len() - 1
            });
            inputs.push((index, input));
        }
        Ok(Self {
            low: settings.low,
            high: settings.high,
            h_over_r: settings.activation_energy * 1000.0 / GAS_CONSTANT,
            window_ms: (settings.mkt_window * 1000.0).round() as i64,
            alarm_delay_ms: (settings.alarm_delay * 1000.0).round() as i64,
            alarm_cumulative_ms: (settings.alarm_cumulative * 1000.0).round() as i64,
            inputs,
            units,
            now_ms: i64::MIN,
        })
    }

    /// Advances the clock to `at_ms` (clamped; never backwards) and returns it.
    fn advance(&mut self, at_ms: i64) -> i64 {
        self.now_ms = self.now_ms.max(at_ms.clamp(-TIME_LIMIT_MS, TIME_LIMIT_MS));
        self.now_ms
    }

    /// Takes a temperature sample of `unit` at `at_ms`.
    fn temperature(&mut self, unit: usize, celsius: f64, quality: Quality, at_ms: i64) {
        let at_ms = self.advance(at_ms);
        let (low, high, h_over_r) = (self.low, self.high, self.h_over_r);
        let unit = &mut self.units[unit];
        // Close the interval the previous good sample held.
        if let Some(previous) = unit.temperature.filter(|p| p.good) {
            let held = at_ms - previous.at_ms;
            if previous.value > high {
                unit.above_ms += held;
            } else if previous.value < low {
                unit.below_ms += held;
            }
            unit.kinetic.push(
                previous.at_ms,
                at_ms,
                Kinetic::weight(previous.value, h_over_r),
            );
        }
        let good = quality == Quality::Good && celsius.is_finite();
        unit.temperature_quality = if good {
            Quality::Good
        } else {
            quality.worst(Quality::Uncertain)
        };
        unit.temperature = Some(Latest {
            at_ms,
            value: celsius,
            good,
        });
        if good {
            let inside = (low..=high).contains(&celsius);
            match (inside, unit.excursion_since) {
                (true, _) => unit.excursion_since = None,
                (false, None) => unit.excursion_since = Some(at_ms),
                (false, Some(_)) => {}
            }
        }
    }

    /// Takes a door-contact sample of `unit` at `at_ms` (non-zero: open).
    fn door(&mut self, unit: usize, open: f64, quality: Quality, at_ms: i64) {
        let at_ms = self.advance(at_ms);
        let unit = &mut self.units[unit];
        if let Some(previous) = unit.door.filter(|p| p.good && p.value != 0.0) {
            unit.door_open_ms += at_ms - previous.at_ms;
        }
        let good = quality == Quality::Good && open.is_finite();
        unit.door_quality = if good {
            Quality::Good
        } else {
            quality.worst(Quality::Uncertain)
        };
        unit.door = Some(Latest {
            at_ms,
            value: open,
            good,
        });
    }

    /// The outputs of every unit at the call's time `now_ms`.
    fn outputs(&mut self, now_ms: i64) -> Outputs {
        let now = self.advance(now_ms);
        let from = now.saturating_sub(self.window_ms);
        let mut outputs = Outputs::with_capacity(OUTPUTS.len() * self.units.len());
        for unit in &mut self.units {
            unit.kinetic.expire(from);
            // The open interval since the latest good temperature sample.
            let ongoing = unit.temperature.filter(|t| t.good);
            let open = |t: &Latest| now - t.at_ms;
            let (mut above, mut below) = (unit.above_ms, unit.below_ms);
            if let Some(t) = &ongoing {
                if t.value > self.high {
                    above += open(t);
                } else if t.value < self.low {
                    below += open(t);
                }
            }
            let excursion = unit.excursion_since.map_or(0, |since| now - since);
            let state = if (unit.excursion_since.is_some() && excursion >= self.alarm_delay_ms)
                || above + below >= self.alarm_cumulative_ms && above + below > 0
            {
                ALARM
            } else if unit.excursion_since.is_some() {
                EXCURSION
            } else {
                OK
            };
            let mkt = unit.kinetic.mkt(
                from,
                now,
                ongoing.map(|t| (t.at_ms, Kinetic::weight(t.value, self.h_over_r))),
                self.h_over_r,
            );
            let door_open = unit.door.filter(|d| d.good && d.value != 0.0);
            let door_time = unit.door_open_ms + door_open.map_or(0, |d| open(&d));
            let seconds = |ms: i64| ms as f64 / 1000.0;
            let temperature_known = unit.temperature.is_some();
            let values = [
                temperature_known.then(|| seconds(above)),
                temperature_known.then(|| seconds(below)),
                temperature_known.then(|| seconds(excursion)),
                temperature_known.then_some(state),
                mkt,
                unit.door.is_some().then(|| seconds(door_time)),
            ];
            for (index, (owned, value)) in unit.outputs.iter().zip(values).enumerate() {
                let quality = if OUTPUTS[index] == "door_open_time" {
                    unit.door_quality
                } else {
                    unit.temperature_quality
                };
                if let (Some(owned), Some(value)) = (*owned, value) {
                    outputs.set_with_quality(owned, value, quality);
                }
            }
        }
        outputs
    }
}

impl Plugin for ColdChain {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        Self::new(config, &properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, call: &Call) -> Outputs {
        let n = batch.properties.len();
        let columns = batch
            .properties
            .iter()
            .zip(&batch.values[..n])
            .zip(&batch.qualities[..n])
            .zip(&batch.source_times_ms[..n]);
        for (((&property, &value), &quality), &at_ms) in columns {
            match self.inputs.get(property as usize) {
                Some(&(unit, Input::Temperature)) => self.temperature(unit, value, quality, at_ms),
                Some(&(unit, Input::Door)) => self.door(unit, value, quality, at_ms),
                None => {}
            }
        }
        self.outputs(call.now_ms)
    }

    fn on_tick(&mut self, call: &Call) -> Outputs {
        self.outputs(call.now_ms)
    }
}

twinloom_plugin::export_plugin!(ColdChain);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, properties};

    const MIN_MS: i64 = 60_000;
    const HOUR_MS: i64 = 3_600_000;

    /// Owned indices of [`fridge`]'s outputs, in [`OUTPUTS`] order.
    const ABOVE: u32 = 0;
    const BELOW: u32 = 1;
    const EXCURSION_TIME: u32 = 2;
    const STATE: u32 = 3;
    const MKT: u32 = 4;
    const DOOR: u32 = 5;

    /// Input indices of [`fridge`].
    const TEMPERATURE: u32 = 0;
    const DOOR_OPEN: u32 = 1;

    /// One fridge, `ward/fridge1`, with both inputs and every output.
    fn fridge(config: &str) -> ColdChain {
        let owned = OUTPUTS.map(|name| format!("ward/fridge1/{name}"));
        let properties = properties(
            &["ward/fridge1/temperature", "ward/fridge1/door_open"],
            &owned.each_ref().map(String::as_str),
            &[],
        );
        ColdChain::new(config, &properties).unwrap()
    }

    fn run(plugin: &mut ColdChain, entries: &[(u32, f64, i64)], now_ms: i64) -> Outputs {
        plugin.on_changes(&batch(entries).view(), &Call::at(now_ms))
    }

    fn value(outputs: &Outputs, owned: u32) -> f64 {
        outputs.value(owned).expect("a value").0
    }

    fn close(actual: f64, expected: f64, tolerance: f64) {
        assert!(
            (actual - expected).abs() <= tolerance,
            "{actual} != {expected} ± {tolerance}"
        );
    }

    /// MKT against values computed by hand from the USP <1079> formula with ΔH/R = 10 000 K:
    /// 2 °C and 8 °C for an hour each → 5.536 424 508 866 °C; 5 °C for 3 h then 25 °C for 1 h →
    /// 15.132 218 289 421 °C; 4, 6 and 8 °C for 2, 2 and 1 h → 5.738 187 459 781 °C; a constant
    /// temperature is its own MKT.
    #[test]
    fn mean_kinetic_temperature_matches_hand_computed_values() {
        let cases: [(&[(f64, i64)], f64); 4] = [
            (&[(5.0, 1)], 5.0),
            (&[(2.0, 1), (8.0, 1)], 5.536_424_508_866_332),
            (&[(5.0, 3), (25.0, 1)], 15.132_218_289_420_678),
            (&[(4.0, 2), (6.0, 2), (8.0, 1)], 5.738_187_459_781_045),
        ];
        for (steps, expected) in cases {
            let mut plugin = fridge("");
            let mut at = 0;
            for &(celsius, hours) in steps {
                run(&mut plugin, &[(TEMPERATURE, celsius, at)], at);
                at += hours * HOUR_MS;
            }
            let outputs = plugin.on_tick(&Call::at(at));
            close(value(&outputs, MKT), expected, 1e-9);
        }
    }

    #[test]
    fn the_mkt_window_slides_and_bad_samples_are_excluded() {
        let mut plugin = fridge("mkt_window = 3600");
        run(&mut plugin, &[(TEMPERATURE, 25.0, 0)], 0);
        run(&mut plugin, &[(TEMPERATURE, 5.0, HOUR_MS)], HOUR_MS);
        // Two hours in, the window (one hour) holds only the 5 °C hour.
        close(
            value(&plugin.on_tick(&Call::at(2 * HOUR_MS)), MKT),
            5.0,
            1e-9,
        );
        // Half an hour of a bad sample does not count: still 5 °C over the good time.
        let mut bad = batch(&[(TEMPERATURE, 40.0, 2 * HOUR_MS)]);
        bad.qualities[0] = Quality::Bad;
        let outputs = plugin.on_changes(&bad.view(), &Call::at(2 * HOUR_MS));
        assert_eq!(outputs.value(MKT).unwrap().1, Quality::Bad);
        run(
            &mut plugin,
            &[(TEMPERATURE, 5.0, 2 * HOUR_MS + 30 * MIN_MS)],
            0,
        );
        let outputs = plugin.on_tick(&Call::at(2 * HOUR_MS + 40 * MIN_MS));
        close(value(&outputs, MKT), 5.0, 1e-9);
        assert_eq!(outputs.value(MKT).unwrap().1, Quality::Good);
    }

    #[test]
    fn excursions_are_timed_and_alarm_after_the_delay() {
        let mut plugin = fridge("alarm_delay = 1800\nalarm_cumulative = 86400");
        run(&mut plugin, &[(TEMPERATURE, 5.0, 0)], 0);
        let outputs = run(&mut plugin, &[(TEMPERATURE, 9.5, 10 * MIN_MS)], 10 * MIN_MS);
        assert_eq!(value(&outputs, STATE), EXCURSION);
        // 20 minutes into the excursion: still an excursion, 1200 s above.
        let outputs = plugin.on_tick(&Call::at(30 * MIN_MS));
        assert_eq!(value(&outputs, STATE), EXCURSION);
        close(value(&outputs, EXCURSION_TIME), 1200.0, 0.0);
        close(value(&outputs, ABOVE), 1200.0, 0.0);
        // 30 minutes: the alarm.
        let outputs = plugin.on_tick(&Call::at(40 * MIN_MS));
        assert_eq!(value(&outputs, STATE), ALARM);
        // Back in the band: ok again, the excursion over, its time kept in the total.
        let outputs = run(&mut plugin, &[(TEMPERATURE, 6.0, 45 * MIN_MS)], 50 * MIN_MS);
        assert_eq!(value(&outputs, STATE), OK);
        close(value(&outputs, EXCURSION_TIME), 0.0, 0.0);
        close(value(&outputs, ABOVE), 2100.0, 0.0);
        close(value(&outputs, BELOW), 0.0, 0.0);
    }

    #[test]
    fn cumulative_time_out_of_the_band_raises_an_alarm_that_stays() {
        let mut plugin = fridge("alarm_delay = 3600\nalarm_cumulative = 1200");
        let mut at = 0;
        // Three short excursions of 7 minutes each, below and above, 21 minutes in all.
        for celsius in [1.0, 9.0, 0.5] {
            run(&mut plugin, &[(TEMPERATURE, 5.0, at)], at);
            at += 10 * MIN_MS;
            run(&mut plugin, &[(TEMPERATURE, celsius, at)], at);
            at += 7 * MIN_MS;
        }
        let outputs = run(&mut plugin, &[(TEMPERATURE, 5.0, at)], at);
        close(value(&outputs, BELOW), 840.0, 0.0);
        close(value(&outputs, ABOVE), 420.0, 0.0);
        assert_eq!(value(&outputs, STATE), ALARM);
        let outputs = plugin.on_tick(&Call::at(at + HOUR_MS));
        assert_eq!(value(&outputs, STATE), ALARM, "the allowance is used up");
    }

    #[test]
    fn door_open_time_adds_up_the_openings() {
        let mut plugin = fridge("");
        run(
            &mut plugin,
            &[(TEMPERATURE, 5.0, 0), (DOOR_OPEN, 0.0, 0)],
            0,
        );
        run(&mut plugin, &[(DOOR_OPEN, 1.0, MIN_MS)], MIN_MS);
        run(&mut plugin, &[(DOOR_OPEN, 0.0, 3 * MIN_MS)], 3 * MIN_MS);
        run(&mut plugin, &[(DOOR_OPEN, 1.0, 10 * MIN_MS)], 10 * MIN_MS);
        // Still open 30 s later: 120 + 30 s.
        let outputs = plugin.on_tick(&Call::at(10 * MIN_MS + 30_000));
        close(value(&outputs, DOOR), 150.0, 0.0);
    }

    #[test]
    fn settings_out_of_range_are_all_named() {
        let properties = properties(&["u/temperature"], &[], &[]);
        let error = ColdChain::new(
            "low = 9.0\nhigh = 2.0\nactivation_energy = 0.0\nmkt_window = -1.0\nalarm_delay = -5.0",
            &properties,
        )
        .unwrap_err();
        for key in [
            "low and high",
            "activation_energy",
            "mkt_window",
            "alarm_delay",
        ] {
            assert!(error.contains(key), "{error}");
        }
        let wrong = properties_with_input("u/humidity");
        assert!(
            ColdChain::new("", &wrong)
                .unwrap_err()
                .contains("u/humidity")
        );
    }

    fn properties_with_input(path: &str) -> Properties {
        properties(&[path], &[], &[])
    }

    #[test]
    fn a_unit_without_samples_produces_nothing_and_time_never_runs_backwards() {
        let mut plugin = fridge("");
        assert!(plugin.on_tick(&Call::at(HOUR_MS)).is_empty());
        run(
            &mut plugin,
            &[(TEMPERATURE, 10.0, 2 * HOUR_MS)],
            2 * HOUR_MS,
        );
        // A call whose time is before the sample's counts at the sample's time.
        let outputs = plugin.on_tick(&Call::at(HOUR_MS));
        close(value(&outputs, ABOVE), 0.0, 0.0);
    }
}
