//! OPC UA server benchmark (issue: OPC UA server). Run with `cargo bench -p twinloom --bench opcua`.
//!
//! 100 000 monitored items on one session (security None, anonymous, publishing interval 100 ms),
//! every value changing every 100 ms, against (1) Twinloom's server in a child process fed by its
//! twin and (2) an asyncua server (Python, `tests/peers/opcua_server.py`) as the reference, with the
//! same client (async-opcua) in this process. The two servers alternate over [`ROUNDS`] rounds
//! (a new server process per round). Prints, for each, the median (lowest–highest) of:
//! monitored-item creation time, notifications/s received, server CPU % of one core over a fixed
//! window after warm-up (the server process's own accounting) and peak RSS; then the median of the
//! per-round ratios of notification rates (target ≥ 1) and whether creation took < 2 s.

// Tests and benchmarks drive peers and readers from outside the daemon; the rule that every
// task goes through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use opcua::types::{MonitoredItemCreateRequest, NodeId, TimestampsToReturn};

const ASSETS: usize = 1000;
const PROPERTIES: usize = 100;
const ITEMS: usize = ASSETS * PROPERTIES;
const BATCH: usize = 5000;
const WINDOW: Duration = Duration::from_secs(10);

/// Rounds of Twinloom then asyncua (each a new server process and a new session).
const ROUNDS: usize = 3;

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SERVER").is_some() {
        return support::upstream::serve(ITEMS);
    }
    support::heading(&format!(
        "OPC UA server: {ITEMS} monitored items, publishing interval 100 ms, every value changing every 100 ms; {ROUNDS} alternating rounds, median (lowest–highest)"
    ));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/opcua_server.py");
    let skip_reference = std::env::var_os("TWINLOOM_BENCH_SKIP_REFERENCE").is_some();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let twinloom = spawn_server(Command::new(&exe).env("TWINLOOM_BENCH_SERVER", "1"));
        ours.push(runtime.block_on(measure(&twinloom, |ns, i| {
            NodeId::new(ns, format!("bench/a{}/p{}", i / PROPERTIES, i % PROPERTIES))
        })));
        drop(twinloom);
        if !skip_reference {
            let reference = spawn_server(Command::new(&python).arg(&script).arg(ITEMS.to_string()));
            theirs.push(runtime.block_on(measure(&reference, |ns, i| {
                NodeId::new(ns, format!("v{i}"))
            })));
        }
    }
    report("Twinloom", &ours);
    if skip_reference {
        println!("asyncua (reference): skipped (TWINLOOM_BENCH_SKIP_REFERENCE)");
        return;
    }
    report("asyncua (reference)", &theirs);
    let rates = support::Alternated {
        a: theirs.iter().map(|m| m.rate).collect(),
        b: ours.iter().map(|m| m.rate).collect(),
    };
    if rates.a.iter().all(|r| *r > 0.0) {
        println!(
            "ratio of notifications/s, Twinloom / asyncua: {}   (target >= 1)",
            rates.ratio_text(2)
        );
    } else {
        println!(
            "ratio of notifications/s, Twinloom / asyncua: unbounded (asyncua delivered none in a round)   (target >= 1)"
        );
    }
}

/// One server's figures in one round.
struct Measured {
    created: usize,
    creation: Duration,
    rate: f64,
    cpu: f64,
    rss: f64,
}

fn report(name: &str, rounds: &[Measured]) {
    let column = |f: fn(&Measured) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    println!("{name}:");
    println!(
        "    monitored items created  {} of {ITEMS} in {} s   (target < 2 s)",
        rounds.iter().map(|m| m.created).min().unwrap_or(0),
        support::figure_text(&column(|m| m.creation.as_secs_f64()), 2)
    );
    println!(
        "    notifications received   {} /s   (all values change every 100 ms: at most {} /s)",
        support::figure_text(&column(|m| m.rate), 0),
        ITEMS * 10
    );
    println!(
        "    server CPU               {} % of one core",
        support::figure_text(&column(|m| m.cpu), 1)
    );
    println!(
        "    server peak RSS          {} MiB",
        support::figure_text(&column(|m| m.rss), 1)
    );
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

async fn measure(server: &ServerProcess, node: impl Fn(u16, usize) -> NodeId) -> Measured {
    let received = Arc::new(AtomicU64::new(0));
    let (_client, session, subscription) =
        support::upstream::counting_session(&server.url, Arc::clone(&received)).await;
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
    let count0 = received.load(Ordering::Relaxed);
    let (cpu, wall) = support::cpu_percent_over(pid, || tokio::time::sleep(WINDOW)).await;
    let rate = (received.load(Ordering::Relaxed) - count0) as f64 / wall.as_secs_f64();
    let _ = session.disconnect().await;
    Measured {
        created,
        creation,
        rate,
        cpu,
        rss: support::peak_rss_mib(pid),
    }
}
