//! The poll loop of one Modbus connection: schedule, request, decode, isolate failures, write.
//!
//! One task per connection keeps exactly one request in flight. Each device's bindings form poll
//! groups (one per poll interval) of planned blocks. The loop connects (exponential backoff with
//! jitter after failures), then repeatedly runs the group that is due next, applying each group's
//! readings to the twin in one batch. Writes queue on a bounded channel and go before the next read.
//!
//! Failure handling, per outcome of a request:
//! - **answer**: values decoded and applied; the device's timeout streak ends (a demoted device
//!   is promoted again).
//! - **exception 02/03** (illegal data address/value, Modbus Application Protocol §7): the block is
//!   split and the halves retried until each part works or is a single binding; the parts that
//!   work replace the block in the plan (the learned limit), a single binding that still fails goes
//!   bad with `ConfigurationError`; everything else keeps working.
//! - **other exceptions**: the block's properties go bad (`DeviceException(code)`).
//! - **timeout** (`Timeout`): the context is dropped (a late reply would otherwise be taken as the answer to
//!   the next request) and rebuilt at once; with a fresh streak the block is retried `retries`
//!   times, then its properties go bad and the device's other blocks in this cycle are skipped,
//!   so a dead device costs the others one timeout per cycle. After `demote_after` consecutive
//!   timeouts the device is polled only every `demoted_poll` until it answers.
//! - **transport error** (`CommunicationFailure`) **/ connection refused** (`NoConnection`): every
//!   property of the source goes bad, last values kept; reconnect with backoff.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};
use tokio_util::sync::CancellationToken;

use crate::config::sources::modbus::{ModbusSourceConfig, RegisterTable};
use crate::runtime::{Backoff, ReadyFlag};
use crate::sources::DeviceWrite;
use crate::sources::modbus::codec::{CodecError, Encoding};
use crate::sources::modbus::events::{self, DeviceMetrics, SourceMetrics};
use crate::sources::modbus::plan::{self, Block, Point};
use crate::sources::modbus::transport::Transport;
use crate::telemetry::Throttle;
use crate::twin::{PropertyId, QualityReason, Reading, Twin, Value, WriteError};

/// Queued writes per Modbus connection before `write` waits.
pub const WRITE_QUEUE_CAPACITY: usize = 64;

/// Bindings of one device polled at one interval.
#[derive(Debug)]
pub(crate) struct PollGroup {
    pub interval: Duration,
    pub blocks: Vec<Block>,
    pub next_due: Instant,
}

/// One device (unit id) behind the connection.
#[derive(Debug)]
pub(crate) struct Device {
    pub id: String,
    pub unit_id: u8,
    pub groups: Vec<PollGroup>,
    pub timeout_streak: u32,
    pub demoted: bool,
    pub metrics: DeviceMetrics,
}

/// Where a writable property lives.
#[derive(Debug, Clone)]
pub(crate) struct WriteTarget {
    pub device: usize,
    pub group: usize,
    pub table: RegisterTable,
    pub point: Point,
    pub scaling: crate::twin::model::Scaling,
}

/// A write queued for the poller and answered on `reply`.
#[derive(Debug)]
pub struct QueuedWrite {
    /// The write, its deadline and its guard.
    pub write: DeviceWrite,
    /// Where the outcome goes: what the device holds after the write, when read back.
    pub reply: oneshot::Sender<Result<Option<Value>, WriteError>>,
}

/// Sends writes to a running Modbus source. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ModbusWriter {
    tx: mpsc::Sender<QueuedWrite>,
}

#[async_trait::async_trait]
impl crate::sources::DeviceWriter for ModbusWriter {
    /// Writes `write.value` (engineering units) to `write.property`: inverse scaling, encoding,
    /// then function code 5 (coil), 6 (one register), 16 (several registers) or 22 (mask write,
    /// for a bit of a register; Modbus Application Protocol §6.16), and the read-back when the
    /// source reads back. Waits for the device's answer. The request waits in the poller's queue
    /// behind the request in flight; it is dropped there when its deadline passes or this future
    /// is dropped ([`crate::sources::DeviceWriter`]'s contract).
    ///
    /// Errors: see [`WriteError`].
    async fn write(&self, write: DeviceWrite) -> Result<Option<Value>, WriteError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(QueuedWrite { write, reply })
            .await
            .map_err(|_| WriteError::Stopped)?;
        answer.await.map_err(|_| WriteError::Stopped)?
    }
}

/// A creator for the writer side and the receiver the poller drains.
pub(crate) fn write_channel() -> (ModbusWriter, mpsc::Receiver<QueuedWrite>) {
    let (tx, rx) = mpsc::channel(WRITE_QUEUE_CAPACITY);
    (ModbusWriter { tx }, rx)
}

/// A write's request as it goes on the wire.
enum Frame {
    /// Function code 5.
    Coil(bool),
    /// Function code 22: the bit's word and its mask.
    Mask(u16, u16),
    /// Function code 6 (one word) or 16.
    Registers(Vec<u16>),
}

enum Next {
    Cancelled,
    Write(QueuedWrite),
    Poll,
}

enum Failure {
    Exception(ExceptionCode),
    Timeout,
    Transport(String),
    Disconnected,
}

/// One block's reply: the registers or the bits read, in request order.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Holding or input registers (function codes 3 and 4, Modbus Application Protocol §6.3, §6.4).
    Words(Vec<u16>),
    /// Coils or discrete inputs (function codes 1 and 2, §6.1, §6.2).
    Bits(Vec<bool>),
}

/// The state of the connection to the device (or gateway): the one place that says whether
/// requests can go out, and what a successful or failed connect attempt means for the log,
/// the metrics and the readiness flag.
pub(crate) enum Link {
    /// No connection: none yet (`ever_up` false), or the connection was lost. `warned`: this
    /// outage has been logged as a warning already (a failed attempt, or the loss itself), so
    /// further failed attempts are logged at debug level.
    Down { ever_up: bool, warned: bool },
    /// Connected; requests go on the context.
    Up(Context),
    /// Up, but the context was dropped after a request timed out (a late reply must not be read
    /// as the answer to the next request). The next attempt reconnects without a `Connected`
    /// event; if it fails, the connection is down.
    Dropped,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Down { ever_up, warned } => f
                .debug_struct("Down")
                .field("ever_up", ever_up)
                .field("warned", warned)
                .finish(),
            Self::Up(_) => f.write_str("Up"),
            Self::Dropped => f.write_str("Dropped"),
        }
    }
}

impl Link {
    /// The state before the first attempt.
    pub const START: Self = Self::Down {
        ever_up: false,
        warned: false,
    };

    /// The context requests go on, while the link is up.
    fn context(&mut self) -> Option<&mut Context> {
        match self {
            Self::Up(ctx) => Some(ctx),
            _ => None,
        }
    }
}

/// The running form of one `[[sources.modbus]]`.
pub(crate) struct Poller {
    pub id: String,
    pub transport: Transport,
    pub config: ModbusSourceConfig,
    pub devices: Vec<Device>,
    pub writes: std::collections::HashMap<PropertyId, WriteTarget>,
    pub all_properties: Vec<PropertyId>,
    pub twin: Arc<Twin>,
    pub metrics: SourceMetrics,
    pub link: Link,
    pub backoff: Backoff,
    /// Reused buffer of one poll group's readings.
    pub readings: Vec<Reading>,
    /// Its readiness condition for `/readyz`: connected.
    pub ready: ReadyFlag,
    /// When the next heartbeat is due and the last value written (`heartbeat` configured).
    pub heartbeat: Option<(Instant, u16)>,
    /// Holds back warnings that recur on every poll.
    pub repeats: Throttle<events::Repeat>,
}

fn exception_kind(code: ExceptionCode) -> &'static str {
    match code {
        ExceptionCode::IllegalFunction => "illegal_function",
        ExceptionCode::IllegalDataAddress => "illegal_data_address",
        ExceptionCode::IllegalDataValue => "illegal_data_value",
        ExceptionCode::ServerDeviceFailure => "server_device_failure",
        ExceptionCode::Acknowledge => "acknowledge",
        ExceptionCode::ServerDeviceBusy => "server_device_busy",
        ExceptionCode::MemoryParityError => "memory_parity_error",
        ExceptionCode::GatewayPathUnavailable => "gateway_path_unavailable",
        ExceptionCode::GatewayTargetDevice => "gateway_target_device_failed_to_respond",
        ExceptionCode::Custom(_) => "other_exception",
    }
}

/// Awaits `until`, answering every write that arrives meanwhile with
/// [`WriteError::NotConnected`]; `None` when `token` is cancelled first.
async fn refuse_writes_until<T>(
    token: &CancellationToken,
    writes: &mut mpsc::Receiver<QueuedWrite>,
    until: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            biased;
            () = token.cancelled() => return None,
            Some(request) = writes.recv() => {
                let _ = request.reply.send(Err(WriteError::NotConnected));
            }
            done = &mut until => return Some(done),
        }
    }
}

impl Poller {
    /// Runs until `token` is cancelled.
    pub async fn run(
        mut self,
        token: CancellationToken,
        mut writes: mpsc::Receiver<QueuedWrite>,
    ) -> anyhow::Result<()> {
        let gap = self.config.request_delay.max(self.transport.frame_gap());
        loop {
            if !self.is_up() && !self.connect_or_wait(&token, &mut writes).await {
                return Ok(());
            }
            let (device, group, mut due) = self.next_due();
            let heartbeat_due = self.heartbeat.map(|(at, _)| at);
            if let Some(at) = heartbeat_due {
                due = due.min(at);
            }
            // A group already due is polled without a timer round trip (tokio's timer has 1 ms
            // granularity); pending writes and cancellation still go first.
            let next = if due <= Instant::now() {
                if token.is_cancelled() {
                    Next::Cancelled
                } else {
                    writes.try_recv().map_or(Next::Poll, Next::Write)
                }
            } else {
                tokio::select! {
                    biased;
                    () = token.cancelled() => Next::Cancelled,
                    Some(request) = writes.recv() => Next::Write(request),
                    () = sleep_until(due) => Next::Poll,
                }
            };
            match next {
                Next::Cancelled => return Ok(()),
                Next::Write(request) => {
                    // Nobody waits any more, or too late to send: never put it on the wire.
                    if request.reply.is_closed() || !request.write.is_due(std::time::Instant::now())
                    {
                        let _ = request.reply.send(Err(WriteError::Expired));
                        continue;
                    }
                    // A device that never answers must not hold up shutdown for its timeout.
                    let outcome = tokio::select! {
                        () = token.cancelled() => {
                            let _ = request.reply.send(Err(WriteError::Stopped));
                            return Ok(());
                        }
                        outcome = self.write(&request) => outcome,
                    };
                    if let Err(error) = &outcome {
                        events::WriteFailed {
                            source: &self.id,
                            property: &self.twin.model().property(request.write.property).path,
                            error,
                        }
                        .emit();
                    }
                    let _ = request.reply.send(outcome);
                }
                Next::Poll if heartbeat_due.is_some_and(|at| at <= Instant::now()) => {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        () = self.beat() => {}
                    }
                }
                Next::Poll => {
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        () = self.poll_group(device, group) => {}
                    }
                    let interval = self.effective_interval(device, group);
                    let entry = &mut self.devices[device].groups[group];
                    entry.next_due = (entry.next_due + interval).max(Instant::now());
                }
            }
            if !gap.is_zero() {
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = sleep(gap) => {}
                }
            }
        }
    }

    fn effective_interval(&self, device: usize, group: usize) -> Duration {
        let interval = self.devices[device].groups[group].interval;
        if self.devices[device].demoted {
            interval.max(self.config.demoted_poll)
        } else {
            interval
        }
    }

    fn next_due(&self) -> (usize, usize, Instant) {
        let mut best = (0, 0, Instant::now() + Duration::from_secs(3600));
        for (d, device) in self.devices.iter().enumerate() {
            for (g, group) in device.groups.iter().enumerate() {
                if group.next_due < best.2 {
                    best = (d, g, group.next_due);
                }
            }
        }
        best
    }

    /// Whether requests can go out (the link is up with its context).
    fn is_up(&self) -> bool {
        matches!(self.link, Link::Up(_))
    }

    /// Opens a new connection, giving up after the request timeout (at least 1 s).
    fn connect(&self) -> impl std::future::Future<Output = Result<Context, String>> + Send + '_ {
        self.transport
            .connect_within(self.config.timeout.max(Duration::from_secs(1)))
    }

    /// Drops the context after a request timed out, so that a late reply cannot be read as the
    /// answer to the next request; the next turn reconnects at once (see [`Link::Dropped`]).
    fn drop_context(&mut self) {
        if self.is_up() {
            self.link = Link::Dropped;
        }
    }

    /// Connects, or logs why not, marks every property bad and waits out the backoff; returns
    /// `false` when cancelled. Writes that arrive meanwhile are answered at once with
    /// [`WriteError::NotConnected`]: a write must not reach the device late, after a reconnect
    /// nobody waited for.
    async fn connect_or_wait(
        &mut self,
        token: &CancellationToken,
        writes: &mut mpsc::Receiver<QueuedWrite>,
    ) -> bool {
        let Some(attempt) = refuse_writes_until(token, writes, self.connect()).await else {
            return false;
        };
        let (ever_up, warned) = match self.link {
            Link::Down { ever_up, warned } => (ever_up, warned),
            // A dropped context is a link that was up: reconnecting is silent, failing is news.
            Link::Dropped | Link::Up(_) => (true, false),
        };
        let error = match attempt {
            Ok(ctx) => {
                self.backoff.reset();
                if !matches!(self.link, Link::Dropped) {
                    events::Connected {
                        source: &self.id,
                        transport: &self.transport,
                        again: ever_up,
                    }
                    .emit(&self.metrics, &self.ready);
                }
                self.link = Link::Up(ctx);
                return true;
            }
            Err(error) => error,
        };
        let delay = self.backoff.next_delay();
        let devices: Vec<&DeviceMetrics> = self.devices.iter().map(|d| &d.metrics).collect();
        events::ConnectionFailed {
            source: &self.id,
            transport: &self.transport,
            error: &error,
            retry_in: delay,
            first: !warned,
        }
        .emit(&self.metrics, &devices, &self.ready);
        self.link = Link::Down {
            ever_up,
            warned: true,
        };
        self.mark_all(QualityReason::NoConnection);
        refuse_writes_until(token, writes, sleep(delay))
            .await
            .is_some()
    }

    fn mark_all(&self, reason: QualityReason) {
        self.twin
            .fail_all(self.all_properties.iter().copied(), reason);
    }

    fn lose_connection(&mut self, error: &str) {
        events::ConnectionLost {
            source: &self.id,
            error,
        }
        .emit(&self.metrics, &self.ready);
        // The loss is the outage's warning; failed reconnects follow at debug level.
        self.link = Link::Down {
            ever_up: true,
            warned: true,
        };
        self.mark_all(QualityReason::CommunicationFailure);
    }

    async fn poll_group(&mut self, d: usize, g: usize) {
        let blocks = std::mem::take(&mut self.devices[d].groups[g].blocks);
        let mut readings = std::mem::take(&mut self.readings);
        readings.clear();
        let mut kept = Vec::with_capacity(blocks.len());
        let mut skip_rest = false;
        for block in blocks {
            if skip_rest || !self.is_up() {
                let reason = if skip_rest {
                    QualityReason::Timeout
                } else {
                    QualityReason::NoConnection
                };
                fail_block(&block, reason, &mut readings);
                kept.push(block);
                continue;
            }
            match self.read(d, &block).await {
                Ok(data) => {
                    let failed = decode_block(&block, &data, &mut readings);
                    self.decode_failed(d, &block, failed.as_ref());
                    kept.push(block);
                }
                Err(failure) => {
                    skip_rest = self
                        .recover(d, block, failure, &mut readings, &mut kept)
                        .await;
                }
            }
        }
        self.devices[d].groups[g].blocks = kept;
        self.twin.apply(&readings);
        self.readings = readings;
    }

    /// Handles a failed block read: splits blocks the device rejects (exception 02/03) until each
    /// part works or holds one binding, and marks what failed. Pushes the blocks to keep in the
    /// plan onto `kept`. Returns whether the device's other blocks should be skipped this cycle.
    async fn recover(
        &mut self,
        d: usize,
        block: Block,
        failure: Failure,
        readings: &mut Vec<Reading>,
        kept: &mut Vec<Block>,
    ) -> bool {
        let (table, start, count) = (block.table, block.start, block.count);
        let first_kept = kept.len();
        let mut pending = vec![(block, Some(failure))];
        let mut skip_rest = false;
        while let Some((part, known)) = pending.pop() {
            let outcome = match known {
                Some(failure) => Err(failure),
                None => self.read(d, &part).await,
            };
            match outcome {
                Ok(data) => {
                    let failed = decode_block(&part, &data, readings);
                    self.decode_failed(d, &part, failed.as_ref());
                    kept.push(part);
                }
                Err(Failure::Exception(
                    code @ (ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue),
                )) => match plan::split(&part) {
                    Some((left, right)) => {
                        pending.push((right, None));
                        pending.push((left, None));
                    }
                    None => {
                        let point = &part.points[0];
                        events::AddressRejected {
                            source: &self.id,
                            device: &self.devices[d].id,
                            device_index: d,
                            property: &self.twin.model().property(point.property).path,
                            table: part.table.as_str(),
                            address: point.address,
                            exception: exception_kind(code),
                        }
                        .emit(&mut self.repeats);
                        fail_block(&part, QualityReason::ConfigurationError, readings);
                        kept.push(part);
                    }
                },
                Err(Failure::Exception(code)) => {
                    events::DeviceException {
                        source: &self.id,
                        device: &self.devices[d].id,
                        device_index: d,
                        code: u8::from(code),
                        exception: exception_kind(code),
                    }
                    .emit(&mut self.repeats);
                    fail_block(
                        &part,
                        QualityReason::DeviceException(u8::from(code)),
                        readings,
                    );
                    kept.push(part);
                }
                Err(failure) => {
                    let reason = match &failure {
                        Failure::Transport(error) => {
                            self.lose_connection(error);
                            QualityReason::CommunicationFailure
                        }
                        Failure::Timeout => QualityReason::Timeout,
                        Failure::Disconnected | Failure::Exception(_) => {
                            QualityReason::NoConnection
                        }
                    };
                    fail_block(&part, reason, readings);
                    kept.push(part);
                    for (rest, _) in pending.drain(..) {
                        fail_block(&rest, reason, readings);
                        kept.push(rest);
                    }
                    skip_rest = true;
                }
            }
        }
        let parts = &mut kept[first_kept..];
        if parts.len() > 1 {
            parts.sort_by_key(|b| b.start);
            let largest = parts.iter().map(|b| b.count).max().unwrap_or(0);
            tracing::info!(
                source = %self.id,
                device = %self.devices[d].id,
                table = table.as_str(),
                start,
                rejected = count,
                parts = parts.len(),
                largest_part = largest,
                "Device rejected a block read; split it and will keep the split"
            );
        }
        skip_rest
    }

    /// One read with timeout and retries. Updates the device's streak and metrics.
    async fn read(&mut self, d: usize, block: &Block) -> Result<Data, Failure> {
        let attempts = if self.devices[d].timeout_streak == 0 {
            1 + self.config.retries
        } else {
            1
        };
        for attempt in 0..attempts {
            let Some(ctx) = self.link.context() else {
                return Err(Failure::Disconnected);
            };
            ctx.set_slave(Slave(self.devices[d].unit_id));
            let device = &self.devices[d];
            device.metrics.requests.inc();
            let started = Instant::now();
            let result = timeout(self.config.timeout, read_block(ctx, block)).await;
            match result {
                Ok(Ok(Ok(data))) => {
                    device
                        .metrics
                        .duration
                        .observe(started.elapsed().as_secs_f64());
                    self.answered(d);
                    return Ok(data);
                }
                Ok(Ok(Err(code))) => {
                    device
                        .metrics
                        .duration
                        .observe(started.elapsed().as_secs_f64());
                    device.metrics.error(exception_kind(code));
                    self.answered(d);
                    return Err(Failure::Exception(code));
                }
                Ok(Err(error)) => {
                    device.metrics.error("transport");
                    return Err(Failure::Transport(error.to_string()));
                }
                Err(_) => {
                    device.metrics.error("timeout");
                    self.drop_context();
                    if attempt + 1 < attempts {
                        match self.connect().await {
                            Ok(ctx) => self.link = Link::Up(ctx),
                            Err(_) => break,
                        }
                    }
                }
            }
        }
        self.timed_out(d);
        Err(Failure::Timeout)
    }

    /// Reports the points of a block reply that did not decode (see [`decode_block`]).
    fn decode_failed(&mut self, d: usize, block: &Block, failure: Option<&DecodeFailure>) {
        if let Some(failure) = failure {
            events::DecodeFailed {
                source: &self.id,
                device: &self.devices[d].id,
                device_index: d,
                table: block.table.as_str(),
                address: failure.address,
                error: &failure.error,
                points: failure.points,
            }
            .emit(&mut self.repeats);
        }
    }

    fn answered(&mut self, d: usize) {
        let device = &mut self.devices[d];
        device.timeout_streak = 0;
        if device.demoted {
            device.demoted = false;
            events::DevicePromoted {
                source: &self.id,
                device: &device.id,
            }
            .emit(&device.metrics);
        }
    }

    fn timed_out(&mut self, d: usize) {
        let demote_after = self.config.demote_after;
        let demoted_poll = self.config.demoted_poll;
        let device = &mut self.devices[d];
        device.timeout_streak += 1;
        tracing::debug!(source = %self.id, device = %device.id, streak = device.timeout_streak, "Request timed out");
        if !device.demoted && device.timeout_streak >= demote_after {
            device.demoted = true;
            events::DeviceDemoted {
                source: &self.id,
                device: &device.id,
                timeouts: device.timeout_streak,
                poll: demoted_poll,
            }
            .emit(&device.metrics);
        }
    }

    async fn write(&mut self, request: &QueuedWrite) -> Result<Option<Value>, WriteError> {
        let request = &request.write;
        let target = self
            .writes
            .get(&request.property)
            .cloned()
            .ok_or(WriteError::NotBound)?;
        if !target.table.is_writable() {
            return Err(WriteError::NotWritable {
                detail: format!("the {} table cannot be written", target.table.as_str()),
            });
        }
        let raw = target.scaling.to_raw(&request.value);
        let layout = target.point.layout;
        let address = target.point.address;
        let unit = self.devices[target.device].unit_id;
        let ctx = self.link.context().ok_or(WriteError::NotConnected)?;
        ctx.set_slave(Slave(unit));
        // What goes on the wire, encoded before the last check so nothing stands between the
        // guard and the send.
        let frame = match (target.table, layout.encoding) {
            (RegisterTable::Coil, _) => {
                Frame::Coil(raw.as_bool().ok_or_else(|| CodecError::Unrepresentable {
                    value: raw.to_string(),
                    encoding: "bool",
                })?)
            }
            (_, Encoding::Bit) => Frame::Mask(layout.encode(&raw)?[0], 1u16 << layout.bit),
            _ => Frame::Registers(layout.encode(&raw)?),
        };
        request.check_guard()?;
        self.devices[target.device].metrics.requests.inc();
        let sent = match frame {
            Frame::Coil(on) => {
                timeout(self.config.timeout, ctx.write_single_coil(address, on)).await
            }
            Frame::Mask(word, mask) => {
                timeout(
                    self.config.timeout,
                    ctx.masked_write_register(address, !mask, word),
                )
                .await
            }
            Frame::Registers(words) if words.len() == 1 => {
                timeout(
                    self.config.timeout,
                    ctx.write_single_register(address, words[0]),
                )
                .await
            }
            Frame::Registers(words) => {
                timeout(
                    self.config.timeout,
                    ctx.write_multiple_registers(address, &words),
                )
                .await
            }
        };
        match sent {
            Ok(Ok(Ok(()))) => {
                tracing::debug!(source = %self.id, property = %self.twin.model().property(request.property).path, value = %request.value, "Wrote value");
                // Read it back on the next turn so the twin shows what the device holds.
                self.devices[target.device].groups[target.group].next_due = Instant::now();
                if self.config.read_back && self.read_back(&target, &raw).await? {
                    // The image read is the image written: the device holds the value written.
                    return Ok(Some(request.value.clone()));
                }
                Ok(None)
            }
            Ok(Ok(Err(code))) => Err(WriteError::DeviceRejected {
                detail: format!(
                    "Modbus exception {} ({})",
                    u8::from(code),
                    exception_kind(code)
                ),
            }),
            Ok(Err(error)) => {
                let message = error.to_string();
                self.lose_connection(&message);
                Err(WriteError::NotConnected)
            }
            Err(_) => {
                self.drop_context();
                Err(WriteError::Timeout)
            }
        }
    }
}

impl Poller {
    /// Writes the next heartbeat value (FC 6) and schedules the one after; a failure is logged
    /// (a timeout drops the connection like any other request's).
    async fn beat(&mut self) {
        let Some(config) = self.config.heartbeat else {
            return;
        };
        let Some((_, last)) = self.heartbeat else {
            return;
        };
        let value = last.wrapping_add(1);
        self.heartbeat = Some((Instant::now() + config.interval, value));
        let Some(ctx) = self.link.context() else {
            return;
        };
        ctx.set_slave(Slave(config.unit_id.or(self.config.unit_id).unwrap_or(1)));
        let answer = timeout(
            self.config.timeout,
            ctx.write_single_register(config.address, value),
        )
        .await;
        match answer {
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                self.drop_context();
                events::HeartbeatFailed {
                    source: &self.id,
                    address: config.address,
                    answer: None,
                }
                .emit();
            }
            other => events::HeartbeatFailed {
                source: &self.id,
                address: config.address,
                answer: Some(&other),
            }
            .emit(),
        }
    }

    /// Reads the image just written to `target` (`raw`, before encoding) back and compares the
    /// words (or the coil, or the one bit) with those written: `true` when they are the same,
    /// `false` when the read got no image. A read that fails leaves the write as taken (logged):
    /// the device answered the write itself.
    ///
    /// Errors: [`WriteError::ReadBackMismatch`] naming both images.
    async fn read_back(&mut self, target: &WriteTarget, raw: &Value) -> Result<bool, WriteError> {
        let layout = target.point.layout;
        let address = target.point.address;
        let Some(ctx) = self.link.context() else {
            return Ok(false);
        };
        self.devices[target.device].metrics.requests.inc();
        let (written, read) = match (target.table, layout.encoding) {
            (RegisterTable::Coil, _) => {
                let wrote = raw.as_bool().unwrap_or_default();
                match timeout(self.config.timeout, ctx.read_coils(address, 1)).await {
                    Ok(Ok(Ok(bits))) if bits.first() == Some(&wrote) => return Ok(true),
                    Ok(Ok(Ok(bits))) => (format!("coil {wrote}"), format!("coil {bits:?}")),
                    other => {
                        self.read_back_failed(target, &other);
                        return Ok(false);
                    }
                }
            }
            (_, encoding) => {
                let words = layout.encode(raw)?;
                let count = words.len() as u16;
                let answer = timeout(
                    self.config.timeout,
                    ctx.read_holding_registers(address, count),
                )
                .await;
                let read = match answer {
                    Ok(Ok(Ok(read))) => read,
                    other => {
                        self.read_back_failed(target, &other);
                        return Ok(false);
                    }
                };
                let same = match encoding {
                    Encoding::Bit => {
                        let mask = 1u16 << layout.bit;
                        read.first().map(|w| w & mask) == Some(words[0] & mask)
                    }
                    _ => read == words,
                };
                if same {
                    return Ok(true);
                }
                (format!("{words:04x?}"), format!("{read:04x?}"))
            }
        };
        Err(WriteError::ReadBackMismatch {
            detail: format!(
                "wrote {written} at {} {address}, read {read}",
                target.table.as_str()
            ),
        })
    }

    /// Logs a read-back that got no image (the write itself was answered); after a timeout the
    /// connection is dropped like after a write's, so a late reply cannot answer the next request.
    fn read_back_failed<T: std::fmt::Debug>(
        &mut self,
        target: &WriteTarget,
        answer: &Result<T, tokio::time::error::Elapsed>,
    ) {
        if answer.is_err() {
            self.drop_context();
        }
        events::ReadBackFailed {
            source: &self.id,
            address: target.point.address,
            answer,
        }
        .emit();
    }
}

/// A codec error on the write path as a protocol-neutral write error: a value the encoding cannot
/// represent is out of range; anything else could not be encoded.
impl From<CodecError> for WriteError {
    fn from(error: CodecError) -> Self {
        let detail = error.to_string();
        match error {
            CodecError::Unrepresentable { .. } => Self::OutOfRange { detail },
            CodecError::Length { .. } | CodecError::Utf8 => Self::Encoding { detail },
        }
    }
}

async fn read_block(ctx: &mut Context, block: &Block) -> tokio_modbus::Result<Data> {
    Ok(match block.table {
        RegisterTable::Holding => ctx
            .read_holding_registers(block.start, block.count)
            .await?
            .map(Data::Words),
        RegisterTable::Input => ctx
            .read_input_registers(block.start, block.count)
            .await?
            .map(Data::Words),
        RegisterTable::Coil => ctx
            .read_coils(block.start, block.count)
            .await?
            .map(Data::Bits),
        RegisterTable::Discrete => ctx
            .read_discrete_inputs(block.start, block.count)
            .await?
            .map(Data::Bits),
    })
}

fn fail_block(block: &Block, reason: QualityReason, readings: &mut Vec<Reading>) {
    readings.extend(
        block
            .points
            .iter()
            .map(|p| Reading::failed(p.property, reason)),
    );
}

/// The points of one block reply that did not decode: how many, and the first one's address and
/// error.
#[derive(Debug)]
pub struct DecodeFailure {
    /// The first failing point's address.
    pub address: u16,
    /// Why it failed.
    pub error: CodecError,
    /// How many points of the block failed.
    pub points: usize,
}

/// Decodes one block's reply into one reading per point of `block`, appended to `readings`: the
/// raw value when the point decodes, `DecodeError` when the reply is too short for it or its
/// registers do not decode (returned for the caller to report). This is the per-tag path of every
/// poll; the benchmark `modbus` counts its instructions.
pub fn decode_block(
    block: &Block,
    data: &Data,
    readings: &mut Vec<Reading>,
) -> Option<DecodeFailure> {
    let mut failure: Option<DecodeFailure> = None;
    for point in &block.points {
        let offset = usize::from(point.address - block.start);
        let outcome = match data {
            Data::Words(words) => words
                .get(offset..offset + usize::from(point.width))
                .ok_or(CodecError::Length {
                    expected: offset + usize::from(point.width),
                    got: words.len(),
                })
                .and_then(|slice| point.layout.decode(slice)),
            Data::Bits(bits) => {
                bits.get(offset)
                    .map(|b| Value::Bool(*b))
                    .ok_or(CodecError::Length {
                        expected: offset + 1,
                        got: bits.len(),
                    })
            }
        };
        readings.push(match outcome {
            Ok(value) => Reading::value(point.property, value, None),
            Err(error) => {
                note_failure(&mut failure, point.address, error);
                Reading::failed(point.property, QualityReason::DecodeError)
            }
        });
    }
    failure
}

/// Counts a point of [`decode_block`] that did not decode, keeping the first one's address and
/// error. Out of line: the per-tag loop stays as small as it was before failures were reported.
#[cold]
#[inline(never)]
fn note_failure(failure: &mut Option<DecodeFailure>, address: u16, error: CodecError) {
    match failure {
        Some(failure) => failure.points += 1,
        None => {
            *failure = Some(DecodeFailure {
                address,
                error,
                points: 1,
            });
        }
    }
}
