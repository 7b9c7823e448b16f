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
        let line = peer.line();
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
