//! The C ABI of Twinloom's native plugins, contract `twinloom:plugin@0.3.0`: the `#[repr(C)]`
//! mirror of `plugin-api/include/twinloom_plugin.h`, whose comments are the reference (entry
//! point, lifetimes of every pointer, threads, deadlines, "nothing unwinds across the
//! boundary"). The daemon's native host (`daemon/src/plugins/native/`) and the Rust SDK's native
//! export (`twinloom-plugin`, `export_plugin!` on a non-Wasm target) both use these types; a test
//! compiles a C program against the header and compares every size and offset with these.
//!
//! The types hold raw pointers and function pointers only; no code here dereferences them.

use std::ffi::c_void;

/// The ABI version: the contract's `(major << 16) | (minor << 8) | patch`, here 0.3.0.
pub const ABI_VERSION: u32 = 0x00_03_00;
/// The name of the entry point a native plugin exports.
pub const ENTRY: &str = "twinloom_plugin_entry";

/// The contract an ABI version stands for, e.g. `twinloom:plugin@0.3.0` for `0x000300`.
pub fn contract(abi_version: u32) -> String {
    format!(
        "twinloom:plugin@{}.{}.{}",
        abi_version >> 16,
        (abi_version >> 8) & 0xff,
        abi_version & 0xff
    )
}

/// `init` and the calls succeeded.
pub const OK: i32 = 0;
/// `init` only: the settings are wrong; the message is in the error buffer.
pub const REFUSED: i32 = 1;
/// The plugin failed (a caught exception or panic): its fault.
pub const FAULT: i32 = -1;

/// Quality bytes: good.
pub const GOOD: u8 = 0;
/// Quality bytes: uncertain.
pub const UNCERTAIN: u8 = 1;
/// Quality bytes: bad (so is any byte above 2).
pub const BAD: u8 = 2;

/// Data type / setpoint kind: boolean.
pub const BOOLEAN: u32 = 0;
/// Data type / setpoint kind: integer.
pub const INTEGER: u32 = 1;
/// Data type / setpoint kind: float.
pub const FLOAT: u32 = 2;

/// Outcome: the device took the value.
pub const WRITTEN: u32 = 0;
/// Outcome: the gate refused it (`rule` names the rule).
pub const OUTCOME_REFUSED: u32 = 1;
/// Outcome: decided, not written (shadow mode).
pub const SHADOW: u32 = 2;
/// Outcome: dropped before execution.
pub const EXPIRED: u32 = 3;
/// Outcome: replaced by a newer proposal.
pub const SUPERSEDED: u32 = 4;
/// Outcome: the plant was disarmed.
pub const DISARMED: u32 = 5;
/// Outcome: the device did not take it (`device_error` says why).
pub const DEVICE_ERROR: u32 = 6;
/// Outcome: reading back gave another register image.
pub const READ_BACK_MISMATCH: u32 = 7;

/// `panic_strategy`: not Rust, nothing to check.
pub const PANIC_NONE: u32 = 0;
/// `panic_strategy`: Rust built with `panic = "unwind"`; panics are caught at the boundary.
pub const PANIC_UNWIND: u32 = 1;
/// `panic_strategy`: Rust built with `panic = "abort"`; refused.
pub const PANIC_ABORT: u32 = 2;

/// UTF-8 text: `len` bytes at `ptr` (`twinloom_str`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Str {
    /// The bytes; may be null when `len` is 0.
    pub ptr: *const u8,
    /// Their count.
    pub len: usize,
}

impl Str {
    /// The text `s` as a `Str` (valid while `s` is).
    pub fn of(s: &str) -> Self {
        Self {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }

    /// No text.
    pub const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        len: 0,
    };
}

/// `twinloom_writable_property`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct WritableProperty {
    /// `<asset path>/<property>`.
    pub path: Str,
    /// [`BOOLEAN`], [`INTEGER`] or [`FLOAT`].
    pub data_type: u32,
}

/// `twinloom_properties`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Properties {
    /// Subscribed inputs.
    pub inputs: *const Str,
    /// Their count.
    pub inputs_len: usize,
    /// Owned (derived) properties.
    pub owned: *const Str,
    /// Their count.
    pub owned_len: usize,
    /// Writable properties (setpoints).
    pub writable: *const WritableProperty,
    /// Their count.
    pub writable_len: usize,
}

/// `twinloom_change_batch`: every column has `len` entries.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ChangeBatch {
    /// Index into the inputs.
    pub properties: *const u32,
    /// Values in engineering units.
    pub values: *const f64,
    /// Quality bytes.
    pub qualities: *const u8,
    /// Source times, ms since the Unix epoch.
    pub source_times_ms: *const i64,
    /// Entries.
    pub len: usize,
}

/// `twinloom_proposal_outcome`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProposalOutcome {
    /// The proposal's sequence number.
    pub proposal: u64,
    /// Its index into the writable list.
    pub index: u32,
    /// [`WRITTEN`], [`OUTCOME_REFUSED`], ...
    pub outcome: u32,
    /// With [`DEVICE_ERROR`]: the device error kind (0 not bound ... 7 out of range).
    pub device_error: u32,
    /// 0.
    pub reserved: u32,
    /// With [`OUTCOME_REFUSED`]: the deciding rule.
    pub rule: Str,
}

/// `twinloom_setpoint`: only the field of `kind` is read.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setpoint {
    /// [`BOOLEAN`], [`INTEGER`] or [`FLOAT`].
    pub kind: u32,
    /// 0 or 1.
    pub boolean: u32,
    /// An integer setpoint.
    pub integer: i64,
    /// A float setpoint.
    pub real: f64,
}

/// `twinloom_write_proposal`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WriteProposal {
    /// The value.
    pub value: Setpoint,
    /// Index into the writable list.
    pub index: u32,
    /// Start of the reason in the outputs' reasons.
    pub reason_start: u32,
    /// Length of the reason.
    pub reason_len: u32,
    /// 0.
    pub reserved: u32,
}

/// `twinloom_outputs`: the plugin owns every pointer until `free_outputs`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Outputs {
    /// Owned indices of the derived values.
    pub indices: *const u32,
    /// Their values.
    pub values: *const f64,
    /// Their quality bytes.
    pub qualities: *const u8,
    /// Derived values.
    pub values_len: usize,
    /// Write proposals.
    pub proposals: *const WriteProposal,
    /// Their count.
    pub proposals_len: usize,
    /// The reasons, UTF-8.
    pub reasons: *const u8,
    /// Their length in bytes.
    pub reasons_len: usize,
}

impl Outputs {
    /// No outputs.
    pub const EMPTY: Self = Self {
        indices: std::ptr::null(),
        values: std::ptr::null(),
        qualities: std::ptr::null(),
        values_len: 0,
        proposals: std::ptr::null(),
        proposals_len: 0,
        reasons: std::ptr::null(),
        reasons_len: 0,
    };
}

/// The host's `log`.
pub type LogFn = unsafe extern "C" fn(context: *mut c_void, level: u32, message: Str);

/// `twinloom_host`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Host {
    /// `size_of::<Host>()` as the host was built.
    pub size: u32,
    /// 0.
    pub reserved: u32,
    /// Passed back to the host's functions.
    pub context: *mut c_void,
    /// Writes one line to the daemon's log.
    pub log: Option<LogFn>,
}

/// `init`.
pub type InitFn = unsafe extern "C" fn(
    host: *const Host,
    config: Str,
    properties: *const Properties,
    instance: *mut *mut c_void,
    error: *mut u8,
    error_cap: usize,
    error_len: *mut usize,
) -> i32;
/// `on_changes`.
pub type OnChangesFn = unsafe extern "C" fn(
    instance: *mut c_void,
    now_ms: i64,
    batch: *const ChangeBatch,
    outcomes: *const ProposalOutcome,
    outcomes_len: usize,
    outputs: *mut Outputs,
) -> i32;
/// `on_tick`.
pub type OnTickFn = unsafe extern "C" fn(
    instance: *mut c_void,
    now_ms: i64,
    outcomes: *const ProposalOutcome,
    outcomes_len: usize,
    outputs: *mut Outputs,
) -> i32;
/// `free_outputs`.
pub type FreeOutputsFn = unsafe extern "C" fn(instance: *mut c_void, outputs: *mut Outputs);
/// `drop`.
pub type DropFn = unsafe extern "C" fn(instance: *mut c_void);

/// `twinloom_plugin`: the table the entry point returns.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Plugin {
    /// [`ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<Plugin>()` as the plugin was built.
    pub size: u32,
    /// [`PANIC_NONE`], [`PANIC_UNWIND`] or [`PANIC_ABORT`].
    pub panic_strategy: u32,
    /// 0.
    pub reserved: u32,
    /// Makes an instance.
    pub init: Option<InitFn>,
    /// Handles changes.
    pub on_changes: Option<OnChangesFn>,
    /// Handles a tick.
    pub on_tick: Option<OnTickFn>,
    /// Frees one call's outputs.
    pub free_outputs: Option<FreeOutputsFn>,
    /// Frees the instance.
    pub drop: Option<DropFn>,
}

/// The entry point's type.
pub type EntryFn = unsafe extern "C" fn() -> *const Plugin;

#[cfg(test)]
mod tests {
    #[test]
    fn an_abi_version_names_its_contract() {
        assert_eq!(super::contract(super::ABI_VERSION), "twinloom:plugin@0.3.0");
        assert_eq!(super::contract(0x00_02_00), "twinloom:plugin@0.2.0");
        assert_eq!(super::contract(0x01_0a_02), "twinloom:plugin@1.10.2");
    }
}
