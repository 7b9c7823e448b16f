//! OPC UA source benchmark (issue #26). Run with `cargo bench -p twinloom --bench opcua_source`.
//!
//! Two plants: (1) one upstream server with 20 000 items, (2) 20 upstream servers with 2 000
//! items each. Every upstream server is Twinloom's own OPC UA server in a child process
//! ([`support::upstream`]), all values changing every 100 ms (security None, anonymous). The
//! subject is a child process subscribing to every item, one of:
//! - **Twinloom**: the daemon's OPC UA sources (one per server, publishing interval 100 ms,
//!   sampling 100 ms) feeding its twin (`app::start` with `[[sources.opcua]]` and bindings);
//! - **async-opcua client** (the reference): one plain async-opcua session per server with one
//!   subscription of the same items and a callback that counts — what any client of the same stack
//!   pays for the same notifications.
//!
//! The two subjects alternate over [`ROUNDS`] rounds against the same upstream servers. Printed,
//! each as median (lowest–highest): notifications/s the subject took in, its CPU % of one core over
//! a fixed window after warm-up (the process's own accounting), CPU µs per notification, and peak
//! RSS; then the median of the per-round ratios of CPU per notification (Twinloom / client).
//! (No callgrind count of those processes: a whole subject process under valgrind runs ≈ 50×
//! slower and receives differently batched publish responses, so its instructions per
//! notification changed by 3× between runs; docs/opcua.md.)
//!
//! Then a stable instruction count per notification, in process under callgrind: recorded
//! PublishResponses of [`CHANGES_PER_MESSAGE`] data changes (Double values, Good, source
//! timestamps rising) encoded once; counted only inside one function (`--toggle-collect`), for
//! [`MESSAGES`] messages: the reference decodes each with async-opcua
//! (`PublishResponse::decode`); Twinloom decodes it and applies its NotificationMessage through the
//! source's notification path (`sources::opcua::NotificationPath`: client handles, readings,
//! `Twin::apply` with a subscriber draining, as the OPC UA server has). Printed: instructions per
//! notification of each and the ratio. `TWINLOOM_BENCH_PLANT=none` runs only this part.

// Tests and benchmarks drive peers and readers from outside the daemon; the rule that every
// task goes through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opcua::types::{MonitoredItemCreateRequest, TimestampsToReturn};

/// Rounds of Twinloom then the reference client.
const ROUNDS: usize = 3;
/// CPU is measured over this window, after [`WARM_UP`].
const WINDOW: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(3);
/// Monitored items per CreateMonitoredItems of the reference client.
const BATCH: usize = 1000;

/// Data changes per recorded PublishResponse of the per-notification count.
const CHANGES_PER_MESSAGE: usize = 1000;
/// PublishResponses decoded (and applied) in each callgrind run.
const MESSAGES: usize = 40;

/// A plant: how many upstream servers, with how many items each.
#[derive(Debug, Clone, Copy)]
struct Plant {
    servers: usize,
    items: usize,
}

const PLANTS: [Plant; 2] = [
    Plant {
        servers: 1,
        items: 20_000,
    },
    Plant {
        servers: 20,
        items: 2_000,
    },
];

/// The subject process's side: which subject, against which servers (`url ns` pairs); it ends
/// when stdin closes.
fn subject_main(kind: &str) {
    let servers: Vec<(String, u16)> = std::env::var("TWINLOOM_BENCH_SERVERS")
        .unwrap()
        .split(',')
        .map(|s| {
            let (url, ns) = s.split_once(' ').unwrap();
            (url.to_owned(), ns.parse().unwrap())
        })
        .collect();
    let items: usize = std::env::var("TWINLOOM_BENCH_ITEMS")
        .unwrap()
        .parse()
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (count, _keep): (Box<dyn Fn() -> u64 + Send + Sync>, Box<dyn std::any::Any>) =
            match kind {
                "twinloom" => twinloom_subject(&servers, items).await,
                _ => client_subject(&servers, items).await,
            };
        // Ready once a first value of every item has arrived.
        let total = (servers.len() * items) as u64;
        while count() < total {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("READY");
        std::io::stdout().flush().unwrap();
        // Each line on stdin asks for the count so far.
        let count = Arc::new(count);
        tokio::task::spawn_blocking(move || {
            for _ in std::io::stdin().lock().lines().map_while(Result::ok) {
                println!("COUNT {}", count());
                std::io::stdout().flush().unwrap();
            }
        })
        .await
        .unwrap();
        std::process::exit(0);
    });
}

type Counted = (Box<dyn Fn() -> u64 + Send + Sync>, Box<dyn std::any::Any>);

/// The daemon with one OPC UA source per server, every item bound; counts the twin's readings.
async fn twinloom_subject(servers: &[(String, u16)], items: usize) -> Counted {
    use std::fmt::Write as _;
    let state = tempfile::tempdir().unwrap();
    let properties = support::upstream::PROPERTIES;
    let mut text = format!(
        "[daemon]\nstate_dir = \"{}\"\n\n[[types]]\nname = \"Probe\"\nproperties = [\n",
        state.path().display()
    );
    for p in 0..properties {
        let _ = writeln!(text, "  {{ name = \"p{p}\", data_type = \"float\" }},");
    }
    text.push_str("]\n");
    for (s, (url, ns)) in servers.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[sources.opcua]]\nid = \"s{s}\"\nendpoint = \"{url}\"\nsecurity_policy = \"none\"\nsecurity_mode = \"none\"\ntrust_server_certificate = true\npublishing_interval = \"100ms\"\nsampling_interval = \"100ms\"\n"
        );
        for a in 0..items.div_ceil(properties) {
            let _ = write!(
                text,
                "\n[[assets]]\npath = \"s{s}/a{a}\"\ntype = \"Probe\"\nsource = \"s{s}\"\n[assets.bindings]\n"
            );
            for p in 0..properties.min(items - a * properties) {
                let _ = writeln!(text, "p{p} = {{ node_id = \"ns={ns};s=bench/a{a}/p{p}\" }}");
            }
        }
    }
    let config = twinloom::config::parse(&state.path().join("bench.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}"));
    let handles = twinloom::app::start(&config).await.unwrap();
    let twin = Arc::clone(&handles.twin);
    (
        Box::new(move || twin.stats().readings),
        Box::new((handles, state)),
    )
}

/// One plain async-opcua session per server with one subscription of every item; counts the
/// callback's calls.
async fn client_subject(servers: &[(String, u16)], items: usize) -> Counted {
    let received = Arc::new(AtomicU64::new(0));
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for (url, ns) in servers {
        let (client, session, subscription) =
            support::upstream::counting_session(url, Arc::clone(&received)).await;
        for chunk in (0..items).collect::<Vec<_>>().chunks(BATCH) {
            let requests: Vec<MonitoredItemCreateRequest> = chunk
                .iter()
                .map(|i| {
                    let mut request: MonitoredItemCreateRequest =
                        support::upstream::node(*ns, *i).into();
                    request.requested_parameters.sampling_interval = 100.0;
                    request.requested_parameters.queue_size = 2;
                    request
                })
                .collect();
            session
                .create_monitored_items(subscription, TimestampsToReturn::Source, requests)
                .await
                .unwrap();
        }
        keep.push(Box::new((client, session)));
    }
    (
        Box::new(move || received.load(Ordering::Relaxed)),
        Box::new(keep),
    )
}

/// A running subject process.
struct Subject {
    child: Child,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Subject {
    fn start(kind: &str, servers: &str, items: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("TWINLOOM_BENCH_SUBJECT", kind)
            .env("TWINLOOM_BENCH_SERVERS", servers)
            .env("TWINLOOM_BENCH_ITEMS", items.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = lines.next().and_then(Result::ok);
        assert_eq!(ready.as_deref(), Some("READY"), "{kind} subject");
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn count(&mut self) -> u64 {
        writeln!(self.stdin).unwrap();
        self.stdin.flush().unwrap();
        let line = self.lines.next().unwrap().unwrap();
        line.strip_prefix("COUNT ").unwrap().parse().unwrap()
    }
}

impl Drop for Subject {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One subject's figures in one round.
struct Measured {
    rate: f64,
    cpu: f64,
    rss: f64,
}

impl Measured {
    /// CPU µs per notification.
    fn cost(&self) -> f64 {
        self.cpu / 100.0 / self.rate * 1e6
    }
}

fn measure(runtime: &tokio::runtime::Runtime, kind: &str, servers: &str, items: usize) -> Measured {
    let mut subject = Subject::start(kind, servers, items);
    std::thread::sleep(WARM_UP);
    let pid = subject.child.id();
    let before = subject.count();
    let (cpu, wall) = runtime.block_on(support::cpu_percent_over(pid, || {
        tokio::time::sleep(WINDOW)
    }));
    let rate = (subject.count() - before) as f64 / wall.as_secs_f64();
    Measured {
        rate,
        cpu,
        rss: support::peak_rss_mib(pid),
    }
}

fn report(name: &str, rounds: &[Measured], expected: usize) {
    let column = |f: fn(&Measured) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    println!("  {name}:");
    println!(
        "    notifications taken in  {} /s   (every value changes every 100 ms: {expected} /s)",
        support::figure_text(&column(|m| m.rate), 0)
    );
    println!(
        "    CPU                     {} % of one core",
        support::figure_text(&column(|m| m.cpu), 1)
    );
    println!(
        "    CPU per notification    {} µs",
        support::figure_text(&column(Measured::cost), 2)
    );
    println!(
        "    peak RSS                {} MiB",
        support::figure_text(&column(|m| m.rss), 1)
    );
}

fn main() {
    if let Ok(kind) = std::env::var("TWINLOOM_BENCH_SUBJECT") {
        return subject_main(&kind);
    }
    if let Ok(items) = std::env::var("TWINLOOM_BENCH_UPSTREAM") {
        return support::upstream::serve(items.parse().unwrap());
    }
    if let Ok(kind) = std::env::var("TWINLOOM_BENCH_NOTIFICATIONS") {
        return notification_workload(&kind);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // A plant's index, or `none` for the per-notification count alone.
    let only = std::env::var("TWINLOOM_BENCH_PLANT").ok();
    for (index, plant) in PLANTS.iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != index.to_string()) {
            continue;
        }
        support::heading(&format!(
            "OPC UA source: {} server(s) × {} items, every value changing every 100 ms; {ROUNDS} alternating rounds, median (lowest–highest)",
            plant.servers, plant.items
        ));
        let upstream: Vec<UpstreamProcess> = (0..plant.servers)
            .map(|_| UpstreamProcess::start(plant.items))
            .collect();
        let servers = upstream
            .iter()
            .map(|u| format!("{} {}", u.url, u.ns))
            .collect::<Vec<_>>()
            .join(",");
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            ours.push(measure(&runtime, "twinloom", &servers, plant.items));
            theirs.push(measure(&runtime, "client", &servers, plant.items));
        }
        let expected = plant.servers * plant.items * 10;
        report("Twinloom (OPC UA sources → twin)", &ours, expected);
        report("async-opcua client (reference)", &theirs, expected);
        let costs = support::Alternated {
            a: theirs.iter().map(Measured::cost).collect(),
            b: ours.iter().map(Measured::cost).collect(),
        };
        println!(
            "  ratio of CPU per notification, Twinloom / client: {}",
            costs.ratio_text(2)
        );
    }
    instructions_per_notification();
}

/// The per-notification count: callgrind over [`notification_workload`], each side counted only
/// inside its step function.
fn instructions_per_notification() {
    support::heading(&format!(
        "OPC UA source, per notification (callgrind, in process): {MESSAGES} PublishResponses of {CHANGES_PER_MESSAGE} data changes"
    ));
    let count = |kind: &str, function: &str| {
        support::callgrind_instructions_in(
            &[("TWINLOOM_BENCH_NOTIFICATIONS", kind.to_owned())],
            Some(function),
        )
    };
    let notifications = (MESSAGES * CHANGES_PER_MESSAGE) as f64;
    match (
        count("decode", "*decode_step*"),
        count("apply", "*apply_step*"),
    ) {
        (Ok(decode), Ok(apply)) => {
            println!(
                "  async-opcua decode (reference)          {:>8.1} instructions per notification",
                decode as f64 / notifications
            );
            println!(
                "  Twinloom: decode + notification path    {:>8.1} instructions per notification",
                apply as f64 / notifications
            );
            println!(
                "  ratio, Twinloom / reference: {:.2}",
                apply as f64 / decode.max(1) as f64
            );
        }
        (Err(e), _) | (_, Err(e)) => println!("  not counted: {e}"),
    }
}

/// A recorded PublishResponse: `CHANGES_PER_MESSAGE` data changes (client handles 1…, Double
/// values changing with `step`, Good, source timestamps rising with `step`), encoded.
fn publish_response(step: usize) -> Vec<u8> {
    use opcua::types::{
        BinaryEncodable, DataChangeNotification, DataValue, DateTime, ExtensionObject,
        MonitoredItemNotification, NotificationMessage, PublishResponse, Variant,
    };
    let at = DateTime::from(133_485_408_000_000_000 + step as i64 * 1_000_000);
    let changes: Vec<MonitoredItemNotification> = (0..CHANGES_PER_MESSAGE)
        .map(|i| MonitoredItemNotification {
            client_handle: i as u32 + 1,
            value: DataValue {
                value: Some(Variant::Double(i as f64 * 0.01 + step as f64 * 0.5)),
                source_timestamp: Some(at),
                ..Default::default()
            },
        })
        .collect();
    let response = PublishResponse {
        subscription_id: 1,
        notification_message: NotificationMessage {
            sequence_number: step as u32 + 1,
            publish_time: at,
            notification_data: Some(vec![ExtensionObject::from_message(
                DataChangeNotification {
                    monitored_items: Some(changes),
                    diagnostic_infos: None,
                },
            )]),
        },
        ..Default::default()
    };
    let context = opcua::types::ContextOwned::default();
    let mut bytes = Vec::new();
    response.encode(&mut bytes, &context.context()).unwrap();
    bytes
}

/// The workload one callgrind run counts (`decode`: the reference, `apply`: Twinloom).
fn notification_workload(kind: &str) {
    use opcua::types::{BinaryDecodable, ContextOwned, DecodingOptions, NamespaceMap};
    let messages: Vec<Vec<u8>> = (0..MESSAGES).map(publish_response).collect();
    let context = ContextOwned::new_default(
        NamespaceMap::new(),
        DecodingOptions {
            max_array_length: 100_000,
            ..DecodingOptions::default()
        },
    );
    let context = context.context();
    let decode = |bytes: &[u8]| {
        opcua::types::PublishResponse::decode(&mut std::io::Cursor::new(bytes), &context).unwrap()
    };
    match kind {
        "decode" => {
            for bytes in &messages {
                decode_step(bytes, &decode);
            }
        }
        _ => {
            let mut text = String::from(
                "[[sources.opcua]]\nid = \"up\"\nendpoint = \"opc.tcp://127.0.0.1:4840/\"\n\
                 [[types]]\nname = \"Probe\"\nproperties = [{ name = \"v\", data_type = \"float\" }]\n",
            );
            for i in 0..CHANGES_PER_MESSAGE {
                text.push_str(&format!(
                    "[[assets]]\npath = \"bench/a{i}\"\ntype = \"Probe\"\nsource = \"up\"\n\
                     bindings.v = {{ node_id = \"ns=2;i={i}\" }}\n"
                ));
            }
            let config =
                twinloom::config::parse(std::path::Path::new("bench.toml"), &text).unwrap();
            let twin = Arc::new(twinloom::twin::Twin::new(
                Arc::new(config.twin_model()),
                &config.twin,
            ));
            let by_handle = (0..CHANGES_PER_MESSAGE)
                .map(|i| {
                    vec![
                        twin.model()
                            .property_by_path(&format!("bench/a{i}/v"))
                            .unwrap(),
                    ]
                })
                .collect();
            let mut path =
                twinloom::sources::opcua::NotificationPath::new(Arc::clone(&twin), by_handle);
            let mut subscriber = twin.subscribe(twinloom::twin::Filter::All, 4096);
            let mut changes = Vec::new();
            for bytes in &messages {
                apply_step(bytes, &decode, &mut path);
                changes.clear();
                subscriber.try_recv(&mut changes);
            }
            assert_eq!(
                twin.stats().changes as usize,
                MESSAGES * CHANGES_PER_MESSAGE
            );
        }
    }
}

/// The reference's counted step: async-opcua decodes one PublishResponse (and drops it).
#[inline(never)]
fn decode_step(bytes: &[u8], decode: &dyn Fn(&[u8]) -> opcua::types::PublishResponse) {
    drop(std::hint::black_box(decode(bytes)));
}

/// Twinloom's counted step: decode one PublishResponse and apply its NotificationMessage through
/// the source's notification path.
#[inline(never)]
fn apply_step(
    bytes: &[u8],
    decode: &dyn Fn(&[u8]) -> opcua::types::PublishResponse,
    path: &mut twinloom::sources::opcua::NotificationPath,
) {
    path.apply(decode(bytes).notification_message);
}

/// An upstream server: this binary re-run as [`support::upstream::serve`].
struct UpstreamProcess {
    child: Child,
    url: String,
    ns: u16,
}

impl UpstreamProcess {
    fn start(items: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("TWINLOOM_BENCH_UPSTREAM", items.to_string())
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
        Self { child, url, ns }
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
