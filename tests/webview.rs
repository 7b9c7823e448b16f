//! The live web view (issue #31, `docs/webview.md`): its event stream over a raw connection, and
//! the page in a real browser (Debian's chromium through chromedriver and Python selenium,
//! `tests/peers/webview_driver.py`) against a simulated PLC.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use twinloom::twin::{Reading, Value};
use twinloom_sim::modbus::{ModbusServer, SimDevice};

/// The demo's operator: user `operator`, password `operator`.
const OPERATOR_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$iLN9EszmVWc/fLUWzm/+gg$fthAxEvfbax+8ALqIe3/2QSWnzLEFB1XdFIBxEdqL9c";

/// A tank level (holding 0, %) and a heater setpoint (holding 10) on `plc`, armed, with admin
/// HTTP on `admin` and the state in `state`; `request_timeout` of admin HTTP as given; `extra`
/// appended to the configuration's text.
fn config(
    plc: SocketAddr,
    admin: &str,
    state: &Path,
    request_timeout: &str,
    extra: &str,
) -> twinloom::config::Config {
    common::config(&format!(
        r#"
[daemon]
state_dir = "{state}"

[admin_http]
listen = "{admin}"
operators = [{{ name = "operator", password_hash = "{OPERATOR_HASH}" }}]
limits = {{ request_timeout = "{request_timeout}" }}

[control]
armed = true

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "50ms"
timeout = "200ms"
backoff_min = "50ms"
backoff_max = "200ms"

[[types]]
name = "Tank"
properties = [{{ name = "level", data_type = "float", unit = "%" }}]

[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/tank"
type = "Tank"
source = "plc"
bindings.level = {{ table = "holding", address = 0 }}

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}
{extra}"#,
        state = state.display(),
    ))
}

async fn plc(level: u16) -> (Arc<SimDevice>, ModbusServer) {
    let device = SimDevice::new();
    device.set_holding(0, &[level]);
    let server = common::modbus_tcp(&device).await;
    (device, server)
}

/// An open `GET /api/events?ids=…` on `admin`: reads its events one by one.
struct EventStream {
    reader: BufReader<tokio::net::TcpStream>,
}

impl EventStream {
    /// Opens the stream; returns its status line's code and, for 200, the stream.
    async fn open(admin: SocketAddr, ids: &str) -> (u16, Option<Self>) {
        let mut stream = tokio::net::TcpStream::connect(admin).await.unwrap();
        let request = format!("GET /api/events?ids={ids} HTTP/1.1\r\nHost: {admin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, (status == 200).then_some(Self { reader }))
    }

    /// The next event's data as JSON (keep-alive comments and the chunked framing skipped), or
    /// `None` when the stream ends; at most 10 s.
    async fn next(&mut self) -> Option<serde_json::Value> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let mut line = String::new();
                if self.reader.read_line(&mut line).await.ok()? == 0 {
                    return None;
                }
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    return Some(serde_json::from_str(data).unwrap());
                }
            }
        })
        .await
        .expect("an event within 10 s")
    }
}

/// The stream starts with a snapshot of the properties asked for, and only those; a burst of
/// 1000 changes reaches the client coalesced: events at least 100 ms apart (≤ 10 updates/s per
/// property), the last one carrying the last value. It outlives `request_timeout`, refuses ids
/// that are no property, and ends at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_starts_with_a_snapshot_and_coalesces_changes() {
    let (device, server) = plc(420).await;
    let state = tempfile::tempdir().unwrap();
    let handles = common::start(&config(
        server.addr(),
        "127.0.0.1:0",
        state.path(),
        "1s",
        "",
    ))
    .await;
    let admin = handles.admin_http.unwrap();
    let level = common::property(&handles, "site/tank/level");
    common::wait_for(&handles, level, Duration::from_secs(5), |s| {
        s.quality.is_good()
    })
    .await;

    assert_eq!(EventStream::open(admin, "1,99999").await.0, 400);
    assert_eq!(EventStream::open(admin, "x").await.0, 400);

    let (status, stream) = EventStream::open(admin, &level.0.to_string()).await;
    assert_eq!(status, 200);
    let mut stream = stream.unwrap();
    let snapshot = stream.next().await.unwrap();
    assert_eq!(snapshot["snapshot"], true);
    let samples = snapshot["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 1, "{snapshot}");
    assert_eq!(samples[0][0], level.0);
    assert_eq!(samples[0][1], 420.0);
    assert_eq!(samples[0][2], "good");

    // Past request_timeout (1 s): the stream is not cut.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The PLC holds the burst's last value too, so the source's polls end on it as well.
    device.set_holding(0, &[1000]);
    for i in 1..=1000u32 {
        handles
            .twin
            .apply(&[Reading::value(level, Value::Float(f64::from(i)), None)]);
    }
    let mut times = Vec::new();
    loop {
        let event = stream
            .next()
            .await
            .expect("the stream goes on past request_timeout");
        times.push(Instant::now());
        assert_eq!(event["snapshot"], false);
        let samples = event["samples"].as_array().unwrap();
        assert!(samples.iter().all(|s| s[0] == level.0), "{event}");
        if samples.iter().any(|s| s[1] == 1000.0) {
            break;
        }
        assert!(times.len() < 20, "1000 changes took {} events", times.len());
    }
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= Duration::from_millis(90),
            "events {:?} apart",
            pair[1] - pair[0]
        );
    }

    let stopped = Instant::now();
    handles.supervisor.shutdown(Duration::from_secs(3)).await;
    let mut rest = Vec::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(5), stream.reader.read_to_end(&mut rest)).await;
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "the stream outlived the shutdown"
    );
    server.stop().await;
}

/// A client that asks for 2000 properties and never reads is dropped: once the socket's
/// buffers are full its writes make no progress, and after `stream_write_stall` (1 s here) the
/// connection is closed and its fan-out subscription gone, while the twin changes all 2000
/// every 50 ms; the endpoint keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_stream_is_dropped() {
    let (_device, server) = plc(0).await;
    let mut text = format!(
        "[admin_http]\nlisten = \"127.0.0.1:0\"\nlimits = {{ stream_write_stall = \"1s\" }}\n\n\
         [[sources.modbus]]\nid = \"plc\"\ntcp = \"{}\"\npoll = \"1s\"\n\n\
         [[types]]\nname = \"Wide\"\nproperties = [",
        server.addr()
    );
    for p in 0..100 {
        text.push_str(&format!("{{ name = \"p{p}\", data_type = \"float\" }},"));
    }
    text.push_str("]\n");
    for a in 0..20 {
        text.push_str(&format!(
            "\n[[assets]]\npath = \"wide/a{a}\"\ntype = \"Wide\"\nsource = \"plc\"\n"
        ));
        for p in 0..100 {
            text.push_str(&format!(
                "bindings.p{p} = {{ table = \"holding\", address = {p} }}\n"
            ));
        }
    }
    let handles = common::start(&common::config(&text)).await;
    let admin = handles.admin_http.unwrap();
    // The control gate's subscription (and any other) before the stream's.
    let before = handles.twin.stats().subscribers;
    let ids: Vec<String> = (0..2000).map(|i| i.to_string()).collect();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(admin).await.unwrap();
    let request = format!(
        "GET /api/events?ids={} HTTP/1.1\r\nHost: {admin}\r\n\r\n",
        ids.join(",")
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    common::eventually(
        Duration::from_secs(5),
        || handles.twin.stats().subscribers == before + 1,
        || "the stream never subscribed".to_owned(),
    )
    .await;
    let properties: Vec<_> = handles
        .twin
        .model()
        .properties()
        .iter()
        .enumerate()
        .map(|(i, _)| twinloom::twin::PropertyId(i as u32))
        .collect();
    let started = Instant::now();
    let mut step = 0.0;
    while handles.twin.stats().subscribers > before {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a client that never reads was not dropped"
        );
        step += 1.0;
        let readings: Vec<Reading> = properties
            .iter()
            .map(|&id| Reading::value(id, Value::Float(step * 1000.0 + f64::from(id.0)), None))
            .collect();
        handles.twin.apply(&readings);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "a client that never reads dropped after {:?}",
        started.elapsed()
    );
    assert_eq!(common::http(admin, "GET", "/healthz", None).await.0, 200);
    drop(stream);
    handles.supervisor.shutdown(Duration::from_secs(3)).await;
    server.stop().await;
}

/// `/api/trend` over a day of history (a sample every 10 s; one bad sample, then an hour with
/// nothing): at most 2 × width points, each column's smallest and largest value kept, the bad
/// sample a break and the hour after it empty (a gap, not a line); 400 for a width out of range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trend_endpoint_decimates_a_day_of_history_to_its_columns() {
    let (_device, server) = plc(0).await;
    let state = tempfile::tempdir().unwrap();
    let handles = common::start(&config(
        server.addr(),
        "127.0.0.1:0",
        state.path(),
        "30s",
        "\n[history]\n",
    ))
    .await;
    let admin = handles.admin_http.unwrap();
    let level = common::property(&handles, "site/tank/level");
    const STEP: i64 = 10_000;
    const DAY: i64 = 86_400_000;
    const WIDTH: i64 = 300;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let from = (now - DAY - 3_600_000) / 1000 * 1000;
    let at = |i: i64| std::time::UNIX_EPOCH + Duration::from_millis((from + i * STEP) as u64);
    // Consecutive values always differ, and none is the PLC's 0 (the twin passes on changes
    // only, and the source's polls of 0 come in between).
    let value = |i: i64| ((i * 7919) % 1000) as f64 + 0.5;
    let (bad, resumed) = (5000, 5360);
    let mut expected: Vec<Option<(f64, f64)>> = vec![None; WIDTH as usize];
    for i in 0..DAY / STEP {
        if i == bad {
            handles.twin.apply(&[Reading {
                property: level,
                outcome: Err(twinloom::twin::QualityReason::CommunicationFailure),
                source_time: Some(at(i)),
                quality: None,
            }]);
        } else if !(bad..resumed).contains(&i) {
            handles
                .twin
                .apply(&[Reading::value(level, Value::Float(value(i)), Some(at(i)))]);
            let column = (i * STEP * WIDTH / DAY) as usize;
            let v = value(i);
            expected[column] = Some(expected[column].map_or((v, v), |(a, b)| (a.min(v), b.max(v))));
        }
    }
    let path = format!(
        "/api/trend?property={}&from={from}&to={}&width={WIDTH}",
        level.0,
        from + DAY
    );
    // The historian takes the change log's records as they come: wait until it holds them all.
    let columns = |points: &[(i64, Option<f64>, Option<f64>)]| {
        let mut seen: Vec<Option<(f64, f64)>> = vec![None; WIDTH as usize];
        let mut breaks = Vec::new();
        for &(t, min, max) in points {
            let column = ((t - from) * WIDTH / DAY) as usize;
            match (min, max) {
                (Some(min), Some(max)) => {
                    assert!(seen[column].is_none(), "two values in column {column}");
                    seen[column] = Some((min, max));
                }
                (None, None) => breaks.push(t),
                other => panic!("half a point: {other:?}"),
            }
        }
        (seen, breaks)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (points, breaks) = loop {
        let (status, body) = common::http(admin, "GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        let points = trend_points(&body);
        let (seen, breaks) = columns(&points);
        if seen == expected || Instant::now() > deadline {
            assert_eq!(seen, expected, "history never held the day as written");
            break (points, breaks);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        points.len() <= 2 * WIDTH as usize,
        "{} points for {WIDTH} columns",
        points.len()
    );
    // The bad sample keeps its last value's source time: the break is there, and nothing is
    // drawn until the values resume an hour later.
    assert_eq!(breaks.len(), 1, "{breaks:?}");
    assert!((from + (bad - 1) * STEP..=from + bad * STEP).contains(&breaks[0]));
    assert!(
        points
            .iter()
            .all(|p| p.1.is_none() || !(from + bad * STEP..from + resumed * STEP).contains(&p.0)),
        "a value in the gap"
    );
    eprintln!(
        "a day of {} samples: {} points for {WIDTH} columns",
        DAY / STEP,
        points.len()
    );

    let width = format!("/api/trend?property={}&width=0", level.0);
    assert_eq!(common::http(admin, "GET", &width, None).await.0, 400);
    handles.supervisor.shutdown(Duration::from_secs(3)).await;
    server.stop().await;
}

/// [`config`] with history, the probe plugin `guard` (its calls fault while the tank level is
/// above 500; quarantined at the first fault) and an interlock over the tank level guarding the
/// heater's setpoint.
fn config_with_plugin(
    plc: SocketAddr,
    admin: &str,
    state: &Path,
    probe: &Path,
) -> twinloom::config::Config {
    config(
        plc,
        admin,
        state,
        "30s",
        &format!(
            r#"
[history]

[[plugins]]
name = "guard"
file = "{probe}"
subscribe = [{{ assets = "site/tank", properties = ["level"] }}]
quarantine_after = 1
deadline = "10s"
config = {{ behaviour = "panic-above", setpoint = 500.0 }}

[[control.interlocks]]
name = "tank-not-full"
applies_to = ["site/heater/setpoint"]
condition = "site/tank/level < 900"
"#,
            probe = probe.display(),
        ),
    )
}

/// The points of a `/api/trend` answer: (time ms, min, max), `None` for a break.
fn trend_points(body: &str) -> Vec<(i64, Option<f64>, Option<f64>)> {
    let answer: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(answer["history"], true, "{body}");
    let column = |key: &str| answer[key].as_array().unwrap().clone();
    let (t, min, max) = (column("t"), column("min"), column("max"));
    (0..t.len())
        .map(|i| (t[i].as_i64().unwrap(), min[i].as_f64(), max[i].as_f64()))
        .collect()
}

/// The page in a real browser: the plant's assets; a value changed on the PLC shown within 1 s;
/// a plugin's state, quarantined with its fault when its input faults it, running again after
/// `Clear quarantine` from the page; an interlock with its truth and inputs; a property's trend
/// holding a value from history and the live one; a stopped source's property bad with its
/// reason; disarm from the page audited and in the page's audit table; arm refused from another
/// origin and without login, carried out with it; the page live again after the daemon
/// restarts; a plant of 10 000 properties listed and filtered within bounds, with only the rows
/// in view in the document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_plant_live_and_controls_it_in_a_real_browser() {
    let began = Instant::now();
    let (device, server) = plc(420).await;
    let state = tempfile::tempdir().unwrap();
    let probe = common::probe_component().await;
    eprintln!("{:?}: the probe plugin built", began.elapsed());
    let handles = common::start(&config_with_plugin(
        server.addr(),
        "127.0.0.1:0",
        state.path(),
        &probe,
    ))
    .await;
    let admin = handles.admin_http.unwrap();
    let mut browser = common::Browser::start("webview").await;
    let assets = handles.twin.model().assets().len();
    let row = |path: &str, cell: &str| format!(r#".row[data-path="{path}"] .{cell}"#);

    browser.send(&format!("OPEN\thttp://{admin}/")).await;
    browser
        .wait(10, "#summary", &format!("^{assets} assets"))
        .await;
    for asset in handles.twin.model().assets() {
        browser
            .wait(5, &format!(r#".row[data-asset="{}"]"#, asset.path), ".")
            .await;
    }
    browser
        .wait(10, &row("site/tank/level", "value"), "^420$")
        .await;
    browser
        .wait(1, &row("site/tank/level", "unit"), "^%$")
        .await;
    browser
        .wait(1, &row("site/tank/level", "quality"), "^good$")
        .await;
    browser.wait(5, "#armed", "^armed$").await;
    browser.send("SHOT\tplant").await;

    // A value changed on the PLC: on the page within 1 s (poll 50 ms, events ≤ 10/s).
    let changed = Instant::now();
    device.set_holding(0, &[421]);
    browser
        .wait(5, &row("site/tank/level", "value"), "^421$")
        .await;
    let shown = changed.elapsed();
    eprintln!("a PLC change shown on the page after {shown:?}");
    assert!(shown < Duration::from_secs(1), "shown after {shown:?}");

    eprintln!("{:?}: The plugin runs", began.elapsed());
    // The plugin runs, with its call rate; the interlock holds, with its input.
    let plugin = |cell: &str| format!(r#"#plugins tr[data-plugin="guard"] {cell}"#);
    browser.wait(10, &plugin(".state"), "^running$").await;
    browser.wait(10, &plugin(".rate"), r"^\d+\.\d$").await;
    browser
        .wait(
            10,
            r#"#interlocks li[data-interlock="tank-not-full"]"#,
            r"^tank-not-full: holds [\s\S]*site/tank/level = 421 \(good\)",
        )
        .await;
    // Its input above 500: the plugin faults and is quarantined, with its fault shown.
    device.set_holding(0, &[600]);
    browser.wait(10, &plugin(".state"), "^quarantined$").await;
    browser
        .wait(1, r#"#plugins tr[data-fault="guard"]"#, "plugin trapped")
        .await;
    browser.send("SHOT	quarantined").await;
    // Back below 500, `Clear quarantine` (an operator's, like Arm): running again.
    device.set_holding(0, &[433]);
    browser
        .wait(5, &row("site/tank/level", "value"), "^433$")
        .await;
    browser.send("TYPE\t#user\toperator").await;
    browser.send("TYPE\t#password\toperator").await;
    browser
        .send(&format!("CLICK\t{}", plugin("button.clear")))
        .await;
    browser.wait(10, "#control-msg", "^cleared$").await;
    browser.wait(10, &plugin(".state"), "^running$").await;
    browser.send("TYPE\t#user\t").await;
    browser.send("TYPE\t#password\t").await;

    eprintln!("{:?}: A trend", began.elapsed());
    // A trend: a new lowest value (300, so that it is its column's minimum in any chart) reaches
    // history, the PLC moves on to 301, the property's row is clicked: the chart holds both
    // (history, then the live value).
    device.set_holding(0, &[300]);
    let level = common::property(&handles, "site/tank/level");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The last minute in 4000 columns of 15 ms: every value the PLC held is a column's.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let path = format!(
            "/api/trend?property={}&from={}&to={}&width=4000",
            level.0,
            now - 60_000,
            now + 1000
        );
        let (status, body) = common::http(admin, "GET", &path, None).await;
        assert_eq!(status, 200, "{body}");
        if trend_points(&body).iter().any(|p| p.1 == Some(300.0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "300 never reached history: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    device.set_holding(0, &[301]);
    browser
        .wait(5, &row("site/tank/level", "value"), "^301$")
        .await;
    browser
        .send(&format!("CLICK\t{}", row("site/tank/level", "name")))
        .await;
    browser.wait(10, "#trend-note", "^history, ").await;
    let charted = browser
        .send(
            "SCRIPT\tconst done = arguments[arguments.length - 1]; const until = Date.now() + 5000; \
             (function look() { const t = window.twinloomTrend; \
               const has = (v) => t && t.chart && (t.data[1].includes(v) || t.data[2].includes(v)); \
               if (has(300) && has(301)) done('both'); \
               else if (Date.now() > until) done(JSON.stringify(t && t.data)); \
               else setTimeout(look, 20); })();",
        )
        .await;
    assert_eq!(charted, "\"both\"");
    browser.send("SHOT\ttrend").await;

    eprintln!("{:?}: A stopped source", began.elapsed());
    // A stopped source: its properties bad with the reason, the source down.
    server.stop().await;
    let quality = browser
        .wait(10, &row("site/tank/level", "quality"), "^bad: ")
        .await;
    assert!(
        ["no_connection", "communication_failure", "timeout"]
            .iter()
            .any(|reason| quality.ends_with(reason)),
        "{quality}"
    );
    browser
        .wait(1, &row("site/tank/level", "value"), "^301$")
        .await;
    browser
        .wait(5, r#"#sources li[data-source="plc"]"#, "down")
        .await;

    // Disarm from the page: carried out, audited, and in the page's audit table.
    browser.send("CLICK\t#disarm").await;
    browser.wait(10, "#armed", "^disarmed$").await;
    assert!(!handles.control.is_armed());
    browser
        .wait(10, r#"#audit tr[data-kind="disarm"]"#, "disarm anonymous")
        .await;

    // Arm from another origin (localhost is another site than 127.0.0.1): refused.
    browser
        .send(&format!("OPEN\thttp://localhost:{}/healthz", admin.port()))
        .await;
    let sent = browser
        .send(&format!(
            "SCRIPT\tconst done = arguments[arguments.length - 1]; \
             fetch('http://{admin}/control/arm', {{method: 'POST', mode: 'no-cors'}}) \
             .then(() => done('sent'), (e) => done('failed ' + e));"
        ))
        .await;
    assert_eq!(sent, "\"sent\"");
    assert_eq!(
        common::metric(
            &handles.metrics.encode(),
            r#"twinloom_admin_http_refusals_total{reason="cross-site"}"#
        ),
        1.0
    );
    assert!(!handles.control.is_armed());

    // Arm without login: refused; with the operator's: armed.
    browser.send(&format!("OPEN\thttp://{admin}/")).await;
    browser.send("CLICK\t#arm").await;
    browser
        .wait(10, "#control-msg", r"arm refused \(401\)")
        .await;
    assert!(!handles.control.is_armed());
    browser.send("TYPE\t#user\toperator").await;
    browser.send("TYPE\t#password\toperator").await;
    browser.send("CLICK\t#arm").await;
    browser.wait(15, "#armed", "^armed$").await;
    assert!(handles.control.is_armed());

    let journal = twinloom::runtime::journal::verify_collect(&state.path().join("audit")).unwrap();
    let users = |kind: &str| -> Vec<String> {
        journal
            .records
            .iter()
            .filter(|r| r.get("kind").is_some_and(|k| k == kind))
            .map(|r| {
                r.get("user")
                    .and_then(|u| u.as_str())
                    .unwrap_or("")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(users("disarm"), ["anonymous"]);
    assert!(
        users("arm").contains(&"operator".to_owned()),
        "{:?}",
        users("arm")
    );

    eprintln!(
        "{:?}: The daemon restarts (on the same port",
        began.elapsed()
    );
    // The daemon restarts (on the same port, with a new PLC): the page goes live again.
    handles.supervisor.shutdown(Duration::from_secs(3)).await;
    browser.wait(10, "#conn", "^reconnecting$").await;
    let (_device, server) = plc(77).await;
    let handles = common::start(&config_with_plugin(
        server.addr(),
        &admin.to_string(),
        state.path(),
        &probe,
    ))
    .await;
    browser
        .wait(15, &row("site/tank/level", "value"), "^77$")
        .await;
    browser
        .wait(5, &row("site/tank/level", "quality"), "^good$")
        .await;
    browser.wait(5, "#conn", "^live$").await;
    browser.send("SHOT\trestarted").await;

    eprintln!("{:?}: A plant of 10 000 properties", began.elapsed());
    // A plant of 10 000 properties: the page lists it at once, keeps only the rows in view in
    // the document, and the filter finds one property with its snapshot (bad: its source's
    // address refuses connections).
    let mut big = String::from(
        "[admin_http]\nlisten = \"127.0.0.1:0\"\n\n[[sources.modbus]]\nid = \"none\"\ntcp = \"127.0.0.1:1\"\n\n[[types]]\nname = \"Cell\"\nproperties = [",
    );
    for p in 0..100 {
        big.push_str(&format!("{{ name = \"p{p}\", data_type = \"float\" }},"));
    }
    big.push_str("]\n");
    for a in 0..100 {
        big.push_str(&format!(
            "\n[[assets]]\npath = \"big/a{a}\"\ntype = \"Cell\"\nsource = \"none\"\n"
        ));
        for p in 0..100 {
            big.push_str(&format!(
                "bindings.p{p} = {{ table = \"holding\", address = {p} }}\n"
            ));
        }
    }
    let large = common::start(&common::config(&big)).await;
    let large_admin = large.admin_http.unwrap();
    let opened = Instant::now();
    browser.send(&format!("OPEN\thttp://{large_admin}/")).await;
    browser
        .wait(10, "#summary", "^100 assets, 10000 properties")
        .await;
    browser
        .wait(5, &row("big/a0/p0", "quality"), "^bad: ")
        .await;
    let listed = opened.elapsed();
    let in_document = browser
        .send("SCRIPT\targuments[arguments.length - 1](document.querySelectorAll('#list .row').length)")
        .await;
    let in_document: usize = in_document.parse().unwrap();
    assert!(
        (1..100).contains(&in_document),
        "{in_document} rows in the document"
    );
    let typed = Instant::now();
    browser.send("TYPE\t#filter\ta73/p42").await;
    browser
        .wait(5, &row("big/a73/p42", "quality"), "^bad: ")
        .await;
    let filtered = typed.elapsed();
    eprintln!(
        "10 000 properties: listed with values after {listed:?}, filtered after {filtered:?}"
    );
    assert!(listed < Duration::from_secs(5), "listed after {listed:?}");
    assert!(
        filtered < Duration::from_secs(2),
        "filtered after {filtered:?}"
    );
    browser.send("SHOT\tlarge-plant").await;
    large.supervisor.shutdown(Duration::from_secs(3)).await;

    drop(browser.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), browser.child.wait()).await;
    handles.supervisor.shutdown(Duration::from_secs(3)).await;
    server.stop().await;
}
