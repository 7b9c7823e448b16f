//! The OPC UA source's events: one type per occurrence, whose `emit` writes the log line and moves
//! the connection gauge and the readiness flag together, from one place.

use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::runtime::ReadyFlag;
use crate::telemetry::metrics::{MetricSet, SourceLabels};

/// The OPC UA source's metric families (`twinloom_opcua_source_*`), registered the first time an
/// OPC UA source starts.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpcUaSourceMetrics {
    /// 1 while the source's session is up.
    connected: Family<SourceLabels, Gauge>,
}

impl MetricSet for OpcUaSourceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.sub_registry_with_prefix("opcua").register(
            "source_connected",
            "1 while an OPC UA source's session is up",
            metrics.connected.clone(),
        );
        metrics
    }
}

impl OpcUaSourceMetrics {
    /// The `connected` gauge of source `id`.
    pub fn connected(&self, id: &str) -> Gauge {
        self.connected
            .get_or_create(&SourceLabels {
                source: id.to_owned(),
            })
            .clone()
    }
}

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

/// A binding's `nsu=` namespace URI is not in the server's namespace array: its NodeId keeps
/// namespace 0, and the server refuses the monitored item.
#[derive(Debug)]
pub(crate) struct NamespaceUnknown<'a> {
    pub source: &'a str,
    pub namespace: &'a str,
}

impl NamespaceUnknown<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, namespace = %self.namespace, "Server has no such namespace");
    }
}

/// The server refused to create a monitored item: its properties go bad.
#[derive(Debug)]
pub(crate) struct MonitoredItemRefused<'a> {
    pub source: &'a str,
    pub node: &'a opcua::types::NodeId,
    pub status: opcua::types::StatusCode,
}

impl MonitoredItemRefused<'_> {
    pub fn emit(&self) {
        tracing::warn!(source = %self.source, node = %self.node, status = %self.status, "Server refused a monitored item; check the NodeId");
    }
}
