//! The `twinloom` binary as an operator meets it: `check`, `run` with a bad config, `--version`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_twinloom"))
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_accepts_the_example_config() {
    let output = bin()
        .arg("check")
        .arg(repo("config/example.toml"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("valid (4 sources, 4 types, 12 assets, 0 plugins)"),
        "{stdout}"
    );
}

#[test]
fn check_prints_every_error_and_exits_64() {
    let file = repo("config/invalid/references.toml");
    let output = bin().arg("check").arg(&file).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let text = stderr(&output);
    let errors: Vec<_> = text
        .lines()
        .filter(|l| l.contains("references.toml:"))
        .collect();
    assert_eq!(errors.len(), 7, "{text}");
    assert!(
        errors[0].ends_with(
            "references.toml:20:8: assets[0].type: unknown type `Pumpe`; defined types: `Pump`"
        ),
        "{text}"
    );
    assert!(
        text.contains("7 errors found; nothing was started"),
        "{text}"
    );
}

/// `[admin_http]` is checked at load like the OPC UA server's users: a password hash argon2
/// cannot use and a TLS file that is not there stop `run` with exit 64, each at its line:col.
#[test]
fn run_refuses_an_unusable_admin_password_hash_and_missing_tls_files_with_exit_64() {
    let output = bin()
        .arg("run")
        .arg(repo("config/invalid/admin-http.toml"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let text = stderr(&output);
    for expected in [
        "admin-http.toml:7:37: admin_http.operators[1].password_hash: password_hash must be an argon2 PHC string",
        "admin-http.toml:9:23: admin_http.tls.certificate: cannot read a PEM certificate from",
    ] {
        assert!(text.contains(expected), "{expected}\n{text}");
    }
}

#[test]
fn check_reports_an_unreadable_file_with_exit_64() {
    let output = bin()
        .arg("check")
        .arg("/nonexistent/twinloom.toml")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("cannot read /nonexistent/twinloom.toml"));
}

/// Runs `command` under `strace` and returns its exit code and the network sockets it created.
fn network_syscalls(command: &mut Command) -> (Option<i32>, Vec<String>) {
    let trace = tempfile::NamedTempFile::new().unwrap();
    let program = command.get_program().to_owned();
    let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
    let status = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=socket,bind,connect", "-o"])
        .arg(trace.path())
        .arg(program)
        .args(args)
        .status()
        .expect("strace is installed by the README's test command (apt package `strace`)");
    let lines = std::fs::read_to_string(trace.path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("AF_INET") || l.contains("bind(") || l.contains("connect("))
        .map(str::to_owned)
        .collect();
    (status.code(), lines)
}

#[test]
fn the_socket_probe_sees_sockets_when_they_are_opened() {
    // Control for the test below: the probe must notice a socket when there is one.
    let (code, sockets) = network_syscalls(
        Command::new("python3")
            .args(["-c", "import socket; socket.socket(socket.AF_INET).close()"]),
    );
    assert_eq!(code, Some(0));
    assert!(!sockets.is_empty());
}

#[test]
fn run_with_an_invalid_config_exits_64_and_opens_no_socket() {
    // claims.toml declares an OPC UA listener, an admin listener and TCP sources.
    let (code, sockets) = network_syscalls(
        bin()
            .arg("run")
            .arg("--config")
            .arg(repo("config/invalid/claims.toml")),
    );
    assert_eq!(code, Some(64));
    assert!(sockets.is_empty(), "sockets opened: {sockets:?}");
}

/// `run` and `check` take the file the same way: as the argument or with `--config` (the form the
/// systemd unit uses), never both, never neither.
#[test]
fn run_and_check_take_the_config_file_as_argument_or_option() {
    let invalid = repo("config/invalid/claims.toml");
    for command in ["run", "check"] {
        for form in [vec![], vec!["--config"], vec!["-c"]] {
            let output = bin()
                .arg(command)
                .args(&form)
                .arg(&invalid)
                .output()
                .unwrap();
            assert_eq!(output.status.code(), Some(64), "{command} {form:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("claims.toml:"),
                "{command} {form:?}: {stderr}"
            );
        }
        let neither = bin().arg(command).output().unwrap();
        assert_eq!(neither.status.code(), Some(2), "{command} without a file");
        let both = bin()
            .arg(command)
            .arg(&invalid)
            .arg("--config")
            .arg(&invalid)
            .output()
            .unwrap();
        assert_eq!(both.status.code(), Some(2), "{command} with the file twice");
    }
}

#[test]
fn version_prints_the_package_version() {
    let output = bin().arg("--version").output().unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("twinloom {}", env!("CARGO_PKG_VERSION"))
    );
}

/// A child process killed when the test ends, however it ends (a failed assertion must not leave
/// a daemon running).
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Child {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Child {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

#[test]
fn demo_brings_the_simulated_plant_up_and_stops_cleanly_on_sigint() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::fs::PermissionsExt as _;
    // Without a runtime folder the demo keeps its state in a fresh private temporary folder.
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Child(
        bin()
            .arg("demo")
            .env("TMPDIR", tmp.path())
            .env_remove("XDG_RUNTIME_DIR")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut all_good = None;
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        // "sources 3/3 up · properties 56 good, 0 uncertain, 0 bad · 12 updates/s · OEE 71 % ·
        // pump z +0.3 · 9.8 Wh/bottle · tank SP 40.0 PV 40.1 °C, heater 19.8 kW · fridge 5.1 °C
        // (MKT 5.2) ok": every property, those the plugins derive, the three of each of the five
        // plugins' status objects and the gate's `armed` included (40 + 15 + 1).
        if line.starts_with("sources 3/3 up · properties 56 good, 0 uncertain, 0 bad") {
            all_good = Some(line);
            break;
        }
        assert!(
            lines.len() < 30,
            "the demo never became fully good:\n{}",
            lines.join("\n")
        );
    }
    let line = all_good.unwrap();
    // The page's address comes first, and the page is there.
    let page = lines[0]
        .strip_prefix("Twinloom demo: open http://")
        .and_then(|rest| rest.split_once('/'))
        .map(|(addr, _)| addr.parse::<std::net::SocketAddr>().unwrap())
        .unwrap_or_else(|| panic!("the web view's address is not first:\n{}", lines.join("\n")));
    assert!(
        http_get(page, "/").contains("<title>Twinloom</title>"),
        "no page at http://{page}/"
    );
    // The page in a real browser: the demo's 12 assets; disarmed from the page, the heater at its
    // `on_loss` 0 kW and the disarm in the page's audit table.
    let browsed = std::time::Instant::now();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut browser = common::Browser::start("demo").await;
            browser.send(&format!("OPEN\thttp://{page}/")).await;
            browser.wait(20, "#summary", "^12 assets").await;
            browser.wait(10, "#armed", "^armed$").await;
            browser.send("TYPE\t#filter\ttank1/heater_power").await;
            let heater = r#".row[data-path="demo-plant/utilities/tank1/heater_power"] .value"#;
            browser.wait(10, heater, r"^\d").await;
            browser.send("CLICK\t#disarm").await;
            browser.wait(10, "#armed", "^disarmed$").await;
            browser.wait(10, heater, "^0$").await;
            browser
                .wait(10, r#"#audit tr[data-kind="disarm"]"#, "disarm anonymous")
                .await;
            browser.send("SHOT\tdisarmed").await;
            drop(browser.stdin);
            let _ = browser.child.wait().await;
        });
    eprintln!(
        "the demo's page checked in a browser in {:?}",
        browsed.elapsed()
    );
    let state = lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix("state (PKI, audit)"))
        .map(|rest| std::path::PathBuf::from(rest.trim()))
        .unwrap_or_else(|| panic!("no state folder printed:\n{}", lines.join("\n")));
    assert!(state.starts_with(tmp.path()), "{}", state.display());
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{}", state.display());
    let figure = |suffix: &str| -> f64 {
        line.split(" · ")
            .find_map(|part| part.strip_suffix(suffix))
            .unwrap_or_else(|| panic!("no `{suffix}` in {line}"))
            .trim_start_matches("OEE ")
            .parse()
            .unwrap()
    };
    assert!(
        figure(" updates/s") > 0.0,
        "values should change over time: {line}"
    );
    let oee = figure(" %");
    assert!((0.0..=100.0).contains(&oee), "{line}");
    assert!(figure(" Wh/bottle") > 0.0, "{line}");
    let status = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!state.exists(), "the demo left {}", state.display());
}

/// `twinloom plugin test --replay`: a plugin run over a recorded change stream prints one JSON
/// line per call, and two runs print the same bytes — the probe plugin iterates a `HashMap`
/// seeded from the WASI random source and reads both clocks, so this holds only because the
/// seed comes from the instance name and the clocks from the records. Another name, another
/// seed.
#[test]
fn a_replay_prints_each_calls_outputs_and_repeats_bit_for_bit() {
    let component = probe();
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("changes.jsonl");
    let mut text = String::from("# two pumps, one second apart\n");
    for step in 0..6i64 {
        for pump in 1..=2 {
            text.push_str(&format!(
                "{{\"time_ms\": {}, \"property\": \"site/pump{pump}/vibration_rms\", \"value\": {}, \"quality\": \"{}\"}}\n",
                1_700_000_000_000 + 1_000 * step,
                2.0 + 0.1 * step as f64,
                if step == 3 { "uncertain" } else { "good" }
            ));
        }
    }
    std::fs::write(&records, text).unwrap();
    let settings = dir.path().join("settings.toml");
    std::fs::write(&settings, "behaviour = \"determinism\"\n").unwrap();
    let replay = |name: &str| {
        let output = bin()
            .args(["plugin", "test", &component, "--replay"])
            .arg(&records)
            .arg("--config")
            .arg(&settings)
            .args([
                "--owned",
                "site/probe/order",
                "--owned",
                "site/probe/wall",
                "--owned",
                "site/probe/monotonic",
                "--tick",
                "2500ms",
                "--name",
                name,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let first = replay("probe");
    assert_eq!(replay("probe"), first);
    let lines: Vec<serde_json::Value> = first
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Six change batches and ticks at +2.5 s and +5 s, in time order.
    let calls: Vec<(&str, i64)> = lines
        .iter()
        .map(|l| {
            (
                l["call"].as_str().unwrap(),
                l["time_ms"].as_i64().unwrap() - 1_700_000_000_000,
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("on-changes", 0),
            ("on-changes", 1_000),
            ("on-changes", 2_000),
            ("on-tick", 2_500),
            ("on-changes", 3_000),
            ("on-changes", 4_000),
            ("on-tick", 5_000),
            ("on-changes", 5_000),
        ]
    );
    for line in &lines {
        let values = line["values"].as_array().unwrap();
        assert_eq!(values[1]["property"], "site/probe/wall");
        // The wall clock answers the call's time, the monotonic clock the time since init.
        assert_eq!(
            values[1]["value"].as_f64().unwrap(),
            line["time_ms"].as_f64().unwrap()
        );
        assert_eq!(
            values[2]["value"].as_f64().unwrap(),
            line["time_ms"].as_f64().unwrap() - 1_700_000_000_000.0
        );
    }
    assert_ne!(replay("another"), first);
}

/// `plugin build --native` builds the same source as a native library, and `plugin test
/// --replay` runs it like the component: vibration-health's two builds print the same lines.
#[test]
fn a_native_build_replays_to_the_same_output_as_the_component() {
    let build = |native: bool| {
        let mut command = bin();
        command.args([
            "plugin",
            "build",
            "plugins/vibration-health",
            "--target-dir",
        ]);
        if native {
            command.args(["target/native", "--native"]);
        } else {
            command.arg("target/wasm");
        }
        let built = command.current_dir(repo("")).output().unwrap();
        assert!(built.status.success(), "{}", stderr(&built));
        String::from_utf8(built.stdout).unwrap().trim().to_owned()
    };
    let (component, library) = (build(false), build(true));
    assert!(library.ends_with(".so"), "{library}");
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("changes.jsonl");
    let mut text = String::new();
    for step in 0..40i64 {
        text.push_str(&format!(
            "{{\"time_ms\": {}, \"property\": \"site/pump1/vibration_rms\", \"value\": {}}}\n",
            1_700_000_000_000 + 60_000 * step,
            2.0 + 0.05 * step as f64 + if step % 7 == 0 { 0.4 } else { 0.0 }
        ));
    }
    std::fs::write(&records, text).unwrap();
    let replay = |plugin: &str| {
        let output = bin()
            .args(["plugin", "test", plugin, "--replay"])
            .arg(&records)
            .args([
                "--owned",
                "site/pump1/vibration_ewma",
                "--owned",
                "site/pump1/anomaly_score",
                "--owned",
                "site/pump1/vibration_trend",
                "--owned",
                "site/pump1/time_to_alarm",
                "--tick",
                "5m",
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        String::from_utf8(output.stdout).unwrap()
    };
    let wasm = replay(&component);
    assert!(wasm.lines().count() >= 40, "{wasm}");
    assert_eq!(replay(&library), wasm);
}

/// The probe plugin component, built by the binary's own `plugin build`.
fn probe() -> String {
    let built = bin()
        .args([
            "plugin",
            "build",
            "tests/plugins/probe",
            "--target-dir",
            "target/wasm",
        ])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    String::from_utf8(built.stdout).unwrap().trim().to_owned()
}

/// The probe plugin as a native library (`plugin build --native`, into `target/native`, which the
/// test command fills before the tests run): it loads at once where a component is compiled
/// first, for tests about the daemon rather than the plugin host.
fn native_probe() -> String {
    let built = bin()
        .args([
            "plugin",
            "build",
            "--native",
            "tests/plugins/probe",
            "--target-dir",
            "target/native",
        ])
        .current_dir(repo(""))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", stderr(&built));
    String::from_utf8(built.stdout).unwrap().trim().to_owned()
}

/// A plugin that sleeps in a WASI call is quarantined after its allowed faults, and SIGTERM then
/// stops the daemon at once, exit code 0, nothing panicking: no thread waits on the plugin.
#[test]
fn a_daemon_with_a_quarantined_sleeping_plugin_exits_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let component = probe();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sleeper.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{state}"

[[types]]
name = "Derived"
properties = [{{ name = "value", data_type = "float" }}]

[[assets]]
path = "site/derived"
type = "Derived"
bindings.value = {{ plugin = "sleeper" }}

[[plugins]]
name = "sleeper"
file = "{component}"
deadline = "200ms"
tick = "20ms"
quarantine_after = 2
config = {{ behaviour = "sleep" }}
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let mut child = Child(
        bin()
            .arg("run")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in stderr_lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.contains("Plugin quarantined") {
            break;
        }
        assert!(seen.len() < 200, "never quarantined:\n{}", seen.join("\n"));
    }
    let started = std::time::Instant::now();
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let rest: Vec<String> = stderr_lines.map(|l| l.unwrap()).collect();
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", rest.join("\n"));
    // Well under the plugin's 60 s sleep: nothing waited on it.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let all = seen
        .iter()
        .chain(&rest)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!all.contains("panicked"), "{all}");
    assert!(all.contains("may not block"), "{all}");
}

/// `kill -9` in the middle of a write storm: every write the PLC took has its intent record in
/// the audit log (the intent is on disk before the device is written), and `twinloom audit
/// verify` passes on what the kill left, listing the intents whose outcome it cut off.
#[test]
fn kill_9_during_a_write_storm_leaves_an_intent_for_every_write_the_plc_took() {
    use std::collections::HashSet;
    let component = probe();
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = fast_storm_config(dir.path(), server.addr(), &component);
    let log = dir.path().join("stderr.log");
    let mut child = Child(
        bin()
            .arg("run")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = std::time::Instant::now();
    while device.register_writes().len() < 300 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the storm never reached the PLC: {} writes",
            device.register_writes().len()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SIGKILL: no shutdown, no last records.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let taken = device.register_writes();
    drop(server);

    let audit = dir.path().join("audit");
    let verified = bin()
        .arg("audit")
        .arg("verify")
        .arg(&audit)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let records = twinloom::runtime::journal::verify_collect(&audit)
        .unwrap()
        .records;
    let intended: HashSet<u64> = records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["property"] == "site/heater/setpoint")
        .filter_map(|r| r["written"].as_f64())
        .map(|v| v as u64)
        .collect();
    let missing: Vec<u16> = taken
        .iter()
        .filter(|(address, _)| *address == 10)
        .map(|(_, word)| *word)
        .filter(|word| !intended.contains(&u64::from(*word)))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} writes the PLC took have no intent record: {missing:?}",
        missing.len(),
        taken.len()
    );
    // A plugin's writes are counted and audited, not logged one line each: the storm leaves a
    // log of a few lines (start-up), not one per write.
    let lines = std::fs::read_to_string(&log).unwrap().lines().count();
    assert!(lines < 100, "{lines} log lines for {} writes", taken.len());
    eprintln!(
        "storm: the PLC took {} writes, the audit holds {} intents; verify says: {}",
        taken.len(),
        intended.len(),
        String::from_utf8_lossy(&verified.stdout).trim()
    );
}

/// Two daemons on one state folder: the second is refused at once with an error naming the
/// folder and the first one's pid (it would interleave the audit's sequence numbers), and the
/// first runs on; once the first has stopped, a new one starts there.
#[test]
fn a_second_daemon_on_the_same_state_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plc = closed.local_addr().unwrap();
    drop(closed);
    let config = dir.path().join("one.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{state}"

[[sources.modbus]]
id = "plc"
tcp = "{plc}"

[[types]]
name = "Meter"
properties = [{{ name = "power", data_type = "float" }}]

[[assets]]
path = "site/meter"
type = "Meter"
source = "plc"
bindings.power = {{ table = "holding", address = 0, encoding = "f32" }}
"#,
            state = dir.path().display()
        ),
    )
    .unwrap();
    let lock_file = dir.path().join("twinloom.lock");
    let holds = |file: &std::path::Path| {
        std::fs::read_to_string(file)
            .ok()
            .map(|t| t.trim().to_owned())
    };
    let start = || {
        Child(
            bin()
                .arg("run")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        )
    };
    // The first holds the lock once its pid is in the file.
    let mut first = start();
    let holder = first.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while holds(&lock_file) != Some(holder.clone()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first daemon never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let mut second = start();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second daemon was not refused"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut refused = String::new();
    std::io::Read::read_to_string(&mut second.0.stderr.take().unwrap(), &mut refused).unwrap();
    assert_eq!(status.code(), Some(1), "{refused}");
    assert!(
        refused.contains("is in use by another twinloom process"),
        "{refused}"
    );
    assert!(refused.contains(&format!("(pid {holder})")), "{refused}");
    assert!(
        first.0.try_wait().unwrap().is_none(),
        "the first daemon stopped"
    );

    // Stopped, the first releases the folder.
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(&holder)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(first.0.wait().unwrap().code(), Some(0));
    let mut third = start();
    let third_pid = third.id().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while holds(&lock_file) != Some(third_pid.clone()) {
        assert!(
            third.0.try_wait().unwrap().is_none(),
            "the third daemon was refused"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the third daemon never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A simulated PLC (unit 1) on a free loopback port, on a runtime of its own (the tests here are
/// synchronous: they drive the daemon's binary).
struct Plc {
    device: std::sync::Arc<twinloom_sim::modbus::SimDevice>,
    server: twinloom_sim::modbus::ModbusServer,
    _runtime: tokio::runtime::Runtime,
}

/// A [`Plc`]; `behave` sets its behaviour before it serves (a reply delay).
fn plc(behave: impl FnOnce(&mut twinloom_sim::modbus::Behaviour)) -> Plc {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let device = twinloom_sim::modbus::SimDevice::new();
    device.behave(behave);
    let server = runtime
        .block_on(twinloom_sim::modbus::ModbusServer::bind(
            "127.0.0.1:0".parse().unwrap(),
            twinloom_sim::modbus::Framing::Tcp,
            std::collections::HashMap::from([(1, std::sync::Arc::clone(&device))]),
        ))
        .unwrap();
    Plc {
        device,
        server,
        _runtime: runtime,
    }
}

/// What differs between the storm tests' configurations (each a few lines of TOML).
#[derive(Debug, Default)]
struct Storm<'a> {
    /// Sections before `[control]` (e.g. `[admin_http]`).
    head: &'a str,
    /// More keys of `[control]` (the plant is armed, the budget unlimited).
    control: &'a str,
    /// More keys of the PLC's `[[sources.modbus]]`.
    source: &'a str,
    /// The plugin's `file`, `kind` and timing keys.
    plugin: &'a str,
}

/// A plant of one heater whose setpoint (`site/heater/setpoint`, holding register 10 of `plc`)
/// the probe plugin `storm` proposes ever new values to (1, 2, 3, …), the plant armed; written to
/// `<state>/storm.toml` with `state` as the state folder.
fn storm_config(state: &Path, plc: std::net::SocketAddr, storm: &Storm<'_>) -> PathBuf {
    let config = state.join("storm.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{state}"
{head}
[control]
armed = true
max_writes_per_origin_per_minute = 1000000
{control}
[[sources.modbus]]
id = "plc"
tcp = "{plc}"
{source}
[[types]]
name = "Heater"
properties = [{{ name = "setpoint", data_type = "float", access = "read-write" }}]

[[assets]]
path = "site/heater"
type = "Heater"
source = "plc"
bindings.setpoint = {{ table = "holding", address = 10 }}

[[plugins]]
name = "storm"
writes = ["site/heater/setpoint"]
config = {{ behaviour = "storm" }}
{plugin}
"#,
            state = state.display(),
            head = storm.head,
            control = storm.control,
            source = storm.source,
            plugin = storm.plugin,
        ),
    )
    .unwrap();
    config
}

/// [`storm_config`] at full speed: the component proposes every 2 ms, the PLC polled every
/// second (the kill -9 and failing-`fdatasync` storms).
fn fast_storm_config(state: &Path, plc: std::net::SocketAddr, component: &str) -> PathBuf {
    let plugin = format!(
        "file = \"{component}\"\ndeadline = \"10s\"\ntick = \"2ms\"\nmin_interval = \"1ms\""
    );
    storm_config(
        state,
        plc,
        &Storm {
            source: "poll = \"1s\"",
            plugin: &plugin,
            ..Storm::default()
        },
    )
}

/// Waits until `done` holds, at most 60 s; `what` says what did not happen.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what} did not happen within 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// SIGTERM to `child`; it must exit 0.
fn stop(mut child: Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(child.0.wait().unwrap().code(), Some(0));
}

/// Every value the PLC took at register 10 that no intent of `records` wrote.
fn taken_without_intent(
    taken: &[(u16, u16)],
    records: &[serde_json::Map<String, serde_json::Value>],
) -> Vec<u16> {
    let intended: std::collections::HashSet<u64> = records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["property"] == "site/heater/setpoint")
        .filter_map(|r| r["written"].as_f64())
        .map(|v| v as u64)
        .collect();
    taken
        .iter()
        .filter(|(address, _)| *address == 10)
        .map(|(_, word)| *word)
        .filter(|word| !intended.contains(&u64::from(*word)))
        .collect()
}

/// One failed `fdatasync` of the audit log (an `LD_PRELOAD` shim, `tests/shims/`) in the middle
/// of a write storm, and the `fsync` of the folder when the journal first resumes failing too:
/// the write whose intent was being synced is refused (its intent is void; the PLC never gets its
/// value), the journal resumes in a new segment once the disk works, the storm goes on; after a
/// stop and a restart (which opens the journal and writes on) `twinloom audit verify` passes and
/// names the void range, and every value the PLC took has its intent record.
#[test]
fn a_failed_fdatasync_voids_one_batch_and_every_write_the_plc_took_keeps_its_intent() {
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("fail_fdatasync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(repo("tests/shims/fail_fdatasync.c"))
        .arg("-ldl")
        .output()
        .expect("a C compiler (cc) builds the fdatasync shim");
    assert!(built.status.success(), "{}", stderr(&built));
    let component = probe();
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let config = fast_storm_config(dir.path(), server.addr(), &component);
    let audit = dir.path().join("audit");
    let mark = dir.path().join("sync-failed");
    let segments = || {
        std::fs::read_dir(&audit).map_or(0, |d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "jsonl"))
            })
            .count()
        })
    };
    let run = |preload: bool| {
        let mut command = bin();
        command
            .arg("run")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if preload {
            // In the audit folder: the 42nd fdatasync (a group commit mid-storm; here one record
            // each — the start's `arm` record, then intent and outcome in turn — this one an
            // intent) and the 2nd fsync (the folder, when the journal resumes in a new segment)
            // fail.
            command
                .env("LD_PRELOAD", &shim)
                .env("FAIL_SYNC_PATH", &audit)
                .env("FAIL_FDATASYNC_AT", "42")
                .env("FAIL_FSYNC_AT", "2")
                .env("FAIL_SYNC_MARK", &mark);
        }
        Child(command.spawn().unwrap())
    };

    let started = std::time::Instant::now();
    let first = run(true);
    wait_for("the injected fdatasync failure", || mark.exists());
    eprintln!("failed after {:?}", started.elapsed());
    // Resumed (after one more failure and two retry intervals): a segment of its own.
    wait_for("the journal's resumption", || segments() >= 3);
    let resumed_at = device.register_writes().len();
    wait_for("50 more writes after the failure", || {
        device.register_writes().len() >= resumed_at + 50
    });
    stop(first);
    let taken_first = device.register_writes();
    let after_first = twinloom::runtime::journal::verify_collect(&audit)
        .unwrap()
        .records;

    let second = run(false);
    wait_for("50 writes after the restart", || {
        device.register_writes().len() >= taken_first.len() + 50
    });
    stop(second);
    eprintln!("both runs done after {:?}", started.elapsed());
    let taken = device.register_writes();
    drop(server);

    let verified = bin()
        .arg("audit")
        .arg("verify")
        .arg(&audit)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(said.contains("void: sequence numbers"), "{said}");
    let twinloom::runtime::journal::Collected {
        verified: journal,
        records,
    } = twinloom::runtime::journal::verify_collect(&audit).unwrap();
    // One void range: the failed commit and the failed first resumption.
    assert_eq!(journal.void.len(), 1, "{:?}", journal.void);
    let void = &journal.void[0];
    let resumed = records.iter().find(|r| r["seq"] == void.to).unwrap();
    assert_eq!(resumed["kind"], "journal-resumed");
    assert_eq!(resumed["failed_commits"], 2, "{resumed:?}");
    assert!(void.why.contains("Input/output error"), "{}", void.why);

    // Every value the PLC took has its intent: in the first run's records for the first run's
    // writes (the storm counts from 1 again after the restart), in the rest for the second's.
    let first_seqs = after_first.last().unwrap()["seq"].as_u64().unwrap();
    let (first_records, second_records): (Vec<_>, Vec<_>) = records
        .iter()
        .cloned()
        .partition(|r| r["seq"].as_u64().unwrap() <= first_seqs);
    let missing = taken_without_intent(&taken_first, &first_records);
    assert!(missing.is_empty(), "first run: no intent for {missing:?}");
    let missing = taken_without_intent(&taken[taken_first.len()..], &second_records);
    assert!(missing.is_empty(), "second run: no intent for {missing:?}");

    // The refused batch reached the old segment (the shim failed the sync, not the write) and is
    // void: an intent in it (the batch may hold only outcomes) never had its value reach the PLC.
    let void_values: Vec<u16> = std::fs::read_dir(&audit)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|r| {
            r["kind"] == "intent"
                && r["seq"]
                    .as_u64()
                    .is_some_and(|s| (void.from..void.to).contains(&s))
        })
        .filter_map(|r| r["written"].as_f64())
        .map(|v| v as u16)
        .collect();
    for value in &void_values {
        assert!(
            !taken_first.iter().any(|(a, w)| *a == 10 && w == value),
            "the PLC took {value}, whose intent is void"
        );
    }
    eprintln!(
        "fdatasync shim: the PLC took {} writes ({} in the first run), void {}..{} ({} intents), {} records; verify says: {}",
        taken.len(),
        taken_first.len(),
        void.from,
        void.to,
        void_values.len(),
        records.len(),
        said.trim()
    );
}

/// A head that says more records than the segments hold: `twinloom audit verify` names it and
/// points to `audit recover`, which records its decision in the chain; then verify passes, the
/// journal opens again, and a second `recover` finds nothing to do.
#[test]
fn audit_recover_records_its_decision_after_a_head_segment_mismatch() {
    use twinloom::runtime::Supervisor;
    use twinloom::runtime::journal::{Journal, JournalConfig};
    let dir = tempfile::tempdir().unwrap();
    let config = JournalConfig {
        reserve_bytes: 0,
        ..JournalConfig::new(dir.path())
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let supervisor = Supervisor::new();
        let (journal, _) = Journal::open(config.clone(), &supervisor).unwrap();
        for i in 0..10 {
            journal
                .append(serde_json::json!({ "kind": "intent", "i": i }))
                .await
                .unwrap();
        }
        drop(journal);
        assert!(supervisor.shutdown(std::time::Duration::from_secs(5)).await);
    });
    // Records 3..10 lost (as after the bug of issue 25): the head still says 10.
    let segment = dir.path().join(format!("{:020}.jsonl", 0));
    let kept: String = std::fs::read_to_string(&segment)
        .unwrap()
        .lines()
        .take(3)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&segment, kept).unwrap();
    let audit = |action: &str| {
        bin()
            .arg("audit")
            .arg(action)
            .arg(dir.path())
            .output()
            .unwrap()
    };

    let verified = audit("verify");
    assert_eq!(verified.status.code(), Some(1));
    let said = stderr(&verified);
    assert!(
        said.contains("the head says 10 records, the journal has 3"),
        "{said}"
    );
    assert!(said.contains("twinloom audit recover"), "{said}");
    runtime.block_on(async {
        let error = Journal::open(config.clone(), &Supervisor::new()).unwrap_err();
        assert!(error.to_string().contains("the head says 10"), "{error}");
    });

    let recovered = audit("recover");
    assert!(recovered.status.success(), "{}", stderr(&recovered));
    let said = String::from_utf8_lossy(&recovered.stdout).into_owned();
    assert!(said.contains("sequence numbers 3..10 are void"), "{said}");
    assert!(said.contains("record 10 states the decision"), "{said}");

    let verified = audit("verify");
    assert!(verified.status.success(), "{}", stderr(&verified));
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(
        said.contains("void: sequence numbers 3..10, named by record 10 (journal-recovered"),
        "{said}"
    );
    assert!(said.contains("4 records"), "{said}");

    runtime.block_on(async {
        let supervisor = Supervisor::new();
        let (journal, opened) = Journal::open(config.clone(), &supervisor).unwrap();
        assert_eq!(opened.next_seq, 11);
        assert_eq!(journal.append(serde_json::json!({})).await, Ok(11));
    });
    let again = audit("recover");
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("nothing to recover"),
        "{}",
        stderr(&again)
    );
}

/// Forward-secure sealing through the binary: `audit setup-keys` with 1 s epochs, a journal
/// writing across at least two epochs (the test waits for the seal records, with a deadline),
/// then `audit verify --key` passes; a copy with a record edited and the chain recomputed passes
/// the chain-only check and fails with the key; a missing head fails; `audit archive` moves the
/// old segments and both folders verify with the key.
#[test]
fn sealed_audit_log_verifies_with_its_key_and_a_rechained_edit_does_not() {
    use twinloom::runtime::Supervisor;
    use twinloom::runtime::journal::{Journal, JournalConfig};
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let setup = bin()
        .args(["audit", "setup-keys", "--interval", "1s"])
        .arg(&audit_dir)
        .output()
        .unwrap();
    assert!(setup.status.success(), "{}", stderr(&setup));
    let key = String::from_utf8_lossy(&setup.stdout).trim().to_owned();
    assert!(key.ends_with("-1") && key.contains('/'), "{key}");
    let seals = || {
        twinloom::runtime::journal::records(&audit_dir).map_or(0, |records| {
            records
                .iter()
                .filter(|r| r.get("kind").and_then(|k| k.as_str()) == Some("journal-seal"))
                .count()
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let supervisor = Supervisor::new();
        let config = JournalConfig {
            reserve_bytes: 0,
            segment_bytes: 400,
            ..JournalConfig::new(&audit_dir)
        };
        let (journal, _) = Journal::open(config, &supervisor).unwrap();
        let mut i = 0;
        while seals() < 2 {
            assert!(i < 3000, "two epochs were not sealed within 30 s");
            let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            journal
                .append(serde_json::json!({ "kind": "intent", "time": time, "i": i }))
                .await
                .unwrap();
            i += 1;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        drop(journal);
        assert!(supervisor.shutdown(std::time::Duration::from_secs(5)).await);
    });
    let verify = |dir: &Path, key: Option<&str>| {
        let mut command = bin();
        command.args(["audit", "verify"]).arg(dir);
        if let Some(key) = key {
            command.args(["--key", key]);
        }
        command.output().unwrap()
    };
    let verified = verify(&audit_dir, Some(&key));
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{}{said}", stderr(&verified));
    assert!(
        said.contains("seals hold") && said.contains("the head's seal holds"),
        "{said}"
    );
    let chain_only = verify(&audit_dir, None);
    assert!(String::from_utf8_lossy(&chain_only.stdout).contains("chain only"));

    // A copy: record 1 edited, every later `prev` and the head recomputed (no key needed).
    let copy = dir.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&audit_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    segments.sort();
    let hash = twinloom::runtime::journal::line_hash;
    let mut prev = "0".repeat(64);
    let mut count = 0;
    for segment in &segments {
        let mut text = String::new();
        for line in std::fs::read_to_string(segment).unwrap().lines() {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            if record["seq"] == 1 {
                record["i"] = serde_json::json!(1000);
            }
            record["prev"] = serde_json::json!(prev);
            let line = record.to_string();
            prev = hash(&line);
            count = record["seq"].as_u64().unwrap() + 1;
            text.push_str(&line);
            text.push('\n');
        }
        std::fs::write(copy.join(segment.file_name().unwrap()), text).unwrap();
    }
    let mut head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(audit_dir.join("head.json")).unwrap()).unwrap();
    head["count"] = serde_json::json!(count);
    head["hash"] = serde_json::json!(prev);
    std::fs::write(copy.join("head.json"), head.to_string()).unwrap();
    assert!(verify(&copy, None).status.success());
    let refused = verify(&copy, Some(&key));
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("does not match"),
        "{}",
        stderr(&refused)
    );
    std::fs::remove_file(copy.join("head.json")).unwrap();
    let headless = verify(&copy, None);
    assert_eq!(headless.status.code(), Some(1));
    assert!(
        stderr(&headless).contains("head.json is missing"),
        "{}",
        stderr(&headless)
    );

    // Archive every segment but the last; the live folder and the archive verify with the key.
    let archived = bin()
        .args(["audit", "archive", "--before", "2999-01-01"])
        .arg(&audit_dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&archived.stdout).into_owned();
    assert!(archived.status.success(), "{}{said}", stderr(&archived));
    assert!(said.contains("states the archive point"), "{said}");
    for folder in [audit_dir.clone(), audit_dir.join("archive")] {
        let verified = verify(&folder, Some(&key));
        assert!(
            verified.status.success(),
            "{}: {}",
            folder.display(),
            stderr(&verified)
        );
    }
}

/// A PLC slower than `[control] write_timeout`, through the binary: a plugin proposes a new
/// setpoint every 50 ms, each device write is answered after 600 ms (and read back after 600
/// more), the gate gives up on each after 300 ms. What the audit says and what the PLC took
/// agree: every value the PLC took has an intent whose outcome is `unknown` (answered after the
/// deadline: the device's answer and what it holds are recorded) — never `not-sent` or an error
/// — and no value of a `not-sent` intent ever reached the PLC.
#[test]
fn a_plc_slower_than_the_write_timeout_gets_only_what_the_audit_says() {
    use std::collections::HashMap;
    let component = native_probe();
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|b| b.delay = std::time::Duration::from_millis(600));
    let dir = tempfile::tempdir().unwrap();
    let plugin = format!(
        "kind = \"native\"\nfile = \"{component}\"\ntick = \"50ms\"\nmin_interval = \"50ms\""
    );
    let config = storm_config(
        dir.path(),
        server.addr(),
        &Storm {
            control: "write_timeout = \"300ms\"",
            source: "poll = \"1h\"\ntimeout = \"5s\"",
            plugin: &plugin,
            ..Storm::default()
        },
    );
    let daemon = Child(
        bin()
            .arg("run")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("three writes at the PLC", || {
        device.register_writes().len() >= 3
    });
    stop(daemon);
    let taken: Vec<u16> = device
        .register_writes()
        .iter()
        .filter(|(address, _)| *address == 10)
        .map(|(_, word)| *word)
        .collect();
    drop(server);

    let audit = dir.path().join("audit");
    let verified = bin()
        .arg("audit")
        .arg("verify")
        .arg(&audit)
        .output()
        .unwrap();
    assert!(verified.status.success(), "{}", stderr(&verified));
    let records = twinloom::runtime::journal::verify_collect(&audit)
        .unwrap()
        .records;
    let outcomes: HashMap<u64, &serde_json::Map<String, serde_json::Value>> = records
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .map(|r| (r["intent"].as_u64().unwrap(), r))
        .collect();
    let mut seen = HashMap::<String, usize>::new();
    for intent in records.iter().filter(|r| r["kind"] == "intent") {
        let value = intent["written"].as_f64().unwrap() as u16;
        let outcome = outcomes
            .get(&intent["seq"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("no outcome for {intent:?}"));
        let said = outcome["outcome"].as_str().unwrap().to_owned();
        match said.as_str() {
            "not-sent" => assert!(!taken.contains(&value), "{value} not sent, yet taken"),
            "unknown" => {
                // Answered late: the device's answer and what it holds; or the daemon stopped
                // with the request possibly on the wire (no answer to record).
                if outcome.get("device_answer").and_then(|a| a.as_str()) == Some("written") {
                    assert!(taken.contains(&value), "{outcome:?}");
                    assert_eq!(outcome["holds"], f64::from(value), "{outcome:?}");
                }
            }
            other => panic!("outcome {other} for a PLC slower than the deadline: {outcome:?}"),
        }
        *seen.entry(said).or_default() += 1;
    }
    for value in &taken {
        assert!(
            records.iter().any(|r| {
                r["kind"] == "intent"
                    && r["written"].as_f64() == Some(f64::from(*value))
                    && outcomes[&r["seq"].as_u64().unwrap()]["outcome"] == "unknown"
            }),
            "the PLC took {value} with no intent audited `unknown`"
        );
    }
    assert!(seen.get("unknown").is_some_and(|n| *n >= 3), "{seen:?}");
    assert!(seen.get("not-sent").is_some_and(|n| *n >= 1), "{seen:?}");
}

/// `GET path` on `addr` over a fresh HTTP/1.1 connection: the response's body (empty when the
/// server is not there).
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let mut response = String::new();
    if stream.write_all(request.as_bytes()).is_err()
        || stream.read_to_string(&mut response).is_err()
    {
        return String::new();
    }
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A setpoint changed by hand at the PLC stays overridden through a SIGHUP reload that restarts
/// the gate and through a restart of the binary: the plugin that storms it is refused
/// (`manual-override`) by each new gate and the PLC keeps the hand value; each start's arming by
/// the configuration is audited with origin `twinloom:config`.
#[test]
fn a_manual_override_survives_a_sighup_reload_and_a_restart() {
    const BY_HAND: u16 = 60_000;
    let component = native_probe();
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let admin = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let head = format!("\n[admin_http]\nlisten = \"{admin}\"\n");
    let plugin = format!(
        "kind = \"native\"\nfile = \"{component}\"\ntick = \"50ms\"\nmin_interval = \"50ms\""
    );
    let write_config = |write_timeout: &str| {
        storm_config(
            dir.path(),
            server.addr(),
            &Storm {
                head: &head,
                control: write_timeout,
                source: "poll = \"20ms\"",
                plugin: &plugin,
            },
        )
    };
    let config = write_config("");
    let audit = dir.path().join("audit");
    let arms = || {
        twinloom::runtime::journal::records(&audit).map_or(0, |records| {
            records
                .iter()
                .filter(|r| r["kind"] == "arm" && r["origin"] == "twinloom:config")
                .count()
        })
    };
    let refused_by_hand = || {
        let metrics = http_get(admin, "/metrics");
        metrics
            .lines()
            .find(|l| {
                l.starts_with(r#"twinloom_control_decisions_total{origin="plugin",rule="manual-override",outcome="refused"}"#)
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let start = || {
        Child(
            bin()
                .arg("run")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };

    let first = start();
    wait_for("five storm writes at the PLC", || {
        device.register_writes().len() >= 5
    });
    // By hand, until the gate has seen it between two storm writes: overridden, and the plugin
    // refused from then on.
    let state_file = dir.path().join("control/state.json");
    wait_for("the manual override", || {
        device.set_holding(10, &[BY_HAND]);
        std::thread::sleep(std::time::Duration::from_millis(30));
        std::fs::read_to_string(&state_file).is_ok_and(|t| t.contains("site/heater/setpoint"))
    });
    wait_for("a refusal for the override", || refused_by_hand() >= 1.0);
    device.set_holding(10, &[BY_HAND]);
    let writes = device.register_writes().len();

    // SIGHUP with a changed [control] section: the gate restarts, armed again by the config.
    write_config("write_timeout = \"9s\"");
    let status = Command::new("kill")
        .arg("-HUP")
        .arg(first.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    wait_for("the reload's arming", || arms() >= 2);
    wait_for("a refusal by the reloaded gate", || {
        refused_by_hand() >= 1.0
    });
    stop(first);

    // A restart: the third arming, still overridden.
    let second = start();
    wait_for("the restart's arming", || arms() >= 3);
    wait_for("a refusal by the restarted gate", || {
        refused_by_hand() >= 1.0
    });
    stop(second);
    assert_eq!(
        device.register_writes().len(),
        writes,
        "the storm wrote again"
    );
    assert_eq!(device.holding(10, 1), [BY_HAND]);
    drop(server);
}

/// Properties of the change log tests' plant: `site/block/p<i>` at holding registers `0..100`.
const INGEST_PROPERTIES: u16 = 100;

/// A plant of [`INGEST_PROPERTIES`] unsigned properties polled every 10 ms — with [`Ingest`]
/// changing every register every millisecond, 10 000 changes/s — and one setpoint
/// (`site/block/setpoint`, holding register 200) so the plant has an audit log; the plant armed
/// by the configuration, the change log on. `head` goes before `[control]`. Written to
/// `<state>/ingest.toml`.
fn ingest_config(state: &Path, plc: std::net::SocketAddr, head: &str) -> PathBuf {
    ingest_config_in(state, state, plc, head, "64MiB", "")
}

/// [`ingest_config`] written to `<dir>/ingest.toml` with the state folder `state`, the change
/// log's `max_disk` and `control` added to `[control]`.
fn ingest_config_in(
    dir: &Path,
    state: &Path,
    plc: std::net::SocketAddr,
    head: &str,
    max_disk: &str,
    control: &str,
) -> PathBuf {
    let properties: Vec<String> = (0..INGEST_PROPERTIES)
        .map(|i| format!("{{ name = \"p{i}\", data_type = \"unsigned\" }}"))
        .chain(std::iter::once(
            "{ name = \"setpoint\", data_type = \"unsigned\", access = \"read-write\" }".to_owned(),
        ))
        .collect();
    let bindings: String = (0..INGEST_PROPERTIES)
        .map(|i| format!("bindings.p{i} = {{ table = \"holding\", address = {i} }}\n"))
        .collect();
    let config = dir.join("ingest.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[daemon]
state_dir = "{state}"
{head}
[change_log]
max_disk = "{max_disk}"
commit_window = "100ms"

[control]
armed = true
{control}

[[sources.modbus]]
id = "plc"
tcp = "{plc}"
poll = "10ms"

[[types]]
name = "Block"
properties = [{properties}]

[[assets]]
path = "site/block"
type = "Block"
source = "plc"
{bindings}bindings.setpoint = {{ table = "holding", address = 200 }}
"#,
            state = state.display(),
            properties = properties.join(", "),
        ),
    )
    .unwrap();
    config
}

/// Changes every one of the PLC's registers `0..INGEST_PROPERTIES` every millisecond (all to
/// the same rising count) until dropped.
struct Ingest {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Ingest {
    fn start(device: &std::sync::Arc<twinloom_sim::modbus::SimDevice>) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let device = std::sync::Arc::clone(device);
        let stopping = std::sync::Arc::clone(&stop);
        #[allow(clippy::disallowed_methods)]
        let thread = std::thread::spawn(move || {
            let mut count: u16 = 0;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                count = count.wrapping_add(1);
                device.set_holding(0, &[count; INGEST_PROPERTIES as usize]);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads on with `reader` into `seen` as far as the log is on disk now.
fn read_on(reader: &mut twinloom::change_log::Reader, seen: &mut Vec<twinloom::change_log::Entry>) {
    while let Some(entry) = reader.try_next().expect("the change log reads") {
        seen.push(entry);
    }
}

fn change_count(entries: &[twinloom::change_log::Entry]) -> usize {
    entries
        .iter()
        .filter(|e| matches!(e.record, twinloom::change_log::Record::Change { .. }))
        .count()
}

fn gap_reasons(entries: &[twinloom::change_log::Entry]) -> Vec<twinloom::change_log::GapReason> {
    entries
        .iter()
        .filter_map(|e| match e.record {
            twinloom::change_log::Record::Gap { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// `twinloom change-log verify DIR` passes; returns what it printed.
fn change_log_verifies(dir: &Path) -> String {
    let verified = bin()
        .args(["change-log", "verify"])
        .arg(dir)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verified.stdout).into_owned();
    assert!(verified.status.success(), "{said}{}", stderr(&verified));
    said
}

/// `kill -9` while the daemon logs 10 000 changes/s, with a consumer reading alongside: after a
/// restart every record the consumer saw is there, unchanged, at its offset; offsets rise by one
/// with no duplicate; no property's value goes back in the first run's part; the restart says, in a
/// gap record, that the run before did not stop cleanly (its tap's last changes are lost).
#[test]
fn kill_9_during_ingest_loses_no_change_a_reader_saw_and_duplicates_none() {
    use twinloom::change_log::{Reader, Record};
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), server.addr(), "");
    let log = dir.path().join("change-log");
    let _ingest = Ingest::start(&device);
    let run = || {
        Child(
            bin()
                .arg("run")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut first = run();
    let mut reader = Reader::new(&log, 0);
    let mut seen = Vec::new();
    let started = std::time::Instant::now();
    wait_for("20 000 changes in the log", || {
        read_on(&mut reader, &mut seen);
        change_count(&seen) >= 20_000
    });
    let rate = change_count(&seen) as f64 / started.elapsed().as_secs_f64();
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    // What reached the log before the kill is readable after it (a crash of the process loses
    // nothing written).
    read_on(&mut reader, &mut seen);
    let seen_before_restart = seen.len();

    let second = run();
    wait_for("the restart's records", || {
        read_on(&mut reader, &mut seen);
        seen[seen_before_restart..]
            .iter()
            .any(|e| matches!(e.record, Record::Started { .. }))
            && change_count(&seen[seen_before_restart..]) >= 1000
    });
    stop(second);
    drop(server);
    eprintln!("ingest ≈ {rate:.0} changes/s before the kill");

    let said = change_log_verifies(&log);
    assert!(said.contains("every batch's checksum holds"), "{said}");
    let mut all = Vec::new();
    read_on(&mut Reader::new(&log, 0), &mut all);
    for pair in all.windows(2) {
        assert_eq!(pair[1].offset, pair[0].offset + 1, "offsets rise by one");
    }
    let first_offset = all[0].offset;
    for entry in &seen {
        let on_disk = &all[(entry.offset - first_offset) as usize];
        assert_eq!(
            on_disk, entry,
            "offset {} changed after the kill",
            entry.offset
        );
    }
    // The restart names the unclean stop (or the torn tail it cut) right before its start.
    let restart = all
        .iter()
        .position(|e| e.offset > seen[seen_before_restart - 1].offset)
        .unwrap();
    let reasons = gap_reasons(&all[restart..]);
    assert!(
        matches!(
            reasons.first(),
            Some(
                twinloom::change_log::GapReason::UncleanStop
                    | twinloom::change_log::GapReason::DamagedTail
            )
        ),
        "{reasons:?}"
    );
    // In order: no property's value goes back through the first run (the counter only rises; a
    // change of quality alone — a poll timeout on a loaded machine — repeats the value).
    let mut last: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for entry in &all[..restart] {
        if let Record::Change {
            series,
            value: Some(twinloom::twin::Value::UInt(value)),
            ..
        } = &entry.record
            && let Some(before) = last.insert(*series, *value)
        {
            assert!(*value >= before, "series {series}: {value} after {before}");
        }
    }
    assert!(change_count(&all[..restart]) >= 20_000);
}

/// `kill -9` of a daemon with `[history]` while it ingests 10 000 changes/s, after the historian
/// has stored some of them (its cursor moved): after a restart and a clean stop, every series'
/// history is exactly its changes in the change log — none twice, none missing — and the unclean
/// stop is kept as a recorded loss (served as `Bad_DataLost`).
#[test]
fn kill_9_during_history_ingest_continues_without_duplicates() {
    use twinloom::change_log::{Reader, Record};
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), server.addr(), "[history]\nretention = \"8h\"\n");
    let log = dir.path().join("change-log");
    let cursor = log.join("cursors/history");
    let _ingest = Ingest::start(&device);
    let run = || {
        Child(
            bin()
                .arg("run")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut first = run();
    // The historian flushes (and moves its cursor) at least every 10 s.
    wait_for("the historian's first flush", || {
        std::fs::read_to_string(&cursor).is_ok_and(|c| c.trim().parse::<u64>().is_ok_and(|o| o > 0))
    });
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let mut reader = Reader::new(&log, 0);
    let mut seen = Vec::new();
    read_on(&mut reader, &mut seen);
    let before = change_count(&seen);
    let second = run();
    wait_for("the restart's changes", || {
        read_on(&mut reader, &mut seen);
        seen.iter()
            .filter(|e| matches!(e.record, Record::Started { .. }))
            .count()
            >= 2
            && change_count(&seen) >= before + 1000
    });
    stop(second);
    drop(server);
    // Every record, as the test's reader saw it while the log had it: once the historian's
    // cursor has passed a segment the log may delete it (it is the only consumer), so a reader
    // from offset 0 after the stop would find a `deleted` gap instead of the first run.
    read_on(&mut reader, &mut seen);
    // The historian stops before the log (the log records what stopping sources change last):
    // what it stored is the log up to its cursor; the rest it reads at the next start.
    let stored_upto: u64 = std::fs::read_to_string(&cursor)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let all: Vec<_> = seen
        .into_iter()
        .filter(|e| e.offset < stored_upto)
        .collect();
    let store = twinloom::history::Store::open(
        &dir.path().join("history"),
        std::time::Duration::from_secs(3600),
    )
    .unwrap();
    let mut gaps_seen = 0;
    for series in 0..INGEST_PROPERTIES as u32 {
        let logged: Vec<(i64, Option<twinloom::twin::Value>)> = all
            .iter()
            .filter_map(|e| match &e.record {
                Record::Change {
                    series: s,
                    value,
                    source_time,
                    server_time,
                    ..
                } if *s == series => Some((
                    twinloom::history::micros(source_time.unwrap_or(*server_time)),
                    value.clone(),
                )),
                _ => None,
            })
            .collect();
        let mut stored = Vec::new();
        let mut gaps = Vec::new();
        store
            .read(series, i64::MIN / 2..i64::MAX / 2, &mut stored, &mut gaps)
            .unwrap();
        stored.sort_by_key(|s| (s.time, s.server_time));
        let stored: Vec<(i64, Option<twinloom::twin::Value>)> =
            stored.into_iter().map(|s| (s.time, s.value)).collect();
        let mut logged = logged;
        logged.sort_by_key(|(t, _)| *t);
        assert_eq!(
            stored.len(),
            logged.len(),
            "series {series}: stored vs logged"
        );
        assert_eq!(stored, logged, "series {series}");
        gaps_seen = gaps.len();
    }
    assert!(gaps_seen >= 1, "the unclean stop is a recorded loss");
}

/// The samples of every ingest series in the history folder `dir`, each in time order.
fn history_of(dir: &Path) -> Vec<Vec<twinloom::history::Sample>> {
    let store = twinloom::history::Store::open(dir, std::time::Duration::from_secs(3600)).unwrap();
    (0..INGEST_PROPERTIES as u32)
        .map(|series| {
            let (mut samples, mut gaps) = (Vec::new(), Vec::new());
            store
                .read(series, i64::MIN / 2..i64::MAX / 2, &mut samples, &mut gaps)
                .unwrap();
            samples.sort_by_key(|s| (s.time, s.server_time));
            samples
        })
        .collect()
}

/// `twinloom backup` while the daemon ingests with `[history]`, then `twinloom restore` into
/// another state folder (refused into the running daemon's): the restored history of every series
/// is what the daemon had stored up to the backup (a prefix of its final history, nothing else),
/// holding at least every change before the restored cursor.
#[test]
fn a_backup_during_ingest_restores_the_history_up_to_it() {
    use twinloom::change_log::{Reader, Record};
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let config = ingest_config(dir.path(), server.addr(), "[history]\nretention = \"8h\"\n");
    let log = dir.path().join("change-log");
    let _ingest = Ingest::start(&device);
    let daemon = Child(
        bin()
            .arg("run")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the historian's first flush", || {
        std::fs::read_to_string(log.join("cursors/history"))
            .is_ok_and(|c| c.trim().parse::<u64>().is_ok_and(|o| o > 0))
    });
    let backup = dir.path().join("backup");
    let made = bin()
        .args(["backup", "--to"])
        .arg(&backup)
        .arg("--state")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let refused = bin()
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--state")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("in use"), "{}", stderr(&refused));
    stop(daemon);
    drop(server);

    let restored_state = dir.path().join("restored");
    let restored = bin()
        .args(["restore", "--from"])
        .arg(&backup)
        .arg("--state")
        .arg(&restored_state)
        .output()
        .unwrap();
    assert!(restored.status.success(), "{}", stderr(&restored));
    // No OPC UA server in this configuration: no PKI to back up.
    for part in ["audit", "change-log/series", "change-log/cursors/history"] {
        assert!(restored_state.join(part).exists(), "{part} restored");
    }
    let cursor: u64 = std::fs::read_to_string(restored_state.join("change-log/cursors/history"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut all = Vec::new();
    read_on(&mut Reader::new(&log, 0), &mut all);
    let finals = history_of(&dir.path().join("history"));
    let backed_up = history_of(&restored_state.join("history"));
    for (series, (full, part)) in finals.iter().zip(&backed_up).enumerate() {
        assert!(
            !part.is_empty(),
            "series {series}: something was stored before the backup"
        );
        assert_eq!(
            &full[..part.len()],
            &part[..],
            "series {series}: a prefix of the history"
        );
        let before_cursor = all
            .iter()
            .filter(|e| {
                e.offset < cursor
                    && matches!(&e.record, Record::Change { series: s, .. } if *s == series as u32)
            })
            .count();
        assert!(
            part.len() >= before_cursor,
            "series {series}: {} < {before_cursor}",
            part.len()
        );
    }
}

/// One failed `fdatasync` of the change log (the `LD_PRELOAD` shim, counting only calls on the
/// log's folder) during ingest: the log never syncs that segment again, goes on in a new segment
/// that starts with a `sync-failed` gap record naming the unsynced offsets, and nothing else is
/// lost; `verify` passes.
#[test]
fn a_failed_fdatasync_of_the_change_log_is_a_gap_and_the_log_goes_on_in_a_new_segment() {
    use twinloom::change_log::{GapReason, Reader, Record};
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("fail_fdatasync.so");
    let built = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(repo("tests/shims/fail_fdatasync.c"))
        .arg("-ldl")
        .output()
        .expect("a C compiler (cc) builds the fdatasync shim");
    assert!(built.status.success(), "{}", stderr(&built));
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let config = ingest_config(dir.path(), server.addr(), "");
    let log = dir.path().join("change-log");
    let mark = dir.path().join("sync-failed");
    let _ingest = Ingest::start(&device);
    // The series table's sync, the first records' sync, then commits: the 6th fails.
    let daemon = Child(
        bin()
            .arg("run")
            .arg(&config)
            .env("LD_PRELOAD", &shim)
            .env("FAIL_SYNC_PATH", &log)
            .env("FAIL_FDATASYNC_AT", "6")
            .env("FAIL_SYNC_MARK", &mark)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut reader = Reader::new(&log, 0);
    let mut seen = Vec::new();
    wait_for("the injected fdatasync failure", || mark.exists());
    wait_for("the sync-failed gap and 2 000 changes after it", || {
        read_on(&mut reader, &mut seen);
        seen.iter()
            .position(|e| {
                matches!(
                    e.record,
                    Record::Gap {
                        reason: GapReason::SyncFailed,
                        ..
                    }
                )
            })
            .is_some_and(|at| change_count(&seen[at..]) >= 2000)
    });
    stop(daemon);
    drop(server);
    read_on(&mut reader, &mut seen);
    let said = change_log_verifies(&log);
    assert!(said.contains("sync-failed"), "{said}");
    for pair in seen.windows(2) {
        assert_eq!(pair[1].offset, pair[0].offset + 1);
    }
    assert_eq!(gap_reasons(&seen), [GapReason::SyncFailed]);
    let (at, void) = seen
        .iter()
        .find_map(|e| match &e.record {
            Record::Gap { void, .. } => Some((e.offset, void.clone())),
            _ => None,
        })
        .unwrap();
    assert!(!void.is_empty() && void.end == at, "{void:?} before {at}");
    // The gap opened a new segment: the failed one was never written again.
    let segments: Vec<String> = std::fs::read_dir(&log)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".log"))
        .collect();
    assert!(
        segments.contains(&format!("{at:020}.log")),
        "{segments:?} has no segment starting at {at}"
    );
    assert!(matches!(
        seen.last().unwrap().record,
        Record::Stopped { .. }
    ));
}

/// `POST path` with no body on `addr` (no `Origin`: not a browser): the status code.
fn http_post(addr: std::net::SocketAddr, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// A counter or gauge's value in a `/metrics` text (0 when absent).
fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// The whole state folder on a 1 MiB tmpfs (mounted in a private mount namespace by
/// `unshare -m`), with `[control] audit_reserve = "128KiB"` (so the change log keeps 256 KiB free
/// on it) and a 600 KiB filler file: the log fills the rest during ingest and stops (readiness
/// `change-log` unmet, the degraded gauge 1) while an OPC UA client (asyncua) keeps receiving new
/// Good values and an operator's disarm over admin HTTP is audited in the same folder; once the
/// filler is removed the log resumes with a `disk-full` gap record counting what it missed, and
/// `verify` passes.
#[test]
fn a_full_state_tmpfs_stops_the_change_log_not_opc_ua_values_or_audited_writes_and_it_resumes_with_a_gap()
 {
    let probe = Command::new("unshare")
        .args(["-m", "true"])
        .output()
        .expect("unshare (util-linux)");
    assert!(
        probe.status.success(),
        "a private mount namespace is needed (root): {}",
        stderr(&probe)
    );
    let Plc {
        device,
        server,
        _runtime: _plc_runtime,
    } = plc(|_| {});
    let free_port = || {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let (admin, opcua) = (free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let head = format!(
        r#"
[admin_http]
listen = "{admin}"

[opcua_server]
listen = "{opcua}"
allow_security_none = true
anonymous = true
auto_trust_clients = true
"#
    );
    let config = ingest_config_in(
        dir.path(),
        &state,
        server.addr(),
        &head,
        "512KiB",
        r#"audit_reserve = "128KiB""#,
    );
    let ingest = Ingest::start(&device);
    let daemon = Child(
        Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(concat!(
                r#"mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && "#,
                r#"dd if=/dev/zero of="$0/filler" bs=4096 count=150 2>/dev/null && "#,
                r#"exec "$1" run "$2""#
            ))
            .arg(&state)
            .arg(env!("CARGO_BIN_EXE_twinloom"))
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // In the daemon's mount namespace (where the tmpfs is): `$0` the state folder, `$1` the
    // binary, `$2` the test's own folder (outside the tmpfs).
    let inside = |script: &str| {
        let output = Command::new("nsenter")
            .args(["-t", &daemon.id().to_string(), "-m", "sh", "-c", script])
            .arg(&state)
            .arg(env!("CARGO_BIN_EXE_twinloom"))
            .arg(dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let metrics = || http_get(admin, "/metrics");
    wait_for("the log writing", || {
        metric(&metrics(), "twinloom_change_log_records_total") >= 1000.0
    });
    wait_for("the log stopped by the full disk", || {
        metric(&metrics(), "twinloom_change_log_degraded") == 1.0
    });
    let ready = http_get(admin, "/readyz");
    assert!(ready.contains("change-log"), "{ready}");
    // An OPC UA client keeps getting new Good values.
    let values = subscribed_values(&format!("opc.tcp://{opcua}/"), "ns=2;s=site/block/p0", 3);
    assert_eq!(metric(&metrics(), "twinloom_change_log_degraded"), 1.0);
    let changes = metric(&metrics(), "twinloom_twin_updates_total");
    wait_for("live values going on", || {
        metric(&metrics(), "twinloom_twin_updates_total") >= changes + 2000.0
    });
    // An operator's disarm is audited, on the same full file system.
    assert_eq!(http_post(admin, "/control/disarm"), 200);
    inside(r#"cp -r "$0/audit" "$2/audit-copy""#);
    let audited = twinloom::runtime::journal::records(&dir.path().join("audit-copy")).unwrap();
    assert!(audited.iter().any(|r| r["kind"] == "disarm"), "{audited:?}");
    assert_eq!(metric(&metrics(), "twinloom_change_log_degraded"), 1.0);
    // Space returns: the log resumes with a gap record.
    inside(r#"rm "$0/filler""#);
    wait_for("the log resumed", || {
        metric(&metrics(), "twinloom_change_log_degraded") == 0.0
    });
    let ready = http_get(admin, "/readyz");
    assert!(!ready.contains("change-log"), "{ready}");
    let records = metric(&metrics(), "twinloom_change_log_records_total");
    wait_for("changes logged after the gap", || {
        metric(&metrics(), "twinloom_change_log_records_total") >= records + 500.0
    });
    // The plant stops changing: the budget (512 KiB) deletes nothing more before the dump.
    drop(ingest);
    let verified = inside(r#""$1" change-log verify "$0/change-log""#);
    assert!(
        verified.contains("every batch's checksum holds"),
        "{verified}"
    );
    let dump = inside(r#""$1" change-log dump "$0/change-log""#);
    let gap = dump
        .lines()
        .find(|l| l.contains(" gap disk-full lost="))
        .unwrap_or_else(|| panic!("no disk-full gap; verify said\n{verified}"));
    let lost: u64 = gap
        .split("lost=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(lost >= 2000, "{gap}");
    let after_gap = dump
        .lines()
        .skip_while(|l| !l.contains(" gap disk-full"))
        .filter(|l| l.contains(" change site/block/p"))
        .count();
    assert!(after_gap >= 500, "{after_gap} changes after the gap");
    // What the client saw were the plant's values, rising.
    assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    stop(daemon);
    drop(server);
}

/// The first `count` distinct values an asyncua client (`tests/peers/opcua_client.py`,
/// anonymous, security None) receives for `node` on the server at `url`, each with status Good.
fn subscribed_values(url: &str, node: &str, count: usize) -> Vec<f64> {
    use std::io::{BufRead, Write};
    let work = tempfile::tempdir().unwrap();
    let mut client = Child(
        Command::new(repo(".venv/bin/python"))
            .arg(repo("tests/peers/opcua_client.py"))
            .args([url, "-", "-"])
            .arg(work.path())
            .arg("None")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut stdin = client.0.stdin.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = client.0.stdout.take().unwrap();
    #[allow(clippy::disallowed_methods)]
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || -> serde_json::Value {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the OPC UA client answered within 60 s");
        serde_json::from_str(&line).unwrap()
    };
    assert_eq!(next()["connected"], true);
    writeln!(stdin, "subscribe {node}").unwrap();
    let mut values: Vec<f64> = Vec::new();
    while values.len() < count {
        let answer = next();
        if answer.get("subscribed").is_some() {
            continue;
        }
        assert_eq!(answer["status"], "Good", "{answer}");
        let value = answer["notification"].as_f64().unwrap();
        if values.last() != Some(&value) {
            values.push(value);
        }
    }
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let _ = client.0.wait();
    values
}

/// Plain `check` of a valid config with an OPC UA source (bindings by NodeId and browse path)
/// opens no socket: only `check --online` asks the servers.
#[test]
fn check_without_online_opens_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("twinloom.toml");
    std::fs::write(
        &file,
        r#"
[[sources.opcua]]
id = "plc"
endpoint = "opc.tcp://127.0.0.1:4840/"
namespaces = { plc = "urn:plc" }

[[types]]
name = "Filler"
properties = [
  { name = "speed", data_type = "float", access = "read-write" },
  { name = "level", data_type = "float" },
]

[[assets]]
path = "site/filler"
type = "Filler"
source = "plc"
bindings.speed = { browse_path = "/plc:Line1/plc:Speed" }
bindings.level = { node_id = "nsu=urn:plc;s=Level" }
"#,
    )
    .unwrap();
    let (code, sockets) = network_syscalls(bin().arg("check").arg(&file));
    assert_eq!(code, Some(0));
    assert!(sockets.is_empty(), "sockets opened: {sockets:?}");
}
