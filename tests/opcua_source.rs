//! OPC UA source end to end: against the simulator's async-opcua server (including a server
//! restart) and against an asyncua server (an independent implementation).

mod common;

use std::time::Duration;

use common::{config, property, start, wait_for};
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::opcua::OpcUaSimServer;

const WAIT: Duration = Duration::from_secs(20);

/// Log lines on stderr when `TWINLOOM_TEST_LOG` is set (an `EnvFilter`, e.g. `info,opcua_client=debug`).
fn logs() {
    if std::env::var("TWINLOOM_TEST_LOG").is_ok() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("TWINLOOM_TEST_LOG"))
            .try_init();
    }
}

fn source_config(endpoint: &str, node: impl Fn(&str) -> String) -> twinloom::config::Config {
    config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[[sources.opcua]]
id = "lab"
endpoint = "{endpoint}"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
publishing_interval = "100ms"
sampling_interval = "50ms"
backoff_min = "100ms"
backoff_max = "500ms"
timeout = "2s"

[[types]]
name = "Lab"
properties = [
  {{ name = "weight", data_type = "float", unit = "g" }},
  {{ name = "weight_kg", data_type = "float", unit = "KGM" }},
]

[[assets]]
path = "site/lab"
type = "Lab"
source = "lab"
[assets.bindings]
weight = {{ node_id = "{weight}" }}
weight_kg = {{ node_id = "{weight}", scale = 0.001 }}
"#,
        state = std::env::temp_dir()
            .join(format!("twinloom-test-{}", std::process::id()))
            .display(),
        weight = node("Weight"),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_server_through_a_restart() {
    logs();
    let server = OpcUaSimServer::start("127.0.0.1:0".parse().unwrap(), &["Weight"])
        .await
        .unwrap();
    server.set("Weight", 501.5);
    let endpoint = server.endpoint_url.clone();
    let handles = start(&source_config(&endpoint, |n| {
        format!("nsu=urn:twinloom-sim:lab;s=Lab.{n}")
    }))
    .await;
    let weight = property(&handles, "site/lab/weight");
    let weight_kg = property(&handles, "site/lab/weight_kg");
    let first = wait_for(&handles, weight, WAIT, |s| {
        s.value == Some(Value::Float(501.5))
    })
    .await;
    assert!(first.quality.is_good() && first.source_time.is_some());
    wait_for(&handles, weight_kg, WAIT, |s| {
        s.value
            .as_ref()
            .and_then(Value::as_f64)
            .is_some_and(|kg| (kg - 0.5015).abs() < 1e-12)
    })
    .await;
    server.set("Weight", 499.0);
    wait_for(&handles, weight, WAIT, |s| {
        s.value == Some(Value::Float(499.0))
    })
    .await;

    // The server goes away: bad (no connection), last value kept.
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap();
    server.stop().await;
    let bad = wait_for(&handles, weight, WAIT, |s| !s.quality.is_good()).await;
    assert_eq!(bad.quality, Quality::bad(QualityReason::NoConnection));
    assert_eq!(bad.value, Some(Value::Float(499.0)));

    // It comes back on the same port: the source finds it again without a daemon restart.
    let server = OpcUaSimServer::start(([127, 0, 0, 1], port).into(), &["Weight"])
        .await
        .unwrap();
    server.set("Weight", 503.0);
    wait_for(&handles, weight, WAIT, |s| {
        s.quality.is_good() && s.value == Some(Value::Float(503.0))
    })
    .await;
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_an_asyncua_server() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(common::python())
        .arg(common::repo().join("tests/peers/opcua_server.py"))
        .arg("3")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1);
    let endpoint = parts.next().expect("asyncua server started").to_owned();
    let ns: u16 = parts.next().unwrap().parse().unwrap();
    // The reference server rewrites v<i> with step × 1000 + i every 100 ms; bind v1 by index.
    let handles = start(&source_config(&endpoint, |_| format!("ns={ns};s=v1"))).await;
    let weight = property(&handles, "site/lab/weight");
    let first = wait_for(&handles, weight, WAIT, |s| s.quality.is_good()).await;
    let Some(Value::Float(a)) = first.value else {
        panic!("{first:?}")
    };
    assert_eq!(a % 1000.0, 1.0, "value of v1 is step × 1000 + 1: {a}");
    let later = wait_for(&handles, weight, WAIT, |s| {
        s.value.as_ref().and_then(Value::as_f64) > Some(a)
    })
    .await;
    assert!(later.quality.is_good());
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

/// The asyncua peer of `tests/peers/opcua_source_peer.py`: a child process answering commands.
struct Peer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    endpoint: String,
}

impl Peer {
    /// Starts a peer serving `count` variables rewritten every `period`.
    fn start(count: usize, period: Duration) -> Self {
        let mut child = std::process::Command::new(common::python())
            .arg(common::repo().join("tests/peers/opcua_source_peer.py"))
            .arg(count.to_string())
            .arg(period.as_secs_f64().to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            child,
            stdin,
            stdout,
            endpoint: String::new(),
        };
        // node-opcua may print its own warnings on stdout first (`[NODE-OPCUA-W27] node
        // version …`, seen when two node peers start at once).
        let mut line = peer.line();
        let mut before = String::new();
        while !line.starts_with("LISTENING ") {
            assert!(
                !line.is_empty() && !line.starts_with("ERROR"),
                "peer did not start: {before}{line}"
            );
            before.push_str(&line);
            line = peer.line();
        }
        peer.endpoint = line
            .split_whitespace()
            .nth(1)
            .expect("asyncua peer started")
            .to_owned();
        peer
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        tokio::task::block_in_place(|| self.stdout.read_line(&mut line)).unwrap();
        line
    }

    /// Sends a command and returns its one-line answer.
    fn command(&mut self, command: &str) -> String {
        use std::io::Write;
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }

    /// Sessions and subscriptions the server holds.
    fn count(&mut self) -> (u32, u32) {
        let answer = self.command("COUNT");
        let mut words = answer.split_whitespace().skip(1);
        let mut next = || words.next().unwrap().parse().unwrap();
        (next(), next())
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with `count` properties `site/b<a>/p<j>` bound to the peer's v<100 a + j> by
/// namespace URI, and `site/odd/ghost` bound to `i=2255` in a namespace the server does not have
/// (in namespace 0 that is the NamespaceArray, which would read Good).
fn peer_config(endpoint: &str, count: usize) -> twinloom::config::Config {
    use std::fmt::Write;
    let properties: Vec<String> = (0..100)
        .map(|j| format!("{{ name = \"p{j}\", data_type = \"float\" }}"))
        .collect();
    let mut text = format!(
        r#"
[[sources.opcua]]
id = "peer"
endpoint = "{endpoint}"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
publishing_interval = "100ms"
sampling_interval = "50ms"
backoff_min = "100ms"
backoff_max = "500ms"
timeout = "2s"

[[types]]
name = "Block"
properties = [{}]

[[types]]
name = "Odd"
properties = [{{ name = "ghost", data_type = "float" }}]

[[assets]]
path = "site/odd"
type = "Odd"
source = "peer"
[assets.bindings]
ghost = {{ node_id = "nsu=urn:nowhere;i=2255" }}
"#,
        properties.join(", ")
    );
    for a in 0..count.div_ceil(100) {
        write!(
            text,
            "\n[[assets]]\npath = \"site/b{a}\"\ntype = \"Block\"\nsource = \"peer\"\n[assets.bindings]\n"
        )
        .unwrap();
        for j in 0..100 {
            writeln!(
                text,
                "p{j} = {{ node_id = \"nsu=urn:twinloom:source-peer;s=v{}\" }}",
                a * 100 + j
            )
            .unwrap();
        }
    }
    config(&text)
}

/// Waits until every one of `properties` satisfies `check`.
async fn wait_all(
    handles: &twinloom::app::Handles,
    properties: &[twinloom::twin::PropertyId],
    limit: Duration,
    check: impl Fn(&twinloom::twin::Sample) -> bool,
) {
    common::eventually(
        limit,
        || properties.iter().all(|p| check(&handles.twin.sample(*p))),
        || {
            let failing = properties
                .iter()
                .filter(|p| !check(&handles.twin.sample(**p)))
                .count();
            format!("{failing} of {} properties not there yet", properties.len())
        },
    )
    .await;
}

fn block_properties(
    handles: &twinloom::app::Handles,
    count: usize,
) -> Vec<twinloom::twin::PropertyId> {
    (0..count)
        .map(|i| property(handles, &format!("site/b{}/p{}", i / 100, i % 100)))
        .collect()
}

/// Issue #26: 2 000 variables on one server arrive (async-opcua's default limits refused the
/// 2 001-element answer and the source reconnected forever); one session and one subscription on
/// the server; an unknown namespace URI is a configuration error with no monitored item; a node
/// deleted while subscribed goes bad while the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_variables_arrive_and_a_deleted_node_goes_bad() {
    const COUNT: usize = 2_000;
    let mut peer = Peer::start(COUNT, Duration::from_millis(500));
    let started = std::time::Instant::now();
    let handles = start(&peer_config(&peer.endpoint, COUNT)).await;
    let blocks = block_properties(&handles, COUNT);
    wait_all(&handles, &blocks, WAIT, |s| s.quality.is_good()).await;
    eprintln!("{COUNT} variables Good after {:?}", started.elapsed());
    for (i, p) in blocks.iter().enumerate().step_by(97) {
        let sample = handles.twin.sample(*p);
        let value = sample.value.as_ref().and_then(Value::as_f64).unwrap();
        assert_eq!(value as usize % 100_000, i, "v{i} carries its own value");
    }
    let ghost = property(&handles, "site/odd/ghost");
    let ghost = wait_for(&handles, ghost, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::ConfigurationError)
    })
    .await;
    assert_eq!(
        ghost.value, None,
        "no monitored item in namespace 0 read it"
    );
    assert_eq!(peer.count(), (1, 1), "one session, one subscription");

    // A node deleted while subscribed: Bad_NodeIdUnknown, kept verbatim; the rest goes on.
    let deleted = blocks[7];
    assert_eq!(peer.command("DELETE 7").trim(), "DELETED 7");
    let gone = wait_for(&handles, deleted, WAIT, |s| !s.quality.is_good()).await;
    assert_eq!(
        gone.quality,
        Quality::bad(QualityReason::Upstream(
            opcua::types::StatusCode::BadNodeIdUnknown.bits()
        ))
    );
    assert!(gone.value.is_some(), "last value kept");
    let neighbour = handles.twin.sample(blocks[8]).value.unwrap();
    wait_for(&handles, blocks[8], WAIT, |s| {
        s.quality.is_good() && s.value.as_ref() != Some(&neighbour)
    })
    .await;
    assert_eq!(peer.count(), (1, 1));
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    common::eventually(
        WAIT,
        || peer.count() == (0, 0),
        || "CloseSession at shutdown deletes the session and its subscription".into(),
    )
    .await;
}

/// Issue #26: a server frozen with SIGSTOP is noticed within 3 keep-alive intervals (1 s here):
/// every property Bad_NoCommunication with its last value; after SIGCONT the source recovers
/// and the server holds one session and one subscription of it. `TWINLOOM_FREEZE_SECS` sets the
/// freeze (default 5 s; the issue's 30 s was run by hand, docs/opcua.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_server_is_noticed_and_the_source_recovers() {
    logs();
    const COUNT: usize = 200;
    let freeze = Duration::from_secs(
        std::env::var("TWINLOOM_FREEZE_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(5),
    );
    let mut peer = Peer::start(COUNT, Duration::from_millis(100));
    let handles = start(&peer_config(&peer.endpoint, COUNT)).await;
    let blocks = block_properties(&handles, COUNT);
    wait_all(&handles, &blocks, WAIT, |s| s.quality.is_good()).await;
    let last = handles.twin.sample(blocks[5]);

    peer.signal("STOP");
    let frozen_at = std::time::Instant::now();
    let stalled = wait_for(&handles, blocks[5], WAIT, |s| !s.quality.is_good()).await;
    let noticed = frozen_at.elapsed();
    assert_eq!(stalled.quality, Quality::bad(QualityReason::NoConnection));
    assert!(stalled.value.is_some(), "the last value is kept");
    assert!(
        stalled.value.as_ref().and_then(Value::as_f64)
            >= last.value.as_ref().and_then(Value::as_f64)
    );
    assert!(
        noticed < Duration::from_secs(5),
        "noticed after {noticed:?}"
    );
    eprintln!("freeze noticed after {noticed:?}");
    wait_all(&handles, &blocks, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::NoConnection)
    })
    .await;
    tokio::time::sleep(freeze.saturating_sub(frozen_at.elapsed())).await;
    peer.signal("CONT");

    let resumed = std::time::Instant::now();
    wait_all(&handles, &blocks, WAIT, |s| s.quality.is_good()).await;
    eprintln!("Good again {:?} after SIGCONT", resumed.elapsed());
    common::eventually(
        WAIT,
        || peer.count() == (1, 1),
        || "one session and one subscription after the freeze".into(),
    )
    .await;
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Issue #26: 20 server restarts (every connection, session and subscription gone, listening again
/// on the same port; the last one a fresh asyncua server): the source comes back after each, and
/// the server holds one session and one subscription of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_restarts_leave_one_session_and_one_subscription() {
    logs();
    const COUNT: usize = 100;
    let mut peer = Peer::start(COUNT, Duration::from_millis(100));
    let handles = start(&peer_config(&peer.endpoint, COUNT)).await;
    let blocks = block_properties(&handles, COUNT);
    wait_all(&handles, &blocks, WAIT, |s| s.quality.is_good()).await;
    let started = std::time::Instant::now();
    for restart in 0..20 {
        let answer = peer.command(if restart == 19 {
            "RESTART FULL"
        } else {
            "RESTART"
        });
        assert!(
            answer.starts_with("LISTENING"),
            "restart {restart}: {answer}"
        );
        // The connection is gone before the server answers (bad, last value kept); then the
        // source is back: a new session, its subscription created again, every value Good.
        let lost = wait_for(&handles, blocks[0], WAIT, |s| !s.quality.is_good()).await;
        assert_eq!(lost.quality, Quality::bad(QualityReason::NoConnection));
        wait_all(&handles, &blocks, WAIT, |s| s.quality.is_good()).await;
        let (sessions, subscriptions) = peer.count();
        assert!(
            sessions <= 1 && subscriptions <= 1,
            "restart {restart}: {sessions} sessions, {subscriptions} subscriptions"
        );
    }
    eprintln!("20 restarts followed in {:?}", started.elapsed());
    common::eventually(
        WAIT,
        || peer.count() == (1, 1),
        || "one session and one subscription after 20 restarts".into(),
    )
    .await;
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// A child process peer (`tests/peers/opcua_write_peer.py` with Python, or a node-opcua script)
/// that prints `LISTENING <url> <namespace index>` and answers `GET <name>` with
/// `VALUE <name> <value>`.
struct WritePeer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    endpoint: String,
}

impl WritePeer {
    fn start(program: std::path::PathBuf, script: &str) -> Self {
        let mut child = std::process::Command::new(program)
            .arg(common::repo().join(script))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut peer = Self {
            child,
            stdin,
            stdout,
            endpoint: String::new(),
        };
        // node-opcua may print its own warnings on stdout first (`[NODE-OPCUA-W27] node
        // version …`, seen when two node peers start at once).
        let mut line = peer.line();
        let mut before = String::new();
        while !line.starts_with("LISTENING ") {
            assert!(
                !line.is_empty() && !line.starts_with("ERROR"),
                "peer did not start: {before}{line}"
            );
            before.push_str(&line);
            line = peer.line();
        }
        peer.endpoint = line
            .strip_prefix("LISTENING ")
            .and_then(|l| l.split_whitespace().next())
            .unwrap_or_else(|| panic!("peer did not start: {line}"))
            .to_owned();
        peer
    }

    fn line(&mut self) -> String {
        use std::io::BufRead;
        let mut line = String::new();
        tokio::task::block_in_place(|| self.stdout.read_line(&mut line)).unwrap();
        line
    }

    /// The variable's value as the server holds it (Python's repr).
    fn get(&mut self, name: &str) -> String {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "GET {name}").unwrap();
        stdin.flush().unwrap();
        let line = self.line();
        line.trim()
            .strip_prefix(&format!("VALUE {name} "))
            .unwrap_or_else(|| panic!("{line}"))
            .to_owned()
    }

    fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for WritePeer {
    fn drop(&mut self) {
        self.signal("CONT");
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config with read-write properties bound to the asyncua write peer's variables by namespace
/// URI; audit and state in `state`.
fn write_config(endpoint: &str, state: &std::path::Path) -> twinloom::config::Config {
    config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[control]
write_timeout = "1s"

[[sources.opcua]]
id = "plc"
endpoint = "{endpoint}"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
publishing_interval = "100ms"
sampling_interval = "50ms"
backoff_min = "100ms"
backoff_max = "500ms"
timeout = "3s"

[[types]]
name = "Filler"
properties = [
  {{ name = "speed", data_type = "float", access = "read-write" }},
  {{ name = "count", data_type = "integer", access = "read-write" }},
  {{ name = "run", data_type = "bool", access = "read-write" }},
  {{ name = "locked", data_type = "float", access = "read-write" }},
  {{ name = "guarded", data_type = "float", access = "read-write" }},
]

[[assets]]
path = "site/filler"
type = "Filler"
source = "plc"
[assets.bindings]
speed = {{ node_id = "nsu=urn:twinloom:write-peer;s=Speed" }}
count = {{ node_id = "nsu=urn:twinloom:write-peer;s=Count" }}
run = {{ node_id = "nsu=urn:twinloom:write-peer;s=Run" }}
locked = {{ node_id = "nsu=urn:twinloom:write-peer;s=Locked" }}
guarded = {{ node_id = "nsu=urn:twinloom:write-peer;s=Guarded" }}
"#,
        state = state.display(),
    ))
}

/// The outcome record of each write, by property path, in the order written (the last one
/// per property).
fn outcomes(
    audit: &std::path::Path,
) -> std::collections::HashMap<String, serde_json::Map<String, serde_json::Value>> {
    let records = twinloom::runtime::journal::records(audit).unwrap();
    let intents: std::collections::HashMap<u64, String> = records
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
        .collect()
}

/// Issue #27: writes through the control gate to an asyncua server's Float, Int16 and Boolean
/// variables arrive with their types and are read back; a value outside Int16 is refused
/// (out-of-range) with nothing sent; a read-only variable and one the user may not write are
/// refused with the server's status; every write is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_an_asyncua_server_through_the_gate() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;
    logs();
    let mut peer = WritePeer::start(common::python(), "tests/peers/opcua_write_peer.py");
    let state = tempfile::tempdir().unwrap();
    let handles = start(&write_config(&peer.endpoint, state.path())).await;
    let [speed, count, run, locked, guarded] = ["speed", "count", "run", "locked", "guarded"]
        .map(|name| property(&handles, &format!("site/filler/{name}")));
    for p in [speed, count, run, locked, guarded] {
        wait_for(&handles, p, WAIT, |s| s.quality.is_good()).await;
    }
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    let write = |property, value| handles.control.write(property, value, operator.clone());

    assert_eq!(write(speed, Value::Float(21.5)).await, Ok(()));
    assert_eq!(peer.get("Speed"), "21.5");
    assert_eq!(write(count, Value::Int(-7)).await, Ok(()));
    assert_eq!(peer.get("Count"), "-7");
    assert_eq!(write(run, Value::Bool(true)).await, Ok(()));
    assert_eq!(peer.get("Run"), "True");
    let audit = state.path().join("audit");
    let written = outcomes(&audit);
    for (path, holds) in [
        ("site/filler/speed", serde_json::json!(21.5)),
        ("site/filler/count", serde_json::json!(-7)),
        ("site/filler/run", serde_json::json!(true)),
    ] {
        assert_eq!(written[path]["outcome"], "written", "{path}");
        assert_eq!(written[path]["holds"], holds, "{path}: read back");
    }
    // The subscription brings the written values to the twin.
    wait_for(&handles, count, WAIT, |s| s.value == Some(Value::Int(-7))).await;

    // 40 000 does not fit Int16: refused before anything is sent.
    assert!(matches!(
        write(count, Value::Int(40_000)).await,
        Err(ControlError::Source(WriteError::OutOfRange { .. }))
    ));
    assert_eq!(peer.get("Count"), "-7");
    // The server refuses: read-only (asyncua answers Bad_UserAccessDenied for it too) and a
    // variable the user may not write.
    for (p, name) in [(locked, "Locked"), (guarded, "Guarded")] {
        let refused = write(p, Value::Float(5.0)).await;
        assert!(
            matches!(&refused, Err(ControlError::Source(WriteError::DeviceRejected { detail })) if detail.contains("BadUserAccessDenied")),
            "{name}: {refused:?}"
        );
        assert_ne!(peer.get(name), "5.0");
    }
    let audited = outcomes(&audit);
    assert_eq!(audited["site/filler/count"]["outcome"], "device-error");
    assert!(
        audited["site/filler/count"]["error"]
            .as_str()
            .unwrap()
            .contains("out of range")
    );
    for path in ["site/filler/locked", "site/filler/guarded"] {
        assert_eq!(audited[path]["outcome"], "device-error", "{path}");
        assert!(
            audited[path]["error"]
                .as_str()
                .unwrap()
                .contains("BadUserAccessDenied"),
            "{path}: {:?}",
            audited[path]
        );
    }
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Issue #27: a server frozen (SIGSTOP) with two writes under way: one is on the wire (audited
/// `unknown` after the proposer's deadline), the other waits behind it and is never sent — not
/// after the deadline, not after the server resumes. Once the freeze is noticed, a write is
/// answered `NotConnected` at once and never sent either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_past_its_deadline_is_never_applied_later() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;
    logs();
    let mut peer = WritePeer::start(common::python(), "tests/peers/opcua_write_peer.py");
    let state = tempfile::tempdir().unwrap();
    let handles = start(&write_config(&peer.endpoint, state.path())).await;
    let [speed, count] =
        ["speed", "count"].map(|n| property(&handles, &format!("site/filler/{n}")));
    for p in [speed, count] {
        wait_for(&handles, p, WAIT, |s| s.quality.is_good()).await;
    }
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    peer.signal("STOP");
    let (first, second) = tokio::join!(
        handles
            .control
            .write(speed, Value::Float(30.0), operator.clone()),
        handles
            .control
            .write(count, Value::Int(3), operator.clone()),
    );
    // The one on the wire is answered at the deadline (its outcome unknown); the one behind it
    // is dropped at its deadline (nothing sent), answered `Expired` or, when the gate's own timer
    // fires first at the same instant, `Timeout` (the audit below tells them apart).
    for answer in [&first, &second] {
        assert!(
            matches!(
                answer,
                Err(ControlError::Expired | ControlError::Source(WriteError::Timeout))
            ),
            "{answer:?}"
        );
    }
    let audit = state.path().join("audit");
    common::eventually(
        WAIT,
        || outcomes(&audit).len() == 2,
        || format!("{:?}", outcomes(&audit)),
    )
    .await;
    let late = outcomes(&audit);
    let outcome = |p: &str| late[p]["outcome"].as_str().unwrap().to_owned();
    let mut kinds = [outcome("site/filler/speed"), outcome("site/filler/count")];
    kinds.sort();
    assert_eq!(kinds, ["not-sent", "unknown"], "{late:?}");
    let (never, name) = if outcome("site/filler/count") == "not-sent" {
        (count, "Count")
    } else {
        (speed, "Speed")
    };

    // The freeze is noticed (3 keep-alive intervals of 1 s): a write is answered at once.
    wait_for(&handles, speed, WAIT, |s| !s.quality.is_good()).await;
    let asked = std::time::Instant::now();
    let down = handles
        .control
        .write(never, Value::Int(9), operator.clone())
        .await;
    assert_eq!(down, Err(ControlError::Source(WriteError::NotConnected)));
    // At once: well under the source's 3 s timeout (the gate's intent record is synced first).
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    peer.signal("CONT");
    wait_for(&handles, never, WAIT, |s| s.quality.is_good()).await;
    // Whatever reached the server while it was frozen has been handled by now (the source
    // reconnected after it): the write that was never sent is not there.
    let held = peer.get(name);
    assert!(held == "0" || held == "0.0", "{name} holds {held}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = peer.get(name);
    assert!(held == "0" || held == "0.0", "{name} holds {held} later");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// Issue #27: bindings by browse path against node-opcua (whose NodeIds the config never names):
/// resolved after connecting, read and written through the gate; a path that does not resolve
/// makes only its property Bad_ConfigurationError; a read-only variable answers Bad_NotWritable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_paths_resolve_and_write_on_node_opcua() {
    use twinloom::control::{ControlError, Origin};
    use twinloom::twin::WriteError;
    logs();
    let peer = WritePeer::start("node".into(), "tests/peers/node/opcua_write_server.js");
    let state = tempfile::tempdir().unwrap();
    let handles = start(&config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[[sources.opcua]]
id = "plc"
endpoint = "{endpoint}"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
publishing_interval = "100ms"
sampling_interval = "50ms"
backoff_min = "100ms"
backoff_max = "500ms"
namespaces = {{ plc = "urn:twinloom:node-write-peer" }}

[[types]]
name = "Filler"
properties = [
  {{ name = "speed", data_type = "float", access = "read-write" }},
  {{ name = "level", data_type = "float", access = "read-write" }},
  {{ name = "ghost", data_type = "float" }},
]

[[assets]]
path = "site/filler"
type = "Filler"
source = "plc"
[assets.bindings]
speed = {{ browse_path = "/plc:Line1/plc:Filler/plc:Speed" }}
level = {{ browse_path = "/plc:Line1.plc:Filler.plc:Level" }}
ghost = {{ browse_path = "/plc:Line1/plc:Filler/plc:Nope" }}
"#,
        state = state.path().display(),
        endpoint = peer.endpoint,
    )))
    .await;
    let [speed, level, ghost] =
        ["speed", "level", "ghost"].map(|n| property(&handles, &format!("site/filler/{n}")));
    wait_for(&handles, level, WAIT, |s| {
        s.value == Some(Value::Float(7.5))
    })
    .await;
    wait_for(&handles, ghost, WAIT, |s| {
        s.quality == Quality::bad(QualityReason::ConfigurationError)
    })
    .await;
    wait_for(&handles, speed, WAIT, |s| s.quality.is_good()).await;
    let operator = Origin::OpcUa {
        user: "operator".into(),
    };
    assert_eq!(
        handles
            .control
            .write(speed, Value::Float(12.25), operator.clone())
            .await,
        Ok(())
    );
    wait_for(&handles, speed, WAIT, |s| {
        s.value == Some(Value::Float(12.25))
    })
    .await;
    let refused = handles
        .control
        .write(level, Value::Float(1.0), operator.clone())
        .await;
    assert!(
        matches!(&refused, Err(ControlError::Source(WriteError::NotWritable { detail })) if detail.contains("BadNotWritable")),
        "{refused:?}"
    );
    let audited = outcomes(&state.path().join("audit"));
    assert_eq!(audited["site/filler/speed"]["outcome"], "written");
    assert_eq!(audited["site/filler/speed"]["holds"], 12.25);
    assert_eq!(audited["site/filler/level"]["outcome"], "device-error");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}

/// The config of `twinloom check --online`'s test, against the node-opcua write server.
fn online_config(endpoint: &str, state: &std::path::Path) -> String {
    format!(
        r#"[daemon]
state_dir = "{state}"

[[sources.opcua]]
id = "plc"
endpoint = "{endpoint}"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
namespaces = {{ plc = "urn:twinloom:node-write-peer", gone = "urn:nowhere" }}

[[types]]
name = "Filler"
properties = [
  {{ name = "speed", data_type = "float", access = "read-write" }},
  {{ name = "level", data_type = "bool" }},
  {{ name = "ghost", data_type = "float" }},
  {{ name = "missing", data_type = "float" }},
  {{ name = "elsewhere", data_type = "float" }},
  {{ name = "lost", data_type = "float" }},
]

[[assets]]
path = "site/filler"
type = "Filler"
source = "plc"
bindings.speed = {{ browse_path = "/plc:Line1/plc:Filler/plc:Speed" }}
bindings.level = {{ browse_path = "/plc:Line1/plc:Filler/plc:Level" }}
bindings.ghost = {{ browse_path = "/plc:Line1/plc:Nope" }}
bindings.missing = {{ node_id = "nsu=urn:twinloom:node-write-peer;s=nope" }}
bindings.elsewhere = {{ node_id = "nsu=urn:nowhere;s=x" }}
bindings.lost = {{ browse_path = "/gone:Line1" }}
"#,
        state = state.display()
    )
}

/// Issue #27: `twinloom check --online` reports, at each binding's line:col, a DataType that does
/// not fit, a browse path that does not resolve, a missing node and unknown namespaces, and exits
/// 64; without `--online` the same file is valid (it cannot know).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_reports_bindings_that_do_not_fit_the_server() {
    let peer = WritePeer::start("node".into(), "tests/peers/node/opcua_write_server.js");
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join("twinloom.toml");
    std::fs::write(&file, online_config(&peer.endpoint, state.path())).unwrap();
    let twinloom = || std::process::Command::new(env!("CARGO_BIN_EXE_twinloom"));
    let offline = twinloom().arg("check").arg(&file).output().unwrap();
    assert_eq!(offline.status.code(), Some(0), "{offline:?}");
    let online = tokio::task::spawn_blocking(move || {
        twinloom()
            .args(["check", "--online"])
            .arg(&file)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&online.stderr);
    assert_eq!(online.status.code(), Some(64), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.split_once("twinloom.toml:").map(|(_, rest)| rest))
        .collect();
    let expected = [
        "28:18: assets[0].bindings.level: the variable's DataType Double does not fit the property's data type `bool`",
        "29:18: assets[0].bindings.ghost: browse path `/plc:Line1/plc:Nope` does not resolve on the server (BadNoMatch)",
        "30:20: assets[0].bindings.missing: node `ns=2;s=nope` does not exist on the server (BadNodeIdUnknown)",
        "31:22: assets[0].bindings.elsewhere: the server has no namespace `urn:nowhere` (not in its NamespaceArray)",
        "32:17: assets[0].bindings.lost: the server has no namespace `urn:nowhere` (not in its NamespaceArray)",
    ];
    assert_eq!(lines, expected, "{stderr}");
}

/// A TCP proxy on 127.0.0.1 between the source and a server that, on command, swallows the
/// server's OPC UA chunks (Part 6 §7.1.2: 8-byte header, type, size) instead of passing them on —
/// a Publish response lost on the way, never acknowledged — and cuts every connection. It writes
/// its own port over the server's in the server's answers (`127.0.0.1:<port>`, ports of equal
/// length, security None): async-opcua 0.19 matches endpoints ignoring the port
/// (`url_matches_except_host`) and would connect to the server's own port, around the proxy.
struct Proxy {
    port: u16,
    swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Server chunks swallowed so far.
    swallowed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bumped to cut every connection open at the time.
    cut: tokio::sync::watch::Sender<u64>,
    /// While true, new connections wait before reaching the server (the client's reconnect is
    /// held up).
    held: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    /// Listens on a free port; `upstream` (the server's port) comes once the server is up.
    async fn bind() -> (Self, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            swallow: Default::default(),
            swallowed: Default::default(),
            cut: tokio::sync::watch::channel(0).0,
            held: tokio::sync::watch::channel(false).0,
        };
        (proxy, listener)
    }

    /// Forwards every connection `listener` accepts to `upstream`.
    #[allow(clippy::disallowed_methods, reason = "a test peer, not the daemon")]
    fn run(&self, listener: tokio::net::TcpListener, upstream: u16) {
        let (from, to) = (
            format!("127.0.0.1:{upstream}").into_bytes(),
            format!("127.0.0.1:{}", self.port).into_bytes(),
        );
        assert_eq!(from.len(), to.len(), "ports of one length");
        let (swallow, swallowed, cut) = (
            self.swallow.clone(),
            self.swallowed.clone(),
            self.cut.clone(),
        );
        let mut held = self.held.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let _ = held.wait_for(|held| !*held).await;
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (swallow, swallowed, mut cut) =
                    (swallow.clone(), swallowed.clone(), cut.subscribe());
                let (from, to) = (from.clone(), to.clone());
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let (mut client_rx, mut client_tx) = client.into_split();
                    let (mut server_rx, mut server_tx) = server.into_split();
                    let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                    let down = async {
                        let mut header = [0u8; 8];
                        loop {
                            server_rx.read_exact(&mut header).await?;
                            let size = u32::from_le_bytes(header[4..8].try_into().unwrap());
                            let mut body = vec![0; (size as usize).saturating_sub(8)];
                            server_rx.read_exact(&mut body).await?;
                            let mut at = 0;
                            while let Some(i) =
                                body[at..].windows(from.len()).position(|w| w == from)
                            {
                                body[at + i..at + i + to.len()].copy_from_slice(&to);
                                at += i + to.len();
                            }
                            if swallow.load(std::sync::atomic::Ordering::SeqCst) {
                                swallowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                continue;
                            }
                            client_tx.write_all(&header).await?;
                            client_tx.write_all(&body).await?;
                        }
                        #[allow(unreachable_code)]
                        std::io::Result::Ok(())
                    };
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
    }

    fn swallowed(&self) -> u64 {
        self.swallowed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Swallows server chunks until at least `chunks` more are gone.
    async fn swallow(&self, chunks: u64) {
        let from = self.swallowed();
        self.swallow
            .store(true, std::sync::atomic::Ordering::SeqCst);
        common::eventually(
            WAIT,
            || self.swallowed() >= from + chunks,
            || format!("{} server chunks swallowed", self.swallowed() - from),
        )
        .await;
    }

    /// Holds new connections back (accepted, not yet passed to the server) until [`Self::release`].
    fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Lets held and new connections through to the server.
    fn release(&self) {
        self.held.send_replace(false);
    }

    /// Cuts every open connection and passes chunks on again.
    fn cut(&self) {
        self.swallow
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }
}

/// node-opcua's counter peer (`tests/peers/node/opcua_counter_server.js`).
struct CounterPeer {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    port: u16,
    namespace: u16,
}

impl CounterPeer {
    fn start() -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new("node")
            .arg(common::repo().join("tests/peers/node/opcua_counter_server.js"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        // node-opcua prints its own warnings on stdout first.
        let mut line = String::new();
        while !line.starts_with("LISTENING ") {
            line.clear();
            if stdout.read_line(&mut line).unwrap() == 0 || line.starts_with("ERROR") {
                panic!("peer did not start: {line}");
            }
        }
        let mut parts = line
            .strip_prefix("LISTENING opc.tcp://127.0.0.1:")
            .unwrap_or_else(|| panic!("peer did not start: {line}"))
            .split_whitespace();
        let port = parts.next().unwrap().trim_end_matches('/').parse().unwrap();
        let namespace = parts.next().unwrap().parse().unwrap();
        Self {
            child,
            stdin,
            stdout,
            port,
            namespace,
        }
    }

    /// Sends `command`; returns the rest of its answer line `<answer>…`, trimmed.
    fn ask(&mut self, command: &str, answer: &str) -> String {
        use std::io::{BufRead, Write};
        writeln!(self.stdin.as_mut().unwrap(), "{command}").unwrap();
        let mut line = String::new();
        while !line.starts_with(answer) {
            line.clear();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "peer ended");
        }
        line[answer.len()..].trim().to_owned()
    }

    /// Sends `command`; returns the number of its answer `<answer> <n>`.
    fn command(&mut self, command: &str, answer: &str) -> u64 {
        let rest = self.ask(command, answer);
        rest.parse().unwrap_or_else(|_| panic!("{answer}{rest}"))
    }

    /// Empties the server's retransmission queues; returns how many messages were dropped.
    fn forget(&mut self) -> u64 {
        self.command("FORGET", "FORGOT ")
    }

    /// Closes every session as if it had timed out, keeping its subscriptions (the source's
    /// ActivateSession then fails: a new session takes the subscription with
    /// TransferSubscriptions). Without it a cut connection reactivates the same session, where
    /// the subscription lives on (node-opcua would answer TransferSubscriptions there with
    /// Bad_NothingToDo; the source sends none, docs/opcua.md).
    fn expire(&mut self) -> u64 {
        self.command("EXPIRE", "EXPIRED ")
    }

    /// Stops the counter (node-opcua does not sample an orphaned subscription's items: values
    /// changing while no session holds it reach no client); returns its value.
    fn pause(&mut self) -> u64 {
        self.command("PAUSE", "PAUSED ")
    }

    /// Counts again; returns the value.
    fn resume(&mut self) -> u64 {
        self.command("RESUME", "RESUMED ")
    }

    /// Counts once (paused: exactly one change); returns the value once every monitored item
    /// has queued it.
    fn step(&mut self) -> u64 {
        self.command("STEP", "STEPPED ")
    }

    /// From now on a reactivated session's monitored items do not send their current values
    /// again (as most servers; node-opcua does by default).
    fn quiet(&mut self) {
        assert_eq!(self.command("QUIET", "QUIET "), 1);
    }

    /// Sessions and subscriptions the server holds (orphaned subscriptions too; Twinloom is
    /// its only client).
    fn count(&mut self) -> (u64, u64) {
        let rest = self.ask("COUNT", "COUNTED ");
        let mut words = rest.split_whitespace();
        let mut next = || {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .expect("two counts")
        };
        (next(), next())
    }
}

impl Drop for CounterPeer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The counter peer behind `proxy`, its `Counter` bound to `site/c/count`, a change log in
/// `state`.
fn counter_config(proxy: u16, namespace: u16, state: &std::path::Path) -> twinloom::config::Config {
    config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[change_log]
max_disk = "64MiB"
commit_window = "50ms"

[[sources.opcua]]
id = "counter"
endpoint = "opc.tcp://127.0.0.1:{proxy}/"
security_policy = "none"
security_mode = "none"
trust_server_certificate = true
publishing_interval = "100ms"
sampling_interval = "50ms"
backoff_min = "100ms"
backoff_max = "500ms"
timeout = "2s"

[[types]]
name = "Counter"
properties = [{{ name = "count", data_type = "unsigned" }}]

[[assets]]
path = "site/c"
type = "Counter"
source = "counter"
[assets.bindings]
count = {{ node_id = "ns={namespace};s=Counter" }}
"#,
        state = state.display(),
    ))
}

/// Every change record of the log (one property), and the gaps.
fn counter_log(
    handles: &twinloom::app::Handles,
) -> (
    Vec<(u64, bool, std::time::SystemTime)>,
    Vec<twinloom::change_log::GapReason>,
) {
    // Good values only: a bad change keeps the last value (the connection lost).
    use twinloom::change_log::Record;
    let mut reader = handles.change_log.as_ref().expect("the log runs").reader(0);
    let (mut changes, mut gaps) = (Vec::new(), Vec::new());
    while let Some(entry) = reader.try_next().expect("readable") {
        match entry.record {
            Record::Change {
                value: Some(Value::UInt(v)),
                late,
                source_time,
                quality,
                ..
            } if quality.is_good() => changes.push((v, late, source_time.expect("a source time"))),
            Record::Gap { reason, .. } => gaps.push(reason),
            _ => {}
        }
    }
    (changes, gaps)
}

fn source_metric(handles: &twinloom::app::Handles, name: &str) -> f64 {
    common::metric(
        &handles.metrics.encode(),
        &format!("twinloom_opcua_source_{name}_total{{source=\"counter\"}}"),
    )
}

/// Waits until the counter is Good and at least `value`.
async fn counter_reaches(handles: &twinloom::app::Handles, value: u64) -> u64 {
    let count = property(handles, "site/c/count");
    let sample = wait_for(handles, count, WAIT, |s| {
        s.quality.is_good() && s.value.as_ref().and_then(Value::as_f64) >= Some(value as f64)
    })
    .await;
    sample.value.and_then(|v| v.as_f64()).unwrap() as u64
}

/// The counter peer behind a proxy and the daemon reading it through the proxy, the counter Good
/// and seen counting: the proxy, the peer, the state folder (the change log's) and the handles.
async fn counter_running() -> (
    Proxy,
    CounterPeer,
    tempfile::TempDir,
    twinloom::app::Handles,
) {
    logs();
    let (proxy, listener) = Proxy::bind().await;
    let peer = CounterPeer::start();
    proxy.run(listener, peer.port);
    let state = tempfile::tempdir().unwrap();
    let handles = start(&counter_config(proxy.port, peer.namespace, state.path())).await;
    let first = counter_reaches(&handles, 0).await;
    counter_reaches(&handles, first + 3).await;
    (proxy, peer, state, handles)
}

/// How the connection to the counter peer breaks in the Republish tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    /// The session closed on the server first (its subscription kept, orphaned), then the
    /// connection cut: async-opcua's ActivateSession is refused and a new session takes the
    /// subscription with TransferSubscriptions.
    SessionExpired,
    /// Only the connection cut: ActivateSession on the old session works, and the subscription
    /// lives on in it (OPC UA Part 4 §6.7).
    ConnectionOnly,
}

/// Breaks the connection after Publish responses were swallowed: per `how`, the session expired
/// on the server or not. With `step` (and [`Break::ConnectionOnly`]) the counter, paused, counts
/// once while the reconnect is held up: the session's subscription queues that value (node-opcua
/// samples the items of a session without a channel), so the first NotificationMessage after the
/// reconnect is newer than the lost ones. Returns the stepped value, and the sessions and
/// subscriptions the server must hold once the source is back: one and one after the expiry (a
/// new session), otherwise those it held before (the reconnect adds none: the same session, its
/// subscription kept). Counted before rather than taken as (1, 1): a first connection attempt
/// that timed out under load can leave a session the server keeps until its timeout.
async fn break_connection(
    proxy: &Proxy,
    peer: &mut CounterPeer,
    how: Break,
    step: bool,
) -> (Option<u64>, (u64, u64)) {
    let before = peer.count();
    assert_eq!(before.1, 1, "one subscription before the break");
    match how {
        Break::SessionExpired => {
            assert_eq!(peer.expire(), before.0);
            proxy.cut();
            (None, (1, 1))
        }
        Break::ConnectionOnly if step => {
            proxy.hold();
            proxy.cut();
            let stepped = peer.step();
            proxy.release();
            (Some(stepped), before)
        }
        Break::ConnectionOnly => {
            proxy.cut();
            (None, before)
        }
    }
}

/// Publish responses lost on the way (never acknowledged), then the connection broken as `how`
/// says: the source sees the sequence numbers it skipped and gets them back with Republish. The
/// change log holds every value of the counter once, in source-time order, those older than the
/// twin's value when they came back as late; the current changes rise; the twin's value is the
/// newest; the server holds one session and one subscription.
async fn lost_publish_responses_come_back(how: Break) {
    let (proxy, mut peer, _state, handles) = counter_running().await;

    // Publish responses swallowed (async-opcua keeps a few Publish requests out), the counter
    // paused (node-opcua does not sample an orphaned subscription's items), the connection broken.
    proxy.swallow(2).await;
    let paused = peer.pause();
    let (stepped, after) = break_connection(&proxy, &mut peer, how, true).await;
    let paused = stepped.unwrap_or(paused);
    common::eventually(
        WAIT,
        || source_metric(&handles, "republished") >= 1.0,
        || "no notification republished".to_owned(),
    )
    .await;
    counter_reaches(&handles, paused).await;
    peer.resume();
    counter_reaches(&handles, paused + 5).await;
    assert_eq!(source_metric(&handles, "lost_notifications"), 0.0);
    // A new session after the expiry (the expired one gone); otherwise the old one, since a new
    // session would leave it on the server until its timeout; one subscription.
    assert_eq!(peer.count(), after, "sessions, subscriptions ({how:?})");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;

    let (changes, gaps) = counter_log(&handles);
    eprintln!(
        "{how:?}: {} republished, {} changes, {} late",
        source_metric(&handles, "republished"),
        changes.len(),
        changes.iter().filter(|(_, late, _)| *late).count()
    );
    assert!(gaps.is_empty(), "{gaps:?}");
    // After a transfer the subscription's initial values bring the newest value before Republish
    // brings the older ones: late. On the reactivated session what Republish brings is late only
    // when a newer message came first: the stepped value, or node-opcua's values sent again on
    // ActivateSession (a server that sends neither first leaves the republished values the
    // newest, current — just as right, so not required here).
    assert!(
        how == Break::ConnectionOnly || changes.iter().any(|(_, late, _)| *late),
        "no late (republished) change: {changes:?}"
    );
    // By source time: every value from the first on, once, in order. One sample may be logged
    // twice with its own source time: Good, then (connection lost) Bad with the value kept, then
    // Good again when the transferred subscription's initial value brings it back — a quality
    // change, not a second sample.
    let mut by_time = changes.clone();
    by_time.sort_by_key(|(_, _, at)| *at);
    by_time.dedup_by_key(|(v, _, at)| (*v, *at));
    let values: Vec<u64> = by_time.iter().map(|(v, _, _)| *v).collect();
    let expected: Vec<u64> = (values[0]..values[0] + values.len() as u64).collect();
    assert_eq!(values, expected, "{changes:?}");
    // The current value is the newest, and no late change is newer than the change before it.
    let newest = *values.last().unwrap();
    let count = property(&handles, "site/c/count");
    assert_eq!(handles.twin.sample(count).value, Some(Value::UInt(newest)));
    assert_current_values_rise(&changes);
}

/// The changes that were current (not late) rise: nothing republished overrode a newer value.
fn assert_current_values_rise(changes: &[(u64, bool, std::time::SystemTime)]) {
    let mut current: Vec<(u64, std::time::SystemTime)> = changes
        .iter()
        .filter(|(_, late, _)| !late)
        .map(|(v, _, at)| (*v, *at))
        .collect();
    // A sample again with its own source time is its quality coming back (see above).
    current.dedup();
    assert!(current.windows(2).all(|w| w[0].0 < w[1].0), "{current:?}");
}

/// Issue #26: the session gone on the server, the connection cut: async-opcua's ActivateSession
/// is refused, a new session, TransferSubscriptions (the subscription keeps its id and numbers);
/// the lost messages come back with Republish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_publish_responses_are_republished_into_the_change_log() {
    lost_publish_responses_come_back(Break::SessionExpired).await;
}

/// Issue #26: only the connection cut: async-opcua reactivates the same session, where the
/// subscription lives on (no TransferSubscriptions, nothing created again); its next
/// NotificationMessage — newer than the lost ones, queued while the reconnect was held up —
/// skips their numbers, and they come back with Republish as late samples.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactivated_session_republishes_what_its_subscription_lost() {
    lost_publish_responses_come_back(Break::ConnectionOnly).await;
}

/// The server no longer has the lost messages (its retransmission queue emptied), the connection
/// broken as `how` says: Republish answers Bad_MessageNotAvailable, the loss is counted and an
/// `upstream` gap in the change log, and the source goes on with one session and one
/// subscription on the server.
async fn forgotten_messages_are_a_counted_gap(how: Break) {
    let (proxy, mut peer, _state, handles) = counter_running().await;

    proxy.swallow(2).await;
    assert!(
        peer.forget() >= 1,
        "the server held no unacknowledged message"
    );
    let (_, held) = break_connection(&proxy, &mut peer, how, false).await;
    common::eventually(
        WAIT,
        || source_metric(&handles, "lost_notifications") >= 1.0,
        || "no loss counted".to_owned(),
    )
    .await;
    let after = counter_reaches(&handles, 0).await;
    counter_reaches(&handles, after + 3).await;
    assert_eq!(peer.count(), held, "sessions, subscriptions ({how:?})");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    let (changes, gaps) = counter_log(&handles);
    eprintln!(
        "{how:?}: {} lost, gaps {gaps:?}",
        source_metric(&handles, "lost_notifications")
    );
    assert!(
        gaps.contains(&twinloom::change_log::GapReason::Upstream),
        "{gaps:?}"
    );
    // The values go on after the gap, in order.
    assert_current_values_rise(&changes);
    assert!(
        changes.iter().any(|(v, late, _)| !late && *v > after),
        "{changes:?}"
    );
}

/// Issue #26: the lost messages forgotten by the server, the session expired, the connection cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_the_server_no_longer_has_are_a_counted_gap() {
    forgotten_messages_are_a_counted_gap(Break::SessionExpired).await;
}

/// Issue #26: the lost messages forgotten by the server, only the connection cut (the same
/// session reactivated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactivated_session_counts_what_the_server_no_longer_has() {
    forgotten_messages_are_a_counted_gap(Break::ConnectionOnly).await;
}

/// Issue #26: a subscription reports changes only. After a cut connection whose session
/// async-opcua reactivates (the subscription kept, nothing created again on the server), a value
/// that did not change meanwhile gets its quality back from the source's Read: the same sample,
/// value and source timestamp. The peer is quiet: node-opcua would otherwise send every item's
/// value again on ActivateSession, which most servers do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reactivated_session_gives_unchanged_values_their_quality_back() {
    let (proxy, mut peer, _state, handles) = counter_running().await;
    peer.quiet();
    let paused = peer.pause();
    let count = property(&handles, "site/c/count");
    let before = wait_for(&handles, count, WAIT, |s| {
        s.quality.is_good() && s.value == Some(Value::UInt(paused))
    })
    .await;

    // The reconnect held back until the loss is seen.
    let sessions = peer.count();
    proxy.hold();
    proxy.cut();
    let lost = wait_for(&handles, count, WAIT, |s| !s.quality.is_good()).await;
    assert_eq!(lost.quality, Quality::bad(QualityReason::NoConnection));
    proxy.release();
    let back = wait_for(&handles, count, WAIT, |s| s.quality.is_good()).await;
    assert_eq!(
        (back.value, back.source_time),
        (before.value, before.source_time)
    );
    // Nothing added: the same session, its subscription kept (see `break_connection`).
    assert_eq!(peer.count(), sessions, "sessions, subscriptions");
    assert_eq!(sessions.1, 1);
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
}
