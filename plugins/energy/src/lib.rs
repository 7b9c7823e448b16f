//! Energy plugin: energy accounting of power meters, with interval demand and energy per unit.
//!
//! Inputs (subscribe to them): `power` (kW, instantaneous active power of a meter asset) on one
//! or more meters, and optionally `good_count` (pcs, a monotonically increasing production
//! counter, on any asset, e.g. a filler). Accepted input names: `power`, `good_count`; a
//! `good_count` needs at least one `power`. Samples whose value is not finite are ignored, and so
//! are samples whose quality is not good, except that a non-good `power` sample ends that meter's
//! integration until its next good sample (the value is unknown, so no energy is invented
//! across it). Times come from the samples' source timestamps and the host's ticks, never from a
//! clock of the plugin's own.
//!
//! Outputs per meter (the asset of each `power` input), once it has had a good sample (bind them
//! with `{ plugin = "<name>" }`; an output that is not bound to the plugin is not produced):
//!
//! - `energy_integrated` (kWh): energy since the plugin started.
//! - `demand` (kW): average power in the current demand interval so far.
//! - `peak_demand` (kW): highest average demand of a completed demand interval; the current
//!   interval's `demand` until one has completed.
//! - `energy_per_unit` (kWh/pcs): energy of *all* meters since the first `good_count` sample over
//!   the pieces *all* counters produced since then; reported on every meter once pieces > 0.
//!
//! Formulas. Between consecutive points (t₁, P₁), (t₂, P₂) of a meter, t in ms, the energy is the
//! trapezoid E = (P₁ + P₂) / 2 · (t₂ − t₁) / 3 600 000 kWh, unless t₂ − t₁ > `max_gap` (then
//! nothing). The points are the good samples and the ticks: the twin publishes a value only when
//! it changes beyond its deadband, so a steady load sends no samples, and a tick holds the last
//! good power (P₂ = P₁) up to its `now_ms`. A sample whose source time is earlier than the
//! meter's latest point counts at that point's time.
//!
//! Demand intervals are fixed and aligned to the Unix epoch: interval k covers
//! [k·D, (k+1)·D) with D = `demand_interval`, as in utility billing. A trapezoid that crosses a
//! boundary b is split there at P(b) = P₁ + (P₂ − P₁)·(b − t₁)/(t₂ − t₁), so its energy lands in
//! the right interval. A completed interval's demand is its energy / D (h); an interval closes
//! when a sample or tick at or after its end arrives. The first interval a meter saw only in part
//! (its first sample after the interval's start) is excluded from `peak_demand`; intervals with
//! an outage count with the energy that was integrated (so an outage never raises the peak).
//! `demand` = energy in the current interval / hours from max(interval start, first sample) to
//! the meter's latest point; 0 when no time has passed. Pieces are the sum of the counters'
//! increases; a decrease is taken as a counter reset (as in Prometheus' `increase`), adding the
//! new value. Per sample the work is O(1) amortised (a trapezoid crosses at most
//! `max_gap / demand_interval + 1` boundaries); the outputs are computed once per call.
//!
//! Config keys (all optional; an empty `config` uses the defaults):
//!
//! | key               | unit | default | range                          |
//! |-------------------|------|---------|--------------------------------|
//! | `demand_interval` | s    | 900     | 1 ≤ demand_interval ≤ 86 400   |
//! | `max_gap`         | s    | 60      | 0 < max_gap ≤ 86 400           |
//!
//! Keep the plugin's `tick` shorter than `max_gap`, or a steady load between samples is taken
//! for an outage.
//!
//! Quality. Each output carries the worst quality of the latest samples of the inputs it comes
//! from (a good sample whose value is not finite, being ignored, changes nothing): a meter's
//! `energy_integrated`, `demand` and `peak_demand` that of its `power`; `energy_per_unit`, which
//! sums over all meters and counters, the worst over every `power` and `good_count`. While an
//! input is uncertain or bad the outputs go on from what was integrated and counted so far and
//! say uncertain or bad; with its next good sample they are good again. An input that has had no
//! sample yet counts as good.

use std::collections::HashMap;

use serde::Deserialize;
use twinloom_plugin::{Call, ChangeBatch, Outputs, Plugin, Properties, Quality};

/// Longest accepted `demand_interval` and `max_gap`, s (one day).
const MAX_SECONDS: f64 = 86_400.0;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// Length of the epoch-aligned demand intervals, s, 1 ≤ demand_interval ≤ 86 400.
    demand_interval: f64,
    /// Longest time between two points of a meter that is integrated, s, 0 < max_gap ≤ 86 400.
    max_gap: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            demand_interval: 900.0,
            max_gap: 60.0,
        }
    }
}

impl Settings {
    /// Every semantic error, joined with "; ".
    fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if !(self.demand_interval >= 1.0 && self.demand_interval <= MAX_SECONDS) {
            errors.push(format!(
                "demand_interval must be in [1, {MAX_SECONDS}] s, got {}",
                self.demand_interval
            ));
        }
        if !(self.max_gap > 0.0 && self.max_gap <= MAX_SECONDS) {
            errors.push(format!(
                "max_gap must be in (0, {MAX_SECONDS}] s, got {}",
                self.max_gap
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Validated time settings, in ms.
#[derive(Debug, Clone, Copy)]
struct Timing {
    interval_ms: i64,
    max_gap_ms: i64,
}

impl Timing {
    fn interval_hours(self) -> f64 {
        self.interval_ms as f64 / MS_PER_HOUR
    }
}

#[derive(Debug, Clone, Copy)]
enum Input {
    /// `power` of the meter with this index.
    Power(usize),
    /// `good_count` of the counter with this index.
    Count(usize),
}

/// The output property names, in the order of [`Meter::outputs`].
const OUTPUTS: [&str; 4] = [
    "energy_integrated",
    "demand",
    "peak_demand",
    "energy_per_unit",
];

/// Energy (kWh) of the trapezoid from (`t1` ms, `p1` kW) to (`t2` ms, `p2` kW).
fn trapezoid(t1: i64, p1: f64, t2: i64, p2: f64) -> f64 {
    (p1 + p2) / 2.0 * (t2 - t1) as f64 / MS_PER_HOUR
}

/// The state of one meter.
#[derive(Debug)]
struct Meter {
    /// Index in [`Properties::owned`] of energy, demand, peak demand and energy per unit; none
    /// where the output is not bound to the plugin.
    outputs: [Option<u32>; 4],
    /// Quality of the latest `power` sample (good before the first).
    quality: Quality,
    /// Source time of the first good sample, ms since the Unix epoch.
    first_ms: Option<i64>,
    /// Time of the latest point (sample or tick), ms since the Unix epoch.
    now_ms: i64,
    /// Power at `now_ms` to integrate from, kW; none after an outage or over-long gap.
    held_kw: Option<f64>,
    /// Index k of the current demand interval (the one holding `now_ms`).
    interval: i64,
    /// Energy in the current demand interval, kWh.
    interval_kwh: f64,
    /// Highest demand of a completed, fully seen interval, kW.
    peak_kw: Option<f64>,
    /// Energy since the start, kWh.
    kwh: f64,
}

impl Meter {
    /// A meter for `asset`, its outputs looked up in `properties.owned`.
    fn new(asset: &str, properties: &Properties) -> Self {
        Self {
            outputs: OUTPUTS.map(|name| properties.owned_index(&format!("{asset}/{name}"))),
            quality: Quality::Good,
            first_ms: None,
            now_ms: 0,
            held_kw: None,
            interval: 0,
            interval_kwh: 0.0,
            peak_kw: None,
            kwh: 0.0,
        }
    }

    /// Takes a good power sample (`kw` finite) at `at_ms`; returns the energy integrated, kWh.
    fn sample(&mut self, kw: f64, at_ms: i64, timing: Timing) -> f64 {
        let added = if self.first_ms.is_none() {
            self.first_ms = Some(at_ms);
            self.now_ms = at_ms;
            self.interval = at_ms.div_euclid(timing.interval_ms);
            0.0
        } else {
            self.extend(at_ms.max(self.now_ms), kw, timing)
        };
        self.held_kw = Some(kw);
        added
    }

    /// Holds the last power up to the host's `now_ms`; returns the energy integrated, kWh.
    fn tick(&mut self, now_ms: i64, timing: Timing) -> f64 {
        if self.first_ms.is_none() || now_ms <= self.now_ms {
            return 0.0;
        }
        let kw = self.held_kw.unwrap_or(0.0);
        self.extend(now_ms, kw, timing)
    }

    /// Moves to `at_ms` (≥ `now_ms`), integrating from the held power to `kw` unless nothing is
    /// held or the gap is longer than `max_gap` (which ends the hold); returns the energy, kWh.
    fn extend(&mut self, at_ms: i64, kw: f64, timing: Timing) -> f64 {
        let added = match self.held_kw {
            Some(held) if at_ms.saturating_sub(self.now_ms) <= timing.max_gap_ms => {
                self.integrate(held, at_ms, kw, timing)
            }
            _ => {
                self.held_kw = None;
                self.advance(at_ms, timing);
                0.0
            }
        };
        self.now_ms = at_ms;
        added
    }

    /// Integrates the line from (`now_ms`, `p1`) to (`t2`, `p2`), split at interval boundaries.
    fn integrate(&mut self, p1: f64, t2: i64, p2: f64, timing: Timing) -> f64 {
        let t1 = self.now_ms;
        let (mut t, mut p) = (t1, p1);
        let mut added = 0.0;
        loop {
            let end = self
                .interval
                .checked_add(1)
                .and_then(|k| k.checked_mul(timing.interval_ms));
            let Some(end) = end.filter(|&end| end <= t2) else {
                let kwh = trapezoid(t, p, t2, p2);
                self.interval_kwh += kwh;
                self.kwh += kwh;
                return added + kwh;
            };
            // t1 < end ≤ t2, so the division is by a positive span.
            let p_end = p1 + (p2 - p1) * ((end - t1) as f64 / (t2 - t1) as f64);
            let kwh = trapezoid(t, p, end, p_end);
            self.interval_kwh += kwh;
            self.kwh += kwh;
            added += kwh;
            self.close_interval(timing);
            (t, p) = (end, p_end);
        }
    }

    /// Closes the intervals that end at or before `at_ms`, with no more energy.
    fn advance(&mut self, at_ms: i64, timing: Timing) {
        let target = at_ms.div_euclid(timing.interval_ms);
        if target > self.interval {
            self.close_interval(timing);
        }
        if target > self.interval {
            // Whole intervals without energy (an outage): fully seen, 0 kW.
            self.peak_kw = Some(self.peak_kw.map_or(0.0, |peak| peak.max(0.0)));
            self.interval = target;
        }
    }

    /// Closes the current interval: its demand counts towards the peak if it was seen whole.
    fn close_interval(&mut self, timing: Timing) {
        let start = self.interval.saturating_mul(timing.interval_ms);
        if self.first_ms.is_some_and(|first| first <= start) {
            let kw = self.interval_kwh / timing.interval_hours();
            self.peak_kw = Some(self.peak_kw.map_or(kw, |peak| peak.max(kw)));
        }
        self.interval += 1;
        self.interval_kwh = 0.0;
    }

    /// Average power of the current interval so far, kW.
    fn demand(&self, timing: Timing) -> f64 {
        let start = self
            .interval
            .saturating_mul(timing.interval_ms)
            .max(self.first_ms.unwrap_or(i64::MIN));
        let elapsed_h = self.now_ms.saturating_sub(start) as f64 / MS_PER_HOUR;
        if elapsed_h > 0.0 {
            self.interval_kwh / elapsed_h
        } else {
            0.0
        }
    }
}

/// One `good_count` input.
#[derive(Debug)]
struct Counter {
    /// Latest good value, pcs.
    value: Option<f64>,
    /// Quality of the latest sample (good before the first).
    quality: Quality,
}

/// The plugin's state: one [`Meter`] per asset with a subscribed `power`, and the counters.
#[derive(Debug)]
pub struct Energy {
    timing: Timing,
    /// What each subscribed property is, in [`Properties::inputs`] order.
    inputs: Vec<Input>,
    meters: Vec<Meter>,
    counters: Vec<Counter>,
    /// Energy of all meters since the start, kWh.
    total_kwh: f64,
    /// `total_kwh` when the first counter sample came.
    kwh_at_first_count: Option<f64>,
    /// Pieces produced since each counter's first sample, summed, pcs.
    pieces: f64,
}

impl Energy {
    /// Builds the state from the settings (`config` table as TOML text) and the instance's
    /// properties: the subscribed inputs (`<asset path>/power`, `<asset path>/good_count`) and
    /// the owned outputs of each meter it looks up (`<meter>/energy_integrated`, `demand`,
    /// `peak_demand`, `energy_per_unit`; the ones not bound to the plugin are not produced).
    ///
    /// Errors: the config is not valid TOML for the settings, a setting is out of range (every
    /// such setting is named), a subscribed property is neither `power` nor `good_count`, or
    /// there is a `good_count` but no `power`.
    pub fn new(config: &str, properties: &Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        settings.validate()?;
        let mut inputs = Vec::new();
        let mut meters = Vec::new();
        let mut counters = Vec::new();
        let mut meter_of = HashMap::new();
        for path in &properties.inputs {
            let (asset, name) = path
                .rsplit_once('/')
                .ok_or_else(|| format!("`{path}` is not a property path"))?;
            let input = match name {
                "power" => Input::Power(*meter_of.entry(asset).or_insert_with(|| {
                    meters.push(Meter::new(asset, properties));
                    meters.len() - 1
                })),
                "good_count" => {
                    counters.push(Counter {
                        value: None,
                        quality: Quality::Good,
                    });
                    Input::Count(counters.len() - 1)
                }
                _ => {
                    return Err(format!(
                        "cannot use property `{path}`; the accepted inputs are: power, good_count"
                    ));
                }
            };
            inputs.push(input);
        }
        if meters.is_empty() && !counters.is_empty() {
            return Err(
                "good_count needs a power input to relate energy to; subscribe to a meter's power"
                    .into(),
            );
        }
        Ok(Self {
            timing: Timing {
                interval_ms: (settings.demand_interval * 1000.0).round() as i64,
                max_gap_ms: (settings.max_gap * 1000.0).round() as i64,
            },
            inputs,
            meters,
            counters,
            total_kwh: 0.0,
            kwh_at_first_count: None,
            pieces: 0.0,
        })
    }

    /// Takes a good counter sample (`value` finite, pcs).
    fn count(&mut self, counter: usize, value: f64) {
        self.kwh_at_first_count.get_or_insert(self.total_kwh);
        if let Some(last) = self.counters[counter].value {
            let increase = value - last;
            // A decrease is a counter reset: it counted from 0 up to `value` since.
            self.pieces += if increase >= 0.0 {
                increase
            } else {
                value.max(0.0)
            };
        }
        self.counters[counter].value = Some(value);
    }

    fn outputs(&self) -> Outputs {
        let per_unit = match self.kwh_at_first_count {
            Some(at_first) if self.pieces > 0.0 => Some((self.total_kwh - at_first) / self.pieces),
            _ => None,
        };
        // Energy per unit comes from every meter and every counter.
        let per_unit_quality = self
            .meters
            .iter()
            .map(|m| m.quality)
            .chain(self.counters.iter().map(|c| c.quality))
            .fold(Quality::Good, Quality::worst);
        let mut outputs = Outputs::with_capacity(4 * self.meters.len());
        for meter in self.meters.iter().filter(|m| m.first_ms.is_some()) {
            let demand = meter.demand(self.timing);
            let figures = [
                Some(meter.kwh),
                Some(demand),
                Some(meter.peak_kw.unwrap_or(demand)),
                per_unit,
            ];
            let qualities = [
                meter.quality,
                meter.quality,
                meter.quality,
                per_unit_quality,
            ];
            for ((owned, value), quality) in meter.outputs.iter().zip(figures).zip(qualities) {
                // Derived values must be finite; one that overflowed is left out.
                if let (Some(owned), Some(value)) = (*owned, value.filter(|v| v.is_finite())) {
                    outputs.set_with_quality(owned, value, quality);
                }
            }
        }
        outputs
    }
}

impl Plugin for Energy {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        Self::new(config, &properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, _call: &Call) -> Outputs {
        for i in 0..batch.properties.len() {
            let Some(&input) = self.inputs.get(batch.properties[i] as usize) else {
                continue;
            };
            let (value, quality) = (batch.values[i], batch.qualities[i]);
            let good = quality == Quality::Good;
            match input {
                // The power is unknown from here: stop integrating until the next good sample.
                Input::Power(meter) if !good => {
                    let meter = &mut self.meters[meter];
                    meter.held_kw = None;
                    meter.quality = quality;
                }
                Input::Power(meter) if value.is_finite() => {
                    let at_ms = batch.source_times_ms[i];
                    let meter = &mut self.meters[meter];
                    meter.quality = Quality::Good;
                    self.total_kwh += meter.sample(value, at_ms, self.timing);
                }
                Input::Count(counter) if !good => self.counters[counter].quality = quality,
                Input::Count(counter) if value.is_finite() => {
                    self.counters[counter].quality = Quality::Good;
                    self.count(counter, value);
                }
                // A good sample without a finite value: ignored.
                Input::Power(_) | Input::Count(_) => {}
            }
        }
        self.outputs()
    }

    fn on_tick(&mut self, call: &Call) -> Outputs {
        for meter in &mut self.meters {
            self.total_kwh += meter.tick(call.now_ms, self.timing);
        }
        self.outputs()
    }
}

twinloom_plugin::export_plugin!(Energy);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, properties};

    /// The owned indices of a single meter's outputs (see [`meter`]).
    const ENERGY: u32 = 0;
    const DEMAND: u32 = 1;
    const PEAK: u32 = 2;
    const PER_UNIT: u32 = 3;

    fn value(outputs: &Outputs, owned: u32) -> f64 {
        outputs.value(owned).expect("a value").0
    }

    fn quality(outputs: &Outputs, owned: u32) -> Quality {
        outputs.value(owned).expect("a value").1
    }

    fn has(outputs: &Outputs, owned: u32) -> bool {
        outputs.value(owned).is_some()
    }

    fn finite(outputs: &Outputs) -> bool {
        outputs.values().all(|(_, v, _)| v.is_finite())
    }

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    /// A plugin with one meter, `site/main`, owning its four outputs in [`OUTPUTS`] order.
    fn meter(config: &str) -> Energy {
        let owned = OUTPUTS.map(|name| format!("site/main/{name}"));
        let properties = properties(
            &["site/main/power"],
            &owned.each_ref().map(String::as_str),
            &[],
        );
        Energy::new(config, &properties).unwrap()
    }

    /// Properties with `inputs` and no outputs.
    fn inputs(inputs: &[&str]) -> Properties {
        properties(inputs, &[], &[])
    }

    #[test]
    fn trapezoids_and_demand_by_hand() {
        // 0 → 60 kW over a minute: 30 kW · 1/60 h = 0.5 kWh; then 60 kW for a minute: 1 kWh.
        // 1.5 kWh in the 2 minutes since the interval's start: 45 kW.
        let mut e = meter("max_gap = 60");
        e.on_changes(&batch(&[(0, 0.0, 0)]).view(), &Call::at(0));
        let out = e.on_changes(&batch(&[(0, 60.0, 60_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 0.5);
        let out = e.on_changes(&batch(&[(0, 60.0, 120_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 1.5);
        close(value(&out, DEMAND), 45.0);
        // No interval has completed yet: the peak is the current demand.
        close(value(&out, PEAK), 45.0);
        assert!(!has(&out, PER_UNIT));
    }

    #[test]
    fn demand_intervals_split_close_on_ticks_and_skip_the_partial_first() {
        // 1-minute intervals. 0 kW at 30 s to 120 kW at 90 s crosses 60 s at 60 kW:
        // [30 s, 60 s] 30 kW · 30 s = 0.25 kWh (interval 0), [60 s, 90 s] 90 kW · 30 s = 0.75 kWh.
        let mut e = meter("demand_interval = 60\nmax_gap = 120");
        e.on_changes(&batch(&[(0, 0.0, 30_000)]).view(), &Call::at(0));
        let out = e.on_changes(&batch(&[(0, 120.0, 90_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 1.0);
        // 0.75 kWh in the 30 s (1/120 h) of interval 1 so far.
        close(value(&out, DEMAND), 90.0);
        // Interval 0 was seen only from 30 s: not a peak candidate, so still the current demand.
        close(value(&out, PEAK), 90.0);
        // A tick at 120 s holds 120 kW for 30 s (+1 kWh) and closes interval 1:
        // 1.75 kWh / (1/60 h) = 105 kW. Interval 2 has just begun: demand 0.
        let out = e.on_tick(&Call::at(120_000));
        close(value(&out, ENERGY), 2.0);
        close(value(&out, PEAK), 105.0);
        close(value(&out, DEMAND), 0.0);
        // No new sample (steady load): the tick at 180 s closes interval 2 at 120 kW.
        let out = e.on_tick(&Call::at(180_000));
        close(value(&out, ENERGY), 4.0);
        close(value(&out, PEAK), 120.0);
        // 120 → 0 kW over 30 s: 60 kW · 30 s = 0.5 kWh, 60 kW over the 30 s of interval 3.
        let out = e.on_changes(&batch(&[(0, 0.0, 210_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 4.5);
        close(value(&out, DEMAND), 60.0);
        close(value(&out, PEAK), 120.0);
    }

    #[test]
    fn gaps_longer_than_max_gap_are_not_integrated() {
        // 10 kW for 30 s = 1/12 kWh, twice; the 170 s and 70 s gaps count nothing.
        let mut e = meter("max_gap = 60");
        e.on_changes(
            &batch(&[(0, 10.0, 0), (0, 10.0, 30_000)]).view(),
            &Call::at(0),
        );
        e.on_changes(&batch(&[(0, 10.0, 200_000)]).view(), &Call::at(0));
        let out = e.on_changes(&batch(&[(0, 10.0, 230_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 2.0 / 12.0);
        // A tick more than max_gap after the last point ends the hold; the next sample starts
        // afresh even though it is close to the tick.
        e.on_tick(&Call::at(300_000));
        let out = e.on_changes(&batch(&[(0, 10.0, 310_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 2.0 / 12.0);
    }

    #[test]
    fn bad_quality_ends_integration_and_is_otherwise_ignored() {
        let mut e = meter("max_gap = 60");
        e.on_changes(&batch(&[(0, 10.0, 0)]).view(), &Call::at(0));
        let mut bad = batch(&[(0, 500.0, 10_000)]);
        bad.qualities[0] = Quality::Uncertain;
        e.on_changes(&bad.view(), &Call::at(10_000));
        e.on_tick(&Call::at(20_000));
        let out = e.on_changes(&batch(&[(0, 10.0, 30_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 0.0);
        // 10 kW from 30 s to 60 s: 1/12 kWh. A non-finite good sample is just skipped, and an
        // index that was never subscribed is ignored.
        let out = e.on_changes(
            &batch(&[(0, f64::NAN, 40_000), (9, 1.0, 50_000)]).view(),
            &Call::at(0),
        );
        close(value(&out, ENERGY), 0.0);
        let out = e.on_changes(&batch(&[(0, 10.0, 60_000)]).view(), &Call::at(0));
        close(value(&out, ENERGY), 1.0 / 12.0);
    }

    #[test]
    fn a_bad_input_makes_what_comes_from_it_bad_until_its_next_good_sample() {
        // A meter and a counter; the meter's energy per unit comes from both.
        let properties = properties(
            &["site/main/power", "site/filler/good_count"],
            &OUTPUTS
                .map(|name| format!("site/main/{name}"))
                .each_ref()
                .map(String::as_str),
            &[],
        );
        let mut e = Energy::new("max_gap = 60", &properties).unwrap();
        e.on_changes(&batch(&[(0, 60.0, 0), (1, 0.0, 0)]).view(), &Call::at(0));
        let out = e.on_changes(
            &batch(&[(0, 60.0, 30_000), (1, 10.0, 30_000)]).view(),
            &Call::at(30_000),
        );
        assert_eq!(out.len(), 4);
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        // The counter goes bad: only energy per unit comes from it.
        let mut bad = batch(&[(1, f64::NAN, 40_000)]);
        bad.qualities[0] = Quality::Bad;
        let out = e.on_changes(&bad.view(), &Call::at(40_000));
        assert_eq!(quality(&out, ENERGY), Quality::Good);
        assert_eq!(quality(&out, PER_UNIT), Quality::Bad);
        // The power goes bad too: everything is bad, and stays at what was integrated so far
        // (60 kW for 30 s = 0.5 kWh), ticks included.
        let mut bad = batch(&[(0, f64::NAN, 45_000)]);
        bad.qualities[0] = Quality::Bad;
        e.on_changes(&bad.view(), &Call::at(45_000));
        let out = e.on_tick(&Call::at(50_000));
        assert_eq!(out.len(), 4);
        assert!(out.values().all(|(_, _, q)| q == Quality::Bad), "{out:?}");
        close(value(&out, ENERGY), 0.5);
        // The power comes back; the counter is still bad.
        let out = e.on_changes(&batch(&[(0, 60.0, 60_000)]).view(), &Call::at(60_000));
        for owned in [ENERGY, DEMAND, PEAK] {
            assert_eq!(quality(&out, owned), Quality::Good, "{owned}");
        }
        assert_eq!(quality(&out, PER_UNIT), Quality::Bad);
        // An uncertain power sample: uncertain, and it ends the integration like a bad one.
        let mut uncertain = batch(&[(0, 60.0, 70_000)]);
        uncertain.qualities[0] = Quality::Uncertain;
        let out = e.on_changes(&uncertain.view(), &Call::at(70_000));
        assert_eq!(quality(&out, ENERGY), Quality::Uncertain);
        assert_eq!(quality(&out, PER_UNIT), Quality::Bad);
        // Both good again: all good; 60 kW from 80 s to 90 s added 1/6 kWh.
        let out = e.on_changes(
            &batch(&[(0, 60.0, 80_000), (1, 20.0, 80_000), (0, 60.0, 90_000)]).view(),
            &Call::at(90_000),
        );
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        close(value(&out, ENERGY), 0.5 + 1.0 / 6.0);
    }

    #[test]
    fn energy_per_unit_over_all_meters_and_counters() {
        // Energy per unit of both meters, in another order than the inputs; the filler's is
        // not a meter's output, so it is never produced.
        let properties = properties(
            &[
                "site/meter-a/power",
                "site/meter-b/power",
                "site/l1/filler/good_count",
                "site/l1/capper/good_count",
            ],
            &[
                "site/meter-b/energy_per_unit",
                "site/meter-a/energy_per_unit",
                "site/meter-a/energy_integrated",
                "site/meter-b/energy_integrated",
                "site/l1/filler/energy_per_unit",
            ],
            &[],
        );
        let (b_per_unit, a_per_unit, a_energy, b_energy, filler) = (0, 1, 2, 3, 4);
        let mut e = Energy::new("", &properties).unwrap();
        // 30 kW + 90 kW = 2 kWh a minute. The energy before the first count is not counted.
        e.on_changes(&batch(&[(0, 30.0, 0), (1, 90.0, 0)]).view(), &Call::at(0));
        e.on_changes(
            &batch(&[(0, 30.0, 60_000), (1, 90.0, 60_000)]).view(),
            &Call::at(0),
        );
        let out = e.on_changes(&batch(&[(2, 1_000.0, 60_000)]).view(), &Call::at(0));
        assert!(!has(&out, a_per_unit));
        // +2 kWh, 100 pieces from the filler; the capper's first value is its baseline.
        let out = e.on_changes(
            &batch(&[
                (0, 30.0, 120_000),
                (1, 90.0, 120_000),
                (2, 1_100.0, 120_000),
                (3, 500.0, 120_000),
            ])
            .view(),
            &Call::at(0),
        );
        close(value(&out, a_per_unit), 0.02);
        close(value(&out, b_per_unit), 0.02);
        close(value(&out, a_energy), 1.0);
        close(value(&out, b_energy), 3.0);
        // +2 kWh; the filler resets and counts 20, the capper makes 10.
        e.on_changes(
            &batch(&[
                (0, 30.0, 180_000),
                (1, 90.0, 180_000),
                (2, 20.0, 180_000),
                (3, 510.0, 180_000),
            ])
            .view(),
            &Call::at(0),
        );
        // +2 kWh; the filler makes 30 more. 6 kWh / 160 pcs.
        let out = e.on_changes(
            &batch(&[(0, 30.0, 240_000), (1, 90.0, 240_000), (2, 50.0, 240_000)]).view(),
            &Call::at(0),
        );
        close(value(&out, a_per_unit), 6.0 / 160.0);
        close(value(&out, b_per_unit), 6.0 / 160.0);
        assert!(!has(&out, filler));
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn an_empty_config_uses_the_defaults() {
        // 15-minute intervals from the epoch, 60 s gaps: 100 kW held by a tick a minute for
        // 15 minutes is 25 kWh, and the interval (seen whole) has 100 kW demand.
        let start = 1_700_000_100_000; // 1 700 000 100 s = 1 888 889 · 900 s
        let mut e = meter("");
        e.on_changes(&batch(&[(0, 100.0, start)]).view(), &Call::at(0));
        let mut out = Outputs::new();
        for minute in 1..=15 {
            out = e.on_tick(&Call::at(start + minute * 60_000));
        }
        close(value(&out, ENERGY), 25.0);
        close(value(&out, PEAK), 100.0);
        close(value(&out, DEMAND), 0.0);
        // A tick 61 s later is past max_gap: nothing more.
        let out = e.on_tick(&Call::at(start + 15 * 60_000 + 61_000));
        close(value(&out, ENERGY), 25.0);
    }

    #[test]
    fn outputs_stay_finite() {
        let properties = properties(
            &["m/power", "m/good_count"],
            &[
                "m/energy_integrated",
                "m/demand",
                "m/peak_demand",
                "m/energy_per_unit",
            ],
            &[],
        );
        let mut e = Energy::new("demand_interval = 1\nmax_gap = 86400", &properties).unwrap();
        assert!(e.on_tick(&Call::at(0)).is_empty());
        for (i, (kw, at)) in [
            (f64::MAX, 0),
            (f64::MAX, 86_400_000),
            (-f64::MAX, 86_400_000),
            (1.0, -5),
            (1.0, i64::MAX - 10),
            (1.0, i64::MAX),
        ]
        .into_iter()
        .enumerate()
        {
            let out = e.on_changes(
                &batch(&[(0, kw, at), (1, i as f64, at)]).view(),
                &Call::at(0),
            );
            assert!(finite(&out), "{out:?}");
        }
        let out = e.on_tick(&Call::at(i64::MAX));
        assert!(finite(&out), "{out:?}");
        let out = e.on_tick(&Call::at(i64::MIN));
        assert!(has(&out, DEMAND));
    }

    #[test]
    fn bad_settings_are_refused() {
        for config in [
            "demand_interval = 0",
            "demand_interval = -900",
            "demand_interval = 0.5",
            "demand_interval = nan",
            "demand_interval = 100000",
            "max_gap = 0",
            "max_gap = inf",
            "max_gap = \"60s\"",
            "interval = 900",
        ] {
            assert!(
                Energy::new(config, &inputs(&[])).is_err(),
                "{config} was accepted"
            );
        }
        let error = Energy::new("demand_interval = 0\nmax_gap = -1", &inputs(&[])).unwrap_err();
        assert!(
            error.contains("demand_interval") && error.contains("max_gap"),
            "{error}"
        );
        assert!(Energy::new("demand_interval = 1800\nmax_gap = 7.5", &inputs(&[])).is_ok());
    }

    #[test]
    fn unknown_inputs_and_counters_without_meters_are_refused() {
        let error = Energy::new("", &inputs(&["site/main/voltage"])).unwrap_err();
        assert!(error.contains("site/main/voltage"), "{error}");
        assert!(error.contains("power, good_count"), "{error}");
        let error = Energy::new("", &inputs(&["site/filler/good_count"])).unwrap_err();
        assert!(error.contains("power"), "{error}");
        assert!(Energy::new("", &inputs(&["power"])).is_err());
        assert!(Energy::new("", &inputs(&[])).is_ok());
    }
}
