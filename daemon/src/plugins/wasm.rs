//! The WebAssembly host: wasmtime's component model, one store per plugin instance.
//!
//! Sandboxing: each instance has a memory cap ([`wasmtime::StoreLimits`]), a wall-clock deadline
//! per call (epoch interruption: a host thread advances the engine's epoch every
//! [`EPOCH_TICK`]), and optional fuel accounting. WASI p2 is linked with an empty context: no
//! files, sockets, environment or arguments; stdout and stderr go to the log line by line
//! ([`super::stdio`]) next to the `log` import. A trap, a deadline overrun or a memory-cap breach fails the call with a
//! [`PluginError`]; the instance must then be discarded (its state is unknown).

use std::time::Duration;

use super::stdio::{LogStream, Stdio};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

wasmtime::component::bindgen!({
    path: "../plugin-api/wit",
    world: "plugin",
});

pub use twinloom::plugin::types::{DerivedValue, Level, Quality, WriteProposal};

/// The byte `quality` travels as in a [`ChangeBatch`]'s `qualities` column (contract 0.2:
/// `list<u8>`, one copy into the component instead of a conversion per element).
pub const fn quality_byte(quality: Quality) -> u8 {
    match quality {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
    }
}

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The component could not be compiled or instantiated (not a component, wrong world).
    #[error("cannot load the plugin: {0}")]
    Load(String),
    /// The call ran past its deadline and was interrupted.
    #[error("call exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// The instance tried to grow its memory past the cap.
    #[error("memory cap of {0} bytes exceeded")]
    MemoryCap(usize),
    /// The call used up its fuel.
    #[error("call ran out of fuel")]
    OutOfFuel,
    /// The guest trapped (panic, unreachable, out-of-bounds access, ...).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The host side of the call panicked or was cancelled (a defect of Twinloom or its engine,
    /// contained as this plugin's fault).
    #[error("the host failed during the call: {0}")]
    HostPanic(String),
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most linear memory the instance may have, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Fuel (≈ wasm instructions) one call may use; `None` for no fuel metering.
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * 1024 * 1024,
            deadline: Duration::from_millis(100),
            fuel: None,
        }
    }
}

/// What a store holds for its instance.
#[allow(
    missing_debug_implementations,
    reason = "holds wasmtime state without Debug"
)]
pub struct PluginState {
    name: String,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl twinloom::plugin::types::Host for PluginState {}

impl twinloom::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        let plugin = self.name.as_str();
        let message = super::stdio::one_line(&message);
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
    }
}

/// The engine and linker every plugin instance shares.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    fuel: bool,
    linker: std::sync::Arc<Linker<PluginState>>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasmHost")
    }
}

impl WasmHost {
    /// An engine with the component model and epoch interruption, and a linker with WASI p2 and
    /// the `host` interface. With `fuel`, the engine meters fuel (every instance then counts it,
    /// and [`Limits::fuel`] can cap it); without, generated code skips the counting, which costs
    /// about a third of a plugin's speed (see `benches/plugins.rs`). Starts the epoch thread (it
    /// ends when the engine is dropped).
    ///
    /// Errors: wasmtime cannot create the engine on this machine.
    pub fn new(fuel: bool) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.consume_fuel(fuel);
        let wasm = |e: wasmtime::Error| anyhow::anyhow!("{e:#}");
        let engine = Engine::new(&config).map_err(wasm)?;
        let mut linker = Linker::<PluginState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm)?;
        Plugin::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |state| state)
            .map_err(wasm)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("twinloom-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Self {
            engine,
            fuel,
            linker: std::sync::Arc::new(linker),
        })
    }

    /// Compiles a component from its binary (or WAT text).
    ///
    /// Errors: [`PluginError::Load`] when the bytes are not a valid component.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        Component::new(&self.engine, bytes).map_err(|e| PluginError::Load(format!("{e:#}")))
    }

    /// Instantiates `component` in a fresh store with `limits`.
    ///
    /// Errors: [`PluginError::Load`] when the component does not implement the `plugin` world, or
    /// `limits` caps fuel on a host made without fuel metering.
    pub fn instantiate(
        &self,
        name: &str,
        component: &Component,
        limits: Limits,
    ) -> Result<Instance, PluginError> {
        let state = PluginState {
            name: name.to_owned(),
            wasi: WasiCtxBuilder::new()
                .stdout(LogStream::new(name, Stdio::Stdout))
                .stderr(LogStream::new(name, Stdio::Stderr))
                .build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .instances(16)
                .build(),
        };
        if limits.fuel.is_some() && !self.fuel {
            return Err(PluginError::Load(
                "a fuel limit needs a host with fuel metering".into(),
            ));
        }
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limits);
        let mut instance = Instance {
            store,
            plugin: None,
            limits,
            metered: self.fuel,
            fuel_used: 0,
        };
        instance.prepare();
        let plugin = Plugin::instantiate(&mut instance.store, component, &self.linker)
            .map_err(|e| instance.classify(&e))?;
        instance.plugin = Some(plugin);
        Ok(instance)
    }
}

/// One plugin instance: its store and its exports.
pub struct Instance {
    store: Store<PluginState>,
    plugin: Option<Plugin>,
    limits: Limits,
    metered: bool,
    fuel_used: u64,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Instance {
    fn prepare(&mut self) {
        let ticks = (self.limits.deadline.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64;
        self.store.set_epoch_deadline(ticks);
        // With fuel metering on in the engine, every call needs fuel: "unmetered" means plenty.
        if self.metered {
            let _ = self
                .store
                .set_fuel(self.limits.fuel.unwrap_or(u64::MAX / 2));
        }
    }

    fn after(&mut self) {
        if !self.metered {
            return;
        }
        let budget = self.limits.fuel.unwrap_or(u64::MAX / 2);
        if let Ok(left) = self.store.get_fuel() {
            self.fuel_used += budget.saturating_sub(left);
        }
    }

    fn classify(&self, error: &wasmtime::Error) -> PluginError {
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginError::Deadline(self.limits.deadline),
            Some(wasmtime::Trap::OutOfFuel) => PluginError::OutOfFuel,
            _ => {
                let text = format!("{error:#}");
                if text.contains("forcing trap when growing memory")
                    || text.contains("memory minimum size")
                {
                    PluginError::MemoryCap(self.limits.memory_bytes)
                } else {
                    PluginError::Trap(text)
                }
            }
        }
    }

    fn call<R>(
        &mut self,
        f: impl FnOnce(&Plugin, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.prepare();
        let Some(plugin) = self.plugin.as_ref() else {
            return Err(PluginError::Load("instance is not initialised".into()));
        };
        let result = f(plugin, &mut self.store);
        self.after();
        result.map_err(|e| self.classify(&e))
    }

    /// Calls `init`. The outer error is a fault (trap, deadline, memory); the inner one is the
    /// plugin refusing its configuration.
    pub fn init(
        &mut self,
        config: &str,
        properties: &[String],
    ) -> Result<Result<(), String>, PluginError> {
        self.call(|plugin, store| plugin.call_init(store, config, properties))
    }

    /// Calls `on-changes`.
    ///
    /// Errors: a fault; the instance must be discarded.
    pub fn on_changes(&mut self, batch: &ChangeBatch) -> Result<Outputs, PluginError> {
        self.call(|plugin, store| plugin.call_on_changes(store, batch))
    }

    /// Calls `on-tick`.
    ///
    /// Errors: a fault; the instance must be discarded.
    pub fn on_tick(&mut self, now_ms: i64) -> Result<Outputs, PluginError> {
        self.call(|plugin, store| plugin.call_on_tick(store, now_ms))
    }

    /// Fuel (≈ wasm instructions) used by every call so far; 0 on a host without fuel metering.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }
}

impl super::runtime::PluginRuntime for WasmHost {
    type Component = Component;
    type Instance = Instance;

    fn load(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        self.compile(bytes)
    }

    fn instantiate(
        &self,
        name: &str,
        component: &Component,
        limits: Limits,
    ) -> Result<Instance, PluginError> {
        Self::instantiate(self, name, component, limits)
    }
}

impl super::runtime::PluginInstance for Instance {
    fn init(&mut self, config: &str, inputs: &[String]) -> Result<Result<(), String>, PluginError> {
        Self::init(self, config, inputs)
    }

    fn on_changes(&mut self, batch: &ChangeBatch) -> Result<Outputs, PluginError> {
        Self::on_changes(self, batch)
    }

    fn on_tick(&mut self, now_ms: i64) -> Result<Outputs, PluginError> {
        Self::on_tick(self, now_ms)
    }

    fn fuel_used(&self) -> u64 {
        Self::fuel_used(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = include_str!("testdata/template.wat");

    /// A component whose `on-changes` and `on-tick` run `changes` and `tick` (WAT instructions) first.
    fn component(host: &WasmHost, changes: &str, tick: &str) -> Component {
        let text = TEMPLATE
            .replace("{{CHANGES}}", changes)
            .replace("{{TICK}}", tick)
            .replace("{{DATA}}", "")
            .replace("{{INIT}}", "");
        host.compile(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn batch() -> ChangeBatch {
        ChangeBatch {
            properties: vec![0, 1],
            values: vec![1.5, 2.5],
            qualities: vec![quality_byte(Quality::Good), quality_byte(Quality::Bad)],
            source_times_ms: vec![1, 2],
        }
    }

    #[test]
    fn a_well_behaved_component_answers() {
        let host = WasmHost::new(true).unwrap();
        let mut instance = host
            .instantiate("good", &component(&host, "", ""), Limits::default())
            .unwrap();
        assert_eq!(instance.init("x = 1", &["a/b/c".into()]).unwrap(), Ok(()));
        let outputs = instance.on_changes(&batch()).unwrap();
        assert!(outputs.values.is_empty() && outputs.proposals.is_empty());
        assert!(
            instance
                .on_tick(1_700_000_000_000)
                .unwrap()
                .values
                .is_empty()
        );
        assert!(instance.fuel_used() > 0);
    }

    #[test]
    fn an_endless_loop_is_interrupted_at_the_deadline() {
        let host = WasmHost::new(true).unwrap();
        let limits = Limits {
            deadline: Duration::from_millis(50),
            ..Limits::default()
        };
        let mut instance = host
            .instantiate("loop", &component(&host, "", "(loop $l (br $l))"), limits)
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(
            instance.on_tick(0).err(),
            Some(PluginError::Deadline(Duration::from_millis(50)))
        );
        // Interrupted within a few epoch ticks of the deadline (bounded, not timed for luck).
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_memory_bomb_hits_the_cap() {
        let host = WasmHost::new(true).unwrap();
        let limits = Limits {
            memory_bytes: 4 * 1024 * 1024,
            ..Limits::default()
        };
        let bomb = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))";
        let mut instance = host
            .instantiate("bomb", &component(&host, bomb, ""), limits)
            .unwrap();
        assert_eq!(
            instance.on_changes(&batch()).err(),
            Some(PluginError::MemoryCap(4 * 1024 * 1024))
        );
    }

    #[test]
    fn a_trap_is_reported_and_fuel_runs_out() {
        let host = WasmHost::new(true).unwrap();
        let mut instance = host
            .instantiate(
                "trap",
                &component(&host, "unreachable", ""),
                Limits::default(),
            )
            .unwrap();
        assert!(matches!(
            instance.on_changes(&batch()),
            Err(PluginError::Trap(_))
        ));
        let limits = Limits {
            fuel: Some(10_000),
            deadline: Duration::from_secs(10),
            ..Limits::default()
        };
        let mut hungry = host
            .instantiate("fuel", &component(&host, "", "(loop $l (br $l))"), limits)
            .unwrap();
        assert_eq!(hungry.on_tick(0).err(), Some(PluginError::OutOfFuel));
    }

    #[test]
    fn something_that_is_not_a_component_is_refused() {
        let host = WasmHost::new(true).unwrap();
        assert!(matches!(
            host.compile(b"not wasm"),
            Err(PluginError::Load(_))
        ));
        let core_module = host.compile(b"(module)");
        assert!(core_module.is_err());
    }
}
