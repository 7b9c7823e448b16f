//! The native export: a [`Plugin`] as a shared library speaking the C ABI of
//! `plugin-api/include/twinloom_plugin.h` (types in `twinloom-plugin-abi`), for `kind = "native"`.
//! [`export_plugin!`](crate::export_plugin) uses [`table`] on every target but Wasm.
//!
//! Every function catches panics (`catch_unwind`), so a panicking plugin returns
//! [`abi::FAULT`] (after logging the panic's message through the host) instead of unwinding into
//! the daemon; the table tells the host whether the library was built with `panic = "unwind"`,
//! without which nothing can be caught and the host refuses it.
//!
//! The change batch's columns are lent to the plugin as they are (the host's memory, valid for
//! the call); the outcomes are copied into a buffer the instance reuses, and the outputs of a
//! call stay in the instance until the host calls `free_outputs`.

use std::any::Any;
use std::cell::Cell;
use std::ffi::c_void;
use std::panic::{AssertUnwindSafe, catch_unwind};

use twinloom_plugin_abi as abi;

use crate::{
    Call, ChangeBatch, DataType, DeviceErrorKind, Level, Outcome, Outputs, Plugin, Properties,
    ProposalOutcome, Quality, Setpoint, WritableProperty,
};

thread_local! {
    /// The host table of the instance whose call last ran on this thread (null before the first
    /// call and after that instance's `drop`). Left set after a call: the host keeps its table
    /// valid until `drop` returns (header), and plugin code runs on this thread only in calls,
    /// so one access per call is enough.
    static HOST: Cell<*const abi::Host> = const { Cell::new(std::ptr::null()) };
}

/// Writes `message` to the log of the host whose call runs on this thread; nothing before the
/// first call.
pub(crate) fn log(level: Level, message: &str) {
    let host = HOST.with(Cell::get);
    if host.is_null() {
        return;
    }
    // SAFETY: HOST is the host table passed to `init` of the instance whose call last ran on this
    // thread; the header keeps it valid until that instance's `drop` returns, which resets HOST.
    let host = unsafe { &*host };
    if let Some(log) = host.log {
        // SAFETY: the host's own function with its own context, during a call, on the calling
        // thread (as the header requires); the message is valid for the call.
        unsafe { log(host.context, level as u32, abi::Str::of(message)) }
    }
}

/// The slice at `ptr` with `len` elements; empty for a null pointer or no elements.
///
/// # Safety
/// Unless null or `len` is 0, `ptr` points to `len` initialised `T`s valid for `'a`.
unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 {
        &[]
    } else {
        // SAFETY: the caller's promise.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// The text of `s`, if UTF-8.
///
/// # Safety
/// As [`slice`] for `s.ptr` and `s.len`.
unsafe fn text<'a>(s: abi::Str) -> Result<&'a str, String> {
    // SAFETY: the caller's promise.
    let bytes = unsafe { slice(s.ptr, s.len) };
    std::str::from_utf8(bytes).map_err(|e| format!("text from the host is not UTF-8: {e}"))
}

fn data_type(code: u32) -> Result<DataType, String> {
    match code {
        abi::BOOLEAN => Ok(DataType::Boolean),
        abi::INTEGER => Ok(DataType::Integer),
        abi::FLOAT => Ok(DataType::Float),
        other => Err(format!("unknown data type {other}")),
    }
}

/// The properties the host passed to `init`, copied.
///
/// # Safety
/// `p`'s lists are valid as the header says (for the call).
unsafe fn properties(p: &abi::Properties) -> Result<Properties, String> {
    let texts = |list: &[abi::Str]| {
        list.iter()
            // SAFETY: each string of a valid list is valid for the call.
            .map(|s| unsafe { text(*s) }.map(str::to_owned))
            .collect::<Result<Vec<_>, _>>()
    };
    // SAFETY: the caller's promise, list by list.
    let (inputs, owned, writable) = unsafe {
        (
            slice(p.inputs, p.inputs_len),
            slice(p.owned, p.owned_len),
            slice(p.writable, p.writable_len),
        )
    };
    Ok(Properties {
        inputs: texts(inputs)?,
        owned: texts(owned)?,
        writable: writable
            .iter()
            .map(|w| {
                Ok(WritableProperty {
                    // SAFETY: as above.
                    path: unsafe { text(w.path) }?.to_owned(),
                    data_type: data_type(w.data_type)?,
                })
            })
            .collect::<Result<_, String>>()?,
    })
}

fn device_error(code: u32) -> DeviceErrorKind {
    match code {
        0 => DeviceErrorKind::NotBound,
        1 => DeviceErrorKind::NotWritable,
        2 => DeviceErrorKind::NotConnected,
        3 => DeviceErrorKind::Stopped,
        4 => DeviceErrorKind::Timeout,
        5 => DeviceErrorKind::DeviceRejected,
        6 => DeviceErrorKind::Encoding,
        _ => DeviceErrorKind::OutOfRange,
    }
}

/// One outcome from the host, owned.
///
/// # Safety
/// `o.rule` is valid for the call.
unsafe fn outcome(o: &abi::ProposalOutcome) -> ProposalOutcome {
    let outcome = match o.outcome {
        abi::WRITTEN => Outcome::Written,
        // SAFETY: the caller's promise.
        abi::OUTCOME_REFUSED => {
            Outcome::Refused(unsafe { text(o.rule) }.unwrap_or_default().into())
        }
        abi::SHADOW => Outcome::Shadow,
        abi::EXPIRED => Outcome::Expired,
        abi::SUPERSEDED => Outcome::Superseded,
        abi::DISARMED => Outcome::Disarmed,
        abi::DEVICE_ERROR => Outcome::DeviceError(device_error(o.device_error)),
        _ => Outcome::ReadBackMismatch,
    };
    ProposalOutcome {
        proposal: o.proposal,
        index: o.index,
        outcome,
    }
}

/// One instance: the plugin's state and the buffers of its calls.
struct Instance<P> {
    plugin: P,
    host: *const abi::Host,
    /// Qualities of a batch whose quality bytes are not all discriminants, converted.
    qualities: Vec<Quality>,
    outcomes: Vec<ProposalOutcome>,
    /// The last call's outputs, pointed to until `free_outputs`.
    outputs: Outputs,
    proposals: Vec<abi::WriteProposal>,
    reasons: String,
}

impl<P: Plugin> Instance<P> {
    /// Takes the call's outcomes into the reused buffer.
    ///
    /// # Safety
    /// `outcomes` is valid for `len` entries for the call.
    unsafe fn call(
        &mut self,
        now_ms: i64,
        outcomes: *const abi::ProposalOutcome,
        len: usize,
    ) -> Call {
        let mut list = std::mem::take(&mut self.outcomes);
        list.clear();
        // SAFETY: the caller's promise: `len` outcomes at `outcomes`, each one's rule valid for
        // the call.
        let given = unsafe { slice(outcomes, len) };
        list.extend(given.iter().map(|o| {
            // SAFETY: as above, for this outcome's rule.
            unsafe { outcome(o) }
        }));
        Call {
            now_ms,
            outcomes: list,
        }
    }

    /// Keeps `outputs` and points `out` at them.
    fn give(&mut self, outputs: Outputs, call: Call, out: &mut abi::Outputs) {
        self.outcomes = call.outcomes;
        self.outputs = outputs;
        self.proposals.clear();
        self.reasons.clear();
        for p in &self.outputs.proposals {
            let (kind, boolean, integer, real) = match &p.value {
                Setpoint::Boolean(b) => (abi::BOOLEAN, u32::from(*b), 0, 0.0),
                Setpoint::Integer(i) => (abi::INTEGER, 0, *i, 0.0),
                Setpoint::Float(f) => (abi::FLOAT, 0, 0, *f),
            };
            self.proposals.push(abi::WriteProposal {
                value: abi::Setpoint {
                    kind,
                    boolean,
                    integer,
                    real,
                },
                index: p.index,
                reason_start: self.reasons.len() as u32,
                reason_len: p.reason.len() as u32,
                reserved: 0,
            });
            self.reasons.push_str(&p.reason);
        }
        *out = abi::Outputs {
            indices: self.outputs.indices.as_ptr(),
            values: self.outputs.values.as_ptr(),
            qualities: self.outputs.qualities.as_ptr(),
            values_len: self.outputs.indices.len(),
            proposals: self.proposals.as_ptr(),
            proposals_len: self.proposals.len(),
            reasons: self.reasons.as_ptr(),
            reasons_len: self.reasons.len(),
        };
    }
}

/// A panic's message.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f` with `host` as this thread's host, catching a panic: logged through the host, then
/// [`abi::FAULT`].
fn guarded(host: *const abi::Host, f: impl FnOnce() -> i32) -> i32 {
    HOST.with(|h| h.set(host));
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(code) => code,
        Err(panic) => {
            log(
                Level::Error,
                &format!("the plugin panicked: {}", panic_message(&*panic)),
            );
            abi::FAULT
        }
    }
}

unsafe extern "C" fn init<P: Plugin>(
    host: *const abi::Host,
    config: abi::Str,
    properties_in: *const abi::Properties,
    instance: *mut *mut c_void,
    error: *mut u8,
    error_cap: usize,
    error_len: *mut usize,
) -> i32 {
    let code = guarded(host, || {
        // SAFETY: the host passes a config and properties valid for the call (header).
        let made = unsafe { text(config) }
            .and_then(|config| Ok((config, unsafe { properties(&*properties_in) }?)))
            .and_then(|(config, properties)| P::init(config, properties));
        match made {
            Ok(plugin) => {
                let state = Box::new(Instance {
                    plugin,
                    host,
                    qualities: Vec::new(),
                    outcomes: Vec::new(),
                    outputs: Outputs::new(),
                    proposals: Vec::new(),
                    reasons: String::new(),
                });
                // SAFETY: `instance` is the host's place for the state (header).
                unsafe { *instance = Box::into_raw(state).cast() };
                abi::OK
            }
            Err(message) => {
                let mut cut = message.len().min(error_cap);
                while !message.is_char_boundary(cut) {
                    cut -= 1;
                }
                // SAFETY: the host's buffer holds `error_cap` bytes and `error_len` one usize
                // (header); `cut` ≤ `error_cap`.
                unsafe {
                    std::ptr::copy_nonoverlapping(message.as_ptr(), error, cut);
                    *error_len = cut;
                }
                abi::REFUSED
            }
        }
    });
    // Without an instance there will be no `drop`: the host may free its table after this.
    if code != abi::OK {
        forget_host(host);
    }
    code
}

unsafe extern "C" fn on_changes<P: Plugin>(
    instance: *mut c_void,
    now_ms: i64,
    batch: *const abi::ChangeBatch,
    outcomes: *const abi::ProposalOutcome,
    outcomes_len: usize,
    outputs: *mut abi::Outputs,
) -> i32 {
    // SAFETY: `instance` is what `init` made, used by one thread at a time (header).
    let state = unsafe { &mut *instance.cast::<Instance<P>>() };
    guarded(state.host, || {
        // SAFETY: the batch and its columns are valid for the call (header).
        let batch = unsafe { &*batch };
        let (properties, values, qualities, times) = unsafe {
            (
                slice(batch.properties, batch.len),
                slice(batch.values, batch.len),
                slice(batch.qualities, batch.len),
                slice(batch.source_times_ms, batch.len),
            )
        };
        // SAFETY: the outcomes are valid for the call (header).
        let call = unsafe { state.call(now_ms, outcomes, outcomes_len) };
        let qualities: &[Quality] = if let Some(lent) = crate::quality::lend(qualities) {
            lent
        } else {
            // Any other byte counts as bad (header): converted into the instance's buffer.
            state.qualities.clear();
            state
                .qualities
                .extend(qualities.iter().map(|b| Quality::from_byte(*b)));
            &state.qualities
        };
        let batch = ChangeBatch::new(properties, values, qualities, times);
        let result = state.plugin.on_changes(&batch, &call);
        // SAFETY: `outputs` is the host's place for the outputs (header).
        state.give(result, call, unsafe { &mut *outputs });
        abi::OK
    })
}

unsafe extern "C" fn on_tick<P: Plugin>(
    instance: *mut c_void,
    now_ms: i64,
    outcomes: *const abi::ProposalOutcome,
    outcomes_len: usize,
    outputs: *mut abi::Outputs,
) -> i32 {
    // SAFETY: as in `on_changes`.
    let state = unsafe { &mut *instance.cast::<Instance<P>>() };
    guarded(state.host, || {
        // SAFETY: the outcomes are valid for the call (header).
        let call = unsafe { state.call(now_ms, outcomes, outcomes_len) };
        let result = state.plugin.on_tick(&call);
        // SAFETY: `outputs` is the host's place for the outputs (header).
        state.give(result, call, unsafe { &mut *outputs });
        abi::OK
    })
}

unsafe extern "C" fn free_outputs<P: Plugin>(instance: *mut c_void, outputs: *mut abi::Outputs) {
    // SAFETY: as in `on_changes`.
    let state = unsafe { &mut *instance.cast::<Instance<P>>() };
    state.outputs = Outputs::new();
    if !outputs.is_null() {
        // SAFETY: the host's outputs record (header).
        unsafe { *outputs = abi::Outputs::EMPTY };
    }
}

unsafe extern "C" fn drop<P: Plugin>(instance: *mut c_void) {
    // SAFETY: `instance` came from `Box::into_raw` in `init` and the host drops it once.
    let state = unsafe { Box::from_raw(instance.cast::<Instance<P>>()) };
    let host = state.host;
    guarded(host, move || {
        std::mem::drop(state);
        abi::OK
    });
    forget_host(host);
}

/// Resets this thread's host if it is `host` (whose table may not outlive what just happened).
fn forget_host(host: *const abi::Host) {
    HOST.with(|h| {
        if h.get() == host {
            h.set(std::ptr::null());
        }
    });
}

/// The function table of plugin `P`. `panic_strategy` is [`abi::PANIC_UNWIND`] or
/// [`abi::PANIC_ABORT`] as the library is built (the export macro passes `cfg!(panic = ...)`).
pub const fn table<P: Plugin>(panic_strategy: u32) -> abi::Plugin {
    abi::Plugin {
        abi_version: abi::ABI_VERSION,
        size: size_of::<abi::Plugin>() as u32,
        panic_strategy,
        reserved: 0,
        init: Some(init::<P> as abi::InitFn),
        on_changes: Some(on_changes::<P> as abi::OnChangesFn),
        on_tick: Some(on_tick::<P> as abi::OnTickFn),
        free_outputs: Some(free_outputs::<P> as abi::FreeOutputsFn),
        drop: Some(drop::<P> as abi::DropFn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes each change as a derived value: its input index, its value, its quality.
    struct Echo;

    impl Plugin for Echo {
        fn init(_config: &str, _properties: Properties) -> Result<Self, String> {
            Ok(Self)
        }

        fn on_changes(&mut self, batch: &ChangeBatch<'_>, _call: &Call) -> Outputs {
            let mut out = Outputs::new();
            for i in 0..batch.len() {
                out.set_with_quality(batch.properties[i], batch.values[i], batch.qualities[i]);
            }
            out
        }

        fn on_tick(&mut self, _call: &Call) -> Outputs {
            Outputs::new()
        }
    }

    /// Calls the exported `on_changes` of `Echo` (an instance from its exported `init`) with
    /// quality bytes `qualities`; the qualities it saw, as bytes.
    fn echoed(qualities: &[u8]) -> Vec<u8> {
        let table = table::<Echo>(abi::PANIC_UNWIND);
        let host = abi::Host {
            size: size_of::<abi::Host>() as u32,
            reserved: 0,
            context: std::ptr::null_mut(),
            log: None,
        };
        let properties = abi::Properties {
            inputs: std::ptr::null(),
            inputs_len: 0,
            owned: std::ptr::null(),
            owned_len: 0,
            writable: std::ptr::null(),
            writable_len: 0,
        };
        let (mut instance, mut error, mut error_len) = (std::ptr::null_mut(), [0u8; 16], 0);
        let n = qualities.len();
        let (properties_in, values) = ((0..n as u32).collect::<Vec<_>>(), vec![1.5; n]);
        let times = vec![7i64; n];
        let batch = abi::ChangeBatch {
            properties: properties_in.as_ptr(),
            values: values.as_ptr(),
            qualities: qualities.as_ptr(),
            source_times_ms: times.as_ptr(),
            len: n,
        };
        let mut out = abi::Outputs::EMPTY;
        // SAFETY: every pointer is valid for its call, as the header asks of the host.
        unsafe {
            let init = table.init.unwrap();
            assert_eq!(
                init(
                    &host,
                    abi::Str::of(""),
                    &properties,
                    &mut instance,
                    error.as_mut_ptr(),
                    error.len(),
                    &mut error_len
                ),
                abi::OK
            );
            let on_changes = table.on_changes.unwrap();
            assert_eq!(
                on_changes(instance, 0, &batch, std::ptr::null(), 0, &mut out),
                abi::OK
            );
            assert_eq!(out.values_len, n);
            let seen = slice(out.qualities, out.values_len).to_vec();
            assert_eq!(slice(out.indices, out.values_len), properties_in);
            table.free_outputs.unwrap()(instance, &mut out);
            table.drop.unwrap()(instance);
            seen
        }
    }

    #[test]
    fn quality_bytes_are_lent_or_converted_when_not_discriminants() {
        // All discriminants: the host's bytes are lent as they are.
        assert_eq!(echoed(&[0, 1, 2, 2, 0]), [0, 1, 2, 2, 0]);
        // Any other byte counts as bad (the header's rule), the rest keep theirs.
        assert_eq!(echoed(&[0, 7, 1, 255, 2]), [0, 2, 1, 2, 2]);
        assert_eq!(echoed(&[]), Vec::<u8>::new());
    }
}
