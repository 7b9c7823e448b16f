//! Plugins against the running daemon: derived values reach the twin; a trapping plugin is
//! restarted then quarantined; an endless loop is cut at its deadline; the daemon, its sources and
//! the other plugins keep working throughout. The components are hand-written WAT (see
//! `daemon/src/plugins/testdata/template.wat`).

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{config, metric, property, start, wait_for};
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

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
    let server = ModbusServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Framing::Tcp,
        HashMap::from([(1, Arc::clone(&device))]),
    )
    .await
    .unwrap();
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
file = "{dir}/good.wat"
subscribe = [{{ assets = "site/*", properties = ["count"] }}]
min_interval = "20ms"
tick = "20ms"

[[plugins]]
name = "trap"
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

/// Builds the OEE plugin as a WebAssembly component (wasm32-wasip2; `tests/run.sh` installs the
/// target) and returns its path.
fn build_oee_component() -> std::path::PathBuf {
    let target_dir = common::repo().join("target/wasm");
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "twinloom-oee",
                "--target-dir",
            ])
            .arg(&target_dir)
            .current_dir(common::repo())
            .status()
            .expect("cargo runs");
    assert!(
        status.success(),
        "building the OEE component failed (is the wasm32-wasip2 target installed?)"
    );
    target_dir.join("wasm32-wasip2/release/twinloom_oee.wasm")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oee_component_computes_from_live_modbus_values() {
    let component = tokio::task::spawn_blocking(build_oee_component)
        .await
        .unwrap();
    let device = SimDevice::new();
    device.set_holding(0, &[1, 900, 40]); // running; 900 good; 40 rejects
    let server = ModbusServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Framing::Tcp,
        HashMap::from([(1, Arc::clone(&device))]),
    )
    .await
    .unwrap();
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
deadline = "500ms"
config = {{ ideal_rate = 600.0 }}
"#,
        addr = server.addr(),
        file = component.display(),
    ));
    let handles = start(&config).await;
    let quality = property(&handles, "line1/filler/quality");
    let availability = property(&handles, "line1/filler/availability");
    // The counters move on from the first values the plugin saw: 95 good, 5 rejects more.
    wait_for(
        &handles,
        property(&handles, "line1/filler/good_count"),
        WAIT,
        |s| s.value == Some(Value::UInt(900)),
    )
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
file = "{dir}/p.wasm"
tick = "20ms"

[[plugins]]
name = "q"
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
