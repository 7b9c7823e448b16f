//! Modbus source benchmarks (issue: Modbus source). Run with `cargo bench -p twinloom --bench modbus`.
//!
//! The simulated devices run in a child process (this binary re-executed with
//! `TWINLOOM_BENCH_SIM=1`), so the CPU and memory figures are the daemon's alone. The method is
//! `support`'s: sides alternate, medians with their spread, CPU from the process's accounting.
//!
//! (a) **Poll loop vs bare request loop**: reads of 125 holding registers on one connection as
//!     fast as the server answers, by a bare tokio-modbus loop (the limit) and by Twinloom's
//!     poller (decode 62 f32 + 1 u16, scale, apply to the twin) with a 1 µs poll interval, in
//!     [`support::ROUNDS`] alternating rounds of [`WINDOW`] each. Prints requests/s of both and
//!     the median ratio (target ≥ 0.9).
//! (b) **100k float32 tags/s across 10 devices**: 10 Modbus TCP devices × 100 assets × 10 f32
//!     properties polled every 100 ms, every value changing every poll. After a warm-up, prints
//!     tags/s, the daemon's CPU % of one core and CPU ns per tag over [`CPU_WINDOWS`] fixed
//!     windows, and its peak RSS (targets ≤ 5 %, ≤ 40 MiB).
//! (c) **Instructions per tag** of the per-tag path (decode a block's reply, then `Twin::apply`
//!     with one subscriber draining its changes), counted by callgrind in this binary re-run with
//!     `TWINLOOM_BENCH_PER_TAG=N` for two values of N; the difference over the extra tags does not
//!     move from run to run.

// Tests and benchmarks drive peers and readers from outside the daemon; the rule that every
// task goes through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_modbus::client::Reader;
use twinloom::config::sources::modbus::RegisterTable;
use twinloom::sources::modbus::codec::{Encoding, Layout};
use twinloom::sources::modbus::plan::{self, Limits, Point};
use twinloom::sources::modbus::poller::{Data, decode_block};
use twinloom::twin::{Filter, Twin};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const DEVICES: usize = 10;
const ASSETS_PER_DEVICE: usize = 100;
const TAGS_PER_ASSET: usize = 10;
/// Measurement window of one side of one round in (a), and of one CPU window in (b).
const WINDOW: Duration = Duration::from_secs(3);
/// CPU windows in (b).
const CPU_WINDOWS: usize = 5;
/// Polls of the per-tag workload in the two callgrind runs of (c).
const PER_TAG_POLLS: [usize; 2] = [20, 60];

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SIM").is_some() {
        return serve_simulator();
    }
    if let Some(polls) = std::env::var_os("TWINLOOM_BENCH_PER_TAG") {
        let polls = polls
            .to_str()
            .and_then(|p| p.parse().ok())
            .expect("a number of polls");
        return per_tag_workload(polls);
    }
    support::heading("Modbus source benchmarks");
    let mut sim = Command::new(std::env::current_exe().unwrap())
        .env("TWINLOOM_BENCH_SIM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator process");
    let mut line = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u16> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        poll_loop_vs_bare(ports[0]).await;
        hundred_thousand_tags(&ports[1..]).await;
    });
    drop(sim.stdin.take());
    let _ = sim.wait();
    instructions_per_tag();
}

/// Child process: 1 device for (a), 10 devices for (b) whose f32 registers change every 50 ms.
fn serve_simulator() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let loopback = "127.0.0.1:0".parse().unwrap();
        let single = SimDevice::new();
        let mut servers = vec![
            ModbusServer::bind(loopback, Framing::Tcp, HashMap::from([(1, single)]))
                .await
                .unwrap(),
        ];
        let mut devices = Vec::new();
        for _ in 0..DEVICES {
            let device = SimDevice::new();
            devices.push(Arc::clone(&device));
            servers.push(
                ModbusServer::bind(loopback, Framing::Tcp, HashMap::from([(1, device)]))
                    .await
                    .unwrap(),
            );
        }
        let ports: Vec<String> = servers
            .iter()
            .map(|s| s.addr().port().to_string())
            .collect();
        println!("{}", ports.join(" "));
        std::io::stdout().flush().unwrap();
        tokio::spawn(async move {
            let mut step = 0u32;
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                step += 1;
                for device in &devices {
                    let words: Vec<u16> = (0..ASSETS_PER_DEVICE * TAGS_PER_ASSET)
                        .flat_map(|i| {
                            let bits = (20.0 + (i as f32) * 0.01 + step as f32 * 0.5).to_bits();
                            [(bits >> 16) as u16, bits as u16]
                        })
                        .collect();
                    device.set_holding(0, &words);
                }
            }
        });
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        drop(servers);
    });
}

/// Requests/s of a bare tokio-modbus loop on a new connection, over [`WINDOW`] after a warm-up.
async fn bare_rate(addr: std::net::SocketAddr) -> f64 {
    // It runs in a spawned task, on a runtime worker like the poller, so that both pay the same
    // scheduling costs.
    tokio::spawn(async move {
        let mut ctx = tokio_modbus::client::tcp::connect_slave(addr, tokio_modbus::Slave(1))
            .await
            .unwrap();
        for _ in 0..1000 {
            ctx.read_holding_registers(0, 125).await.unwrap().unwrap();
        }
        let started = Instant::now();
        let mut bare = 0u64;
        while started.elapsed() < WINDOW {
            ctx.read_holding_registers(0, 125).await.unwrap().unwrap();
            bare += 1;
        }
        bare as f64 / started.elapsed().as_secs_f64()
    })
    .await
    .unwrap()
}

/// Requests/s of Twinloom's poller (started for this round, stopped after it) over [`WINDOW`]
/// after a warm-up.
async fn poller_rate(config: &twinloom::config::Config) -> f64 {
    let handles = twinloom::app::start(config).await.unwrap();
    let requests = r#"twinloom_modbus_requests_total{source="bench",device="bench"}"#;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metric(&handles.metrics.encode(), requests);
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let polled = metric(&handles.metrics.encode(), requests) - before;
    let rate = polled / started.elapsed().as_secs_f64();
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
    rate
}

async fn poll_loop_vs_bare(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut properties = String::new();
    let mut bindings = String::new();
    for i in 0..62 {
        properties.push_str(&format!(
            "{{ name = \"f{i}\", data_type = \"float\", unit = \"CEL\" }},"
        ));
        bindings.push_str(&format!(
            "f{i} = {{ table = \"holding\", address = {}, encoding = \"f32\", scale = 0.5 }}\n",
            i * 2
        ));
    }
    properties.push_str("{ name = \"last\", data_type = \"unsigned\" },");
    bindings.push_str("last = { table = \"holding\", address = 124 }\n");
    let text = format!(
        r#"
[[sources.modbus]]
id = "bench"
tcp = "{addr}"
poll = "1us"
[[types]]
name = "Block"
properties = [{properties}]
[[assets]]
path = "bench/block"
type = "Block"
source = "bench"
[assets.bindings]
{bindings}"#
    );
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let mut rates = support::Alternated::default();
    for _ in 0..support::ROUNDS {
        rates.a.push(bare_rate(addr).await);
        rates.b.push(poller_rate(&config).await);
    }
    println!(
        "(a) 125-register reads on one connection ({} alternating rounds of {WINDOW:?} per side; median (lowest–highest)):",
        support::ROUNDS
    );
    println!(
        "    bare tokio-modbus loop   {} requests/s",
        support::figure_text(&rates.a, 0)
    );
    println!(
        "    Twinloom poll loop       {} requests/s",
        support::figure_text(&rates.b, 0)
    );
    println!(
        "    ratio                    {}   (target >= 0.9)",
        rates.ratio_text(3)
    );
}

async fn hundred_thousand_tags(ports: &[u16]) {
    let mut text = String::from("[[types]]\nname = \"Probe\"\nproperties = [");
    for t in 0..TAGS_PER_ASSET {
        text.push_str(&format!(
            "{{ name = \"t{t}\", data_type = \"float\", unit = \"CEL\" }},"
        ));
    }
    text.push_str("]\n");
    for (d, port) in ports.iter().enumerate() {
        text.push_str(&format!(
            "[[sources.modbus]]\nid = \"dev{d}\"\ntcp = \"127.0.0.1:{port}\"\npoll = \"100ms\"\n"
        ));
        for a in 0..ASSETS_PER_DEVICE {
            text.push_str(&format!("[[assets]]\npath = \"bench/dev{d}/asset{a}\"\ntype = \"Probe\"\nsource = \"dev{d}\"\n[assets.bindings]\n"));
            for t in 0..TAGS_PER_ASSET {
                let address = (a * TAGS_PER_ASSET + t) * 2;
                text.push_str(&format!(
                    "t{t} = {{ table = \"holding\", address = {address}, encoding = \"f32\" }}\n"
                ));
            }
        }
    }
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let handles = twinloom::app::start(&config).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = std::process::id();
    let (mut cpu, mut rates, mut per_tag) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..CPU_WINDOWS {
        let readings0 = handles.twin.stats().readings;
        let (percent, wall) = support::cpu_percent_over(pid, || tokio::time::sleep(WINDOW)).await;
        let wall = wall.as_secs_f64();
        let tags = (handles.twin.stats().readings - readings0) as f64;
        cpu.push(percent);
        rates.push(tags / wall);
        per_tag.push(percent / 100.0 * wall / tags * 1e9);
    }
    let (good, _, bad) = handles.twin.quality_counts();
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
    println!(
        "(b) {} f32 tags on {} devices, 100 ms poll, every value changing ({CPU_WINDOWS} windows of {WINDOW:?} after 3 s; median (lowest–highest)):",
        DEVICES * ASSETS_PER_DEVICE * TAGS_PER_ASSET,
        DEVICES
    );
    println!(
        "    tags read                {} /s   ({good} good, {bad} bad)",
        support::figure_text(&rates, 0)
    );
    println!(
        "    daemon CPU               {} % of one core   (target <= 5 %)",
        support::figure_text(&cpu, 2)
    );
    println!(
        "    CPU per tag              {} ns",
        support::figure_text(&per_tag, 0)
    );
    println!(
        "    daemon peak RSS          {:.1} MiB   (target <= 40 MiB)",
        support::peak_rss_mib(pid)
    );
}

/// (c): callgrind's instruction count of the per-tag workload at two poll counts; their
/// difference divided by the extra tags is the per-tag path's cost, without the set-up.
fn instructions_per_tag() {
    let [few, many] = PER_TAG_POLLS;
    let count = |polls: usize| {
        support::callgrind_instructions(&[("TWINLOOM_BENCH_PER_TAG", polls.to_string())])
    };
    match (count(few), count(many)) {
        (Ok(a), Ok(b)) => {
            let tags = ((many - few) * ASSETS_PER_DEVICE * TAGS_PER_ASSET) as f64;
            println!(
                "(c) per-tag path (decode a block reply, Twin::apply, one subscriber), callgrind:"
            );
            println!(
                "    instructions per tag     {:>9.1}   ({a} at {few} polls, {b} at {many} polls of {} tags)",
                b.saturating_sub(a) as f64 / tags,
                ASSETS_PER_DEVICE * TAGS_PER_ASSET
            );
        }
        (Err(e), _) | (_, Err(e)) => println!("(c) instructions per tag: not counted: {e}"),
    }
}

/// The per-tag workload (c) runs in this process under callgrind: one device's 1 000 f32 tags
/// (the shape of (b)) planned into blocks, `polls` times: every register changes, every block's
/// reply is decoded and applied to the twin, and a subscriber (as the OPC UA server has) drains
/// the changes.
fn per_tag_workload(polls: usize) {
    let mut text = String::from("[[types]]\nname = \"Probe\"\nproperties = [");
    for t in 0..TAGS_PER_ASSET {
        text.push_str(&format!(
            "{{ name = \"t{t}\", data_type = \"float\", unit = \"CEL\" }},"
        ));
    }
    text.push_str("]\n[[sources.modbus]]\nid = \"dev\"\ntcp = \"127.0.0.1:502\"\n");
    for a in 0..ASSETS_PER_DEVICE {
        text.push_str(&format!(
            "[[assets]]\npath = \"bench/asset{a}\"\ntype = \"Probe\"\nsource = \"dev\"\n[assets.bindings]\n"
        ));
        for t in 0..TAGS_PER_ASSET {
            let address = (a * TAGS_PER_ASSET + t) * 2;
            text.push_str(&format!(
                "t{t} = {{ table = \"holding\", address = {address}, encoding = \"f32\" }}\n"
            ));
        }
    }
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let twin = Twin::new(Arc::new(config.twin_model()), &config.twin);
    let model = Arc::clone(twin.model());
    let points = (0..ASSETS_PER_DEVICE * TAGS_PER_ASSET)
        .map(|i| Point {
            property: model
                .property_by_path(&format!(
                    "bench/asset{}/t{}",
                    i / TAGS_PER_ASSET,
                    i % TAGS_PER_ASSET
                ))
                .unwrap(),
            address: (i * 2) as u16,
            width: 2,
            layout: Layout::new(Encoding::F32),
        })
        .collect();
    let limits = Limits {
        max_registers: 125,
        max_bits: 2000,
        max_gap_registers: 0,
        max_gap_bits: 0,
    };
    let blocks = plan::plan(RegisterTable::Holding, points, &limits);
    let mut subscriber = twin.subscribe(Filter::All, 4096);
    let (mut readings, mut changes) = (Vec::new(), Vec::new());
    let mut replies: Vec<Data> = blocks
        .iter()
        .map(|b| Data::Words(vec![0; usize::from(b.count)]))
        .collect();
    for step in 0..polls {
        for (block, reply) in blocks.iter().zip(&mut replies) {
            let Data::Words(words) = reply else {
                unreachable!()
            };
            for (k, pair) in words.chunks_exact_mut(2).enumerate() {
                let bits =
                    (20.0 + (usize::from(block.start) + k) as f32 * 0.01 + step as f32 * 0.5)
                        .to_bits();
                pair.copy_from_slice(&[(bits >> 16) as u16, bits as u16]);
            }
            readings.clear();
            decode_block(block, reply, &mut readings);
            twin.apply(&readings);
            changes.clear();
            subscriber.try_recv(&mut changes);
        }
    }
    assert_eq!(
        twin.stats().readings as usize,
        polls * ASSETS_PER_DEVICE * TAGS_PER_ASSET
    );
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
