//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use twinloom::app::{self, Handles};
use twinloom::config::{self, Config};
use twinloom::twin::{PropertyId, Sample};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Parses a config text (panics with every diagnostic when invalid).
pub fn config(text: &str) -> Config {
    config::parse(Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts the daemon's components for `config` on the current runtime. A config without a state
/// folder gets a fresh one under the system's temporary folder (the audit log and the OPC UA PKI
/// go there, never to `/var/lib/twinloom`).
pub async fn start(config: &Config) -> Handles {
    let mut config = config.clone();
    if config.daemon.state_dir.is_none() {
        let dir = tempfile::Builder::new()
            .prefix("twinloom-test-state-")
            .tempdir()
            .expect("a temporary state folder")
            .keep();
        config.daemon.state_dir = Some(dir);
    }
    app::start(&config).await.expect("daemon starts")
}

/// The property at `path`.
pub fn property(handles: &Handles, path: &str) -> PropertyId {
    handles
        .twin
        .model()
        .property_by_path(path)
        .unwrap_or_else(|| panic!("no property {path}"))
}

/// Waits until `check` holds for the property's sample, polling every 10 ms, at most `limit`.
/// Returns the sample that satisfied it; panics with the last sample otherwise.
pub async fn wait_for(
    handles: &Handles,
    property: PropertyId,
    limit: Duration,
    check: impl Fn(&Sample) -> bool,
) -> Sample {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let sample = handles.twin.sample(property);
        if check(&sample) {
            return sample;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{} did not reach the expected state within {limit:?}; last: {sample:?}",
                handles.twin.model().property(property).path
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of a counter or gauge series in the metrics text, 0 when absent.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// This process's peak virtual memory size (`VmPeak`), in KiB: what it ever reserved, touched or
/// not.
#[allow(dead_code, reason = "not every test binary uses every helper")]
pub fn vm_peak_kib() -> u64 {
    status_kib("VmPeak:")
}

/// This process's resident memory (`VmRSS`), in KiB.
pub fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// This process's peak resident memory (`VmHWM`) since the last [`reset_rss_peak`], in KiB.
pub fn rss_peak_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Starts a new peak for [`rss_peak_kib`] at the present resident memory (`/proc/self/clear_refs`,
/// Linux 4.0 and later).
pub fn reset_rss_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs is writable");
}

/// A `kB` figure of `/proc/self/status`, by its key (with the colon).
fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The Python interpreter of the test virtualenv (`.venv`, made by `tests/run.sh`).
pub fn python() -> PathBuf {
    if let Ok(path) = std::env::var("TWINLOOM_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `bash tests/run.sh` (it creates the virtualenv with pymodbus and asyncua)",
        venv.display()
    );
    venv
}

/// The probe plugin component (`tests/plugins/probe`), built like the other plugins into
/// `target/wasm` (`tests/run.sh` builds it first, so this finds it up to date).
pub async fn probe_component() -> PathBuf {
    let dir = repo().join("tests/plugins/probe");
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(repo().join("target/wasm")),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
        .await
        .unwrap()
        .expect("the probe plugin builds (tests/run.sh builds it first)")
}

/// Waits until `done` holds, checking every 20 ms, at most `limit`; panics with `why()` otherwise.
pub async fn eventually(limit: Duration, mut done: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{}", why());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A simulated Modbus TCP server on a free loopback port with `device` as unit 1.
pub async fn modbus_tcp(
    device: &std::sync::Arc<twinloom_sim::modbus::SimDevice>,
) -> twinloom_sim::modbus::ModbusServer {
    twinloom_sim::modbus::ModbusServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        twinloom_sim::modbus::Framing::Tcp,
        std::collections::HashMap::from([(1, std::sync::Arc::clone(device))]),
    )
    .await
    .unwrap()
}

/// A PLC that accepts TCP connections on a free loopback port and never answers, run under
/// `helpers` until it shuts down.
pub async fn silent_plc(helpers: &twinloom::runtime::Supervisor) -> std::net::SocketAddr {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    helpers.spawn("silent-plc", move |token| async move {
        let mut held = Vec::new();
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                accepted = silent.accept() => held.push(accepted?.0),
            }
        }
    });
    addr
}

/// One HTTP/1.1 request (`method` `path`, with an `Authorization` header when given) on a fresh
/// connection; returns (status code, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &'static str,
    path: &str,
    authorization: Option<String>,
) -> (u16, String) {
    use std::io::{Read, Write};
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let authorization = authorization
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

/// Waits (up to 10 s) until `device`'s holding registers from `address` read `expected`.
pub async fn until_holding(
    device: &twinloom_sim::modbus::SimDevice,
    address: u16,
    expected: &[u16],
) {
    let count = expected.len() as u16;
    eventually(
        Duration::from_secs(10),
        || device.holding(address, count) == expected,
        || {
            format!(
                "holding {address}: {:?}, expected {expected:?}",
                device.holding(address, count)
            )
        },
    )
    .await;
}

/// An HTTP/1.1 answer as the tests read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    /// The status code; 0 when the connection closed without an answer.
    pub status: u16,
    /// The header lines of the answer's head.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any letter case), when the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// Parses an answer read to the connection's end.
    pub fn parse(response: &str) -> Self {
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
        Self {
            status: head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }
}

/// `method path` on `addr` over a fresh connection from the address `from` (any loopback address
/// 127.0.0.0/8; `None`: the system's choice), with `headers` (`Name: value` lines) after
/// `Host: <addr>`, which a `Host` among them replaces. A connection refused or closed without an
/// answer gives status 0.
pub async fn http_from(
    addr: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
    method: &str,
    path: &str,
    headers: &[String],
) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(from) = from {
        socket.bind((from, 0).into()).unwrap();
    }
    let Ok(mut stream) = socket.connect(addr).await else {
        return Answer::default();
    };
    let host = if headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        String::new()
    } else {
        format!("Host: {addr}\r\n")
    };
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\n{host}{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return Answer::default();
    }
    let mut response = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await {
        Ok(Ok(_)) => Answer::parse(&String::from_utf8_lossy(&response)),
        _ => Answer::default(),
    }
}

/// The browser driver (`tests/peers/webview_driver.py`): Debian's chromium, headless, through
/// chromedriver and Python selenium, driven by commands over stdin.
pub struct Browser {
    /// The driver's process (it quits the browser when its stdin closes).
    pub child: tokio::process::Child,
    /// Where commands go; drop it to end the driver.
    pub stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    shots: std::path::PathBuf,
}

impl Browser {
    /// Starts chromium; screenshots go to `<target tmp>/<name>-shots/` (emptied first).
    pub async fn start(name: &str) -> Self {
        let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-shots"));
        let _ = std::fs::remove_dir_all(&shots);
        let mut child = tokio::process::Command::new(python())
            .arg(repo().join("tests/peers/webview_driver.py"))
            .arg(&shots)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python runs the browser driver");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stdout.take().unwrap(),
        ));
        let ready = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("chromium starts within 30 s");
        assert_eq!(ready.unwrap().as_deref(), Some("READY"));
        Self {
            child,
            stdin,
            stdout,
            shots,
        }
    }

    /// Sends one command; returns what follows `OK `; panics with the driver's error (and the
    /// screenshot it saved) otherwise.
    pub async fn send(&mut self, command: &str) -> String {
        tokio::io::AsyncWriteExt::write_all(&mut self.stdin, format!("{command}\n").as_bytes())
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(60), self.stdout.next_line())
            .await
            .expect("the driver answers")
            .unwrap()
            .expect("the driver runs");
        match answer.strip_prefix("OK") {
            Some(rest) => rest.trim_start().to_owned(),
            None => panic!(
                "{command}: {answer} (screenshots in {})",
                self.shots.display()
            ),
        }
    }

    /// Waits up to `seconds` for an element of `selector` whose text matches `regex`; returns
    /// its text.
    pub async fn wait(&mut self, seconds: u32, selector: &str, regex: &str) -> String {
        let answer = self
            .send(&format!("WAIT\t{seconds}\t{selector}\t{regex}"))
            .await;
        answer
            .split_once(' ')
            .map(|(_, text)| text.to_owned())
            .unwrap_or_default()
    }
}
