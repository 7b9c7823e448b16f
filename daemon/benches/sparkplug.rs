//! Sparkplug B edge node benchmark (issue #29). Run with `cargo bench -p twinloom --bench sparkplug`;
//! `cargo test -p twinloom --bench sparkplug -- --test` (or `TWINLOOM_BENCH_QUICK=1`) runs it at a
//! hundredth of the size, for correctness only.
//!
//! (a) **Throughput and CPU.** 100 000 metric changes/s — 100 assets × 100 float properties, each
//!     changing 10 times a second, applied to the twin in blocks of 1 000 every 10 ms — published
//!     to Debian's mosquitto on loopback. Three sides alternate over [`support::ROUNDS`] rounds,
//!     each a child process of its own (this binary re-run with `TWINLOOM_BENCH_SIDE`), so its CPU
//!     (`support::cpu_time`, the scheduler's accounting of its threads) is its alone:
//!     - `reference`: a bare rumqttc loop publishing the same DDATA payloads, encoded once
//!       beforehand (100 payloads of 100 metrics every 100 ms, QoS 0);
//!     - `log`: the daemon with the change log and the same load, no Sparkplug;
//!     - `twinloom`: the daemon with the change log and `[northbound.sparkplug]` (report window
//!       100 ms, so 100 DDATA of 100 metrics every window).
//!     A subscriber in this process counts the metric values mosquitto delivers during each side's
//!     window. Printed, median (lowest–highest): delivered changes/s per side and the per-round
//!     ratio Twinloom / reference (target ≥ 0.8); CPU % of one core per side, and Sparkplug's
//!     share, Twinloom − log (encoding, cursor, MQTT client; target ≤ 20 % of one core).
//! (b) **Drain.** 1 000 000 changes stored in the change log while the primary host is offline
//!     (nothing is published), then the host's `STATE` online: the time until the subscriber has
//!     every stored change (historical, `backlog_max_rate = 0`: no cap), and, meanwhile, the
//!     latency of a live stream of 10 000 changes/s (source timestamp to the subscriber, ms) against
//!     the same stream's after the drain.

// Benchmarks drive peers and readers from outside the daemon; the rule that every task goes
// through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use twinloom::northbound::sparkplug::payload::{self, Metric, MetricValue, Payload};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const ASSETS: usize = 100;
const PROPERTIES: usize = 100;
const GROUP: &str = "bench";

/// Sizes: the full benchmark or the quick correctness run.
#[derive(Debug, Clone, Copy)]
struct Size {
    /// Assets changing (of [`ASSETS`]); the load is `assets × PROPERTIES × 10` changes/s.
    assets: usize,
    rounds: usize,
    warm_up: Duration,
    window: Duration,
    /// Changes stored before the drain.
    stored: usize,
    /// How long the live stream's latency is measured after the drain.
    after: Duration,
}

impl Size {
    fn get() -> Self {
        let quick = std::env::args().any(|a| a == "--test")
            || std::env::var_os("TWINLOOM_BENCH_QUICK").is_some();
        if quick {
            Self {
                assets: 10,
                rounds: 1,
                warm_up: Duration::from_millis(500),
                window: Duration::from_secs(1),
                stored: 10_000,
                after: Duration::from_millis(500),
            }
        } else {
            Self {
                assets: ASSETS,
                rounds: support::ROUNDS,
                warm_up: Duration::from_secs(3),
                window: Duration::from_secs(5),
                stored: 1_000_000,
                after: Duration::from_secs(3),
            }
        }
    }

    fn encode(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.assets,
            self.rounds,
            self.warm_up.as_millis(),
            self.window.as_millis(),
            self.stored,
            self.after.as_millis()
        )
    }

    fn decode(text: &str) -> Self {
        let v: Vec<u64> = text.split(' ').map(|f| f.parse().unwrap()).collect();
        Self {
            assets: v[0] as usize,
            rounds: v[1] as usize,
            warm_up: Duration::from_millis(v[2]),
            window: Duration::from_millis(v[3]),
            stored: v[4] as usize,
            after: Duration::from_millis(v[5]),
        }
    }
}

fn main() {
    if let Ok(side) = std::env::var("TWINLOOM_BENCH_SIDE") {
        let port = std::env::var("TWINLOOM_BENCH_BROKER")
            .unwrap()
            .parse()
            .unwrap();
        let size = Size::decode(&std::env::var("TWINLOOM_BENCH_SIZE").unwrap());
        return run_side(&side, port, size);
    }
    let size = Size::get();
    support::heading("Sparkplug B edge node benchmark");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        throughput(size).await;
        drain(size).await;
    });
}

/// A mosquitto of its own on a free loopback port, killed when dropped.
struct Broker {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(port: u16) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 0\n"),
        )
        .unwrap();
        let mut mosquitto = Command::new("mosquitto");
        mosquitto.arg("-c").arg(&conf).stderr(Stdio::piped());
        let mut child = mosquitto
            .stdout(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (Debian's mosquitto)");
        // Its log (stderr) says when it listens; then a thread keeps reading it so it never
        // blocks on a full pipe.
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = log
                .next()
                .expect("mosquitto exited before it listened")
                .unwrap();
            if line.contains("listen socket on port") {
                break;
            }
        }
        std::thread::spawn(move || log.for_each(drop));
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port, asked of the kernel (mosquitto cannot listen on port 0 and say which).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    listener.local_addr().map(|a| a.port()).unwrap()
}

/// What the subscriber counted: metric values live and historical, and live latencies (ms)
/// while `record` is set.
#[derive(Debug, Default)]
struct Counts {
    live: AtomicU64,
    historical: AtomicU64,
    births: AtomicU64,
    record: AtomicBool,
    latencies: Mutex<Vec<u64>>,
}

/// Subscribes `spBv1.0/#` on `port` and counts what arrives into `counts` until the runtime
/// ends; returns once subscribed. Every DDATA is decoded (the same work for every side).
async fn subscriber(port: u16, counts: Arc<Counts>) -> AsyncClient {
    let mut options = MqttOptions::new(format!("bench-sub-{port}"), "127.0.0.1", port);
    options.set_max_packet_size(64 << 20, 64 << 20);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    client
        .subscribe("spBv1.0/#", QoS::AtMostOnce)
        .await
        .unwrap();
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subscribed_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if publish.topic.contains("/NBIRTH/") {
                        counts.births.fetch_add(1, Ordering::SeqCst);
                    }
                    if !publish.topic.contains("/DDATA/") {
                        continue;
                    }
                    let Ok(decoded) = Payload::decode(publish.payload.as_ref()) else {
                        continue;
                    };
                    let now = payload::millis(SystemTime::now());
                    let (mut live, mut historical) = (0, 0);
                    let record = counts.record.load(Ordering::Relaxed);
                    let mut latencies = Vec::new();
                    for metric in &decoded.metrics {
                        if metric.is_historical == Some(true) {
                            historical += 1;
                        } else {
                            live += 1;
                            if record {
                                latencies.push(now.saturating_sub(metric.timestamp.unwrap_or(now)));
                            }
                        }
                    }
                    counts.live.fetch_add(live, Ordering::SeqCst);
                    counts.historical.fetch_add(historical, Ordering::SeqCst);
                    if !latencies.is_empty() {
                        counts.latencies.lock().unwrap().extend(latencies);
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    subscribed.await.unwrap();
    client
}

/// Part (a): the three sides in alternating rounds.
async fn throughput(size: Size) {
    let broker = Broker::start(free_port());
    let counts = Arc::new(Counts::default());
    let _subscriber = subscriber(broker.port, Arc::clone(&counts)).await;
    let sides = ["reference", "log", "twinloom"];
    // Per side: delivered changes/s and CPU % per round.
    let mut rate = vec![Vec::new(); sides.len()];
    let mut cpu = vec![Vec::new(); sides.len()];
    let exe = std::env::current_exe().unwrap();
    for _ in 0..size.rounds {
        for (i, side) in sides.iter().enumerate() {
            let mut child = Command::new(&exe)
                .env("TWINLOOM_BENCH_SIDE", side)
                .env("TWINLOOM_BENCH_BROKER", broker.port.to_string())
                .env("TWINLOOM_BENCH_SIZE", size.encode())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("side process");
            let stdout = child.stdout.take().unwrap();
            let counts = Arc::clone(&counts);
            let (delivered, percent) = tokio::task::spawn_blocking(move || {
                let mut lines = BufReader::new(stdout).lines();
                let mut start = None;
                loop {
                    let line = lines.next().expect("the side reports").unwrap();
                    if line == "window" {
                        start = Some((counts.live.load(Ordering::SeqCst), Instant::now()));
                    } else if let Some(cpu) = line.strip_prefix("done ") {
                        let (n0, t0) = start.expect("a window before done");
                        let n = counts.live.load(Ordering::SeqCst) - n0;
                        return (
                            n as f64 / t0.elapsed().as_secs_f64(),
                            cpu.parse::<f64>().unwrap(),
                        );
                    }
                }
            })
            .await
            .unwrap();
            let _ = child.wait();
            rate[i].push(delivered);
            cpu[i].push(percent);
        }
    }
    let offered = size.assets * PROPERTIES * 10;
    println!(
        "(a) {offered} metric changes/s ({} assets × {PROPERTIES} float properties, 10 changes/s each), mosquitto on loopback; {} alternating rounds, each side a process of its own, {:?} warm-up then {:?}; median (lowest–highest):",
        size.assets, size.rounds, size.warm_up, size.window
    );
    for (i, side) in sides.iter().enumerate() {
        println!(
            "    {side:<10} delivered {} changes/s   CPU {} % of one core",
            support::figure_text(&rate[i], 0),
            support::figure_text(&cpu[i], 1)
        );
    }
    let ratio = support::Alternated {
        a: rate[0].clone(),
        b: rate[2].clone(),
    };
    println!(
        "    Twinloom / reference throughput {} (target >= 0.8)",
        ratio.ratio_text(3)
    );
    let share: Vec<f64> = cpu[2].iter().zip(&cpu[1]).map(|(t, l)| t - l).collect();
    println!(
        "    Sparkplug (encoding, cursor, MQTT client) = Twinloom − log: {} % of one core (target <= 20)",
        support::figure_text(&share, 1)
    );
}

/// The daemon's configuration: `ASSETS` assets of `PROPERTIES` float properties, each bound to
/// a holding register of the simulated PLC at `plc` (polled every 100 ms), the change log, and
/// with `sparkplug` the edge node on that port (`extra` lines in its section).
fn config_text(state: &Path, plc: std::net::SocketAddr, sparkplug: Option<(u16, &str)>) -> String {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n[change_log]\nmax_disk = \"2GiB\"\n",
        state.display()
    );
    if let Some((port, extra)) = sparkplug {
        text.push_str(&format!(
            "[northbound.sparkplug]\nservers = [\"tcp://127.0.0.1:{port}\"]\ngroup_id = \"{GROUP}\"\nedge_node_id = \"twinloom\"\n{extra}\n"
        ));
    }
    text.push_str(&format!(
        "[[sources.modbus]]\nid = \"plc\"\ntcp = \"{plc}\"\npoll = \"100ms\"\n"
    ));
    text.push_str("[[types]]\nname = \"Probe\"\nproperties = [");
    for p in 0..PROPERTIES {
        text.push_str(&format!("{{ name = \"p{p}\", data_type = \"float\" }},"));
    }
    text.push_str("]\n");
    for a in 0..ASSETS {
        text.push_str(&format!(
            "[[assets]]\npath = \"bench/a{a}\"\ntype = \"Probe\"\nsource = \"plc\"\n[assets.bindings]\n"
        ));
        for p in 0..PROPERTIES {
            let address = a * PROPERTIES + p;
            text.push_str(&format!(
                "p{p} = {{ table = \"holding\", address = {address} }}\n"
            ));
        }
    }
    text
}

/// A simulated Modbus TCP PLC on loopback whose first `active` assets' registers all take a
/// new value every 50 ms (so every 100 ms poll reads a change of each): `active × PROPERTIES ×
/// 10` changes/s. Runs until the runtime ends.
async fn plant(active: Arc<AtomicUsize>) -> (ModbusServer, std::net::SocketAddr) {
    let device = SimDevice::new();
    let units = HashMap::from([(1, Arc::clone(&device))]);
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = ModbusServer::bind(loopback, Framing::Tcp, units)
        .await
        .unwrap();
    let addr = server.addr();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let mut step = 0u16;
        loop {
            tick.tick().await;
            step = step.wrapping_add(1);
            let n = active.load(Ordering::Relaxed) * PROPERTIES;
            let words: Vec<u16> = (0..n)
                .map(|i| (i as u16).wrapping_mul(7).wrapping_add(step))
                .collect();
            device.set_holding(0, &words);
        }
    });
    (server, addr)
}

/// Child process, one side of one round: prints `window` when the measured window starts and
/// `done <cpu %>` when it ends.
fn run_side(side: &str, port: u16, size: Size) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    runtime.block_on(async {
        let state = tempfile::tempdir().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        // The simulated PLC lives as long as the side.
        let mut _plc = None;
        let handles = if side == "reference" {
            tokio::spawn(reference(port, size.assets, Arc::clone(&stop)));
            None
        } else {
            let (server, plc) = plant(Arc::new(AtomicUsize::new(size.assets))).await;
            _plc = Some(server);
            let sparkplug = (side == "twinloom").then_some((port, ""));
            let text = config_text(state.path(), plc, sparkplug);
            let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
            Some(twinloom::app::start(&config).await.unwrap())
        };
        tokio::time::sleep(size.warm_up).await;
        println!("window");
        let (percent, _) = support::cpu_percent_over(pid, || tokio::time::sleep(size.window)).await;
        println!("done {percent}");
        stop.store(true, Ordering::Relaxed);
        if let Some(handles) = handles {
            handles.supervisor.shutdown(Duration::from_secs(5)).await;
        }
    });
}

/// The reference: a bare rumqttc loop publishing `assets` DDATA payloads of [`PROPERTIES`]
/// metrics, encoded once, every 100 ms at QoS 0 — what Twinloom publishes for the same load.
async fn reference(port: u16, assets: usize, stop: Arc<AtomicBool>) {
    let mut options = MqttOptions::new("bench-reference", "127.0.0.1", port);
    options.set_max_packet_size(64 << 20, 64 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let now = payload::millis(SystemTime::now());
    let payloads: Vec<(String, Vec<u8>)> = (0..assets)
        .map(|a| {
            let metrics = (0..PROPERTIES)
                .map(|p| Metric {
                    alias: Some(p as u64 + 16),
                    timestamp: Some(now),
                    datatype: Some(payload::datatype::DOUBLE),
                    value: Some(MetricValue::DoubleValue(20.0 + p as f64 * 0.001)),
                    ..Default::default()
                })
                .collect();
            let body = Payload {
                timestamp: Some(now),
                metrics,
                seq: Some(a as u64 % 256),
                ..Default::default()
            };
            (
                format!("spBv1.0/{GROUP}/DDATA/reference/bench:a{a}"),
                body.encode_to_vec(),
            )
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for (topic, body) in &payloads {
            if client
                .publish(topic.clone(), QoS::AtMostOnce, false, body.clone())
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// Part (b): `size.stored` changes stored while the primary host is offline, then the drain
/// with a live stream beside it.
async fn drain(size: Size) {
    let port = free_port();
    let broker = Broker::start(port);
    let state = tempfile::tempdir().unwrap();
    let active = Arc::new(AtomicUsize::new(size.assets));
    let (_server, plc) = plant(Arc::clone(&active)).await;
    let text = config_text(
        state.path(),
        plc,
        Some((
            port,
            "primary_host_id = \"bench-host\"\nbacklog_max_rate = 0",
        )),
    );
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let handles = twinloom::app::start(&config).await.unwrap();
    let log = handles.change_log.clone().expect("the change log runs");
    // Store: the full load until the log holds `size.stored` changes more.
    let mut end = log.subscribe();
    let start_offset = *end.borrow_and_update();
    let stored_at = Instant::now();
    let target = start_offset + size.stored as u64;
    end.wait_for(|e| *e >= target).await.unwrap();
    // The live stream: one asset in ten keeps changing.
    let live_assets = (size.assets / 10).max(1);
    active.store(live_assets, Ordering::Relaxed);
    let store_time = stored_at.elapsed();
    // The changes among the stored records (the subscriber counts metric values).
    let stored_end = *end.borrow();
    let mut reader = twinloom::change_log::Reader::new(
        state.path().join(twinloom::change_log::DIR_NAME),
        start_offset,
    );
    let mut stored = 0usize;
    while let Ok(Some(entry)) = reader.try_next() {
        if entry.offset >= stored_end {
            break;
        }
        if matches!(entry.record, twinloom::change_log::Record::Change { .. }) {
            stored += 1;
        }
    }
    // The host subscribes, the live stream starts, then the host goes online.
    let counts = Arc::new(Counts::default());
    let subscriber = subscriber(port, Arc::clone(&counts)).await;
    counts.record.store(true, Ordering::SeqCst);
    let online = Instant::now();
    let state_json = format!(
        "{{\"online\": true, \"timestamp\": {}}}",
        payload::millis(SystemTime::now())
    );
    subscriber
        .publish(
            "spBv1.0/STATE/bench-host",
            QoS::AtLeastOnce,
            true,
            state_json.into_bytes(),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    while counts.historical.load(Ordering::SeqCst) < stored as u64 {
        assert!(
            Instant::now() < deadline,
            "drain: {} of {stored} historical values after 600 s",
            counts.historical.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = online.elapsed();
    let during = std::mem::take(&mut *counts.latencies.lock().unwrap());
    tokio::time::sleep(size.after).await;
    let after = std::mem::take(&mut *counts.latencies.lock().unwrap());
    let historical = counts.historical.load(Ordering::SeqCst);
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    drop(broker);
    println!(
        "(b) drain: {stored} changes stored in {store_time:.1?} while the primary host was offline; host online → every stored change at the subscriber in {drained:.2?} ({:.0} changes/s, backlog_max_rate = 0; {historical} historical values in all, the live stream's before the births included)",
        stored as f64 / drained.as_secs_f64(),
    );
    println!(
        "    live stream {} changes/s meanwhile: latency (source time → subscriber, ms) during the drain {}   after it {}",
        live_assets * PROPERTIES * 10,
        percentiles(&during),
        percentiles(&after)
    );
}

/// `p50 / p99 / max (n)` of latencies in ms.
fn percentiles(values: &[u64]) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} / p99 {} / max {} (n = {})",
        at(0.5),
        at(0.99),
        sorted[sorted.len() - 1],
        sorted.len()
    )
}
