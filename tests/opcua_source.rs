//! OPC UA source end to end: against the simulator's async-opcua server (including a server
//! restart) and against an asyncua server (an independent implementation).

mod common;

use std::time::Duration;

use common::{config, property, start, wait_for};
use twinloom::twin::{Quality, QualityReason, Value};
use twinloom_sim::opcua::OpcUaSimServer;

const WAIT: Duration = Duration::from_secs(20);

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
