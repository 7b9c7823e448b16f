//! The plugin runtime seam: what the runner needs of a kind of plugin. WebAssembly components
//! ([`super::wasm`]) and native libraries ([`super::native`]) implement it. Scheduling, batching,
//! output checks, proposals, hot reload, restart, backoff and quarantine ([`super::runner`]) are
//! written once, against these traits.
//!
//! The values crossing the seam are the plugin contract's ([`super::contract`], contract 0.3): the
//! instance's [`Properties`] at init, a columnar [`ChangeBatch`] and the [`ProposalOutcome`]s in,
//! [`Outputs`] (derived values by owned index, write proposals by writable index) back.

use std::sync::Arc;

pub use super::contract::{ChangeBatch, Limits, Outputs, PluginError, Properties, ProposalOutcome};

/// A kind of plugin: turns a plugin file into a loaded component and makes instances of it.
pub trait PluginRuntime: Clone + Send + Sync + 'static {
    /// A loaded (compiled, checked) plugin file, ready to instantiate; cheap to clone.
    type Component: Clone + Send + Sync + 'static;
    /// One instance, with its own state and limits.
    type Instance: PluginInstance;

    /// Loads a plugin file's bytes. May take long (compilation): the runner calls it off the
    /// async workers.
    ///
    /// Errors: [`PluginError::Load`] when the bytes are not a plugin, [`PluginError::Contract`]
    /// when built for another contract version.
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
/// never overlap for one instance. After any `Err` the instance is discarded. `now_ms` is the
/// call's time in milliseconds since the Unix epoch: what the plugin is told and what its clocks
/// answer.
///
/// A call's outputs go into an [`Outputs`] the caller keeps from call to call: each call replaces
/// its contents, and a runtime that copies them (native) reuses its columns' capacity, so a call
/// in the steady state allocates nothing for its outputs. After an `Err` its contents are
/// unspecified.
pub trait PluginInstance: Send + 'static {
    /// Calls `init` with the plugin's settings (TOML text) and its properties. The outer error
    /// is a fault; the inner one is the plugin refusing its settings.
    ///
    /// Errors: a fault (trap, deadline, limit, fuel).
    fn init(
        &mut self,
        now_ms: i64,
        config: &str,
        properties: &Properties,
    ) -> Result<Result<(), String>, PluginError>;

    /// Calls `on-changes` with the changes and the proposals' outcomes since the previous call;
    /// its outputs replace `outputs`' contents.
    ///
    /// Errors: a fault.
    fn on_changes(
        &mut self,
        now_ms: i64,
        batch: &Arc<ChangeBatch>,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError>;

    /// Calls `on-tick` with the proposals' outcomes since the previous call; its outputs replace
    /// `outputs`' contents.
    ///
    /// Errors: a fault.
    fn on_tick(
        &mut self,
        now_ms: i64,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError>;

    /// Fuel used by every call so far (0 when unmetered).
    fn fuel_used(&self) -> u64;

    /// Log lines the instance's rate limit dropped since the previous time this was asked.
    fn log_dropped(&mut self) -> u64;
}
