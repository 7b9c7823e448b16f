//! The Modbus source's events: one type per occurrence, whose `emit` writes the log line and
//! moves the metrics and the readiness flag together, from one place (Vector's "internal events").
//! The poller says what happened; how it is reported lives here.

use std::time::Duration;

use super::transport::Transport;
use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::{DeviceMetrics, SourceMetrics};

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
        ready.set(false);
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
        ready.set(false);
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
