//! OPC UA source: one session and one subscription per server, a monitored item for every bound
//! NodeId.
//!
//! The client (async-opcua) connects to the configured endpoint; `session.rs` reads the server's
//! OperationLimits and namespace array, creates the subscription and its monitored items in
//! batches the server accepts (`limits.rs`: message and array sizes, notifications per Publish,
//! queue sizes), and follows the session; `notifications.rs` applies each NotificationMessage to
//! the twin as one batch (value, status and source timestamp, items looked up by client handle)
//! and follows the sequence numbers; `republish.rs` gets skipped NotificationMessages back with
//! Republish (Part 4 §5.13.6) — a lost Publish response, also across a reconnect — their older
//! samples reaching the change log as late ones, or counts them lost.
//! While the connection is down, or the server is silent for 3 keep-alive intervals, every
//! property of the source is bad (`NoConnection`) with its last value kept. Recovery follows OPC
//! UA Part 4 §6.7 (async-opcua's reconnect: a new secure channel and ActivateSession on the old
//! session, TransferSubscriptions, and only then a new session and subscription); a session that
//! fails for good is closed (CloseSession) and the source starts over after a backoff from
//! `backoff_min` to `backoff_max`.

mod events;
pub mod limits;
mod notifications;
mod probe;
mod republish;
pub(crate) mod session;
mod write;

pub use probe::{ProbedBinding, probe};
pub use write::{OpcUaWriter, to_variant_of};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opcua::types::{DataValue, StatusCode, Variant};
use tokio_util::sync::CancellationToken;

use crate::config::sources::BindingSection;
use crate::config::sources::opcua::{OpcUaBindingConfig, OpcUaSourceConfig, Target};
use crate::context::ComponentContext;
use crate::runtime::{Backoff, ReadyFlag};
use crate::sources::{Bound, Spawned};
use crate::twin::model::Scaling;
use crate::twin::spec::{Access, DataType};
use crate::twin::{PropertyId, Quality, QualityReason, Reading, Twin};

/// The path a NotificationMessage takes into the twin in an OPC UA source (data changes looked up
/// by client handle, one batch per message, late samples kept out of the current values), without
/// a session: for the in-process benchmark (`daemon/benches/opcua_source.rs`, instructions per
/// notification) and tools. OPC UA Part 4 §7.25 (NotificationMessage), §7.26.2
/// (DataChangeNotification).
pub struct NotificationPath(notifications::Applier);

impl std::fmt::Debug for NotificationPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationPath").finish_non_exhaustive()
    }
}

impl NotificationPath {
    /// Applies into `twin`; client handle `h` (from 1) is `by_handle[h - 1]`'s properties. A
    /// handle outside that list is skipped.
    pub fn new(twin: Arc<Twin>, by_handle: Vec<Vec<PropertyId>>) -> Self {
        // Status changes are for a session task; with none, they are dropped.
        let (status_changes, _) = tokio::sync::mpsc::channel(1);
        Self(notifications::Applier::new(
            twin,
            Arc::new(by_handle),
            status_changes,
            prometheus_client::metrics::counter::Counter::default(),
        ))
    }

    /// Applies one NotificationMessage's data changes to the twin as one batch.
    pub fn apply(&mut self, message: opcua::types::NotificationMessage) {
        self.0.apply(message);
    }
}

/// One monitored variable.
#[derive(Debug, Clone)]
struct Item {
    /// The variable as the bindings name it (`node_id` or `browse_path`), resolved after every
    /// connect.
    target: Target,
    /// The binding's text, for log lines.
    text: String,
    properties: Vec<PropertyId>,
    sampling: Duration,
}

/// A read-write property's binding: what a write needs besides the resolved node.
#[derive(Debug, Clone, Copy)]
struct Writable {
    /// Engineering units ⇄ the variable's raw value.
    scaling: Scaling,
    /// The property's data type (what the read-back becomes).
    data_type: DataType,
}

/// Spawns the client of one OPC UA source. Returns the properties it serves, its writer (for
/// read-write properties) and its stop token.
///
/// Errors: a binding names no parsable NodeId or browse path (validation rejects that before).
pub fn spawn(
    source: &OpcUaSourceConfig,
    bindings: &[Bound<OpcUaBindingConfig>],
    context: ComponentContext<'_>,
) -> anyhow::Result<Spawned> {
    let mut by_node: HashMap<String, Item> = HashMap::new();
    let mut properties = Vec::new();
    let mut writable = HashMap::new();
    for Bound {
        property, binding, ..
    } in bindings
    {
        let target = binding
            .target()
            .ok_or_else(|| anyhow::anyhow!("bad NodeId or browse path `{}`", binding.describe()))?;
        let sampling = binding
            .sampling_interval
            .unwrap_or(source.sampling_interval);
        let key = match &target {
            Target::Node(..) => format!("node {}", binding.describe()),
            Target::Path(path) => format!("path {path}"),
        };
        by_node
            .entry(key)
            .or_insert_with(|| Item {
                target,
                text: binding.describe().to_owned(),
                properties: Vec::new(),
                sampling,
            })
            .properties
            .push(*property);
        properties.push(*property);
        let decl = context.twin.model().decl(*property);
        if decl.access == Access::ReadWrite {
            writable.insert(
                *property,
                Writable {
                    scaling: binding.scaling(),
                    data_type: decl.data_type,
                },
            );
        }
    }
    let (twin, supervisor, metrics) = (context.twin, context.supervisor, context.metrics);
    let ready = context.readiness.register_source(&source.id);
    let metric_set = metrics.set::<events::OpcUaSourceMetrics>();
    let link = write::Link::default();
    let writer: Option<Arc<dyn crate::sources::DeviceWriter>> = (!writable.is_empty()).then(|| {
        Arc::new(OpcUaWriter::new(
            &source.id,
            link.clone(),
            source.timeout,
            Arc::clone(twin),
        )) as _
    });
    let client = OpcUaClient {
        config: source.clone(),
        pki_dir: source
            .pki_dir
            .clone()
            .unwrap_or_else(|| context.state_dir.join("pki-client")),
        items: by_node.into_values().collect(),
        properties: properties.clone(),
        writable,
        link,
        twin: Arc::clone(twin),
        connected: metric_set.connected(&source.id),
        counters: metric_set.counters(&source.id),
        ready,
    };
    let token = supervisor.spawn_cancellable(format!("opcua-source:{}", source.id), move |token| {
        client.run(token)
    });
    Ok(Spawned {
        properties,
        writer,
        token,
    })
}

struct OpcUaClient {
    config: OpcUaSourceConfig,
    pki_dir: std::path::PathBuf,
    items: Vec<Item>,
    properties: Vec<PropertyId>,
    /// The read-write properties, by id.
    writable: HashMap<PropertyId, Writable>,
    /// What the writer sends through: set once a session is up and the writable nodes' types
    /// are read, cleared when the connection is lost.
    link: write::Link,
    twin: Arc<Twin>,
    connected: prometheus_client::metrics::gauge::Gauge,
    counters: events::SourceCounters,
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
            // Not raced against the token: `session` watches it and closes the session first.
            let outcome = self.session(&token).await;
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
