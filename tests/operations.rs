//! Operations: admin HTTP endpoints, configuration reload (in process and by SIGHUP).

// Tests and benchmarks drive peers and readers from outside the daemon; the rule that every
// task goes through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{property, wait_for};
use twinloom::app::{Daemon, Reloaded};
use twinloom::twin::Value;
use twinloom_sim::modbus::{ModbusServer, SimDevice};

const WAIT: Duration = Duration::from_secs(10);

async fn http(addr: SocketAddr, path: &'static str) -> (u16, String) {
    common::http(addr, "GET", path, None).await
}

async fn device_server(value: u16) -> (Arc<SimDevice>, ModbusServer) {
    let device = SimDevice::new();
    device.set_holding(0, &[value]);
    let server = common::modbus_tcp(&device).await;
    (device, server)
}

fn config_text(
    a: SocketAddr,
    b: SocketAddr,
    b_timeout: &str,
    admin: &str,
    extra_property: bool,
) -> String {
    // A state folder of this test process's own, the same for every call (a reload must see the
    // same configuration), never the system's /var/lib/twinloom.
    let state = std::env::temp_dir().join(format!("twinloom-operations-{}", std::process::id()));
    format!(
        r#"
[daemon]
state_dir = "{state}"

[admin_http]
listen = "{admin}"

[[sources.modbus]]
id = "a"
tcp = "{a}"
poll = "50ms"
backoff_min = "50ms"
backoff_max = "200ms"

[[sources.modbus]]
id = "b"
tcp = "{b}"
poll = "50ms"
timeout = "{b_timeout}"
backoff_min = "50ms"
backoff_max = "200ms"

[[types]]
name = "Counter"
properties = [{{ name = "count", data_type = "unsigned" }}{extra}]

[[assets]]
path = "site/a"
type = "Counter"
source = "a"
bindings.count = {{ table = "holding", address = 0 }}
{extra_a}
[[assets]]
path = "site/b"
type = "Counter"
source = "b"
bindings.count = {{ table = "holding", address = 0 }}
{extra_b}"#,
        state = state.display(),
        extra = if extra_property {
            r#", { name = "other", data_type = "unsigned" }"#
        } else {
            ""
        },
        extra_a = if extra_property {
            r#"bindings.other = { table = "holding", address = 1 }"#
        } else {
            ""
        },
        extra_b = if extra_property {
            r#"bindings.other = { table = "holding", address = 1 }"#
        } else {
            ""
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_report_health_readiness_and_parseable_metrics() {
    let (_a, server_a) = device_server(1).await;
    let (_b, server_b) = device_server(2).await;
    let config = common::config(&config_text(
        server_a.addr(),
        server_b.addr(),
        "500ms",
        "127.0.0.1:0",
        false,
    ));
    let handles = common::start(&config).await;
    let admin = handles.admin_http.expect("admin HTTP started");
    assert_eq!(http(admin, "/healthz").await, (200, "ok\n".to_owned()));
    let deadline = tokio::time::Instant::now() + WAIT;
    while http(admin, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, metrics) = http(admin, "/metrics").await;
    assert_eq!(status, 200);
    let mut parser = std::process::Command::new(common::python())
        .arg(common::repo().join("tests/peers/parse_metrics.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let parsed = parser.wait_with_output().unwrap();
    assert!(
        parsed.status.success(),
        "prometheus_client rejected the metrics:\n{metrics}"
    );
    let families: Vec<String> = serde_json::from_slice(&parsed.stdout).unwrap();
    for family in [
        "twinloom_modbus_requests",
        "twinloom_modbus_request_duration_seconds",
        "twinloom_modbus_reconnects",
        "twinloom_twin_updates",
        "twinloom_twin_coalesced",
        "twinloom_twin_properties_good",
        "twinloom_opcua_failed_logins",
    ] {
        assert!(
            families.iter().any(|f| f == family),
            "{family} missing from {families:?}"
        );
    }

    // A source goes down: not ready, with the reason.
    server_b.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = http(admin, "/readyz").await;
        if status == 503 {
            assert_eq!(body, "source b is not connected\n");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "still ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(http(admin, "/healthz").await.0, 200);
    // Error series appear with the first error, labelled by kind.
    let (_, metrics) = http(admin, "/metrics").await;
    assert!(
        metrics
            .contains(r#"twinloom_modbus_errors_total{source="b",device="b",kind="connection"}"#),
        "{metrics}"
    );
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_broken_config_and_restarts_only_what_changed() {
    let (a, server_a) = device_server(1).await;
    let (b, server_b) = device_server(2).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twinloom.toml");
    let write = |text: &str| std::fs::write(&file, text).unwrap();
    write(&config_text(
        server_a.addr(),
        server_b.addr(),
        "500ms",
        "127.0.0.1:0",
        false,
    ));
    let mut daemon = Daemon::start(twinloom::config::load(&file).unwrap())
        .await
        .unwrap();
    let count_a = property(&daemon.handles, "site/a/count");
    let count_b = property(&daemon.handles, "site/b/count");
    wait_for(&daemon.handles, count_a, WAIT, |s| {
        s.value == Some(Value::UInt(1))
    })
    .await;
    wait_for(&daemon.handles, count_b, WAIT, |s| {
        s.value == Some(Value::UInt(2))
    })
    .await;
    let (connections_a, connections_b) = (server_a.connections(), server_b.connections());

    // Broken: refused, nothing restarted, values keep flowing.
    write("[[sources.modbus]]\nid = \"a\"\ntcp = \"nowhere\"\n");
    let error = daemon.reload().await.unwrap_err();
    assert!(
        error
            .downcast_ref::<twinloom::config::ConfigError>()
            .is_some(),
        "{error:#}"
    );
    a.set_holding(0, &[10]);
    wait_for(&daemon.handles, count_a, WAIT, |s| {
        s.value == Some(Value::UInt(10))
    })
    .await;

    // Only source b changed: b reconnects, a keeps its connection.
    write(&config_text(
        server_a.addr(),
        server_b.addr(),
        "700ms",
        "127.0.0.1:0",
        false,
    ));
    assert_eq!(
        daemon.reload().await.unwrap(),
        Reloaded::SourcesRestarted(vec!["b".to_owned()])
    );
    b.set_holding(0, &[20]);
    wait_for(&daemon.handles, count_b, WAIT, |s| {
        s.value == Some(Value::UInt(20))
    })
    .await;
    a.set_holding(0, &[11]);
    wait_for(&daemon.handles, count_a, WAIT, |s| {
        s.value == Some(Value::UInt(11))
    })
    .await;
    assert_eq!(
        server_a.connections(),
        connections_a,
        "source a kept its connection"
    );
    assert_eq!(
        server_b.connections(),
        connections_b + 1,
        "source b reconnected once"
    );
    // Writes reach the restarted source: the shared writer table points at it.
    daemon
        .handles
        .writers
        .write(twinloom::sources::DeviceWrite::unguarded(
            count_b,
            Value::UInt(5),
            WAIT,
        ))
        .await
        .unwrap();
    assert_eq!(b.holding(0, 1), vec![5]);

    // Same file again: nothing to do.
    assert_eq!(daemon.reload().await.unwrap(), Reloaded::Unchanged);

    // The type changed: everything restarts with the new model.
    write(&config_text(
        server_a.addr(),
        server_b.addr(),
        "700ms",
        "127.0.0.1:0",
        true,
    ));
    assert_eq!(daemon.reload().await.unwrap(), Reloaded::Restarted);
    let other = property(&daemon.handles, "site/a/other");
    wait_for(&daemon.handles, other, WAIT, |s| s.quality.is_good()).await;
    daemon
        .handles
        .supervisor
        .shutdown(Duration::from_secs(2))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_broken_config_keeps_the_process_serving() {
    let (a, server_a) = device_server(1).await;
    let (_b, server_b) = device_server(2).await;
    let admin: SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twinloom.toml");
    std::fs::write(
        &file,
        config_text(
            server_a.addr(),
            server_b.addr(),
            "500ms",
            &admin.to_string(),
            false,
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_twinloom"))
        .args(["run", "--config"])
        .arg(&file)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(admin).is_err() || http(admin, "/readyz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "daemon never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let requests_before = a.requests();
    std::fs::write(&file, "this is = not [valid").unwrap();
    let pid = child.id().to_string();
    let kill = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    // The log, line by line as the daemon writes it, so the test can wait for the reload.
    let (lines, log) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    kill("-HUP");
    let log = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        while let Ok(line) = log.recv_timeout(WAIT) {
            let refused = line.contains("Reload refused");
            seen.push(line);
            if refused {
                return (log, seen);
            }
        }
        panic!(
            "SIGHUP with a broken config was never refused:\n{}",
            seen.join("\n")
        );
    });
    let (log, _) = log.await.unwrap();
    // Still serving: healthy, ready, and still polling the device.
    common::eventually(
        WAIT,
        || a.requests() >= requests_before + 20,
        || "polling stopped after the reload".to_string(),
    )
    .await;
    assert_eq!(http(admin, "/readyz").await.0, 200);
    assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    kill("-TERM");
    let status = child.wait().unwrap();
    drop(log);
    assert_eq!(status.code(), Some(0));
}
