//! Control gate benchmark (issue: control path). Run with `cargo bench -p twinloom --bench control`.
//!
//! The daemon (`app::start`) with 8 simulated PLCs on Modbus TCP over loopback, 32 read-write
//! setpoints each, and the durable audit log on this machine's disk; 256 proposers each write
//! their own setpoint in a loop through the gate (`ControlHandle::write`: decided, intent on disk,
//! written to the PLC, outcome on disk, answered). Beside it, on the same disk, the bare loop the
//! audit log is measured against: one writer appending 200-byte lines, `fdatasync` after each.
//! The two alternate over [`support::ROUNDS`] rounds of [`WINDOW`] each. Prints writes per
//! second (each is one decision and two audit records), the p50/p99 latency of a write, audit
//! records per second against the bare loop's, and the targets: ≥ 10 000 decisions/s and audit
//! records ≥ 0.8 × the bare loop's records per second. A separate line times the decision alone
//! (`Policy::decide`).

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use twinloom::control::{Origin, Proposal, policy::Policy};
use twinloom::twin::Value;
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const PLCS: usize = 8;
const SETPOINTS: usize = 32;
const PROPOSERS: usize = 256;
const WINDOW: Duration = Duration::from_secs(3);

fn config(addrs: &[std::net::SocketAddr], state: &std::path::Path) -> twinloom::config::Config {
    let mut text = format!(
        r#"
[daemon]
state_dir = "{}"
log_level = "error"

[control]
max_writes_per_origin_per_minute = 100000000

[[types]]
name = "Zone"
properties = [
{}
]
"#,
        state.display(),
        (0..SETPOINTS)
            .map(|i| format!(
                "  {{ name = \"sp{i}\", data_type = \"float\", access = \"read-write\" }},"
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for (p, addr) in addrs.iter().enumerate() {
        text.push_str(&format!(
            "\n[[sources.modbus]]\nid = \"plc{p}\"\ntcp = \"{addr}\"\npoll = \"1s\"\n\n[[assets]]\npath = \"site/zone{p}\"\ntype = \"Zone\"\nsource = \"plc{p}\"\n"
        ));
        for i in 0..SETPOINTS {
            text.push_str(&format!(
                "bindings.sp{i} = {{ table = \"holding\", address = {i} }}\n"
            ));
        }
    }
    twinloom::config::parse(std::path::Path::new("bench.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Writes through the gate for `window`: returns writes done and each write's latency.
async fn gate_round(
    handles: &twinloom::app::Handles,
    setpoints: &[twinloom::twin::PropertyId],
    window: Duration,
) -> (usize, Vec<Duration>) {
    let until = Instant::now() + window;
    let mut workers = Vec::new();
    for (n, property) in setpoints.iter().copied().enumerate().take(PROPOSERS) {
        let control = handles.control.clone();
        workers.push(async move {
            let origin = Origin::OpcUa {
                user: format!("bench{n}"),
            };
            let mut latencies = Vec::new();
            let mut value = 0.0;
            while Instant::now() < until {
                value += 1.0;
                let started = Instant::now();
                control
                    .write(property, Value::Float(value % 1000.0), origin.clone())
                    .await
                    .expect("the write is carried out");
                latencies.push(started.elapsed());
            }
            latencies
        });
    }
    let all: Vec<Duration> = futures::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    (all.len(), all)
}

/// Appends 200-byte lines with `fdatasync` after each for `window`: records written.
fn bare_round(file: &mut std::fs::File, window: Duration) -> usize {
    let line = format!("{}\n", "x".repeat(199));
    let until = Instant::now() + window;
    let mut records = 0;
    while Instant::now() < until {
        file.write_all(line.as_bytes()).unwrap();
        file.sync_data().unwrap();
        records += 1;
    }
    records
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..PLCS {
            let device = SimDevice::new();
            let server = ModbusServer::bind(
                "127.0.0.1:0".parse().unwrap(),
                Framing::Tcp,
                HashMap::from([(1, Arc::clone(&device))]),
            )
            .await
            .unwrap();
            addrs.push(server.addr());
            servers.push((server, device));
        }
        // The audit log and the bare loop on the same disk: the build's target folder.
        let disk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let state = tempfile::tempdir_in(&disk).unwrap();
        let handles = twinloom::app::start(&config(&addrs, state.path()))
            .await
            .expect("starts");
        let setpoints: Vec<_> = (0..PLCS)
            .flat_map(|p| (0..SETPOINTS).map(move |i| format!("site/zone{p}/sp{i}")))
            .map(|path| handles.twin.model().property_by_path(&path).unwrap())
            .collect();
        // Warm-up: every connection up, the journal's first segment open.
        gate_round(&handles, &setpoints, Duration::from_millis(500)).await;
        let bare_path = state.path().join("bare.log");
        let mut bare_file = std::fs::File::create(&bare_path).unwrap();
        bare_round(&mut bare_file, Duration::from_millis(200));

        support::heading(&format!(
            "control gate with the durable audit log, {PLCS} PLCs × {SETPOINTS} setpoints, {PROPOSERS} proposers; {} alternating rounds of {} s, median (lowest–highest)",
            support::ROUNDS,
            WINDOW.as_secs()
        ));
        let mut records = support::Alternated::default();
        let (mut writes_per_s, mut p50, mut p99) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..support::ROUNDS {
            let (done, mut latencies) = gate_round(&handles, &setpoints, WINDOW).await;
            latencies.sort_unstable();
            let rate = done as f64 / WINDOW.as_secs_f64();
            writes_per_s.push(rate);
            p50.push(percentile(&latencies, 0.50));
            p99.push(percentile(&latencies, 0.99));
            let bare = tokio::task::block_in_place(|| bare_round(&mut bare_file, WINDOW));
            records.a.push(bare as f64 / WINDOW.as_secs_f64());
            records.b.push(2.0 * rate);
        }
        println!(
            "    writes (decisions) per s    {}",
            support::figure_text(&writes_per_s, 0)
        );
        println!(
            "    write latency p50 µs        {}",
            support::figure_text(&p50, 0)
        );
        println!(
            "    write latency p99 µs        {}",
            support::figure_text(&p99, 0)
        );
        println!(
            "    bare fsync loop records/s   {}",
            support::figure_text(&records.a, 0)
        );
        println!(
            "    audit records/s             {}",
            support::figure_text(&records.b, 0)
        );
        println!("    audit / bare                {}×", records.ratio_text(2));

        // The decision alone.
        let mut policy = Policy::new(u32::MAX, Default::default());
        policy.set_armed(true);
        let decisions = 200_000;
        let started = Instant::now();
        for i in 0..decisions {
            let (reply, _answer) = tokio::sync::oneshot::channel();
            let request = Proposal {
                property: setpoints[i % setpoints.len()],
                value: Value::Float(i as f64),
                origin: Origin::Plugin { name: "bench".into() },
                reply,
                shadow: false,
                deadline: None,
            };
            std::hint::black_box(policy.decide(&handles.twin, &request, Instant::now()).ok());
        }
        let per_decision = started.elapsed().as_secs_f64() * 1e9 / decisions as f64;
        println!("    the decision alone          {per_decision:.0} ns");

        let rate = support::median(&writes_per_s);
        let ratio = records.median_ratio();
        println!(
            "target: ≥ 10 000 decisions/s with the durable audit: {rate:.0}/s: {}",
            if rate >= 10_000.0 { "met" } else { "NOT met" }
        );
        println!(
            "target: audit records ≥ 0.8 × the bare loop's: {ratio:.2}×: {}",
            if ratio >= 0.8 { "met" } else { "NOT met" }
        );
        handles.supervisor.shutdown(Duration::from_secs(10)).await;
        drop(servers);
    });
}
