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

/// A plant of one heater setpoint on `plc`, armed by the configuration, with `[admin_http]`
/// keys `admin` (its `listen` among them) and a state folder in `state`.
fn guarded_config(
    plc: SocketAddr,
    state: &std::path::Path,
    admin: &str,
) -> twinloom::config::Config {
    common::config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[admin_http]
{admin}

[control]
armed = true

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "50ms"

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
"#,
        state = state.display(),
    ))
}

/// `twinloom_admin_http_refusals_total{reason}` of `handles`.
fn refusals(handles: &twinloom::app::Handles, reason: &str) -> f64 {
    common::metric(
        &handles.metrics.encode(),
        &format!(r#"twinloom_admin_http_refusals_total{{reason="{reason}"}}"#),
    )
}

/// A web page in the control room's browser cannot disarm the plant: a cross-site POST is
/// refused (403) whether the browser says so with Fetch Metadata or only with `Origin`, and the
/// plant stays armed; a request naming another host (DNS rebinding) is refused (421) even for
/// the metrics. The same disarm from the endpoint's own origin, or from curl (neither header),
/// goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_refuses_cross_site_state_changes_and_foreign_hosts() {
    let (_device, plc) = device_server(0).await;
    let state = tempfile::tempdir().unwrap();
    let config = guarded_config(plc.addr(), state.path(), "listen = \"127.0.0.1:0\"");
    let handles = common::start(&config).await;
    let admin = handles.admin_http.expect("admin HTTP listens");
    assert!(handles.control.is_armed());
    let post = |headers: &[String]| {
        let headers = headers.to_vec();
        async move { common::http_from(admin, None, "POST", "/control/disarm", &headers).await }
    };

    for cross_site in [
        vec!["Origin: http://evil.example".to_owned()],
        vec![
            "Origin: http://evil.example".to_owned(),
            "Sec-Fetch-Site: cross-site".to_owned(),
        ],
        // A page of the same site on another port is another origin.
        vec![format!("Origin: http://127.0.0.1:{}", admin.port() + 1)],
        vec!["Sec-Fetch-Site: same-site".to_owned()],
    ] {
        let answer = post(&cross_site).await;
        assert_eq!(answer.status, 403, "{cross_site:?}: {answer:?}");
        assert!(
            handles.control.is_armed(),
            "{cross_site:?} disarmed the plant"
        );
    }
    assert_eq!(refusals(&handles, "cross-site"), 4.0);

    // DNS rebinding: the page's own name in Host, for any path.
    let rebound = format!("Host: evil.example:{}", admin.port());
    for (method, path) in [("POST", "/control/disarm"), ("GET", "/metrics")] {
        let answer =
            common::http_from(admin, None, method, path, std::slice::from_ref(&rebound)).await;
        assert_eq!(answer.status, 421, "{method} {path}: {answer:?}");
    }
    assert!(handles.control.is_armed());
    assert_eq!(refusals(&handles, "host"), 2.0);
    let by_name = format!("Host: localhost:{}", admin.port());
    assert_eq!(
        common::http_from(admin, None, "GET", "/healthz", &[by_name])
            .await
            .status,
        200
    );

    // The endpoint's own page, then a script without either header.
    let own = post(&[
        format!("Origin: http://{admin}"),
        "Sec-Fetch-Site: same-origin".to_owned(),
    ])
    .await;
    assert_eq!((own.status, own.body.as_str()), (200, "disarmed\n"));
    assert!(!handles.control.is_armed());
    assert_eq!(post(&[]).await.status, 200);
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

/// Connections are capped (`max_connections`: a further one is closed as accepted) and a
/// connection that sends no request is closed after `header_read_timeout`, which frees its
/// place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_caps_connections_and_closes_idle_ones() {
    use tokio::io::AsyncReadExt as _;
    let (_device, plc) = device_server(0).await;
    let state = tempfile::tempdir().unwrap();
    let config = guarded_config(
        plc.addr(),
        state.path(),
        "listen = \"127.0.0.1:0\"\nlimits = { max_connections = 2, header_read_timeout = \"300ms\" }",
    );
    let handles = common::start(&config).await;
    let admin = handles.admin_http.expect("admin HTTP listens");
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(admin).await.unwrap());
    }
    let third = common::http_from(admin, None, "GET", "/healthz", &[]).await;
    assert_eq!(third.status, 0, "a third connection was served: {third:?}");
    assert_eq!(refusals(&handles, "max-connections"), 1.0);

    // The idle ones are closed by the server, well before the test's own limit.
    let started = std::time::Instant::now();
    for mut stream in idle {
        let mut buffer = Vec::new();
        let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut buffer)).await;
        assert!(read.is_ok(), "an idle connection stayed open");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Counted as the connection task ends, just after the socket closed.
    common::eventually(
        WAIT,
        || refusals(&handles, "header-read-timeout") == 2.0,
        || handles.metrics.encode(),
    )
    .await;
    assert_eq!(
        common::http_from(admin, None, "GET", "/healthz", &[])
            .await
            .status,
        200
    );
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}

/// With `[admin_http.tls]` the endpoint speaks HTTPS with the configured certificate (a client
/// that trusts just that certificate gets its answer), and plain HTTP on the port gets no
/// answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_http_serves_tls_and_refuses_plain_http_on_its_port() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (_device, plc) = device_server(0).await;
    let state = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (certificate, private_key) = (
        state.path().join("admin.crt"),
        state.path().join("admin.key"),
    );
    std::fs::write(&certificate, certified.cert.pem()).unwrap();
    std::fs::write(&private_key, certified.signing_key.serialize_pem()).unwrap();
    let config = guarded_config(
        plc.addr(),
        state.path(),
        &format!(
            "listen = \"127.0.0.1:0\"\ntls = {{ certificate = \"{}\", private_key = \"{}\" }}",
            certificate.display(),
            private_key.display()
        ),
    );
    let handles = common::start(&config).await;
    let admin = handles.admin_http.expect("admin HTTP listens");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(admin).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: localhost:{}\r\nConnection: close\r\n\r\n",
            admin.port()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = Vec::new();
    // rustls reports a peer that closes without close_notify as an error; what was read stays.
    let _ = tls.read_to_end(&mut response).await;
    let answer = common::Answer::parse(&String::from_utf8_lossy(&response));
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "ok\n"),
        "{answer:?}"
    );

    let plain = common::http_from(admin, None, "GET", "/healthz", &[]).await;
    assert_eq!(
        plain.status, 0,
        "plain HTTP answered on the TLS port: {plain:?}"
    );
    // Counted as the connection task ends, just after the socket closed.
    common::eventually(
        WAIT,
        || refusals(&handles, "tls-handshake") == 1.0,
        || handles.metrics.encode(),
    )
    .await;
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
}
