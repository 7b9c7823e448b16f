//! One session's life (OPC UA Part 4 §6.7): connect, read the server's OperationLimits and
//! namespace array, create the subscription and its monitored items in batches the server
//! accepts, follow the event loop (keep-alives, publish responses, status changes, reconnects),
//! watch for a stalled server, and close the session (CloseSession, deleting its subscription)
//! on every way out.
//!
//! Recovery (Part 4 §6.7) is shared with async-opcua: after a broken connection its event loop
//! opens a new secure channel and calls ActivateSession on the old session, or creates a new
//! session when the server no longer knows it; the subscription is this module's
//! ([`OpcUaClient::after_reconnect`]; async-opcua's own `recreate_subscriptions` is off). On the
//! reactivated session the subscription lives on: its next NotificationMessage shows the sequence
//! numbers lost with the connection, asked for with Republish, and the values it did not change
//! get their quality back from one Read. A new session takes it with TransferSubscriptions (with
//! initial values; numbers going on, so Republish works there too). Only where neither works is
//! the subscription deleted and created again with its monitored items, and what it still missed
//! counted lost. This module also adds what async-opcua leaves out: a stalled server (silent, but
//! its TCP connection open) is detected and the channel closed, so that recovery starts; and a
//! server that renumbered its namespaces starts the source over.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::{Stream, StreamExt};
use opcua::client::{
    ClientBuilder, IdentityToken, Password, Session, SessionActivity, SessionConnectMode,
    SessionPollResult, SubscriptionActivity,
};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    DataValue, MessageSecurityMode, MonitoredItemCreateRequest, MonitoringMode,
    MonitoringParameters, NodeId, ReadValueId, StatusCode, TimestampsToReturn, UserTokenPolicy,
    Variant,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::limits::{self, MonitoredItemBatches, OperationLimits};
use super::notifications::{Applier, GAPS_QUEUED, Missing, Notifications, STATUS_CHANGES_QUEUED};
use super::republish::Republisher;
use super::{OpcUaClient, events, readings, reason, write};
use crate::config::sources::opcua::{
    OpcUaSourceConfig, SecurityModeName, SecurityPolicyName, Target,
};
use crate::twin::{PropertyId, QualityReason, Reading};
use opcua::types::{BrowsePath, ObjectId};

/// The session's event loop as a stream (async-opcua does nothing unless it is polled).
pub(super) type Events = Pin<Box<dyn Stream<Item = Result<SessionPollResult, StatusCode>> + Send>>;

/// Requested MaxKeepAliveCount of the subscription: publishing intervals without data after which
/// the server sends a keep-alive (Part 4 §5.13.1.1). The keep-alive interval is the revised
/// publishing interval × the revised count (500 ms × 10 = 5 s by default).
pub const KEEP_ALIVE_COUNT: u32 = 10;

/// Requested LifetimeCount of the subscription: publishing intervals without a Publish request
/// after which the server deletes it; at least 3 × [`KEEP_ALIVE_COUNT`] (Part 4 §5.13.2.2).
pub const LIFETIME_COUNT: u32 = 60;

/// Keep-alive intervals without a keep-alive or publish response after which the server counts as
/// stalled (Part 4 §6.7: the client then reconnects).
pub const STALL_KEEP_ALIVES: u32 = 3;

/// Failed session keep-alives (Reads of ServerStatus.State every keep-alive interval) after which
/// async-opcua closes the session's channel and reconnects.
pub const MAX_FAILED_KEEP_ALIVES: u64 = 3;

/// NamespaceArray (Part 5 §6.3.1, `Server_NamespaceArray`, i=2255).
const NAMESPACE_ARRAY: u32 = 2255;

/// A binding resolved against the server: the NodeId to monitor (namespace index known).
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    node: NodeId,
    properties: Vec<PropertyId>,
    sampling: Duration,
}

/// What the subscription's callback hands the session task.
pub(super) struct Channels {
    /// StatusChangeNotifications that end the subscription.
    status_changes: mpsc::Receiver<StatusCode>,
    /// Sequence numbers a NotificationMessage skipped.
    gaps: mpsc::Receiver<Missing>,
    /// Gets them back with Republish.
    republisher: Republisher,
    /// The senders, for a subscription created again after a reconnect.
    senders: Senders,
}

/// The sending ends of [`Channels`], handed to each subscription's callback.
#[derive(Clone)]
pub(super) struct Senders {
    status_changes: mpsc::Sender<StatusCode>,
    gaps: mpsc::Sender<Missing>,
}

/// What a session resolved at its start, kept to compare after a reconnect.
#[derive(Debug)]
pub(super) struct Resolution {
    namespaces: Vec<String>,
    items: Vec<Resolved>,
    limits: OperationLimits,
}

/// Why a binding's variable has no NodeId on this server.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Unresolved {
    /// The namespace URI (of `nsu=`, or of a browse path's prefix) is not in the namespace array.
    Namespace(String),
    /// TranslateBrowsePathsToNodeIds found no node (its status: Bad_NoMatch, …).
    Path(StatusCode),
}

/// The NodeId of each target on a server with namespace array `namespaces`, in order: a NodeId
/// with its namespace URI looked up, a browse path (from the Objects folder, i=85) translated
/// with TranslateBrowsePathsToNodeIds in batches of the server's limit (Part 4 §5.8.4; the first
/// target when a path has several).
///
/// Errors: a TranslateBrowsePathsToNodeIds request failed as a whole.
pub(super) async fn resolve_targets<'t>(
    session: &Session,
    events: &mut Events,
    config: &OpcUaSourceConfig,
    targets: impl Iterator<Item = &'t Target>,
    namespaces: &[String],
    limits: OperationLimits,
) -> anyhow::Result<Vec<Result<NodeId, Unresolved>>> {
    let mut out = Vec::new();
    let mut paths: Vec<(usize, BrowsePath)> = Vec::new();
    for (i, target) in targets.enumerate() {
        out.push(match target {
            Target::Node(None, node) => Ok(node.clone()),
            Target::Node(Some(uri), node) => match namespaces.iter().position(|u| u == uri) {
                Some(index) => {
                    let mut node = node.clone();
                    node.namespace = u16::try_from(index).unwrap_or(u16::MAX);
                    Ok(node)
                }
                None => Err(Unresolved::Namespace(uri.clone())),
            },
            Target::Path(path) => {
                match path.relative_path(|prefix| config.namespace_index(prefix, namespaces)) {
                    Ok(relative_path) => {
                        paths.push((
                            i,
                            BrowsePath {
                                starting_node: ObjectId::ObjectsFolder.into(),
                                relative_path,
                            },
                        ));
                        Err(Unresolved::Path(StatusCode::BadWaitingForResponse))
                    }
                    Err(prefix) => Err(Unresolved::Namespace(
                        config.namespaces.get(&prefix).cloned().unwrap_or(prefix),
                    )),
                }
            }
        });
    }
    for batch in paths.chunks(limits.translations_per_call()) {
        let request: Vec<BrowsePath> = batch.iter().map(|(_, p)| p.clone()).collect();
        let results = drive(events, session.translate_browse_paths_to_node_ids(&request))
            .await?
            .context("cannot translate browse paths")?;
        for (j, (i, _)) in batch.iter().enumerate() {
            out[*i] = match results.get(j) {
                Some(result) if result.status_code.is_good() => result
                    .targets
                    .as_deref()
                    .and_then(|targets| {
                        targets.iter().find(|t| {
                            t.remaining_path_index == u32::MAX && t.target_id.server_index == 0
                        })
                    })
                    .map(|t| t.target_id.node_id.clone())
                    .ok_or(Unresolved::Path(StatusCode::BadNoMatch)),
                Some(result) => Err(Unresolved::Path(result.status_code)),
                None => Err(Unresolved::Path(StatusCode::BadUnexpectedError)),
            };
        }
    }
    Ok(out)
}

/// Reads `nodes` in batches of at most `per_call`, without timestamps; the values in order.
///
/// Errors: a Read request failed as a whole.
pub(super) async fn read_batched(
    session: &Session,
    events: &mut Events,
    nodes: Vec<ReadValueId>,
    per_call: usize,
) -> anyhow::Result<Vec<DataValue>> {
    read_batched_with(
        session,
        events,
        nodes,
        per_call,
        TimestampsToReturn::Neither,
    )
    .await
}

/// [`read_batched`] with `timestamps`.
///
/// Errors: a Read request failed as a whole.
async fn read_batched_with(
    session: &Session,
    events: &mut Events,
    nodes: Vec<ReadValueId>,
    per_call: usize,
    timestamps: TimestampsToReturn,
) -> anyhow::Result<Vec<DataValue>> {
    let mut values = Vec::with_capacity(nodes.len());
    for batch in nodes.chunks(per_call.max(1)) {
        let read = drive(events, session.read(batch, timestamps, 0.0))
            .await?
            .context("cannot read the variables' attributes")?;
        values.extend(read);
    }
    Ok(values)
}

/// Why the event loop ended a request early: the connection is down (no CloseSession can be sent).
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectionDown {
    /// The transport closed (async-opcua reconnects).
    #[error("connection lost: {0}")]
    Lost(StatusCode),
    /// A connection attempt failed.
    #[error("cannot connect: {0}")]
    ConnectFailed(StatusCode),
    /// The event loop gave up.
    #[error("session failed: {0}")]
    Failed(StatusCode),
    /// The event loop ended.
    #[error("session closed")]
    Closed,
}

/// Awaits `future` while polling the event loop.
///
/// Errors: the connection broke or could not be made, or the event loop failed or ended, before
/// `future` finished ([`ConnectionDown`]).
pub(super) async fn drive<T>(
    events: &mut Events,
    future: impl Future<Output = T>,
) -> Result<T, ConnectionDown> {
    tokio::pin!(future);
    loop {
        tokio::select! {
            out = &mut future => return Ok(out),
            event = events.next() => match event {
                Some(Ok(SessionPollResult::ConnectionLost(status))) => return Err(ConnectionDown::Lost(status)),
                Some(Ok(SessionPollResult::ReconnectFailed(status))) => return Err(ConnectionDown::ConnectFailed(status)),
                Some(Ok(_)) => {}
                Some(Err(status)) => return Err(ConnectionDown::Failed(status)),
                None => return Err(ConnectionDown::Closed),
            },
        }
    }
}

/// Closes the session: CloseSession with its subscriptions deleted, then the secure channel
/// (Part 4 §5.7.4), waiting at most `limit`. Nothing is sent when the connection is down (the
/// server drops a session whose connection is gone at its timeout; there is no channel to send on).
pub(super) async fn close(
    session: &Session,
    events: &mut Events,
    connected: bool,
    limit: Duration,
) {
    if !connected {
        session.disable_reconnects();
        return;
    }
    let disconnect = session.disconnect();
    tokio::pin!(disconnect);
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = &mut disconnect => return,
            () = &mut deadline => return,
            event = events.next() => if event.is_none() { return },
        }
    }
}

/// The namespace URIs of a NamespaceArray value, in index order.
pub(super) fn namespace_uris(value: Option<&DataValue>) -> Vec<String> {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Variant::Array(array)) => array
            .values
            .iter()
            .map(|v| match v {
                Variant::String(s) => s.as_ref().to_owned(),
                _ => String::new(),
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Builds the client of `config` (its certificate in `pki_dir`) and connects; returns once the
/// session is activated.
///
/// Errors: no answer within the source's `timeout`, no matching endpoint, the session could
/// not be created or activated.
pub(super) async fn connect(
    config: &OpcUaSourceConfig,
    pki_dir: &std::path::Path,
) -> anyhow::Result<(Arc<Session>, Events)> {
    let policy = match config.security_policy {
        SecurityPolicyName::None => SecurityPolicy::None,
        SecurityPolicyName::Basic256Sha256 => SecurityPolicy::Basic256Sha256,
        SecurityPolicyName::Aes128Sha256RsaOaep => SecurityPolicy::Aes128Sha256RsaOaep,
        SecurityPolicyName::Aes256Sha256RsaPss => SecurityPolicy::Aes256Sha256RsaPss,
    };
    let mode = match config.security_mode {
        SecurityModeName::None => MessageSecurityMode::None,
        SecurityModeName::Sign => MessageSecurityMode::Sign,
        SecurityModeName::SignAndEncrypt => MessageSecurityMode::SignAndEncrypt,
    };
    let identity = match (&config.user, &config.password) {
        (Some(user), Some(password)) => {
            IdentityToken::UserName(user.clone(), Password::new(password.clone()))
        }
        _ => IdentityToken::Anonymous,
    };
    let keep_alive = config.publishing_interval * KEEP_ALIVE_COUNT;
    let mut client = ClientBuilder::new()
        .application_name("Twinloom")
        .application_uri(format!("urn:twinloom:source:{}", config.id))
        .product_uri("urn:twinloom")
        .pki_dir(pki_dir)
        .create_sample_keypair(true)
        .trust_server_certs(config.trust_server_certificate)
        // Reconnect without end, with the source's backoff (see the module's comment).
        .session_retry_limit(-1)
        .session_retry_initial(config.backoff_min)
        .session_retry_max(config.backoff_max)
        .keep_alive_interval(keep_alive)
        .max_failed_keep_alive_count(MAX_FAILED_KEEP_ALIVES)
        .request_timeout(config.timeout)
        .max_message_size(limits::MAX_MESSAGE_BYTES)
        .max_chunk_count(limits::MAX_CHUNKS)
        .max_incoming_chunk_size(limits::CHUNK_BYTES)
        .max_array_length(limits::MAX_ARRAY_LENGTH)
        // The subscription after a reconnect is the source's (`OpcUaClient::after_reconnect`):
        // async-opcua's transferred it even on the reactivated session, and created it anew
        // where node-opcua then answered Bad_NothingToDo.
        .recreate_subscriptions(false)
        .client()
        .map_err(|errors| anyhow::anyhow!("client configuration: {}", errors.join(", ")))?;
    let endpoint = (
        config.endpoint.as_str(),
        policy.to_uri(),
        mode,
        UserTokenPolicy::anonymous(),
    );
    let (session, event_loop) = tokio::time::timeout(
        config.timeout,
        client.connect_to_matching_endpoint(endpoint, identity),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {:?}", config.timeout))??;
    let mut events: Events = Box::pin(event_loop.enter());
    if !drive(&mut events, session.wait_for_connection()).await? {
        bail!("session could not be activated");
    }
    Ok((session, events))
}

impl OpcUaClient {
    /// One session from connect to close. `Ok` when the source is stopping or the session ended
    /// normally; `Err` with the reason otherwise. The session is closed on every path.
    pub(super) async fn session(&self, token: &CancellationToken) -> anyhow::Result<()> {
        // async-opcua's first connection attempt has no deadline of its own (a server that
        // accepts TCP but never answers Hello would hold it forever).
        let connect = tokio::time::timeout(self.config.timeout * 2, self.connect());
        let (session, mut events) = tokio::select! {
            () = token.cancelled() => return Ok(()),
            connected = connect => connected
                .map_err(|_| anyhow::anyhow!("no session within {:?}", self.config.timeout * 2))??,
        };
        let (outcome, connected) = self.serve(&session, &mut events, token).await;
        self.link.clear();
        close(&session, &mut events, connected, self.config.timeout * 2).await;
        outcome
    }

    /// Builds the client and connects; returns once the session is activated.
    ///
    /// Errors: see [`connect`].
    async fn connect(&self) -> anyhow::Result<(Arc<Session>, Events)> {
        connect(&self.config, &self.pki_dir).await
    }

    /// The keep-alive interval asked for: publishing interval × [`KEEP_ALIVE_COUNT`].
    fn requested_keep_alive(&self) -> Duration {
        self.config.publishing_interval * KEEP_ALIVE_COUNT
    }

    /// Everything after ActivateSession. Returns the outcome and whether the connection is up
    /// (whether CloseSession can be sent).
    async fn serve(
        &self,
        session: &Arc<Session>,
        events: &mut Events,
        token: &CancellationToken,
    ) -> (anyhow::Result<()>, bool) {
        events::SessionUp {
            source: &self.config.id,
            endpoint: &self.config.endpoint,
        }
        .emit(&self.connected, &self.ready);
        let (status_changes, status_rx) = mpsc::channel(STATUS_CHANGES_QUEUED);
        let (gaps, gaps_rx) = mpsc::channel(GAPS_QUEUED);
        let senders = Senders {
            status_changes,
            gaps,
        };
        let setup = async {
            let (limits, items, namespaces) = self.resolve(session, events).await?;
            // Writes open before the first value arrives: a setpoint that reads Good can be
            // written.
            self.open_writes(session, events, &items, limits).await?;
            let (subscription, republisher) = self
                .subscribe(session, events, &items, limits, senders.clone())
                .await?;
            anyhow::Ok((subscription, republisher, namespaces, items, limits))
        };
        let setup = tokio::select! {
            () = token.cancelled() => return (Ok(()), true),
            setup = setup => setup,
        };
        let (subscription, republisher, namespaces, items, limits) = match setup {
            Ok(set) => set,
            Err(error) => {
                let connected = error.downcast_ref::<ConnectionDown>().is_none();
                return (Err(error), connected);
            }
        };
        let resolved = Resolution {
            namespaces,
            items,
            limits,
        };
        let channels = Channels {
            status_changes: status_rx,
            gaps: gaps_rx,
            republisher,
            senders,
        };
        self.follow(session, events, token, subscription, resolved, channels)
            .await
    }

    /// Reads the server's OperationLimits and, when a binding names its namespace by URI or a
    /// browse path uses a prefix, the namespace array (one Read); resolves the bindings, browse
    /// paths with TranslateBrowsePathsToNodeIds (Part 4 §5.8.4) in batches of the server's
    /// MaxNodesPerTranslateBrowsePathsToNodeIds. A binding whose namespace the server does not
    /// know, or whose browse path does not resolve, makes its properties Bad_ConfigurationError
    /// and gets no monitored item. Returns the limits, the items to monitor and the namespace
    /// array (empty when no binding needs it).
    ///
    /// Errors: a Read or TranslateBrowsePathsToNodeIds request failed as a whole.
    async fn resolve(
        &self,
        session: &Session,
        events: &mut Events,
    ) -> anyhow::Result<(OperationLimits, Vec<Resolved>, Vec<String>)> {
        let needs_namespaces = self.items.iter().any(|i| match &i.target {
            Target::Node(uri, _) => uri.is_some(),
            Target::Path(path) => path.prefixes().next().is_some(),
        });
        let mut nodes = OperationLimits::nodes().to_vec();
        let limit_count = nodes.len();
        if needs_namespaces {
            nodes.push(ReadValueId::from(NodeId::new(0, NAMESPACE_ARRAY)));
        }
        let values = drive(
            events,
            session.read(&nodes, TimestampsToReturn::Neither, 0.0),
        )
        .await?
        .context("cannot read the server's operation limits and namespace array")?;
        let limit_values: Vec<_> = values
            .iter()
            .take(limit_count)
            .map(|v| (v.status(), v.value.as_ref()))
            .collect();
        let limits = OperationLimits::from_values(&limit_values);
        let namespaces = if needs_namespaces {
            namespace_uris(values.get(limit_count))
        } else {
            Vec::new()
        };
        let nodes = resolve_targets(
            session,
            events,
            &self.config,
            self.items.iter().map(|i| &i.target),
            &namespaces,
            limits,
        )
        .await?;
        let mut resolved = Vec::with_capacity(self.items.len());
        let mut unknown: Vec<Reading> = Vec::new();
        let mut unknown_uris: Vec<String> = Vec::new();
        for (item, node) in self.items.iter().zip(nodes) {
            match node {
                Ok(node) => resolved.push(Resolved {
                    node,
                    properties: item.properties.clone(),
                    sampling: item.sampling,
                }),
                Err(failure) => {
                    match failure {
                        Unresolved::Namespace(uri) => {
                            if !unknown_uris.contains(&uri) {
                                events::NamespaceUnknown {
                                    source: &self.config.id,
                                    namespace: &uri,
                                }
                                .emit();
                                unknown_uris.push(uri);
                            }
                        }
                        Unresolved::Path(status) => events::BrowsePathUnresolved {
                            source: &self.config.id,
                            browse_path: &item.text,
                            status,
                        }
                        .emit(),
                    }
                    unknown.extend(
                        item.properties
                            .iter()
                            .map(|p| Reading::failed(*p, QualityReason::ConfigurationError)),
                    );
                }
            }
        }
        if !unknown.is_empty() {
            self.twin.apply(&unknown);
        }
        Ok((limits, resolved, namespaces))
    }

    /// Reads the DataType and ValueRank of every writable property's variable (in batches of
    /// the server's MaxNodesPerRead) and opens the write side ([`write::Link`]); a property whose
    /// variable did not resolve or whose attributes cannot be read gets the reason instead.
    ///
    /// Errors: a Read request failed as a whole.
    async fn open_writes(
        &self,
        session: &Arc<Session>,
        events: &mut Events,
        items: &[Resolved],
        limits: OperationLimits,
    ) -> anyhow::Result<()> {
        if self.writable.is_empty() {
            return Ok(());
        }
        let mut wanted: Vec<(PropertyId, &NodeId)> = Vec::new();
        for item in items {
            for property in &item.properties {
                if self.writable.contains_key(property) {
                    wanted.push((*property, &item.node));
                }
            }
        }
        let reads: Vec<ReadValueId> = wanted
            .iter()
            .flat_map(|(_, node)| write::type_attributes(node))
            .collect();
        let values = read_batched(session, events, reads, limits.reads_per_call()).await?;
        let mut targets: HashMap<PropertyId, Result<write::WriteTarget, String>> = self
            .writable
            .keys()
            .map(|p| {
                (
                    *p,
                    Err(
                        "its variable did not resolve on the server (Bad_ConfigurationError)"
                            .to_owned(),
                    ),
                )
            })
            .collect();
        for (i, (property, node)) in wanted.iter().enumerate() {
            let writable = self.writable[property];
            let target = write::target_from(
                node,
                values.get(2 * i),
                values.get(2 * i + 1),
                writable.scaling,
                writable.data_type,
            );
            if let Err(reason) = &target {
                events::WriteTargetUnreadable {
                    source: &self.config.id,
                    reason,
                }
                .emit();
            }
            targets.insert(*property, target);
        }
        self.link.set(write::Connected {
            session: Arc::clone(session),
            targets,
        });
        Ok(())
    }

    /// Creates the subscription (`maxNotificationsPerPublish` from
    /// [`limits::notifications_per_publish`]) and its monitored items in batches of at most the
    /// server's MaxMonitoredItemsPerCall (halved while the server finds a request too large);
    /// client handle `i + 1` for `items[i]`, queue size from [`limits::queue_size`]. A monitored
    /// item the server refuses makes its properties bad with the status's reason. The callback
    /// sends status changes that end the subscription and the sequence numbers a
    /// NotificationMessage skipped to `senders`. Returns the subscription id and the
    /// [`Republisher`] that gets the skipped ones back.
    ///
    /// Errors: CreateSubscription failed, or a CreateMonitoredItems request failed as a whole
    /// (other than too large, or too large with a single item).
    async fn subscribe(
        &self,
        session: &Session,
        events: &mut Events,
        items: &[Resolved],
        limits: OperationLimits,
        senders: Senders,
    ) -> anyhow::Result<(u32, Republisher)> {
        let by_handle = Arc::new(items.iter().map(|i| i.properties.clone()).collect());
        let applier = Applier::new(
            Arc::clone(&self.twin),
            by_handle,
            senders.status_changes,
            self.counters.overflows.clone(),
        );
        let unqueued = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let republisher = Republisher::new(applier.share(), Arc::clone(&unqueued));
        let callback = Notifications::new(applier, senders.gaps, unqueued);
        let subscription = drive(
            events,
            session.create_subscription(
                self.config.publishing_interval,
                LIFETIME_COUNT,
                KEEP_ALIVE_COUNT,
                limits::notifications_per_publish(),
                0,
                true,
                callback,
            ),
        )
        .await?
        .context("cannot create the subscription")?;
        let requests: Vec<MonitoredItemCreateRequest> = items
            .iter()
            .zip(1u32..)
            .map(|(item, handle)| MonitoredItemCreateRequest {
                item_to_monitor: ReadValueId::from(item.node.clone()),
                monitoring_mode: MonitoringMode::Reporting,
                requested_parameters: MonitoringParameters {
                    client_handle: handle,
                    sampling_interval: item.sampling.as_secs_f64() * 1000.0,
                    queue_size: limits::queue_size(self.config.publishing_interval, item.sampling),
                    discard_oldest: true,
                    ..Default::default()
                },
            })
            .collect();
        let mut batches = MonitoredItemBatches::new(requests.len(), limits.items_per_call());
        while let Some(range) = batches.next_range() {
            let created = drive(
                events,
                session.create_monitored_items(
                    subscription,
                    TimestampsToReturn::Source,
                    requests[range.clone()].to_vec(),
                ),
            )
            .await?;
            match created {
                Ok(results) => {
                    self.refused(
                        &items[range.clone()],
                        results.iter().map(|r| r.result.status_code),
                    );
                    batches.done(range);
                }
                Err(error) if limits::too_large(error.status()) && batches.halve() => {}
                Err(error) => {
                    return Err(anyhow::anyhow!("cannot create monitored items: {error}"));
                }
            }
        }
        Ok((subscription, republisher))
    }

    /// Marks the properties of items the server refused bad, with the status's reason.
    /// (`statuses` in the order of `items`; async-opcua 0.19 does not export its result type.)
    fn refused(&self, items: &[Resolved], statuses: impl Iterator<Item = StatusCode>) {
        let mut failed = Vec::new();
        for (item, status) in items.iter().zip(statuses) {
            if !status.is_good() {
                events::MonitoredItemRefused {
                    source: &self.config.id,
                    node: &item.node,
                    status,
                }
                .emit();
                failed.extend(
                    item.properties
                        .iter()
                        .map(|p| Reading::failed(*p, reason(status))),
                );
            }
        }
        if !failed.is_empty() {
            self.twin.apply(&failed);
        }
    }

    /// The subscription's keep-alive interval as the server revised it (publishing interval ×
    /// max keep-alive count), or as asked for when unknown.
    fn keep_alive(&self, session: &Session, subscription: u32) -> Duration {
        let state = session.subscription_state().lock();
        state
            .get(subscription)
            .and_then(|s| {
                s.publishing_interval()
                    .checked_mul(s.max_keep_alive_count())
            })
            .filter(|d| !d.is_zero())
            .unwrap_or_else(|| self.requested_keep_alive())
    }

    /// Follows the session until the source stops or the session must start over. Returns the
    /// outcome and whether the connection is up.
    async fn follow(
        &self,
        session: &Arc<Session>,
        events: &mut Events,
        token: &CancellationToken,
        mut subscription: u32,
        resolved: Resolution,
        channels: Channels,
    ) -> (anyhow::Result<()>, bool) {
        let Channels {
            mut status_changes,
            mut gaps,
            mut republisher,
            senders,
        } = channels;
        let mut keep_alive = self.keep_alive(session, subscription);
        let mut last_heard = Instant::now();
        let mut connected = true;
        let mut stalled = false;
        let mut watch = tokio::time::interval((keep_alive / 4).max(Duration::from_millis(50)));
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            if connected && republisher.has_work() {
                // Raced against the token: a server slow to answer Republish must not hold up a
                // shutdown (the session is closed on the way out as always).
                let republished = tokio::select! {
                    () = token.cancelled() => return (Ok(()), connected),
                    republished = self.republish(&mut republisher, session, events, subscription) => republished,
                };
                match republished {
                    Ok(()) => {}
                    Err(ConnectionDown::Lost(status)) => {
                        connected = false;
                        self.link.clear();
                        if !stalled {
                            events::ConnectionLost {
                                source: &self.config.id,
                                status: &status,
                            }
                            .emit(&self.connected, &self.ready);
                            self.mark_all(QualityReason::NoConnection);
                        }
                    }
                    Err(down) => return (Err(down.into()), false),
                }
            }
            tokio::select! {
                () = token.cancelled() => return (Ok(()), connected),
                Some(missing) = gaps.recv() => {
                    self.missing(&mut republisher, missing, subscription);
                }
                Some(status) = status_changes.recv() => {
                    events::SubscriptionStatusChanged { source: &self.config.id, status }.emit();
                    self.mark_all(QualityReason::NoConnection);
                    return (Err(anyhow::anyhow!("subscription ended by the server: {status}")), connected);
                }
                _ = watch.tick() => {
                    let silent_for = last_heard.elapsed();
                    if connected && !stalled && silent_for >= keep_alive * STALL_KEEP_ALIVES {
                        stalled = true;
                        events::ServerStalled { source: &self.config.id, silent_for }
                            .emit(&self.connected, &self.ready, &self.counters);
                        self.mark_all(QualityReason::NoConnection);
                        self.link.clear();
                        // The transport ends once CloseSecureChannel is written; the event loop
                        // then reports ConnectionLost and reconnects.
                        session.channel().close_channel().await;
                    }
                }
                event = events.next() => match event {
                    Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                        connected = false;
                        self.link.clear();
                        if !stalled {
                            events::ConnectionLost { source: &self.config.id, status: &status }
                                .emit(&self.connected, &self.ready);
                            self.mark_all(QualityReason::NoConnection);
                        }
                    }
                    Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                        events::ReconnectFailed { source: &self.config.id, status }.emit();
                    }
                    Some(Ok(SessionPollResult::Reconnected(mode))) => {
                        connected = true;
                        stalled = false;
                        last_heard = Instant::now();
                        events::SessionResumed { source: &self.config.id, mode: &mode }
                            .emit(&self.connected, &self.ready);
                        match self.after_reconnect(session, events, &mode, subscription, &resolved, &senders).await {
                            Ok(None) => {}
                            Ok(Some((current, replacement))) => {
                                // What the old subscription still missed is lost with it, the
                                // gaps its callback found before it went too.
                                while let Ok(missing) = gaps.try_recv() {
                                    self.missing(&mut republisher, missing, subscription);
                                }
                                self.forget_pending(&mut republisher, subscription);
                                subscription = current;
                                republisher = replacement;
                            }
                            Err(error) => return (Err(error), connected),
                        }
                        // async-opcua 0.19 starts the new connection's publish loop idle, waiting
                        // for a trigger it already consumed (while it reconnected, and again when
                        // the subscription was transferred or created before the loop began):
                        // without this no Publish request is ever sent.
                        session.trigger_publish_now();
                        // The writable variables' types again: a new session may be a new server.
                        if let Err(error) = self.open_writes(session, events, &resolved.items, resolved.limits).await {
                            return (Err(error), connected);
                        }
                        keep_alive = self.keep_alive(session, subscription);
                    }
                    Some(Ok(SessionPollResult::SessionActivity(SessionActivity::KeepAliveSucceeded))) => {
                        last_heard = Instant::now();
                    }
                    Some(Ok(SessionPollResult::SessionActivity(SessionActivity::KeepAliveFailed(status)))) => {
                        events::RequestFailed::KeepAlive(status).emit(&self.config.id, &self.counters);
                    }
                    Some(Ok(SessionPollResult::Subscription(SubscriptionActivity::Publish))) => {
                        last_heard = Instant::now();
                    }
                    Some(Ok(SessionPollResult::Subscription(
                        SubscriptionActivity::PublishFailed(status) | SubscriptionActivity::FatalFailure(status),
                    ))) => {
                        events::RequestFailed::Publish(status).emit(&self.config.id, &self.counters);
                    }
                    Some(Ok(_)) => {}
                    Some(Err(status)) => {
                        return (Err(anyhow::anyhow!("session failed: {status}")), false);
                    }
                    None => return (Ok(()), false),
                },
            }
        }
    }

    /// After async-opcua reconnected (a new secure channel, then ActivateSession on the old
    /// session or, where the server no longer knew it, a new session): the subscription, per
    /// Part 4 §6.7. Returns `None` when the old one is kept, or the new one's id and
    /// [`Republisher`] when it had to be created again.
    ///
    /// - Reactivated session: the subscription lives on in it (SetPublishingMode says whether it
    ///   still does, Bad_SubscriptionIdInvalid when it expired meanwhile). Its unacknowledged
    ///   NotificationMessages stay in the server's retransmission queue, and what it sampled
    ///   meanwhile is queued: its next message (or keep-alive) skips the numbers lost with the
    ///   connection and the source asks for them with Republish ([`Self::republish`]); none is
    ///   deleted, nothing is created again. Values it did not change get their quality back
    ///   ([`Self::restore_unchanged`]).
    /// - New session: first, when a binding needs them, the namespace array and browse paths are
    ///   checked (changed: the source starts over, the items carry the old NodeIds); then
    ///   TransferSubscriptions with initial values moves the subscription (its numbers go on, so
    ///   Republish covers a loss there too).
    /// - Neither (the server restarted, or cannot transfer: asyncua answers
    ///   Bad_ServiceUnsupported): the old subscription is deleted, on the server too should it
    ///   live on there, and created again with its monitored items ([`Self::subscribe`]); the
    ///   numbers it still missed are counted lost by the caller.
    ///
    /// async-opcua 0.19 would do the subscription part itself (`recreate_subscriptions`, off in
    /// [`connect`]), but it calls TransferSubscriptions after every reconnect, also on the
    /// reactivated session, where node-opcua answers Bad_NothingToDo (the subscription is already
    /// the session's); it then created the subscription anew beside the old one, whose deletion
    /// lost its unacknowledged messages uncounted — and whose messages on the new connection
    /// async-opcua acknowledged and dropped, not knowing that subscription any more.
    ///
    /// Errors: the connection broke meanwhile; the namespace array or the browse paths could not
    /// be read, or differ; a Read of the values failed; the subscription could not be created
    /// again.
    async fn after_reconnect(
        &self,
        session: &Arc<Session>,
        events: &mut Events,
        mode: &SessionConnectMode,
        old: u32,
        resolved: &Resolution,
        senders: &Senders,
    ) -> anyhow::Result<Option<(u32, Republisher)>> {
        let kept = match mode {
            SessionConnectMode::ReactivatedSession(_) => {
                let enabled = drive(events, session.set_publishing_mode(&[old], true)).await?;
                let status = match enabled {
                    Ok(statuses) => statuses
                        .first()
                        .copied()
                        .unwrap_or(StatusCode::BadUnexpectedError),
                    Err(error) => error.status(),
                };
                if status.is_good() {
                    self.restore_unchanged(session, events, resolved).await?;
                }
                status
            }
            SessionConnectMode::NewSession(_) => {
                if !resolved.namespaces.is_empty()
                    || self
                        .items
                        .iter()
                        .any(|i| matches!(i.target, Target::Path(_)))
                {
                    let (_, items, namespaces) = self.resolve(session, events).await?;
                    let nodes = |items: &[Resolved]| -> Vec<NodeId> {
                        items.iter().map(|i| i.node.clone()).collect()
                    };
                    if namespaces != resolved.namespaces || nodes(&items) != nodes(&resolved.items)
                    {
                        bail!(
                            "the server's namespace array or browse paths changed; subscribing again"
                        );
                    }
                }
                let transferred =
                    drive(events, session.transfer_subscriptions(&[old], true)).await?;
                match transferred {
                    Ok(results) => results
                        .first()
                        .map_or(StatusCode::BadUnexpectedError, |r| r.status_code),
                    Err(error) => error.status(),
                }
            }
        };
        if kept.is_good() {
            return Ok(None);
        }
        // Out of async-opcua's subscription state (its callback with it), and off the server
        // should it live on there; the server's answer changes nothing (Bad_SubscriptionIdInvalid
        // when it is gone).
        let _ = drive(events, session.delete_subscriptions(&[old])).await?;
        let (current, republisher) = self
            .subscribe(
                session,
                events,
                &resolved.items,
                resolved.limits,
                senders.clone(),
            )
            .await?;
        events::SubscriptionCreatedAgain {
            source: &self.config.id,
            old,
            new: current,
            status: kept,
        }
        .emit();
        Ok(Some((current, republisher)))
    }

    /// On the reactivated session, whose subscription lives on: the properties the broken
    /// connection made Bad_NoCommunication get their quality back where the server's value is
    /// still the sample the twin holds (the same source timestamp) — a subscription reports
    /// changes only, so an unchanged value would stay bad. A value that changed is left to the
    /// subscription (its queued notifications, or Republish of lost ones), which keeps the samples
    /// in order; so is one without a source timestamp. One Read of the Value attributes with
    /// source timestamps, in batches of the server's MaxNodesPerRead.
    ///
    /// Errors: a Read request failed as a whole.
    async fn restore_unchanged(
        &self,
        session: &Session,
        events: &mut Events,
        resolved: &Resolution,
    ) -> anyhow::Result<()> {
        let nodes = resolved
            .items
            .iter()
            .map(|i| ReadValueId::from(i.node.clone()))
            .collect();
        let per_call = resolved.limits.reads_per_call();
        let values =
            read_batched_with(session, events, nodes, per_call, TimestampsToReturn::Source).await?;
        let mut unchanged = Vec::new();
        for (item, value) in resolved.items.iter().zip(&values) {
            unchanged.extend(readings(value, &item.properties).into_iter().filter(|r| {
                r.outcome.is_ok()
                    && r.source_time.is_some()
                    && self.twin.sample(r.property).source_time == r.source_time
            }));
        }
        if !unchanged.is_empty() {
            self.twin.apply(&unchanged);
        }
        Ok(())
    }
}
