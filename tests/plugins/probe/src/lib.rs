//! A plugin for the sandbox tests (`tests/plugins.rs`, `tests/opcua.rs`, `tests/cli.rs`,
//! `tests/native.rs`): one component (or native library) whose `behaviour` setting picks how it
//! misbehaves. Not shipped.
//!
//! - `sleep`: every call sleeps for a minute (`std::thread::sleep`: a WASI clock subscription and
//!   a blocking poll), as a plugin waiting on something would;
//! - `panic`: every call panics (built natively, the SDK catches it at the C boundary);
//! - `panic-above`: a call whose changes hold a value above `setpoint` panics (a fault that
//!   comes and goes with an input: `tests/webview.rs` clears the quarantine it causes);
//! - `spin`: every call loops forever (built natively, a call nothing can interrupt);
//! - `log-flood`: every call writes `lines` log lines through the `log` import, each with a line
//!   feed that would forge a second log line, and as many to stdout; owned 0 counts the calls;
//! - `quality`: sets owned 0 to 1.0 and owned 1 to 2.0, good on the first call; from the second
//!   on, owned 0 with quality bad (it keeps its value) and owned 1 with quality uncertain;
//! - `propose`: every tick proposes `setpoint` to writable 0 and 1.0 to the index just past the
//!   writable list; owned 0 counts the outcomes `written` received, owned 1 the outcomes
//!   `refused("writable-list")`, owned 2 is the code of the last other outcome: 0 none,
//!   1 `shadow`, 2 `disarmed`, 3 `refused("mode-off")`, 4 another refusal, 5 anything else;
//! - `storm`: every tick proposes 1, 2, 3, … (one more each tick) to writable 0;
//! - `flood`: every tick proposes `lines` values (0, 1, 2, …) to writable 0;
//! - `determinism`: on every call, owned 0 is a hash of a `HashMap`'s iteration order (seeded from
//!   the WASI random source), owned 1 the wall clock (`SystemTime::now`, ms since the epoch) and
//!   owned 2 the monotonic clock (`Instant`, ms since `init`), so a test can see that both answer
//!   the call's time and that the same instance name gives the same order.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use twinloom_plugin::{
    Call, ChangeBatch, Level, Outcome, Outputs, Plugin, Properties, Quality, Setpoint, log,
};

/// Settings (`config` table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    behaviour: String,
    #[serde(default = "default_lines")]
    lines: u32,
    #[serde(default)]
    setpoint: f64,
}

fn default_lines() -> u32 {
    10_000
}

/// The probe's state.
#[derive(Debug)]
pub struct Probe {
    settings: Settings,
    writable: u32,
    calls: u32,
    /// Outcomes received: written, refused for the writable list.
    outcomes: [u32; 2],
    /// The code of the last other outcome.
    other: u32,
    /// Proposals made by `storm`.
    storm: u32,
    started: Instant,
    order: HashMap<String, u32>,
}

impl Probe {
    fn act(&mut self, call: &Call, tick: bool) -> Outputs {
        self.calls += 1;
        for outcome in &call.outcomes {
            match &outcome.outcome {
                Outcome::Written => self.outcomes[0] += 1,
                Outcome::Refused(rule) if rule == "writable-list" => self.outcomes[1] += 1,
                Outcome::Shadow => self.other = 1,
                Outcome::Disarmed => self.other = 2,
                Outcome::Refused(rule) if rule == "mode-off" => self.other = 3,
                Outcome::Refused(_) => self.other = 4,
                _ => self.other = 5,
            }
        }
        let mut out = Outputs::new();
        match self.settings.behaviour.as_str() {
            "sleep" => std::thread::sleep(Duration::from_secs(60)),
            "panic" => panic!("the probe panics on purpose (call {})", self.calls),
            "spin" => loop {
                std::hint::spin_loop();
            },
            "log-flood" => {
                for i in 0..self.settings.lines {
                    log(
                        Level::Info,
                        &format!("probe line {i}\nERROR twinloom: forged"),
                    );
                    println!("probe stdout {i}");
                }
                out.set(0, f64::from(self.calls));
            }
            "quality" if self.calls == 1 => {
                out.set(0, 1.0);
                out.set(1, 2.0);
            }
            "quality" => {
                out.set_with_quality(0, 1.0, Quality::Bad);
                out.set_with_quality(1, 2.0, Quality::Uncertain);
            }
            "propose" if tick => {
                out.propose(0, Setpoint::Float(self.settings.setpoint), "probe");
                out.propose(self.writable, Setpoint::Float(1.0), "out of the list");
                out.set(0, f64::from(self.outcomes[0]));
                out.set(1, f64::from(self.outcomes[1]));
                out.set(2, f64::from(self.other));
            }
            "flood" if tick => {
                for i in 0..self.settings.lines {
                    out.propose(0, Setpoint::Float(f64::from(i)), "");
                }
            }
            "storm" if tick => {
                self.storm += 1;
                out.propose(0, Setpoint::Float(f64::from(self.storm)), "storm");
            }
            "determinism" => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                for key in self.order.keys() {
                    key.hash(&mut hasher);
                }
                let random = std::collections::hash_map::RandomState::new().hash_one(7u8);
                out.set(0, ((hasher.finish() ^ random) >> 12) as f64);
                let wall = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                out.set(1, wall as f64);
                out.set(2, self.started.elapsed().as_millis() as f64);
            }
            _ => {}
        }
        out
    }
}

impl Plugin for Probe {
    fn init(config: &str, properties: Properties) -> Result<Self, String> {
        let settings: Settings = toml::from_str(config).map_err(|e| format!("bad config: {e}"))?;
        let order = (0..64).map(|i| (format!("key{i}"), i)).collect();
        Ok(Self {
            settings,
            writable: properties.writable.len() as u32,
            calls: 0,
            outcomes: [0; 2],
            other: 0,
            storm: 0,
            started: Instant::now(),
            order,
        })
    }

    fn on_changes(&mut self, batch: &ChangeBatch<'_>, call: &Call) -> Outputs {
        if self.settings.behaviour == "panic-above"
            && batch.values.iter().any(|&v| v > self.settings.setpoint)
        {
            panic!(
                "the probe panics on purpose: an input above {}",
                self.settings.setpoint
            );
        }
        self.act(call, false)
    }

    fn on_tick(&mut self, call: &Call) -> Outputs {
        self.act(call, true)
    }
}

twinloom_plugin::export_plugin!(Probe);
