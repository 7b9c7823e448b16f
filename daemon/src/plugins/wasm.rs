//! The WebAssembly host: wasmtime's component model, one store per plugin instance, contract
//! `twinloom:plugin@0.3.0` (`plugin-api/wit/plugin.wit`, its types in [`super::contract`]); one
//! implementation of the [runtime seam](super::runtime), beside [`super::native`].
//!
//! Sandboxing, per instance:
//! - **deadline**: a wall-clock deadline per call (epoch interruption: a host thread advances the
//!   engine's epoch every [`EPOCH_TICK`]); optional fuel accounting;
//! - **no blocking**: WASI p2 is linked with an empty context (no files, sockets, environment or
//!   arguments), and every import that could wait — `wasi:io/poll.poll`, `pollable.block`, the
//!   monotonic clock's subscriptions, stdin — traps with [`PluginError::Blocked`], so a plugin
//!   that sleeps fails like one that loops, within its deadline;
//! - **limits on the whole instance** ([`InstanceLimiter`]): all linear memories together within
//!   the memory cap, at most [`MAX_MEMORIES`] memories, [`MAX_TABLE_ELEMENTS`] table elements
//!   in all and [`MAX_CORE_INSTANCES`] core instances; breaches are typed
//!   ([`LimitExceeded`]) by the limiter itself;
//! - **bounded outputs**: the contract's outputs hold no string or list inside a list (the
//!   proposals' reasons are one string), so copying them out of the plugin's memory costs the
//!   host at most about five times that memory however the lists point (three derived-value
//!   columns, the proposals, the reasons; without nesting there is no multiplying one list's
//!   length by another's); their counts are then checked against
//!   [`OutputCaps`](super::contract::OutputCaps) before anything is used. (The copy cannot be
//!   checked before it is made: wasmtime 48 runs the component's post-return, which frees the
//!   outputs, as part of the call, so lazily lifted lists would point at freed memory.)
//! - **determinism**: the WASI clocks answer the call's `now-ms` and `wasi:random` is a
//!   generator seeded from the instance's name, so the same inputs give the same outputs;
//! - **quiet**: stdout, stderr and the `log` import go to the log line by line, escaped to one
//!   line and held to a per-instance rate ([`super::stdio::LogBudget`]).
//!
//! A fault fails the call with a [`PluginError`]; the instance must then be discarded (its state
//! is unknown).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::contract::{
    Blocked, CONTRACT, ChangeBatch, Level, LimitExceeded, Limits, Outputs, Plugin, PluginError,
    Properties, ProposalOutcome, plugin_log,
};
use super::stdio::{LogBudget, LogStream, Stdio};
use rand_wasi::SeedableRng;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable, TypedFunc};
use wasmtime::{Config, Engine, ResourceLimiter, Store, StoreContextMut};
use wasmtime_wasi::p2::{DynInputStream, DynPollable};
use wasmtime_wasi::{
    HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

/// How often the engine's epoch advances; call deadlines are counted in these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Most linear memories one instance may have (a Rust or C component has one; two leaves room
/// for an adapter's).
pub const MAX_MEMORIES: usize = 2;
/// Most table elements one instance may have, over all its tables.
pub const MAX_TABLE_ELEMENTS: usize = 10_000;
/// Most core module instances one component may make (components built with the WASI preview1
/// adapter make about six).
pub const MAX_CORE_INSTANCES: usize = 16;

/// Holds one instance to its limits on memories, tables and instances (wasmtime asks it before
/// every memory or table is created or grows).
#[derive(Debug)]
pub struct InstanceLimiter {
    memory_cap: usize,
    memory_bytes: usize,
    memories: usize,
    table_elements: usize,
    /// Whether the instance is being instantiated: then a memory growing from nothing is a new
    /// memory (a start function growing an empty memory would count as one more).
    instantiating: bool,
    /// The last growth allowed, undone if the engine then fails it.
    last_memory_grant: usize,
    last_table_grant: usize,
}

impl InstanceLimiter {
    fn new(memory_cap: usize) -> Self {
        Self {
            memory_cap,
            memory_bytes: 0,
            memories: 0,
            table_elements: 0,
            instantiating: false,
            last_memory_grant: 0,
            last_table_grant: 0,
        }
    }
}

impl ResourceLimiter for InstanceLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if self.instantiating && current == 0 {
            self.memories += 1;
            if self.memories > MAX_MEMORIES {
                return Err(wasmtime::Error::new(LimitExceeded::Memories {
                    max: MAX_MEMORIES,
                }));
            }
        }
        let grant = desired.saturating_sub(current);
        let asked = self.memory_bytes.saturating_add(grant);
        if asked > self.memory_cap {
            return Err(wasmtime::Error::new(LimitExceeded::Memory {
                cap: self.memory_cap,
                asked,
            }));
        }
        self.memory_bytes = asked;
        self.last_memory_grant = grant;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_bytes -= std::mem::take(&mut self.last_memory_grant);
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let grant = desired.saturating_sub(current);
        let asked = self.table_elements.saturating_add(grant);
        if asked > MAX_TABLE_ELEMENTS {
            return Err(wasmtime::Error::new(LimitExceeded::TableElements {
                max: MAX_TABLE_ELEMENTS,
                asked,
            }));
        }
        self.table_elements = asked;
        self.last_table_grant = grant;
        Ok(true)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.table_elements -= std::mem::take(&mut self.last_table_grant);
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }
}

/// The time of the current call, shared by an instance's WASI clocks: milliseconds since the
/// Unix epoch, set before every call.
#[derive(Debug, Clone, Default)]
struct CallTime {
    now_ms: Arc<AtomicI64>,
    /// The first call's time: the monotonic clock counts from it.
    origin_ms: Arc<AtomicI64>,
}

impl CallTime {
    fn set(&self, now_ms: i64) {
        if self.origin_ms.load(Ordering::Relaxed) == i64::MIN {
            self.origin_ms.store(now_ms, Ordering::Relaxed);
        }
        // Never backwards, so the monotonic clock stays monotonic.
        self.now_ms.fetch_max(now_ms, Ordering::Relaxed);
    }

    fn new() -> Self {
        Self {
            now_ms: Arc::new(AtomicI64::new(0)),
            origin_ms: Arc::new(AtomicI64::new(i64::MIN)),
        }
    }
}

impl HostWallClock for CallTime {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }

    fn now(&self) -> Duration {
        Duration::from_millis(self.now_ms.load(Ordering::Relaxed).max(0) as u64)
    }
}

impl HostMonotonicClock for CallTime {
    fn resolution(&self) -> u64 {
        1_000_000
    }

    fn now(&self) -> u64 {
        let origin = self.origin_ms.load(Ordering::Relaxed);
        let now = self.now_ms.load(Ordering::Relaxed);
        if origin == i64::MIN {
            return 0;
        }
        (now.saturating_sub(origin).max(0) as u64).saturating_mul(1_000_000)
    }
}

/// The seed of an instance's random sources: SHA-256 of its name.
fn seed(name: &str) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(name.as_bytes()).into()
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
    limiter: InstanceLimiter,
    budget: LogBudget,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl super::contract::twinloom::plugin::types::Host for PluginState {}

impl super::contract::twinloom::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String) {
        plugin_log(&self.name, &self.budget, level, &message);
    }
}

/// Replaces the WASI imports that could wait with ones that trap with [`Blocked`] (the linker
/// must already hold WASI p2, whose definitions these shadow).
fn forbid_blocking(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    fn blocked<R>(import: &'static str) -> wasmtime::Result<R> {
        Err(wasmtime::Error::new(Blocked(import)))
    }
    linker.allow_shadowing(true);
    let mut poll = linker.instance("wasi:io/poll@0.2.12")?;
    poll.func_wrap(
        "poll",
        |_: StoreContextMut<'_, PluginState>,
         (_,): (Vec<Resource<DynPollable>>,)|
         -> wasmtime::Result<(Vec<u32>,)> { blocked("wasi:io/poll.poll") },
    )?;
    poll.func_wrap(
        "[method]pollable.block",
        |_: StoreContextMut<'_, PluginState>,
         (_,): (Resource<DynPollable>,)|
         -> wasmtime::Result<()> { blocked("wasi:io/poll.pollable.block") },
    )?;
    let mut clock = linker.instance("wasi:clocks/monotonic-clock@0.2.12")?;
    clock.func_wrap(
        "subscribe-duration",
        |_: StoreContextMut<'_, PluginState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            blocked("wasi:clocks/monotonic-clock.subscribe-duration")
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |_: StoreContextMut<'_, PluginState>,
         (_,): (u64,)|
         -> wasmtime::Result<(Resource<DynPollable>,)> {
            blocked("wasi:clocks/monotonic-clock.subscribe-instant")
        },
    )?;
    let mut stdin = linker.instance("wasi:cli/stdin@0.2.12")?;
    stdin.func_wrap(
        "get-stdin",
        |_: StoreContextMut<'_, PluginState>,
         (): ()|
         -> wasmtime::Result<(Resource<DynInputStream>,)> {
            blocked("wasi:cli/stdin.get-stdin")
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The engine and linker every plugin instance shares.
#[derive(Clone)]
pub struct WasmHost {
    engine: Engine,
    fuel: bool,
    linker: Arc<Linker<PluginState>>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WasmHost")
    }
}

/// The contract package a component's imports name (`twinloom:plugin@<version>`), if any.
fn imported_contract(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .imports(engine)
        .find_map(|(name, _)| {
            let (package, rest) = name.split_once('/')?;
            let version = rest.split_once('@')?.1;
            (package == "twinloom:plugin").then(|| format!("{package}@{version}"))
        })
}

type InitFunc = TypedFunc<(String, Properties), (Result<(), String>,)>;
type OnChangesFunc = TypedFunc<(i64, Arc<ChangeBatch>, Arc<[ProposalOutcome]>), (Outputs,)>;
type OnTickFunc = TypedFunc<(i64, Arc<[ProposalOutcome]>), (Outputs,)>;

/// The contract's three exports, type-checked once at instantiation.
struct Exports {
    init: InitFunc,
    on_changes: OnChangesFunc,
    on_tick: OnTickFunc,
}

impl WasmHost {
    /// An engine with the component model and epoch interruption, and a linker with WASI p2 (its
    /// waiting imports replaced by traps) and the `host` interface. With `fuel`, the engine
    /// meters fuel (every instance then counts it, and [`Limits::fuel`] can cap it); without,
    /// generated code skips the counting, which costs about a third of a plugin's speed (see
    /// `benches/plugins.rs`). Starts the epoch thread (it ends when the engine is dropped).
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
        forbid_blocking(&mut linker).map_err(wasm)?;
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
            linker: Arc::new(linker),
        })
    }

    /// Compiles a component from its binary (or WAT text) and checks it is built for
    /// [`CONTRACT`].
    ///
    /// Errors: [`PluginError::Load`] when the bytes are not a valid component;
    /// [`PluginError::Contract`] when it imports another version of the contract.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, PluginError> {
        let component =
            Component::new(&self.engine, bytes).map_err(|e| PluginError::Load(format!("{e:#}")))?;
        match imported_contract(&self.engine, &component) {
            Some(found) if found != CONTRACT => Err(PluginError::Contract {
                found,
                expected: CONTRACT,
            }),
            _ => Ok(component),
        }
    }

    /// Instantiates `component` in a fresh store named `name` (its log lines say so; its random
    /// sources are seeded from it) with `limits`.
    ///
    /// Errors: [`PluginError::Load`] when the component does not implement the `plugin` world,
    /// makes more than [`MAX_CORE_INSTANCES`] core instances, or `limits` caps fuel on a host
    /// made without fuel metering; [`PluginError::Limit`] when its memories or tables pass a
    /// limit already at instantiation.
    pub fn instantiate(
        &self,
        name: &str,
        component: &Component,
        limits: Limits,
    ) -> Result<Instance, PluginError> {
        if limits.fuel.is_some() && !self.fuel {
            return Err(PluginError::Load(
                "a fuel limit needs a host with fuel metering".into(),
            ));
        }
        let time = CallTime::new();
        let seed = seed(name);
        let budget = LogBudget::new();
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream::new(name, Stdio::Stdout, budget.clone()))
            .stderr(LogStream::new(name, Stdio::Stderr, budget.clone()))
            .wall_clock(time.clone())
            .monotonic_clock(time.clone())
            .secure_random(rand_wasi::rngs::StdRng::from_seed(seed))
            .insecure_random(rand_wasi::rngs::StdRng::from_seed(seed))
            .insecure_random_seed(u128::from_le_bytes(
                seed[..16].try_into().unwrap_or_default(),
            ));
        let state = PluginState {
            name: name.to_owned(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limiter: InstanceLimiter::new(limits.memory_bytes),
            budget,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let mut instance = Instance {
            store,
            exports: None,
            limits,
            metered: self.fuel,
            fuel_used: 0,
            time,
        };
        instance.prepare();
        instance.store.data_mut().limiter.instantiating = true;
        let made = self.linker.instantiate(&mut instance.store, component);
        instance.store.data_mut().limiter.instantiating = false;
        // A limit the limiter raised is typed; anything else wrong at instantiation (a missing
        // import, too many core instances) means the component cannot be loaded.
        let made = made.map_err(|e| match instance.classify(&e) {
            PluginError::Trap(text) => PluginError::Load(text),
            typed => typed,
        })?;
        let load = |e: wasmtime::Error| {
            PluginError::Load(format!(
                "the component does not implement {CONTRACT}: {e:#}"
            ))
        };
        let store = &mut instance.store;
        let exports = Exports {
            init: made.get_typed_func(&mut *store, "init").map_err(load)?,
            on_changes: made
                .get_typed_func(&mut *store, "on-changes")
                .map_err(load)?,
            on_tick: made.get_typed_func(&mut *store, "on-tick").map_err(load)?,
        };
        instance.exports = Some(exports);
        Ok(instance)
    }
}

/// One plugin instance: its store and its exports.
pub struct Instance {
    store: Store<PluginState>,
    exports: Option<Exports>,
    limits: Limits,
    metered: bool,
    fuel_used: u64,
    time: CallTime,
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
        if let Some(limit) = error.downcast_ref::<LimitExceeded>() {
            return PluginError::Limit(*limit);
        }
        if let Some(blocked) = error.downcast_ref::<Blocked>() {
            return PluginError::Blocked(*blocked);
        }
        match error.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => PluginError::Deadline(self.limits.deadline),
            Some(wasmtime::Trap::OutOfFuel) => PluginError::OutOfFuel,
            _ => PluginError::Trap(format!("{error:#}")),
        }
    }

    fn call<R>(
        &mut self,
        now_ms: i64,
        f: impl FnOnce(&Exports, &mut Store<PluginState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.prepare();
        self.time.set(now_ms);
        let Some(exports) = self.exports.as_ref() else {
            return Err(PluginError::Load("instance is not initialised".into()));
        };
        let result = f(exports, &mut self.store);
        self.after();
        result.map_err(|e| self.classify(&e))
    }

    /// Checks a call's outputs against [`Limits::outputs`] (see [`OutputCaps::check`]).
    fn check(&self, outputs: Outputs) -> Result<Outputs, PluginError> {
        self.limits.outputs.check(outputs)
    }

    /// Calls `init` at `now_ms` (the clocks' time during the call, and the monotonic clock's
    /// origin) with the plugin's settings (TOML text) and its properties. The outer error is a
    /// fault (trap, deadline, limit); the inner one is the plugin refusing its settings.
    pub fn init(
        &mut self,
        now_ms: i64,
        config: &str,
        properties: &Properties,
    ) -> Result<Result<(), String>, PluginError> {
        let params = (config.to_owned(), properties.clone());
        self.call(now_ms, |exports, store| exports.init.call(store, params))
            .map(|(answer,)| answer)
    }

    /// Calls `on-changes` at `now_ms` (milliseconds since the Unix epoch) with the changes and
    /// the proposals' outcomes since the previous call.
    ///
    /// Errors: a fault; the instance must be discarded.
    pub fn on_changes(
        &mut self,
        now_ms: i64,
        batch: &Arc<ChangeBatch>,
        outcomes: &Arc<[ProposalOutcome]>,
    ) -> Result<Outputs, PluginError> {
        let params = (now_ms, Arc::clone(batch), Arc::clone(outcomes));
        let (outputs,) = self.call(now_ms, |exports, store| {
            exports.on_changes.call(store, params)
        })?;
        self.check(outputs)
    }

    /// Calls `on-tick` at `now_ms` with the proposals' outcomes since the previous call.
    ///
    /// Errors: a fault; the instance must be discarded.
    pub fn on_tick(
        &mut self,
        now_ms: i64,
        outcomes: &Arc<[ProposalOutcome]>,
    ) -> Result<Outputs, PluginError> {
        let params = (now_ms, Arc::clone(outcomes));
        let (outputs,) = self.call(now_ms, |exports, store| exports.on_tick.call(store, params))?;
        self.check(outputs)
    }

    /// Fuel (≈ wasm instructions) used by every call so far; 0 on a host without fuel metering.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used
    }

    /// Log lines dropped by the rate limit since the previous time this was asked.
    pub fn log_dropped(&mut self) -> u64 {
        self.store.data().budget.take_dropped()
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
    fn init(
        &mut self,
        now_ms: i64,
        config: &str,
        properties: &Properties,
    ) -> Result<Result<(), String>, PluginError> {
        Self::init(self, now_ms, config, properties)
    }

    fn on_changes(
        &mut self,
        now_ms: i64,
        batch: &Arc<ChangeBatch>,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        // Lifting makes new lists anyway: they take the place of the old ones.
        *outputs = Self::on_changes(self, now_ms, batch, outcomes)?;
        Ok(())
    }

    fn on_tick(
        &mut self,
        now_ms: i64,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        *outputs = Self::on_tick(self, now_ms, outcomes)?;
        Ok(())
    }

    fn fuel_used(&self) -> u64 {
        Self::fuel_used(self)
    }

    fn log_dropped(&mut self) -> u64 {
        Self::log_dropped(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::contract::{
        DataType, MAX_REASON_BYTES, OutputCaps, Quality, Setpoint, WritableProperty, quality_byte,
        reason,
    };

    const TEMPLATE: &str = include_str!("testdata/template.wat");

    /// A component whose `on-changes` and `on-tick` run `changes` and `tick` (WAT instructions)
    /// first; `data` goes into its core module (data segments, more memories or tables).
    fn component_with(host: &WasmHost, data: &str, changes: &str, tick: &str) -> Component {
        let text = TEMPLATE
            .replace("{{CHANGES}}", changes)
            .replace("{{TICK}}", tick)
            .replace("{{DATA}}", data)
            .replace("{{INIT}}", "");
        host.compile(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn component(host: &WasmHost, changes: &str, tick: &str) -> Component {
        component_with(host, "", changes, tick)
    }

    fn batch() -> Arc<ChangeBatch> {
        Arc::new(ChangeBatch {
            properties: vec![0, 1],
            values: vec![1.5, 2.5],
            qualities: vec![quality_byte(Quality::Good), quality_byte(Quality::Bad)],
            source_times_ms: vec![1, 2],
        })
    }

    fn none() -> Arc<[ProposalOutcome]> {
        Arc::from(Vec::new())
    }

    fn properties() -> Properties {
        Properties {
            inputs: vec!["a/b/c".into()],
            owned: vec!["a/b/d".into()],
            writable: vec![WritableProperty {
                path: "a/b/e".into(),
                data_type: DataType::Float,
            }],
        }
    }

    /// Little-endian bytes as a WAT string literal.
    fn bytes(b: &[u8]) -> String {
        b.iter().map(|x| format!("\\{x:02x}")).collect()
    }

    /// Data segments putting an outputs record at 64: `count` derived values (all index 0,
    /// value 1.0, good; at most 100 written), `proposals` proposals (float 40.0 to writable 0)
    /// whose reasons are all bytes 0..`reason_len` of a `reasons` string of that length (`x`s).
    fn outputs_data(count: u32, proposals: u32, reason_len: u32) -> String {
        // Above the bump allocator's first kilobytes, so lowering a call's arguments cannot
        // overwrite them.
        let (indices, values, qualities, list, reasons) =
            (20_000u32, 24_000u32, 28_000u32, 32_000u32, 40_000u32);
        let mut record = Vec::new();
        for (ptr, len) in [
            (indices, count),
            (values, count),
            (qualities, count),
            (list, proposals),
            (reasons, reason_len),
        ] {
            record.extend(ptr.to_le_bytes());
            record.extend(len.to_le_bytes());
        }
        let mut proposal = Vec::new();
        proposal.extend(0u32.to_le_bytes()); // index
        proposal.extend([0u8; 4]);
        proposal.push(2); // setpoint: float
        proposal.extend([0u8; 7]);
        proposal.extend(40.0f64.to_le_bytes());
        proposal.extend(0u32.to_le_bytes()); // reason start
        proposal.extend(reason_len.to_le_bytes());
        let one = 1.0f64.to_le_bytes();
        format!(
            "(data (i32.const 64) \"{}\") (data (i32.const {values}) \"{}\") (data (i32.const {list}) \"{}\") (data (i32.const {reasons}) \"{}\")",
            bytes(&record),
            bytes(&one).repeat(count.min(100) as usize),
            bytes(&proposal).repeat(proposals.min(100) as usize),
            "x".repeat(reason_len as usize),
        )
    }

    #[test]
    fn a_well_behaved_component_answers() {
        let host = WasmHost::new(true).unwrap();
        let mut instance = host
            .instantiate("good", &component(&host, "", ""), Limits::default())
            .unwrap();
        assert_eq!(instance.init(0, "x = 1", &properties()).unwrap(), Ok(()));
        let outputs = instance.on_changes(1, &batch(), &none()).unwrap();
        assert!(outputs.values.indices.is_empty() && outputs.proposals.is_empty());
        let outputs = instance.on_tick(1_700_000_000_000, &none()).unwrap();
        assert!(outputs.values.indices.is_empty());
        assert!(instance.fuel_used() > 0);
        assert_eq!(instance.log_dropped(), 0);
    }

    #[test]
    fn outputs_are_copied_out_by_index_with_their_reasons_cut() {
        let host = WasmHost::new(false).unwrap();
        let data = outputs_data(3, 2, 300);
        let mut instance = host
            .instantiate(
                "out",
                &component_with(&host, &data, "", ""),
                Limits::default(),
            )
            .unwrap();
        let outputs = instance.on_tick(0, &none()).unwrap();
        assert_eq!(outputs.values.indices, [0, 0, 0]);
        assert_eq!(outputs.values.values, [1.0, 1.0, 1.0]);
        assert_eq!(outputs.values.qualities, [0, 0, 0]);
        assert_eq!(outputs.proposals.len(), 2);
        assert_eq!(outputs.proposals[0].value, Setpoint::Float(40.0));
        assert_eq!(
            reason(&outputs, &outputs.proposals[0]),
            "x".repeat(MAX_REASON_BYTES)
        );
        // A range outside the reasons, or inside a character, gives no reason.
        let mut odd = outputs.proposals[0];
        odd.reason_start = 299;
        assert_eq!(reason(&outputs, &odd), "");
        let accented = Outputs {
            reasons: "é".into(),
            ..outputs
        };
        odd.reason_start = 0;
        odd.reason_len = 1;
        assert_eq!(reason(&accented, &odd), "");
    }

    #[test]
    fn outputs_past_the_caps_are_a_fault() {
        let host = WasmHost::new(false).unwrap();
        let limits = Limits {
            outputs: OutputCaps {
                derived_values: 10,
                proposals: 4,
                string_bytes: 1000,
            },
            ..Limits::default()
        };
        let over = |data: String| {
            let mut instance = host
                .instantiate("caps", &component_with(&host, &data, "", ""), limits)
                .unwrap();
            instance.on_tick(0, &none()).unwrap_err()
        };
        assert_eq!(
            over(outputs_data(11, 0, 0)),
            PluginError::OutputCap {
                what: "derived values",
                cap: 10,
                got: 11
            }
        );
        assert_eq!(
            over(outputs_data(0, 5, 0)),
            PluginError::OutputCap {
                what: "proposals",
                cap: 4,
                got: 5
            }
        );
        assert_eq!(
            over(outputs_data(0, 1, 1200)),
            PluginError::OutputCap {
                what: "bytes of proposal reasons",
                cap: 1000,
                got: 1200
            }
        );
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
            instance.on_tick(0, &none()).err(),
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
    fn a_memory_bomb_hits_the_cap_with_a_typed_error() {
        let host = WasmHost::new(true).unwrap();
        let limits = Limits {
            memory_bytes: 4 * 1024 * 1024,
            ..Limits::default()
        };
        let bomb = "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))";
        let mut instance = host
            .instantiate("bomb", &component(&host, bomb, ""), limits)
            .unwrap();
        assert!(matches!(
            instance.on_changes(0, &batch(), &none()),
            Err(PluginError::Limit(LimitExceeded::Memory { cap, asked }))
                if cap == 4 * 1024 * 1024 && asked > cap
        ));
    }

    #[test]
    fn memories_tables_and_their_sum_are_limited_for_the_whole_instance() {
        let host = WasmHost::new(false).unwrap();
        let load = |data: &str, memory_mib: usize| {
            let limits = Limits {
                memory_bytes: memory_mib * 1024 * 1024,
                ..Limits::default()
            };
            host.instantiate("limits", &component_with(&host, data, "", ""), limits)
                .err()
        };
        // Two memories are allowed; a third is refused at instantiation.
        assert_eq!(load("(memory 1)", 64), None);
        assert_eq!(
            load("(memory 1) (memory 1)", 64),
            Some(PluginError::Limit(LimitExceeded::Memories { max: 2 }))
        );
        // A second memory of exactly the 64 MiB cap would fit alone, but not beside the first
        // memory's page: the cap is on the sum.
        assert_eq!(
            load("(memory 1024)", 64),
            Some(PluginError::Limit(LimitExceeded::Memory {
                cap: 64 * 1024 * 1024,
                asked: 1025 * 65536
            }))
        );
        assert_eq!(load("(memory 1024)", 128), None);
        // A table of a million elements is refused; ten thousand are allowed.
        assert_eq!(load("(table 10000 funcref)", 64), None);
        assert_eq!(
            load("(table 1000000 funcref)", 64),
            Some(PluginError::Limit(LimitExceeded::TableElements {
                max: MAX_TABLE_ELEMENTS,
                asked: 1_000_000
            }))
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
            instance.on_changes(0, &batch(), &none()),
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
        assert_eq!(
            hungry.on_tick(0, &none()).err(),
            Some(PluginError::OutOfFuel)
        );
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

    #[test]
    fn a_component_of_contract_0_2_is_refused_naming_both_versions() {
        let host = WasmHost::new(false).unwrap();
        let old = include_str!("testdata/contract-0.2.wat")
            .replace("{{CHANGES}}", "")
            .replace("{{TICK}}", "")
            .replace("{{DATA}}", "")
            .replace("{{INIT}}", "");
        let error = host.compile(old.as_bytes()).unwrap_err();
        assert_eq!(
            error,
            PluginError::Contract {
                found: "twinloom:plugin@0.2.0".into(),
                expected: CONTRACT
            }
        );
        let text = error.to_string();
        assert!(
            text.contains("twinloom:plugin@0.2.0") && text.contains("twinloom:plugin@0.3.0"),
            "{text}"
        );
    }

    #[test]
    fn the_clocks_answer_the_calls_time() {
        let time = CallTime::new();
        assert_eq!(HostMonotonicClock::now(&time), 0);
        time.set(1_700_000_000_000);
        time.set(1_700_000_000_250);
        assert_eq!(
            HostWallClock::now(&time),
            Duration::from_millis(1_700_000_000_250)
        );
        assert_eq!(HostMonotonicClock::now(&time), 250_000_000);
        // A call with an earlier time does not turn the clocks back.
        time.set(1_700_000_000_100);
        assert_eq!(HostMonotonicClock::now(&time), 250_000_000);
        assert_eq!(seed("a"), seed("a"));
        assert_ne!(seed("a"), seed("b"));
    }
}
