//! History end to end: changes the twin accepts go through the change log into the historian and
//! come back over OPC UA HistoryRead to asyncua (an implementation independent of async-opcua):
//! exactly the recorded changes across chunk and file boundaries, with qualities and status
//! codes; continuation points; bounds; `Good_NoData`; ReadAtTime on a stepped and a sloped
//! variable; a viewer outside `readers` refused.

// Tests drive peers from outside the daemon; the supervisor rule (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use twinloom::change_log::{Reader, Record};
use twinloom::northbound::opcua_server::node_manager::status_code;
use twinloom::twin::{Quality, QualityReason, Reading, Value};

const WAIT: Duration = Duration::from_secs(20);

/// operator / operator-pw and viewer / viewer-pw.
fn users() -> String {
    let hash = |pw: &str| twinloom::northbound::login::hash_password(pw).unwrap();
    format!(
        r#"users = [
  {{ name = "operator", role = "operator", password_hash = "{}" }},
  {{ name = "viewer", role = "viewer", password_hash = "{}" }},
]"#,
        hash("operator-pw"),
        hash("viewer-pw")
    )
}

/// An asyncua client process (tests/peers/opcua_client.py), driven line by line.
struct Peer {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// The asyncua client (tests/peers/opcua_client.py), SecurityPolicy None.
    fn start(url: &str, user: &str, password: &str, workdir: &Path) -> Self {
        let mut command = std::process::Command::new(common::python());
        command.arg(common::repo().join("tests/peers/opcua_client.py"));
        Self::start_with(command, url, user, password, workdir)
    }

    /// The node-opcua client (tests/peers/node/opcua_client.js), SecurityPolicy None.
    fn start_node(url: &str, user: &str, password: &str, workdir: &Path) -> Self {
        let mut command = std::process::Command::new("node");
        command.arg(common::repo().join("tests/peers/node/opcua_client.js"));
        Self::start_with(command, url, user, password, workdir)
    }

    fn start_with(
        mut command: std::process::Command,
        url: &str,
        user: &str,
        password: &str,
        workdir: &Path,
    ) -> Self {
        use std::io::BufRead;
        let mut child = command
            .args([url, user, password])
            .arg(workdir)
            .arg("None")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("asyncua client starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let peer = Self {
            child,
            stdin,
            lines,
        };
        assert_eq!(peer.next()["connected"], true);
        peer
    }

    fn ask(&mut self, command: &str) -> Json {
        use std::io::Write;
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.next()
    }

    fn next(&self) -> Json {
        let line = self.lines.recv_timeout(WAIT).expect("the client answered");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

fn micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

fn at(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us as u64)
}

/// The change log's change records of `series` as HistoryRead should answer them:
/// (SourceTimestamp µs, value, status code).
fn recorded(log: &Path, series: u32) -> Vec<(i64, Json, u32)> {
    let mut reader = Reader::new(log, 0);
    let mut out = Vec::new();
    while let Some(entry) = reader.try_next().expect("the log reads") {
        if let Record::Change {
            series: s,
            value,
            quality,
            source_time,
            server_time,
            ..
        } = entry.record
            && s == series
        {
            let value = match value {
                Some(Value::Float(f)) => json!(f),
                Some(Value::Bool(b)) => json!(b),
                _ => Json::Null,
            };
            out.push((
                micros(source_time.unwrap_or(server_time)),
                value,
                status_code(quality).bits(),
            ));
        }
    }
    out.sort_by_key(|(t, _, _)| *t);
    out
}

/// The time (µs) of the change log's last `upstream` gap record.
fn upstream_gap(log: &Path) -> Option<i64> {
    let mut reader = Reader::new(log, 0);
    let mut found = None;
    while let Some(entry) = reader.try_next().expect("the log reads") {
        if let Record::Gap {
            reason: twinloom::change_log::GapReason::Upstream,
            at,
            ..
        } = entry.record
        {
            found = Some(micros(at));
        }
    }
    found
}

fn answered(values: &Json) -> Vec<(i64, Json, u32)> {
    values
        .as_array()
        .expect("values")
        .iter()
        .map(|v| {
            (
                v["t"].as_i64().expect("a source timestamp"),
                v["value"].clone(),
                v["code"].as_u64().unwrap() as u32,
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_reads_history_raw_and_at_time_with_continuations_bounds_and_roles() {
    let state = tempfile::tempdir().unwrap();
    // The readings come from the test (with chosen source times); the source never answers.
    let helpers = twinloom::runtime::Supervisor::new();
    let plc = common::silent_plc(&helpers).await;
    let config = common::config(&format!(
        r#"
[daemon]
state_dir = "{}"

[opcua_server]
listen = "127.0.0.1:0"
allow_security_none = true
auto_trust_clients = true
{}

[history]
retention = "8h"    # files of one hour
readers = ["operator"]

[[types]]
name = "Tank"
properties = [
  {{ name = "level", data_type = "float", unit = "CMT" }},
  {{ name = "pump_on", data_type = "bool" }},
]

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "1h"
timeout = "1h"

[[assets]]
path = "plant/tank1"
type = "Tank"
source = "plc"
[assets.bindings]
level = {{ table = "holding", address = 0, encoding = "f32" }}
pump_on = {{ table = "coil", address = 0 }}
"#,
        state.path().display(),
        users()
    ));
    let handles = common::start(&config).await;
    let level = common::property(&handles, "plant/tank1/level");
    let pump = common::property(&handles, "plant/tank1/pump_on");
    let history = handles.history.clone().expect("history runs");
    let log = handles.change_log.clone().expect("the log runs");

    // An hour boundary two hours ago: 5 000 level changes one second apart across it (two
    // files, several chunks), every 10th uncertain with an upstream status code, every 25th a
    // timeout (bad, keeping the last value and its time).
    let hour = 3_600_000_000i64;
    let b = (micros(SystemTime::now()) / hour - 2) * hour;
    let start = *log.subscribe().borrow();
    let first = b - 2500 * 1_000_000;
    for i in 0..5000i64 {
        let time = first + i * 1_000_000;
        let reading = if i % 25 == 24 {
            Reading::failed(level, QualityReason::Timeout)
        } else if i % 10 == 9 {
            Reading::qualified(
                level,
                Value::Float(i as f64 / 10.0),
                Some(at(time)),
                Quality::from_status_code(0x40A4_0000),
            )
        } else {
            Reading::value(level, Value::Float(i as f64 / 10.0), Some(at(time)))
        };
        handles.twin.apply(&[reading]);
    }
    // A stepped and a sloped variable around one point in time.
    let t0 = b + 3000 * 1_000_000;
    handles
        .twin
        .apply(&[Reading::value(pump, Value::Bool(false), Some(at(t0)))]);
    handles.twin.apply(&[Reading::value(
        pump,
        Value::Bool(true),
        Some(at(t0 + 10_000_000)),
    )]);
    // 5 002 changes, each one record of the log.
    let end = start + 5002;
    tokio::time::timeout(WAIT, log.subscribe().wait_for(|w| *w >= end))
        .await
        .expect("the log writes every change")
        .unwrap();
    let mut taken = history.taken();
    tokio::time::timeout(WAIT, taken.wait_for(|t| *t >= end))
        .await
        .expect("the historian takes every change")
        .unwrap();

    let series = history.series_of(level).unwrap();
    let expected = recorded(log.dir(), series);
    assert_eq!(expected.len(), 5000);
    let workdir = tempfile::tempdir().unwrap();
    let url = handles.opcua.as_ref().unwrap().endpoint_url.clone();
    let ns = handles.opcua.as_ref().unwrap().namespace_index;
    let node = |path: &str| format!("ns={ns};s={path}");
    let (mut operator, mut viewer, mut node_opcua) = tokio::task::spawn_blocking({
        let (url, dir) = (url.clone(), workdir.path().to_owned());
        move || {
            (
                Peer::start(&url, "operator", "operator-pw", &dir),
                Peer::start(&url, "viewer", "viewer-pw", &dir),
                Peer::start_node(&url, "operator", "operator-pw", &dir.join("node")),
            )
        }
    })
    .await
    .unwrap();
    let level_node = node("plant/tank1/level");

    // The whole range: exactly what the change log recorded (values, times, status codes).
    let spec = json!({"start": b - hour, "end": b + hour, "num": 0});
    let all = operator.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(all["statuses"], json!(["Good"]), "{}", all["statuses"]);
    assert_eq!(answered(&all["values"]), expected);
    let high = operator.ask(&format!("read_raw_history {level_node} {spec}"));
    assert_eq!(
        answered(&high["values"]),
        expected,
        "asyncua's read_raw_history"
    );

    // Backward, in pages of 10 with continuation points: the same values reversed.
    let spec = json!({"start": first + 94_500_000, "end": first - 500_000, "num": 10});
    let paged = operator.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(paged["pages"], 10, "{}", paged["statuses"]);
    let mut reversed: Vec<_> = expected[..95].to_vec();
    reversed.reverse();
    assert_eq!(answered(&paged["values"]), reversed);
    // A released continuation point is gone.
    let first_page = operator.ask(&format!("history_first {level_node} {spec}"));
    assert_eq!(first_page["continuation"], true);
    assert_eq!(first_page["released"], "Good");
    assert_eq!(first_page["after"], "BadContinuationPointInvalid");

    // Bounds: the values just outside the range; none before the first: Bad_BoundNotFound.
    let spec = json!({"start": first + 1_500_000, "end": first + 3_500_000, "bounds": true});
    let bounded = operator.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(answered(&bounded["values"]), expected[1..5].to_vec());
    let spec = json!({"start": first - 5_000_000, "end": first + 1_500_000, "bounds": true});
    let unbound = operator.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(unbound["values"][0]["status"], "BadBoundNotFound");
    assert_eq!(answered(&unbound["values"])[1..], expected[..3]);

    // An empty range.
    let spec = json!({"start": b - 4 * hour, "end": b - 3 * hour});
    let empty = operator.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(empty["statuses"], json!(["GoodNoData"]));
    assert_eq!(empty["values"], json!([]));

    // ReadAtTime between samples: the sloped level on the straight line, the stepped pump the
    // earlier value; before the first sample: Bad_NoData.
    let times = json!([first + 500_000, first - 1_000_000]);
    let sloped = operator.ask(&format!("history_at {level_node} {times}"));
    assert_eq!(sloped["values"][0]["value"], json!(0.05));
    assert_eq!(sloped["values"][0]["status"], "Good");
    assert_eq!(sloped["values"][1]["status"], "BadNoData");
    let times = json!([t0 + 5_000_000, t0 + 10_000_000]);
    let stepped = operator.ask(&format!(
        "history_at {} {times}",
        node("plant/tank1/pump_on")
    ));
    assert_eq!(stepped["values"][0]["value"], json!(false));
    assert_eq!(stepped["values"][1]["value"], json!(true));

    // Bounds count against NumValuesPerNode (Part 11 §6.5.3.2): with 2 per page, the start
    // bound and one value, then a value and the end bound; with 3, the end bound alone on a
    // second page.
    for (num, pages) in [(2, 2), (3, 2)] {
        let spec = json!({"start": first + 1_500_000, "end": first + 3_500_000, "bounds": true, "num": num});
        let paged = operator.ask(&format!("history_raw {level_node} {spec}"));
        assert_eq!(
            answered(&paged["values"]),
            expected[1..5].to_vec(),
            "num {num}"
        );
        assert_eq!(paged["pages"], pages, "num {num}: {}", paged["statuses"]);
    }

    // ReadAtTime without simple bounds (Part 13 §3.1.8) skips the timeout at +23 s (bad, the
    // time of the value before it) to the Good values around it: their straight line,
    // Uncertain_DataSubNormal for the skipped one; simple bounds (§3.1.9) stop at the Bad value:
    // Bad_NoData. With nothing skipped both give Good.
    let times = json!({"times": [first + 24_000_000, first + 500_000], "simple": false});
    let interpolated = operator.ask(&format!("history_at {level_node} {times}"));
    let v = interpolated["values"][0]["value"]
        .as_f64()
        .expect("a value");
    assert!((v - 2.4).abs() < 1e-9, "{interpolated}");
    assert_eq!(
        interpolated["values"][0]["status"],
        "UncertainDataSubNormal"
    );
    assert_eq!(interpolated["values"][1]["value"], json!(0.05));
    assert_eq!(interpolated["values"][1]["status"], "Good");
    let times = json!([first + 24_000_000]);
    let simple = operator.ask(&format!("history_at {level_node} {times}"));
    assert_eq!(simple["values"][0]["status"], "BadNoData", "{simple}");

    // StartOfArchive: the start of the oldest file (the hour before the boundary), already
    // while the first samples are only buffered.
    let archive = operator.ask(&format!(
        "read_time {}",
        node("twinloom/history/sloped/StartOfArchive")
    ));
    assert_eq!(archive["t"], json!(b - hour), "{archive}");

    // A loss the source reports (an upstream gap in the change log) reads back as a value
    // with Bad_DataLost at the gap's time.
    let before_gap = *log.subscribe().borrow();
    handles.twin.upstream_lost(3);
    tokio::time::timeout(WAIT, log.subscribe().wait_for(|w| *w > before_gap))
        .await
        .expect("the log writes the gap")
        .unwrap();
    tokio::time::timeout(WAIT, taken.wait_for(|t| *t > before_gap))
        .await
        .expect("the historian takes the gap")
        .unwrap();
    let gap = upstream_gap(log.dir()).expect("an upstream gap in the log");
    let spec = json!({"start": gap - 1_000_000, "end": gap + 1_000_000});
    let lost = operator.ask(&format!("read_raw_history {level_node} {spec}"));
    let lost: Vec<_> = lost["values"]
        .as_array()
        .expect("values")
        .iter()
        .map(|v| (v["t"].as_i64(), v["status"].as_str().map(str::to_owned)))
        .collect();
    assert!(
        lost.contains(&(Some(gap), Some("BadDataLost".to_owned()))),
        "{lost:?}"
    );

    // node-opcua's historyRead: the same answers (its dates hold whole milliseconds; these times
    // are whole seconds).
    let spec = json!({"start": b - hour, "end": b + hour, "num": 0});
    let by_node = node_opcua.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(answered(&by_node["values"]), expected, "node-opcua");
    let spec = json!({"start": first + 94_500_000, "end": first - 500_000, "num": 10});
    let by_node = node_opcua.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(by_node["pages"], 10);
    assert_eq!(answered(&by_node["values"]), reversed, "node-opcua, paged");

    // A viewer is not among `readers`.
    let spec = json!({"start": b - hour, "end": b + hour});
    let refused = viewer.ask(&format!("history_raw {level_node} {spec}"));
    assert_eq!(
        refused["statuses"],
        json!(["BadUserAccessDenied"]),
        "{refused}"
    );

    drop((operator, viewer, node_opcua));
    assert!(handles.supervisor.shutdown(Duration::from_secs(5)).await);
}

/// A reload that restarts every component (a property added) opens the history again: the old
/// historian and the OPC UA server that served it let go of its files first (redb opens a file
/// once per process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_restarts_everything_keeps_the_history_open() {
    let state = tempfile::tempdir().unwrap();
    let helpers = twinloom::runtime::Supervisor::new();
    let plc = common::silent_plc(&helpers).await;
    let file = state.path().join("twinloom.toml");
    let text = |properties: &str, bindings: &str| {
        format!(
            r#"
[daemon]
state_dir = "{}"

[opcua_server]
listen = "127.0.0.1:0"
allow_security_none = true
anonymous = true
auto_trust_clients = true

[history]
retention = "8h"

[[types]]
name = "Tank"
properties = [{properties}]

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "1h"
timeout = "1h"

[[assets]]
path = "plant/tank1"
type = "Tank"
source = "plc"
[assets.bindings]
{bindings}
"#,
            state.path().display()
        )
    };
    std::fs::write(
        &file,
        text(
            r#"{ name = "level", data_type = "float" }"#,
            r#"level = { table = "holding", address = 0, encoding = "f32" }"#,
        ),
    )
    .unwrap();
    let mut daemon = twinloom::app::Daemon::start(twinloom::config::load(&file).unwrap())
        .await
        .unwrap();
    // A change the historian takes: its stop at the reload writes it into a history file.
    let level = common::property(&daemon.handles, "plant/tank1/level");
    daemon
        .handles
        .twin
        .apply(&[Reading::value(level, Value::Float(1.5), None)]);
    let mut written = daemon.handles.change_log.as_ref().unwrap().subscribe();
    let end = *tokio::time::timeout(WAIT, written.wait_for(|end| *end >= 2))
        .await
        .unwrap()
        .unwrap();
    let mut taken = daemon.handles.history.as_ref().unwrap().taken();
    tokio::time::timeout(WAIT, taken.wait_for(|t| *t >= end))
        .await
        .unwrap()
        .unwrap();
    std::fs::write(
        &file,
        text(
            r#"{ name = "level", data_type = "float" }, { name = "volume", data_type = "float" }"#,
            "level = { table = \"holding\", address = 0, encoding = \"f32\" }\n\
             volume = { table = \"holding\", address = 2, encoding = \"f32\" }",
        ),
    )
    .unwrap();
    assert_eq!(
        daemon.reload().await.unwrap(),
        twinloom::app::Reloaded::Restarted
    );
    let history = daemon
        .handles
        .history
        .as_ref()
        .expect("history opened again");
    // What the first historian stored reads back from the second.
    let level = common::property(&daemon.handles, "plant/tank1/level");
    let series = history.series_of(level).unwrap();
    let points = history.read(series, i64::MIN / 2..i64::MAX / 2).unwrap();
    assert!(
        points.iter().any(|p| matches!(
            p,
            twinloom::history::Point::Sample(s) if s.value == Some(Value::Float(1.5))
        )),
        "{points:?}"
    );
    let unmet = daemon.handles.readiness.unmet();
    assert!(
        !unmet
            .iter()
            .any(|c| c == twinloom::history::READY_CONDITION),
        "{unmet:?}"
    );
    daemon
        .handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
    helpers.shutdown(Duration::from_secs(5)).await;
}
