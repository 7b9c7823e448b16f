//! OPC UA source: one subscription per server, monitored items for every binding.
//!
//! The client (async-opcua) connects to the configured endpoint; every binding becomes a
//! monitored item of one subscription, and each data change is applied to the twin as it arrives
//! (value, status and source timestamp). While the connection is down every property of the
//! source is bad (`NoConnection`) with its last value kept, and the source starts over with a
//! fresh session and subscription after a backoff from `backoff_min` to `backoff_max` (a
//! restarted server knows neither the old session nor its subscription).

mod events;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use opcua::client::{
    ClientBuilder, DataChangeCallback, IdentityToken, Password, SessionPollResult,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn, UserTokenPolicy,
    Variant,
};
use tokio_util::sync::CancellationToken;

use crate::config::sources::opcua::OpcUaBindingConfig;
use crate::config::sources::opcua::{
    OpcUaSourceConfig, SecurityModeName, SecurityPolicyName, parse_node_id,
};
use crate::context::ComponentContext;
use crate::runtime::{Backoff, ReadyFlag};
use crate::sources::{Bound, Spawned};
use crate::twin::{PropertyId, Quality, QualityReason, Reading, Twin};

/// One monitored variable.
#[derive(Debug, Clone)]
struct Item {
    /// Namespace URI to resolve after connecting, when the binding named it (`nsu=`).
    namespace_uri: Option<String>,
    node: NodeId,
    properties: Vec<PropertyId>,
    sampling: Duration,
}

/// Spawns the client of one OPC UA source. Returns the properties it serves and its stop token.
///
/// Errors: a binding's NodeId does not parse (validation rejects that before).
pub fn spawn(
    source: &OpcUaSourceConfig,
    bindings: &[Bound<OpcUaBindingConfig>],
    context: ComponentContext<'_>,
) -> anyhow::Result<Spawned> {
    let mut by_node: HashMap<String, Item> = HashMap::new();
    let mut properties = Vec::new();
    for Bound {
        property, binding, ..
    } in bindings
    {
        let (namespace_uri, node) = parse_node_id(&binding.node_id)
            .ok_or_else(|| anyhow::anyhow!("bad NodeId `{}`", binding.node_id))?;
        let sampling = binding
            .sampling_interval
            .unwrap_or(source.sampling_interval);
        by_node
            .entry(binding.node_id.clone())
            .or_insert_with(|| Item {
                namespace_uri,
                node,
                properties: Vec::new(),
                sampling,
            })
            .properties
            .push(*property);
        properties.push(*property);
    }
    let (twin, supervisor, metrics) = (context.twin, context.supervisor, context.metrics);
    let ready = context.readiness.register_source(&source.id);
    let client = OpcUaClient {
        config: source.clone(),
        pki_dir: source
            .pki_dir
            .clone()
            .unwrap_or_else(|| context.state_dir.join("pki-client")),
        items: by_node.into_values().collect(),
        properties: properties.clone(),
        twin: Arc::clone(twin),
        connected: metrics
            .set::<events::OpcUaSourceMetrics>()
            .connected(&source.id),
        ready,
    };
    let token = supervisor.spawn_cancellable(format!("opcua-source:{}", source.id), move |token| {
        client.run(token)
    });
    // Read-only for now: validation refuses read-write properties on OPC UA sources, so there is
    // no writer and the gate answers NotBound.
    Ok(Spawned {
        properties,
        writer: None,
        token,
    })
}

struct OpcUaClient {
    config: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    items: Vec<Item>,
    properties: Vec<PropertyId>,
    twin: Arc<Twin>,
    connected: prometheus_client::metrics::gauge::Gauge,
    ready: ReadyFlag,
}

/// The quality reason for a bad or uncertain OPC UA status (OPC UA Part 4 §7.39).
fn reason(status: StatusCode) -> QualityReason {
    match status {
        StatusCode::BadNoCommunication
        | StatusCode::BadNotConnected
        | StatusCode::BadServerNotConnected => QualityReason::NoConnection,
        StatusCode::BadTimeout => QualityReason::Timeout,
        StatusCode::BadWaitingForInitialData => QualityReason::NotYetRead,
        StatusCode::BadConfigurationError
        | StatusCode::BadNodeIdUnknown
        | StatusCode::BadNodeIdInvalid => QualityReason::ConfigurationError,
        StatusCode::BadOutOfRange => QualityReason::OutOfRange,
        StatusCode::BadDeviceFailure | StatusCode::BadSensorFailure => {
            QualityReason::DeviceException(0)
        }
        StatusCode::UncertainLastUsableValue => QualityReason::Stale,
        _ => QualityReason::CommunicationFailure,
    }
}

/// The readings a data change gives for the properties bound to its node: one per property, with
/// the upstream status code kept verbatim ([`Quality::from_status_code`]: its severity sets the
/// level, Part 4 §7.39) — failed (the last value kept) when the status is bad, `DecodeError` when
/// the variant is of a kind the twin has no use for. A source timestamp at or before 1601-01-01 is DateTime's null
/// (OPC UA Part 6 §5.2.2.5; async-opcua decodes negative ticks as dates before it): no source time,
/// so the twin stamps the value on arrival. Public for the fuzz targets
/// (`twinloom::fuzzing::opcua_value`).
pub fn readings(value: &DataValue, properties: &[PropertyId]) -> Vec<Reading> {
    let status = value.status();
    let source_time = value
        .source_timestamp
        .filter(|t| t.ticks() > 0)
        .map(|t| SystemTime::from(opcua::types::DateTimeUtc::from(t)));
    properties
        .iter()
        .map(|property| {
            let quality = Quality::from_status_code(status.bits());
            if status.is_bad() {
                return Reading::failed(*property, QualityReason::Upstream(status.bits()));
            }
            match value
                .value
                .as_ref()
                .and_then(crate::opcua_values::from_variant)
            {
                Some(raw) => Reading::qualified(*property, raw, source_time, quality),
                // An uncertain status with no value: uncertain, the last value kept.
                None if status.is_uncertain()
                    && value.value.as_ref().is_none_or(Variant::is_empty) =>
                {
                    Reading::failed(*property, QualityReason::Upstream(status.bits()))
                }
                None => Reading::failed(*property, QualityReason::DecodeError),
            }
        })
        .collect()
}

impl OpcUaClient {
    fn mark_all(&self, reason: QualityReason) {
        self.twin.fail_all(self.properties.iter().copied(), reason);
    }

    async fn run(self, token: CancellationToken) -> anyhow::Result<()> {
        let id = self.config.id.clone();
        let mut backoff = Backoff::new(self.config.backoff_min, self.config.backoff_max);
        loop {
            let outcome = tokio::select! {
                () = token.cancelled() => return Ok(()),
                outcome = self.session(&token) => outcome,
            };
            if token.is_cancelled() {
                return Ok(());
            }
            self.mark_all(QualityReason::NoConnection);
            let delay = backoff.next_delay();
            events::SessionEnded {
                source: &id,
                endpoint: &self.config.endpoint,
                error: outcome.as_ref().err(),
                retry_in: delay,
            }
            .emit(&self.connected, &self.ready);
            if outcome.is_ok() {
                backoff.reset();
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One session: connect, subscribe, follow events until the connection fails for good.
    async fn session(&self, token: &CancellationToken) -> anyhow::Result<()> {
        let policy = match self.config.security_policy {
            SecurityPolicyName::None => SecurityPolicy::None,
            SecurityPolicyName::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
            SecurityPolicyName::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
            SecurityPolicyName::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
        };
        let mode = match self.config.security_mode {
            SecurityModeName::None => MessageSecurityMode::None,
            SecurityModeName::Sign => MessageSecurityMode::Sign,
            SecurityModeName::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
        };
        let identity = match (&self.config.user, &self.config.password) {
            (Some(user), Some(password)) => {
                IdentityToken::UserName(user.clone(), Password::new(password.clone()))
            }
            _ => IdentityToken::Anonymous,
        };
        let mut client = ClientBuilder::new()
            .application_name("Twinloom")
            .application_uri(format!("urn:twinloom:source:{}", self.config.id))
            .product_uri("urn:twinloom")
            .pki_dir(&self.pki_dir)
            .create_sample_keypair(true)
            .trust_server_certs(self.config.trust_server_certificate)
            .session_retry_limit(0)
            .request_timeout(self.config.timeout)
            .client()
            .map_err(|errors| anyhow::anyhow!("client configuration: {}", errors.join(", ")))?;
        let endpoint = (
            self.config.endpoint.as_str(),
            policy.to_uri(),
            mode,
            UserTokenPolicy::anonymous(),
        );
        let (session, event_loop) = tokio::time::timeout(
            self.config.timeout,
            client.connect_to_matching_endpoint(endpoint, identity),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {:?}", self.config.timeout))??;
        let mut events = Box::pin(event_loop.enter());
        // Drive the event loop until the session is up.
        loop {
            tokio::select! {
                connected = session.wait_for_connection() => {
                    if connected {
                        break;
                    }
                    anyhow::bail!("session could not be activated");
                }
                event = events.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => anyhow::bail!("session failed: {status}"),
                    None => anyhow::bail!("session closed"),
                },
            }
        }
        events::SessionUp {
            source: &self.config.id,
            endpoint: &self.config.endpoint,
        }
        .emit(&self.connected, &self.ready);
        // Namespace URIs (`nsu=`) become indexes through the server's NamespaceArray
        // (OPC UA Part 5 §6.3.1, Server_NamespaceArray = ns=0;i=2255).
        let items = if self.items.iter().any(|i| i.namespace_uri.is_some()) {
            let namespace_array = [ReadValueId::from(NodeId::new(0, 2255u32))];
            let read = session.read(&namespace_array, TimestampsToReturn::Neither, 0.0);
            tokio::pin!(read);
            let namespaces = loop {
                tokio::select! {
                    read = &mut read => break read.map_err(|e| anyhow::anyhow!("cannot read the namespace array: {e}"))?,
                    event = events.next() => match event {
                        Some(Ok(_)) => {}
                        Some(Err(status)) => anyhow::bail!("session failed: {status}"),
                        None => anyhow::bail!("session closed"),
                    },
                }
            };
            let uris: Vec<String> = match namespaces.first().and_then(|dv| dv.value.clone()) {
                Some(Variant::Array(array)) => array
                    .values
                    .iter()
                    .map(|v| match v {
                        Variant::String(s) => s.as_ref().to_owned(),
                        _ => String::new(),
                    })
                    .collect(),
                _ => Vec::new(),
            };
            self.items
                .iter()
                .map(|item| {
                    let mut item = item.clone();
                    if let Some(uri) = &item.namespace_uri {
                        match uris.iter().position(|u| u == uri) {
                            Some(index) => item.node.namespace = index as u16,
                            None => events::NamespaceUnknown {
                                source: &self.config.id,
                                namespace: uri,
                            }
                            .emit(),
                        }
                    }
                    item
                })
                .collect()
        } else {
            self.items.clone()
        };
        let by_node: Arc<HashMap<NodeId, Vec<PropertyId>>> = Arc::new(
            items
                .iter()
                .map(|i| (i.node.clone(), i.properties.clone()))
                .collect(),
        );
        let twin = Arc::clone(&self.twin);
        let lookup = Arc::clone(&by_node);
        let callback = DataChangeCallback::new(move |value, item| {
            if let Some(properties) = lookup.get(&item.item_to_monitor().node_id) {
                twin.apply(&readings(&value, properties));
            }
        });
        let requests: Vec<MonitoredItemCreateRequest> = items
            .iter()
            .map(|item| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(item.node.clone()),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    sampling_interval: item.sampling.as_secs_f64() * 1000.0,
                    queue_size: 1,
                    discard_oldest: true,
                    ..Default::default()
                },
            })
            .collect();
        // Subscribing needs the event loop polled at the same time.
        let subscribe = async {
            let subscription = session
                .create_subscription(
                    self.config.publishing_interval,
                    60,
                    10,
                    0,
                    0,
                    true,
                    callback,
                )
                .await?;
            let created = session
                .create_monitored_items(subscription, TimestampsToReturn::Both, requests)
                .await?;
            Ok::<_, opcua::types::Error>(created)
        };
        tokio::pin!(subscribe);
        let created = loop {
            tokio::select! {
                created = &mut subscribe => break created.map_err(|e| anyhow::anyhow!("cannot subscribe: {e}"))?,
                event = events.next() => match event {
                    Some(Ok(_)) => {}
                    Some(Err(status)) => anyhow::bail!("session failed: {status}"),
                    None => anyhow::bail!("session closed"),
                },
            }
        };
        for (item, result) in items.iter().zip(&created) {
            let status = result.result.status_code;
            if !status.is_good() {
                events::MonitoredItemRefused {
                    source: &self.config.id,
                    node: &item.node,
                    status,
                }
                .emit();
                let failed: Vec<_> = item
                    .properties
                    .iter()
                    .map(|p| Reading::failed(*p, reason(status)))
                    .collect();
                self.twin.apply(&failed);
            }
        }
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), session.disconnect()).await;
                    return Ok(());
                }
                event = events.next() => match event {
                    Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                        // Start over with a fresh session and subscription: a restarted server
                        // knows neither the old session nor its subscription.
                        events::ConnectionLost {
                            source: &self.config.id,
                            status: &status,
                        }
                        .emit(&self.connected, &self.ready);
                        self.mark_all(QualityReason::NoConnection);
                        return Ok(());
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        events::SessionResumed {
                            source: &self.config.id,
                            mode: &mode,
                        }
                        .emit(&self.connected, &self.ready);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => anyhow::bail!("session failed: {status}"),
                    None => return Ok(()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::{QualityLevel, Value};

    #[test]
    fn bad_statuses_keep_the_value_and_name_the_reason() {
        let property = PropertyId(3);
        let bad = DataValue {
            value: Some(Variant::Double(1.5)),
            status: Some(StatusCode::BadNoCommunication),
            ..Default::default()
        };
        assert_eq!(
            readings(&bad, &[property]),
            vec![Reading::failed(
                property,
                QualityReason::Upstream(StatusCode::BadNoCommunication.bits())
            )]
        );
        let good = DataValue::new_now(Variant::Float(2.5));
        let got = readings(&good, &[property]);
        assert_eq!(got[0].outcome, Ok(Value::Float(2.5)));
        assert!(got[0].source_time.is_some());
        let odd = DataValue::new_now(Variant::ByteString(Default::default()));
        assert_eq!(
            readings(&odd, &[property])[0].outcome,
            Err(QualityReason::DecodeError)
        );
    }

    #[test]
    fn status_codes_are_kept_verbatim_with_their_severity_as_the_level() {
        let property = PropertyId(1);
        // Uncertain_LastUsableValue with the "low limited" limit bits (0x100), Good_LocalOverride,
        // Good with the Overflow info bits (InfoType DataValue 0x400 | Overflow 0x80).
        let cases = [
            (
                StatusCode::UncertainLastUsableValue.bits() | 0x100,
                QualityLevel::Uncertain,
            ),
            (StatusCode::GoodLocalOverride.bits(), QualityLevel::Good),
            (0x0000_0480, QualityLevel::Good),
        ];
        for (code, level) in cases {
            let value = DataValue {
                value: Some(Variant::Double(4.25)),
                status: Some(StatusCode::from(code)),
                ..Default::default()
            };
            let got = readings(&value, &[property]).remove(0);
            assert_eq!(got.outcome, Ok(Value::Float(4.25)), "{code:#x}");
            let quality = got.quality.expect("not plain Good");
            assert_eq!(quality.level, level, "{code:#x}");
            assert_eq!(quality.reason, QualityReason::Upstream(code));
        }
        // Plain Good carries no code.
        let plain = readings(&DataValue::new_now(Variant::Double(1.0)), &[property]);
        assert_eq!(plain[0].quality, None);
        // Bad with a sub-code and no value: failed, the code kept.
        let deleted = DataValue {
            value: None,
            status: Some(StatusCode::BadNodeIdUnknown),
            ..Default::default()
        };
        assert_eq!(
            readings(&deleted, &[property])[0].outcome,
            Err(QualityReason::Upstream(StatusCode::BadNodeIdUnknown.bits()))
        );
    }

    /// Found by the `opcua_value` fuzz target (corpus file `source-time-before-1601`): a source
    /// timestamp of negative ticks reached the twin as a time before 1601.
    #[test]
    fn a_null_or_earlier_source_timestamp_is_no_source_time() {
        let property = PropertyId(0);
        let at = |ticks: i64| DataValue {
            value: Some(Variant::SByte(-5)),
            source_timestamp: Some(opcua::types::DateTime::from(ticks)),
            ..Default::default()
        };
        for ticks in [0, -1, -83_000_000, i64::MIN] {
            let got = readings(&at(ticks), &[property]);
            assert_eq!(got[0].outcome, Ok(Value::Int(-5)), "{ticks}");
            assert_eq!(got[0].source_time, None, "{ticks}");
        }
        // 2024-01-01T00:00:00Z: 133 485 408 000 000 000 ticks of 100 ns since 1601.
        let got = readings(&at(133_485_408_000_000_000), &[property]);
        assert_eq!(
            got[0].source_time,
            Some(std::time::UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        );
    }
}
