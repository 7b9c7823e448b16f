//! One native plugin instance on a thread of its own: the caller hands each call over and waits
//! at most the deadline for the answer.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use twinloom_plugin_abi as abi;

use crate::plugins::contract::{
    DataType, DeviceErrorKind, Level, Outcome, OutputCaps, Setpoint, WriteProposal, plugin_log,
};
use crate::plugins::runtime::{
    ChangeBatch, Limits, Outputs, PluginError, PluginInstance, Properties, ProposalOutcome,
};
use crate::plugins::stdio::LogBudget;

/// Bytes of the buffer `init` may write its refusal into.
const ERROR_CAPACITY: usize = 4096;

/// How long the instance's thread polls for the next call after answering one before it sleeps.
/// Waking a sleeping thread costs several microseconds on Linux; a busy plugin's next call is
/// caught in a fraction of that, for at most this much CPU per call.
pub const NEXT_CALL_SPIN: Duration = Duration::from_micros(50);

/// How long the caller polls for the answer before it sleeps: long enough to catch the answer
/// of most calls (a batch of 1024 samples through vibration-health takes ≈ 14 µs), after which
/// sleeping costs little beside the call. On the 2-core development VM a sleeping thread took
/// ≈ 50 µs to wake (measured: with a 5 µs poll, a 1024-sample call through the thread cost 65 µs
/// instead of 14).
pub const ANSWER_SPIN: Duration = Duration::from_micros(100);

/// Polls `try_recv` for up to `limit`; `None` when nothing came (or the sender is gone: the
/// blocking receive that follows says which).
fn spin<T>(receiver: &mpsc::Receiver<T>, limit: Duration) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        for _ in 0..16 {
            match receiver.try_recv() {
                Ok(value) => return Some(value),
                Err(mpsc::TryRecvError::Disconnected) => return None,
                Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
        if started.elapsed() >= limit {
            return None;
        }
    }
}

/// A call handed to the instance's thread.
enum Request {
    Init {
        config: String,
        properties: Properties,
    },
    Changes {
        now_ms: i64,
        batch: Arc<ChangeBatch>,
        outcomes: Arc<[ProposalOutcome]>,
        /// The caller's outputs, to fill and hand back (their capacity reused).
        outputs: Outputs,
    },
    Tick {
        now_ms: i64,
        outcomes: Arc<[ProposalOutcome]>,
        outputs: Outputs,
    },
}

/// The thread's answer.
enum Answer {
    Init(Result<(), String>),
    Outputs(Outputs),
}

type Reply = Result<Answer, PluginError>;

/// One native plugin instance: the handle of its thread.
#[derive(Debug)]
pub struct NativeInstance {
    requests: mpsc::Sender<Request>,
    replies: mpsc::Receiver<Reply>,
    deadline: Duration,
    /// A call ran past its deadline; the thread is left to itself.
    abandoned: bool,
    budget: LogBudget,
}

impl NativeInstance {
    /// Starts the thread of a new instance named `name` of the library with `table`.
    ///
    /// Errors: [`PluginError::HostPanic`] when the thread cannot be started.
    pub(super) fn start(
        name: &str,
        table: &'static abi::Plugin,
        limits: Limits,
    ) -> Result<Self, PluginError> {
        let (requests, inbox) = mpsc::channel();
        let (outbox, replies) = mpsc::channel();
        let budget = LogBudget::new();
        let (name, caps, shared) = (name.to_owned(), limits.outputs, budget.clone());
        std::thread::Builder::new()
            .name(format!("plugin:{name}"))
            .spawn(move || {
                serve(
                    LocalInstance::of(table, &name, caps, shared),
                    &inbox,
                    &outbox,
                );
            })
            .map_err(|e| {
                PluginError::HostPanic(format!("cannot start the plugin's thread: {e}"))
            })?;
        Ok(Self {
            requests,
            replies,
            deadline: limits.deadline,
            abandoned: false,
            budget,
        })
    }

    /// Hands `request` to the thread and waits at most the deadline for its answer.
    fn round_trip(&mut self, request: Request) -> Reply {
        if self.abandoned {
            return Err(PluginError::Abandoned(self.deadline));
        }
        let gone = || PluginError::HostPanic("the plugin's thread has ended".into());
        let sent = std::time::Instant::now();
        self.requests.send(request).map_err(|_| gone())?;
        if let Some(reply) = spin(&self.replies, ANSWER_SPIN) {
            return reply;
        }
        let left = self.deadline.saturating_sub(sent.elapsed());
        match self.replies.recv_timeout(left) {
            Ok(reply) => reply,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.abandoned = true;
                Err(PluginError::Abandoned(self.deadline))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(gone()),
        }
    }

    fn outputs(&mut self, request: Request) -> Result<Outputs, PluginError> {
        match self.round_trip(request)? {
            Answer::Outputs(outputs) => Ok(outputs),
            Answer::Init(_) => Err(PluginError::HostPanic("a call answered as init".into())),
        }
    }
}

impl PluginInstance for NativeInstance {
    fn init(
        &mut self,
        _now_ms: i64,
        config: &str,
        properties: &Properties,
    ) -> Result<Result<(), String>, PluginError> {
        let request = Request::Init {
            config: config.to_owned(),
            properties: properties.clone(),
        };
        match self.round_trip(request)? {
            Answer::Init(answer) => Ok(answer),
            Answer::Outputs(_) => Err(PluginError::HostPanic("init answered as a call".into())),
        }
    }

    fn on_changes(
        &mut self,
        now_ms: i64,
        batch: &Arc<ChangeBatch>,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        *outputs = self.outputs(Request::Changes {
            now_ms,
            batch: Arc::clone(batch),
            outcomes: Arc::clone(outcomes),
            outputs: std::mem::take(outputs),
        })?;
        Ok(())
    }

    fn on_tick(
        &mut self,
        now_ms: i64,
        outcomes: &Arc<[ProposalOutcome]>,
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        *outputs = self.outputs(Request::Tick {
            now_ms,
            outcomes: Arc::clone(outcomes),
            outputs: std::mem::take(outputs),
        })?;
        Ok(())
    }

    fn fuel_used(&self) -> u64 {
        0
    }

    fn log_dropped(&mut self) -> u64 {
        self.budget.take_dropped()
    }
}

/// What the host table's `context` points to.
struct HostContext {
    name: String,
    budget: LogBudget,
}

/// The host's `log` (`twinloom_host.log`).
unsafe extern "C" fn host_log(context: *mut c_void, level: u32, message: abi::Str) {
    // Nothing may unwind into the plugin.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: `context` is the `HostContext` this thread put into the host table, alive until
        // the thread ends, after the instance's `drop`.
        let context = unsafe { &*context.cast_const().cast::<HostContext>() };
        // SAFETY: the plugin passes a message valid for the call (header).
        let Ok(bytes) = (unsafe { column(message.ptr, message.len) }) else {
            return;
        };
        let level = match level {
            0 => Level::Trace,
            1 => Level::Debug,
            2 => Level::Info,
            3 => Level::Warn,
            _ => Level::Error,
        };
        plugin_log(
            &context.name,
            &context.budget,
            level,
            &String::from_utf8_lossy(bytes),
        );
    });
}

/// The column at `ptr` with `len` elements.
///
/// # Safety
/// Unless `len` is 0 or `ptr` null or misaligned (refused), `ptr` points to `len` initialised
/// `T`s that stay valid and unchanged for `'a`.
unsafe fn column<'a, T>(ptr: *const T, len: usize) -> Result<&'a [T], PluginError> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() || !ptr.is_aligned() {
        return Err(PluginError::Trap(format!(
            "the plugin returned {len} entries at a null or misaligned pointer"
        )));
    }
    // SAFETY: the caller's promise; null and misaligned pointers are refused above.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Copies a call's outputs out of the plugin's memory into `into` (replacing its contents, its
/// capacity reused), counts checked against `caps` first.
///
/// # Safety
/// `out` is what the plugin's call filled in, before `free_outputs`.
unsafe fn take_outputs(
    out: &abi::Outputs,
    caps: &OutputCaps,
    into: &mut Outputs,
) -> Result<(), PluginError> {
    caps.check_counts(out.values_len, out.proposals_len, out.reasons_len)?;
    // SAFETY: the plugin's outputs stay valid until `free_outputs` (header); the counts are
    // within the caps, so the copies below are bounded.
    let (indices, values, qualities, proposals, reasons) = unsafe {
        (
            column(out.indices, out.values_len)?,
            column(out.values, out.values_len)?,
            column(out.qualities, out.values_len)?,
            column(out.proposals, out.proposals_len)?,
            column(out.reasons, out.reasons_len)?,
        )
    };
    let reasons = std::str::from_utf8(reasons)
        .map_err(|e| PluginError::Trap(format!("the proposals' reasons are not UTF-8: {e}")))?;
    into.proposals.clear();
    for p in proposals {
        let value = match p.value.kind {
            abi::BOOLEAN => Setpoint::Boolean(p.value.boolean != 0),
            abi::INTEGER => Setpoint::Integer(p.value.integer),
            abi::FLOAT => Setpoint::Float(p.value.real),
            kind => {
                return Err(PluginError::Trap(format!(
                    "a proposal's setpoint has the unknown kind {kind}"
                )));
            }
        };
        into.proposals.push(WriteProposal {
            index: p.index,
            value,
            reason_start: p.reason_start,
            reason_len: p.reason_len,
        });
    }
    let derived = &mut into.values;
    derived.indices.clear();
    derived.indices.extend_from_slice(indices);
    derived.values.clear();
    derived.values.extend_from_slice(values);
    derived.qualities.clear();
    derived.qualities.extend_from_slice(qualities);
    into.reasons.clear();
    into.reasons.push_str(reasons);
    Ok(())
}

fn data_type(data_type: DataType) -> u32 {
    match data_type {
        DataType::Boolean => abi::BOOLEAN,
        DataType::Integer => abi::INTEGER,
        DataType::Float => abi::FLOAT,
    }
}

fn device_error(kind: DeviceErrorKind) -> u32 {
    match kind {
        DeviceErrorKind::NotBound => 0,
        DeviceErrorKind::NotWritable => 1,
        DeviceErrorKind::NotConnected => 2,
        DeviceErrorKind::Stopped => 3,
        DeviceErrorKind::Timeout => 4,
        DeviceErrorKind::DeviceRejected => 5,
        DeviceErrorKind::Encoding => 6,
        DeviceErrorKind::OutOfRange => 7,
    }
}

/// Puts `outcomes` into `into` as the ABI passes them (strings borrowed from `outcomes`).
fn outcomes_of(outcomes: &[ProposalOutcome], into: &mut Vec<abi::ProposalOutcome>) {
    into.clear();
    into.extend(outcomes.iter().map(|o| {
        let (outcome, device, rule) = match &o.outcome {
            Outcome::Written => (abi::WRITTEN, 0, abi::Str::EMPTY),
            Outcome::Refused(rule) => (abi::OUTCOME_REFUSED, 0, abi::Str::of(rule)),
            Outcome::Shadow => (abi::SHADOW, 0, abi::Str::EMPTY),
            Outcome::Expired => (abi::EXPIRED, 0, abi::Str::EMPTY),
            Outcome::Superseded => (abi::SUPERSEDED, 0, abi::Str::EMPTY),
            Outcome::Disarmed => (abi::DISARMED, 0, abi::Str::EMPTY),
            Outcome::DeviceError(kind) => (abi::DEVICE_ERROR, device_error(*kind), abi::Str::EMPTY),
            Outcome::ReadBackMismatch => (abi::READ_BACK_MISMATCH, 0, abi::Str::EMPTY),
        };
        abi::ProposalOutcome {
            proposal: o.proposal,
            index: o.index,
            outcome,
            device_error: device,
            reserved: 0,
            rule,
        }
    }));
}

/// One native plugin instance called on the calling thread: what each instance's thread runs
/// ([`NativeInstance`] adds the thread and the deadline). Calls block for as long as the plugin
/// takes; nothing interrupts them. Not `Send`: an instance stays on the thread that made it
/// (header: "THREADS"). Dropping it drops the plugin's instance.
pub struct LocalInstance {
    table: &'static abi::Plugin,
    /// The plugin's instance; null until `init` succeeds.
    instance: *mut c_void,
    /// The host table handed to `init`; boxed so its address stays put while the plugin holds it.
    host: Box<abi::Host>,
    /// What `host.context` points to.
    context: Box<HostContext>,
    caps: OutputCaps,
    /// The current call's outcomes as the ABI passes them; empty between calls (its strings
    /// point into the caller's outcomes).
    outcomes: Vec<abi::ProposalOutcome>,
}

impl std::fmt::Debug for LocalInstance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalInstance")
            .field("plugin", &self.context.name)
            .finish_non_exhaustive()
    }
}

impl LocalInstance {
    /// An instance named `name` of `library` (not initialised yet), its outputs held to
    /// `caps`; its log lines go through `budget`.
    pub fn new(name: &str, library: &super::Library, caps: OutputCaps, budget: LogBudget) -> Self {
        Self::of(library.table, name, caps, budget)
    }

    fn of(table: &'static abi::Plugin, name: &str, caps: OutputCaps, budget: LogBudget) -> Self {
        let context = Box::new(HostContext {
            name: name.to_owned(),
            budget,
        });
        let host = Box::new(abi::Host {
            size: size_of::<abi::Host>() as u32,
            reserved: 0,
            context: std::ptr::from_ref::<HostContext>(&context)
                .cast_mut()
                .cast(),
            log: Some(host_log),
        });
        Self {
            table,
            instance: std::ptr::null_mut(),
            host,
            context,
            caps,
            outcomes: Vec::new(),
        }
    }

    /// Drops the plugin's instance, if there is one.
    fn release(&mut self) {
        if let (false, Some(drop)) = (self.instance.is_null(), self.table.drop) {
            // SAFETY: the instance came from this table's `init` on this thread (the type is not
            // Send) and is dropped once; the host table outlives the call.
            unsafe { drop(self.instance) };
        }
        self.instance = std::ptr::null_mut();
    }

    /// Calls `init` with the plugin's settings (TOML text) and its properties (dropping an
    /// instance made before). The outer error is a fault; the inner one the plugin's refusal.
    ///
    /// Errors: [`PluginError::Trap`] when the plugin reports a fault or makes no instance.
    pub fn init(
        &mut self,
        config: &str,
        properties: &Properties,
    ) -> Result<Result<(), String>, PluginError> {
        self.release();
        let inputs: Vec<abi::Str> = properties.inputs.iter().map(|p| abi::Str::of(p)).collect();
        let owned: Vec<abi::Str> = properties.owned.iter().map(|p| abi::Str::of(p)).collect();
        let writable: Vec<abi::WritableProperty> = properties
            .writable
            .iter()
            .map(|w| abi::WritableProperty {
                path: abi::Str::of(&w.path),
                data_type: data_type(w.data_type),
            })
            .collect();
        let lists = abi::Properties {
            inputs: inputs.as_ptr(),
            inputs_len: inputs.len(),
            owned: owned.as_ptr(),
            owned_len: owned.len(),
            writable: writable.as_ptr(),
            writable_len: writable.len(),
        };
        let mut error = vec![0u8; ERROR_CAPACITY];
        let mut error_len = 0usize;
        let mut made: *mut c_void = std::ptr::null_mut();
        let Some(init) = self.table.init else {
            return Err(PluginError::Load("the plugin's table lacks init".into()));
        };
        // SAFETY: every pointer is valid for the call (the lists, config and error buffer live
        // until after it); the host table lives as long as `self`, which drops the instance.
        let code = unsafe {
            init(
                &*self.host,
                abi::Str::of(config),
                &lists,
                &mut made,
                error.as_mut_ptr(),
                error.len(),
                &mut error_len,
            )
        };
        match code {
            abi::OK if !made.is_null() => {
                self.instance = made;
                Ok(Ok(()))
            }
            abi::OK => Err(PluginError::Trap(
                "init succeeded but made no instance".into(),
            )),
            abi::REFUSED => {
                error.truncate(error_len.min(ERROR_CAPACITY));
                Ok(Err(String::from_utf8_lossy(&error).into_owned()))
            }
            code => Err(fault(code)),
        }
    }

    /// Calls `on_changes` at `now_ms` with `batch` and `outcomes`; the outputs are copied into
    /// `outputs` (replacing its contents; nothing is allocated once its columns are large
    /// enough).
    ///
    /// Errors: not initialised ([`PluginError::Load`]); the plugin reports a fault or returns
    /// malformed outputs ([`PluginError::Trap`]); outputs past the caps
    /// ([`PluginError::OutputCap`]).
    pub fn on_changes(
        &mut self,
        now_ms: i64,
        batch: &ChangeBatch,
        outcomes: &[ProposalOutcome],
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        let len = batch
            .properties
            .len()
            .min(batch.values.len())
            .min(batch.qualities.len())
            .min(batch.source_times_ms.len());
        let columns = abi::ChangeBatch {
            properties: batch.properties.as_ptr(),
            values: batch.values.as_ptr(),
            qualities: batch.qualities.as_ptr(),
            source_times_ms: batch.source_times_ms.as_ptr(),
            len,
        };
        outcomes_of(outcomes, &mut self.outcomes);
        self.call(outputs, |table, instance, outcomes, out| {
            table.on_changes.map_or(abi::FAULT, |on_changes| {
                // SAFETY: the batch, its columns and the outcomes (their strings borrowed from
                // the caller's) live until after the call; `instance` is this table's,
                // initialised (checked by `call`).
                unsafe {
                    on_changes(
                        instance,
                        now_ms,
                        &columns,
                        outcomes.as_ptr(),
                        outcomes.len(),
                        out,
                    )
                }
            })
        })
    }

    /// Calls `on_tick` at `now_ms` with `outcomes`; the outputs are copied into `outputs` as
    /// [`LocalInstance::on_changes`] does.
    ///
    /// Errors: as [`LocalInstance::on_changes`].
    pub fn on_tick(
        &mut self,
        now_ms: i64,
        outcomes: &[ProposalOutcome],
        outputs: &mut Outputs,
    ) -> Result<(), PluginError> {
        outcomes_of(outcomes, &mut self.outcomes);
        self.call(outputs, |table, instance, outcomes, out| {
            table.on_tick.map_or(abi::FAULT, |on_tick| {
                // SAFETY: as in `on_changes`.
                unsafe { on_tick(instance, now_ms, outcomes.as_ptr(), outcomes.len(), out) }
            })
        })
    }

    /// Makes one call with `f` (given the table, the instance, the call's outcomes and the
    /// outputs record), copies its outputs into `outputs` and hands them back to the plugin.
    fn call(
        &mut self,
        outputs: &mut Outputs,
        f: impl FnOnce(&abi::Plugin, *mut c_void, &[abi::ProposalOutcome], *mut abi::Outputs) -> i32,
    ) -> Result<(), PluginError> {
        if self.instance.is_null() {
            self.outcomes.clear();
            return Err(PluginError::Load("instance is not initialised".into()));
        }
        let mut out = abi::Outputs::EMPTY;
        let code = f(self.table, self.instance, &self.outcomes, &mut out);
        // The outcomes' strings are the caller's: nothing of them is kept past the call.
        self.outcomes.clear();
        if code != abi::OK {
            return Err(fault(code));
        }
        // SAFETY: the call succeeded, so `out` is its outputs, valid until `free_outputs`.
        let taken = unsafe { take_outputs(&out, &self.caps, outputs) };
        if let Some(free) = self.table.free_outputs {
            // SAFETY: the outputs of the call just made on this instance, freed once.
            unsafe { free(self.instance, &mut out) };
        }
        taken
    }
}

impl Drop for LocalInstance {
    fn drop(&mut self) {
        self.release();
    }
}

fn fault(code: i32) -> PluginError {
    PluginError::Trap(format!(
        "the native plugin reported a fault (code {code}; its log says why)"
    ))
}

/// The instance's thread: makes the instance, answers its calls, drops it when the handle is
/// gone (or, after a fault, at once) and ends.
fn serve(mut local: LocalInstance, inbox: &mpsc::Receiver<Request>, outbox: &mpsc::Sender<Reply>) {
    while let Some(request) = spin(inbox, NEXT_CALL_SPIN).or_else(|| inbox.recv().ok()) {
        let reply = match request {
            Request::Init { config, properties } => {
                local.init(&config, &properties).map(Answer::Init)
            }
            Request::Changes {
                now_ms,
                batch,
                outcomes,
                mut outputs,
            } => local
                .on_changes(now_ms, &batch, &outcomes, &mut outputs)
                .map(|()| Answer::Outputs(outputs)),
            Request::Tick {
                now_ms,
                outcomes,
                mut outputs,
            } => local
                .on_tick(now_ms, &outcomes, &mut outputs)
                .map(|()| Answer::Outputs(outputs)),
        };
        let failed = reply.is_err();
        // A caller that gave up (deadline) or dropped the instance is gone: end.
        if outbox.send(reply).is_err() || failed {
            break;
        }
    }
    // `local` drops the plugin's instance here, on its own thread.
}
