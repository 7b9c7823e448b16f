//! Modbus source benchmarks (issue: Modbus source). Run with `cargo bench -p twinloom --bench modbus`.
//!
//! The simulated devices run in a child process (this binary re-executed with
//! `TWINLOOM_BENCH_SIM=1`), so the CPU and memory figures are the daemon's alone.
//!
//! (a) **Poll loop vs bare request loop**: reads of 125 holding registers on one connection as
//!     fast as the server answers, first by a bare tokio-modbus loop (the limit), then by
//!     Twinloom's poller (decode 62 f32 + 1 u16, scale, apply to the twin) with a 1 µs poll
//!     interval. Prints requests/s of both and the ratio (target ≥ 0.9).
//! (b) **100k float32 tags/s across 10 devices**: 10 Modbus TCP devices × 100 assets × 10 f32
//!     properties polled every 100 ms, every value changing every poll. Prints tags/s, the
//!     daemon's CPU % of one core and its peak RSS (targets ≤ 5 %, ≤ 40 MiB).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_modbus::client::Reader;
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const DEVICES: usize = 10;
const ASSETS_PER_DEVICE: usize = 100;
const TAGS_PER_ASSET: usize = 10;

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SIM").is_some() {
        return serve_simulator();
    }
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

const WINDOW: Duration = Duration::from_secs(5);

async fn poll_loop_vs_bare(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // Bare loop: the limit of this server and this connection. It runs in a spawned task, on a
    // runtime worker like the poller, so that both pay the same scheduling costs.
    let bare_rate = tokio::spawn(async move {
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
    .unwrap();

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
    let handles = twinloom::app::start(&config).await.unwrap();
    let requests = r#"twinloom_modbus_requests_total{source="bench",device="bench"}"#;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = metric(&handles.metrics.encode(), requests);
    let started = Instant::now();
    tokio::time::sleep(WINDOW).await;
    let polled = metric(&handles.metrics.encode(), requests) - before;
    let poll_rate = polled / started.elapsed().as_secs_f64();
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
    println!("(a) 125-register reads on one connection:");
    println!("    bare tokio-modbus loop   {bare_rate:>9.0} requests/s");
    println!("    Twinloom poll loop       {poll_rate:>9.0} requests/s");
    println!(
        "    ratio                    {:>9.3}   (target >= 0.9)",
        poll_rate / bare_rate
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
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (cpu0, readings0, started) = (cpu_seconds(), handles.twin.stats().readings, Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds() - cpu0) / wall * 100.0;
    let tags = (handles.twin.stats().readings - readings0) as f64 / wall;
    let (good, _, bad) = handles.twin.quality_counts();
    handles.supervisor.shutdown(Duration::from_secs(2)).await;
    println!(
        "(b) {} f32 tags on {} devices, 100 ms poll, every value changing:",
        DEVICES * ASSETS_PER_DEVICE * TAGS_PER_ASSET,
        DEVICES
    );
    println!("    tags read                {tags:>9.0} /s   ({good} good, {bad} bad)");
    println!("    daemon CPU               {cpu:>9.2} % of one core   (target <= 5 %)");
    println!(
        "    daemon peak RSS          {:>9.1} MiB   (target <= 40 MiB)",
        peak_rss_mib()
    );
    println!(
        "    CPU per tag              {:>9.0} ns",
        cpu / 100.0 / tags * 1e9
    );
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// User + system CPU time of this process, from /proc/self/stat (clock ticks of 1/100 s).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5) are utime and stime; after the name they are at 11 and 12.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Peak resident set size (VmHWM) of this process.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}
