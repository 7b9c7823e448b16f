//! The `twinloom` binary as an operator meets it: `check`, `run` with a bad config, `--version`.

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

#[test]
fn demo_brings_the_simulated_plant_up_and_stops_cleanly_on_sigint() {
    use std::io::{BufRead, BufReader};
    let mut child = bin()
        .arg("demo")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut all_good = None;
    let mut lines = Vec::new();
    for line in stdout.lines() {
        let line = line.unwrap();
        lines.push(line.clone());
        // "sources 3/3 up · properties 31 good, 0 uncertain, 0 bad · 12 updates/s · OEE 71 % ·
        // pump z +0.3 · 9.8 Wh/bottle": every property, those the three plugins derive included.
        if line.starts_with("sources 3/3 up · properties 31 good, 0 uncertain, 0 bad") {
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
}
