//! The plugin runtime seam: what the runner needs of a kind of plugin. WebAssembly components
//! ([`super::wasm`]) implement it today; native libraries will plug in here. Scheduling, batching,
//! output checks, proposals, hot reload, restart, backoff and quarantine ([`super::runner`]) are
//! written once, against these traits.
//!
//! The values crossing the seam are the plugin contract's (`plugin-api/wit`): a columnar
//! [`ChangeBatch`] in, [`Outputs`] (derived values and write proposals) back.

pub use super::wasm::{ChangeBatch, Limits, Outputs, PluginError};

/// A kind of plugin: turns a plugin file into a loaded component and makes instances of it.
pub trait PluginRuntime: Clone + Send + Sync + 'static {
    /// A loaded (compiled, checked) plugin file, ready to instantiate; cheap to clone.
    type Component: Clone + Send + Sync + 'static;
    /// One instance, with its own state and limits.
    type Instance: PluginInstance;

    /// Loads a plugin file's bytes. May take long (compilation): the runner calls it off the
    /// async workers.
    ///
    /// Errors: [`PluginError::Load`] when the bytes are not a plugin of the contract.
    fn load(&self, bytes: &[u8]) -> Result<Self::Component, PluginError>;

    /// Makes a fresh instance of `component` named `name`, held to `limits`.
    ///
    /// Errors: [`PluginError::Load`] when it cannot be instantiated with these limits.
    fn instantiate(
        &self,
        name: &str,
        component: &Self::Component,
        limits: Limits,
    ) -> Result<Self::Instance, PluginError>;
}

/// One running plugin instance. Calls block (the runner makes them on the blocking pool) and
/// never overlap for one instance. After any `Err` the instance is discarded.
pub trait PluginInstance: Send + 'static {
    /// Calls `init` with the plugin's settings (TOML text) and its input property paths, in
    /// index order. The outer error is a fault; the inner one is the plugin refusing its settings.
    ///
    /// Errors: a fault (trap, deadline, memory cap, fuel).
    fn init(&mut self, config: &str, inputs: &[String]) -> Result<Result<(), String>, PluginError>;

    /// Calls `on-changes` with the changes since the previous call.
    ///
    /// Errors: a fault.
    fn on_changes(&mut self, batch: &ChangeBatch) -> Result<Outputs, PluginError>;

    /// Calls `on-tick` with the wall-clock time in milliseconds since the Unix epoch.
    ///
    /// Errors: a fault.
    fn on_tick(&mut self, now_ms: i64) -> Result<Outputs, PluginError>;

    /// Fuel used by every call so far (0 when unmetered).
    fn fuel_used(&self) -> u64;
}
