//! Modbus source end to end: real Modbus TCP and RTU-over-TCP over loopback against the
//! in-process tokio-modbus server of `twinloom-sim`, and against pymodbus (an independent
//! implementation).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{config, metric, property, start, wait_for};
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const LOOPBACK: &str = "127.0.0.1:0";
const WAIT: Duration = Duration::from_secs(10);

async fn server(framing: Framing, devices: &[(u8, &Arc<SimDevice>)]) -> ModbusServer {
    let map: HashMap<u8, Arc<SimDevice>> = devices
        .iter()
        .map(|(unit, d)| (*unit, Arc::clone(d)))
        .collect();
    ModbusServer::bind(LOOPBACK.parse().unwrap(), framing, map)
        .await
        .unwrap()
}

const PROBE_TYPE: &str = r#"
[[types]]
name = "Probe"
properties = [
  { name = "i16", data_type = "integer" },
  { name = "u16", data_type = "unsigned" },
  { name = "i32_abcd", data_type = "integer" },
  { name = "u32_badc", data_type = "unsigned" },
  { name = "f32_cdab", data_type = "float" },
  { name = "f32_dcba", data_type = "float" },
  { name = "u64_cdab", data_type = "unsigned" },
  { name = "i64_abcd", data_type = "integer" },
  { name = "f64_dcba", data_type = "float" },
  { name = "bit3", data_type = "bool" },
  { name = "text", data_type = "string" },
  { name = "coil5", data_type = "bool" },
  { name = "discrete7", data_type = "bool" },
  { name = "scaled", data_type = "float", unit = "CEL" },
]
"#;

const PROBE_BINDINGS: &str = r#"
[assets.bindings]
i16 = { table = "holding", address = 0, encoding = "i16" }
u16 = { table = "holding", address = 1, encoding = "u16" }
i32_abcd = { table = "holding", address = 2, encoding = "i32", order = "ABCD" }
u32_badc = { table = "holding", address = 4, encoding = "u32", order = "BADC" }
f32_cdab = { table = "holding", address = 6, encoding = "f32", order = "CDAB" }
f32_dcba = { table = "holding", address = 8, encoding = "f32", order = "DCBA" }
u64_cdab = { table = "holding", address = 10, encoding = "u64", order = "CDAB" }
i64_abcd = { table = "holding", address = 14, encoding = "i64" }
f64_dcba = { table = "holding", address = 18, encoding = "f64", order = "DCBA" }
bit3 = { table = "holding", address = 22, encoding = "bit", bit = 3 }
text = { table = "holding", address = 23, encoding = "string", length = 3 }
coil5 = { table = "coil", address = 5 }
discrete7 = { table = "discrete", address = 7 }
scaled = { table = "input", address = 100, scale = 0.1, offset = -20 }
"#;

/// Register images written by hand from the byte-order table in the codec's docs.
fn load_probe_image(device: &SimDevice, salt: u16) {
    device.set_holding(0, &[0xFF9C, 0xFF9C, 0xFFFF, 0xFFFE, 0x0100, 0x0000]);
    device.set_holding(6, &[0xE979, 0x42F6, 0x79E9, 0xF642]);
    device.set_holding(10, &[0x0708, 0x0506, 0x0304, 0x0102]);
    device.set_holding(14, &[0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD]);
    device.set_holding(18, &[0x182D, 0x4454, 0xFB21, 0x0940]);
    device.set_holding(22, &[0b1000, 0x4142, 0x4300, 0x0000]);
    device.set_coil(5, true);
    device.set_discrete(7, true);
    device.set_input(100, &[856 + salt]);
}

fn expected_probe(salt: u16) -> Vec<(&'static str, Value)> {
    vec![
        ("i16", Value::Int(-100)),
        ("u16", Value::UInt(65_436)),
        ("i32_abcd", Value::Int(-2)),
        ("u32_badc", Value::UInt(65_536)),
        ("f32_cdab", Value::Float(f64::from(123.456f32))),
        ("f32_dcba", Value::Float(f64::from(123.456f32))),
        ("u64_cdab", Value::UInt(0x0102_0304_0506_0708)),
        ("i64_abcd", Value::Int(-3)),
        ("f64_dcba", Value::Float(std::f64::consts::PI)),
        ("bit3", Value::Bool(true)),
        ("text", Value::String("ABC".into())),
        ("coil5", Value::Bool(true)),
        ("discrete7", Value::Bool(true)),
        ("scaled", Value::Float(f64::from(856 + salt) * 0.1 - 20.0)),
    ]
}

async fn assert_probe(handles: &twinloom::app::Handles, asset: &str, salt: u16) {
    for (name, value) in expected_probe(salt) {
        let id = property(handles, &format!("{asset}/{name}"));
        let sample = wait_for(handles, id, WAIT, |s| s.quality.is_good()).await;
        match (&sample.value, &value) {
            (Some(Value::Float(got)), Value::Float(want)) => {
                assert!((got - want).abs() < 1e-9, "{asset}/{name}: {got} != {want}")
            }
            (got, want) => assert_eq!(got.as_ref(), Some(want), "{asset}/{name}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_every_encoding_and_order_over_modbus_tcp() {
    let device = SimDevice::new();
    load_probe_image(&device, 0);
    let server = server(Framing::Tcp, &[(1, &device)]).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{}"
poll = "50ms"
{PROBE_TYPE}
[[assets]]
path = "site/probe"
type = "Probe"
source = "plc"
{PROBE_BINDINGS}"#,
        server.addr()
    ));
    let handles = start(&config).await;
    assert_probe(&handles, "site/probe", 0).await;
    // One holding block, one coil, one discrete and one input read per poll: requests grow in
    // steps of 4 (the plan joined 26 holding registers into a single read).
    let metrics = handles.metrics.encode();
    let requests = metric(
        &metrics,
        r#"twinloom_modbus_requests_total{source="plc",device="plc"}"#,
    );
    assert!(requests >= 4.0, "{metrics}");
    // Stopped, the poller has finished the cycle it was in: only whole cycles were sent.
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
    assert_eq!(
        device.requests() % 4,
        0,
        "requests arrive in whole poll cycles of 4 reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_gateway_routes_by_unit_id() {
    let (a, b) = (SimDevice::new(), SimDevice::new());
    load_probe_image(&a, 10);
    load_probe_image(&b, 20);
    let gateway = server(Framing::RtuOverTcp, &[(7, &a), (9, &b)]).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "gw"
rtu_over_tcp = "{}"
poll = "50ms"
devices = [{{ id = "a", unit_id = 7 }}, {{ id = "b", unit_id = 9 }}]
{PROBE_TYPE}
[[assets]]
path = "site/a"
type = "Probe"
source = "gw"
device = "a"
{PROBE_BINDINGS}
[[assets]]
path = "site/b"
type = "Probe"
source = "gw"
device = "b"
{PROBE_BINDINGS}"#,
        gateway.addr()
    ));
    let handles = start(&config).await;
    assert_probe(&handles, "site/a", 10).await;
    assert_probe(&handles, "site/b", 20).await;
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

fn simple_config(addr: SocketAddr, extra: &str) -> twinloom::config::Config {
    config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "50ms"
timeout = "200ms"
backoff_min = "50ms"
backoff_max = "500ms"
{extra}

[[types]]
name = "Meter"
properties = [{{ name = "power", data_type = "float", unit = "kW" }}]

[[assets]]
path = "site/meter"
type = "Meter"
source = "plc"
bindings.power = {{ table = "holding", address = 0, encoding = "f32" }}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_device_restarts_without_restarting_the_daemon() {
    let device = SimDevice::new();
    device.set_holding(0, &[0x4120, 0x0000]); // 10.0
    let first = server(Framing::Tcp, &[(1, &device)]).await;
    let addr = first.addr();
    let handles = start(&simple_config(addr, "")).await;
    let power = property(&handles, "site/meter/power");
    let good = wait_for(&handles, power, WAIT, |s| s.quality.is_good()).await;
    assert_eq!(good.value, Some(Value::Float(10.0)));

    first.stop().await;
    // The connection breaks, then reconnect attempts are refused: no connection.
    let bad = wait_for(&handles, power, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::NoConnection)
    })
    .await;
    // The last value and its source timestamp are kept.
    assert_eq!(bad.value, Some(Value::Float(10.0)));
    assert_eq!(bad.source_time, good.source_time);

    // Same port, new value: the source reconnects on its own.
    device.set_holding(0, &[0x41A0, 0x0000]); // 20.0
    let restarted_at = tokio::time::Instant::now();
    let _second = server_on(addr, &device).await;
    let back = wait_for(&handles, power, WAIT, |s| s.quality.is_good()).await;
    let took = restarted_at.elapsed();
    assert_eq!(back.value, Some(Value::Float(20.0)));
    // Within the backoff maximum (500 ms) plus one connect and one poll, with slack for a
    // loaded CI machine.
    assert!(
        took < Duration::from_millis(500 + 200 + 50 + 1250),
        "recovery took {took:?}"
    );
    let metrics = handles.metrics.encode();
    assert!(
        metric(
            &metrics,
            r#"twinloom_modbus_reconnects_total{source="plc"}"#
        ) >= 1.0,
        "{metrics}"
    );
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

/// A source whose first attempts are refused is "Connected", not "Reconnected", when the device
/// comes up: a reconnect is counted only after a connection that was up is lost (the link state;
/// a failed first attempt used to count the first connection as a reconnect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_connection_after_refused_attempts_is_not_a_reconnect() {
    const RECONNECTS: &str = r#"twinloom_modbus_reconnects_total{source="plc"}"#;
    const REFUSED: &str =
        r#"twinloom_modbus_errors_total{source="plc",device="plc",kind="connection"}"#;
    const CONNECTED: &str = r#"twinloom_modbus_connected{source="plc"}"#;
    let free = std::net::TcpListener::bind(LOOPBACK).unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let handles = start(&simple_config(addr, "")).await;
    let power = property(&handles, "site/meter/power");
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), REFUSED) >= 2.0,
        || handles.metrics.encode(),
    )
    .await;

    let device = SimDevice::new();
    device.set_holding(0, &[0x4120, 0x0000]); // 10.0
    let first = server_on(addr, &device).await;
    wait_for(&handles, power, WAIT, |s| s.quality.is_good()).await;
    let metrics = handles.metrics.encode();
    assert_eq!(metric(&metrics, RECONNECTS), 0.0, "{metrics}");
    assert_eq!(metric(&metrics, CONNECTED), 1.0, "{metrics}");

    // Lost (the source says so: its gauge drops) and back: that is one reconnect.
    first.stop().await;
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), CONNECTED) == 0.0,
        || handles.metrics.encode(),
    )
    .await;
    let _second = server_on(addr, &device).await;
    wait_for(&handles, power, WAIT, |s| s.quality.is_good()).await;
    let metrics = handles.metrics.encode();
    assert_eq!(metric(&metrics, RECONNECTS), 1.0, "{metrics}");
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

async fn server_on(addr: SocketAddr, device: &Arc<SimDevice>) -> ModbusServer {
    let map = HashMap::from([(1u8, Arc::clone(device))]);
    ModbusServer::bind(addr, Framing::Tcp, map).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_is_isolated_demoted_and_promoted_again() {
    let (alive, silent) = (SimDevice::new(), SimDevice::new());
    alive.set_holding(0, &[1]);
    silent.set_holding(0, &[2]);
    let gateway = server(Framing::RtuOverTcp, &[(1, &alive), (2, &silent)]).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "bus"
rtu_over_tcp = "{}"
poll = "50ms"
timeout = "100ms"
retries = 1
demote_after = 3
demoted_poll = "1s"
devices = [{{ id = "alive", unit_id = 1 }}, {{ id = "silent", unit_id = 2 }}]

[[types]]
name = "Counter"
properties = [{{ name = "count", data_type = "unsigned" }}]

[[assets]]
path = "site/alive"
type = "Counter"
source = "bus"
device = "alive"
bindings.count = {{ table = "holding", address = 0 }}

[[assets]]
path = "site/silent"
type = "Counter"
source = "bus"
device = "silent"
bindings.count = {{ table = "holding", address = 0 }}
"#,
        gateway.addr()
    ));
    let handles = start(&config).await;
    let (alive_count, silent_count) = (
        property(&handles, "site/alive/count"),
        property(&handles, "site/silent/count"),
    );
    wait_for(&handles, silent_count, WAIT, |s| {
        s.value == Some(Value::UInt(2))
    })
    .await;

    silent.behave(|b| b.silent = true);
    let bad = wait_for(&handles, silent_count, WAIT, |s| !s.quality.is_good()).await;
    assert_eq!(bad.quality, Quality::bad(QualityReason::Timeout));
    assert_eq!(bad.value, Some(Value::UInt(2)));

    // While the silent device times out, the live one stays good and follows changes: each
    // poll cycle costs it at most one timeout (100 ms).
    for value in 10..15u16 {
        alive.set_holding(0, &[value]);
        let changed_at = tokio::time::Instant::now();
        wait_for(&handles, alive_count, WAIT, |s| {
            s.value == Some(Value::UInt(u64::from(value)))
        })
        .await;
        let took = changed_at.elapsed();
        assert!(
            took < Duration::from_millis(50 + 100 + 100 + 1000),
            "change {value} took {took:?}"
        );
    }

    let demoted = r#"twinloom_modbus_device_demoted{source="bus",device="silent"}"#;
    common::eventually(
        WAIT,
        || !(metric(&handles.metrics.encode(), demoted) != 1.0),
        || "never demoted".to_string(),
    )
    .await;
    // Demoted: polled once per second while the live device is polled every 50 ms.
    let (alive_before, silent_before) = (alive.requests(), silent.requests());
    while alive.requests() < alive_before + 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let silent_delta = silent.requests() - silent_before;
    assert!(
        silent_delta <= 3,
        "demoted device got {silent_delta} requests while the live one got 20"
    );
    assert!(handles.twin.sample(alive_count).quality.is_good());

    // It answers again: good, and promoted back.
    silent.set_holding(0, &[3]);
    silent.behave(|b| b.silent = false);
    wait_for(&handles, silent_count, WAIT, |s| {
        s.quality.is_good() && s.value == Some(Value::UInt(3))
    })
    .await;
    let metrics = handles.metrics.encode();
    assert_eq!(metric(&metrics, demoted), 0.0, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"twinloom_modbus_demotions_total{source="bus",device="silent"}"#
        ),
        1.0
    );
    assert!(
        metric(
            &metrics,
            r#"twinloom_modbus_errors_total{source="bus",device="silent",kind="timeout"}"#
        ) >= 3.0
    );
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learns_a_devices_read_limit_and_pins_errors_on_the_bad_binding() {
    let device = SimDevice::new();
    let words: Vec<u16> = (0..64).map(|i| 1000 + i).collect();
    device.set_holding(0, &words);
    device.behave(|b| {
        b.max_read_registers = 10;
        b.missing_registers.push(30..31);
    });
    let server = server(Framing::Tcp, &[(1, &device)]).await;
    let properties: String = (0..30)
        .map(|i| format!("{{ name = \"r{}\", data_type = \"unsigned\" }},", i * 2))
        .collect();
    let bindings: String = (0..30)
        .map(|i| format!("r{0} = {{ table = \"holding\", address = {0} }}\n", i * 2))
        .collect();
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{}"
poll = "50ms"

[[types]]
name = "Block"
properties = [{properties}]

[[assets]]
path = "site/block"
type = "Block"
source = "plc"
[assets.bindings]
{bindings}"#,
        server.addr()
    ));
    let handles = start(&config).await;
    for i in 0..30u16 {
        let address = i * 2;
        let id = property(&handles, &format!("site/block/r{address}"));
        if address == 30 {
            let sample = wait_for(&handles, id, WAIT, |s| {
                s.quality.reason == QualityReason::ConfigurationError
            })
            .await;
            assert_eq!(sample.value, None);
        } else {
            let sample = wait_for(&handles, id, WAIT, |s| s.quality.is_good()).await;
            assert_eq!(sample.value, Some(Value::UInt(u64::from(1000 + address))));
        }
    }
    // Learned: further polls cause no more "too long" exceptions.
    let too_long =
        r#"twinloom_modbus_errors_total{source="plc",device="plc",kind="illegal_data_value"}"#;
    let before = metric(&handles.metrics.encode(), too_long);
    assert!(before >= 1.0);
    let requests = device.requests();
    while device.requests() < requests + 40 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metric(&handles.metrics.encode(), too_long), before);
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_apply_inverse_scaling_and_encoding() {
    let device = SimDevice::new();
    device.set_holding(20, &[0b1000_0001]);
    let server = server(Framing::Tcp, &[(1, &device)]).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{}"
poll = "50ms"

[[types]]
name = "Drive"
properties = [
  {{ name = "speed_setpoint", data_type = "float", unit = "1/min", access = "read-write" }},
  {{ name = "torque_limit", data_type = "float", unit = "P1", access = "read-write" }},
  {{ name = "enable", data_type = "bool", access = "read-write" }},
  {{ name = "run", data_type = "bool", access = "read-write" }},
  {{ name = "temperature", data_type = "float" }},
]

[[assets]]
path = "site/drive"
type = "Drive"
source = "plc"
[assets.bindings]
speed_setpoint = {{ table = "holding", address = 0, encoding = "u16", scale = 0.1 }}
torque_limit = {{ table = "holding", address = 2, encoding = "f32", order = "CDAB" }}
enable = {{ table = "holding", address = 20, encoding = "bit", bit = 2 }}
run = {{ table = "coil", address = 3 }}
temperature = {{ table = "input", address = 0 }}
"#,
        server.addr()
    ));
    let handles = start(&config).await;
    let id = |name: &str| property(&handles, &format!("site/drive/{name}"));
    wait_for(&handles, id("speed_setpoint"), WAIT, |s| {
        s.quality.is_good()
    })
    .await;

    handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("speed_setpoint"),
            Value::Float(1234.5),
            WAIT,
        ))
        .await
        .unwrap();
    assert_eq!(device.holding(0, 1), vec![12_345]);
    handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("torque_limit"),
            Value::Float(1.5),
            WAIT,
        ))
        .await
        .unwrap();
    assert_eq!(device.holding(2, 2), vec![0x0000, 0x3FC0]);
    handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("enable"),
            Value::Bool(true),
            WAIT,
        ))
        .await
        .unwrap();
    // Bit 2 set, bits 0 and 7 untouched (mask write, function code 22).
    assert_eq!(device.holding(20, 1), vec![0b1000_0101]);
    handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("run"),
            Value::Bool(true),
            WAIT,
        ))
        .await
        .unwrap();
    assert!(device.with_tables(|t| t.coils[3]));

    // Out of the encoding's range, and a read-only table: refused, nothing written.
    let too_big = handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("speed_setpoint"),
            Value::Float(7000.0),
            WAIT,
        ))
        .await;
    assert!(
        matches!(too_big, Err(twinloom::twin::WriteError::OutOfRange { .. })),
        "{too_big:?}"
    );
    assert_eq!(device.holding(0, 1), vec![12_345]);
    let read_only = handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            id("temperature"),
            Value::Float(1.0),
            WAIT,
        ))
        .await;
    assert_eq!(
        read_only,
        Err(twinloom::twin::WriteError::NotWritable {
            detail: "the input table cannot be written".into()
        })
    );

    // The twin reads the written values back.
    let sample = wait_for(&handles, id("speed_setpoint"), WAIT, |s| {
        s.value == Some(Value::Float(1234.5))
    })
    .await;
    assert!(sample.quality.is_good());
    wait_for(&handles, id("enable"), WAIT, |s| {
        s.value == Some(Value::Bool(true))
    })
    .await;
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

/// A pymodbus server process; killed when dropped.
struct PyModbus {
    child: std::process::Child,
    port: u16,
}

impl PyModbus {
    fn start(framing: &str) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::python())
            .arg(common::repo().join("tests/peers/modbus_server.py"))
            .args(["--framing", framing])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("pymodbus server did not start: {line:?}"));
        Self { child, port }
    }
}

impl Drop for PyModbus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_pymodbus_over_tcp_and_rtu_over_tcp() {
    for (framing, key) in [("tcp", "tcp"), ("rtu-over-tcp", "rtu_over_tcp")] {
        let peer = PyModbus::start(framing);
        let config = config(&format!(
            r#"
[[sources.modbus]]
id = "py"
{key} = "127.0.0.1:{port}"
poll = "50ms"

[[types]]
name = "Mixed"
properties = [
  {{ name = "i16", data_type = "integer" }},
  {{ name = "u16", data_type = "unsigned" }},
  {{ name = "i32", data_type = "integer" }},
  {{ name = "u32_cdab", data_type = "unsigned" }},
  {{ name = "f32_badc", data_type = "float" }},
  {{ name = "f32_dcba", data_type = "float" }},
  {{ name = "i64_cdab", data_type = "integer" }},
  {{ name = "u64_dcba", data_type = "unsigned" }},
  {{ name = "f64", data_type = "float" }},
  {{ name = "f64_badc", data_type = "float" }},
  {{ name = "bit10", data_type = "bool" }},
  {{ name = "tag", data_type = "string" }},
  {{ name = "temperature", data_type = "float", unit = "CEL" }},
  {{ name = "coil3", data_type = "bool" }},
  {{ name = "coil4", data_type = "bool" }},
  {{ name = "discrete9", data_type = "bool" }},
]

[[assets]]
path = "site/py"
type = "Mixed"
source = "py"
[assets.bindings]
i16 = {{ table = "holding", address = 0, encoding = "i16" }}
u16 = {{ table = "holding", address = 1 }}
i32 = {{ table = "holding", address = 2, encoding = "i32" }}
u32_cdab = {{ table = "holding", address = 4, encoding = "u32", order = "CDAB" }}
f32_badc = {{ table = "holding", address = 6, encoding = "f32", order = "BADC" }}
f32_dcba = {{ table = "holding", address = 8, encoding = "f32", order = "DCBA" }}
i64_cdab = {{ table = "holding", address = 10, encoding = "i64", order = "CDAB" }}
u64_dcba = {{ table = "holding", address = 14, encoding = "u64", order = "DCBA" }}
f64 = {{ table = "holding", address = 18, encoding = "f64" }}
f64_badc = {{ table = "holding", address = 22, encoding = "f64", order = "BADC" }}
bit10 = {{ table = "holding", address = 26, encoding = "bit", bit = 10 }}
tag = {{ table = "holding", address = 27, encoding = "string", length = 4 }}
temperature = {{ table = "input", address = 0, scale = 0.01 }}
coil3 = {{ table = "coil", address = 3 }}
coil4 = {{ table = "coil", address = 4 }}
discrete9 = {{ table = "discrete", address = 9 }}
"#,
            port = peer.port
        ));
        let handles = start(&config).await;
        let expected = [
            ("i16", Value::Int(-12_345)),
            ("u16", Value::UInt(54_321)),
            ("i32", Value::Int(-123_456_789)),
            ("u32_cdab", Value::UInt(3_000_000_000)),
            ("f32_badc", Value::Float(3.5)),
            ("f32_dcba", Value::Float(-1.25)),
            ("i64_cdab", Value::Int(-9_000_000_000_000_000)),
            ("u64_dcba", Value::UInt(18_000_000_000_000_000_000)),
            ("f64", Value::Float(std::f64::consts::E)),
            ("f64_badc", Value::Float(-0.001)),
            ("bit10", Value::Bool(true)),
            ("tag", Value::String("PUMP-07".into())),
            ("temperature", Value::Float(23.150000000000002)),
            ("coil3", Value::Bool(true)),
            ("coil4", Value::Bool(false)),
            ("discrete9", Value::Bool(true)),
        ];
        for (name, value) in expected {
            let id = property(&handles, &format!("site/py/{name}"));
            let sample = wait_for(&handles, id, WAIT, |s| s.quality.is_good()).await;
            assert_eq!(sample.value, Some(value), "{framing}: {name}");
        }
        handles.supervisor.shutdown(Duration::from_secs(2)).await;
    }
}

/// A linked pair of pseudo-terminals made by `socat` (a null-modem cable in software).
struct PtyPair {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl PtyPair {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let end = |name: &str| format!("pty,raw,echo=0,link={}", dir.path().join(name).display());
        let child = std::process::Command::new("socat")
            .args([end("plc"), end("daemon")])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat is installed by the README's test command (apt package `socat`)");
        let pair = Self { child, dir };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !(pair.path("plc").exists() && pair.path("daemon").exists()) {
            assert!(
                std::time::Instant::now() < deadline,
                "socat made no pty pair"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        pair
    }

    fn path(&self, end: &str) -> std::path::PathBuf {
        self.dir.path().join(end)
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_writes_two_devices_over_an_rtu_serial_line() {
    let pty = PtyPair::new();
    let (a, b) = (SimDevice::new(), SimDevice::new());
    load_probe_image(&a, 30);
    load_probe_image(&b, 40);
    let plc_end = pty.path("plc").display().to_string();
    let _line = ModbusServer::serial(
        &plc_end,
        19_200,
        HashMap::from([(3u8, Arc::clone(&a)), (4u8, Arc::clone(&b))]),
    )
    .unwrap();
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "rs485"
rtu = {{ port = "{}", baud = 19200, parity = "even" }}
poll = "100ms"
timeout = "500ms"
devices = [{{ id = "a", unit_id = 3 }}, {{ id = "b", unit_id = 4 }}]
{PROBE_TYPE}
[[assets]]
path = "site/a"
type = "Probe"
source = "rs485"
device = "a"
{PROBE_BINDINGS}
[[assets]]
path = "site/b"
type = "Probe"
source = "rs485"
device = "b"
{PROBE_BINDINGS}"#,
        pty.path("daemon").display()
    ));
    let handles = start(&config).await;
    assert_probe(&handles, "site/a", 30).await;
    assert_probe(&handles, "site/b", 40).await;
    // A write travels the same line to the right unit.
    handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            property(&handles, "site/b/u16"),
            Value::UInt(4242),
            WAIT,
        ))
        .await
        .unwrap();
    assert_eq!(b.holding(1, 1), vec![4242]);
    assert_eq!(a.holding(1, 1), vec![0xFF9C]);
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

/// Every write the gate carries out has its intent on disk before the PLC is written and its
/// outcome after; refusals (limits, NaN) are summarised per origin and rule; `twinloom audit
/// verify` accepts the log, and names the record after one that was edited. Without an audit
/// log the gate refuses writes and the PLC sees nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_audited_and_an_edited_record_is_found() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write", limits = [0, 100] }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#,
        state = state.path().display(),
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    wait_for(&handles, setpoint, Duration::from_secs(10), |s| {
        s.quality.is_good()
    })
    .await;
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |value: f64| {
        handles
            .control
            .write(setpoint, Value::Float(value), operator.clone())
    };
    assert_eq!(write(42.0).await, Ok(()));
    assert_eq!(device.holding(10, 1), [42]);
    assert!(matches!(
        write(500.0).await,
        Err(ControlError::OutOfLimits { .. })
    ));
    assert!(matches!(
        write(f64::NAN).await,
        Err(ControlError::NotFinite(_))
    ));
    assert!(matches!(
        write(f64::NAN).await,
        Err(ControlError::NotFinite(_))
    ));

    // A gate without an audit log refuses: fail safe.
    let blind = twinloom::control::spawn(
        Arc::clone(&handles.twin),
        handles.writers.clone(),
        twinloom::control::GateRecords::audit_only(Err("the audit disk is gone".into())),
        Default::default(),
        Default::default(),
        &handles.metrics.control,
        &handles.supervisor,
    );
    assert!(matches!(
        blind
            .write(setpoint, Value::Float(7.0), operator.clone())
            .await,
        Err(ControlError::AuditUnavailable(_))
    ));
    assert_eq!(device.holding(10, 1), [42]);
    // Stopping writes the last refusal summary.
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);

    let audit = state.path().join("audit");
    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_twinloom"))
            .args(["audit", "verify"])
            .arg(&audit)
            .output()
            .unwrap()
    };
    let output = verify();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Intent, outcome, and one summary per rule (bounds once, finite twice).
    assert!(stdout.contains(": 4 records in 1 segments"), "{stdout}");
    assert!(stdout.contains("every intent has its outcome"), "{stdout}");
    let segment = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .unwrap();
    let text = std::fs::read_to_string(&segment).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records[0]["kind"], "intent");
    assert_eq!(records[0]["requested"], 42.0);
    assert_eq!(records[0]["user"], "operator");
    assert_eq!(records[1]["kind"], "outcome");
    assert_eq!(records[1]["intent"], 0);
    assert_eq!(records[1]["outcome"], "written");
    let refusals: Vec<(String, u64)> = records[2..]
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap().to_owned(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(refusals, [("bounds".into(), 1), ("finite".into(), 2)]);

    // Someone changes what was requested: the next record's `prev` no longer matches.
    std::fs::write(
        &segment,
        text.replacen("\"requested\":42.0", "\"requested\":4.0", 1),
    )
    .unwrap();
    let output = verify();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("record 1") && stderr.contains("chain is broken"),
        "{stderr}"
    );
}

/// The gate's rules, each deciding on a real PLC's setpoints: a value past the limits is clamped
/// when the property says so, a second write within `min_write_interval` and a step steeper than
/// `max_rate` are refused, and an origin past its writes per minute is refused; every refusal
/// leaves the PLC as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gates_rules_clamp_space_and_ration_writes() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[control]
max_writes_per_origin_per_minute = 3

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "spaced", data_type = "float", access = "read-write", min_write_interval = "1h" }},
  {{ name = "ramped", data_type = "float", access = "read-write", limits = [0, 100], clamp = true, max_rate = 1.0 }},
  {{ name = "free", data_type = "float", access = "read-write" }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.spaced = {{ table = "holding", address = 10 }}
bindings.ramped = {{ table = "holding", address = 11 }}
bindings.free = {{ table = "holding", address = 12 }}
"#,
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let [spaced, ramped, free] =
        ["spaced", "ramped", "free"].map(|name| property(&handles, &format!("site/heater/{name}")));
    wait_for(&handles, free, Duration::from_secs(10), |s| {
        s.quality.is_good()
    })
    .await;
    let origin = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |property, value: f64| {
        handles
            .control
            .write(property, Value::Float(value), origin.clone())
    };
    // The rate counts from the value the device holds (0) from the start: all the way up at
    // once is too fast, however long ago the gate started (well under 100 s); a value below
    // the limits is clamped to them (0: no step at all).
    assert!(matches!(
        write(ramped, 500.0).await,
        Err(ControlError::TooFast { max, .. }) if max == 1.0
    ));
    assert_eq!(write(ramped, -5.0).await, Ok(()));
    assert_eq!(device.holding(11, 1), [0]);
    // One unit up at least a second later is within 1 unit per second; all the way up at once
    // is not (it would take 99 s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(write(ramped, 1.0).await, Ok(()));
    assert!(matches!(
        write(ramped, 100.0).await,
        Err(ControlError::TooFast { max, .. }) if max == 1.0
    ));
    assert_eq!(device.holding(11, 1), [1]);
    // A second write within the hour between writes is refused.
    assert_eq!(write(spaced, 1.0).await, Ok(()));
    assert!(matches!(
        write(spaced, 2.0).await,
        Err(ControlError::TooSoon { .. })
    ));
    assert_eq!(device.holding(10, 1), [1]);
    // Three writes accepted this minute: the fourth is over the origin's budget, another origin
    // still has its own.
    assert_eq!(
        write(free, 5.0).await,
        Err(ControlError::OverBudget { per_minute: 3 })
    );
    assert_eq!(device.holding(12, 1), [0]);
    let other = Origin::OpcUa {
        user: "engineer".into(),
    };
    assert_eq!(
        handles.control.write(free, Value::Float(6.0), other).await,
        Ok(())
    );
    assert_eq!(device.holding(12, 1), [6]);
    // Every decision is counted by origin kind, rule and outcome.
    let text = handles.metrics.encode();
    for (series, count) in [
        (
            r#"twinloom_control_decisions_total{origin="opcua",rule="clamped-to-bounds",outcome="written"}"#,
            1.0,
        ),
        (
            r#"twinloom_control_decisions_total{origin="opcua",rule="accepted",outcome="written"}"#,
            3.0,
        ),
        (
            r#"twinloom_control_decisions_total{origin="opcua",rule="max-rate",outcome="refused"}"#,
            2.0,
        ),
        (
            r#"twinloom_control_decisions_total{origin="opcua",rule="min-interval",outcome="refused"}"#,
            1.0,
        ),
        (
            r#"twinloom_control_decisions_total{origin="opcua",rule="origin-budget",outcome="refused"}"#,
            1.0,
        ),
        ("twinloom_control_write_latency_seconds_count", 4.0),
        ("twinloom_control_armed", 0.0),
    ] {
        assert_eq!(metric(&text, series), count, "{series}\n{text}");
    }
    assert!(
        metric(&text, "twinloom_control_audit_commit_seconds_count") >= 4.0,
        "{text}"
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Writes run concurrently per property: a PLC that never answers holds up only its own
/// property's write (ended by the gate's write timeout), not another PLC's; while it is in
/// flight, newer proposals for the same property replace the waiting one (`superseded`), and a
/// waiting proposal whose proposer has gone is never written (`expired`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_plc_delays_only_its_own_writes_and_waiting_ones_are_superseded() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;

    let device = SimDevice::new();
    let live = common::modbus_tcp(&device).await;
    // A PLC that accepts the connection and never answers.
    let helpers = twinloom::runtime::Supervisor::new();
    let silent_addr = common::silent_plc(&helpers).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[control]
# Long enough that the live PLC's write ends first even on a loaded machine.
write_timeout = "10s"
armed = true

[[sources.modbus]]
id = "live"
tcp = "{live}"
poll = "20ms"

[[sources.modbus]]
id = "silent"
tcp = "{silent_addr}"
poll = "1h"
timeout = "1h"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/live"
type = "Heater"
source = "live"
bindings.setpoint = {{ table = "holding", address = 10 }}

[[assets]]
path = "site/silent"
type = "Heater"
source = "silent"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#,
        state = state.path().display(),
        live = live.addr(),
    ));
    let handles = start(&config).await;
    let live_setpoint = property(&handles, "site/live/setpoint");
    let silent_setpoint = property(&handles, "site/silent/setpoint");
    wait_for(&handles, live_setpoint, Duration::from_secs(10), |s| {
        s.quality.is_good()
    })
    .await;
    let pid = Origin::Plugin { name: "pid".into() };
    let propose = |value: f64| {
        handles
            .control
            .propose(silent_setpoint, Value::Float(value), pid.clone(), false)
            .unwrap()
    };
    // In order: the first is carried out (and hangs), the second waits, the third replaces it,
    // the fourth replaces the third and its proposer goes away at once.
    let mut first = propose(1.0);
    let second = propose(2.0);
    let third = propose(3.0);
    drop(propose(4.0));
    assert_eq!(second.await.unwrap(), Err(ControlError::Superseded));
    assert_eq!(third.await.unwrap(), Err(ControlError::Superseded));
    // The live PLC's write is carried out while the silent one's is still in flight.
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    assert_eq!(
        handles
            .control
            .write(live_setpoint, Value::Float(5.0), operator)
            .await,
        Ok(())
    );
    assert_eq!(device.holding(10, 1), [5]);
    assert!(
        first.try_recv().is_err(),
        "the silent PLC's write ended too early"
    );
    // The silent PLC's write ends at the gate's write timeout.
    assert_eq!(
        first.await.unwrap(),
        Err(ControlError::Source(WriteError::Timeout))
    );
    // The fourth's turn comes next: its proposer has gone, so it expires (counted before the
    // gate stops: shutdown does not wait for writes in flight).
    let expired =
        r#"twinloom_control_decisions_total{origin="plugin",rule="expired",outcome="refused"}"#;
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), expired) == 1.0,
        || handles.metrics.encode(),
    )
    .await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    helpers.shutdown(Duration::from_secs(5)).await;

    // The audit log: the carried-out writes have intent and outcome; the superseded and the
    // expired ones only count in the summaries (nothing was written for them).
    let report = twinloom::control::audit::verify(&state.path().join("audit"), &[]).unwrap();
    assert!(report.open_intents.is_empty(), "{report:?}");
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let kinds: Vec<String> = journal
        .records
        .iter()
        .map(|r| {
            let kind = r["kind"].as_str().unwrap();
            match r.get("rule").and_then(|v| v.as_str()) {
                Some(rule) if kind == "refusals" => format!("{kind}:{rule}:{}", r["count"]),
                _ => kind.to_owned(),
            }
        })
        .collect();
    let count = |k: &str| kinds.iter().filter(|x| x.as_str() == k).count();
    assert_eq!(count("intent"), 2, "{kinds:?}");
    assert_eq!(count("outcome"), 2, "{kinds:?}");
    assert_eq!(count("refusals:superseded:2"), 1, "{kinds:?}");
    assert_eq!(count("refusals:expired:1"), 1, "{kinds:?}");
}

/// Interlocks: a write to a guarded property is carried out while the condition holds, refused
/// (rule `interlock`, with the inputs' values) when it does not, refused when an input is not
/// Good, and checked again just before execution: a write that waited while the condition
/// stopped holding is never written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interlocks_hold_writes_while_their_condition_fails_or_an_input_is_not_good() {
    use twinloom::control::{ControlError, Origin};

    let (sensors, actuators) = (SimDevice::new(), SimDevice::new());
    let mut sensor_plc = common::modbus_tcp(&sensors).await;
    let actuator_plc = common::modbus_tcp(&actuators).await;
    let helpers = twinloom::runtime::Supervisor::new();
    let silent_addr = common::silent_plc(&helpers).await;
    sensors.set_input(0, &[50]);
    sensors.set_coil(0, true);
    let config = config(&format!(
        r#"
[control]
write_timeout = "10s"
armed = true

[[control.interlocks]]
name = "dry-run"
applies_to = ["site/heater/power", "site/stuck/power"]
condition = "site/tank/level < 95 and site/tank/running"

[[sources.modbus]]
id = "sensors"
tcp = "{sensors}"
poll = "20ms"
timeout = "200ms"

[[sources.modbus]]
id = "actuators"
tcp = "{actuators}"
poll = "20ms"

[[sources.modbus]]
id = "silent"
tcp = "{silent_addr}"
poll = "1h"
timeout = "1h"

[[types]]
name = "Tank"
properties = [
  {{ name = "level", data_type = "float", unit = "%" }},
  {{ name = "running", data_type = "bool" }},
]

[[types]]
name = "Heater"
properties = [{{ name = "power", data_type = "float", unit = "%", access = "read-write" }}]

[[assets]]
path = "site/tank"
type = "Tank"
source = "sensors"
bindings.level = {{ table = "input", address = 0 }}
bindings.running = {{ table = "coil", address = 0 }}

[[assets]]
path = "site/heater"
type = "Heater"
source = "actuators"
bindings.power = {{ table = "holding", address = 10 }}

[[assets]]
path = "site/stuck"
type = "Heater"
source = "silent"
bindings.power = {{ table = "holding", address = 10 }}
"#,
        sensors = sensor_plc.addr(),
        actuators = actuator_plc.addr(),
    ));
    let handles = start(&config).await;
    let [level, running, power, stuck] = [
        "site/tank/level",
        "site/tank/running",
        "site/heater/power",
        "site/stuck/power",
    ]
    .map(|path| property(&handles, path));
    for input in [level, running] {
        wait_for(&handles, input, WAIT, |s| s.quality.is_good()).await;
    }
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |value: f64| {
        handles
            .control
            .write(power, Value::Float(value), operator.clone())
    };
    // The condition holds: written.
    assert_eq!(write(30.0).await, Ok(()));
    assert_eq!(actuators.holding(10, 1), [30]);
    // The pump stops: refused, and the refusal says why with the inputs' values.
    sensors.set_coil(0, false);
    wait_for(&handles, running, WAIT, |s| {
        s.value == Some(Value::Bool(false))
    })
    .await;
    match write(40.0).await {
        Err(ControlError::Interlock { name, why }) => {
            assert_eq!(name, "dry-run");
            assert_eq!(
                why,
                "`site/tank/level < 95 and site/tank/running` is false (site/tank/level = 50, site/tank/running = false)"
            );
        }
        other => panic!("expected the interlock to hold the write, got {other:?}"),
    }
    assert_eq!(actuators.holding(10, 1), [30]);
    sensors.set_coil(0, true);
    wait_for(&handles, running, WAIT, |s| {
        s.value == Some(Value::Bool(true))
    })
    .await;
    assert_eq!(write(41.0).await, Ok(()));

    // Checked again before execution: a write waiting behind one in flight is refused once the
    // level rises above 95, though it was accepted when proposed.
    let pid = Origin::Plugin { name: "pid".into() };
    let propose = |value: f64| {
        handles
            .control
            .propose(stuck, Value::Float(value), pid.clone(), false)
            .unwrap()
    };
    let mut in_flight = propose(10.0);
    let waiting = propose(20.0);
    sensors.set_input(0, &[97]);
    wait_for(&handles, level, WAIT, |s| {
        s.value == Some(Value::Float(97.0))
    })
    .await;
    assert!(
        in_flight.try_recv().is_err(),
        "the silent PLC's write ended before the level rose"
    );
    assert!(matches!(
        waiting.await.unwrap(),
        Err(ControlError::Interlock { name, .. }) if name == "dry-run"
    ));

    // An input that is not Good holds writes whatever its last value said.
    sensors.set_input(0, &[50]);
    wait_for(&handles, level, WAIT, |s| {
        s.value == Some(Value::Float(50.0))
    })
    .await;
    sensor_plc.halt().await;
    wait_for(&handles, level, WAIT, |s| !s.quality.is_good()).await;
    match write(42.0).await {
        Err(ControlError::Interlock { why, .. }) => {
            assert!(
                why.starts_with("input `site/tank/level` is not Good"),
                "{why}"
            );
        }
        other => panic!("expected the interlock to hold the write, got {other:?}"),
    }
    assert_eq!(actuators.holding(10, 1), [41]);
    let text = handles.metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"twinloom_control_decisions_total{origin="opcua",rule="interlock",outcome="refused"}"#
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"twinloom_control_decisions_total{origin="plugin",rule="interlock",outcome="refused"}"#
        ),
        1.0,
        "{text}"
    );
    drop(in_flight);
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    helpers.shutdown(Duration::from_secs(5)).await;
}

/// A write to a source that is not connected is answered at once with "not connected" (OPC UA:
/// Bad_NoCommunication), never held until a reconnect (here an hour away) or the write timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_disconnected_source_is_answered_at_once() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;

    // A loopback port nobody listens on: every connect is refused.
    let closed = std::net::TcpListener::bind(LOOPBACK)
        .unwrap()
        .local_addr()
        .unwrap();
    let config = config(&format!(
        r#"
[control]
write_timeout = "10s"

[[sources.modbus]]
id = "down"
tcp = "{closed}"
poll = "20ms"
backoff_min = "1h"
backoff_max = "1h"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "down"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#
    ));
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    wait_for(&handles, setpoint, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::NoConnection)
    })
    .await;
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    for value in [1.0, 2.0] {
        assert_eq!(
            handles
                .control
                .write(setpoint, Value::Float(value), operator.clone())
                .await,
            Err(ControlError::Source(WriteError::NotConnected))
        );
    }
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// A proposer's deadline (an OPC UA request's arrival plus its timeout hint) bounds the device
/// write even when `[control] write_timeout` is an hour, and a write whose turn comes after its
/// deadline is not carried out (`expired`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_ends_at_its_proposers_deadline_and_a_late_turn_expires() {
    use std::time::Instant;
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;

    let helpers = twinloom::runtime::Supervisor::new();
    let silent_addr = common::silent_plc(&helpers).await;
    let config = config(&format!(
        r#"
[control]
write_timeout = "1h"

[[sources.modbus]]
id = "silent"
tcp = "{silent_addr}"
poll = "1h"
timeout = "1h"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/silent"
type = "Heater"
source = "silent"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#
    ));
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/silent/setpoint");
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let deadline = Instant::now() + Duration::from_millis(500);
    let write = |value: f64| {
        handles.control.write_until(
            setpoint,
            Value::Float(value),
            operator.clone(),
            Some(deadline),
        )
    };
    // The first is carried out and ends at the deadline; the second waits behind it and its
    // turn comes after its deadline: expired, never written.
    let (first, second) = tokio::join!(write(1.0), write(2.0));
    assert_eq!(first, Err(ControlError::Source(WriteError::Timeout)));
    assert_eq!(second, Err(ControlError::Expired));
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    helpers.shutdown(Duration::from_secs(5)).await;
}

/// A written register is read back at once and its words compared: a PLC that answers the write
/// but holds another value (its own logic overrides it) makes the write's outcome a read-back
/// mismatch, in the answer and in the audit log; with `read_back = false` nothing is compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_plc_does_not_hold_is_a_read_back_mismatch() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;

    let device = SimDevice::new();
    device.behave(|b| b.frozen_registers.push(10..11));
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[sources.modbus]]
id = "trusting"
tcp = "{addr}"
poll = "20ms"
read_back = false

[[types]]
name = "Heater"
properties = [
  {{ name = "held", data_type = "float", access = "read-write" }},
  {{ name = "free", data_type = "float", access = "read-write" }},
]

[[assets]]
path = "site/checked"
type = "Heater"
source = "plc"
bindings.held = {{ table = "holding", address = 10 }}
bindings.free = {{ table = "holding", address = 11 }}

[[assets]]
path = "site/trusting"
type = "Heater"
source = "trusting"
bindings.held = {{ table = "holding", address = 10 }}
bindings.free = {{ table = "holding", address = 12 }}
"#,
        state = state.path().display(),
        addr = server.addr()
    ));
    let handles = start(&config).await;
    for path in ["site/checked/free", "site/trusting/free"] {
        wait_for(&handles, property(&handles, path), WAIT, |s| {
            s.quality.is_good()
        })
        .await;
    }
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |path: &str, value: f64| {
        let property = property(&handles, path);
        let origin = operator.clone();
        let control = handles.control.clone();
        async move { control.write(property, Value::Float(value), origin).await }
    };
    match write("site/checked/held", 7.0).await {
        Err(ControlError::Source(WriteError::ReadBackMismatch { detail })) => {
            assert_eq!(detail, "wrote [0007] at holding 10, read [0000]");
        }
        other => panic!("expected a read-back mismatch, got {other:?}"),
    }
    assert_eq!(write("site/checked/free", 8.0).await, Ok(()));
    assert_eq!(device.holding(11, 1), [8]);
    // Without read-back the same frozen register's write counts as written.
    assert_eq!(write("site/trusting/held", 9.0).await, Ok(()));
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let outcomes: Vec<&str> = journal
        .records
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["read-back-mismatch", "written", "written"]);
}

/// A source's heartbeat: Twinloom writes 1, 2, 3, … to the configured holding register, so the
/// PLC's watchdog can tell when it stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_register_counts_up_while_the_daemon_runs() {
    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "1s"
heartbeat = {{ address = 100, interval = "20ms" }}

[[types]]
name = "Tank"
properties = [{{ name = "level", data_type = "float" }}]

[[assets]]
path = "site/tank"
type = "Tank"
source = "plc"
bindings.level = {{ table = "input", address = 0 }}
"#,
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let beats = || -> Vec<u16> {
        device
            .register_writes()
            .into_iter()
            .filter(|(address, _)| *address == 100)
            .map(|(_, value)| value)
            .collect()
    };
    common::eventually(WAIT, || beats().len() >= 5, || format!("{:?}", beats())).await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    let after_stop = beats();
    let expected: Vec<u16> = (1..=after_stop.len() as u16).collect();
    assert_eq!(after_stop, expected);
}

/// A heater on the PLC at `addr`: `setpoint` (holding register 10) and `power` (holding register
/// 11, read-write with `power_rules`, e.g. its `on_loss`), after the sections in `head`.
fn heater(addr: SocketAddr, head: &str, power_rules: &str) -> twinloom::config::Config {
    config(&format!(
        r#"
{head}

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "setpoint", data_type = "float", access = "read-write" }},
  {{ name = "power", data_type = "float", access = "read-write", {power_rules} }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
bindings.power = {{ table = "holding", address = 11 }}
"#
    ))
}

/// Fail safe when the audit log cannot be written: the write is refused, and every setpoint's
/// `on_loss` value is written (without its audit record) so that nothing is left at full power.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_that_cannot_be_written_refuses_writes_and_applies_on_loss() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    device.set_holding(11, &[80]);
    let server = common::modbus_tcp(&device).await;
    let config = heater(server.addr(), "", "on_loss = { write = 0.0 }");
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    wait_for(&handles, setpoint, WAIT, |s| s.quality.is_good()).await;
    // A second gate over the same sources whose audit disk is gone.
    let blind = twinloom::control::spawn(
        Arc::clone(&handles.twin),
        handles.writers.clone(),
        twinloom::control::GateRecords::audit_only(Err("the audit disk is full".into())),
        Default::default(),
        Default::default(),
        &handles.metrics.control,
        &handles.supervisor,
    );
    let outcome = blind
        .write(
            setpoint,
            Value::Float(7.0),
            Origin::OpcUa {
                user: "operator".into(),
            },
        )
        .await;
    assert!(
        matches!(outcome, Err(ControlError::AuditUnavailable(ref why)) if why == "the audit disk is full"),
        "{outcome:?}"
    );
    assert_eq!(device.holding(10, 1), [0]);
    common::until_holding(&device, 11, &[0]).await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// A PLC slower than the write timeout: the operators are answered `Bad_Timeout` (here
/// `Source(Timeout)`) at the deadline, and what the PLC then gets is what the audit says. Two
/// writes to one source: the first goes on the wire and is answered late (the PLC takes it: its
/// outcome is `unknown`, with the device's answer and the value read back); the second waits in
/// the source's queue behind it, its deadline passes there, and it is never sent (`not-sent`;
/// the PLC never sees it). Before the write contract it was sent seconds after its proposer had
/// been told it timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_answered_timeout_never_lands_later_and_a_late_answer_is_audited_as_unknown() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let config = config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[control]
write_timeout = "300ms"

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "1h"
timeout = "5s"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/a"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}

[[assets]]
path = "site/b"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 11 }}
"#,
        state = state.path().display(),
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let a = property(&handles, "site/a/setpoint");
    let b = property(&handles, "site/b/setpoint");
    wait_for(&handles, b, WAIT, |s| s.quality.is_good()).await;
    // From now on every answer takes 600 ms: longer than the write timeout.
    device.behave(|b| b.delay = Duration::from_millis(600));
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let (first, second) = tokio::join!(
        handles
            .control
            .write(a, Value::Float(42.0), operator.clone()),
        handles
            .control
            .write(b, Value::Float(43.0), operator.clone()),
    );
    let timed_out = Err(ControlError::Source(WriteError::Timeout));
    assert_eq!(first, timed_out);
    assert_eq!(second, timed_out);

    // Both outcomes reach the audit: one write was on the wire, the other never left the queue.
    let audit = state.path().join("audit");
    let outcomes = || {
        let records = twinloom::runtime::journal::records(&audit).unwrap();
        let intents: HashMap<u64, String> = records
            .iter()
            .filter(|r| r["kind"] == "intent")
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap(),
                    r["property"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        records
            .iter()
            .filter(|r| r["kind"] == "outcome")
            .map(|r| (intents[&r["intent"].as_u64().unwrap()].clone(), r.clone()))
            .collect::<HashMap<_, _>>()
    };
    common::eventually(
        WAIT,
        || outcomes().len() == 2,
        || format!("{:?}", outcomes()),
    )
    .await;
    let outcomes = outcomes();
    let taken = device.register_writes();
    assert_eq!(taken.len(), 1, "the PLC took {taken:?}");
    let (sent, queued, value) = if taken[0].0 == 10 {
        ("site/a/setpoint", "site/b/setpoint", 42.0)
    } else {
        ("site/b/setpoint", "site/a/setpoint", 43.0)
    };
    assert_eq!(taken[0].1 as f64, value);
    let late = &outcomes[sent];
    assert_eq!(late["outcome"], "unknown", "{late:?}");
    assert_eq!(late["device_answer"], "written", "{late:?}");
    assert_eq!(late["holds"], value, "{late:?}");
    let never = &outcomes[queued];
    assert_eq!(never["outcome"], "not-sent", "{never:?}");

    // The late write's value read at the next poll is the gate's own: no manual override.
    let written = if sent == "site/a/setpoint" { a } else { b };
    wait_for(&handles, written, WAIT, |s| {
        s.value == Some(Value::Float(value))
    })
    .await;
    assert!(handles.supervisor.shutdown(Duration::from_secs(10)).await);
    let records = twinloom::runtime::journal::records(&audit).unwrap();
    assert!(
        !records.iter().any(|r| r["kind"] == "manual-override"),
        "{records:?}"
    );
    drop(server);
}

/// Restarts and reloads keep the control state honest: a configuration that arms the plant
/// writes an `arm` record of origin `config` at every start; a setpoint changed by hand stays
/// overridden (plugins refused) across a reload and a restart, until an operator arms the plant;
/// a plant that was armed and restarts with a configuration that does not arm it gets a
/// `disarm` record of origin `config`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arming_by_config_and_manual_overrides_survive_a_reload_and_a_restart() {
    use twinloom::app::Daemon;
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let text = |armed: bool, budget: u32| {
        format!(
            r#"
[daemon]
state_dir = "{state}"

[control]
armed = {armed}
max_writes_per_origin_per_minute = {budget}

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
"#,
            state = state.path().display(),
            addr = server.addr()
        )
    };
    let audit = state.path().join("audit");
    let records = |kind: &str| {
        twinloom::runtime::journal::records(&audit)
            .unwrap()
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect::<Vec<_>>()
    };
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let plugin = Origin::Plugin { name: "pid".into() };

    let mut daemon = Daemon::start(config(&text(true, 600))).await.unwrap();
    let setpoint = property(&daemon.handles, "site/heater/setpoint");
    wait_for(&daemon.handles, setpoint, WAIT, |s| s.quality.is_good()).await;
    assert_eq!(
        daemon
            .handles
            .control
            .write(setpoint, Value::Float(40.0), plugin.clone())
            .await,
        Ok(())
    );
    // The gate wrote its start's arming before it decided anything.
    let arms = records("arm");
    assert_eq!(arms.len(), 1, "{arms:?}");
    assert_eq!(arms[0]["origin"], "twinloom:config");
    // By hand at the PLC: the gate sees a value it did not write.
    device.set_holding(10, &[55]);
    common::eventually(
        WAIT,
        || records("manual-override").len() == 1,
        || format!("{:?}", records("manual-override")),
    )
    .await;
    let refused = Err(ControlError::ManualOverride);
    let propose = |handles: &twinloom::app::Handles, value: f64| {
        let control = handles.control.clone();
        let plugin = plugin.clone();
        async move { control.write(setpoint, Value::Float(value), plugin).await }
    };
    assert_eq!(propose(&daemon.handles, 41.0).await, refused);

    // A reload that restarts everything (the [control] section changed): still overridden.
    let reloaded = daemon.apply(config(&text(true, 601))).await.unwrap();
    assert_eq!(reloaded, twinloom::app::Reloaded::Restarted);
    assert_eq!(propose(&daemon.handles, 42.0).await, refused);
    assert_eq!(records("arm").len(), 2);

    // A restart: still overridden.
    assert!(
        daemon
            .handles
            .supervisor
            .shutdown(Duration::from_secs(5))
            .await
    );
    let daemon = Daemon::start(config(&text(true, 601))).await.unwrap();
    assert_eq!(propose(&daemon.handles, 43.0).await, refused);
    assert_eq!(records("arm").len(), 3);
    // An operator arms the plant: the override is lifted, plugins write again.
    daemon.handles.control.arm(operator.clone()).await.unwrap();
    assert_eq!(propose(&daemon.handles, 44.0).await, Ok(()));
    assert_eq!(device.holding(10, 1), [44]);

    // Restarted with a configuration that does not arm: disarmed, and the record says why.
    assert!(
        daemon
            .handles
            .supervisor
            .shutdown(Duration::from_secs(5))
            .await
    );
    let daemon = Daemon::start(config(&text(false, 601))).await.unwrap();
    assert_eq!(
        propose(&daemon.handles, 45.0).await,
        Err(ControlError::Disarmed)
    );
    let disarms = records("disarm");
    assert_eq!(disarms.len(), 1, "{disarms:?}");
    assert_eq!(disarms[0]["origin"], "twinloom:config");
    assert!(
        daemon
            .handles
            .supervisor
            .shutdown(Duration::from_secs(5))
            .await
    );
}

/// A disarm flood while an operator writes (#35): 16 callers post 320 disarms; the first disarms
/// the plant (one `disarm` record, one `controller-lost` record, one `on_loss` write to the
/// PLC), the rest find it disarmed and write nothing. The operator's write is carried out in
/// the middle of it, and the `on_loss` write counts for the interval rule: a write right after
/// it is too soon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disarm_flood_writes_one_record_and_one_on_loss_and_holds_no_operator_write() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    device.set_holding(11, &[80]);
    let server = common::modbus_tcp(&device).await;
    let state = tempfile::tempdir().unwrap();
    let config = heater(
        server.addr(),
        &format!(
            "[daemon]\nstate_dir = \"{}\"\n\n[control]\narmed = true",
            state.path().display()
        ),
        r#"min_write_interval = "1h", on_loss = { write = 5.0 }"#,
    );
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    let power = property(&handles, "site/heater/power");
    wait_for(&handles, setpoint, WAIT, |s| s.quality.is_good()).await;
    // 16 callers, each posting 20 disarms one after the other, side by side with the operator.
    let flood = futures::future::join_all((0..16).map(|caller| {
        let control = handles.control.clone();
        async move {
            for _ in 0..20 {
                let by = Origin::Admin {
                    user: format!("caller-{caller}"),
                };
                assert_eq!(control.disarm(by).await, Ok(()));
            }
        }
    }));
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let asked = std::time::Instant::now();
    let write = async {
        let written = handles
            .control
            .write(setpoint, Value::Float(7.0), operator.clone())
            .await;
        (written, asked.elapsed())
    };
    let (_, (written, latency)) = futures::join!(flood, write);
    assert_eq!(written, Ok(()), "answered after {latency:?}");
    println!("the operator's write was answered after {latency:?} during the flood");
    assert_eq!(device.holding(10, 1), [7]);
    // One `on_loss` write reached the PLC, and it counts: the next write is too soon.
    common::until_holding(&device, 11, &[5]).await;
    let to_power: Vec<u16> = device
        .register_writes()
        .into_iter()
        .filter(|(address, _)| *address == 11)
        .map(|(_, word)| word)
        .collect();
    assert_eq!(to_power, [5]);
    assert!(matches!(
        handles
            .control
            .write(power, Value::Float(20.0), operator)
            .await,
        Err(ControlError::TooSoon { .. })
    ));
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
    let records = twinloom::runtime::journal::records(&state.path().join("audit")).unwrap();
    let count = |kind: &str| records.iter().filter(|r| r["kind"] == kind).count();
    assert_eq!(
        (count("disarm"), count("controller-lost")),
        (1, 1),
        "{records:#?}"
    );
}

/// The rate rules follow the device (#35): `min_write_interval` counts a change by hand, and
/// `max_rate` measures the step from the value the PLC holds, not from the last value written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_rules_count_from_what_the_device_holds_and_from_changes_by_hand() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "20ms"

[[types]]
name = "Heater"
properties = [
  {{ name = "spaced", data_type = "float", access = "read-write", min_write_interval = "1h" }},
  {{ name = "ramped", data_type = "float", access = "read-write", max_rate = 1.0 }},
]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.spaced = {{ table = "holding", address = 10 }}
bindings.ramped = {{ table = "holding", address = 11 }}
"#,
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let [spaced, ramped] =
        ["spaced", "ramped"].map(|name| property(&handles, &format!("site/heater/{name}")));
    wait_for(&handles, ramped, WAIT, |s| s.quality.is_good()).await;
    wait_for(&handles, spaced, WAIT, |s| s.quality.is_good()).await;
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |property, value: f64| {
        handles
            .control
            .write(property, Value::Float(value), operator.clone())
    };
    // The PLC holds 0: writing 0 is no step at all.
    assert_eq!(write(ramped, 0.0).await, Ok(()));
    // Changed by hand on the HMI to 90 and to 7.
    device.set_holding(11, &[90]);
    device.set_holding(10, &[7]);
    // Both changes seen by the gate (its metric), not only by the twin.
    let by_hand = "twinloom_control_changes_by_hand_total";
    common::eventually(
        WAIT,
        || metric(&handles.metrics.encode(), by_hand) >= 2.0,
        || handles.metrics.encode(),
    )
    .await;
    assert_eq!(handles.twin.sample(ramped).value, Some(Value::Float(90.0)));
    assert_eq!(handles.twin.sample(spaced).value, Some(Value::Float(7.0)));
    // Back to 0 at once is a step of 90 from what the PLC holds (the last value written was 0).
    assert!(matches!(
        write(ramped, 0.0).await,
        Err(ControlError::TooFast { max, .. }) if max == 1.0
    ));
    // The change by hand was a change: the next write waits its interval.
    assert!(matches!(
        write(spaced, 3.0).await,
        Err(ControlError::TooSoon { .. })
    ));
    assert_eq!(device.holding(10, 2), [7, 90]);
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// The origin budget counts writes carried out (#35): a plugin proposing faster than its
/// setpoint can be written has its superseded proposals given back, so it gets every write of
/// its budget (3 a minute here), and no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_budget_counts_writes_carried_out_not_superseded_proposals() {
    use twinloom::control::{ControlError, Origin};

    let device = SimDevice::new();
    let server = common::modbus_tcp(&device).await;
    let config = config(&format!(
        r#"
[control]
armed = true
max_writes_per_origin_per_minute = 3

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
"#,
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    wait_for(&handles, setpoint, WAIT, |s| s.quality.is_good()).await;
    let pid = Origin::Plugin { name: "pid".into() };
    let propose = |value: f64| {
        handles
            .control
            .propose(setpoint, Value::Float(value), pid.clone(), false)
            .unwrap()
    };
    // A burst: one is carried out at once, each later one replaces the one waiting.
    let burst: Vec<_> = (1..=10).map(|v| propose(f64::from(v))).collect();
    let mut carried = 0;
    for answer in burst {
        match answer.await.unwrap() {
            Ok(()) => carried += 1,
            // Should the gate finish writes between proposals, the budget may run out here.
            Err(ControlError::Superseded | ControlError::OverBudget { .. }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert!((1..=3).contains(&carried), "{carried}");
    // Then one at a time, until the budget is spent: exactly 3 carried out in all.
    let mut value = 100.0;
    loop {
        value += 1.0;
        match propose(value).await.unwrap() {
            Ok(()) => carried += 1,
            Err(ControlError::OverBudget { per_minute: 3 }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(carried, 3);
    let writes = device
        .register_writes()
        .into_iter()
        .filter(|(address, _)| *address == 10)
        .count();
    assert_eq!(writes, 3);
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// `on_loss` writes are paced per setpoint (#35): a controller lost five times at once gets its
/// `on_loss` written at once, and once more when the pace has passed, not five times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_loss_writes_are_paced_per_setpoint() {
    use twinloom::control::{ON_LOSS_PACE, Origin};

    let device = SimDevice::new();
    device.set_holding(11, &[80]);
    let server = common::modbus_tcp(&device).await;
    let config = heater(server.addr(), "", "on_loss = { write = 5.0 }");
    let handles = start(&config).await;
    let setpoint = property(&handles, "site/heater/setpoint");
    let power = property(&handles, "site/heater/power");
    wait_for(&handles, power, WAIT, |s| s.quality.is_good()).await;
    let writes_to_power = || {
        device
            .register_writes()
            .into_iter()
            .filter(|(address, _)| *address == 11)
            .count()
    };
    let lost_at = std::time::Instant::now();
    for _ in 0..5 {
        handles
            .control
            .controller_lost("plugin `pid` crashed", vec![power]);
    }
    common::eventually(
        WAIT,
        || writes_to_power() >= 1,
        || "no on_loss write".into(),
    )
    .await;
    common::eventually(
        WAIT,
        || writes_to_power() >= 2,
        || "the paced on_loss write never came".into(),
    )
    .await;
    assert!(lost_at.elapsed() >= ON_LOSS_PACE);
    // A write through the gate after it: the gate has served everything before it, and no
    // third `on_loss` write is due.
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    assert_eq!(
        handles
            .control
            .write(setpoint, Value::Float(1.0), operator)
            .await,
        Ok(())
    );
    assert_eq!(writes_to_power(), 2);
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}
