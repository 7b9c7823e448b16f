//! `twinloom demo`: the daemon against the simulated plant, on free loopback ports, with the
//! plugins of `plugins/` built from this source tree.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::app;
use crate::config::sources::SourceConfig;
use crate::config::{self, Config};
use twinloom_sim::plant::Plant;

/// Prints a line to stdout, ignoring a closed pipe (the demo must not die because its reader left).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// The demo configuration, embedded so that `twinloom demo` needs no files.
pub const DEMO_CONFIG: &str = include_str!("../../config/demo.toml");

/// How often the live status line is printed.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(2);

/// The plugin crates the demo runs, in `plugins/`.
pub const DEMO_PLUGINS: [&str; 5] = ["oee", "vibration-health", "energy", "pid", "cold-chain"];

/// The source tree this binary was built from.
fn source_tree() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds the demo's plugins ([`DEMO_PLUGINS`]) as components into `target/wasm/<name>.wasm` of
/// the source tree, where `config/demo.toml` expects them (with `wasm32-wasip2`, or the
/// build-std fallback when rustup cannot add that target). Cargo's progress goes to stderr; a
/// second run only checks that they are up to date.
///
/// Errors: the source tree is gone (an installed binary), no toolchain can build them, or a
/// build fails.
pub fn build_plugins() -> anyhow::Result<Vec<PathBuf>> {
    let root = source_tree();
    let toolchain = crate::plugins::build::Toolchain::Auto.resolve()?;
    DEMO_PLUGINS
        .iter()
        .map(|name| {
            let dir = root.join("plugins").join(name);
            anyhow::ensure!(
                dir.is_dir(),
                "the demo builds its plugins from the source tree, and {} is missing",
                dir.display()
            );
            let target_dir = root.join("target/wasm");
            let options = crate::plugins::build::BuildOptions {
                out: Some(target_dir.join(format!("{name}.wasm"))),
                target_dir: Some(target_dir),
                toolchain,
                native: false,
            };
            crate::plugins::build::build(&dir, &options)
        })
        .collect()
}

/// Parses the embedded demo config as if it were `config/demo.toml` of the source tree (so its
/// plugin paths point at what [`build_plugins`] built).
///
/// Errors: the plugins are not built, or the embedded file is broken (a test guards against that).
pub fn config() -> Result<Config, config::ConfigError> {
    config::parse(&source_tree().join("config/demo.toml"), DEMO_CONFIG)
}

/// Where the demo keeps its state (the OPC UA PKI, the audit log, the control state), private to
/// the user: `$XDG_RUNTIME_DIR/twinloom-demo` when the user has a runtime folder (kept between
/// runs, so clients keep trusting the same certificate), otherwise a fresh temporary folder
/// (`0700`) removed when the returned guard drops. Never a fixed path others could create first.
///
/// Errors: the folder cannot be created or made private, or it belongs to another user.
pub fn private_state() -> std::io::Result<(PathBuf, Option<tempfile::TempDir>)> {
    use std::os::unix::fs::MetadataExt as _;
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute() && dir.is_dir());
    if let Some(runtime) = runtime {
        let dir = runtime.join("twinloom-demo");
        crate::runtime::trusted::private_folder(&dir)?;
        if std::fs::metadata(&dir)?.uid() != std::fs::metadata(&runtime)?.uid() {
            return Err(std::io::Error::other(format!(
                "{} belongs to another user",
                dir.display()
            )));
        }
        return Ok((dir, None));
    }
    let scratch = tempfile::Builder::new()
        .prefix("twinloom-demo-")
        .tempdir()?;
    // Made with the umask's mode (often 0755): made private before anything goes in.
    crate::runtime::trusted::private_folder(scratch.path())?;
    Ok((scratch.path().to_owned(), Some(scratch)))
}

/// Points the demo's sources at the running plant's servers and moves the OPC UA server to a
/// free port when 4840 is taken.
pub fn attach(config: &mut Config, plant: &Plant) {
    if let Some(server) = &mut config.opcua_server
        && std::net::TcpListener::bind(server.listen).is_err()
    {
        server.listen.set_port(0);
    }
    if let Some(admin) = &mut config.admin_http
        && std::net::TcpListener::bind(admin.listen).is_err()
    {
        admin.listen.set_port(0);
    }
    for source in &mut config.sources {
        match source {
            SourceConfig::Modbus(modbus) if modbus.id == "line-plc" => {
                modbus.tcp = Some(plant.line_plc.addr().to_string());
            }
            SourceConfig::Modbus(modbus) if modbus.id == "utilities-gw" => {
                modbus.rtu_over_tcp = Some(plant.utilities.addr().to_string());
            }
            SourceConfig::OpcUa(opcua) if opcua.id == "quality-lab" => {
                opcua.endpoint = plant.lab.endpoint_url.clone();
            }
            _ => {}
        }
    }
}

/// Runs the plant and the daemon until `shutdown` resolves, printing a status line every
/// [`STATUS_INTERVAL`].
///
/// Errors: the plant's servers cannot bind, or a daemon component fails.
pub async fn run(
    mut config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let plant = Plant::start().await?;
    attach(&mut config, &plant);
    let (state_dir, _scratch) =
        private_state().context("cannot make the demo's private state folder")?;
    config.daemon.state_dir = Some(state_dir.clone());
    let handles = app::start(&config).await?;
    say!("Twinloom demo: a simulated bottling plant on loopback");
    say!("  state (PKI, audit)             {}", state_dir.display());
    say!("  line PLC (Modbus TCP)          {}", plant.line_plc.addr());
    say!(
        "  utilities gateway (RTU/TCP)    {}",
        plant.utilities.addr()
    );
    if let Some(server) = &handles.opcua {
        say!("  OPC UA server                  {}", server.endpoint_url);
        say!(
            "    security None or Basic256Sha256/Aes*; anonymous (read) or operator/operator (write)"
        );
    }
    if let Some(admin) = handles.admin_http {
        say!("  health and metrics             http://{admin}/metrics");
    }
    for plugin in &config.plugins {
        say!(
            "  plugin {:<23} {}",
            plugin.name,
            config
                .resolve(&plugin.file)
                .canonicalize()
                .unwrap_or_else(|_| config.resolve(&plugin.file))
                .display()
        );
    }
    if handles.control.is_armed() {
        say!("  plant ARMED by the demo's config: plugin tank1-pid writes the tank's heater power");
    }
    say!(
        "  twin: {} assets, {} properties. Ctrl-C stops.",
        handles.twin.model().assets().len(),
        handles.twin.model().properties().len()
    );
    let mut tick = tokio::time::interval(STATUS_INTERVAL);
    tick.tick().await;
    let mut last = handles.twin.stats().changes;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = handles.supervisor.cancelled() => break,
            _ = tick.tick() => {
                let stats = handles.twin.stats();
                let (good, uncertain, bad) = handles.twin.quality_counts();
                let up = config.sources.iter().filter(|s| handles.readiness.is_source_connected(s.id())).count();
                let rate = (stats.changes - last) as f64 / STATUS_INTERVAL.as_secs_f64();
                last = stats.changes;
                say!(
                    "sources {up}/{} up · properties {good} good, {uncertain} uncertain, {bad} bad · {rate:.0} updates/s{}",
                    config.sources.len(),
                    plugin_figures(&handles.twin)
                );
            }
        }
    }
    say!("Stopping");
    // A deadline overrun is logged by the supervisor.
    handles
        .supervisor
        .shutdown(config.daemon.shutdown_timeout)
        .await;
    plant.stop().await;
    match handles.supervisor.fatal_error() {
        Some(message) => anyhow::bail!(message),
        None => Ok(()),
    }
}

/// The plugins' headline figures for the status line, where they are good.
fn plugin_figures(twin: &crate::twin::Twin) -> String {
    let figure = |path: &str| {
        let id = twin.model().property_by_path(path)?;
        let sample = twin.sample(id);
        sample
            .value
            .as_ref()
            .and_then(crate::twin::Value::as_f64)
            .filter(|_| sample.quality.is_good())
    };
    let mut out = String::new();
    if let Some(oee) = figure("demo-plant/line1/filler/oee") {
        out += &format!(" · OEE {oee:.0} %");
    }
    if let Some(z) = figure("demo-plant/utilities/pump1/anomaly_score") {
        out += &format!(" · pump z {z:+.1}");
    }
    if let Some(kwh) = figure("demo-plant/energy/main/energy_per_unit") {
        out += &format!(" · {:.1} Wh/bottle", kwh * 1000.0);
    }
    let tank = |name: &str| figure(&format!("demo-plant/utilities/tank1/{name}"));
    if let (Some(sp), Some(pv), Some(op)) = (
        tank("temperature_setpoint"),
        tank("temperature"),
        tank("heater_power"),
    ) {
        out += &format!(" · tank SP {sp:.1} PV {pv:.1} °C, heater {op:.1} kW");
    }
    let fridge = |name: &str| figure(&format!("demo-plant/pharmacy/fridge1/{name}"));
    if let (Some(t), Some(mkt), Some(state)) = (
        fridge("temperature"),
        fridge("mkt"),
        fridge("excursion_state"),
    ) {
        let state = match state as u8 {
            0 => "ok",
            1 => "EXCURSION",
            _ => "ALARM",
        };
        out += &format!(" · fridge {t:.1} °C (MKT {mkt:.1}) {state}");
    }
    out
}
