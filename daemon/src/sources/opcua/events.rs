//! The OPC UA source's events: one type per occurrence, whose `emit` writes the log line and moves
//! the connection gauge and the readiness flag together, from one place.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use crate::runtime::ReadyFlag;

/// A session is up and its subscription is being made.
#[derive(Debug)]
pub(crate) struct SessionUp<'a> {
    pub source: &'a str,
    pub endpoint: &'a str,
}

impl SessionUp<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(1);
        ready.set(true);
        tracing::info!(source = %self.source, endpoint = %self.endpoint, "OPC UA source connected");
    }
}

/// The client library reconnected the session by itself.
#[derive(Debug)]
pub(crate) struct SessionResumed<'a> {
    pub source: &'a str,
    pub mode: &'a dyn std::fmt::Debug,
}

impl SessionResumed<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(1);
        ready.set(true);
        tracing::info!(source = %self.source, mode = ?self.mode, "OPC UA source reconnected");
    }
}

/// The server dropped the connection; the source starts over with a fresh session.
#[derive(Debug)]
pub(crate) struct ConnectionLost<'a> {
    pub source: &'a str,
    pub status: &'a opcua::types::StatusCode,
}

impl ConnectionLost<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(0);
        ready.set(false);
        tracing::warn!(source = %self.source, status = %self.status, "OPC UA connection lost; reconnecting");
    }
}

/// A session ended (failed to start, failed, or closed); the next attempt comes after `retry_in`.
#[derive(Debug)]
pub(crate) struct SessionEnded<'a> {
    pub source: &'a str,
    pub endpoint: &'a str,
    /// Why, when it failed.
    pub error: Option<&'a anyhow::Error>,
    pub retry_in: Duration,
}

impl SessionEnded<'_> {
    pub fn emit(&self, connected: &Gauge, ready: &ReadyFlag) {
        connected.set(0);
        ready.set(false);
        if let Some(error) = self.error {
            tracing::warn!(source = %self.source, endpoint = %self.endpoint, %error, retry_in = ?self.retry_in, "OPC UA connection failed");
        }
    }
}
