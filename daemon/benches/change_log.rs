//! Change log benchmark (issue #28). Run with `cargo bench -p twinloom --bench change_log`.
//!
//! The Modbus benchmark's load — 10 simulated Modbus TCP devices × 1 000 f32 properties polled
//! every 100 ms, every value changing every poll: 100 000 changes/s — run by the daemon without
//! and with `[change_log]`, in [`support::ROUNDS`] alternating rounds. Each side of each round is
//! a child process of its own (this binary re-run with `TWINLOOM_BENCH_SIDE`), so its CPU (the
//! scheduler's accounting of its threads, `support::cpu_time`) and its peak RSS are its alone; the
//! simulator is another child. Prints the daemon's CPU % of one core and peak RSS per side with
//! their medians and the differences (targets: the log adds ≤ 5 % of one core and ≤ 16 MiB), and
//! the bytes the log wrote per change. Then callgrind's instructions per change of the per-change
//! path (`Twin::apply` of 1 000-change blocks) without and with the log (tap, encoding, writing),
//! from two poll counts each so that set-up cancels out.

// Benchmarks drive peers and readers from outside the daemon; the rule that every task goes
// through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use twinloom::twin::{PropertyId, Reading, Twin, Value};
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const DEVICES: usize = 10;
const TAGS_PER_DEVICE: usize = 1000;
/// Warm-up of each side before its window.
const WARM_UP: Duration = Duration::from_secs(3);
/// Measurement window of each side.
const WINDOW: Duration = Duration::from_secs(4);
/// Polls of 1 000 changes in the two callgrind runs per side.
const PER_CHANGE_POLLS: [usize; 2] = [20, 60];

fn main() {
    if std::env::var_os("TWINLOOM_BENCH_SIM").is_some() {
        return serve_simulator();
    }
    if let Some(side) = std::env::var_os("TWINLOOM_BENCH_SIDE") {
        let ports = std::env::var("TWINLOOM_BENCH_PORTS").expect("ports");
        return run_side(side == "with", &ports);
    }
    if let Some(polls) = std::env::var_os("TWINLOOM_BENCH_PER_CHANGE") {
        let polls = polls.to_str().and_then(|p| p.parse().ok()).expect("polls");
        let with = std::env::var_os("TWINLOOM_BENCH_WITH_LOG").is_some();
        return per_change_workload(polls, with);
    }
    support::heading("Change log benchmark");
    let exe = std::env::current_exe().unwrap();
    let mut sim = Command::new(&exe)
        .env("TWINLOOM_BENCH_SIM", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("simulator process");
    let mut ports = String::new();
    BufReader::new(sim.stdout.take().unwrap())
        .read_line(&mut ports)
        .unwrap();
    let ports = ports.trim().to_owned();
    // (cpu %, peak RSS MiB, changes/s, bytes per change) per side and round.
    let mut without = Vec::new();
    let mut with = Vec::new();
    for _ in 0..support::ROUNDS {
        for (side, out) in [("without", &mut without), ("with", &mut with)] {
            let output = Command::new(&exe)
                .env("TWINLOOM_BENCH_SIDE", side)
                .env("TWINLOOM_BENCH_PORTS", &ports)
                .stderr(Stdio::inherit())
                .output()
                .expect("side process");
            let text = String::from_utf8_lossy(&output.stdout);
            let figures: Vec<f64> = text
                .split_whitespace()
                .map(|f| f.parse().expect("a figure"))
                .collect();
            out.push(figures);
        }
    }
    drop(sim.stdin.take());
    let _ = sim.wait();
    let column = support::column;
    let cpu = support::Alternated {
        a: column(&without, 0),
        b: column(&with, 0),
    };
    let cpu_added: Vec<f64> = cpu.a.iter().zip(&cpu.b).map(|(a, b)| b - a).collect();
    let rss_added: Vec<f64> = column(&with, 1)
        .iter()
        .zip(column(&without, 1))
        .map(|(b, a)| b - a)
        .collect();
    println!(
        "(a) {} f32 tags on {DEVICES} devices, 100 ms poll, every value changing; {} alternating rounds, each side a process of its own, {WARM_UP:?} warm-up then {WINDOW:?}; median (lowest–highest):",
        DEVICES * TAGS_PER_DEVICE,
        support::ROUNDS
    );
    println!(
        "    changes/s      without {}   with {}",
        support::figure_text(&column(&without, 2), 0),
        support::figure_text(&column(&with, 2), 0)
    );
    println!(
        "    daemon CPU     without {} %   with {} % of one core",
        support::figure_text(&cpu.a, 2),
        support::figure_text(&cpu.b, 2)
    );
    println!(
        "    the log adds   {} % of one core (target <= 5)",
        support::figure_text(&cpu_added, 2)
    );
    println!(
        "    peak RSS       without {} MiB   with {} MiB",
        support::figure_text(&column(&without, 1), 1),
        support::figure_text(&column(&with, 1), 1)
    );
    println!(
        "    the log adds   {} MiB (target <= 16)",
        support::figure_text(&rss_added, 1)
    );
    println!(
        "    on disk        {} bytes per change",
        support::figure_text(&column(&with, 3), 2)
    );
    instructions_per_change();
}

/// Child process: 10 devices whose 1 000 f32 values change every 50 ms.
fn serve_simulator() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let loopback = "127.0.0.1:0".parse().unwrap();
        let (mut servers, mut devices) = (Vec::new(), Vec::new());
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
                    let words: Vec<u16> = (0..TAGS_PER_DEVICE)
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

/// The daemon's configuration for the devices at `ports`, with the change log in `state` when
/// `with`.
fn config_text(ports: &str, state: &Path, with: bool) -> String {
    let mut text = format!("[daemon]\nstate_dir = \"{}\"\n", state.display());
    if with {
        text.push_str("[change_log]\nmax_disk = \"2GiB\"\ncommit_window = \"100ms\"\n");
    }
    text.push_str("[[types]]\nname = \"Probe\"\nproperties = [");
    for t in 0..10 {
        text.push_str(&format!(
            "{{ name = \"t{t}\", data_type = \"float\", unit = \"CEL\" }},"
        ));
    }
    text.push_str("]\n");
    for (d, port) in ports.split_whitespace().enumerate() {
        text.push_str(&format!(
            "[[sources.modbus]]\nid = \"dev{d}\"\ntcp = \"127.0.0.1:{port}\"\npoll = \"100ms\"\n"
        ));
        for a in 0..TAGS_PER_DEVICE / 10 {
            text.push_str(&format!("[[assets]]\npath = \"bench/dev{d}/asset{a}\"\ntype = \"Probe\"\nsource = \"dev{d}\"\n[assets.bindings]\n"));
            for t in 0..10 {
                let address = (a * 10 + t) * 2;
                text.push_str(&format!(
                    "t{t} = {{ table = \"holding\", address = {address}, encoding = \"f32\" }}\n"
                ));
            }
        }
    }
    text
}

/// Child process, one side of one round: prints `cpu% peak_rss_mib changes/s bytes/change`.
fn run_side(with: bool, ports: &str) {
    let state = tempfile::tempdir().unwrap();
    let text = config_text(ports, state.path(), with);
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let (percent, rate, bytes_per_change) = runtime.block_on(async {
        let handles = twinloom::app::start(&config).await.unwrap();
        tokio::time::sleep(WARM_UP).await;
        let written = || {
            metric(
                &handles.metrics.encode(),
                "twinloom_change_log_written_bytes_total",
            )
        };
        let (changes0, bytes0) = (handles.twin.stats().changes, written());
        let (percent, wall) = support::cpu_percent_over(pid, || tokio::time::sleep(WINDOW)).await;
        let changes = (handles.twin.stats().changes - changes0) as f64;
        let bytes = written() - bytes0;
        handles.supervisor.shutdown(Duration::from_secs(5)).await;
        (
            percent,
            changes / wall.as_secs_f64(),
            bytes / changes.max(1.0),
        )
    });
    println!(
        "{percent} {} {rate} {bytes_per_change}",
        support::peak_rss_mib(pid)
    );
}

/// Callgrind's count per change without and with the log, each from two poll counts.
fn instructions_per_change() {
    let [few, many] = PER_CHANGE_POLLS;
    let count = |polls: usize, with: bool| {
        let mut vars = vec![("TWINLOOM_BENCH_PER_CHANGE", polls.to_string())];
        if with {
            vars.push(("TWINLOOM_BENCH_WITH_LOG", "1".to_owned()));
        }
        support::callgrind_instructions(&vars)
    };
    let changes = ((many - few) * TAGS_PER_DEVICE) as f64;
    let per_change = |with| match (count(few, with), count(many, with)) {
        (Ok(a), Ok(b)) => Ok(b.saturating_sub(a) as f64 / changes),
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    match (per_change(false), per_change(true)) {
        (Ok(without), Ok(with)) => {
            println!(
                "(b) per-change path (Twin::apply of 1 000-change blocks; with the log: tap, encoding, write), callgrind:"
            );
            println!(
                "    instructions per change   without {without:.1}   with {with:.1}   the log adds {:.1}",
                with - without
            );
        }
        (Err(e), _) | (_, Err(e)) => println!("(b) instructions per change: not counted: {e}"),
    }
}

/// The per-change workload, run under callgrind: a twin of 1 000 float properties (with the change
/// log in a temporary state folder when `with`), `polls` blocks of 1 000 changes applied; with
/// the log, waits until it has written them all.
fn per_change_workload(polls: usize, with: bool) {
    let state = tempfile::tempdir().unwrap();
    let text = config_text("502", state.path(), with);
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let twin = Arc::new(Twin::new(Arc::new(config.twin_model()), &config.twin));
        let supervisor = twinloom::runtime::Supervisor::new();
        let metrics = twinloom::telemetry::Metrics::new();
        let readiness = twinloom::runtime::Readiness::default();
        let context = twinloom::context::ComponentContext {
            twin: &twin,
            supervisor: &supervisor,
            metrics: &metrics,
            readiness: &readiness,
            state_dir: state.path(),
        };
        let log = config.change_log.as_ref().and_then(|c| {
            twinloom::change_log::start(c, config.control.audit_reserve.as_u64(), context)
        });
        let mut readings = Vec::with_capacity(TAGS_PER_DEVICE);
        for step in 0..polls {
            readings.clear();
            readings.extend((0..TAGS_PER_DEVICE).map(|i| {
                Reading::value(
                    PropertyId(i as u32),
                    Value::Float(20.0 + i as f64 * 0.01 + step as f64 * 0.5),
                    None,
                )
            }));
            twin.apply(&readings);
            tokio::task::yield_now().await;
        }
        if let Some(log) = &log {
            let target = (polls * TAGS_PER_DEVICE) as u64 + 1;
            log.subscribe()
                .wait_for(|end| *end >= target)
                .await
                .unwrap();
        }
        supervisor.shutdown(Duration::from_secs(5)).await;
    });
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}
