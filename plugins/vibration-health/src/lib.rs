//! Vibration-health plugin: the condition of machines and their bearings from vibration severity.
//!
//! Input per asset (subscribe to it): `vibration_rms`, broadband vibration velocity RMS in mm/s
//! as ISO 10816 / ISO 20816 define vibration severity. Samples whose quality is not good or whose
//! value is not finite are ignored; times come from the samples' source timestamps, never from a
//! clock of the plugin's own.
//!
//! Outputs per asset, once it has had a sample (bind them with `{ plugin = "<name>" }`; an output
//! that is not bound to the plugin is not produced):
//!
//! - `vibration_ewma` (mm/s): exponentially weighted moving average of the samples.
//! - `anomaly_score` (dimensionless, signed): z-score of the latest sample against the weighted
//!   mean and variance *before* it; positive when the sample is above the mean.
//! - `vibration_trend` (mm/s per hour): least-squares slope of `vibration_ewma` against source
//!   time over the last `trend_window`.
//! - `time_to_alarm` (h): when `vibration_ewma` reaches `alarm` at the present trend.
//!
//! Formulas, per sample x (exponentially weighted mean and variance in the incremental form of
//! D. H. D. West, CACM 22(9), 1979, as T. Finch, "Incremental calculation of weighted mean and
//! variance", 2009, gives it). The first sample sets mean = x, var = 0; each later one does
//!
//! ```text
//! score = (x − mean) / √var    (mean, var before the update; 0 while fewer than `warmup`
//!                               samples came before, or while var ≤ 1e-12 · (1 + mean²))
//! diff  = x − mean
//! incr  = alpha · diff
//! mean  = mean + incr          → vibration_ewma
//! var   = (1 − alpha) · (var + diff · incr)
//! ```
//!
//! The trend fits m = a + b·t by least squares to the points (t, mean) with t the source time in
//! hours, keeping the points with t ≥ t_latest − `trend_window`: b = Σ(t − t̄)(m − m̄) / Σ(t − t̄)²,
//! 0 with fewer than two points or all at one time. `time_to_alarm` = 0 when
//! `vibration_ewma` ≥ `alarm`; min((`alarm` − `vibration_ewma`) / b, `horizon`) when b > 0;
//! `horizon` otherwise. A sample whose source time is earlier than an asset's latest counts at
//! the latest time; source times are clamped into ±2^53 ms (±285 000 years around 1970). Per sample the work is O(1) amortised: the regression keeps running sums
//! (re-based on the oldest point once per window, which also bounds rounding error), and the
//! outputs are computed once per call.
//!
//! Config keys (all optional; an empty `config` uses the defaults):
//!
//! | key            | unit        | default | range                  |
//! |----------------|-------------|---------|------------------------|
//! | `alpha`        | —           | 0.1     | 0 < alpha ≤ 1          |
//! | `alarm`        | mm/s        | 7.1     | > 0                    |
//! | `trend_window` | s           | 600     | 0 < trend_window ≤ 86 400 |
//! | `warmup`       | samples     | 10      | 0 ..= 4 294 967 295    |
//! | `horizon`      | h           | 720     | > 0                    |
//!
//! The default `alarm`, 7.1 mm/s, is the zone C/D boundary (vibration that may damage the
//! machine) for class II (medium-sized) machines in the ISO 10816-1 severity chart (Annex B).
//!
//! Quality. All four outputs of an asset come from its `vibration_rms`, so they carry the quality
//! of its latest sample (a good sample whose value is not finite, being ignored, changes
//! nothing): while it is uncertain or bad the outputs keep the statistics of the last good
//! samples and say uncertain or bad; with the next good sample they are good again.

use std::collections::{HashMap, VecDeque};

use serde::Deserialize;
use twinloom_plugin::{Call, ChangeBatch, Outputs, Plugin, Properties, Quality};

/// Most trend points kept per asset; beyond it the oldest are dropped, so at very high sample
/// rates the trend spans less than `trend_window`.
pub const MAX_TREND_POINTS: usize = 65_536;

/// Longest accepted `trend_window`, s (one day).
const MAX_TREND_WINDOW_S: f64 = 86_400.0;

/// Below `VARIANCE_FLOOR · (1 + mean²)` (mm/s)² the variance counts as zero (a constant signal).
const VARIANCE_FLOOR: f64 = 1e-12;

const MS_PER_HOUR: f64 = 3_600_000.0;

/// Source times are clamped into ±2^53 ms (±285 000 years around 1970), so differences of two
/// times and a window never overflow an `i64`.
const TIME_LIMIT_MS: i64 = 1 << 53;

/// The input property this plugin understands.
const INPUT: &str = "vibration_rms";

/// The output property names, in the order of [`Asset::outputs`].
const OUTPUTS: [&str; 4] = [
    "vibration_ewma",
    "anomaly_score",
    "vibration_trend",
    "time_to_alarm",
];

/// Plugin settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// EWMA smoothing factor, the weight of the newest sample; dimensionless, 0 < alpha ≤ 1.
    alpha: f64,
    /// Alarm threshold of the smoothed vibration velocity RMS, mm/s, > 0.
    alarm: f64,
    /// Span of the trend regression, s, 0 < trend_window ≤ 86 400.
    trend_window: f64,
    /// Samples per asset before `anomaly_score` can be non-zero, count.
    warmup: u32,
    /// Cap of `time_to_alarm` (and its value when the trend is not rising), h, > 0.
    horizon: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            alpha: 0.1,
            alarm: 7.1,
            trend_window: 600.0,
            warmup: 10,
            horizon: 720.0,
        }
    }
}

impl Settings {
    /// Every semantic error, joined with "; ".
    fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            errors.push(format!("alpha must be in (0, 1], got {}", self.alpha));
        }
        if !(self.alarm.is_finite() && self.alarm > 0.0) {
            errors.push(format!(
                "alarm must be a positive number of mm/s, got {}",
                self.alarm
            ));
        }
        if !(self.trend_window > 0.0 && self.trend_window <= MAX_TREND_WINDOW_S) {
            errors.push(format!(
                "trend_window must be in (0, {MAX_TREND_WINDOW_S}] s, got {}",
                self.trend_window
            ));
        }
        if !(self.horizon.is_finite() && self.horizon > 0.0) {
            errors.push(format!(
                "horizon must be a positive number of hours, got {}",
                self.horizon
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }
}

/// Least-squares line through (time, value) points within a sliding window, from running sums.
///
/// Coordinates are relative to an origin (the oldest point at the last re-base) so the sums stay
/// small: time in hours since `origin_ms`, value minus `origin_value`.
#[derive(Debug, Default)]
struct Trend {
    /// (source time ms, smoothed value mm/s), oldest first, times non-decreasing.
    points: VecDeque<(i64, f64)>,
    origin_ms: i64,
    origin_value: f64,
    sum_t: f64,
    sum_v: f64,
    sum_tt: f64,
    sum_tv: f64,
}

impl Trend {
    fn coordinates(&self, at_ms: i64, value: f64) -> (f64, f64) {
        (
            (at_ms - self.origin_ms) as f64 / MS_PER_HOUR,
            value - self.origin_value,
        )
    }

    fn add(&mut self, at_ms: i64, value: f64, sign: f64) {
        let (t, v) = self.coordinates(at_ms, value);
        self.sum_t += sign * t;
        self.sum_v += sign * v;
        self.sum_tt += sign * t * t;
        self.sum_tv += sign * t * v;
    }

    /// Drops the oldest point when it is older than `window_ms` before `at_ms` or there are more
    /// than [`MAX_TREND_POINTS`]; whether it did.
    #[inline(always)]
    fn drop_expired(&mut self, at_ms: i64, window_ms: i64) -> bool {
        match self.points.front() {
            Some(&(t, v)) if t < at_ms - window_ms || self.points.len() > MAX_TREND_POINTS => {
                self.points.pop_front();
                self.add(t, v, -1.0);
                true
            }
            _ => false,
        }
    }

    /// Appends a point (`at_ms` not before the last point's) and drops the points older than
    /// `window_ms` before it.
    fn push(&mut self, at_ms: i64, value: f64, window_ms: i64) {
        if self.points.is_empty() {
            self.origin_ms = at_ms;
            self.origin_value = value;
        }
        self.points.push_back((at_ms, value));
        self.add(at_ms, value, 1.0);
        // At a steady sample rate each point pushed expires one: drop that one without entering
        // a loop (in WebAssembly every loop entry is a deadline check), loop only for more.
        if self.drop_expired(at_ms, window_ms) && self.drop_expired(at_ms, window_ms) {
            while self.drop_expired(at_ms, window_ms) {}
        }
        // Once every point is more than a window past the origin, move the origin to the oldest
        // point and recompute the sums: each point takes part in at most one re-base (times are
        // non-decreasing), so this is O(1) amortised, and it clears accumulated rounding error.
        if let Some(&(t, v)) = self.points.front()
            && t - self.origin_ms > window_ms
        {
            self.origin_ms = t;
            self.origin_value = v;
            (self.sum_t, self.sum_v, self.sum_tt, self.sum_tv) = (0.0, 0.0, 0.0, 0.0);
            for i in 0..self.points.len() {
                let (t, v) = self.points[i];
                self.add(t, v, 1.0);
            }
        }
    }

    /// Slope of the least-squares line, value unit per hour; 0 with fewer than two points or
    /// all points at one time.
    fn slope(&self) -> f64 {
        let (Some(first), Some(last)) = (self.points.front(), self.points.back()) else {
            return 0.0;
        };
        if first.0 == last.0 {
            return 0.0;
        }
        let n = self.points.len() as f64;
        let var_t = self.sum_tt - self.sum_t * self.sum_t / n;
        let cov = self.sum_tv - self.sum_t * self.sum_v / n;
        let slope = cov / var_t;
        if var_t > 0.0 && slope.is_finite() {
            slope
        } else {
            0.0
        }
    }
}

/// The state of one asset.
#[derive(Debug)]
struct Asset {
    /// Index in [`Properties::owned`] of ewma, anomaly score, trend and time to alarm; none
    /// where the output is not bound to the plugin.
    outputs: [Option<u32>; 4],
    /// Quality of the latest `vibration_rms` sample (good before the first).
    quality: Quality,
    /// Samples taken into the mean and variance.
    samples: u64,
    /// Weighted mean, mm/s.
    mean: f64,
    /// Weighted variance, (mm/s)².
    variance: f64,
    /// z-score of the latest sample.
    score: f64,
    /// Latest source time, ms since the Unix epoch.
    latest_ms: i64,
    trend: Trend,
}

impl Asset {
    /// An asset at path `asset`, its outputs looked up in `properties.owned`.
    fn new(asset: &str, properties: &Properties) -> Self {
        Self {
            outputs: OUTPUTS.map(|name| properties.owned_index(&format!("{asset}/{name}"))),
            quality: Quality::Good,
            samples: 0,
            mean: 0.0,
            variance: 0.0,
            score: 0.0,
            latest_ms: i64::MIN,
            trend: Trend::default(),
        }
    }

    /// Takes a sample `x` (mm/s, finite) with source time `at_ms`.
    fn sample(&mut self, x: f64, at_ms: i64, alpha: f64, warmup: u32, window_ms: i64) {
        if self.samples > 0 {
            self.score = if self.samples >= u64::from(warmup)
                && self.variance > VARIANCE_FLOOR * (1.0 + self.mean * self.mean)
            {
                (x - self.mean) / self.variance.sqrt()
            } else {
                0.0
            };
            let diff = x - self.mean;
            let incr = alpha * diff;
            self.mean += incr;
            self.variance = (1.0 - alpha) * (self.variance + diff * incr);
            self.samples += 1;
        }
        // First sample, or the statistics overflowed on an absurd value: start afresh from x.
        if self.samples == 0 || !self.mean.is_finite() || !self.variance.is_finite() {
            self.mean = x;
            self.variance = 0.0;
            self.score = 0.0;
            self.samples = 1;
        }
        self.latest_ms = self
            .latest_ms
            .max(at_ms.clamp(-TIME_LIMIT_MS, TIME_LIMIT_MS));
        self.trend.push(self.latest_ms, self.mean, window_ms);
    }
}

/// The plugin's state: one [`Asset`] per asset with a subscribed `vibration_rms`.
#[derive(Debug)]
pub struct VibrationHealth {
    alpha: f64,
    alarm: f64,
    warmup: u32,
    horizon: f64,
    window_ms: i64,
    /// Asset index of each subscribed property, in [`Properties::inputs`] order.
    inputs: Vec<usize>,
    assets: Vec<Asset>,
}

impl VibrationHealth {
    /// Builds the state from the settings (`config` table as TOML text) and the instance's
    /// properties: the subscribed inputs (`<asset path>/vibration_rms`) and the owned outputs of
    /// each asset it looks up (`<asset path>/vibration_ewma`, `anomaly_score`,
    /// `vibration_trend`, `time_to_alarm`; the ones not bound to the plugin are not produced).
    ///
    /// Errors: the config is not valid TOML for the settings, a setting is out of range (every
    /// such setting is named), or a subscribed property is not `vibration_rms`.
    pub fn new(config: &str, properties: &Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        settings.validate()?;
        let mut inputs = Vec::new();
        let mut assets = Vec::new();
        let mut by_path = HashMap::new();
        for path in &properties.inputs {
            let (asset, name) = path
                .rsplit_once('/')
                .ok_or_else(|| format!("`{path}` is not a property path"))?;
            if name != INPUT {
                return Err(format!(
                    "cannot use property `{path}`; the accepted inputs are: {INPUT}"
                ));
            }
            let index = *by_path.entry(asset).or_insert_with(|| {
                assets.push(Asset::new(asset, properties));
                assets.len() - 1
            });
            inputs.push(index);
        }
        Ok(Self {
            alpha: settings.alpha,
            alarm: settings.alarm,
            warmup: settings.warmup,
            horizon: settings.horizon,
            window_ms: (settings.trend_window * 1000.0).round() as i64,
            inputs,
            assets,
        })
    }

    fn outputs(&self) -> Outputs {
        let mut outputs = Outputs::with_capacity(4 * self.assets.len());
        for asset in self.assets.iter().filter(|a| a.samples > 0) {
            let ewma = asset.mean;
            let trend = asset.trend.slope();
            let time_to_alarm = if ewma >= self.alarm {
                0.0
            } else if trend > 0.0 {
                ((self.alarm - ewma) / trend).min(self.horizon)
            } else {
                self.horizon
            };
            for (owned, value) in
                asset
                    .outputs
                    .iter()
                    .zip([ewma, asset.score, trend, time_to_alarm])
            {
                // Derived values must be finite; one that overflowed is left out.
                if let Some(owned) = *owned
                    && value.is_finite()
                {
                    outputs.set_with_quality(owned, value, asset.quality);
                }
            }
        }
        outputs
    }
}

impl Plugin for VibrationHealth {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        Self::new(config, &properties)
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, _call: &Call) -> Outputs {
        // The columns have one length (the contract says so); slicing them to it up front lets
        // the loop run without a bounds check per column.
        let n = batch.properties.len();
        let columns = batch
            .properties
            .iter()
            .zip(&batch.values[..n])
            .zip(&batch.qualities[..n])
            .zip(&batch.source_times_ms[..n]);
        for (((&property, &value), &quality), &at_ms) in columns {
            let Some(&asset) = self.inputs.get(property as usize) else {
                continue;
            };
            let asset = &mut self.assets[asset];
            if quality != Quality::Good {
                // Not taken: the outputs keep the last good statistics, marked with this.
                asset.quality = quality;
            } else if value.is_finite() {
                asset.quality = Quality::Good;
                asset.sample(value, at_ms, self.alpha, self.warmup, self.window_ms);
            }
        }
        self.outputs()
    }

    fn on_tick(&mut self, _call: &Call) -> Outputs {
        self.outputs()
    }
}

twinloom_plugin::export_plugin!(VibrationHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use twinloom_plugin::testing::{batch, properties};

    const HOUR_MS: i64 = 3_600_000;

    fn close(actual: f64, expected: f64) {
        assert!(
            (actual - expected).abs() <= 1e-9 * expected.abs().max(1.0),
            "{actual} != {expected}"
        );
    }

    /// The owned indices of a single pump's outputs (see [`pump`]).
    const EWMA: u32 = 0;
    const SCORE: u32 = 1;
    const TREND: u32 = 2;
    const TO_ALARM: u32 = 3;

    fn value(outputs: &Outputs, owned: u32) -> f64 {
        outputs.value(owned).expect("a value").0
    }

    /// A plugin with one pump, `site/p1`, owning its four outputs in [`OUTPUTS`] order.
    fn pump(config: &str) -> VibrationHealth {
        let owned = OUTPUTS.map(|name| format!("site/p1/{name}"));
        let properties = properties(
            &["site/p1/vibration_rms"],
            &owned.each_ref().map(String::as_str),
            &[],
        );
        VibrationHealth::new(config, &properties).unwrap()
    }

    /// Properties with `inputs` and no outputs.
    fn inputs(inputs: &[&str]) -> Properties {
        properties(inputs, &[], &[])
    }

    #[test]
    fn weighted_mean_variance_and_score_by_hand() {
        // alpha 0.5. x = 2: mean 2, var 0. x = 4: diff 2, incr 1, mean 3, var 0.5·(0 + 2) = 1.
        // x = 6: score (6 − 3)/√1 = 3; diff 3, incr 1.5, mean 4.5, var 0.5·(1 + 4.5) = 2.75.
        let mut p = pump("alpha = 0.5\nwarmup = 2");
        let out = p.on_changes(&batch(&[(0, 2.0, 0)]).view(), &Call::at(0));
        close(value(&out, EWMA), 2.0);
        close(value(&out, SCORE), 0.0);
        // Only one sample came before: still warming up.
        let out = p.on_changes(&batch(&[(0, 4.0, 1_000)]).view(), &Call::at(0));
        close(value(&out, EWMA), 3.0);
        close(value(&out, SCORE), 0.0);
        let out = p.on_changes(&batch(&[(0, 6.0, 2_000)]).view(), &Call::at(0));
        close(value(&out, EWMA), 4.5);
        close(value(&out, SCORE), 3.0);
        // Points (0 h, 2), (1/3600 h, 3), (2/3600 h, 4.5): t̄ = 1/3600, m̄ = 9.5/3,
        // Σ(t − t̄)(m − m̄) = (1/3600)·(7/6 + 4/3) = 2.5/3600, Σ(t − t̄)² = 2/3600²,
        // slope = 1.25 · 3600 = 4500 mm/s per hour.
        close(value(&out, TREND), 4500.0);
        close(value(&out, TO_ALARM), (7.1 - 4.5) / 4500.0);
        // Next sample 1.2 against mean 4.5, var 2.75: z = −3.3 / √2.75.
        let out = p.on_changes(&batch(&[(0, 1.2, 3_000)]).view(), &Call::at(0));
        close(value(&out, SCORE), -3.3 / 2.75f64.sqrt());
    }

    #[test]
    fn trend_and_time_to_alarm() {
        // alpha 1: the EWMA is the sample. 1, 2, 3 mm/s at 0, 30, 60 min: 2 mm/s per hour, and
        // (7.1 − 3) / 2 = 2.05 h to the alarm. The point exactly one window old is kept.
        let mut p = pump("alpha = 1.0\ntrend_window = 3600");
        p.on_changes(
            &batch(&[(0, 1.0, 0), (0, 2.0, HOUR_MS / 2)]).view(),
            &Call::at(0),
        );
        let out = p.on_changes(&batch(&[(0, 3.0, HOUR_MS)]).view(), &Call::at(0));
        close(value(&out, EWMA), 3.0);
        close(value(&out, TREND), 2.0);
        close(value(&out, TO_ALARM), 2.05);
        // At or above the alarm: 0 h.
        let out = p.on_changes(&batch(&[(0, 7.1, 2 * HOUR_MS)]).view(), &Call::at(0));
        close(value(&out, TO_ALARM), 0.0);

        // Rising by 0.001 mm/s per hour from 1 mm/s: 6 099 h away, capped at the horizon.
        let mut slow = pump("alpha = 1.0\ntrend_window = 3600");
        slow.on_changes(&batch(&[(0, 1.0, 0)]).view(), &Call::at(0));
        let out = slow.on_changes(&batch(&[(0, 1.001, HOUR_MS)]).view(), &Call::at(0));
        close(value(&out, TREND), 0.001);
        close(value(&out, TO_ALARM), 720.0);

        // Two points at one time span no time: no trend, so the horizon.
        let mut same = pump("alpha = 1.0");
        let out = same.on_changes(
            &batch(&[(0, 1.0, 5_000), (0, 3.0, 5_000)]).view(),
            &Call::at(0),
        );
        close(value(&out, TREND), 0.0);
        close(value(&out, TO_ALARM), 720.0);
    }

    #[test]
    fn points_older_than_the_window_leave_the_trend() {
        // Window 900 s. At 1 200 s the window holds (600 s, 5) and (1 200 s, 2): −3 mm/s per
        // 10 min = −18 mm/s per hour, not rising, so the horizon. At 1 800 s it holds
        // (1 200 s, 2) and (1 800 s, 3): +6 mm/s per hour, (7.1 − 3) / 6 h to the alarm.
        let mut p = pump("alpha = 1.0\ntrend_window = 900\nhorizon = 100");
        p.on_changes(
            &batch(&[(0, 9.0, 0), (0, 5.0, 600_000)]).view(),
            &Call::at(0),
        );
        let out = p.on_changes(&batch(&[(0, 2.0, 1_200_000)]).view(), &Call::at(0));
        close(value(&out, TREND), -18.0);
        close(value(&out, TO_ALARM), 100.0);
        let out = p.on_changes(&batch(&[(0, 3.0, 1_800_000)]).view(), &Call::at(0));
        close(value(&out, TREND), 6.0);
        close(value(&out, TO_ALARM), 4.1 / 6.0);
    }

    #[test]
    fn a_long_ramp_keeps_an_exact_trend() {
        // 1 mm/s rising 0.5 mm/s per hour, a sample every 10 s for 10 h, at a real epoch: many
        // windows and re-bases later the slope is still 0.5 and the alarm (7.1 − 6) / 0.5 h away.
        let start = 1_700_000_000_000;
        let mut p = pump("alpha = 1.0");
        let mut out = Outputs::new();
        for i in 0..=3_600 {
            let hours = f64::from(i) * 10.0 / 3_600.0;
            out = p.on_changes(
                &batch(&[(0, 1.0 + 0.5 * hours, start + i64::from(i) * 10_000)]).view(),
                &Call::at(0),
            );
        }
        close(value(&out, EWMA), 6.0);
        close(value(&out, TREND), 0.5);
        close(value(&out, TO_ALARM), 2.2);
        assert!(p.assets[0].trend.points.len() <= 61);
    }

    #[test]
    fn trend_matches_a_direct_least_squares_fit() {
        // Irregular times and noisy values; compare with a fit computed from scratch.
        let mut p = pump("alpha = 0.3\ntrend_window = 120");
        let (mut t, mut seed) = (1_700_000_000_000i64, 12_345u64);
        let mut history: Vec<(i64, f64)> = Vec::new();
        for _ in 0..2_000 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            t += 1 + (seed >> 40) as i64 % 3_000;
            let x = 2.0 + (seed >> 33) as f64 / (1u64 << 31) as f64;
            let out = p.on_changes(&batch(&[(0, x, t)]).view(), &Call::at(0));
            history.push((t, value(&out, EWMA)));
            let window: Vec<(f64, f64)> = history
                .iter()
                .filter(|(at, _)| *at >= t - 120_000)
                .map(|&(at, m)| ((at - t) as f64 / 3_600_000.0, m))
                .collect();
            let n = window.len() as f64;
            let (tm, mm) = (
                window.iter().map(|w| w.0).sum::<f64>() / n,
                window.iter().map(|w| w.1).sum::<f64>() / n,
            );
            let sxx: f64 = window.iter().map(|w| (w.0 - tm).powi(2)).sum();
            let sxy: f64 = window.iter().map(|w| (w.0 - tm) * (w.1 - mm)).sum();
            let expected = if window.len() < 2 { 0.0 } else { sxy / sxx };
            let actual = value(&out, TREND);
            assert!(
                (actual - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{actual} != {expected}"
            );
        }
    }

    #[test]
    fn an_empty_config_uses_the_defaults() {
        // alpha 0.1: 0 then 10 a second later gives 1, rising 3 600 mm/s per hour, so the
        // 7.1 mm/s alarm is (7.1 − 1) / 3 600 h away.
        let mut p = pump("");
        p.on_changes(&batch(&[(0, 0.0, 0)]).view(), &Call::at(0));
        let out = p.on_changes(&batch(&[(0, 10.0, 1_000)]).view(), &Call::at(0));
        close(value(&out, EWMA), 1.0);
        close(value(&out, TREND), 3_600.0);
        close(value(&out, TO_ALARM), (7.1 - 1.0) / 3_600.0);
        // 5 then 0 gives 4.5, falling: the 720 h horizon.
        let mut p = pump("");
        p.on_changes(&batch(&[(0, 5.0, 0)]).view(), &Call::at(0));
        let out = p.on_changes(&batch(&[(0, 0.0, 1_000)]).view(), &Call::at(0));
        close(value(&out, EWMA), 4.5);
        close(value(&out, TO_ALARM), 720.0);
        // Ten samples warm up; the eleventh is scored.
        let mut p = pump("");
        for i in 0..10 {
            let out = p.on_changes(
                &batch(&[(0, f64::from(i % 2), i64::from(i))]).view(),
                &Call::at(0),
            );
            close(value(&out, SCORE), 0.0);
        }
        let out = p.on_changes(&batch(&[(0, 100.0, 10)]).view(), &Call::at(0));
        assert!(value(&out, SCORE) > 10.0);
    }

    #[test]
    fn bad_quality_and_non_finite_samples_are_ignored() {
        let mut p = pump("alpha = 0.5");
        p.on_changes(&batch(&[(0, 2.0, 0)]).view(), &Call::at(0));
        let mut bad = batch(&[(0, 40.0, 1_000), (0, 30.0, 2_000), (0, f64::NAN, 3_000)]);
        bad.qualities[0] = Quality::Bad;
        bad.qualities[1] = Quality::Uncertain;
        let out = p.on_changes(&bad.view(), &Call::at(0));
        close(value(&out, EWMA), 2.0);
        close(value(&out, TREND), 0.0);
        // The good NaN is ignored altogether: the latest quality is the uncertain one.
        assert_eq!(out.value(EWMA).map(|(_, q)| q), Some(Quality::Uncertain));
        let out = p.on_changes(
            &batch(&[(0, f64::INFINITY, 4_000), (7, 5.0, 4_000)]).view(),
            &Call::at(0),
        );
        close(value(&out, EWMA), 2.0);
        assert_eq!(p.assets[0].samples, 1);
    }

    #[test]
    fn outputs_per_asset_only_after_a_sample() {
        // Two pumps, their outputs bound in another order than the inputs.
        let owned: Vec<String> = ["a/m2", "a/m1"]
            .iter()
            .flat_map(|asset| OUTPUTS.map(|name| format!("{asset}/{name}")))
            .collect();
        let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
        let properties = properties(&["a/m1/vibration_rms", "a/m2/vibration_rms"], &owned, &[]);
        let mut p = VibrationHealth::new("", &properties).unwrap();
        assert!(p.on_tick(&Call::at(0)).is_empty());
        let out = p.on_changes(&batch(&[(1, 3.0, 0)]).view(), &Call::at(0));
        let indices: Vec<u32> = out.values().map(|(i, _, _)| i).collect();
        assert_eq!(indices, [0, 1, 2, 3]);
        assert_eq!(p.on_tick(&Call::at(1_000)), out);
    }

    #[test]
    fn only_the_outputs_bound_to_the_plugin_are_produced() {
        // Only the EWMA and the trend are bound to the plugin.
        let properties = properties(
            &["site/p1/vibration_rms"],
            &["site/p1/vibration_trend", "site/p1/vibration_ewma"],
            &[],
        );
        let mut p = VibrationHealth::new("alpha = 1.0\ntrend_window = 3600", &properties).unwrap();
        p.on_changes(&batch(&[(0, 1.0, 0)]).view(), &Call::at(0));
        let out = p.on_changes(&batch(&[(0, 2.0, HOUR_MS)]).view(), &Call::at(HOUR_MS));
        assert_eq!(out.len(), 2);
        close(value(&out, 0), 1.0);
        close(value(&out, 1), 2.0);
    }

    #[test]
    fn a_bad_sample_makes_the_outputs_bad_until_the_next_good_one() {
        let mut p = pump("alpha = 0.5");
        // Bad before any good sample: still nothing to say.
        let mut bad = batch(&[(0, f64::NAN, 0)]);
        bad.qualities[0] = Quality::Bad;
        assert!(p.on_changes(&bad.view(), &Call::at(0)).is_empty());
        let out = p.on_changes(&batch(&[(0, 2.0, 1_000)]).view(), &Call::at(1_000));
        assert_eq!(out.len(), 4);
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        // Bad: the statistics stay those of the good samples, and every output says bad, on
        // ticks too.
        let mut bad = batch(&[(0, 40.0, 2_000)]);
        bad.qualities[0] = Quality::Bad;
        p.on_changes(&bad.view(), &Call::at(2_000));
        let out = p.on_tick(&Call::at(3_000));
        assert_eq!(out.len(), 4);
        assert!(out.values().all(|(_, _, q)| q == Quality::Bad), "{out:?}");
        close(value(&out, EWMA), 2.0);
        // Uncertain is not as bad.
        let mut uncertain = batch(&[(0, 30.0, 4_000)]);
        uncertain.qualities[0] = Quality::Uncertain;
        let out = p.on_changes(&uncertain.view(), &Call::at(4_000));
        assert!(
            out.values().all(|(_, _, q)| q == Quality::Uncertain),
            "{out:?}"
        );
        // Good again: good outputs, the sample taken (2 → 3).
        let out = p.on_changes(&batch(&[(0, 4.0, 5_000)]).view(), &Call::at(5_000));
        assert!(out.values().all(|(_, _, q)| q == Quality::Good), "{out:?}");
        close(value(&out, EWMA), 3.0);
    }

    #[test]
    fn outputs_stay_finite() {
        let mut p = pump("alpha = 1.0\nwarmup = 0\ntrend_window = 1");
        for (i, x) in [0.0, 1e300, -1e300, f64::MAX, -f64::MAX, 0.0, 1e-300, 5.0]
            .into_iter()
            .enumerate()
        {
            // Same time, out-of-order and far-apart times too.
            let at = [
                0,
                0,
                -5,
                i64::MAX / 2,
                0,
                i64::MAX / 2 + 1,
                7,
                i64::MAX / 2 + 2,
            ][i];
            let out = p.on_changes(&batch(&[(0, x, at)]).view(), &Call::at(0));
            assert!(out.values().all(|(_, v, _)| v.is_finite()), "{out:?}");
        }
        let out = p.on_tick(&Call::at(0));
        assert_eq!(out.len(), 4);
        close(value(&out, EWMA), 5.0);
    }

    #[test]
    fn bad_settings_are_refused() {
        for config in [
            "alpha = 0.0",
            "alpha = 1.5",
            "alpha = nan",
            "alarm = -1.0",
            "alarm = inf",
            "trend_window = 0",
            "trend_window = 100000",
            "horizon = 0",
            "warmup = -1",
            "warmup = 2.5",
            "threshold = 3.0",
            "alpha = \"0.1\"",
        ] {
            assert!(
                VibrationHealth::new(config, &inputs(&[])).is_err(),
                "{config} was accepted"
            );
        }
        // Every bad setting is named.
        let error = VibrationHealth::new("alpha = 2.0\nhorizon = -1.0", &inputs(&[])).unwrap_err();
        assert!(
            error.contains("alpha") && error.contains("horizon"),
            "{error}"
        );
        // Integers are fine where numbers are expected.
        assert!(VibrationHealth::new("alarm = 11\ntrend_window = 300", &inputs(&[])).is_ok());
    }

    #[test]
    fn unknown_inputs_are_refused() {
        let error = VibrationHealth::new("", &inputs(&["site/p1/temperature"])).unwrap_err();
        assert!(error.contains("site/p1/temperature"), "{error}");
        assert!(error.contains("vibration_rms"), "{error}");
        assert!(VibrationHealth::new("", &inputs(&["vibration_rms"])).is_err());
    }
}
