//! Measurement method shared by the benchmarks (`modbus`, `opcua`, `opcua_source`, `control`,
//! `plugins`, `change_log`, `webview`), and the upstream OPC UA server two of them run ([`upstream`]).
//!
//! - Every comparison alternates its sides (A B A B …) over several rounds and prints the median
//!   ratio with its spread (lowest and highest round), so a slow phase of the machine lands on
//!   both sides instead of on one.
//! - CPU is the process's own accounting (the scheduler's run time of its threads,
//!   `/proc/PID/task/*/schedstat`, in nanoseconds) over fixed windows after warm-up, divided by
//!   each window's wall time.
//! - Every report starts with the machine: core count and CPU model.
//! - Instruction counts come from valgrind's callgrind, which counts instructions, not seconds: the
//!   same binary on the same input gives the same count whatever else the machine does.
#![allow(dead_code)]

pub mod upstream;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Rounds of A B alternation per comparison.
pub const ROUNDS: usize = 5;

/// The machine the figures come from, e.g. `2 cores, Intel(R) Xeon(R) Processor`.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cores} cores, {model}")
}

/// Prints the benchmark's heading and the machine.
pub fn heading(title: &str) {
    println!("{title}");
    println!("machine: {}", machine());
}

/// The median of `values` (sorted copy; the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    assert!(n > 0, "median of nothing");
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Lowest and highest of `values`.
pub fn spread(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// One side's figures and the per-round ratios `b / a` of an alternated comparison.
#[derive(Debug, Clone, Default)]
pub struct Alternated {
    /// Side A's figure per round.
    pub a: Vec<f64>,
    /// Side B's figure per round.
    pub b: Vec<f64>,
}

impl Alternated {
    /// Per-round ratios `b / a`.
    pub fn ratios(&self) -> Vec<f64> {
        self.a.iter().zip(&self.b).map(|(a, b)| b / a).collect()
    }

    /// Median of the per-round ratios `b / a`.
    pub fn median_ratio(&self) -> f64 {
        median(&self.ratios())
    }

    /// `median (lowest–highest)` of the per-round ratios, e.g. `0.912 (0.897–0.931)`.
    pub fn ratio_text(&self, digits: usize) -> String {
        figure_text(&self.ratios(), digits)
    }
}

/// Figure `i` of each round of one side (each round a row of figures a child process printed).
pub fn column(side: &[Vec<f64>], i: usize) -> Vec<f64> {
    side.iter().map(|f| f[i]).collect()
}

/// Per round, figure `i` of `with` minus the same of `without`: what the subject adds.
pub fn added(with: &[Vec<f64>], without: &[Vec<f64>], i: usize) -> Vec<f64> {
    column(with, i)
        .iter()
        .zip(column(without, i))
        .map(|(b, a)| b - a)
        .collect()
}

/// `median (lowest–highest)` of `values` with `digits` decimals.
pub fn figure_text(values: &[f64], digits: usize) -> String {
    let (lo, hi) = spread(values);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(values))
}

/// CPU time process `pid` has used so far: the sum of its threads' run time from
/// `/proc/PID/task/TID/schedstat` (first field, nanoseconds; the scheduler's own accounting, so a
/// 3 s window resolves far below 0.1 % of a core, where `utime + stime` of `/proc/PID/stat` count
/// in 10 ms ticks). Threads that exit during a window are not counted: the daemon's runtime
/// threads live as long as the process. Zero when the process is gone.
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let nanos: u64 = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// Peak resident set size (`VmHWM` of `/proc/PID/status`) of process `pid`, in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

/// CPU share of process `pid` over a fixed window: its CPU time during the window divided by the
/// window's wall time, in % of one core. `wait` must sleep for the window (it is called once).
pub async fn cpu_percent_over<F: std::future::Future<Output = ()>>(
    pid: u32,
    wait: impl FnOnce() -> F,
) -> (f64, Duration) {
    let (cpu0, t0) = (cpu_time(pid), std::time::Instant::now());
    wait().await;
    let wall = t0.elapsed();
    let cpu = cpu_time(pid).saturating_sub(cpu0);
    (cpu.as_secs_f64() / wall.as_secs_f64() * 100.0, wall)
}

/// Instructions counted by callgrind for this benchmark binary re-run with `vars` set, or why
/// there is no count (valgrind missing, or the run failed). The count is the `summary:` line of
/// the callgrind output: every instruction of the process, user space only.
pub fn callgrind_instructions(vars: &[(&str, String)]) -> Result<u64, String> {
    callgrind_instructions_in(vars, None)
}

/// [`callgrind_instructions`] counting only inside functions whose name matches `function` (a
/// callgrind `--toggle-collect` pattern such as `*apply_step*`; mark the function
/// `#[inline(never)]`), so the set-up around them is not counted.
pub fn callgrind_instructions_in(
    vars: &[(&str, String)],
    function: Option<&str>,
) -> Result<u64, String> {
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new("valgrind");
    if let Some(function) = function {
        command
            .arg("--collect-atstart=no")
            .arg(format!("--toggle-collect={function}"));
    }
    let status = command
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.path().display()))
        .arg("--quiet")
        .arg(&exe)
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .status()
        .map_err(|e| format!("valgrind: {e} (install Debian's valgrind)"))?;
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    summary(out.path())
}

fn summary(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary:"))
        .or_else(|| text.lines().find_map(|l| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no summary line in {}", path.display()))
}
