//! The Sparkplug B edge node end to end: Debian's mosquitto as the broker (one per test, on a
//! free loopback port), pysparkplug as an independent host that decodes every payload and checks
//! `seq` and aliases (`tests/peers/sparkplug_host.py`), Eclipse Tahu's `sparkplug-payload` (npm)
//! as a second decoder of the births, a simulated Modbus PLC. Tests are named after the
//! Sparkplug 3.0 `tck-id`s they cover.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use tokio::io::AsyncBufReadExt as _;
use twinloom_sim::modbus::{ModbusServer, SimDevice};

const WAIT: Duration = Duration::from_secs(15);
/// How long the node may take to come back after a long broker outage: its reconnect backoff
/// doubles from 250 ms up to 30 s.
const RECONNECT: Duration = Duration::from_secs(45);

/// Log lines on stderr when `TWINLOOM_TEST_LOG` is set (an `EnvFilter`, e.g. `info,rumqttc=debug`).
fn logs() {
    if std::env::var("TWINLOOM_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("TWINLOOM_TEST_LOG"))
            .try_init();
    }
}

/// A free loopback port, asked of the kernel (mosquitto cannot listen on port 0 and say which).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A mosquitto broker of its own, on a loopback port; killed when dropped.
struct Broker {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// The configuration, `{port}` standing for `port` (default: anonymous, plain).
    conf: String,
}

impl Broker {
    fn start() -> Self {
        Self::start_with("listener {port} 127.0.0.1\nallow_anonymous true\n", |_| ())
    }

    /// A broker of configuration `conf` (`{port}`: its port), after `prepare` made the files it
    /// names in its folder.
    fn start_with(conf: &str, prepare: impl FnOnce(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        prepare(dir.path());
        let mut broker = Self {
            child: None,
            port: free_port(),
            conf: conf.replace("{dir}", &dir.path().display().to_string()),
            dir,
        };
        broker.run();
        broker
    }

    /// (Re)starts mosquitto on this broker's port and waits until it accepts connections.
    fn run(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "{}persistence false\n",
                self.conf.replace("{port}", &self.port.to_string())
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (tests/run.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        // Waits on the event "the broker accepts": each try blocks in connect until refused.
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {addr}"
            );
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("mosquitto exited: {status}");
            }
            std::thread::yield_now();
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pysparkplug host peer: JSON lines in, JSON lines out.
struct Host {
    child: Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::net::unix::pipe::Receiver>>,
    /// Every line seen, in order.
    seen: Vec<Json>,
}

impl Host {
    async fn start(port: u16) -> Self {
        let mut host = Self::spawn(port).await;
        host.ready().await;
        host
    }

    /// Starts the peer and waits until it has started (Python's imports take a while): it
    /// connects once the broker listens, trying every 20 ms.
    async fn spawn(port: u16) -> Self {
        let mut child = Command::new(common::python())
            .arg(common::repo().join("tests/peers/sparkplug_host.py"))
            .args([port.to_string().as_str(), "plant-a", "twinloom-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = OwnedFd::from(child.stdout.take().unwrap());
        let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(stdout).unwrap();
        let mut host = Self {
            child,
            lines: tokio::io::BufReader::new(pipe).lines(),
            seen: Vec::new(),
        };
        host.next(|l| l["started"] == json!(true)).await;
        host
    }

    /// Waits until the peer has subscribed.
    async fn ready(&mut self) {
        self.next(|l| l["ready"] == json!(true)).await;
    }

    /// The next line matching `want` within [`WAIT`]; a line with `error` fails the test.
    async fn next(&mut self, want: impl Fn(&Json) -> bool) -> Json {
        self.next_within(WAIT, want)
            .await
            .unwrap_or_else(|| panic!("no expected line within {WAIT:?}; seen: {:#?}", self.seen))
    }

    /// The next line matching `want` within `limit`, or `None`.
    async fn next_within(&mut self, limit: Duration, want: impl Fn(&Json) -> bool) -> Option<Json> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line()).await;
            let line = match line {
                Err(_) => return None,
                Ok(line) => line.unwrap().expect("the host peer exited"),
            };
            let parsed: Json = serde_json::from_str(&line).unwrap();
            self.seen.push(parsed.clone());
            assert!(parsed.get("error").is_none(), "host peer: {parsed}");
            if want(&parsed) {
                return Some(parsed);
            }
        }
    }

    fn send(&mut self, command: &Json) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is(kind: &str) -> impl Fn(&Json) -> bool + '_ {
    move |l| l["type"] == json!(kind)
}

/// The metric named `name` of a message.
fn metric<'a>(message: &'a Json, name: &str) -> &'a Json {
    message["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == json!(name))
        .unwrap_or_else(|| panic!("no metric {name} in {message}"))
}

/// A PLC: level (float, holding 0 × 0.1), count (unsigned, holding 1), setpoint (read-write
/// float, holding 2 × 0.1).
async fn plc() -> (Arc<SimDevice>, ModbusServer) {
    let device = SimDevice::new();
    device.set_holding(0, &[215, 7, 100]);
    let server = common::modbus_tcp(&device).await;
    (device, server)
}

/// A test's peers and daemon: its own broker, the host peer subscribed, a PLC ([`plc`]) and
/// the daemon with `extra` in its Sparkplug section; each lives as long as the binding.
struct Rig {
    _broker: Broker,
    host: Host,
    device: Arc<SimDevice>,
    _server: ModbusServer,
    state: PathBuf,
    handles: twinloom::app::Handles,
}

async fn rig(extra: &str) -> Rig {
    let broker = Broker::start();
    let host = Host::start(broker.port).await;
    let (device, server) = plc().await;
    let state = state_dir();
    let text = config_text(server.addr(), &broker.url(), &state, extra);
    let handles = common::start(&common::config(&text)).await;
    Rig {
        _broker: broker,
        host,
        device,
        _server: server,
        state,
        handles,
    }
}

fn config_text(plc: SocketAddr, broker: &str, state: &Path, extra: &str) -> String {
    logs();
    format!(
        r#"
[daemon]
state_dir = "{state}"

[northbound.sparkplug]
servers = ["{broker}"]
group_id = "plant-a"
edge_node_id = "twinloom-1"
report_window = "50ms"
{extra}

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "50ms"
backoff_min = "50ms"
backoff_max = "200ms"

[[types]]
name = "Tank"
properties = [
  {{ name = "level", data_type = "float", unit = "CEL", range = [0.0, 100.0] }},
  {{ name = "count", data_type = "unsigned" }},
  {{ name = "setpoint", data_type = "float", unit = "CEL", range = [0.0, 50.0], access = "read-write" }},
]

[[assets]]
path = "site/tank1"
type = "Tank"
source = "plc"
bindings.level = {{ table = "holding", address = 0, scale = 0.1 }}
bindings.count = {{ table = "holding", address = 1 }}
bindings.setpoint = {{ table = "holding", address = 2, scale = 0.1 }}
"#,
        state = state.display(),
    )
}

fn state_dir() -> PathBuf {
    tempfile::Builder::new()
        .prefix("twinloom-sparkplug-")
        .tempdir()
        .unwrap()
        .keep()
}

/// Eclipse Tahu's decoder (npm `sparkplug-payload`) on a payload given as hex: its JSON.
fn tahu_decode(hex: &str) -> Json {
    let script = r#"
const sp = require("sparkplug-payload").get("spBv1.0");
const payload = sp.decodePayload(Buffer.from(process.argv[1], "hex"));
process.stdout.write(JSON.stringify(payload, (k, v) => typeof v === "bigint" ? v.toString() : (v && v.low !== undefined && v.high !== undefined ? v.toString() : v)));
"#;
    let out = Command::new("node")
        .arg("-e")
        .arg(script)
        .arg(hex)
        .env(
            "NODE_PATH",
            common::repo().join("tests/peers/node/node_modules"),
        )
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_topics_nbirth_dbirth_and_ddata_by_alias_decoded_by_an_independent_host() {
    let mut r = rig("").await;
    // tck-id-topics-nbirth-seq-num, -bdseq-included, -rebirth-metric.
    let nbirth = r.host.next(is("NBIRTH")).await;
    assert_eq!(nbirth["seq"], json!(0));
    assert_eq!(nbirth["bd_seq"], json!(0));
    assert_eq!(nbirth["qos"], json!(0));
    let rebirth = metric(&nbirth, "Node Control/Rebirth");
    assert_eq!(rebirth["value"], json!(false));
    assert_eq!(rebirth["datatype"], json!("BOOLEAN"));
    assert_eq!(rebirth["alias"], Json::Null, "never aliased");
    assert_eq!(metric(&nbirth, "bdSeq")["datatype"], json!("INT64"));
    // tck-id-topics-dbirth-metrics: name, alias, datatype, value, engUnit/engLow/engHigh.
    let dbirth = r
        .host
        .next(|l| l["type"] == json!("DBIRTH") && l["device"] == json!("site:tank1"))
        .await;
    assert_eq!(dbirth["seq"], json!(1));
    let level = metric(&dbirth, "level");
    assert_eq!(level["datatype"], json!("DOUBLE"));
    assert_eq!(level["properties"]["engUnit"]["value"], json!("°C"));
    assert_eq!(level["properties"]["engLow"]["value"], json!(0.0));
    assert_eq!(level["properties"]["engHigh"]["value"], json!(100.0));
    assert_eq!(metric(&dbirth, "count")["datatype"], json!("UINT64"));
    let alias = level["alias"].as_u64().expect("an alias");
    // A PLC value change arrives as DDATA by alias (pysparkplug resolves the name from the
    // birth) within poll + window + 50 ms.
    common::eventually(
        WAIT,
        || {
            r.handles
                .twin
                .sample(common::property(&r.handles, "site/tank1/level"))
                .value
                == Some(twinloom::twin::Value::Float(21.5))
        },
        || "level read".into(),
    )
    .await;
    // Drain what the start published.
    while r
        .host
        .next_within(Duration::from_millis(300), |_| true)
        .await
        .is_some()
    {}
    let changed = Instant::now();
    r.device.set_holding(0, &[333]);
    let ddata = r
        .host
        .next(|l| {
            l["type"] == json!("DDATA")
                && l["metrics"].as_array().unwrap().iter().any(|m| {
                    m["alias"] == json!(alias)
                        && m["value"].as_f64().is_some_and(|v| (v - 33.3).abs() < 1e-9)
                })
        })
        .await;
    let took = changed.elapsed();
    assert!(
        took <= Duration::from_millis(50 + 50 + 50 + 50),
        "DDATA {took:?} after the change: more than poll + window + 50 ms (+ one poll of phase)"
    );
    assert_eq!(ddata["qos"], json!(0), "tck-id-topics-ddata-mqtt");
    assert_eq!(
        ddata["metrics"][0]["name"],
        json!("level"),
        "resolved from the alias"
    );
    // Readiness met, metrics counted.
    let unmet = r.handles.readiness.unmet();
    assert!(!unmet.iter().any(|c| c.contains("sparkplug")), "{unmet:?}");
    let text = r.handles.metrics.encode();
    assert!(
        common::metric(&text, "twinloom_sparkplug_messages_total{kind=\"NBIRTH\"}") >= 1.0,
        "{text}"
    );
    assert!(
        common::metric(
            &text,
            "twinloom_sparkplug_metric_values_total{stream=\"live\"}"
        ) >= 1.0
    );
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
    // Graceful stop: NDEATH with the same bdSeq, then DISCONNECT.
    let death = r.host.next(is("NDEATH")).await;
    assert_eq!(death["bd_seq"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_payloads_dbirth_decoded_by_eclipse_tahu() {
    let broker = Broker::start();
    let (_device, server) = plc().await;
    let state = state_dir();
    // A raw subscriber gets the birth's bytes: mosquitto_sub prints the payload as hex.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args([
            "-t",
            "spBv1.0/plant-a/DBIRTH/twinloom-1/#",
            "-C",
            "1",
            "-F",
            "%x",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub subscribes before the daemon starts: wait for its subscription in the
    // broker's view by a host peer round trip (its own subscription is made the same way).
    let _host = Host::start(broker.port).await;
    let handles = common::start(&common::config(&config_text(
        server.addr(),
        &broker.url(),
        &state,
        "",
    )))
    .await;
    let out = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(sub.stdout.as_mut().unwrap(), &mut text).unwrap();
        sub.wait().unwrap();
        text
    });
    let hex = tokio::time::timeout(WAIT, out).await.unwrap().unwrap();
    let decoded = tahu_decode(hex.trim());
    let metrics = decoded["metrics"].as_array().unwrap();
    let level = metrics
        .iter()
        .find(|m| m["name"] == json!("level"))
        .unwrap();
    assert_eq!(level["type"], json!("Double"));
    assert_eq!(level["properties"]["engUnit"]["value"], json!("°C"));
    assert_eq!(
        level["properties"]["engHigh"]["value"].as_f64(),
        Some(100.0)
    );
    assert_eq!(level["properties"]["engHigh"]["type"], json!("Double"));
    let count = metrics
        .iter()
        .find(|m| m["name"] == json!("count"))
        .unwrap();
    assert_eq!(count["type"], json!("UInt64"));
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_operational_behavior_data_commands_rebirth_keeps_bd_seq() {
    let mut r = rig("").await;
    let first = r.host.next(is("NBIRTH")).await;
    r.host.next(is("DBIRTH")).await;
    r.host.send(&json!({"rebirth": true}));
    let again = r.host.next(is("NBIRTH")).await;
    assert_eq!(again["seq"], json!(0));
    assert_eq!(
        again["bd_seq"], first["bd_seq"],
        "same bdSeq: no new MQTT session"
    );
    let dbirth = r.host.next(is("DBIRTH")).await;
    assert_eq!(dbirth["seq"], json!(1));
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_message_flow_edge_node_birth_publish_will_message_on_sigkill() {
    let broker = Broker::start();
    let mut host = Host::start(broker.port).await;
    let (_device, server) = plc().await;
    let state = state_dir();
    let file = state.join("twinloom.toml");
    std::fs::write(&file, config_text(server.addr(), &broker.url(), &state, "")).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_twinloom"))
        .arg("run")
        .arg("--config")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let birth = host.next(is("NBIRTH")).await;
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    // The broker publishes the Will: NDEATH with the birth's bdSeq
    // (tck-id-payloads-ndeath-bdseq), no seq (tck-id-payloads-ndeath-seq).
    let death = host.next(is("NDEATH")).await;
    assert_eq!(death["bd_seq"], birth["bd_seq"]);
    assert_eq!(death["seq"], Json::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_topics_nbirth_bdseq_increment_after_a_broker_restart() {
    let mut broker = Broker::start();
    let (_device, server) = plc().await;
    let state = state_dir();
    let handles = common::start(&common::config(&config_text(
        server.addr(),
        &broker.url(),
        &state,
        "",
    )))
    .await;
    let mut host = Host::start(broker.port).await;
    host.send(&json!({"rebirth": true}));
    let before = host.next(is("NBIRTH")).await["bd_seq"].as_u64().unwrap();
    drop(host);
    broker.stop();
    let mut host = Host::spawn(broker.port).await;
    broker.run();
    host.ready().await;
    // Should the node have born again before the host subscribed, it asks for a rebirth
    // (same bdSeq as the new session's).
    host.send(&json!({"rebirth": true}));
    let after = host.next(is("NBIRTH")).await;
    assert_eq!(after["bd_seq"].as_u64(), Some(before + 1));
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Every value a PLC produces while the broker is down for 30 s (10 changes per second, the
/// issue's outage) arrives after it returns, flagged historical, in source time order per metric.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_loses_nothing_while_the_broker_is_down() {
    const OUTAGE_CHANGES: u16 = 300;
    let mut broker = Broker::start();
    let (device, server) = plc().await;
    let state = state_dir();
    let handles = common::start(&common::config(&config_text(
        server.addr(),
        &broker.url(),
        &state,
        "",
    )))
    .await;
    let count = common::property(&handles, "site/tank1/count");
    let mut host = Host::start(broker.port).await;
    host.send(&json!({"rebirth": true}));
    host.next(is("DBIRTH")).await;
    broker.stop();
    // 10 changes per second, each seen by the twin (so each is in the change log).
    for i in 0..OUTAGE_CHANGES {
        device.set_holding(1, &[1000 + i]);
        common::wait_for(&handles, count, WAIT, |s| {
            s.value == Some(twinloom::twin::Value::UInt(u64::from(1000 + i)))
        })
        .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(host);
    let mut host = Host::spawn(broker.port).await;
    broker.run();
    host.ready().await;
    // After 30 s of refused connections the node's backoff (250 ms doubling, at most 30 s) may
    // wait up to 16 s before it tries again.
    host.next_within(RECONNECT, is("NBIRTH"))
        .await
        .expect("no NBIRTH after the broker returned");
    let mut historical = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while historical.len() < usize::from(OUTAGE_CHANGES) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "got {historical:?} of {OUTAGE_CHANGES} historical values"
        );
        let Some(line) = host.next_within(Duration::from_secs(1), is("DDATA")).await else {
            continue;
        };
        for m in line["metrics"].as_array().unwrap() {
            // Changes from before the outage whose marker's PUBACK did not come may come again
            // (at least once); the outage's values are from 1000 on.
            let value = m["value"].as_u64().unwrap_or(0);
            if m["name"] == json!("count") && m["is_historical"] == json!(true) && value >= 1000 {
                historical.push((m["timestamp"].as_u64().unwrap(), value));
            }
        }
    }
    let values: Vec<u64> = historical.iter().map(|(_, v)| *v).collect();
    let expected: Vec<u64> = (0..OUTAGE_CHANGES).map(|i| u64::from(1000 + i)).collect();
    assert_eq!(
        values, expected,
        "every change, in order, each once from the backlog"
    );
    assert!(
        historical.windows(2).all(|w| w[0].0 <= w[1].0),
        "source time order"
    );
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_message_flow_edge_node_birth_publish_phid_wait_then_backlog() {
    let mut r = rig("primary_host_id = \"scada\"").await;
    let count = common::property(&r.handles, "site/tank1/count");
    common::wait_for(&r.handles, count, WAIT, |s| s.quality.is_good()).await;
    r.device.set_holding(1, &[42]);
    common::wait_for(&r.handles, count, WAIT, |s| {
        s.value == Some(twinloom::twin::Value::UInt(42))
    })
    .await;
    assert!(
        r.host
            .next_within(Duration::from_millis(500), |l| l["type"] != json!("STATE"))
            .await
            .is_none(),
        "nothing published before the primary host is online: {:?}",
        r.host.seen
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    r.host
        .send(&json!({"state": {"host": "scada", "online": true, "timestamp": now}}));
    let nbirth = r.host.next(is("NBIRTH")).await;
    assert_eq!(nbirth["seq"], json!(0));
    r.host.next(is("DBIRTH")).await;
    // Then the backlog: the change made while the host was offline, flagged historical.
    r.host
        .next(|l| {
            l["type"] == json!("DDATA")
                && l["metrics"].as_array().unwrap().iter().any(|m| {
                    m["name"] == json!("count")
                        && m["value"] == json!(42)
                        && m["is_historical"] == json!(true)
                })
        })
        .await;
    // Offline: NDEATH, then a new session that waits again.
    r.host
        .send(&json!({"state": {"host": "scada", "online": false, "timestamp": now + 1}}));
    r.host.next(is("NDEATH")).await;
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_operational_behavior_data_commands_dcmd_through_the_control_gate() {
    let mut r = rig("accept_commands = true").await;
    r.host.next(is("DBIRTH")).await;
    let setpoint = common::property(&r.handles, "site/tank1/setpoint");
    common::wait_for(&r.handles, setpoint, WAIT, |s| s.quality.is_good()).await;
    let dcmd = json!({"dcmd": {"device": "site:tank1", "name": "setpoint", "datatype": "DOUBLE", "value": 25.0}});
    // Disarmed: refused by the gate (rule `disarmed`), nothing written.
    r.host.send(&dcmd);
    let metrics = || async {
        let text = r.handles.metrics.encode();
        common::metric(
            &text,
            "twinloom_sparkplug_commands_total{outcome=\"refused\"}",
        )
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while metrics().await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the DCMD was not decided"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        r.device.holding(2, 1),
        vec![100],
        "nothing written while disarmed"
    );
    r.handles
        .control
        .arm(twinloom::control::Origin::Admin {
            user: "test".into(),
        })
        .await
        .unwrap();
    r.host.send(&dcmd);
    common::eventually(
        WAIT,
        || r.device.holding(2, 1) == vec![250],
        || format!("setpoint register {:?}", r.device.holding(2, 1)),
    )
    .await;
    // Audited with origin sparkplug.
    let audit = std::fs::read_dir(r.state.join("audit"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect::<String>();
    assert!(audit.contains("sparkplug"), "audit: {audit}");
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcmd_is_refused_unless_accept_commands() {
    let mut r = rig("").await;
    r.host.next(is("DBIRTH")).await;
    r.host.send(&json!({"dcmd": {"device": "site:tank1", "name": "setpoint", "datatype": "DOUBLE", "value": 25.0}}));
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = r.handles.metrics.encode();
        if common::metric(
            &text,
            "twinloom_sparkplug_commands_total{outcome=\"not-accepted\"}",
        ) >= 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the DCMD was not refused"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.device.holding(2, 1), vec![100]);
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Waits until the change log in `state` holds a change to `value` (it is on disk: a SIGKILL
/// cannot take it back).
async fn logged(state: &Path, value: twinloom::twin::Value) {
    let dir = state.join(twinloom::change_log::DIR_NAME);
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut reader = twinloom::change_log::Reader::new(&dir, 0);
    loop {
        while let Ok(Some(entry)) = reader.try_next() {
            if let twinloom::change_log::Record::Change { value: Some(v), .. } = &entry.record
                && *v == value
            {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{value:?} not in the change log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The daemon killed (SIGKILL) during a broker outage and started again: every change made
/// during the outage arrives, historical, after its births (resumed from the last confirmed
/// offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_and_forward_resumes_after_the_daemon_is_killed_during_an_outage() {
    // 30 s at 10 changes per second, as in the broker outage test.
    const CHANGES: u16 = 300;
    let mut broker = Broker::start();
    let (device, server) = plc().await;
    let state = state_dir();
    let file = state.join("twinloom.toml");
    // The backlog capped at 200 values per second: 10 per 50 ms window.
    let text = config_text(
        server.addr(),
        &broker.url(),
        &state,
        "backlog_max_rate = 200",
    );
    std::fs::write(&file, text).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_twinloom"))
            .arg("run")
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut host = Host::start(broker.port).await;
    let mut daemon = run();
    host.next(is("DBIRTH")).await;
    drop(host);
    broker.stop();
    for i in 0..CHANGES {
        device.set_holding(1, &[2000 + i]);
        logged(&state, twinloom::twin::Value::UInt(u64::from(2000 + i))).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    broker.run();
    let mut host = Host::start(broker.port).await;
    let mut daemon = run();
    host.next(is("NBIRTH")).await;
    let mut values: Vec<u64> = Vec::new();
    let mut first = None;
    while !values.contains(&u64::from(2000 + CHANGES - 1)) {
        let line = host.next(is("DDATA")).await;
        for m in line["metrics"].as_array().unwrap() {
            // Values from before the outage may come again (at least once: their marker's
            // PUBACK may not have come before the kill); the outage's must all come, in order.
            let value = m["value"].as_u64().unwrap_or(0);
            if m["name"] == json!("count") && m["is_historical"] == json!(true) && value >= 2000 {
                first.get_or_insert_with(Instant::now);
                values.push(value);
            }
        }
    }
    let drained = first.unwrap().elapsed();
    assert!(
        drained >= Duration::from_millis(1200),
        "300 stored changes at 200 per second took {drained:?}"
    );
    // The restarted daemon's first reading (2299 again) is a change of its own, logged
    // before its births: it may follow as historical too.
    values.dedup();
    let expected: Vec<u64> = (0..CHANGES).map(|i| u64::from(2000 + i)).collect();
    assert_eq!(values[..usize::from(CHANGES)], expected);
    // The killed daemon's log says it stopped uncleanly (what its tap held is unknown): a gap,
    // published as `Twinloom/Change Log Gaps`, never silent.
    let gap = |l: &Json| {
        l["type"] == json!("NDATA")
            && l["metrics"].as_array().unwrap().iter().any(|m| {
                m["name"] == json!("Twinloom/Change Log Gaps") && m["value"].as_u64() >= Some(1)
            })
    };
    if !host.seen.iter().any(gap) {
        host.next(gap).await;
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}

/// A reload that adds a property changes the twin's shape: a new session, births with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_a_property_births_again() {
    let broker = Broker::start();
    let mut host = Host::start(broker.port).await;
    let (_device, server) = plc().await;
    let state = state_dir();
    let text = config_text(server.addr(), &broker.url(), &state, "");
    let mut daemon = twinloom::app::Daemon::start(common::config(&text))
        .await
        .unwrap();
    let first = host.next(is("NBIRTH")).await;
    host.next(is("DBIRTH")).await;
    let grown = text
        .replace(
            r#"  {{ name = "count", data_type = "unsigned" }},"#.replace("{{", "{").replace("}}", "}").as_str(),
            r#"  { name = "count", data_type = "unsigned" },
  { name = "extra", data_type = "unsigned" },"#,
        )
        .replace(
            "bindings.count = { table = \"holding\", address = 1 }",
            "bindings.count = { table = \"holding\", address = 1 }\nbindings.extra = { table = \"holding\", address = 3 }",
        );
    assert_ne!(grown, text);
    daemon.apply(common::config(&grown)).await.unwrap();
    let again = host.next(is("NBIRTH")).await;
    assert_eq!(again["seq"], json!(0));
    let dbirth = host
        .next(|l| l["type"] == json!("DBIRTH") && l["device"] == json!("site:tank1"))
        .await;
    metric(&dbirth, "extra");
    assert_ne!(again["bd_seq"], first["bd_seq"], "a new session");
    daemon
        .handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// Every source of an asset lost → DDEATH; one returns → DBIRTH
/// (tck-id-operational-behavior-device-ddeath).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_operational_behavior_device_ddeath_when_its_source_is_lost() {
    let broker = Broker::start();
    let mut host = Host::start(broker.port).await;
    let (device, server) = plc().await;
    let state = state_dir();
    let text = config_text(server.addr(), &broker.url(), &state, "")
        .replace("poll = \"50ms\"", "poll = \"50ms\"\ntimeout = \"200ms\"");
    let handles = common::start(&common::config(&text)).await;
    let tank = |kind: &'static str| {
        move |l: &Json| l["type"] == json!(kind) && l["device"] == json!("site:tank1")
    };
    host.next(tank("DBIRTH")).await;
    let level = common::property(&handles, "site/tank1/level");
    common::wait_for(&handles, level, WAIT, |s| s.quality.is_good()).await;
    device.behave(|b| b.silent = true);
    let death = host.next(tank("DDEATH")).await;
    assert!(death["seq"].is_u64(), "tck-id-payloads-ddeath-seq");
    device.behave(|b| b.silent = false);
    let birth = host.next(tank("DBIRTH")).await;
    metric(&birth, "level");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// TLS (the broker's certificate checked against `ca_file`, a client certificate that
/// mosquitto requires) and a password from `password_file` (mosquitto refuses anonymous clients
/// on that listener): the node connects and births.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_a_client_certificate_and_a_password_from_a_file() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL (mosquitto) takes a certificate whose subject is its issuer's
    // name for a self-signed one.
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Twinloom test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let server_key = rcgen::KeyPair::generate().unwrap();
    let mut server_params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    server_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    server_params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::new(vec!["twinloom-1".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "twinloom-1");
    let client_cert = client_params.signed_by(&client_key, &issuer).unwrap();
    let plain = free_port();
    let broker = Broker::start_with(
        &format!(
            "per_listener_settings true\nlistener {{port}} 127.0.0.1\ncafile {{dir}}/ca.pem\ncertfile {{dir}}/server.pem\nkeyfile {{dir}}/server.key\nrequire_certificate true\nallow_anonymous false\npassword_file {{dir}}/passwd\nlistener {plain} 127.0.0.1\nallow_anonymous true\n"
        ),
        |dir| {
            std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
            std::fs::write(dir.join("server.pem"), server_cert.pem()).unwrap();
            std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
            let status = Command::new("mosquitto_passwd")
                .args(["-c", "-b"])
                .arg(dir.join("passwd"))
                .args(["edge", "s3cret"])
                .status()
                .unwrap();
            assert!(status.success());
        },
    );
    let state = state_dir();
    std::fs::write(state.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(state.join("password"), "s3cret\n").unwrap();
    std::fs::write(state.join("client.pem"), client_cert.pem()).unwrap();
    std::fs::write(state.join("client.key"), client_key.serialize_pem()).unwrap();
    let mut host = Host::start(plain).await;
    let (_device, server) = plc().await;
    let extra = format!(
        "username = \"edge\"\npassword_file = \"{}\"\ntls = {{ ca_file = \"{}\", certificate = \"{}\", private_key = \"{}\" }}",
        state.join("password").display(),
        state.join("ca.pem").display(),
        state.join("client.pem").display(),
        state.join("client.key").display(),
    );
    let url = format!("ssl://127.0.0.1:{}", broker.port);
    let handles = common::start(&common::config(&config_text(
        server.addr(),
        &url,
        &state,
        &extra,
    )))
    .await;
    let birth = host.next(is("NBIRTH")).await;
    assert_eq!(birth["seq"], json!(0));
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// The property `name` of a metric as the host printed it (`{"type", "value"}`), or null.
fn prop<'a>(metric: &'a Json, name: &str) -> &'a Json {
    &metric["properties"][name]
}

/// The metric named `name` of a message, when it has one.
fn find<'a>(message: &'a Json, name: &str) -> Option<&'a Json> {
    message["metrics"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == json!(name))
}

/// A message of `kind` about device `site:tank1`.
fn tank(kind: &'static str) -> impl Fn(&Json) -> bool {
    move |l: &Json| l["type"] == json!(kind) && l["device"] == json!("site:tank1")
}

/// Waits until the daemon's metric `series` (name and labels) reaches `at_least`; its value.
async fn counted(handles: &twinloom::app::Handles, series: &str, at_least: f64) -> f64 {
    let mut value = 0.0;
    common::eventually(
        WAIT,
        || {
            value = common::metric(&handles.metrics.encode(), series);
            value >= at_least
        },
        || {
            let now = common::metric(&handles.metrics.encode(), series);
            format!("{series} = {now}, did not reach {at_least}")
        },
    )
    .await;
    value
}

/// An asset fed by two sources — its PLC and a plugin deriving one of its properties — with
/// one lost (the plugin fails on every call: `PluginFailure`): no DDEATH; the derived metric
/// carries `Quality` 0 (Bad) and its `StatusCode` (Bad_InternalError), the PLC's metrics none.
/// The PLC lost too: DDEATH; it answers again: DBIRTH (tck-id-operational-behavior-device-ddeath,
/// tck-id-payloads-propertyset-quality-value-type, -value).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_operational_behavior_device_ddeath_only_when_every_source_of_an_asset_is_lost() {
    let broker = Broker::start();
    let mut host = Host::start(broker.port).await;
    let (device, server) = plc().await;
    let state = state_dir();
    let probe = common::probe_component().await;
    let text = config_text(server.addr(), &broker.url(), &state, "")
        .replace("poll = \"50ms\"", "poll = \"50ms\"\ntimeout = \"200ms\"")
        .replace(
            "  { name = \"count\", data_type = \"unsigned\" },",
            "  { name = \"count\", data_type = \"unsigned\" },\n  { name = \"derived\", data_type = \"float\" },",
        )
        .replace(
            "bindings.count = { table = \"holding\", address = 1 }",
            "bindings.count = { table = \"holding\", address = 1 }\nbindings.derived = { plugin = \"probe\" }",
        );
    let text = format!(
        "{text}\n[[plugins]]\nname = \"probe\"\nfile = \"{}\"\ndeadline = \"10s\"\ntick = \"50ms\"\nconfig = {{ behaviour = \"panic\" }}\n",
        probe.display()
    );
    let handles = common::start(&common::config(&text)).await;
    let level = common::property(&handles, "site/tank1/level");
    let derived = common::property(&handles, "site/tank1/derived");
    common::wait_for(&handles, level, WAIT, |s| s.quality.is_good()).await;
    common::wait_for(&handles, derived, WAIT, |s| {
        s.quality.reason == twinloom::twin::QualityReason::PluginFailure
    })
    .await;
    // The derived metric's loss reaches the host: in a DDATA of the living device, or in its
    // DBIRTH when the plugin failed before the PLC's first reading.
    let bad = |m: &Json| {
        m["name"] == json!("derived")
            && prop(m, "Quality") == &json!({"type": 3, "value": 0})
            && prop(m, "StatusCode") == &json!({"type": 7, "value": 0x8002_0000u32})
    };
    let partial = |l: &Json| {
        (tank("DDATA")(l) || tank("DBIRTH")(l)) && l["metrics"].as_array().unwrap().iter().any(bad)
    };
    if !host.seen.iter().any(&partial) {
        host.next(&partial).await;
    }
    // Partly fed: a PLC change arrives without Quality, and no DDEATH came since the birth.
    device.set_holding(0, &[333]);
    let change = host
        .next(|l| {
            tank("DDATA")(l)
                && find(l, "level")
                    .and_then(|m| m["value"].as_f64())
                    .is_some_and(|v| (v - 33.3).abs() < 1e-9)
        })
        .await;
    assert_eq!(
        prop(find(&change, "level").unwrap(), "Quality"),
        &Json::Null
    );
    let since_birth: Vec<&Json> = host
        .seen
        .iter()
        .rev()
        .take_while(|l| !tank("DBIRTH")(l))
        .collect();
    assert!(
        !since_birth.iter().any(|l| tank("DDEATH")(l)),
        "no DDEATH while the PLC feeds the asset: {since_birth:#?}"
    );
    let birth = host.seen.iter().rev().find(|l| tank("DBIRTH")(l)).unwrap();
    for name in ["count", "setpoint"] {
        assert_eq!(prop(metric(birth, name), "Quality"), &Json::Null, "{name}");
    }
    // Every source lost: DDEATH; the PLC back: DBIRTH, its metrics good, the derived still bad.
    device.behave(|b| b.silent = true);
    host.next(tank("DDEATH")).await;
    device.behave(|b| b.silent = false);
    let birth = host.next(tank("DBIRTH")).await;
    assert!(bad(metric(&birth, "derived")), "{birth}");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// More changed metrics in a window than `max_metrics_per_payload`: several DDATA, each within
/// the maximum, together every change exactly once, their `seq` consecutive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_metrics_per_payload_splits_a_window_into_several_ddata() {
    let mut r = rig("max_metrics_per_payload = 2").await;
    r.host.next(tank("DBIRTH")).await;
    for path in [
        "site/tank1/level",
        "site/tank1/count",
        "site/tank1/setpoint",
    ] {
        let property = common::property(&r.handles, path);
        common::wait_for(&r.handles, property, WAIT, |s| s.quality.is_good()).await;
    }
    // Drain what the start published.
    while r
        .host
        .next_within(Duration::from_millis(300), |_| true)
        .await
        .is_some()
    {}
    // One poll changes all three: one window.
    r.device.set_holding(0, &[400, 8, 120]);
    let wanted = [
        ("level", json!(40.0)),
        ("count", json!(8)),
        ("setpoint", json!(12.0)),
    ];
    let mut payloads = Vec::new();
    let mut got: Vec<(String, Json)> = Vec::new();
    while got.len() < wanted.len() {
        let line = r.host.next(tank("DDATA")).await;
        for m in line["metrics"].as_array().unwrap() {
            got.push((m["name"].as_str().unwrap().to_owned(), m["value"].clone()));
        }
        payloads.push(line);
    }
    assert!(payloads.len() >= 2, "split: {payloads:#?}");
    for p in &payloads {
        assert!(p["metrics"].as_array().unwrap().len() <= 2, "{p}");
    }
    for (name, value) in wanted {
        let n = got
            .iter()
            .filter(|(g, v)| g == name && v.as_f64() == value.as_f64())
            .count();
        assert_eq!(n, 1, "{name} = {value} once in {got:?}");
    }
    assert_eq!(got.len(), 3, "nothing else: {got:?}");
    for pair in payloads.windows(2) {
        let (a, b) = (
            pair[0]["seq"].as_u64().unwrap(),
            pair[1]["seq"].as_u64().unwrap(),
        );
        assert_eq!(b, (a + 1) % 256, "consecutive seq");
    }
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// NCMDs other than `Node Control/Rebirth = true` — `Node Control/Reboot`, a metric the node
/// does not have, `Node Control/Rebirth = false` — are refused: counted and logged, nothing
/// written, no births (tck-id-operational-behavior-data-commands-ncmd-rebirth-verb).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tck_id_operational_behavior_data_commands_other_ncmds_are_refused() {
    let mut r = rig("accept_commands = true").await;
    r.host.next(tank("DBIRTH")).await;
    let level = common::property(&r.handles, "site/tank1/level");
    common::wait_for(&r.handles, level, WAIT, |s| s.quality.is_good()).await;
    let registers = r.device.holding(0, 3);
    let births = r
        .host
        .seen
        .iter()
        .filter(|l| l["type"] == json!("NBIRTH"))
        .count();
    r.host
        .send(&json!({"ncmd": {"name": "Node Control/Reboot", "value": true}}));
    r.host
        .send(&json!({"ncmd": {"name": "Plant/Stop", "value": true}}));
    r.host
        .send(&json!({"ncmd": {"name": "Node Control/Rebirth", "value": false}}));
    let refused = counted(
        &r.handles,
        "twinloom_sparkplug_commands_total{outcome=\"unsupported-ncmd\"}",
        3.0,
    )
    .await;
    assert_eq!(refused, 3.0);
    // A change after the refusals: had a rebirth come, its NBIRTH would precede this DDATA.
    r.device.set_holding(1, &[99]);
    r.host
        .next(|l| tank("DDATA")(l) && find(l, "count").is_some_and(|m| m["value"] == json!(99)))
        .await;
    assert_eq!(
        r.host
            .seen
            .iter()
            .filter(|l| l["type"] == json!("NBIRTH"))
            .count(),
        births,
        "no rebirth"
    );
    let text = r.handles.metrics.encode();
    assert_eq!(
        common::metric(
            &text,
            "twinloom_sparkplug_commands_total{outcome=\"rebirth\"}"
        ),
        0.0
    );
    let mut expected = registers;
    expected[1] = 99;
    assert_eq!(r.device.holding(0, 3), expected, "nothing written");
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// The control gate armed, then disarmed: NDATA of `Twinloom/Armed` by the NBIRTH's alias with
/// the new value each time, `seq` consecutive (the host checks every message's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_armed_state_is_published_as_ndata_by_alias() {
    let mut r = rig("").await;
    let nbirth = r.host.next(is("NBIRTH")).await;
    let armed = metric(&nbirth, "Twinloom/Armed");
    assert_eq!(
        (armed["value"].clone(), armed["datatype"].clone()),
        (json!(false), json!("BOOLEAN"))
    );
    let alias = armed["alias"].as_u64().expect("aliased");
    let by = twinloom::control::Origin::Admin {
        user: "test".into(),
    };
    let armed_ndata = |value: bool| {
        move |l: &Json| {
            l["type"] == json!("NDATA")
                && l["metrics"].as_array().unwrap().iter().any(|m| {
                    m["alias"] == json!(alias)
                        && m["name"] == json!("Twinloom/Armed")
                        && m["value"] == json!(value)
                })
        }
    };
    r.handles.control.arm(by.clone()).await.unwrap();
    let on = r.host.next(armed_ndata(true)).await;
    r.handles.control.disarm(by).await.unwrap();
    let off = r.host.next(armed_ndata(false)).await;
    let (on, off) = (on["seq"].as_u64().unwrap(), off["seq"].as_u64().unwrap());
    assert_ne!(on, off);
    r.handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// A TCP proxy between the edge node and mosquitto that can lose the PUBACKs of the node's
/// cursor markers (QoS 1 PUBLISHes on `twinloom/sparkplug/…`) and cut the connection: the fault
/// "the broker has the marker, the node never hears of it".
struct Proxy {
    port: u16,
    /// While set, PUBACKs of markers are dropped (counted in `lost`).
    lose: Arc<std::sync::atomic::AtomicBool>,
    lost: Arc<std::sync::atomic::AtomicUsize>,
    /// Bumped to cut every open connection.
    cut: tokio::sync::watch::Sender<u32>,
}

/// One MQTT control packet at the front of `buffer` (MQTT 3.1.1 §2.2: type byte, remaining
/// length in 1–4 bytes), taken out; `None` while incomplete.
fn mqtt_packet(buffer: &mut Vec<u8>) -> Option<Vec<u8>> {
    let (mut length, mut shift, mut at) = (0usize, 0, 1);
    loop {
        let byte = *buffer.get(at)?;
        length |= usize::from(byte & 0x7f) << shift;
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if buffer.len() < at + length {
        return None;
    }
    let rest = buffer.split_off(at + length);
    Some(std::mem::replace(buffer, rest))
}

/// The packet id of a QoS 1 PUBLISH whose topic starts with `prefix`, or of a PUBACK.
fn mqtt_pkid(packet: &[u8], prefix: &[u8]) -> Option<(u8, u16)> {
    let kind = packet[0] >> 4;
    let body = &packet[(1 + packet[1..].iter().position(|b| b & 0x80 == 0)? + 1)..];
    match kind {
        3 if (packet[0] >> 1) & 3 == 1 => {
            let len = usize::from(u16::from_be_bytes([body[0], body[1]]));
            let topic = &body[2..2 + len];
            topic
                .starts_with(prefix)
                .then(|| (3, u16::from_be_bytes([body[2 + len], body[3 + len]])))
        }
        4 => Some((4, u16::from_be_bytes([body[0], body[1]]))),
        _ => None,
    }
}

impl Proxy {
    #[allow(clippy::disallowed_methods, reason = "a test peer, not the daemon")]
    async fn start(broker: u16) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let lose = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let lost = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut, _) = tokio::sync::watch::channel(0u32);
        let proxy = Self {
            port,
            lose: Arc::clone(&lose),
            lost: Arc::clone(&lost),
            cut: cut.clone(),
        };
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", broker)).await
                else {
                    continue;
                };
                let (lose, lost, mut cut) = (Arc::clone(&lose), Arc::clone(&lost), cut.subscribe());
                cut.borrow_and_update();
                tokio::spawn(async move {
                    let mut markers = std::collections::HashSet::new();
                    let (mut up, mut down) = (Vec::new(), Vec::new());
                    let (mut a, mut b) = ([0u8; 16384], [0u8; 16384]);
                    loop {
                        // One task for both directions: what it forwards and drops is decided
                        // in the order the bytes came.
                        tokio::select! {
                            _ = cut.changed() => return,
                            n = client.read(&mut a) => {
                                let Ok(n @ 1..) = n else { return };
                                up.extend_from_slice(&a[..n]);
                                while let Some(packet) = mqtt_packet(&mut up) {
                                    if let Some((3, pkid)) = mqtt_pkid(&packet, b"twinloom/sparkplug/") {
                                        markers.insert(pkid);
                                    }
                                    if upstream.write_all(&packet).await.is_err() { return }
                                }
                            }
                            n = upstream.read(&mut b) => {
                                let Ok(n @ 1..) = n else { return };
                                down.extend_from_slice(&b[..n]);
                                while let Some(packet) = mqtt_packet(&mut down) {
                                    if let Some((4, pkid)) = mqtt_pkid(&packet, b"")
                                        && markers.remove(&pkid)
                                        && lose.load(Ordering::SeqCst)
                                    {
                                        lost.fetch_add(1, Ordering::SeqCst);
                                        continue;
                                    }
                                    if client.write_all(&packet).await.is_err() { return }
                                }
                            }
                        }
                    }
                });
            }
        });
        proxy
    }
}

/// Delivery is at least once: the PUBACKs of the markers that follow some changes are lost and
/// the connection cut, so the node resumes from the offset before them and publishes them again
/// (historical); `twinloom_sparkplug_duplicate_records_total` equals what the host saw twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_after_a_lost_puback_are_counted_exactly() {
    use std::sync::atomic::Ordering;
    const CHANGES: u16 = 5;
    let broker = Broker::start();
    let proxy = Proxy::start(broker.port).await;
    let mut host = Host::start(broker.port).await;
    let (device, server) = plc().await;
    let state = state_dir();
    let through = format!("tcp://127.0.0.1:{}", proxy.port);
    let handles = common::start(&common::config(&config_text(
        server.addr(),
        &through,
        &state,
        "",
    )))
    .await;
    host.next(tank("DBIRTH")).await;
    let count = common::property(&handles, "site/tank1/count");
    common::wait_for(&handles, count, WAIT, |s| s.quality.is_good()).await;
    proxy.lose.store(true, Ordering::SeqCst);
    let live = |value: u64| {
        move |l: &Json| {
            tank("DDATA")(l)
                && l["metrics"].as_array().unwrap().iter().any(|m| {
                    m["name"] == json!("count")
                        && m["value"] == json!(value)
                        && m["is_historical"] != json!(true)
                })
        }
    };
    for i in 0..CHANGES {
        device.set_holding(1, &[3000 + i]);
        host.next(live(u64::from(3000 + i))).await;
    }
    // Every marker PUBACK since the changes is lost (at least one came and was dropped); the
    // node is quiet now (the PLC holds still), so the cut loses nothing it wrote but a marker.
    common::eventually(
        WAIT,
        || proxy.lost.load(Ordering::SeqCst) >= 1,
        || "no marker PUBACK came to lose".into(),
    )
    .await;
    proxy.cut.send_modify(|g| *g += 1);
    host.next(is("NBIRTH")).await;
    proxy.lose.store(false, Ordering::SeqCst);
    let mut again = Vec::new();
    while again.len() < usize::from(CHANGES) {
        let line = host.next(tank("DDATA")).await;
        for m in line["metrics"].as_array().unwrap() {
            let value = m["value"].as_u64().unwrap_or(0);
            if m["name"] == json!("count") && m["is_historical"] == json!(true) && value >= 3000 {
                again.push(value);
            }
        }
    }
    let expected: Vec<u64> = (0..CHANGES).map(|i| u64::from(3000 + i)).collect();
    assert_eq!(
        again, expected,
        "the changes after the last PUBACK, again, in order"
    );
    // A live change after the backlog: every historical DDATA came before it.
    device.set_holding(1, &[4000]);
    host.next(live(4000)).await;
    // What the host saw twice: each metric value (device, name, timestamp, value) of DDATA.
    let mut seen: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    for line in host.seen.iter().filter(|l| l["type"] == json!("DDATA")) {
        for m in line["metrics"].as_array().unwrap() {
            let key = format!(
                "{} {} {} {}",
                line["device"], m["name"], m["timestamp"], m["value"]
            );
            *seen.entry(key).or_default() += 1;
        }
    }
    let twice: u64 = seen.values().map(|n| n - 1).sum();
    assert!(twice >= u64::from(CHANGES), "{seen:#?}");
    // The node counts a value when rumqttc reports it written: at most a moment after the host
    // has it.
    let duplicates = counted(
        &handles,
        "twinloom_sparkplug_duplicate_records_total",
        twice as f64,
    )
    .await;
    assert_eq!(duplicates, twice as f64, "{seen:#?}");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}
