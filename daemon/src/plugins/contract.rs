//! The plugin contract `twinloom:plugin@0.3.0` (`plugin-api/wit/plugin.wit`) as both hosts see it:
//! the WebAssembly host ([`super::wasm`]) and the native host ([`super::native`], whose C ABI
//! `plugin-api/include/twinloom_plugin.h` mirrors the WIT) share these types, [`CONTRACT`], the
//! quality bytes, the faults ([`PluginError`], [`LimitExceeded`]), the [`Limits`] and
//! [`OutputCaps`] an instance is held to, and [`plugin_log`], the `log` import. Neither host
//! depends on the other; the runtime seam ([`super::runtime`]) re-exports what crosses it.
//!
//! The types are wasmtime's `bindgen!` output of the WIT: the Wasm host lifts and lowers them
//! across the component boundary as they are, and the native host lends their columns to the C
//! ABI as views, so one definition serves both. The same invocation also generates the `Host`
//! traits and `Plugin::add_to_linker`, which only the Wasm host uses.

use std::time::Duration;

use super::events;
use super::stdio::LogBudget;

wasmtime::component::bindgen!({
    path: "../plugin-api/wit",
    world: "plugin",
    additional_derives: [PartialEq],
});

pub use twinloom::plugin::types::{
    DataType, DerivedValues, DeviceErrorKind, Level, Outcome, Quality, Setpoint, WritableProperty,
    WriteProposal,
};

/// The reason of `proposal`, one of `outputs`' proposals: its bytes of `outputs.reasons`, cut to
/// [`MAX_REASON_BYTES`] at a character boundary; empty when the range is not within the reasons
/// or does not fall on character boundaries.
pub fn reason<'a>(outputs: &'a Outputs, proposal: &WriteProposal) -> &'a str {
    let start = proposal.reason_start as usize;
    let end = start.saturating_add(proposal.reason_len as usize);
    let Some(text) = outputs.reasons.get(start..end) else {
        return "";
    };
    let mut cut = text.len().min(MAX_REASON_BYTES);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
}

impl Default for Outputs {
    /// Outputs with nothing in them (no derived values, proposals or reasons).
    fn default() -> Self {
        Self {
            values: DerivedValues {
                indices: Vec::new(),
                values: Vec::new(),
                qualities: Vec::new(),
            },
            proposals: Vec::new(),
            reasons: String::new(),
        }
    }
}

/// The contract both hosts run: the WIT package plugins must be built against (for a native
/// library, the ABI version of its table).
pub const CONTRACT: &str = "twinloom:plugin@0.3.0";

/// The byte `quality` travels as in the contract's columnar records (`list<u8>`: one copy into
/// the component instead of a conversion per element).
pub const fn quality_byte(quality: Quality) -> u8 {
    match quality {
        Quality::Good => 0,
        Quality::Uncertain => 1,
        Quality::Bad => 2,
    }
}

/// The quality a byte of a columnar record stands for: 0 good, 1 uncertain, anything else bad.
pub const fn quality_of_byte(byte: u8) -> Quality {
    match byte {
        0 => Quality::Good,
        1 => Quality::Uncertain,
        _ => Quality::Bad,
    }
}

/// A limit on the whole instance that a plugin tried to pass; raised by the Wasm host's
/// [`InstanceLimiter`](super::wasm::InstanceLimiter) and carried through the trap, so it is told
/// apart by type, not by error text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// All linear memories together would pass the memory cap.
    #[error("memory cap of {cap} bytes exceeded (the instance asked for {asked} bytes in all)")]
    Memory {
        /// The cap, bytes.
        cap: usize,
        /// What all memories would have held, bytes.
        asked: usize,
    },
    /// More linear memories than [`MAX_MEMORIES`](super::wasm::MAX_MEMORIES).
    #[error("more than {max} linear memories")]
    Memories {
        /// The most allowed.
        max: usize,
    },
    /// More table elements, over all tables, than
    /// [`MAX_TABLE_ELEMENTS`](super::wasm::MAX_TABLE_ELEMENTS).
    #[error("{asked} table elements in all, more than the {max} allowed")]
    TableElements {
        /// The most allowed.
        max: usize,
        /// What all tables would have held.
        asked: usize,
    },
}

/// An import a plugin may not call because it could wait: the trap's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the plugin called `{0}`, which waits; plugins may not block (no sleeps, no polling, no stdin)"
)]
pub struct Blocked(pub &'static str);

/// Why a plugin call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PluginError {
    /// The component could not be compiled or instantiated (not a component, wrong world).
    #[error("cannot load the plugin: {0}")]
    Load(String),
    /// The component was built for another version of the plugin contract.
    #[error(
        "the plugin is built for contract {found}, this daemon runs {expected}: rebuild it against the twinloom-plugin SDK for {expected}"
    )]
    Contract {
        /// The contract the component imports, e.g. `twinloom:plugin@0.2.0`.
        found: String,
        /// [`CONTRACT`].
        expected: &'static str,
    },
    /// The call ran past its deadline and was interrupted.
    #[error("call exceeded its deadline of {0:?}")]
    Deadline(Duration),
    /// A native call ran past its deadline. It cannot be interrupted, so the thread it runs on
    /// was abandoned; the plugin is quarantined at once.
    #[error(
        "native call exceeded its deadline of {0:?}; it cannot be interrupted, so its thread is abandoned and the plugin quarantined"
    )]
    Abandoned(Duration),
    /// The instance tried to pass a limit on its memories or tables.
    #[error("{0}")]
    Limit(LimitExceeded),
    /// The instance called an import that waits.
    #[error("{0}")]
    Blocked(Blocked),
    /// A call returned more than [`OutputCaps`] allow.
    #[error("a call returned {got} {what}, more than the {cap} allowed per call")]
    OutputCap {
        /// What was counted.
        what: &'static str,
        /// The cap.
        cap: usize,
        /// What the call returned.
        got: usize,
    },
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

impl PluginError {
    /// The metric label of this kind of fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Load(_) => "load",
            Self::Contract { .. } => "contract",
            Self::Deadline(_) => "deadline",
            Self::Abandoned(_) => "abandoned",
            Self::Limit(LimitExceeded::Memory { .. }) => "memory_cap",
            Self::Limit(_) => "limit",
            Self::Blocked(_) => "blocked",
            Self::OutputCap { .. } => "output_cap",
            Self::OutOfFuel => "out_of_fuel",
            Self::Trap(_) => "trap",
            Self::HostPanic(_) => "host_panic",
        }
    }

    /// Whether this fault quarantines the plugin at once instead of counting towards
    /// `quarantine_after`: an abandoned native call (its thread may run on; a restart would pile
    /// up threads).
    pub fn quarantines_at_once(&self) -> bool {
        matches!(self, Self::Abandoned(_))
    }
}

/// Most outputs one call may return; past any of them the call is a fault
/// ([`PluginError::OutputCap`]) and nothing is copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputCaps {
    /// Derived values per call.
    pub derived_values: usize,
    /// Write proposals per call.
    pub proposals: usize,
    /// Bytes of all proposal reasons together, per call.
    pub string_bytes: usize,
}

impl Default for OutputCaps {
    fn default() -> Self {
        Self {
            derived_values: 65_536,
            proposals: 16_384,
            string_bytes: 64 * 1024,
        }
    }
}

impl OutputCaps {
    /// Checks a call's outputs against these caps, and that the derived-value columns have one
    /// length, before anything of them is used.
    ///
    /// Errors: [`PluginError::OutputCap`] past a cap; [`PluginError::Trap`] for columns of
    /// different lengths (the plugin broke the contract's shape).
    pub fn check(&self, outputs: Outputs) -> Result<Outputs, PluginError> {
        let values = &outputs.values;
        let count = values.indices.len();
        if values.values.len() != count || values.qualities.len() != count {
            return Err(PluginError::Trap(format!(
                "derived values have columns of different lengths ({count}, {}, {})",
                values.values.len(),
                values.qualities.len()
            )));
        }
        self.check_counts(count, outputs.proposals.len(), outputs.reasons.len())?;
        Ok(outputs)
    }

    /// Checks the counts of a call's outputs against these caps: `derived` values, `proposals`
    /// and `reason_bytes` bytes of reasons.
    ///
    /// Errors: [`PluginError::OutputCap`] for the first count past its cap.
    pub fn check_counts(
        &self,
        derived: usize,
        proposals: usize,
        reason_bytes: usize,
    ) -> Result<(), PluginError> {
        let over = |what, cap, got| Err(PluginError::OutputCap { what, cap, got });
        if derived > self.derived_values {
            return over("derived values", self.derived_values, derived);
        }
        if proposals > self.proposals {
            return over("proposals", self.proposals, proposals);
        }
        if reason_bytes > self.string_bytes {
            return over("bytes of proposal reasons", self.string_bytes, reason_bytes);
        }
        Ok(())
    }
}

/// A proposal's reason is cut to this many bytes (at a character boundary) for the audit log.
pub const MAX_REASON_BYTES: usize = 256;

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Most linear memory the instance may have, all memories together, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock time one call may take.
    pub deadline: Duration,
    /// Fuel (≈ wasm instructions) one call may use; `None` for no fuel metering.
    pub fuel: Option<u64>,
    /// Most outputs per call.
    pub outputs: OutputCaps,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 * 1024 * 1024,
            deadline: Duration::from_millis(100),
            fuel: None,
            outputs: OutputCaps::default(),
        }
    }
}

/// Writes a line of plugin instance `plugin` to the daemon's log at `level`, escaped to one line
/// and cut at [`super::stdio::MAX_LINE`] bytes, if `budget` has a line left (else it is counted
/// as dropped): the `log` import of both kinds of plugin. The line's target is
/// [`events::PLUGIN_LOG_TARGET`], whichever host the plugin runs in.
pub fn plugin_log(plugin: &str, budget: &LogBudget, level: Level, message: &str) {
    if !budget.take() {
        return;
    }
    let level = match level {
        Level::Trace => tracing::Level::TRACE,
        Level::Debug => tracing::Level::DEBUG,
        Level::Info => tracing::Level::INFO,
        Level::Warn => tracing::Level::WARN,
        Level::Error => tracing::Level::ERROR,
    };
    events::PluginLogged {
        plugin,
        level,
        message: &super::stdio::one_line(message),
    }
    .emit();
}
