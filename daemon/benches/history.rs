//! History benchmark (issue #30). Run with `cargo bench -p twinloom --bench history`; with
//! `-- --test` (what `cargo test --bench history -- --test` passes) it runs small, once, for
//! correctness only (a debug build's figures mean nothing).
//!
//! (a) **Ingest**: 100 000 changes/s (10 000 float properties changing 10 times a second, applied
//!     to the twin in blocks every 10 ms) through the change log, without and with `[history]`,
//!     in [`support::ROUNDS`] alternating rounds, each side a child process of its own (this
//!     binary re-run with `TWINLOOM_BENCH_SIDE`) so that its CPU (`support::cpu_time`) and peak
//!     RSS are its alone. The historian's cost is the difference (targets: ≤ 10 % of one core,
//!     ≤ 48 MiB). The window holds at least one 10 s flush.
//! (b) **HistoryRead** of 1 000 000 raw points of one series: over OPC UA from an async-opcua
//!     client (pages of `MaxReturnDataValues` with continuation points, SecurityPolicy None)
//!     against the reference measured in the same run, alternating: the historian's own read of
//!     the same range in the daemon's process (files, decoding, merging with the buffer). Time,
//!     points/s and the encoded HistoryData bytes/s.
//! (c) **Disk bytes per sample** of a slowly changing float sampled each second: a day (quick:
//!     2 h) of 1 Hz samples of 100 series (quick: 10) written through the historian's write path
//!     (`Store::write` of what each 10 s flush holds, `Store::compact_closed` once the files are
//!     closed), the folder's bytes divided by the samples, before and after compaction, for
//!     three patterns: a scaled register (`raw × 0.01`, the raw value stepping by one in 20 % of
//!     the seconds: the target ≤ 2), the same with ±1 ms jitter on the timestamps, and an
//!     f32 register (a float that is no short decimal). `TWINLOOM_BENCH_DISK=<series>,<hours>`
//!     runs only this part at that size (the figures do not depend on the build).

// Benchmarks drive peers and readers from outside the daemon; the rule that every task goes
// through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use twinloom::history::store::{FileWrite, Store};
use twinloom::history::{Point, Sample};
use twinloom::twin::{PropertyId, Quality, Reading, Twin, Value};

/// Float properties of the ingest load, and how often each changes (per second).
const PROPERTIES: usize = 10_000;
const CHANGES_PER_PROPERTY: usize = 10;

/// Sizes of one run: the full benchmark or the quick correctness run.
#[derive(Debug, Clone, Copy)]
struct Sizes {
    /// The quick correctness run.
    quick: bool,
    rounds: usize,
    warm_up: Duration,
    window: Duration,
    /// Changes per second of the ingest load.
    rate: usize,
    /// Raw points of the HistoryRead series.
    points: usize,
    /// Series and hours of the disk figure.
    series: usize,
    hours: i64,
}

const FULL: Sizes = Sizes {
    quick: false,
    rounds: support::ROUNDS,
    warm_up: Duration::from_secs(3),
    window: Duration::from_secs(12),
    rate: PROPERTIES * CHANGES_PER_PROPERTY,
    points: 1_000_000,
    series: 100,
    hours: 24,
};

const QUICK: Sizes = Sizes {
    quick: true,
    rounds: 1,
    warm_up: Duration::from_millis(500),
    window: Duration::from_secs(1),
    rate: 10_000,
    points: 20_000,
    series: 10,
    hours: 2,
};

fn sizes() -> Sizes {
    let quick = std::env::args().any(|a| a == "--test")
        || std::env::var_os("TWINLOOM_BENCH_QUICK").is_some();
    if quick { QUICK } else { FULL }
}

fn main() {
    let sizes = sizes();
    if let Some(side) = std::env::var_os("TWINLOOM_BENCH_SIDE") {
        return ingest_side(side == "with", sizes);
    }
    if let Ok(level) = std::env::var("TWINLOOM_BENCH_LOG") {
        twinloom::telemetry::init(&level, false);
    }
    support::heading("History benchmark");
    // `TWINLOOM_BENCH_DISK=<series>,<hours>`: only (c), at that size.
    if let Ok(size) = std::env::var("TWINLOOM_BENCH_DISK") {
        let (series, hours) = size.split_once(',').expect("<series>,<hours>");
        return disk(Sizes {
            series: series.parse().expect("series"),
            hours: hours.parse().expect("hours"),
            ..sizes
        });
    }
    ingest(sizes);
    history_read(sizes);
    disk(sizes);
}

/// The configuration: `PROPERTIES` float properties (100 per asset) on a Modbus source that is
/// never polled, the change log, `[history]` when `with`, and an OPC UA server when `opcua`.
fn config_text(state: &Path, with: bool, opcua: bool) -> String {
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n[change_log]\nmax_disk = \"4GiB\"\ncommit_window = \"100ms\"\n",
        state.display()
    );
    if with {
        text.push_str("[history]\nretention = \"8h\"\n");
    }
    if opcua {
        text.push_str(
            "[opcua_server]\nlisten = \"127.0.0.1:0\"\nallow_security_none = true\nanonymous = true\nauto_trust_clients = true\n",
        );
    }
    text.push_str("[[types]]\nname = \"Probe\"\nproperties = [");
    for t in 0..100 {
        text.push_str(&format!(
            "{{ name = \"t{t}\", data_type = \"float\", unit = \"CEL\" }},"
        ));
    }
    text.push_str("]\n[[sources.modbus]]\nid = \"plc\"\ntcp = \"127.0.0.1:9\"\npoll = \"1h\"\n");
    for a in 0..PROPERTIES / 100 {
        text.push_str(&format!(
            "[[assets]]\npath = \"bench/a{a}\"\ntype = \"Probe\"\nsource = \"plc\"\n[assets.bindings]\n"
        ));
        for t in 0..100 {
            let address = (a * 100 + t) * 2 % 65_000;
            text.push_str(&format!(
                "t{t} = {{ table = \"holding\", address = {address}, encoding = \"f32\" }}\n"
            ));
        }
    }
    text
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// (a): alternating sides, each a child process; prints the historian's CPU and RSS.
fn ingest(sizes: Sizes) {
    let exe = std::env::current_exe().unwrap();
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..sizes.rounds {
        for (side, out) in [("without", &mut without), ("with", &mut with)] {
            let mut command = std::process::Command::new(&exe);
            command.env("TWINLOOM_BENCH_SIDE", side);
            if sizes.quick {
                command.env("TWINLOOM_BENCH_QUICK", "1");
            }
            let output = command
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("side process");
            let text = String::from_utf8_lossy(&output.stdout);
            let figures: Vec<f64> = text
                .split_whitespace()
                .map(|f| f.parse().expect("a figure"))
                .collect();
            assert_eq!(figures.len(), 4, "a side prints four figures: {text}");
            out.push(figures);
        }
    }
    let column = support::column;
    let added = |i: usize| support::added(&with, &without, i);
    println!(
        "(a) ingest: {PROPERTIES} float properties, {} changes/s through the change log; {} alternating rounds, each side a process of its own, {:?} warm-up then {:?}; median (lowest–highest):",
        sizes.rate, sizes.rounds, sizes.warm_up, sizes.window
    );
    println!(
        "    changes/s        without {}   with {}",
        support::figure_text(&column(&without, 2), 0),
        support::figure_text(&column(&with, 2), 0)
    );
    println!(
        "    process CPU      without {} %   with {} % of one core",
        support::figure_text(&column(&without, 0), 2),
        support::figure_text(&column(&with, 0), 2)
    );
    println!(
        "    history adds     {} % of one core (target <= 10)",
        support::figure_text(&added(0), 2)
    );
    println!(
        "    peak RSS         without {} MiB   with {} MiB; history adds {} MiB (target <= 48)",
        support::figure_text(&column(&without, 1), 1),
        support::figure_text(&column(&with, 1), 1),
        support::figure_text(&added(1), 1)
    );
    println!(
        "    samples stored   {} per second of the window (with)",
        support::figure_text(&column(&with, 3), 0)
    );
}

/// Child process, one side of (a): prints `cpu% peak_rss_mib changes/s stored/s`.
fn ingest_side(with: bool, sizes: Sizes) {
    let state = tempfile::tempdir().unwrap();
    let text = config_text(state.path(), with, false);
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = std::process::id();
    let (percent, rate, stored) = runtime.block_on(async {
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
        let log = twinloom::change_log::start(
            config.change_log.as_ref().expect("[change_log]"),
            config.control.audit_reserve.as_u64(),
            context,
        )
        .expect("the log starts");
        let _history = config
            .history
            .as_ref()
            .map(|h| twinloom::history::start(h, &log, context).expect("history starts"));
        // The load: every 10 ms a block of rate / 100 changes, cycling through the properties.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let feeder = std::thread::spawn({
            let (twin, stop) = (Arc::clone(&twin), Arc::clone(&stop));
            let block = sizes.rate / 100;
            move || {
                let mut next = Instant::now();
                let mut i = 0usize;
                let mut readings = Vec::with_capacity(block);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    readings.clear();
                    for _ in 0..block {
                        let property = i % PROPERTIES;
                        let step = (i / PROPERTIES) as f64;
                        readings.push(Reading::value(
                            PropertyId(property as u32),
                            Value::Float((2000.0 + property as f64 + step) * 0.01),
                            None,
                        ));
                        i += 1;
                    }
                    twin.apply(&readings);
                    next += Duration::from_millis(10);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
            }
        });
        tokio::time::sleep(sizes.warm_up).await;
        let stored = || metric(&metrics.encode(), "twinloom_history_samples_total");
        let (changes0, stored0) = (twin.stats().changes, stored());
        let (percent, wall) =
            support::cpu_percent_over(pid, || tokio::time::sleep(sizes.window)).await;
        let changes = (twin.stats().changes - changes0) as f64;
        let stored = stored() - stored0;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        feeder.join().unwrap();
        supervisor.shutdown(Duration::from_secs(10)).await;
        (
            percent,
            changes / wall.as_secs_f64(),
            stored / wall.as_secs_f64(),
        )
    });
    println!("{percent} {} {rate} {stored}", support::peak_rss_mib(pid));
}

fn micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// (b): `sizes.points` raw points of one series, read over OPC UA and in-process, alternating.
fn history_read(sizes: Sizes) {
    use opcua::client::{ClientBuilder, HistoryReadAction, IdentityToken};
    use opcua::crypto::SecurityPolicy;
    use opcua::types::{
        BinaryEncodable, ContextOwned, HistoryData, HistoryReadValueId, MessageSecurityMode,
        NodeId, ReadRawModifiedDetails, TimestampsToReturn, UserTokenPolicy,
    };
    let state = tempfile::tempdir().unwrap();
    let text = config_text(state.path(), true, true);
    let config = twinloom::config::parse(Path::new("bench.toml"), &text).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let handles = twinloom::app::start(&config).await.unwrap();
        let history = handles.history.clone().expect("history runs");
        let log = handles.change_log.clone().expect("the log runs");
        // The points: one property, 1 ms apart, ending an hour ago (stored in order).
        let end = micros(SystemTime::now()) - 3_600_000_000;
        let first = end - sizes.points as i64 * 1000;
        let property = PropertyId(0);
        let mut head = log.subscribe();
        let start = *head.borrow();
        for block in 0..sizes.points.div_ceil(1000) {
            let end = ((block + 1) * 1000).min(sizes.points);
            for i in block * 1000..end {
                let at = UNIX_EPOCH + Duration::from_micros((first + i as i64 * 1000) as u64);
                handles.twin.apply(&[Reading::value(
                    property,
                    Value::Float((2000 + i % 97) as f64 * 0.01),
                    Some(at),
                )]);
            }
            // Each block in the log before the next: a burst of 1 000 000 changes at once would
            // overflow the twin's tap (a counted gap, not the points this part reads).
            head.wait_for(|h| *h >= start + end as u64)
                .await
                .expect("the log runs");
        }
        let through = start + sizes.points as u64;
        history
            .taken()
            .wait_for(|t| *t >= through)
            .await
            .expect("the historian runs");
        // Stored, not buffered: the flush after the last change.
        while metric(&handles.metrics.encode(), "twinloom_history_samples_total")
            < sizes.points as f64
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let series = history.series_of(property).unwrap();
        let opcua = handles.opcua.as_ref().expect("the OPC UA server runs");
        let node = NodeId::new(opcua.namespace_index, "bench/a0/t0");
        let pki = tempfile::tempdir().unwrap();
        let mut client = ClientBuilder::new()
            .application_name("twinloom-bench-client")
            .application_uri("urn:twinloom:bench-client")
            .pki_dir(pki.path())
            .create_sample_keypair(true)
            .trust_server_certs(true)
            .session_retry_limit(0)
            .max_array_length(100_000)
            .max_message_size(64 << 20)
            .max_chunk_count(1024)
            .client()
            .unwrap();
        let endpoint = (
            opcua.endpoint_url.as_str(),
            SecurityPolicy::None.to_uri(),
            MessageSecurityMode::None,
            UserTokenPolicy::anonymous(),
        );
        let (session, event_loop) = client
            .connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous)
            .await
            .unwrap();
        let _event_loop = event_loop.spawn();
        assert!(session.wait_for_connection().await);
        let context = ContextOwned::default();
        let over_opcua = || {
            let (session, node, context) = (&session, &node, &context);
            async move {
                let details = ReadRawModifiedDetails {
                    is_read_modified: false,
                    start_time: twinloom::northbound::opcua_server::history::date_time(first),
                    end_time: twinloom::northbound::opcua_server::history::date_time(end + 1),
                    num_values_per_node: 0,
                    return_bounds: false,
                };
                let (mut values, mut bytes) = (0usize, 0usize);
                let mut continuation = opcua::types::ByteString::null();
                loop {
                    let read = HistoryReadValueId {
                        node_id: node.clone(),
                        continuation_point: continuation.clone(),
                        ..Default::default()
                    };
                    let [result]: [_; 1] = session
                        .history_read(
                            HistoryReadAction::ReadRawModifiedDetails(details.clone()),
                            TimestampsToReturn::Both,
                            false,
                            &[read],
                        )
                        .await
                        .unwrap()
                        .try_into()
                        .unwrap();
                    bytes += result.history_data.byte_len(&context.context());
                    let data = result.history_data.inner_as::<HistoryData>().unwrap();
                    values += data.data_values.as_ref().map_or(0, Vec::len);
                    if result.continuation_point.is_null_or_empty() {
                        break;
                    }
                    continuation = result.continuation_point;
                }
                (values, bytes)
            }
        };
        let (mut direct, mut remote, mut bytes_per_s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..sizes.rounds {
            let t0 = Instant::now();
            let points = tokio::task::block_in_place(|| history.read(series, first..end + 1))
                .unwrap();
            direct.push(t0.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(points.len(), sizes.points);
            assert!(matches!(points[0], Point::Sample(_)));
            let t0 = Instant::now();
            let (values, bytes) = over_opcua().await;
            let elapsed = t0.elapsed().as_secs_f64();
            remote.push(elapsed * 1000.0);
            bytes_per_s.push(bytes as f64 / elapsed / 1e6);
            assert_eq!(values, sizes.points, "every point over OPC UA");
        }
        let _ = session.disconnect().await;
        let ratio = support::Alternated {
            a: direct.clone(),
            b: remote.clone(),
        };
        println!(
            "(b) HistoryRead of {} raw points of one series, {} alternating rounds; median (lowest–highest):",
            sizes.points, sizes.rounds
        );
        println!(
            "    the historian's read (reference)   {} ms",
            support::figure_text(&direct, 1)
        );
        println!(
            "    over OPC UA (async-opcua client)   {} ms, {} MB/s of HistoryData, {:.0} points/s; {} × the reference",
            support::figure_text(&remote, 1),
            support::figure_text(&bytes_per_s, 1),
            sizes.points as f64 / (support::median(&remote) / 1000.0),
            ratio.ratio_text(1)
        );
        handles.supervisor.shutdown(Duration::from_secs(10)).await;
    });
}

/// A value pattern of (c): the value at second `i` of series `s`, given the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pattern {
    /// `raw × 0.01`, raw stepping by ±1 in 20 % of the seconds.
    Scaled,
    /// The same with the timestamps ±1 ms off the second.
    ScaledJitter,
    /// An f32 random walk (steps of 0.01 in f32) stored as f64.
    F32,
}

/// (c): disk bytes per sample, before and after compaction, per pattern.
fn disk(sizes: Sizes) {
    println!(
        "(c) disk: {} series × {} h of 1 Hz samples (10 s flushes through Store::write, then compaction of the closed hour files):",
        sizes.series, sizes.hours
    );
    for pattern in [Pattern::Scaled, Pattern::ScaledJitter, Pattern::F32] {
        let (flushed, compacted, chunk) = disk_figure(sizes, pattern);
        println!(
            "    {pattern:?}: {flushed:.2} bytes/sample as flushed, {compacted:.2} compacted (chunk encoding alone {chunk:.2}){}",
            if pattern == Pattern::Scaled {
                " (target <= 2)"
            } else {
                ""
            }
        );
    }
}

/// Writes the pattern's samples as the historian does; returns bytes per sample as flushed,
/// after compaction, and of the chunk encoding alone (one chunk per series and hour).
fn disk_figure(sizes: Sizes, pattern: Pattern) -> (f64, f64, f64) {
    // tmpfs when there is one: sizes are the same, the fsyncs cheap.
    let parent = Path::new("/dev/shm");
    let dir = if parent.is_dir() {
        tempfile::tempdir_in(parent).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let hour = 3_600_000_000i64;
    let span = Duration::from_secs(3600);
    let store = Store::open(dir.path(), span).unwrap();
    // Whole hours ending three hours ago: every file closed.
    let end = (micros(SystemTime::now()) / hour - 3) * hour;
    let start = end - sizes.hours * hour;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut random = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut raw: Vec<i64> = (0..sizes.series).map(|s| 2000 + s as i64).collect();
    let mut f32s: Vec<f32> = (0..sizes.series).map(|s| 20.0 + s as f32).collect();
    let mut hourly: Vec<Vec<Sample>> = vec![Vec::new(); sizes.series];
    let mut chunk_bytes = 0usize;
    let mut samples = 0usize;
    let mut offset = 0u64;
    let mut t = start;
    while t < end {
        let mut write = FileWrite::default();
        for second in 0..10 {
            let base = t + second * 1_000_000;
            for s in 0..sizes.series {
                if random() % 5 == 0 {
                    let up = random() % 2 == 0;
                    raw[s] += if up { 1 } else { -1 };
                    f32s[s] += if up { 0.01 } else { -0.01 };
                }
                let time = match pattern {
                    Pattern::ScaledJitter => base + (random() % 2001) as i64 - 1000,
                    _ => base,
                };
                let value = match pattern {
                    Pattern::F32 => f64::from(f32s[s]),
                    _ => raw[s] as f64 * 0.01,
                };
                let sample = Sample {
                    time,
                    server_time: time,
                    value: Some(Value::Float(value)),
                    quality: Quality::GOOD,
                    flagged: false,
                };
                hourly[s].push(sample.clone());
                write.samples.entry(s as u32).or_default().push(sample);
                samples += 1;
            }
        }
        offset += 1;
        store
            .write(store.file_for(t), write, offset, offset)
            .unwrap();
        t += 10_000_000;
        if t % hour == 0 {
            for series in &mut hourly {
                chunk_bytes += twinloom::history::chunk::encode(series).len();
                series.clear();
            }
        }
    }
    let flushed = store.disk_bytes() as f64 / samples as f64;
    store.compact_closed(micros(SystemTime::now())).unwrap();
    let compacted = store.disk_bytes() as f64 / samples as f64;
    // The data reads back whole.
    let mut out = Vec::new();
    store
        .read(0, start..end, &mut out, &mut Vec::new())
        .unwrap();
    assert_eq!(
        out.len() as i64,
        sizes.hours * 3600,
        "series 0 reads back whole"
    );
    (flushed, compacted, chunk_bytes as f64 / samples as f64)
}
