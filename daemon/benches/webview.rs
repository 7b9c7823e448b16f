//! Web view benchmark (issue #31). Run with `cargo bench -p twinloom --bench webview`; a quick
//! run for correctness only (one short round, figures meaningless) with
//! `cargo test -p twinloom --all-features --bench webview -- --test`.
//!
//! A plant of 10 000 float properties (100 assets × 100, read once from a simulated Modbus
//! device, then changed by a feeder inside the daemon's process: 1 000 values every 100 ms spread
//! over the plant, 10 000 changes/s, each property once a second, every client's properties at
//! every feed) run by the daemon without and with 50
//! browser-like clients of the web view: each opens `/api/events` for 100 properties (what the
//! page asks for the rows on screen: 50 clients cover 5 000 properties) and reads every event.
//! [`support::ROUNDS`] alternating rounds; each side is a process of its own (this binary re-run
//! with `TWINLOOM_BENCH_SIDE`), so its CPU (`support::cpu_time`) and peak RSS are the daemon's
//! and the feeder's alone; the clients run in this process. Prints the daemon's CPU % of one core
//! and peak RSS per side, what the page path adds (targets: ≤ 10 % of one core, ≤ 20 MiB), and
//! the events and samples per second the clients received. A client that never reads is
//! dropped after a bounded buffer: `tests/webview.rs`
//! (`a_client_that_stops_reading_its_stream_is_dropped`).

// Benchmarks drive peers and readers from outside the daemon; the rule that every task goes
// through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use twinloom::twin::{PropertyId, Reading, Value};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const ASSETS: usize = 100;
const PER_ASSET: usize = 100;
const CLIENTS: usize = 50;
const SHOWN: usize = 100;
/// Changes the feeder makes every [`FEED_EVERY`].
const PER_FEED: usize = 1000;
const FEED_EVERY: Duration = Duration::from_millis(100);

/// Warm-up and window of a full run, and of the quick (`--test`) one.
fn timing() -> (usize, Duration, Duration) {
    if quick() {
        (1, Duration::from_millis(500), Duration::from_secs(1))
    } else {
        (
            support::ROUNDS,
            Duration::from_secs(3),
            Duration::from_secs(4),
        )
    }
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--test") || std::env::var_os("TWINLOOM_BENCH_QUICK").is_some()
}

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SIDE").is_some() {
        return run_side();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    support::heading("Web view benchmark");
    let (rounds, warm_up, window) = timing();
    let exe = std::env::current_exe().unwrap();
    // (cpu %, peak RSS MiB, events/s, samples/s) per side and round.
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (clients, out) in [(false, &mut without), (true, &mut with)] {
            let mut child = Command::new(&exe)
                .env(
                    "TWINLOOM_BENCH_SIDE",
                    if clients { "with" } else { "without" },
                )
                .env("TWINLOOM_BENCH_QUICK", if quick() { "1" } else { "" })
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("side process");
            let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
            let admin: std::net::SocketAddr = lines
                .next()
                .expect("the side's address")
                .unwrap()
                .parse()
                .unwrap();
            let counts = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
            let readers = runtime.block_on(async {
                let mut readers = Vec::new();
                if clients {
                    for c in 0..CLIENTS {
                        readers.push(tokio::spawn(client(admin, c, Arc::clone(&counts))));
                    }
                }
                tokio::time::sleep(warm_up).await;
                readers
            });
            let before = (
                counts.0.load(Ordering::Relaxed),
                counts.1.load(Ordering::Relaxed),
            );
            let started = std::time::Instant::now();
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{}", window.as_millis()).unwrap();
            let figures = lines.next().expect("the side's figures").unwrap();
            let wall = started.elapsed().as_secs_f64();
            let events = (counts.0.load(Ordering::Relaxed) - before.0) as f64 / wall;
            let samples = (counts.1.load(Ordering::Relaxed) - before.1) as f64 / wall;
            for reader in readers {
                reader.abort();
            }
            drop(stdin);
            let _ = child.wait();
            let mut figures: Vec<f64> = figures
                .split_whitespace()
                .map(|f| f.parse().expect("a figure"))
                .collect();
            figures.extend([events, samples]);
            out.push(figures);
        }
    }
    let column = support::column;
    let added = |i: usize| support::added(&with, &without, i);
    println!(
        "{} properties, {} changes/s; {CLIENTS} SSE clients × {SHOWN} properties; {rounds} alternating rounds, each side a process of its own, {warm_up:?} warm-up then {window:?}; median (lowest–highest):",
        ASSETS * PER_ASSET,
        PER_FEED as u128 * 1000 / FEED_EVERY.as_millis(),
    );
    println!(
        "    daemon CPU       without {} %   with {} % of one core",
        support::figure_text(&column(&without, 0), 2),
        support::figure_text(&column(&with, 0), 2)
    );
    println!(
        "    the page adds    {} % of one core (target <= 10)",
        support::figure_text(&added(0), 2)
    );
    println!(
        "    peak RSS         without {} MiB   with {} MiB",
        support::figure_text(&column(&without, 1), 1),
        support::figure_text(&column(&with, 1), 1)
    );
    println!(
        "    the page adds    {} MiB (target <= 20)",
        support::figure_text(&added(1), 1)
    );
    println!(
        "    clients received {} events/s, {} samples/s in all",
        support::figure_text(&column(&with, 2), 0),
        support::figure_text(&column(&with, 3), 0)
    );
    let received = column(&with, 3);
    assert!(
        received.iter().all(|&s| s > 0.0),
        "the clients received nothing: {received:?}"
    );
}

/// One browser-like client: streams properties `c × SHOWN ..` and reads every event, counting
/// events and samples in `counts`.
async fn client(admin: std::net::SocketAddr, c: usize, counts: Arc<(AtomicU64, AtomicU64)>) {
    let ids: Vec<String> = (c * SHOWN..(c + 1) * SHOWN)
        .map(|i| i.to_string())
        .collect();
    let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let request = format!(
        "GET /api/events?ids={} HTTP/1.1\r\nHost: {admin}\r\nAccept: text/event-stream\r\n\r\n",
        ids.join(",")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            let event: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
            counts.0.fetch_add(1, Ordering::Relaxed);
            let samples = event["samples"].as_array().map_or(0, Vec::len);
            counts.1.fetch_add(samples as u64, Ordering::Relaxed);
        }
    }
}

/// The daemon's configuration: admin HTTP on a free loopback port, the plant read from the
/// device at `plc` once an hour.
fn config_text(plc: std::net::SocketAddr, state: &std::path::Path) -> String {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[admin_http]\nlisten = \"127.0.0.1:0\"\nlimits = {{ max_connections = {} }}\n\n\
         [[sources.modbus]]\nid = \"plc\"\ntcp = \"{plc}\"\npoll = \"1h\"\n\n[[types]]\nname = \"Cell\"\nproperties = [",
        state.display(),
        CLIENTS + 14
    );
    for p in 0..PER_ASSET {
        text.push_str(&format!("{{ name = \"p{p}\", data_type = \"float\" }},"));
    }
    text.push_str("]\n");
    for a in 0..ASSETS {
        text.push_str(&format!(
            "\n[[assets]]\npath = \"big/a{a}\"\ntype = \"Cell\"\nsource = \"plc\"\n"
        ));
        for p in 0..PER_ASSET {
            text.push_str(&format!(
                "bindings.p{p} = {{ table = \"holding\", address = {p} }}\n"
            ));
        }
    }
    text
}

/// Child process: the daemon and its feeder; prints the admin address, then, once the parent
/// writes a window (ms) on stdin, measures its own CPU over it and prints `cpu% peak_rss_mib`.
fn run_side() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let device = SimDevice::new();
        let plc = ModbusServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            Framing::Tcp,
            HashMap::from([(1, device)]),
        )
        .await
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let config = twinloom::config::parse(
            std::path::Path::new("bench.toml"),
            &config_text(plc.addr(), state.path()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let handles = twinloom::app::start(&config)
            .await
            .expect("the daemon starts");
        let twin = Arc::clone(&handles.twin);
        let count = twin.model().properties().len();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(FEED_EVERY);
            let mut step = 0usize;
            loop {
                tick.tick().await;
                let readings: Vec<Reading> = (0..PER_FEED)
                    .map(|i| {
                        // Spread over the plant: every client's properties change at
                        // every feed (a tenth of them), each property once a second.
                        let id = (i * (count / PER_FEED) + step % (count / PER_FEED)) % count;
                        Reading::value(
                            PropertyId(id as u32),
                            Value::Float(step as f64 + i as f64 * 1e-3),
                            None,
                        )
                    })
                    .collect();
                twin.apply(&readings);
                step += 1;
            }
        });
        println!("{}", handles.admin_http.expect("admin HTTP"));
        std::io::stdout().flush().unwrap();
        let window = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            line.trim().parse::<u64>().expect("a window in ms")
        })
        .await
        .unwrap();
        let pid = std::process::id();
        let (cpu, _) =
            support::cpu_percent_over(pid, || tokio::time::sleep(Duration::from_millis(window)))
                .await;
        println!("{cpu:.3} {:.2}", support::peak_rss_mib(pid));
        std::io::stdout().flush().unwrap();
        handles.supervisor.shutdown(Duration::from_secs(3)).await;
        plc.stop().await;
    });
}
