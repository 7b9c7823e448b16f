//! Plugin call benchmark (issues: Wasm plugins, contract 0.3, native plugins). Run with
//! `cargo bench -p twinloom --features plugin-tools --bench plugins`.
//!
//! Per-sample cost of the vibration-health plugin's `on-changes` for batches of 1, 64 and 1024
//! samples, four ways, interleaved (plain, Wasm, Wasm with fuel, native, native through its
//! thread, the batch only) over [`support::ROUNDS`] rounds:
//! - **plain**: the plugin crate's `Plugin` implementation called as a Rust function (the
//!   reference);
//! - **wasm**: the WebAssembly component through the daemon's host exactly as the runner calls it
//!   (lowering the column-wise batch, epoch deadline, lifting the outputs), on a host without
//!   fuel metering (the daemon's default) and, for comparison, on one that meters fuel;
//! - **native**: the same source built as a native library (`plugin build --native`), called
//!   through the C ABI on the calling thread (`LocalInstance`: the native call itself, with the
//!   SDK's copy of the batch and the host's copy of the outputs);
//! - **native+thread**: the same through `NativeInstance`, as the runner calls it: handed to the
//!   instance's own thread and back.
//!
//! Each figure is the median with its spread (lowest and highest round), each ratio the median of
//! the per-round ratios. Checks the targets: at a batch of 1024, Wasm ≤ 1.5 × plain and native
//! ≤ 1.05 × plain per sample; the fixed cost of a call (at a batch of 1, minus plain) ≤ 0.3 µs for
//! Wasm and ≤ 0.05 µs for native; the hand-off to the instance's thread ≤ 2 µs.
//!
//! The component and the library are built first (`twinloom plugin build [--native]
//! plugins/vibration-health`, into target/wasm and target/native).

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use std::sync::Arc;

use twinloom::plugins::contract::{self, Limits};
use twinloom::plugins::native::{LocalInstance, NativeHost};
use twinloom::plugins::runtime::{PluginInstance, PluginRuntime};
use twinloom::plugins::stdio::LogBudget;
use twinloom::plugins::wasm::WasmHost;
use twinloom_plugin::{Call, Plugin};
use twinloom_vibration_health::VibrationHealth;

/// Samples per measurement, so that every batch size runs about as long.
const SAMPLES: usize = 2_000_000;
const BATCHES: [usize; 3] = [1, 64, 1024];
const CONFIG: &str = "alpha = 0.1\nwarmup = 10\ntrend_window = 600";

/// A deterministic vibration signal: 2 mm/s with ±0.3 of pseudo-random noise, one sample per
/// 10 ms of source time, on 8 pumps.
struct Signal {
    state: u64,
    time_ms: i64,
}

impl Signal {
    fn batch(&mut self, n: usize) -> (Vec<u32>, Vec<f64>, Vec<i64>) {
        let mut properties = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        let mut times = Vec::with_capacity(n);
        for i in 0..n {
            self.state = self
                .state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let noise = (self.state >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            self.time_ms += 10;
            properties.push((i % 8) as u32);
            values.push(2.0 + 0.6 * noise);
            times.push(self.time_ms);
        }
        (properties, values, times)
    }
}

impl Signal {
    /// The next `n` samples as the host's batch type.
    fn host_batch(&mut self, n: usize) -> contract::ChangeBatch {
        let (properties, values, times) = self.batch(n);
        // Filled, as the runner fills its batches and the plain side its qualities: `vec![0; n]`
        // would take zeroed memory (`calloc`), which glibc does not serve from its thread cache,
        // so every call would go through the allocator's slow paths (measured: ≈ 100 ns more at
        // a batch of 1).
        let mut qualities = Vec::with_capacity(n);
        qualities.resize(n, contract::quality_byte(contract::Quality::Good));
        contract::ChangeBatch {
            properties,
            values,
            qualities,
            source_times_ms: times,
        }
    }

    /// The next `n` samples as the runner hands them over (shared with the call).
    fn wasm_batch(&mut self, n: usize) -> Arc<contract::ChangeBatch> {
        Arc::new(self.host_batch(n))
    }
}

/// The properties of 8 pumps: their vibration inputs and the four values derived from each.
fn properties() -> contract::Properties {
    let pumps = || (0..8).map(|i| format!("plant/pump{i}"));
    contract::Properties {
        inputs: pumps().map(|p| format!("{p}/vibration_rms")).collect(),
        owned: pumps()
            .flat_map(|p| {
                [
                    "vibration_ewma",
                    "anomaly_score",
                    "vibration_trend",
                    "time_to_alarm",
                ]
                .map(|name| format!("{p}/{name}"))
            })
            .collect(),
        writable: Vec::new(),
    }
}

/// The same properties as the SDK's type, for the native side.
fn sdk_properties() -> twinloom_plugin::Properties {
    let wire = properties();
    twinloom_plugin::Properties {
        inputs: wire.inputs,
        owned: wire.owned,
        writable: Vec::new(),
    }
}

/// Nanoseconds per sample of `call` over batches of `n`: a tenth of the calls as warm-up, then
/// the timed calls.
fn measure(n: usize, mut call: impl FnMut(&mut Signal)) -> f64 {
    let calls = (SAMPLES / n).max(2_000);
    let mut signal = Signal {
        state: 42,
        time_ms: 1_700_000_000_000,
    };
    for _ in 0..calls / 10 {
        call(&mut signal);
    }
    let started = Instant::now();
    for _ in 0..calls {
        call(&mut signal);
    }
    started.elapsed().as_nanos() as f64 / (calls * n) as f64
}

fn main() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(repo.join("target/wasm")),
        ..Default::default()
    };
    let file = twinloom::plugins::build::build(&repo.join("plugins/vibration-health"), &options)
        .expect("the vibration-health component builds");
    let native_options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(repo.join("target/native")),
        native: true,
        ..Default::default()
    };
    let library =
        twinloom::plugins::build::build(&repo.join("plugins/vibration-health"), &native_options)
            .expect("the vibration-health native library builds");
    let state = tempfile::tempdir().unwrap();
    let native_host = NativeHost::new(state.path());
    let library = native_host
        .load(&std::fs::read(&library).unwrap())
        .expect("the native library loads");
    let bytes = std::fs::read(&file).unwrap();
    let host = WasmHost::new(false).unwrap();
    let component = host.compile(&bytes).expect("compiles");
    // A component that ignores its input (hand-written WAT): what passing the batch costs.
    let empty = std::fs::read_to_string(repo.join("daemon/src/plugins/testdata/template.wat"))
        .unwrap()
        .replace("{{INIT}}", "")
        .replace("{{DATA}}", "")
        // Its bump allocator never frees: start over on every call (the batch is not read).
        .replace("{{CHANGES}}", "(global.set $heap (i32.const 1024))")
        .replace("{{TICK}}", "");
    let empty = host.compile(empty.as_bytes()).expect("compiles");
    let metered_host = WasmHost::new(true).unwrap();
    let metered_component = metered_host.compile(&bytes).expect("compiles");
    let limits = Limits {
        deadline: Duration::from_secs(1),
        ..Limits::default()
    };
    support::heading(&format!(
        "vibration-health on-changes, per sample (8 assets; outputs every call; {} alternating rounds, median (lowest–highest))",
        support::ROUNDS
    ));
    // The floor: an `on-tick` with nothing in and nothing out, on the component that ignores its
    // input, against a native call of the SDK's empty tick.
    let mut floor = Vec::new();
    {
        let mut ignoring = host.instantiate("bench", &empty, limits).unwrap();
        ignoring.init(0, CONFIG, &properties()).unwrap().unwrap();
        let none: Arc<[contract::ProposalOutcome]> = Arc::from(Vec::new());
        for _ in 0..support::ROUNDS {
            floor.push(measure(1, |_| {
                black_box(ignoring.on_tick(0, black_box(&none)).unwrap());
            }));
        }
    }
    println!(
        "empty call (on-tick, nothing in or out): {} ns",
        support::figure_text(&floor, 1)
    );
    let (mut at_1024, mut at_1) = (None, None);
    for n in BATCHES {
        let mut native = VibrationHealth::new(CONFIG, &sdk_properties()).unwrap();
        let mut local = LocalInstance::new("bench", &library, limits.outputs, LogBudget::new());
        local.init(CONFIG, &properties()).unwrap().unwrap();
        let mut threaded = native_host.instantiate("bench", &library, limits).unwrap();
        threaded.init(0, CONFIG, &properties()).unwrap().unwrap();
        let mut instance = host.instantiate("bench", &component, limits).unwrap();
        instance.init(0, CONFIG, &properties()).unwrap().unwrap();
        let metered_limits = Limits {
            fuel: Some(u64::MAX / 4),
            ..limits
        };
        let mut metered = metered_host
            .instantiate("bench", &metered_component, metered_limits)
            .unwrap();
        metered.init(0, CONFIG, &properties()).unwrap().unwrap();
        let mut ignoring = host.instantiate("bench", &empty, limits).unwrap();
        ignoring.init(0, CONFIG, &properties()).unwrap().unwrap();
        let none: Arc<[contract::ProposalOutcome]> = Arc::from(Vec::new());
        let call = Call::at(0);
        // The native sides' outputs go where the runner keeps them: one buffer from call to call.
        let (mut local_out, mut thread_out) =
            (contract::Outputs::default(), contract::Outputs::default());
        let (mut wasm, mut fuel, mut lib, mut thread) = (
            support::Alternated::default(),
            support::Alternated::default(),
            support::Alternated::default(),
            support::Alternated::default(),
        );
        let mut passing = Vec::new();
        for _ in 0..support::ROUNDS {
            let native_ns = measure(n, |signal| {
                let (properties, values, times) = signal.batch(n);
                let batch = twinloom_plugin::OwnedBatch {
                    properties,
                    values,
                    qualities: vec![twinloom_plugin::Quality::Good; n],
                    source_times_ms: times,
                };
                black_box(native.on_changes(black_box(&batch.view()), &call));
            });
            let wasm_ns = measure(n, |signal| {
                let batch = signal.wasm_batch(n);
                black_box(instance.on_changes(0, black_box(&batch), &none).unwrap());
            });
            let fuel_ns = measure(n, |signal| {
                let batch = signal.wasm_batch(n);
                black_box(metered.on_changes(0, black_box(&batch), &none).unwrap());
            });
            // On the calling thread the batch is lent, as the plain side's is (no `Arc`).
            let local_ns = measure(n, |signal| {
                let batch = signal.host_batch(n);
                local
                    .on_changes(0, black_box(&batch), &none, &mut local_out)
                    .unwrap();
                black_box(&local_out);
            });
            let thread_ns = measure(n, |signal| {
                let batch = signal.wasm_batch(n);
                threaded
                    .on_changes(0, black_box(&batch), &none, &mut thread_out)
                    .unwrap();
                black_box(&thread_out);
            });
            lib.a.push(native_ns);
            lib.b.push(local_ns);
            thread.a.push(local_ns);
            thread.b.push(thread_ns);
            passing.push(measure(n, |signal| {
                let batch = signal.wasm_batch(n);
                black_box(ignoring.on_changes(0, black_box(&batch), &none).unwrap());
            }));
            wasm.a.push(native_ns);
            wasm.b.push(wasm_ns);
            fuel.a.push(native_ns);
            fuel.b.push(fuel_ns);
        }
        println!("batch {n}:");
        println!(
            "    plain fn ns/sample      {}",
            support::figure_text(&wasm.a, 1)
        );
        println!(
            "    wasm ns/sample          {}",
            support::figure_text(&wasm.b, 1)
        );
        println!("    wasm / plain            {}×", wasm.ratio_text(2));
        println!(
            "    wasm+fuel ns/sample     {}",
            support::figure_text(&fuel.b, 1)
        );
        println!("    wasm+fuel / plain       {}×", fuel.ratio_text(2));
        println!(
            "    native ns/sample        {}",
            support::figure_text(&lib.b, 1)
        );
        println!("    native / plain          {}×", lib.ratio_text(3));
        println!(
            "    native+thread ns/sample {}",
            support::figure_text(&thread.b, 1)
        );
        println!(
            "    passing the batch only  {} ns/sample",
            support::figure_text(&passing, 1)
        );
        let median = support::median;
        if n == 1 {
            at_1 = Some((
                median(&wasm.a),
                median(&wasm.b),
                median(&lib.b),
                median(&thread.b),
            ));
        }
        if n == 1024 {
            at_1024 = Some((wasm.median_ratio(), lib.median_ratio()));
        }
    }
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    if let Some((wasm, native)) = at_1024 {
        println!(
            "target at 1024: wasm / plain {wasm:.3}× ≤ 1.5×: {}",
            verdict(wasm <= 1.5)
        );
        println!(
            "target at 1024: native / plain {native:.3}× ≤ 1.05×: {}",
            verdict(native <= 1.05)
        );
    }
    if let Some((plain, wasm, native, threaded)) = at_1 {
        let fixed = (wasm - plain) / 1000.0;
        println!(
            "target: Wasm fixed cost per call (wasm − plain at a batch of 1) {fixed:.3} µs ≤ 0.3 µs: {}",
            verdict(fixed <= 0.3)
        );
        let fixed = (native - plain) / 1000.0;
        println!(
            "target: native fixed cost per call (native − plain at a batch of 1) {fixed:.3} µs ≤ 0.05 µs: {}",
            verdict(fixed <= 0.05)
        );
        let hand_off = (threaded - native) / 1000.0;
        println!(
            "target: hand-off to the instance's thread (native+thread − native at a batch of 1) {hand_off:.3} µs ≤ 2 µs: {}",
            verdict(hand_off <= 2.0)
        );
    }
}
