//! OPC UA server benchmark (issue: OPC UA server). Run with `cargo bench -p twinloom --bench opcua`.
//!
//! 100 000 monitored items on one session (security None, anonymous, publishing interval 100 ms),
//! every value changing every 100 ms, against (1) Twinloom's server in a child process fed by its
//! twin and (2) an asyncua server (Python, `tests/peers/opcua_server.py`) as the reference, with the
//! same client (async-opcua) in this process. Prints, for each: monitored-item creation time,
//! notifications/s received, server CPU % of one core and peak RSS; then the ratio of
//! notification rates (target ≥ 1) and whether creation took < 2 s.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indexmap::IndexMap;
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken};
use opcua::types::{
    MessageSecurityMode, MonitoredItemCreateRequest, NodeId, TimestampsToReturn, UserTokenPolicy,
};
use twinloom::config::Config;
use twinloom::config::model::{AssetConfig, DataType, PropertyConfig, TypeConfig};
use twinloom::twin::{PropertyId, Reading, Twin, TwinModel, Value};

const ASSETS: usize = 1000;
const PROPERTIES: usize = 100;
const ITEMS: usize = ASSETS * PROPERTIES;
const BATCH: usize = 5000;
const WINDOW: Duration = Duration::from_secs(10);

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SERVER").is_some() {
        return serve_twinloom();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let twinloom = spawn_server(Command::new(exe).env("TWINLOOM_BENCH_SERVER", "1"));
    let ours = runtime.block_on(measure("Twinloom", &twinloom, |ns, i| {
        NodeId::new(ns, format!("bench/a{}/p{}", i / PROPERTIES, i % PROPERTIES))
    }));
    drop(twinloom);
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/opcua_server.py");
    let theirs = if std::env::var_os("TWINLOOM_BENCH_SKIP_REFERENCE").is_some() {
        println!("asyncua (reference): skipped (TWINLOOM_BENCH_SKIP_REFERENCE)");
        0.0
    } else {
        let reference = spawn_server(Command::new(python).arg(script).arg(ITEMS.to_string()));
        runtime.block_on(measure("asyncua (reference)", &reference, |ns, i| {
            NodeId::new(ns, format!("v{i}"))
        }))
    };
    if theirs > 0.0 {
        println!(
            "ratio of notifications/s, Twinloom / asyncua: {:.2}   (target >= 1)",
            ours / theirs
        );
    } else {
        println!(
            "ratio of notifications/s, Twinloom / asyncua: unbounded (asyncua delivered none)   (target >= 1)"
        );
    }
}

struct ServerProcess {
    child: Child,
    url: String,
    ns: u16,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(command: &mut Command) -> ServerProcess {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1);
    let url = parts.next().expect("url").to_owned();
    let ns = parts.next().expect("namespace").parse().unwrap();
    ServerProcess { child, url, ns }
}

/// CPU seconds (user + system) of a process, from /proc/PID/stat (1/100 s ticks).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    (fields[11].parse::<f64>().unwrap_or(0.0) + fields[12].parse::<f64>().unwrap_or(0.0)) / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn measure(name: &str, server: &ServerProcess, node: impl Fn(u16, usize) -> NodeId) -> f64 {
    let client_pki = tempfile::tempdir().unwrap();
    let mut client = ClientBuilder::new()
        .application_name("twinloom-bench")
        .application_uri("urn:twinloom:bench")
        .pki_dir(client_pki.path())
        .session_retry_limit(0)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(8192)
        .max_array_length(1_000_000)
        .client()
        .unwrap();
    let endpoint = (
        server.url.as_str(),
        "http://opcfoundation.org/UA/SecurityPolicy#None",
        MessageSecurityMode::None,
        UserTokenPolicy::anonymous(),
    );
    let (session, event_loop) = client
        .connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous)
        .await
        .unwrap();
    let _events = event_loop.spawn();
    assert!(session.wait_for_connection().await);
    let received = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&received);
    let subscription = session
        .create_subscription(
            Duration::from_millis(100),
            600,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |_, _| {
                counter.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut created = 0;
    for chunk in (0..ITEMS).collect::<Vec<_>>().chunks(BATCH) {
        let items: Vec<MonitoredItemCreateRequest> =
            chunk.iter().map(|i| node(server.ns, *i).into()).collect();
        let results = session
            .create_monitored_items(subscription, TimestampsToReturn::Both, items)
            .await
            .unwrap();
        created += results
            .iter()
            .filter(|r| r.result.status_code.is_good())
            .count();
    }
    let creation = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pid = server.child.id();
    let (cpu0, count0, t0) = (
        cpu_seconds(pid),
        received.load(Ordering::Relaxed),
        Instant::now(),
    );
    tokio::time::sleep(WINDOW).await;
    let wall = t0.elapsed().as_secs_f64();
    let rate = (received.load(Ordering::Relaxed) - count0) as f64 / wall;
    let cpu = (cpu_seconds(pid) - cpu0) / wall * 100.0;
    let _ = session.disconnect().await;
    println!("{name}:");
    println!(
        "    monitored items created  {created} of {ITEMS} in {:.2} s   (target < 2 s)",
        creation.as_secs_f64()
    );
    println!(
        "    notifications received   {rate:>10.0} /s   (all values change every 100 ms: at most {} /s)",
        ITEMS * 10
    );
    println!("    server CPU               {cpu:>10.1} % of one core");
    println!(
        "    server peak RSS          {:>10.1} MiB",
        peak_rss_mib(pid)
    );
    rate
}

/// Child process: a twin of 100 000 float properties served over OPC UA, all changing every 100 ms.
fn serve_twinloom() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = Config {
            file: "bench.toml".into(),
            daemon: Default::default(),
            twin: Default::default(),
            opcua_server: None,
            admin_http: None,
            sources: Vec::new(),
            types: vec![TypeConfig {
                name: "Probe".into(),
                description: None,
                properties: (0..PROPERTIES)
                    .map(|p| PropertyConfig {
                        name: format!("p{p}"),
                        data_type: DataType::Float,
                        unit: Some("CEL".into()),
                        description: None,
                        range: None,
                        deadband: None,
                        access: Default::default(),
                        limits: None,
                    })
                    .collect(),
            }],
            assets: (0..ASSETS)
                .map(|a| AssetConfig {
                    path: format!("bench/a{a}"),
                    type_name: "Probe".into(),
                    source: None,
                    device: None,
                    description: None,
                    bindings: IndexMap::new(),
                })
                .collect(),
            plugins: Vec::new(),
        };
        let twin = Arc::new(Twin::new(Arc::new(TwinModel::build(&config)), &config.twin));
        let supervisor = twinloom::runtime::Supervisor::new();
        let metrics = twinloom::telemetry::Metrics::new();
        let control = twinloom::control::spawn(Arc::clone(&twin), Default::default(), &supervisor);
        let server_config: twinloom::config::model::OpcUaServerConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\nallow_security_none = true\nanonymous = true",
        )
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let server = twinloom::northbound::opcua_server::start(
            &server_config,
            state.path(),
            &twin,
            control,
            &metrics,
            &supervisor,
        )
        .await
        .unwrap();
        println!(
            "LISTENING {} {}",
            server.endpoint_url, server.namespace_index
        );
        std::io::stdout().flush().unwrap();
        let updater = Arc::clone(&twin);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut step = 0u64;
            loop {
                tick.tick().await;
                step += 1;
                let readings: Vec<Reading> = (0..ITEMS)
                    .map(|i| {
                        Reading::value(
                            PropertyId(i as u32),
                            Value::Float((step * 1000 + i as u64) as f64),
                            None,
                        )
                    })
                    .collect();
                updater.apply(&readings);
            }
        });
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        supervisor.shutdown(Duration::from_secs(2)).await;
    });
}
