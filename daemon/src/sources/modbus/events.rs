//! The Modbus source's events: one type per occurrence, whose `emit` writes the log line and
//! moves the metrics and the readiness flag together, from one place (Vector's "internal events").
//! The poller says what happened; how it is reported lives here.

use std::time::Duration;

use super::codec::CodecError;
use super::transport::Transport;
use crate::runtime::ReadyFlag;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::Throttle;
use crate::telemetry::metrics::{MetricSet, SourceLabels};
use crate::twin::WriteError;

/// Labels of per-device series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// Source id from the config.
    pub source: String,
    /// Device id from the config.
    pub device: String,
}

/// Labels of per-device error series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Source id from the config.
    pub source: String,
    /// Device id from the config.
    pub device: String,
    /// Error kind: a fixed, lowercase name (`timeout`, `illegal_data_address`, `connection`, ...).
    pub kind: String,
}

fn rtt_histogram() -> Histogram {
    // 100 µs … ~1.6 s in doublings.
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// The Modbus source's metric families (`twinloom_modbus_*`), registered the first time a Modbus
/// source starts.
#[derive(Debug, Clone)]
pub struct ModbusMetrics {
    requests: Family<DeviceLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<DeviceLabels, Histogram, fn() -> Histogram>,
    demotions: Family<DeviceLabels, Counter>,
    demoted: Family<DeviceLabels, Gauge>,
    reconnects: Family<SourceLabels, Counter>,
    connected: Family<SourceLabels, Gauge>,
}

impl MetricSet for ModbusMetrics {
    fn register(registry: &mut Registry) -> Self {
        let modbus = ModbusMetrics {
            requests: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(rtt_histogram),
            demotions: Family::default(),
            demoted: Family::default(),
            reconnects: Family::default(),
            connected: Family::default(),
        };
        let sub = registry.sub_registry_with_prefix("modbus");
        sub.register("requests", "Modbus requests sent", modbus.requests.clone());
        sub.register(
            "errors",
            "Modbus requests that failed, by kind",
            modbus.errors.clone(),
        );
        sub.register(
            "request_duration_seconds",
            "Round-trip time of answered Modbus requests",
            modbus.duration.clone(),
        );
        sub.register(
            "demotions",
            "Times a device was demoted after consecutive timeouts",
            modbus.demotions.clone(),
        );
        sub.register(
            "device_demoted",
            "1 while a device is demoted",
            modbus.demoted.clone(),
        );
        sub.register(
            "reconnects",
            "Connections re-established after a failure",
            modbus.reconnects.clone(),
        );
        sub.register(
            "connected",
            "1 while the source's connection is up",
            modbus.connected.clone(),
        );
        modbus
    }
}

/// Pre-resolved per-device handles: the hot path only touches atomics.
#[derive(Debug, Clone)]
pub struct DeviceMetrics {
    labels: DeviceLabels,
    errors: Family<ErrorLabels, Counter>,
    /// Requests sent.
    pub requests: Counter,
    /// Round trips of answered requests, seconds.
    pub duration: Histogram,
    /// Demotions.
    pub demotions: Counter,
    /// 1 while demoted.
    pub demoted: Gauge,
}

impl DeviceMetrics {
    /// Counts one error of `kind` (a fixed lowercase name).
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                source: self.labels.source.clone(),
                device: self.labels.device.clone(),
                kind: kind.to_owned(),
            })
            .inc();
    }
}

/// Pre-resolved per-source handles.
#[derive(Debug, Clone)]
pub struct SourceMetrics {
    /// Reconnects after a failure.
    pub reconnects: Counter,
    /// 1 while connected.
    pub connected: Gauge,
}

impl ModbusMetrics {
    /// Handles for one device.
    pub fn device(&self, source: &str, device: &str) -> DeviceMetrics {
        let labels = DeviceLabels {
            source: source.to_owned(),
            device: device.to_owned(),
        };
        DeviceMetrics {
            requests: self.requests.get_or_create(&labels).clone(),
            duration: self.duration.get_or_create(&labels).clone(),
            demotions: self.demotions.get_or_create(&labels).clone(),
            demoted: self.demoted.get_or_create(&labels).clone(),
            errors: self.errors.clone(),
            labels,
        }
    }

    /// Handles for one source.
    pub fn source(&self, source: &str) -> SourceMetrics {
        let labels = SourceLabels {
            source: source.to_owned(),
        };
        SourceMetrics {
            reconnects: self.reconnects.get_or_create(&labels).clone(),
            connected: self.connected.get_or_create(&labels).clone(),
        }
    }
}

/// The connection is up: the first time, or again after it was lost.
#[derive(Debug)]
pub(crate) struct Connected<'a> {
    pub source: &'a str,
    pub transport: &'a Transport,
    /// Up again after being lost (counted in `reconnects_total`).
    pub again: bool,
}

impl Connected<'_> {
    pub fn emit(&self, metrics: &SourceMetrics, ready: &ReadyFlag) {
        metrics.connected.set(1);
        ready.set(true);
        if self.again {
            metrics.reconnects.inc();
            tracing::info!(source = %self.source, transport = %self.transport, "Reconnected");
        } else {
            tracing::info!(source = %self.source, transport = %self.transport, "Connected");
        }
    }
}

/// A connection attempt failed; the next one comes after `retry_in`.
#[derive(Debug)]
pub(crate) struct ConnectionFailed<'a> {
    pub source: &'a str,
    pub transport: &'a Transport,
    pub error: &'a str,
    pub retry_in: Duration,
    /// The first failure since the link was up (or since start): logged as a warning; later
    /// ones in the same streak only at debug level.
    pub first: bool,
}

impl ConnectionFailed<'_> {
    pub fn emit(&self, metrics: &SourceMetrics, devices: &[&DeviceMetrics], ready: &ReadyFlag) {
        metrics.connected.set(0);
        ready.fail(self.error);
        for device in devices {
            device.error("connection");
        }
        if self.first {
            tracing::warn!(source = %self.source, transport = %self.transport, error = %self.error, retry_in = ?self.retry_in, "Connection failed");
        } else {
            tracing::debug!(source = %self.source, error = %self.error, retry_in = ?self.retry_in, "Connection still failing");
        }
    }
}

/// An established connection broke (a transport error on a request).
#[derive(Debug)]
pub(crate) struct ConnectionLost<'a> {
    pub source: &'a str,
    pub error: &'a str,
}

impl ConnectionLost<'_> {
    pub fn emit(&self, metrics: &SourceMetrics, ready: &ReadyFlag) {
        metrics.connected.set(0);
        ready.fail(self.error);
        tracing::warn!(source = %self.source, error = %self.error, "Connection lost");
    }
}

/// A device timed out `timeouts` times in a row and is now polled only every `poll`.
#[derive(Debug)]
pub(crate) struct DeviceDemoted<'a> {
    pub source: &'a str,
    pub device: &'a str,
    pub timeouts: u32,
    pub poll: Duration,
}

impl DeviceDemoted<'_> {
    pub fn emit(&self, metrics: &DeviceMetrics) {
        metrics.demotions.inc();
        metrics.demoted.set(1);
        tracing::warn!(
            source = %self.source,
            device = %self.device,
            timeouts = self.timeouts,
            poll = ?self.poll,
            "Device demoted after consecutive timeouts; polling it less often until it answers"
        );
    }
}

/// A demoted device answered again and is back to its normal poll interval.
#[derive(Debug)]
pub(crate) struct DevicePromoted<'a> {
    pub source: &'a str,
    pub device: &'a str,
}

impl DevicePromoted<'_> {
    pub fn emit(&self, metrics: &DeviceMetrics) {
        metrics.demoted.set(0);
        tracing::info!(source = %self.source, device = %self.device, "Device answers again; back to its normal poll interval");
    }
}

/// What a repeated warning of the poller is about: the key its [`Throttle`] holds repeats back by.
/// Bounded by the configuration (devices, exception codes, bound addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Repeat {
    /// A single binding's address the device rejects.
    AddressRejected {
        device: usize,
        table: &'static str,
        address: u16,
    },
    /// A device's exception answer of this code.
    Exception { device: usize, code: u8 },
    /// A block whose reply does not decode, by its first failing address.
    Undecodable {
        device: usize,
        table: &'static str,
        address: u16,
    },
}

/// Logs `line` now if `throttle` lets `key` through, with the number of repeats held back.
fn throttled(throttle: &mut Throttle<Repeat>, key: Repeat, line: impl FnOnce(u64)) {
    if let Some(held_back) = throttle.admit(key, std::time::Instant::now()) {
        line(held_back);
    }
}

/// A write the source could not carry out (the gate gets the error too).
#[derive(Debug)]
pub(crate) struct WriteFailed<'a> {
    pub source: &'a str,
    pub property: &'a str,
    pub error: &'a WriteError,
}

impl WriteFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, property = %self.property, error = %self.error, "Write failed");
    }
}

/// The device rejects a single binding's address (exception 02 or 03 after every split): the
/// binding goes bad with `ConfigurationError`. Read again every poll, so logged at most once per
/// [`crate::telemetry::throttle::REPEAT_INTERVAL`].
#[derive(Debug)]
pub(crate) struct AddressRejected<'a> {
    pub source: &'a str,
    pub device: &'a str,
    pub device_index: usize,
    pub property: &'a str,
    pub table: &'static str,
    pub address: u16,
    pub exception: &'static str,
}

impl AddressRejected<'_> {
    pub fn emit(&self, throttle: &mut Throttle<Repeat>) {
        let key = Repeat::AddressRejected {
            device: self.device_index,
            table: self.table,
            address: self.address,
        };
        throttled(throttle, key, |held_back| {
            tracing::warn!(
                source = %self.source,
                device = %self.device,
                property = %self.property,
                table = self.table,
                address = self.address,
                exception = self.exception,
                held_back,
                "Device rejects this binding's address; check the register map"
            );
        });
    }
}

/// The device answered a read with an exception other than 02/03: the block's properties go bad
/// with `DeviceException`. Counted per request in `errors_total` where the request is made;
/// logged at most once per [`crate::telemetry::throttle::REPEAT_INTERVAL`] per device and code.
#[derive(Debug)]
pub(crate) struct DeviceException<'a> {
    pub source: &'a str,
    pub device: &'a str,
    pub device_index: usize,
    pub code: u8,
    pub exception: &'static str,
}

impl DeviceException<'_> {
    pub fn emit(&self, throttle: &mut Throttle<Repeat>) {
        let key = Repeat::Exception {
            device: self.device_index,
            code: self.code,
        };
        throttled(throttle, key, |held_back| {
            tracing::warn!(source = %self.source, device = %self.device, exception = self.exception, held_back, "Device answered with an exception");
        });
    }
}

/// A block's reply had points that do not decode (too short, or registers that are no value of
/// the encoding): those go bad with `DecodeError`. Logged at most once per
/// [`crate::telemetry::throttle::REPEAT_INTERVAL`] per device and first failing address.
#[derive(Debug)]
pub(crate) struct DecodeFailed<'a> {
    pub source: &'a str,
    pub device: &'a str,
    pub device_index: usize,
    pub table: &'static str,
    /// The first point that failed.
    pub address: u16,
    pub error: &'a CodecError,
    /// How many points of the block failed.
    pub points: usize,
}

impl DecodeFailed<'_> {
    pub fn emit(&self, throttle: &mut Throttle<Repeat>) {
        let key = Repeat::Undecodable {
            device: self.device_index,
            table: self.table,
            address: self.address,
        };
        throttled(throttle, key, |held_back| {
            tracing::warn!(source = %self.source, device = %self.device, table = self.table, address = self.address, error = %self.error, points = self.points, held_back, "Cannot decode reply");
        });
    }
}

/// A heartbeat write got no good answer: `answer` is `None` when it timed out (the connection is
/// dropped like after any request's timeout).
#[derive(Debug)]
pub(crate) struct HeartbeatFailed<'a> {
    pub source: &'a str,
    pub address: u16,
    pub answer: Option<&'a dyn std::fmt::Debug>,
}

impl HeartbeatFailed<'_> {
    pub fn emit(&self) {
        match self.answer {
            None => {
                tracing::warn!(source = %self.source, address = self.address, "The heartbeat write timed out");
            }
            Some(other) => {
                tracing::warn!(source = %self.source, address = self.address, ?other, "The heartbeat write failed");
            }
        }
    }
}

/// A written value could not be read back (the write itself was answered, so it stands).
#[derive(Debug)]
pub(crate) struct ReadBackFailed<'a> {
    pub source: &'a str,
    pub address: u16,
    pub answer: &'a dyn std::fmt::Debug,
}

impl ReadBackFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, address = self.address, answer = ?self.answer, "The written value could not be read back");
    }
}
