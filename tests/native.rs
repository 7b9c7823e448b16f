//! Native plugins (`kind = "native"`, the C ABI of `plugin-api/include/twinloom_plugin.h`): the C
//! example built with the system C compiler loads and computes; a library of another ABI version
//! or without the entry point is refused; the same Rust source built as a Wasm component and as a
//! native library gives bit-identical outputs; a native plugin that panics or never returns is
//! contained (quarantined while the daemon and the other plugins run on); its proposals go
//! through the control gate like a Wasm plugin's.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, metric, property, start, wait_for};
use twinloom::plugins::contract::{
    self, ChangeBatch, DataType, Limits, Outputs, PluginError, Properties, ProposalOutcome,
    Setpoint, WritableProperty,
};
use twinloom::plugins::native::NativeHost;
use twinloom::plugins::runtime::{PluginInstance, PluginRuntime};
use twinloom::plugins::wasm::WasmHost;
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::modbus::SimDevice;

const WAIT: Duration = Duration::from_secs(10);

/// Compiles the C source `source` (a file of the repository, or text) into a shared library in
/// `dir` with the system C compiler, against the header.
fn compile_c(dir: &Path, name: &str, source: &str) -> PathBuf {
    let repo = common::repo();
    let file = repo.join(source);
    let file = if file.is_file() {
        file
    } else {
        let path = dir.join(format!("{name}.c"));
        std::fs::write(&path, source).unwrap();
        path
    };
    let library = dir.join(format!("{name}.so"));
    let output = std::process::Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args([
            "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I",
        ])
        .arg(repo.join("plugin-api/include"))
        .arg(&file)
        .arg("-o")
        .arg(&library)
        .arg("-lm")
        .output()
        .expect("a C compiler (cc) on PATH");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    library
}

/// Builds the plugin crate at `dir` (relative to the repository) as a native library with the
/// daemon's own `plugin build --native` into `target/native` (the test command builds them before
/// the tests run, so this finds them fresh), and returns its path.
async fn native(dir: &str) -> PathBuf {
    let name = dir.to_owned();
    let dir = common::repo().join(dir);
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(common::repo().join("target/native")),
        native: true,
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building {name} natively: {e:#}"))
}

/// Builds the plugin crate at `dir` as a Wasm component into `target/wasm`.
async fn component(dir: &str) -> PathBuf {
    let name = dir.to_owned();
    let dir = common::repo().join(dir);
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(common::repo().join("target/wasm")),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("building {name}: {e:#}"))
}

fn good_batch(entries: &[(u32, f64, i64)]) -> Arc<ChangeBatch> {
    Arc::new(ChangeBatch {
        properties: entries.iter().map(|e| e.0).collect(),
        values: entries.iter().map(|e| e.1).collect(),
        qualities: entries.iter().map(|_| 0).collect(),
        source_times_ms: entries.iter().map(|e| e.2).collect(),
    })
}

fn no_outcomes() -> Arc<[ProposalOutcome]> {
    Arc::from(Vec::new())
}

/// `on-changes` through the runtime seam, into fresh outputs.
fn changes(
    instance: &mut impl PluginInstance,
    now_ms: i64,
    batch: &Arc<ChangeBatch>,
) -> Result<Outputs, PluginError> {
    let mut outputs = Outputs::default();
    instance.on_changes(now_ms, batch, &no_outcomes(), &mut outputs)?;
    Ok(outputs)
}

/// `on-tick` through the runtime seam, into fresh outputs.
fn tick(instance: &mut impl PluginInstance, now_ms: i64) -> Result<Outputs, PluginError> {
    let mut outputs = Outputs::default();
    instance.on_tick(now_ms, &no_outcomes(), &mut outputs)?;
    Ok(outputs)
}

fn load(
    host: &NativeHost,
    file: &Path,
) -> Result<Arc<twinloom::plugins::native::Library>, PluginError> {
    host.load(&std::fs::read(file).unwrap())
}

/// The C example (`plugins/ewma-c/ewma.c`) through the native host: its averages, qualities,
/// proposal and reason, and its refusal of a wrong setting.
#[test]
fn the_c_plugin_averages_its_inputs_and_proposes() {
    let dir = tempfile::tempdir().unwrap();
    let library = compile_c(dir.path(), "ewma", "plugins/ewma-c/ewma.c");
    let host = NativeHost::new(&dir.path().join("state"));
    let loaded = load(&host, &library).unwrap();
    // The copy that was loaded is named by the file's SHA-256.
    assert_eq!(
        loaded.path().parent().unwrap(),
        dir.path().join("state/native")
    );
    let properties = Properties {
        inputs: vec!["a/x".into(), "a/y".into()],
        owned: vec!["a/x_avg".into(), "a/y_avg".into()],
        writable: vec![WritableProperty {
            path: "a/setpoint".into(),
            data_type: DataType::Float,
        }],
    };
    let mut instance = host
        .instantiate("ewma", &loaded, Limits::default())
        .unwrap();
    assert_eq!(
        instance.init(0, "alpha = 0.25", &properties).unwrap(),
        Ok(())
    );
    let outputs = changes(&mut instance, 1, &good_batch(&[(0, 4.0, 1), (1, 10.0, 1)])).unwrap();
    assert_eq!(outputs.values.indices, [0, 1]);
    assert_eq!(outputs.values.values, [4.0, 10.0]);
    assert_eq!(outputs.values.qualities, [0, 0]);
    let outputs = changes(&mut instance, 2, &good_batch(&[(0, 8.0, 2)])).unwrap();
    assert_eq!(outputs.values.values, [0.25 * 8.0 + 0.75 * 4.0]);
    // A bad input gives a bad output (NaN: the property keeps its value).
    let bad = Arc::new(ChangeBatch {
        properties: vec![1],
        values: vec![f64::NAN],
        qualities: vec![2],
        source_times_ms: vec![3],
    });
    let outputs = changes(&mut instance, 3, &bad).unwrap();
    assert_eq!(outputs.values.indices, [1]);
    assert!(outputs.values.values[0].is_nan());
    assert_eq!(outputs.values.qualities, [2]);
    let outputs = tick(&mut instance, 4).unwrap();
    assert_eq!(outputs.proposals.len(), 1);
    assert_eq!(outputs.proposals[0].value, Setpoint::Float(5.0));
    assert_eq!(
        contract::reason(&outputs, &outputs.proposals[0]),
        "follow the average of input 0"
    );
    assert_eq!(instance.fuel_used(), 0);
    // The caller's outputs are filled in place: a later call with fewer values reuses the same
    // columns (the runner keeps one such buffer per plugin; nothing is allocated per call).
    let mut reused = Outputs::default();
    instance
        .on_changes(
            5,
            &good_batch(&[(0, 1.0, 5), (1, 1.0, 5)]),
            &no_outcomes(),
            &mut reused,
        )
        .unwrap();
    let columns = |o: &Outputs| {
        (
            o.values.indices.as_ptr(),
            o.values.values.as_ptr(),
            o.values.qualities.as_ptr(),
        )
    };
    let before = columns(&reused);
    instance
        .on_changes(6, &good_batch(&[(1, 3.0, 6)]), &no_outcomes(), &mut reused)
        .unwrap();
    assert_eq!(reused.values.indices, [1]);
    assert_eq!(columns(&reused), before);
    // A wrong setting is the plugin's refusal, with its message.
    let mut refusing = host
        .instantiate("ewma", &loaded, Limits::default())
        .unwrap();
    assert_eq!(
        refusing.init(0, "alpha = 2", &properties).unwrap(),
        Err("alpha must be a number in (0, 1]".to_owned())
    );
}

/// A library built for ABI 0.2.0 is refused naming both versions; one without the entry point
/// is refused saying so; the daemon starts anyway, with the plugin's outputs bad.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_library_of_another_abi_version_or_without_the_entry_point_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = compile_c(
        dir.path(),
        "old",
        r#"#include "twinloom_plugin.h"
static const twinloom_plugin TABLE = { .abi_version = 0x000200u, .size = sizeof(twinloom_plugin) };
const twinloom_plugin *twinloom_plugin_entry(void) { return &TABLE; }
"#,
    );
    let stranger = compile_c(
        dir.path(),
        "stranger",
        "int twinloom_something_else(void) { return 1; }\n",
    );
    let host = NativeHost::new(&dir.path().join("state"));
    let error = load(&host, &old).unwrap_err();
    assert_eq!(
        error,
        PluginError::Contract {
            found: "twinloom:plugin@0.2.0".into(),
            expected: contract::CONTRACT
        }
    );
    let text = error.to_string();
    assert!(
        text.contains("twinloom:plugin@0.2.0") && text.contains("twinloom:plugin@0.3.0"),
        "{text}"
    );
    let error = load(&host, &stranger).unwrap_err();
    assert!(
        matches!(&error, PluginError::Load(text) if text.contains("no entry point `twinloom_plugin_entry`")),
        "{error}"
    );

    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "127.0.0.1:9"

[[types]]
name = "M"
properties = [{{ name = "derived", data_type = "float" }}]

[[assets]]
path = "site/m"
type = "M"
source = "plc"
bindings.derived = {{ plugin = "old" }}

[[plugins]]
name = "old"
kind = "native"
file = "{file}"
"#,
        file = old.display()
    ));
    let handles = start(&config).await;
    let derived = property(&handles, "site/m/derived");
    assert_eq!(
        handles.twin.sample(derived).quality,
        Quality::bad(QualityReason::PluginFailure)
    );
    assert_eq!(
        metric(
            &handles.metrics.encode(),
            r#"twinloom_plugin_failures_total{plugin="old",kind="contract"}"#
        ),
        1.0,
        "{}",
        handles.metrics.encode()
    );
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// A deterministic signal: `n` samples over `inputs` inputs, value around `base` ± `spread`,
/// one every 10 ms of source time.
struct Signal {
    state: u64,
    time_ms: i64,
}

impl Signal {
    fn next(&mut self) -> f64 {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    }

    fn batch(&mut self, n: usize, inputs: u32, base: f64, spread: f64) -> Arc<ChangeBatch> {
        let mut batch = ChangeBatch {
            properties: Vec::new(),
            values: Vec::new(),
            qualities: Vec::new(),
            source_times_ms: Vec::new(),
        };
        for i in 0..n {
            self.time_ms += 10;
            let noise = self.next();
            // Now and then a bad sample, which both builds must skip the same way.
            let bad = self.next() > 0.47;
            batch.properties.push(i as u32 % inputs);
            batch
                .values
                .push(if bad { f64::NAN } else { base + spread * noise });
            batch.qualities.push(if bad { 2 } else { 0 });
            batch.source_times_ms.push(self.time_ms);
        }
        Arc::new(batch)
    }
}

/// Every output's bits, so NaN compares and -0.0 differs from 0.0.
fn bits(outputs: &Outputs) -> (Vec<u32>, Vec<u64>, Vec<u8>, usize, String) {
    (
        outputs.values.indices.clone(),
        outputs.values.values.iter().map(|v| v.to_bits()).collect(),
        outputs.values.qualities.clone(),
        outputs.proposals.len(),
        outputs.reasons.clone(),
    )
}

/// Runs the plugin crate at `dir` built as a Wasm component and as a native library side by
/// side over the same batches and ticks, and compares every output bit for bit.
async fn same_bits(dir: &str, config: &str, properties: Properties, base: f64, spread: f64) {
    let wasm_file = component(dir).await;
    let native_file = native(dir).await;
    let state = tempfile::tempdir().unwrap();
    let wasm_host = WasmHost::new(false).unwrap();
    let native_host = NativeHost::new(state.path());
    let wasm_component = wasm_host.load(&std::fs::read(&wasm_file).unwrap()).unwrap();
    let library = load(&native_host, &native_file).unwrap();
    let limits = Limits {
        deadline: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut wasm = PluginRuntime::instantiate(&wasm_host, "twin", &wasm_component, limits).unwrap();
    let mut native = native_host.instantiate("twin", &library, limits).unwrap();
    assert_eq!(
        PluginInstance::init(&mut wasm, 0, config, &properties).unwrap(),
        Ok(())
    );
    assert_eq!(native.init(0, config, &properties).unwrap(), Ok(()));
    let inputs = properties.inputs.len() as u32;
    let mut signal = Signal {
        state: 7,
        time_ms: 1_700_000_000_000,
    };
    let mut compared = 0;
    for call in 0..400 {
        let n = [1, 7, 64, 300][call % 4];
        // A slow drift so that trends, excursions and alarms happen.
        let level = base + spread * (call as f64 / 100.0).sin() * 2.0;
        let batch = signal.batch(n, inputs, level, spread);
        let now = signal.time_ms;
        let a = changes(&mut wasm, now, &batch).unwrap();
        let b = changes(&mut native, now, &batch).unwrap();
        assert_eq!(bits(&a), bits(&b), "{dir}: on-changes call {call} differs");
        let a = tick(&mut wasm, now + 5).unwrap();
        let b = tick(&mut native, now + 5).unwrap();
        assert_eq!(bits(&a), bits(&b), "{dir}: on-tick call {call} differs");
        compared += a.values.indices.len() + b.values.indices.len();
    }
    assert!(compared > 1000, "{dir}: only {compared} outputs compared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vibration_health_built_as_wasm_and_native_gives_the_same_bits() {
    let pumps = || (0..4).map(|i| format!("plant/pump{i}"));
    let properties = Properties {
        inputs: pumps().map(|p| format!("{p}/vibration_rms")).collect(),
        owned: pumps()
            .flat_map(|p| {
                [
                    "vibration_ewma",
                    "anomaly_score",
                    "vibration_trend",
                    "time_to_alarm",
                ]
                .map(|name| format!("{p}/{name}"))
            })
            .collect(),
        writable: Vec::new(),
    };
    same_bits(
        "plugins/vibration-health",
        "alpha = 0.1\nwarmup = 10\ntrend_window = 60\nalarm = 2.5",
        properties,
        2.0,
        0.3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_chain_built_as_wasm_and_native_gives_the_same_bits() {
    let fridges = || (0..3).map(|i| format!("ward/fridge{i}"));
    let properties = Properties {
        inputs: fridges()
            .flat_map(|f| [format!("{f}/temperature"), format!("{f}/door_open")])
            .collect(),
        owned: fridges()
            .flat_map(|f| {
                [
                    "time_above",
                    "time_below",
                    "excursion_time",
                    "excursion_state",
                    "mkt",
                    "door_open_time",
                ]
                .map(|name| format!("{f}/{name}"))
            })
            .collect(),
        writable: Vec::new(),
    };
    same_bits(
        "plugins/cold-chain",
        "low = 2.0\nhigh = 8.0\nalarm_delay = 1\nalarm_cumulative = 30\nmkt_window = 60",
        properties,
        5.0,
        4.0,
    )
    .await;
}

/// The probe plugin (`tests/plugins/probe`) built natively.
async fn probe() -> PathBuf {
    native("tests/plugins/probe").await
}

/// The config of a daemon with one PLC, a C plugin that averages a holding register (`ewma`) and
/// the native probe with `probe_config` and `probe_extra` settings (`controller`).
fn two_plugins(
    addr: std::net::SocketAddr,
    ewma: &Path,
    probe: &Path,
    probe_settings: &str,
) -> String {
    format!(
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
  {{ name = "temperature", data_type = "float" }},
  {{ name = "average", data_type = "float" }},
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "written", data_type = "float" }},
  {{ name = "refused", data_type = "float" }},
  {{ name = "other", data_type = "float" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.temperature = {{ table = "holding", address = 0 }}
bindings.average = {{ plugin = "ewma" }}
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.written = {{ plugin = "controller" }}
bindings.refused = {{ plugin = "controller" }}
bindings.other = {{ plugin = "controller" }}

[[plugins]]
name = "ewma"
kind = "native"
file = "{ewma}"
subscribe = [{{ assets = "site/heater", properties = ["temperature"] }}]
min_interval = "10ms"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
config = {{ alpha = 0.5 }}

[[plugins]]
name = "controller"
kind = "native"
file = "{probe}"
tick = "50ms"
writes = ["site/heater/setpoint"]
{probe_settings}
"#,
        ewma = ewma.display(),
        probe = probe.display(),
    )
}

/// Waits until the C plugin's average holds the register's first value, 100 (set before the
/// daemon starts, so it is the first value the plugin sees).
async fn averaging(handles: &twinloom::app::Handles) {
    let average = property(handles, "site/heater/average");
    wait_for(handles, average, WAIT, |s| {
        s.quality.is_good() && s.value == Some(Value::Float(100.0))
    })
    .await;
}

/// Runs the daemon with the C plugin and the native probe set up by `probe_settings`, waits until
/// the probe is quarantined with `failures` faults of `kind` counted, its outputs bad, while the C
/// plugin keeps computing; then shuts down within its limit, nothing fatal.
async fn contained_beside_the_c_plugin(
    probe: &Path,
    probe_settings: &str,
    kind: &str,
    failures: f64,
) {
    let dir = tempfile::tempdir().unwrap();
    let ewma = compile_c(dir.path(), "ewma", "plugins/ewma-c/ewma.c");
    let device = SimDevice::new();
    device.set_holding(0, &[100]);
    let server = common::modbus_tcp(&device).await;
    let config = config(&two_plugins(server.addr(), &ewma, probe, probe_settings));
    let handles = start(&config).await;
    averaging(&handles).await;
    let quarantined = r#"twinloom_plugin_quarantined{plugin="controller"}"#;
    common::eventually(
        Duration::from_secs(30),
        || metric(&handles.metrics.encode(), quarantined) == 1.0,
        || handles.metrics.encode(),
    )
    .await;
    let text = handles.metrics.encode();
    let counted = format!(r#"twinloom_plugin_failures_total{{plugin="controller",kind="{kind}"}}"#);
    assert_eq!(metric(&text, &counted), failures, "{text}");
    let written = property(&handles, "site/heater/written");
    assert_eq!(
        handles.twin.sample(written).quality,
        Quality::bad(QualityReason::PluginFailure)
    );
    // The C plugin keeps computing: 0.5 · 300 + 0.5 · 100.
    device.set_holding(0, &[300]);
    let average = property(&handles, "site/heater/average");
    wait_for(&handles, average, WAIT, |s| {
        s.value == Some(Value::Float(200.0))
    })
    .await;
    let stopping = Instant::now();
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    assert!(stopping.elapsed() < Duration::from_secs(5));
    assert_eq!(handles.supervisor.fatal_error(), None);
    server.stop().await;
}

/// A native plugin that panics on every call is caught at the boundary (the Rust SDK's
/// catch_unwind), counted as its fault, restarted and quarantined after `quarantine_after`
/// faults, while the daemon and the C plugin run on; shutdown is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_plugin_that_panics_is_quarantined_while_the_others_run() {
    contained_beside_the_c_plugin(
        &probe().await,
        "quarantine_after = 2\ndeadline = \"10s\"\nconfig = { behaviour = \"panic\" }",
        "trap",
        2.0,
    )
    .await;
}

/// A native call that never returns cannot be interrupted: the caller stops waiting at the
/// deadline, the thread is abandoned and the plugin quarantined at once (not after
/// `quarantine_after` restarts, which would pile up spinning threads); the C plugin runs on and
/// shutdown does not wait for the spinning thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_plugin_that_never_returns_is_abandoned_at_its_deadline_and_quarantined() {
    let probe = probe().await;
    let state = tempfile::tempdir().unwrap();
    let host = NativeHost::new(state.path());
    let library = load(&host, &probe).unwrap();
    let deadline = Duration::from_millis(200);
    let limits = Limits {
        deadline,
        ..Limits::default()
    };
    let mut instance = host.instantiate("spinner", &library, limits).unwrap();
    let properties = Properties {
        inputs: Vec::new(),
        owned: Vec::new(),
        writable: Vec::new(),
    };
    instance
        .init(0, "behaviour = \"spin\"", &properties)
        .unwrap()
        .unwrap();
    let started = Instant::now();
    let error = tick(&mut instance, 1).unwrap_err();
    assert_eq!(error, PluginError::Abandoned(deadline));
    assert!(started.elapsed() < 2 * deadline, "{:?}", started.elapsed());
    assert!(error.quarantines_at_once());
    // The handle stays abandoned: nothing more is handed to the stuck thread.
    assert_eq!(
        tick(&mut instance, 2).unwrap_err(),
        PluginError::Abandoned(deadline)
    );

    contained_beside_the_c_plugin(
        &probe,
        "quarantine_after = 5\ndeadline = \"200ms\"\nconfig = { behaviour = \"spin\" }",
        "abandoned",
        1.0,
    )
    .await;
}

/// A native plugin's proposals are addressed by writable index and decided by the control gate
/// like a Wasm plugin's: the one to its setpoint is written to the PLC, the one past its writable
/// list refused (`writable-list`), and both outcomes come back to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_native_plugins_proposals_go_through_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let ewma = compile_c(dir.path(), "ewma", "plugins/ewma-c/ewma.c");
    let probe = probe().await;
    let device = SimDevice::new();
    device.set_holding(0, &[100]);
    let server = common::modbus_tcp(&device).await;
    let config = config(&two_plugins(
        server.addr(),
        &ewma,
        &probe,
        "deadline = \"10s\"\nconfig = { behaviour = \"propose\", setpoint = 33.0 }",
    ));
    let handles = start(&config).await;
    let at_least_one = |s: &twinloom::twin::Sample| {
        s.value
            .as_ref()
            .and_then(Value::as_f64)
            .is_some_and(|v| v >= 1.0)
    };
    wait_for(
        &handles,
        property(&handles, "site/heater/written"),
        WAIT,
        at_least_one,
    )
    .await;
    wait_for(
        &handles,
        property(&handles, "site/heater/refused"),
        WAIT,
        at_least_one,
    )
    .await;
    assert_eq!(device.holding(10, 1), [33]);
    assert!(
        metric(
            &handles.metrics.encode(),
            r#"twinloom_plugin_rejected_outputs_total{plugin="controller"}"#
        ) >= 1.0
    );
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    server.stop().await;
}

/// Fuel meters WebAssembly; on a native plugin the setting is an error at config load.
#[test]
fn fuel_on_a_native_plugin_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.so"), b"").unwrap();
    let text = r#"
[[plugins]]
name = "p"
kind = "native"
file = "p.so"
fuel = 1000
"#;
    let error = twinloom::config::parse(&dir.path().join("t.toml"), text).unwrap_err();
    let message = error.to_string();
    assert!(
        message.contains("plugins[0].fuel") && message.contains("cannot be metered"),
        "{message}"
    );
}

/// A C plugin whose every output is 42 (for the reload test).
const FORTY_TWO: &str = r#"#include <stddef.h>
#include "twinloom_plugin.h"
static uint32_t index_0 = 0;
static double value_42 = 42.0;
static uint8_t good = TWINLOOM_GOOD;
static int32_t init(const twinloom_host *h, twinloom_str c, const twinloom_properties *p,
                    void **instance, uint8_t *e, size_t cap, size_t *len) {
  (void)h; (void)c; (void)p; (void)e; (void)cap; (void)len;
  *instance = &index_0;
  return TWINLOOM_OK;
}
static int32_t changes(void *i, int64_t now, const twinloom_change_batch *b,
                       const twinloom_proposal_outcome *o, size_t n, twinloom_outputs *out) {
  (void)i; (void)now; (void)b; (void)o; (void)n;
  *out = (twinloom_outputs){.indices = &index_0, .values = &value_42, .qualities = &good, .values_len = 1};
  return TWINLOOM_OK;
}
static int32_t tick(void *i, int64_t now, const twinloom_proposal_outcome *o, size_t n,
                    twinloom_outputs *out) {
  return changes(i, now, NULL, o, n, out);
}
static void free_outputs(void *i, twinloom_outputs *out) { (void)i; (void)out; }
static void drop(void *i) { (void)i; }
static const twinloom_plugin TABLE = {
  .abi_version = TWINLOOM_PLUGIN_ABI_VERSION, .size = sizeof(twinloom_plugin),
  .init = init, .on_changes = changes, .on_tick = tick, .free_outputs = free_outputs, .drop = drop,
};
const twinloom_plugin *twinloom_plugin_entry(void) { return &TABLE; }
"#;

/// Replacing a native plugin's file (same path, new code) swaps the new library in: `dlopen`
/// would hand back the library already loaded for that path, so the daemon loads a copy named
/// by the file's SHA-256 from `<state_dir>/native/`; both versions' copies are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_native_library_is_loaded_anew_from_its_hashed_copy() {
    let dir = tempfile::tempdir().unwrap();
    let ewma = compile_c(dir.path(), "ewma", "plugins/ewma-c/ewma.c");
    let forty_two = compile_c(dir.path(), "forty-two", FORTY_TWO);
    let installed = dir.path().join("plugin.so");
    std::fs::copy(&ewma, &installed).unwrap();
    let state = dir.path().join("state");
    let device = SimDevice::new();
    device.set_holding(0, &[100]);
    let server = common::modbus_tcp(&device).await;
    let mut config = config(&two_plugins(
        server.addr(),
        &installed,
        &probe().await,
        "deadline = \"10s\"\nconfig = { behaviour = \"quality\" }",
    ));
    config.daemon.state_dir = Some(state.clone());
    let handles = start(&config).await;
    averaging(&handles).await;
    // Replaced in one step, as an installer would.
    let partial = dir.path().join("plugin.so.partial");
    std::fs::copy(&forty_two, &partial).unwrap();
    std::fs::rename(&partial, &installed).unwrap();
    let average = property(&handles, "site/heater/average");
    wait_for(&handles, average, WAIT, |s| {
        s.value == Some(Value::Float(42.0))
    })
    .await;
    assert!(
        metric(
            &handles.metrics.encode(),
            r#"twinloom_plugin_reloads_total{plugin="ewma",outcome="swapped"}"#
        ) >= 1.0,
        "{}",
        handles.metrics.encode()
    );
    let copies = std::fs::read_dir(state.join("native"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".so"))
        .count();
    // The C average, the forty-two and the probe.
    assert_eq!(copies, 3);
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    server.stop().await;
}
