//! Plugins against the running daemon: derived values reach the twin; a trapping plugin is
//! restarted then quarantined; an endless loop is cut at its deadline; the daemon, its sources and
//! the other plugins keep working throughout. The components are hand-written WAT (see
//! `daemon/src/plugins/testdata/template.wat`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, metric, property, start, wait_for};
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::modbus::SimDevice;

const WAIT: Duration = Duration::from_secs(10);

fn template() -> String {
    std::fs::read_to_string(common::repo().join("daemon/src/plugins/testdata/template.wat"))
        .unwrap()
        .replace("{{INIT}}", "")
}

/// A component that answers every call with one derived value: `value`, good, for the first
/// property it owns (owned index 0).
fn deriving(value: f64) -> String {
    let bytes = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
    // The outputs record: three one-element columns at 128 (index 0), 136 (value), 144
    // (quality good), no proposals and no reasons.
    let mut outputs = Vec::new();
    for ptr in [128u32, 136, 144] {
        outputs.extend(ptr.to_le_bytes());
        outputs.extend(1u32.to_le_bytes());
    }
    outputs.extend([0u8; 16]);
    let data = format!(
        "(data (i32.const 64) \"{}\") (data (i32.const 136) \"{}\")",
        bytes(&outputs),
        bytes(&value.to_le_bytes())
    );
    template()
        .replace("{{DATA}}", &data)
        .replace("{{CHANGES}}", "")
        .replace("{{TICK}}", "")
}

fn misbehaving(changes: &str, tick: &str) -> String {
    template()
        .replace("{{DATA}}", "")
        .replace("{{CHANGES}}", changes)
        .replace("{{TICK}}", tick)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_derive_values_and_their_faults_stay_contained() {
    let device = SimDevice::new();
    device.set_holding(0, &[7]);
    let server = common::modbus_tcp(&device).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.wat"), deriving(42.0)).unwrap();
    std::fs::write(dir.path().join("trap.wat"), misbehaving("", "unreachable")).unwrap();
    std::fs::write(
        dir.path().join("loop.wat"),
        misbehaving("(loop $l (br $l))", ""),
    )
    .unwrap();
    let mut config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "50ms"

[[types]]
name = "Machine"
properties = [
  {{ name = "count", data_type = "unsigned" }},
  {{ name = "derived", data_type = "float", unit = "P1" }},
]

[[assets]]
path = "site/m1"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.derived = {{ plugin = "good" }}

[[assets]]
path = "site/m2"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.derived = {{ plugin = "trap" }}

[[assets]]
path = "site/m3"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.derived = {{ plugin = "loop" }}

[[plugins]]
name = "good"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{dir}/good.wat"
subscribe = [{{ assets = "site/*", properties = ["count"] }}]
min_interval = "20ms"
tick = "20ms"

[[plugins]]
name = "trap"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{dir}/trap.wat"
tick = "20ms"
quarantine_after = 3

[[plugins]]
name = "loop"
file = "{dir}/loop.wat"
subscribe = [{{ assets = "site/m3", properties = ["count"] }}]
deadline = "50ms"
min_interval = "20ms"
"#,
        addr = server.addr(),
        dir = dir.path().display(),
    ));
    config.file = dir.path().join("twinloom.toml");
    let handles = start(&config).await;
    let metrics = || handles.metrics.encode();

    // The good plugin's derived value reaches the twin.
    let derived = property(&handles, "site/m1/derived");
    let sample = wait_for(&handles, derived, WAIT, |s| {
        s.value == Some(Value::Float(42.0))
    })
    .await;
    assert!(sample.quality.is_good());

    // The trapping plugin is restarted, then quarantined; its output is bad.
    common::eventually(
        WAIT,
        || metric(&metrics(), r#"twinloom_plugin_quarantined{plugin="trap"}"#) == 1.0,
        || format!("never quarantined:\n{}", metrics()),
    )
    .await;
    let text = metrics();
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_failures_total{plugin="trap",kind="trap"}"#
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, r#"twinloom_plugin_restarts_total{plugin="trap"}"#),
        2.0,
        "{text}"
    );
    let trapped = property(&handles, "site/m2/derived");
    assert_eq!(
        handles.twin.sample(trapped).quality,
        Quality::bad(QualityReason::PluginFailure)
    );

    // The endless loop is cut at its deadline at every new input, while everything else goes on.
    let looping = property(&handles, "site/m3/derived");
    wait_for(&handles, looping, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::PluginFailure)
    })
    .await;
    let good_calls = metric(&metrics(), r#"twinloom_plugin_calls_total{plugin="good"}"#);
    device.set_holding(0, &[8]);
    let count = property(&handles, "site/m1/count");
    wait_for(&handles, count, WAIT, |s| s.value == Some(Value::UInt(8))).await;
    common::eventually(
        WAIT,
        || {
            metric(
                &metrics(),
                r#"twinloom_plugin_failures_total{plugin="loop",kind="deadline"}"#,
            ) >= 2.0
        },
        || format!("loop not interrupted again:\n{}", metrics()),
    )
    .await;
    common::eventually(
        WAIT,
        || metric(&metrics(), r#"twinloom_plugin_calls_total{plugin="good"}"#) >= good_calls + 5.0,
        || "the good plugin stalled".to_string(),
    )
    .await;
    assert!(handles.twin.sample(derived).quality.is_good());
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Builds the plugin crate `plugins/<name>` as a WebAssembly component (wasm32-wasip2, added
/// when missing) with the daemon's own `plugin build`, and returns its path.
async fn built(name: &str) -> std::path::PathBuf {
    built_at(&format!("plugins/{name}")).await
}

/// Builds the plugin crate at `dir` (relative to the repository) like [`built`].
async fn built_at(dir: &str) -> std::path::PathBuf {
    let name = dir.to_owned();
    let dir = common::repo().join(dir);
    let target = common::repo().join("target/wasm");
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(target),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building {name}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oee_component_computes_from_live_modbus_values() {
    let component = built("oee").await;
    let device = SimDevice::new();
    device.set_holding(0, &[1, 900, 40]); // running; 900 good; 40 rejects
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Filler"
properties = [
  {{ name = "state", data_type = "integer" }},
  {{ name = "good_count", data_type = "unsigned", unit = "pcs" }},
  {{ name = "reject_count", data_type = "unsigned", unit = "pcs" }},
  {{ name = "availability", data_type = "float", unit = "%" }},
  {{ name = "performance", data_type = "float", unit = "%" }},
  {{ name = "quality", data_type = "float", unit = "%" }},
  {{ name = "oee", data_type = "float", unit = "%" }},
]

[[assets]]
path = "line1/filler"
type = "Filler"
source = "plc"
[assets.bindings]
state = {{ table = "holding", address = 0 }}
good_count = {{ table = "holding", address = 1 }}
reject_count = {{ table = "holding", address = 2 }}
availability = {{ plugin = "oee" }}
performance = {{ plugin = "oee" }}
quality = {{ plugin = "oee" }}
oee = {{ plugin = "oee" }}

[[plugins]]
name = "oee"
file = "{file}"
subscribe = [{{ assets = "line1/*", properties = ["state", "good_count", "reject_count"] }}]
min_interval = "20ms"
tick = "50ms"
deadline = "10s"
config = {{ ideal_rate = 600.0 }}
"#,
        addr = server.addr(),
        file = component.display(),
    ));
    let handles = start(&config).await;
    let quality = property(&handles, "line1/filler/quality");
    let availability = property(&handles, "line1/filler/availability");
    // The plugin's own first output (no pieces yet: quality 100 %) proves that its baseline is
    // 900 good and 40 rejects; only then do the counters move on: 95 good, 5 rejects more.
    wait_for(&handles, quality, WAIT, |s| {
        s.quality.is_good()
            && s.value
                .as_ref()
                .and_then(Value::as_f64)
                .is_some_and(|v| v == 100.0)
    })
    .await;
    device.set_holding(1, &[995, 45]);
    let q = wait_for(&handles, quality, WAIT, |s| {
        s.value
            .as_ref()
            .and_then(Value::as_f64)
            .is_some_and(|v| (v - 95.0).abs() < 1e-6)
    })
    .await;
    assert!(q.quality.is_good());
    let a = handles
        .twin
        .sample(availability)
        .value
        .and_then(|v| v.as_f64())
        .unwrap();
    assert!((99.0..=100.0).contains(&a), "running the whole time: {a}");
    let oee = property(&handles, "line1/filler/oee");
    assert!(handles.twin.sample(oee).quality.is_good());
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Replaces `file` the way deployment tools do: write a temporary file, rename it over.
fn replace(file: &std::path::Path, contents: &str) {
    let temporary = file.with_extension("part");
    std::fs::write(&temporary, contents).unwrap();
    std::fs::rename(&temporary, file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_plugin_file_is_swapped_in_and_a_broken_one_leaves_the_old_running() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.wasm");
    replace(&file, &deriving(1.0));
    std::fs::write(dir.path().join("q.wasm"), misbehaving("", "unreachable")).unwrap();
    let config = config(&format!(
        r#"
[[types]]
name = "Machine"
properties = [{{ name = "derived", data_type = "float" }}, {{ name = "other", data_type = "float" }}]

[[assets]]
path = "site/m"
type = "Machine"
bindings.derived = {{ plugin = "p" }}
bindings.other = {{ plugin = "q" }}

[[plugins]]
name = "p"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{dir}/p.wasm"
tick = "20ms"

[[plugins]]
name = "q"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{dir}/q.wasm"
tick = "20ms"
quarantine_after = 2
"#,
        dir = dir.path().display()
    ));
    let mut daemon = twinloom::app::Daemon::start(config.clone()).await.unwrap();
    let handles = daemon.handles.clone();
    let metrics = || handles.metrics.encode();
    let derived = property(&handles, "site/m/derived");
    let is = |want: f64| move |s: &twinloom::twin::Sample| s.value == Some(Value::Float(want));
    wait_for(&handles, derived, WAIT, is(1.0)).await;

    // A new version: compiled off the call path, initialised, swapped in.
    replace(&file, &deriving(2.0));
    let sample = wait_for(&handles, derived, WAIT, is(2.0)).await;
    assert!(sample.quality.is_good());
    let swapped = r#"twinloom_plugin_reloads_total{plugin="p",outcome="swapped"}"#;
    assert_eq!(metric(&metrics(), swapped), 1.0);

    // Not a component, then a component whose init traps: both refused, the old one runs on.
    let refused = r#"twinloom_plugin_reloads_total{plugin="p",outcome="refused"}"#;
    let init_traps =
        std::fs::read_to_string(common::repo().join("daemon/src/plugins/testdata/template.wat"))
            .unwrap()
            .replace("{{INIT}}", "unreachable")
            .replace("{{DATA}}", "")
            .replace("{{CHANGES}}", "")
            .replace("{{TICK}}", "");
    for (round, broken) in ["not a component", init_traps.as_str()].iter().enumerate() {
        replace(&file, broken);
        let want = round as f64 + 1.0;
        common::eventually(
            WAIT,
            || metric(&metrics(), refused) == want,
            || format!("reload {round} not refused:\n{}", metrics()),
        )
        .await;
        let calls = metric(&metrics(), r#"twinloom_plugin_calls_total{plugin="p"}"#);
        common::eventually(
            WAIT,
            || metric(&metrics(), r#"twinloom_plugin_calls_total{plugin="p"}"#) >= calls + 5.0,
            || "the old version stopped".to_string(),
        )
        .await;
        let sample = handles.twin.sample(derived);
        assert_eq!(sample.value, Some(Value::Float(2.0)));
        assert!(sample.quality.is_good(), "{sample:?}");
        assert_eq!(metric(&metrics(), swapped), 1.0);
    }

    // SIGHUP (a reload with the same configuration) lets a quarantined plugin try again.
    let quarantined = r#"twinloom_plugin_quarantined{plugin="q"}"#;
    common::eventually(
        WAIT,
        || metric(&metrics(), quarantined) == 1.0,
        || format!("q never quarantined:\n{}", metrics()),
    )
    .await;
    let failures = r#"twinloom_plugin_failures_total{plugin="q",kind="trap"}"#;
    assert_eq!(metric(&metrics(), failures), 2.0);
    let outcome = daemon.apply(config).await.unwrap();
    assert_eq!(
        outcome,
        twinloom::app::Reloaded::PluginsReloaded(vec!["q".into()])
    );
    common::eventually(
        WAIT,
        || metric(&metrics(), failures) == 4.0 && metric(&metrics(), quarantined) == 1.0,
        || format!("q did not run and fail again:\n{}", metrics()),
    )
    .await;
    daemon
        .handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// The two registers of an f32 in the default (ABCD, big-endian) order.
fn f32_words(value: f32) -> [u16; 2] {
    let bits = value.to_bits();
    [(bits >> 16) as u16, bits as u16]
}

fn float(handles: &twinloom::app::Handles, path: &str) -> Option<f64> {
    let sample = handles.twin.sample(property(handles, path));
    sample
        .value
        .as_ref()
        .and_then(Value::as_f64)
        .filter(|_| sample.quality.is_good())
}

/// The cold-chain component on a vaccine fridge over real Modbus: in the band it says ok with
/// the MKT of what it saw; out of it an excursion, and the alarm once the excursion has lasted
/// `alarm_delay`; the door contact's open time adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cold_chain_component_times_an_excursion_and_raises_the_alarm() {
    let component = built("cold-chain").await;
    let device = SimDevice::new();
    device.set_input(0, &[500]); // 5.00 °C
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Fridge"
properties = [
  {{ name = "temperature", data_type = "float", unit = "°C" }},
  {{ name = "door_open", data_type = "bool" }},
  {{ name = "time_above", data_type = "float", unit = "s" }},
  {{ name = "excursion_time", data_type = "float", unit = "s" }},
  {{ name = "excursion_state", data_type = "float" }},
  {{ name = "mkt", data_type = "float", unit = "°C" }},
  {{ name = "door_open_time", data_type = "float", unit = "s" }},
]

[[assets]]
path = "ward/fridge1"
type = "Fridge"
source = "plc"
[assets.bindings]
temperature = {{ table = "input", address = 0, encoding = "i16", scale = 0.01 }}
door_open = {{ table = "discrete", address = 0 }}
time_above = {{ plugin = "cold-chain" }}
excursion_time = {{ plugin = "cold-chain" }}
excursion_state = {{ plugin = "cold-chain" }}
mkt = {{ plugin = "cold-chain" }}
door_open_time = {{ plugin = "cold-chain" }}

[[plugins]]
name = "cold-chain"
deadline = "10s"
file = "{file}"
subscribe = [{{ assets = "ward/*", properties = ["temperature", "door_open"] }}]
min_interval = "10ms"
tick = "50ms"
config = {{ low = 2.0, high = 8.0, alarm_delay = 1, alarm_cumulative = 3600 }}
"#,
        addr = server.addr(),
        file = component.display(),
    ));
    let handles = start(&config).await;
    let value_is = |path: &'static str, wanted: fn(f64) -> bool| {
        let handles = &handles;
        async move {
            common::eventually(
                WAIT,
                || float(handles, path).is_some_and(wanted),
                || format!("{path}: {:?}", float(handles, path)),
            )
            .await;
        }
    };
    value_is("ward/fridge1/mkt", |mkt| (mkt - 5.0).abs() < 1e-9).await;
    value_is("ward/fridge1/excursion_state", |state| state == 0.0).await;
    // 9.5 °C: an excursion, then after a second of it the alarm; its time adds up above 8 °C.
    device.set_input(0, &[950]);
    value_is("ward/fridge1/excursion_state", |state| state == 1.0).await;
    value_is("ward/fridge1/excursion_state", |state| state == 2.0).await;
    value_is("ward/fridge1/time_above", |seconds| seconds >= 1.0).await;
    value_is("ward/fridge1/mkt", |mkt| mkt > 5.0).await;
    // Back to 5 °C: ok again, the excursion over.
    device.set_input(0, &[500]);
    value_is("ward/fridge1/excursion_state", |state| state == 0.0).await;
    value_is("ward/fridge1/excursion_time", |seconds| seconds == 0.0).await;
    // The door opens: its open time grows.
    device.set_discrete(0, true);
    value_is("ward/fridge1/door_open_time", |seconds| seconds > 0.2).await;
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vibration_health_component_flags_a_jump_and_predicts_the_alarm() {
    let component = built("vibration-health").await;
    let device = SimDevice::new();
    device.set_holding(0, &f32_words(2.0));
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Pump"
properties = [
  {{ name = "vibration_rms", data_type = "float", unit = "mm/s" }},
  {{ name = "vibration_ewma", data_type = "float", unit = "mm/s" }},
  {{ name = "anomaly_score", data_type = "float" }},
  {{ name = "vibration_trend", data_type = "float" }},
  {{ name = "time_to_alarm", data_type = "float", unit = "h" }},
]

[[assets]]
path = "site/pump1"
type = "Pump"
source = "plc"
[assets.bindings]
vibration_rms = {{ table = "holding", address = 0, encoding = "f32" }}
vibration_ewma = {{ plugin = "health" }}
anomaly_score = {{ plugin = "health" }}
vibration_trend = {{ plugin = "health" }}
time_to_alarm = {{ plugin = "health" }}

[[plugins]]
name = "health"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{file}"
subscribe = [{{ assets = "site/*", properties = ["vibration_rms"] }}]
min_interval = "10ms"
config = {{ alpha = 0.2, warmup = 5, alarm = 7.1, horizon = 720.0 }}
"#,
        addr = server.addr(),
        file = component.display(),
    ));
    let handles = start(&config).await;
    let rms = property(&handles, "site/pump1/vibration_rms");
    // A healthy pump: 2.0 and 2.2 mm/s by turns, each value a change in the twin (the plugin
    // gets every change, in order).
    for i in 0..12 {
        let value = if i % 2 == 0 { 2.2 } else { 2.0 };
        device.set_holding(0, &f32_words(value));
        wait_for(&handles, rms, WAIT, |s| {
            s.value
                .as_ref()
                .and_then(Value::as_f64)
                .is_some_and(|v| (v - f64::from(value)).abs() < 1e-6)
        })
        .await;
    }
    common::eventually(
        WAIT,
        || float(&handles, "site/pump1/vibration_ewma").is_some_and(|e| (2.0..=2.2).contains(&e)),
        || format!("{:?}", float(&handles, "site/pump1/vibration_ewma")),
    )
    .await;
    let quiet = float(&handles, "site/pump1/anomaly_score").unwrap();
    assert!(quiet.abs() < 3.0, "healthy samples score low: {quiet}");
    // A bearing starts to fail: 6 mm/s is far outside what the pump did.
    device.set_holding(0, &f32_words(6.0));
    common::eventually(
        WAIT,
        || float(&handles, "site/pump1/anomaly_score").is_some_and(|z| z > 10.0),
        || {
            format!(
                "no anomaly: {:?}",
                float(&handles, "site/pump1/anomaly_score")
            )
        },
    )
    .await;
    // The average climbs, so the trend is up and the alarm is predicted within the horizon.
    let trend = float(&handles, "site/pump1/vibration_trend").unwrap();
    assert!(trend > 0.0, "{trend}");
    let hours = float(&handles, "site/pump1/time_to_alarm").unwrap();
    assert!(hours > 0.0 && hours < 720.0, "{hours}");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_energy_component_integrates_power_and_divides_by_production() {
    let component = built("energy").await;
    let meter = SimDevice::new();
    meter.set_holding(0, &f32_words(120.0));
    meter.set_holding(2, &[1000]);
    let server = common::modbus_tcp(&meter).await;
    let config = config(&format!(
        r#"
# A stale blip of `power` (a late poll on a loaded machine) would restart the integration.
[twin]
stale_after_polls = 1000

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Meter"
properties = [
  {{ name = "power", data_type = "float", unit = "kW" }},
  {{ name = "energy_integrated", data_type = "float", unit = "kWh" }},
  {{ name = "demand", data_type = "float", unit = "kW" }},
  {{ name = "peak_demand", data_type = "float", unit = "kW" }},
  {{ name = "energy_per_unit", data_type = "float" }},
]

[[types]]
name = "Filler"
properties = [{{ name = "good_count", data_type = "unsigned", unit = "pcs" }}]

[[assets]]
path = "site/meter"
type = "Meter"
source = "plc"
[assets.bindings]
power = {{ table = "holding", address = 0, encoding = "f32" }}
energy_integrated = {{ plugin = "energy" }}
demand = {{ plugin = "energy" }}
peak_demand = {{ plugin = "energy" }}
energy_per_unit = {{ plugin = "energy" }}

[[assets]]
path = "site/filler"
type = "Filler"
source = "plc"
bindings.good_count = {{ table = "holding", address = 2 }}

[[plugins]]
name = "energy"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{file}"
subscribe = [
  {{ assets = "site/meter", properties = ["power"] }},
  {{ assets = "site/filler", properties = ["good_count"] }},
]
min_interval = "10ms"
tick = "50ms"
config = {{ demand_interval = 3600, max_gap = 10 }}
"#,
        addr = server.addr(),
        file = component.display(),
    ));
    let started = std::time::Instant::now();
    let handles = start(&config).await;
    // A steady 120 kW: the interval's average demand is exactly that.
    common::eventually(
        WAIT,
        || float(&handles, "site/meter/demand").is_some_and(|d| (d - 120.0).abs() < 1e-6),
        || format!("demand {:?}", float(&handles, "site/meter/demand")),
    )
    .await;
    // 1 000 → 1 010 good pieces.
    meter.set_holding(2, &[1010]);
    common::eventually(
        WAIT,
        || float(&handles, "site/meter/energy_per_unit").is_some(),
        || "no energy per unit".to_string(),
    )
    .await;
    let per_unit = float(&handles, "site/meter/energy_per_unit").unwrap();
    let energy = float(&handles, "site/meter/energy_integrated").unwrap();
    // Energy is 120 kW over at most the time since the start; per unit, at most all of it / 10.
    let bound = 120.0 * started.elapsed().as_secs_f64() / 3600.0;
    assert!(
        energy > 0.0 && energy <= bound,
        "{energy} kWh, bound {bound}"
    );
    assert!(
        per_unit > 0.0 && per_unit <= energy / 10.0 + 1e-12,
        "{per_unit} kWh/pcs of {energy} kWh"
    );
    let peak = float(&handles, "site/meter/peak_demand").unwrap();
    assert!((peak - 120.0).abs() < 1e-6, "{peak}");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Log lines written by the daemon in this test process.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_new_makes_a_crate_that_plugin_build_turns_into_a_running_component() {
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("tank-smoother");
    let bin = env!("CARGO_BIN_EXE_twinloom");
    let created = std::process::Command::new(bin)
        .args(["plugin", "new", "tank-smoother", "--path"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    assert!(crate_dir.join("src/lib.rs").is_file());
    // Building it again at the same place is refused: nothing is overwritten.
    let again = std::process::Command::new(bin)
        .args(["plugin", "new", "tank-smoother", "--path"])
        .arg(&crate_dir)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    let build = crate_dir.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["plugin", "build"])
            .arg(&build)
            .arg("--target-dir")
            .arg(common::repo().join("target/wasm"))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let component = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(component.ends_with("tank_smoother.wasm"), "{component}");

    let tank = SimDevice::new();
    tank.set_holding(0, &[100]);
    let server = common::modbus_tcp(&tank).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Tank"
properties = [
  {{ name = "level", data_type = "float", unit = "%" }},
  {{ name = "level_smoothed", data_type = "float", unit = "%" }},
]

[[assets]]
path = "plant/tank1"
type = "Tank"
source = "plc"
bindings.level = {{ table = "holding", address = 0, scale = 0.1 }}
bindings.level_smoothed = {{ plugin = "tank-smoother" }}

[[plugins]]
name = "tank-smoother"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{component}"
subscribe = [{{ assets = "plant/*", properties = ["level"] }}]
min_interval = "10ms"
config = {{ alpha = 0.5 }}
"#,
        addr = server.addr(),
    ));
    let handles = start(&config).await;
    let smoothed = property(&handles, "plant/tank1/level_smoothed");
    let is = |want: f64| {
        move |s: &twinloom::twin::Sample| {
            s.value
                .as_ref()
                .and_then(Value::as_f64)
                .is_some_and(|v| (v - want).abs() < 1e-9)
        }
    };
    // The first value is taken as it is; then halfway to each new one (alpha 0.5).
    wait_for(&handles, smoothed, WAIT, is(10.0)).await;
    tank.set_holding(0, &[200]);
    wait_for(&handles, smoothed, WAIT, is(15.0)).await;
    // The template's println! reached the daemon's log, tagged with the plugin.
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("tank-smoother starts with 1 inputs"))
        .unwrap_or_else(|| panic!("no stdout line in the log:\n{text}"));
    assert!(
        line.contains("plugin=\"tank-smoother\"") && line.contains("stdout"),
        "{line}"
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// The toolchain fallback for machines where `rustup target add` cannot download: Debian's Rust
/// with its library source builds std for `wasm32-unknown-unknown`, and `plugin build` makes the
/// module a component. That component loads in the host and computes exactly what the
/// `wasm32-wasip2` build of the same crate computes. (`tests/run.sh` installs Debian's
/// `rustc-web`, `cargo-web` and `rust-web-src` for this test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_build_std_fallback_makes_a_component_that_computes_like_the_wasip2_build() {
    use std::sync::Arc;
    use twinloom::plugins::build::{BuildOptions, Toolchain, build};
    use twinloom::plugins::contract::{
        ChangeBatch, Limits, Properties, ProposalOutcome, Quality, quality_byte,
    };
    use twinloom::plugins::wasm::WasmHost;

    let wasip2 = built("vibration-health").await;
    let options = BuildOptions {
        target_dir: Some(common::repo().join("target/wasm")),
        toolchain: Toolchain::BuildStd,
        out: None,
        native: false,
    };
    let dir = common::repo().join("plugins/vibration-health");
    let fallback = tokio::task::spawn_blocking(move || build(&dir, &options))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("build-std fallback (tests/run.sh installs it): {e:#}"));
    assert!(
        fallback
            .ends_with("wasm32-unknown-unknown/release/twinloom_vibration_health.component.wasm"),
        "{}",
        fallback.display()
    );

    let host = WasmHost::new(false).unwrap();
    let properties = Properties {
        inputs: (1..=2)
            .map(|i| format!("site/pump{i}/vibration_rms"))
            .collect(),
        owned: (1..=2)
            .flat_map(|i| {
                [
                    "vibration_ewma",
                    "anomaly_score",
                    "vibration_trend",
                    "time_to_alarm",
                ]
                .map(|name| format!("site/pump{i}/{name}"))
            })
            .collect(),
        writable: Vec::new(),
    };
    let none: Arc<[ProposalOutcome]> = Arc::from(Vec::new());
    // With `not_good`, every batch also carries a bad and an uncertain sample of 1000 mm/s,
    // whose values the plugin must ignore and whose qualities its outputs must carry: the
    // quality bytes cross the boundary intact.
    let run = |file: &std::path::Path, not_good: bool| {
        let component = host.compile(&std::fs::read(file).unwrap()).unwrap();
        let mut instance = host
            .instantiate("vibration", &component, Limits::default())
            .unwrap();
        instance
            .init(0, "alpha = 0.2\nwarmup = 3", &properties)
            .unwrap()
            .unwrap();
        let (mut seen, mut qualities) = (Vec::new(), Vec::new());
        for step in 0..20_i64 {
            let at = 1_700_000_000_000 + 1_000 * step;
            let mut batch = ChangeBatch {
                properties: vec![0, 1],
                values: vec![2.0 + 0.1 * (step % 3) as f64, 1.0 + 0.25 * step as f64],
                qualities: vec![quality_byte(Quality::Good); 2],
                source_times_ms: vec![at; 2],
            };
            if not_good {
                batch.properties.extend([0, 1]);
                batch.values.extend([1000.0, 1000.0]);
                batch
                    .qualities
                    .extend([quality_byte(Quality::Bad), quality_byte(Quality::Uncertain)]);
                batch.source_times_ms.extend([at; 2]);
            }
            let outputs = instance.on_changes(at, &Arc::new(batch), &none).unwrap();
            let values = outputs.values;
            seen.extend(
                values
                    .indices
                    .iter()
                    .zip(&values.values)
                    .map(|(index, value)| {
                        (properties.owned[*index as usize].clone(), value.to_bits())
                    }),
            );
            qualities.extend(values.indices.iter().copied().zip(values.qualities));
        }
        (seen, qualities)
    };
    let (expected, good) = run(&wasip2, false);
    // Four outputs per pump per call; pump 2's rising vibration has a positive trend.
    assert_eq!(expected.len(), 20 * 2 * 4);
    assert!(expected.iter().any(|(property, bits)| {
        property == "site/pump2/vibration_trend" && f64::from_bits(*bits) > 0.0
    }));
    assert!(good.iter().all(|(_, q)| *q == quality_byte(Quality::Good)));
    // Pump 1's last sample in each batch is bad, pump 2's uncertain: so are their outputs.
    let (values, qualities) = run(&wasip2, true);
    assert_eq!(values, expected);
    let pump = |index: u32| {
        if index < 4 {
            Quality::Bad
        } else {
            Quality::Uncertain
        }
    };
    assert!(
        qualities
            .iter()
            .all(|(index, q)| *q == quality_byte(pump(*index))),
        "{qualities:?}"
    );
    assert_eq!(run(&fallback, false), (expected.clone(), good));
    assert_eq!(run(&fallback, true).0, expected);
}

/// The `[[plugins]]` stanza of a plugin `name` running the probe `file` that controls
/// `site/heater/setpoint` with probe `config` (a generous deadline: a loaded machine must not
/// turn a slow call into a fault).
fn controller_stanza(name: &str, file: &std::path::Path, config: &str) -> String {
    format!(
        r#"
[[plugins]]
name = "{name}"
file = "{file}"
deadline = "10s"
tick = "50ms"
writes = ["site/heater/setpoint"]
config = {config}
"#,
        file = file.display()
    )
}

/// The probe plugin (`tests/plugins/probe`): one component that misbehaves as its `behaviour`
/// setting says.
async fn probe() -> std::path::PathBuf {
    built_at("tests/plugins/probe").await
}

/// A plugin that blocks in a WASI call (`std::thread::sleep`) is stopped by a typed fault at
/// once, not when its sleep ends: a direct call, then in the daemon, where it is restarted,
/// quarantined after `quarantine_after` faults while another plugin keeps computing, and the
/// daemon shuts down without waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sleeping_plugin_is_cut_off_quarantined_and_never_holds_up_shutdown() {
    use std::sync::Arc;
    use twinloom::plugins::contract::{Limits, PluginError, Properties};
    use twinloom::plugins::wasm::WasmHost;

    let file = probe().await;
    let host = WasmHost::new(false).unwrap();
    let component = host.compile(&std::fs::read(&file).unwrap()).unwrap();
    let deadline = Duration::from_millis(200);
    let limits = Limits {
        deadline,
        ..Limits::default()
    };
    let mut instance = host.instantiate("sleeper", &component, limits).unwrap();
    let properties = Properties {
        inputs: Vec::new(),
        owned: Vec::new(),
        writable: Vec::new(),
    };
    instance
        .init(0, "behaviour = \"sleep\"", &properties)
        .unwrap()
        .unwrap();
    let started = std::time::Instant::now();
    let error = instance.on_tick(1, &Arc::from(Vec::new())).unwrap_err();
    assert!(matches!(error, PluginError::Blocked(_)), "{error}");
    assert!(started.elapsed() < 2 * deadline, "{:?}", started.elapsed());

    let device = SimDevice::new();
    device.set_holding(0, &[7]);
    let server = common::modbus_tcp(&device).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.wat"), deriving(42.0)).unwrap();
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "50ms"

[[types]]
name = "Machine"
properties = [
  {{ name = "count", data_type = "unsigned" }},
  {{ name = "derived", data_type = "float" }},
]

[[assets]]
path = "site/m1"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.derived = {{ plugin = "good" }}

[[assets]]
path = "site/m2"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.derived = {{ plugin = "sleeper" }}

[[plugins]]
name = "good"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
file = "{dir}/good.wat"
tick = "20ms"

[[plugins]]
name = "sleeper"
file = "{file}"
deadline = "200ms"
tick = "20ms"
quarantine_after = 3
config = {{ behaviour = "sleep" }}
"#,
        addr = server.addr(),
        dir = dir.path().display(),
        file = file.display(),
    ));
    let handles = start(&config).await;
    let quarantined = r#"twinloom_plugin_quarantined{plugin="sleeper"}"#;
    common::eventually(
        Duration::from_secs(30),
        || metric(&handles.metrics.encode(), quarantined) == 1.0,
        || handles.metrics.encode(),
    )
    .await;
    let text = handles.metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_failures_total{plugin="sleeper",kind="blocked"}"#
        ),
        3.0,
        "{text}"
    );
    let derived = property(&handles, "site/m2/derived");
    assert_eq!(
        handles.twin.sample(derived).quality,
        Quality::bad(QualityReason::PluginFailure)
    );
    // The other plugin keeps computing after the quarantine.
    let calls = r#"twinloom_plugin_calls_total{plugin="good"}"#;
    let before = metric(&handles.metrics.encode(), calls);
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), calls) >= before + 5.0,
        || handles.metrics.encode(),
    )
    .await;
    let good = property(&handles, "site/m1/derived");
    assert_eq!(handles.twin.sample(good).value, Some(Value::Float(42.0)));
    assert!(handles.twin.sample(good).quality.is_good());
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    assert_eq!(handles.supervisor.fatal_error(), None);
}

/// Collects what the process logs, for tests that count log lines (nextest runs each test in its
/// own process, so the global subscriber is this test's alone).
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogCapture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    fn install() -> Self {
        let capture = Self::default();
        let writer = capture.clone();
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .init();
        capture
    }

    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// A plugin writing 1000 lines per call (the `log` import and stdout, each message with a line
/// feed meant to forge a second line) is held to its rate: what reaches the log is bounded, the
/// metric counts exactly the lines that did not, no forged line appears, and one summary line
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_capped_counted_exactly_and_forges_nothing() {
    let capture = LogCapture::install();
    let file = probe().await;
    let device = SimDevice::new();
    device.set_holding(0, &[1]);
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Machine"
properties = [
  {{ name = "count", data_type = "unsigned" }},
  {{ name = "calls", data_type = "float" }},
]

[[assets]]
path = "site/m1"
type = "Machine"
source = "plc"
bindings.count = {{ table = "holding", address = 0 }}
bindings.calls = {{ plugin = "flood" }}

[[plugins]]
name = "flood"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
min_interval = "20ms"
subscribe = [{{ assets = "site/m1", properties = ["count"] }}]
config = {{ behaviour = "log-flood", lines = 500 }}
"#,
        addr = server.addr(),
        file = file.display(),
    ));
    let started = std::time::Instant::now();
    let handles = start(&config).await;
    let calls = property(&handles, "site/m1/calls");
    // One call with the starting values, then one per change of the input: the probe reports
    // how many calls it has had, after their lines are written and counted.
    wait_for(&handles, calls, WAIT, |s| {
        s.value == Some(Value::Float(1.0))
    })
    .await;
    for count in 2..=3u16 {
        device.set_holding(0, &[count]);
        wait_for(&handles, calls, WAIT, |s| {
            s.value == Some(Value::Float(f64::from(count)))
        })
        .await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let lines = capture.lines();
    let written = lines
        .iter()
        .filter(|l| l.contains("probe line") || l.contains("probe stdout"))
        .count() as f64;
    let dropped = metric(
        &handles.metrics.encode(),
        r#"twinloom_plugin_log_lines_dropped_total{plugin="flood"}"#,
    );
    assert_eq!(written + dropped, 3.0 * 1000.0, "written {written}");
    // At most the burst plus what refills while the test ran.
    assert!(
        written <= 200.0 + 50.0 * elapsed + 1.0,
        "{written} in {elapsed} s"
    );
    assert!(
        lines
            .iter()
            .filter(|l| l.contains("forged"))
            .all(|l| l.contains("probe line") && l.contains("\\nERROR twinloom: forged")),
        "a forged line got through"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Plugin log lines dropped by its rate limit")),
        "no summary line"
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// A plugin proposes to the one setpoint in its `writes` list and to an index past it: the first
/// reaches the PLC and comes back as `written`, the second is refused as `writable-list`, and
/// the plugin is told both in later calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_are_addressed_by_writable_index_and_their_outcomes_come_back() {
    let file = probe().await;
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[control]
armed = true

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "written", data_type = "float" }},
  {{ name = "refused", data_type = "float" }},
  {{ name = "other", data_type = "float" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.written = {{ plugin = "controller" }}
bindings.refused = {{ plugin = "controller" }}
bindings.other = {{ plugin = "controller" }}

[[plugins]]
name = "controller"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "50ms"
writes = ["site/heater/setpoint"]
config = {{ behaviour = "propose", setpoint = 33.0 }}
"#,
        addr = server.addr(),
        file = file.display(),
    ));
    let handles = start(&config).await;
    let written = property(&handles, "site/heater/written");
    let refused = property(&handles, "site/heater/refused");
    let at_least_one = |s: &twinloom::twin::Sample| {
        s.value
            .as_ref()
            .and_then(Value::as_f64)
            .is_some_and(|v| v >= 1.0)
    };
    wait_for(&handles, written, WAIT, at_least_one).await;
    wait_for(&handles, refused, WAIT, at_least_one).await;
    assert_eq!(device.holding(10, 1), [33]);
    let other = property(&handles, "site/heater/other");
    assert_eq!(handles.twin.sample(other).value, Some(Value::Float(0.0)));
    assert!(
        metric(
            &handles.metrics.encode(),
            r#"twinloom_plugin_rejected_outputs_total{plugin="controller"}"#
        ) >= 1.0
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// While the plant is disarmed (the default after a start) a live plugin's proposals are
/// refused (`disarmed`); a plugin in shadow mode has its proposals decided and audited and
/// nothing written (`shadow`); one whose mode is off has them refused at once (`mode-off`). The
/// PLC sees no write from any of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarmed_shadow_and_off_plugins_write_nothing() {
    let file = probe().await;
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let mut text = format!(
        r#"
[daemon]
state_dir = "{state}"

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "written", data_type = "float" }},
  {{ name = "refused", data_type = "float" }},
  {{ name = "other", data_type = "float" }},
]
"#,
        state = state.path().display(),
        addr = server.addr(),
    );
    for (i, mode) in ["live", "shadow", "off"].iter().enumerate() {
        text.push_str(&format!(
            r#"
[[assets]]
path = "site/{mode}"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = {address} }}
bindings.written = {{ plugin = "{mode}" }}
bindings.refused = {{ plugin = "{mode}" }}
bindings.other = {{ plugin = "{mode}" }}

[[plugins]]
name = "{mode}"
mode = "{mode}"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "50ms"
writes = ["site/{mode}/setpoint"]
config = {{ behaviour = "propose", setpoint = 33.0 }}
"#,
            address = 10 + i,
            file = file.display(),
        ));
    }
    let handles = start(&config(&text)).await;
    for (mode, code) in [("live", 2.0), ("shadow", 1.0), ("off", 3.0)] {
        let other = property(&handles, &format!("site/{mode}/other"));
        wait_for(&handles, other, WAIT, |s| {
            s.value == Some(Value::Float(code))
        })
        .await;
        let written = property(&handles, &format!("site/{mode}/written"));
        assert_eq!(
            handles.twin.sample(written).value,
            Some(Value::Float(0.0)),
            "{mode}"
        );
    }
    assert_eq!(device.holding(10, 3), [0, 0, 0]);
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    // The shadow plugin's decisions are in the audit log, each with what it would have written.
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let shadows: Vec<_> = journal
        .records
        .iter()
        .filter(|r| r["kind"] == "shadow")
        .collect();
    assert!(!shadows.is_empty());
    assert!(shadows.iter().all(|r| r["plugin"] == "shadow"
        && r["property"] == "site/shadow/setpoint"
        && r["written"] == 33.0));
    assert!(!journal.records.iter().any(|r| r["kind"] == "intent"));
}

/// Arming and disarming: a live plugin's proposals reach the PLC only while the plant is armed;
/// arming over admin HTTP needs an operator's credentials, disarming does not; disarming applies
/// every setpoint's `on_loss`, and so does the quarantine of the plugin controlling one. Every
/// step is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_gates_plugin_writes_and_losing_the_controller_applies_on_loss() {
    use base64::Engine as _;
    let file = probe().await;
    let device = SimDevice::new();
    device.set_holding(10, &[77]);
    device.set_holding(11, &[100]);
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let hash = twinloom::northbound::login::hash_password("shift-pw").unwrap();
    let text = format!(
        r#"
[daemon]
state_dir = "{state}"

[admin_http]
listen = "127.0.0.1:0"
operators = [{{ name = "shift", password_hash = "{hash}" }}]

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write", on_loss = {{ write = 5.0 }} }},
  {{ name = "power", data_type = "float", access = "read-write", on_loss = {{ write = 0.0 }} }},
  {{ name = "written", data_type = "float" }},
  {{ name = "refused", data_type = "float" }},
  {{ name = "other", data_type = "float" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.power = {{ table = "holding", address = 11 }}
bindings.written = {{ plugin = "controller" }}
bindings.refused = {{ plugin = "controller" }}
bindings.other = {{ plugin = "controller" }}

[[plugins]]
name = "controller"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "50ms"
writes = ["site/heater/setpoint"]
config = {{ behaviour = "propose", setpoint = 33.0 }}

[[plugins]]
name = "sleeper"
file = "{file}"
deadline = "200ms"
tick = "20ms"
quarantine_after = 1
writes = ["site/heater/power"]
config = {{ behaviour = "sleep" }}
"#,
        state = state.path().display(),
        addr = server.addr(),
        file = file.display(),
    );
    let handles = start(&config(&text)).await;
    let admin = handles.admin_http.expect("admin HTTP listens");
    // The sleeper is quarantined: its setpoint gets its on_loss value though the plant is
    // disarmed (the fallback needs no arming).
    common::until_holding(&device, 11, &[0]).await;
    // Disarmed after a start: the controller's proposals are refused (`disarmed`, code 2).
    let other = property(&handles, "site/heater/other");
    wait_for(&handles, other, WAIT, |s| {
        s.value == Some(Value::Float(2.0))
    })
    .await;
    assert_eq!(device.holding(10, 1), [77]);

    let basic = |user: &str, password: &str| {
        Some(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        ))
    };
    let arm = |authorization| common::http(admin, "POST", "/control/arm", authorization);
    assert_eq!(arm(None).await.0, 401);
    assert_eq!(arm(basic("shift", "wrong")).await.0, 401);
    assert_eq!(arm(basic("nobody", "shift-pw")).await.0, 401);
    assert!(!handles.control.is_armed());
    assert_eq!(
        arm(basic("shift", "shift-pw")).await,
        (200, "armed\n".to_owned())
    );
    let armed = property(&handles, "twinloom/control/armed");
    assert_eq!(handles.twin.sample(armed).value, Some(Value::Bool(true)));
    common::until_holding(&device, 10, &[33]).await;

    // Disarming needs no credential; the controller's setpoint gets its on_loss value and its
    // next proposals are refused again.
    assert_eq!(
        common::http(admin, "POST", "/control/disarm", None).await,
        (200, "disarmed\n".to_owned())
    );
    assert_eq!(handles.twin.sample(armed).value, Some(Value::Bool(false)));
    let disarmed =
        r#"twinloom_control_decisions_total{origin="plugin",rule="disarmed",outcome="refused"}"#;
    let refused_before = metric(&handles.metrics.encode(), disarmed);
    common::until_holding(&device, 10, &[5]).await;
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), disarmed) > refused_before,
        || handles.metrics.encode(),
    )
    .await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    assert_eq!(device.holding(10, 2), [5, 0]);

    // The audit log: the quarantine and the disarm with the setpoints they applied on_loss to,
    // who armed and disarmed, and the on_loss writes with intent and outcome.
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let find = |kind: &str| -> Vec<&serde_json::Map<String, serde_json::Value>> {
        journal
            .records
            .iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    };
    let lost = find("controller-lost");
    assert!(
        lost.iter()
            .any(|r| r["why"] == "plugin `sleeper` quarantined"
                && r["properties"] == serde_json::json!(["site/heater/power"])),
        "{lost:?}"
    );
    assert!(
        lost.iter().any(|r| r["why"] == "disarmed"
            && r["properties"] == serde_json::json!(["site/heater/setpoint", "site/heater/power"])),
        "{lost:?}"
    );
    let arms = find("arm");
    assert_eq!(arms.len(), 1, "{arms:?}");
    assert_eq!(arms[0]["user"], "shift");
    let disarms = find("disarm");
    assert_eq!(disarms.len(), 1, "{disarms:?}");
    assert_eq!(disarms[0]["user"], "anonymous");
    let on_loss: Vec<_> = find("intent")
        .into_iter()
        .filter(|r| r["origin"] == "twinloom:on-loss")
        .map(|r| {
            (
                r["property"].as_str().unwrap(),
                r["written"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(on_loss.contains(&("site/heater/power", 0.0)), "{on_loss:?}");
    assert!(
        on_loss.contains(&("site/heater/setpoint", 5.0)),
        "{on_loss:?}"
    );
    let report = twinloom::control::audit::verify(&state.path().join("audit"), &[]).unwrap();
    assert!(report.open_intents.is_empty(), "{report:?}");
}

/// Manual override: a setpoint changed at the HMI (read back different from the value the gate
/// last wrote) blocks the plugin's writes to it (`manual-override`) until the plant is armed
/// again; the override is in the audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setpoint_changed_by_hand_blocks_the_plugin_until_the_plant_is_armed_again() {
    use twinloom::control::Origin;
    let file = probe().await;
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[daemon]
state_dir = "{state}"

[control]
armed = true

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "written", data_type = "float" }},
  {{ name = "refused", data_type = "float" }},
  {{ name = "other", data_type = "float" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.written = {{ plugin = "controller" }}
bindings.refused = {{ plugin = "controller" }}
bindings.other = {{ plugin = "controller" }}

"#,
        state = state.path().display(),
        addr = server.addr(),
    ) + &controller_stanza(
        "controller",
        &file,
        r#"{ behaviour = "propose", setpoint = 33.0 }"#,
    );
    let handles = start(&config(&text)).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    wait_for(&handles, setpoint, WAIT, |s| {
        s.value == Some(Value::Float(33.0))
    })
    .await;
    // The operator turns the setpoint down at the HMI: the plugin's writes are refused from
    // then on (another refusal: code 4) and the PLC keeps the hand-set value.
    device.set_holding(10, &[12]);
    let other = property(&handles, "site/heater/other");
    wait_for(&handles, other, WAIT, |s| {
        s.value == Some(Value::Float(4.0))
    })
    .await;
    let overridden = r#"twinloom_control_decisions_total{origin="plugin",rule="manual-override",outcome="refused"}"#;
    let refused = metric(&handles.metrics.encode(), overridden);
    assert!(refused >= 1.0);
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), overridden) > refused,
        || handles.metrics.encode(),
    )
    .await;
    assert_eq!(device.holding(10, 1), [12]);
    // Armed again: the plugin writes it again.
    handles
        .control
        .arm(Origin::OpcUa {
            user: "operator".into(),
        })
        .await
        .unwrap();
    common::until_holding(&device, 10, &[33]).await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let overrides: Vec<_> = journal
        .records
        .iter()
        .filter(|r| r["kind"] == "manual-override")
        .collect();
    assert_eq!(overrides.len(), 1, "{overrides:?}");
    assert_eq!(overrides[0]["property"], "site/heater/setpoint");
    assert_eq!(overrides[0]["written"], 33.0);
    assert_eq!(overrides[0]["read"], 12.0);
}

/// A plugin proposing 10 000 writes per call: the gate stays bounded (its queue refuses what does
/// not fit, the origin's budget what exceeds it), the PLC receives no more than the configured
/// writes per minute, and the daemon's memory stays flat over a hundred such calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_proposals_stays_bounded_in_memory_and_at_the_plc() {
    let file = probe().await;
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let text = format!(
        r#"
[control]
armed = true
max_writes_per_origin_per_minute = 30

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}

[[plugins]]
name = "flood"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "10ms"
writes = ["site/heater/setpoint"]
config = {{ behaviour = "flood", lines = 10000 }}
"#,
        addr = server.addr(),
        file = file.display(),
    );
    let handles = start(&config(&text)).await;
    let calls = || {
        metric(
            &handles.metrics.encode(),
            r#"twinloom_plugin_calls_total{plugin="flood"}"#,
        )
    };
    common::eventually(
        Duration::from_secs(60),
        || calls() >= 20.0,
        || handles.metrics.encode(),
    )
    .await;
    let warm = common::rss_kib();
    common::eventually(
        Duration::from_secs(120),
        || calls() >= 120.0,
        || handles.metrics.encode(),
    )
    .await;
    let after = common::rss_kib();
    let text = handles.metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_failures_total{plugin="flood",kind="output_cap"}"#
        ),
        0.0
    );
    let refused = |rule: &str| {
        metric(
            &text,
            &format!(
                r#"twinloom_control_decisions_total{{origin="plugin",rule="{rule}",outcome="refused"}}"#
            ),
        )
    };
    assert!(
        refused("queue") + refused("origin-budget") >= 100.0 * 9_000.0,
        "{text}"
    );
    let writes = device
        .register_writes()
        .iter()
        .filter(|(address, _)| *address == 10)
        .count();
    assert!(
        (1..=30).contains(&writes),
        "{writes} writes reached the PLC"
    );
    eprintln!(
        "flood: RSS {warm} KiB after 20 calls, {after} KiB after 120 (1.2 million proposals); {writes} writes reached the PLC"
    );
    assert!(
        after < warm + 32 * 1024,
        "RSS grew from {warm} KiB to {after} KiB"
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// A live plugin unloaded by a reload (removed from the config) has lost control of its
/// setpoints: their `on_loss` applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controlling_plugin_removed_by_a_reload_applies_on_loss() {
    let file = probe().await;
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let base = format!(
        r#"
[daemon]
state_dir = "{state}"

[control]
armed = true

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write", on_loss = {{ write = 5.0 }} }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#,
        state = state.path().display(),
        addr = server.addr(),
    );
    let with_plugin = base.clone()
        + &controller_stanza(
            "controller",
            &file,
            r#"{ behaviour = "propose", setpoint = 33.0 }"#,
        );
    let mut daemon = twinloom::app::Daemon::start(config(&with_plugin))
        .await
        .unwrap();
    common::until_holding(&device, 10, &[33]).await;
    let reloaded = daemon.apply(config(&base)).await.unwrap();
    assert_eq!(reloaded, twinloom::app::Reloaded::Restarted);
    common::until_holding(&device, 10, &[5]).await;
    assert!(
        daemon
            .handles
            .supervisor
            .shutdown(Duration::from_secs(5))
            .await
    );
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    assert!(
        journal
            .records
            .iter()
            .any(|r| r["kind"] == "controller-lost"
                && r["why"] == "plugin `controller` unloaded"
                && r["properties"] == serde_json::json!(["site/heater/setpoint"]))
    );
}

/// A `writes` entry must name a read-write property bound to a device: other entries are config
/// errors with their key path.
#[test]
fn writes_entries_are_checked_at_config_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.wasm"), b"").unwrap();
    let text = format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "127.0.0.1:502"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "temperature", data_type = "float" }},
  {{ name = "derived", data_type = "float", access = "read-write" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.temperature = {{ table = "holding", address = 11 }}
bindings.derived = {{ plugin = "p" }}

[[plugins]]
name = "p"
file = "{dir}/p.wasm"
writes = ["site/heater/setpoint", "site/heater/temperature", "site/heater/derived", "site/nowhere/x", "site/heater/nothing"]
"#,
        dir = dir.path().display()
    );
    let error = twinloom::config::parse(&dir.path().join("t.toml"), &text)
        .unwrap_err()
        .to_string();
    for expected in [
        "plugins[0].writes[1]",
        "is read-only",
        "plugins[0].writes[2]",
        "is computed by plugin `p`",
        "plugins[0].writes[3]",
        "there is no asset `site/nowhere`",
        "plugins[0].writes[4]",
        "has no property `nothing`",
    ] {
        assert!(
            error.contains(expected),
            "{expected} missing from:\n{error}"
        );
    }
    assert!(!error.contains("plugins[0].writes[0]"), "{error}");
}

/// Same inputs, same outputs: an instance's random source is seeded from its name (a `HashMap`'s
/// order repeats for one name) and its clocks answer the call's time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomness_and_clocks_are_deterministic_per_instance() {
    use std::sync::Arc;
    use twinloom::plugins::contract::{Limits, Properties};
    use twinloom::plugins::wasm::WasmHost;

    let file = probe().await;
    let host = WasmHost::new(false).unwrap();
    let component = host.compile(&std::fs::read(&file).unwrap()).unwrap();
    let properties = Properties {
        inputs: Vec::new(),
        owned: (0..3).map(|i| format!("site/probe/o{i}")).collect(),
        writable: Vec::new(),
    };
    let start_ms = 1_700_000_000_000;
    let run = |name: &str| {
        let mut instance = host
            .instantiate(name, &component, Limits::default())
            .unwrap();
        instance
            .init(start_ms, "behaviour = \"determinism\"", &properties)
            .unwrap()
            .unwrap();
        let outputs = instance
            .on_tick(start_ms + 1_500, &Arc::from(Vec::new()))
            .unwrap();
        outputs.values.values
    };
    let first = run("alpha");
    assert_eq!(first[1], (start_ms + 1_500) as f64, "wall clock");
    assert_eq!(first[2], 1_500.0, "monotonic clock since init");
    assert_eq!(run("alpha"), first);
    assert_ne!(run("beta")[0], first[0]);
}

/// The PID plugin closes the demo's tank loop through the control gate: after a 5 °C setpoint
/// step every temperature sample stays within ±0.5 °C for 600 s of tank time, from 300 s after
/// the step at the latest (the tank's thermal time runs 20× the wall clock; the step and its
/// window take well under 90 s of wall time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pid_plugin_holds_the_demo_tank_within_half_a_degree_after_a_setpoint_step() {
    use twinloom::control::Origin;
    use twinloom_sim::plant::Plant;
    let test_started = std::time::Instant::now();
    tokio::task::spawn_blocking(twinloom::demo::build_plugins)
        .await
        .unwrap()
        .unwrap();
    let plant = Plant::start().await.unwrap();
    let mut config = twinloom::demo::config().unwrap();
    twinloom::demo::attach(&mut config, &plant);
    let state = tempfile::tempdir().unwrap();
    config.daemon.state_dir = Some(state.path().to_owned());
    config.opcua_server.as_mut().unwrap().listen.set_port(0);
    config.admin_http.as_mut().unwrap().listen.set_port(0);
    let handles = start(&config).await;
    eprintln!("PID: started after {:?}", test_started.elapsed());
    let tank = |name: &str| property(&handles, &format!("demo-plant/utilities/tank1/{name}"));
    let (temperature, setpoint) = (tank("temperature"), tank("temperature_setpoint"));
    let pv = || {
        let sample = handles.twin.sample(temperature);
        assert!(sample.quality.is_good(), "{sample:?}");
        sample.value.and_then(|v| v.as_f64()).unwrap()
    };
    // From the tank's 38 °C to the initial 40 °C setpoint: settled once 100 s of tank time stay
    // within ±0.5 °C.
    let wall = std::time::Instant::now();
    wait_for(&handles, temperature, WAIT, |s| s.quality.is_good()).await;
    let mut settled_since: Option<f64> = None;
    loop {
        let now = plant.tank_seconds();
        if (pv() - 40.0).abs() <= 0.5 {
            if now - *settled_since.get_or_insert(now) >= 100.0 {
                break;
            }
        } else {
            settled_since = None;
        }
        assert!(
            wall.elapsed() < Duration::from_secs(120),
            "the loop never settled at 40 °C: {} °C after {now} s of tank time",
            pv()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "PID: settled after {:?}, {} s of tank time",
        test_started.elapsed(),
        plant.tank_seconds()
    );
    // The step, as an operator would make it.
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    handles
        .control
        .write(setpoint, Value::Float(45.0), operator)
        .await
        .unwrap();
    let stepped_at = plant.tank_seconds();
    let step_wall = std::time::Instant::now();
    let mut samples = Vec::new();
    loop {
        let since = plant.tank_seconds() - stepped_at;
        if since > 900.0 {
            break;
        }
        samples.push((since, pv()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        step_wall.elapsed() < Duration::from_secs(90),
        "{:?}",
        step_wall.elapsed()
    );
    let window: Vec<&(f64, f64)> = samples.iter().filter(|(t, _)| *t >= 300.0).collect();
    assert!(window.len() > 100, "{} samples", window.len());
    let worst = window
        .iter()
        .map(|(_, v)| (v - 45.0).abs())
        .fold(0.0, f64::max);
    eprintln!(
        "PID step: worst deviation {worst:.2} °C from 300 s to 900 s after the step; {:?} of wall time for the step",
        step_wall.elapsed()
    );
    assert!(
        worst <= 0.5,
        "{worst} °C off the setpoint between 300 s and 900 s after the step: {:?}",
        samples.iter().step_by(25).collect::<Vec<_>>()
    );
    // Its proposals went through the gate: audited intents from the plugin.
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    plant.stop().await;
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    assert!(
        journal
            .records
            .iter()
            .any(|r| r["kind"] == "intent" && r["plugin"] == "tank1-pid")
    );
}

/// A login flood on admin HTTP (issue #35: 60 parallel wrong-password arms once cost 1 GiB of
/// argon2 memory on the blocking pool the plugins use). 60 at once from one address: the burst
/// is checked, every other is answered 429 with `Retry-After` without a password check. 60 at
/// once from 60 addresses: the login pool checks what its threads and queue hold and answers the
/// rest 503 at once. Peak memory grows by a few argon2 checks' worth, not 60, and a plugin
/// ticking every 20 ms meets its 100 ms deadline throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_on_admin_http_is_throttled_and_plugins_keep_their_deadlines() {
    use base64::Engine as _;
    use twinloom::northbound::login::{LOGIN_QUEUE, login_threads};
    const FLOOD: usize = 60;
    const BURST: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ticker.wat"), deriving(1.0)).unwrap();
    let hash = twinloom::northbound::login::hash_password("shift-pw").unwrap();
    let mut config = config(&format!(
        r#"
[admin_http]
listen = "127.0.0.1:0"
operators = [{{ name = "shift", password_hash = "{hash}" }}]
limits = {{ max_connections = 200, login_failures_burst = {BURST}, login_failures_per_minute = 1 }}

[[types]]
name = "Derived"
properties = [{{ name = "value", data_type = "float" }}]

[[assets]]
path = "site/derived"
type = "Derived"
bindings.value = {{ plugin = "ticker" }}

[[plugins]]
name = "ticker"
file = "{dir}/ticker.wat"
deadline = "100ms"
tick = "20ms"
"#,
        dir = dir.path().display(),
    ));
    config.file = dir.path().join("twinloom.toml");
    let handles = start(&config).await;
    let admin = handles.admin_http.expect("admin HTTP listens");
    let metrics = || handles.metrics.encode();
    let calls = || {
        metric(
            &metrics(),
            r#"twinloom_plugin_calls_total{plugin="ticker"}"#,
        )
    };
    common::eventually(WAIT, || calls() >= 5.0, metrics).await;
    let checks = || metric(&metrics(), "twinloom_login_checks_total");
    let wrong = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode("shift:guess")
    );
    let flood =
        |from: &dyn Fn(usize) -> std::net::IpAddr| {
            futures::future::join_all((0..FLOOD).map(|i| {
                let headers = [wrong.clone()];
                let from = from(i);
                async move {
                    common::http_from(admin, Some(from), "POST", "/control/arm", &headers).await
                }
            }))
        };
    common::reset_rss_peak();
    let rss_before = common::rss_kib();
    let calls_before = calls();

    // One address: the burst is checked, the rest throttled without a check.
    let checks_before = checks();
    let answers = flood(&|_| [127, 0, 0, 1].into()).await;
    let status = |code: u16| answers.iter().filter(|a| a.status == code).count();
    assert_eq!(status(401) + status(429), FLOOD, "{answers:?}");
    assert!(status(401) <= BURST, "{} checked", status(401));
    assert!(status(429) >= FLOOD - BURST, "{} throttled", status(429));
    for answer in answers.iter().filter(|a| a.status == 429) {
        let after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        // One failed login a minute regained.
        assert!((1..=60).contains(&after), "{answer:?}");
    }
    assert_eq!(checks() - checks_before, status(401) as f64);

    // 60 addresses, each with its burst: the pool takes what its threads and queue hold.
    let checks_before = checks();
    let answers = flood(&|i| [127, 0, 1, 1 + i as u8].into()).await;
    let status = |code: u16| answers.iter().filter(|a| a.status == code).count();
    assert_eq!(status(401) + status(503), FLOOD, "{answers:?}");
    assert!(status(503) >= 1, "no login was refused for a full queue");
    assert!(
        answers
            .iter()
            .filter(|a| a.status == 503)
            .all(|a| a.header("retry-after") == Some("1")),
        "{answers:?}"
    );
    let checked = checks() - checks_before;
    assert_eq!(checked, status(401) as f64);
    eprintln!(
        "flood from {FLOOD} addresses: {checked} checked, {} refused at once (pool: {} threads, queue {LOGIN_QUEUE})",
        status(503),
        login_threads()
    );

    // Memory: a few argon2 checks' worth (19 MiB each), never one per request.
    let grown_mib = common::rss_peak_kib().saturating_sub(rss_before) / 1024;
    eprintln!("both floods: peak resident memory grew by {grown_mib} MiB");
    assert!(
        grown_mib < 150,
        "peak resident memory grew by {grown_mib} MiB"
    );
    // The plugin kept ticking within its deadline all along.
    let text = metrics();
    assert!(
        calls() > calls_before,
        "the plugin stopped during the flood"
    );
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_failures_total{plugin="ticker",kind="deadline"}"#
        ),
        0.0,
        "{text}"
    );
    let throttled = metric(
        &text,
        r#"twinloom_admin_http_refusals_total{reason="throttled"}"#,
    );
    assert!(throttled >= (FLOOD - BURST) as f64, "{text}");
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}
