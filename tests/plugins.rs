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

/// A component that answers every call with one derived value, `path` = `value`.
fn deriving(path: &str, value: f64) -> String {
    let bytes = |b: &[u8]| b.iter().map(|x| format!("\\{x:02x}")).collect::<String>();
    let mut outputs = Vec::new();
    outputs.extend(128u32.to_le_bytes());
    outputs.extend(1u32.to_le_bytes());
    outputs.extend([0u8; 8]);
    let mut record = Vec::new();
    record.extend(256u32.to_le_bytes());
    record.extend((path.len() as u32).to_le_bytes());
    record.extend(value.to_le_bytes());
    let data = format!(
        "(data (i32.const 64) \"{}\") (data (i32.const 128) \"{}\") (data (i32.const 256) \"{path}\")",
        bytes(&outputs),
        bytes(&record)
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
    std::fs::write(
        dir.path().join("good.wat"),
        deriving("site/m1/derived", 42.0),
    )
    .unwrap();
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
    let dir = common::repo().join("plugins").join(name);
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
    replace(&file, &deriving("site/m/derived", 1.0));
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
    replace(&file, &deriving("site/m/derived", 2.0));
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
    use twinloom::plugins::build::{BuildOptions, Toolchain, build};
    use twinloom::plugins::wasm::{ChangeBatch, Limits, Quality, WasmHost, quality_byte};

    let wasip2 = built("vibration-health").await;
    let options = BuildOptions {
        target_dir: Some(common::repo().join("target/wasm")),
        toolchain: Toolchain::BuildStd,
        out: None,
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
    let inputs: Vec<String> = (1..=2)
        .map(|i| format!("site/pump{i}/vibration_rms"))
        .collect();
    // With `not_good`, every batch also carries a bad and an uncertain sample of 1000 mm/s,
    // which the plugin must ignore: the quality bytes cross the boundary intact.
    let run = |file: &std::path::Path, not_good: bool| {
        let component = host.compile(&std::fs::read(file).unwrap()).unwrap();
        let mut instance = host
            .instantiate("vibration", &component, Limits::default())
            .unwrap();
        instance
            .init("alpha = 0.2\nwarmup = 3", &inputs)
            .unwrap()
            .unwrap();
        let mut seen = Vec::new();
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
            let outputs = instance.on_changes(&batch).unwrap();
            seen.extend(
                outputs
                    .values
                    .into_iter()
                    .map(|v| (v.property, v.value.to_bits())),
            );
        }
        seen
    };
    let expected = run(&wasip2, false);
    // Four outputs per pump per call; pump 2's rising vibration has a positive trend.
    assert_eq!(expected.len(), 20 * 2 * 4);
    assert!(expected.iter().any(|(property, bits)| {
        property == "site/pump2/vibration_trend" && f64::from_bits(*bits) > 0.0
    }));
    assert_eq!(run(&wasip2, true), expected);
    assert_eq!(run(&fallback, false), expected);
    assert_eq!(run(&fallback, true), expected);
}
