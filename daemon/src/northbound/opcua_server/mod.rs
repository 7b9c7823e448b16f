//! The OPC UA server: the twin *is* the address space (see [`node_manager`]).
//!
//! Built on `async-opcua` (pinned `=0.19.0`), the maintained continuation of the `opcua` crate.
//! Endpoints: Basic256Sha256, Aes128_Sha256_RsaOaep and Aes256_Sha256_RsaPss, each with Sign and
//! SignAndEncrypt, plus None only when `allow_security_none` is set. The server's certificate is
//! created on first start in the PKI folder (application URI, host names and IP addresses in its
//! subject alternative names). Client certificates are rejected (copied to `rejected/`) until an
//! operator trusts them with `twinloom pki trust`, unless `auto_trust_clients` is set.
//! Values are pushed to monitored items from the twin's change fan-out; nothing polls the twin.

pub mod auth;
mod events;
pub mod health;
pub mod history;
pub mod node_manager;
pub mod pki;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use opcua::crypto::SecurityPolicy;
use opcua::server::hardening::HardeningLimits;
use opcua::server::node_manager::memory::InMemoryNodeManagerBuilder;
use opcua::server::{ServerBuilder, ServerEndpoint};
use opcua::types::{LocalizedText, MessageSecurityMode, ServerState};
use tokio::net::TcpListener;

use crate::config::opcua_server::OpcUaServerConfig;
use crate::context::ComponentContext;
use crate::control::ControlHandle;
use crate::runtime::Supervisor;
use crate::twin::{DEFAULT_SUBSCRIBER_CAPACITY, Filter, PropertyId};
use node_manager::{TwinNodeManager, TwinNodeManagerBuilder};

/// Changes the server takes from the twin per batch before coalescing starts (sized for a plant
/// of 100 000 properties all changing within one batch interval).
pub const SERVER_SUBSCRIBER_CAPACITY: usize = 16 * DEFAULT_SUBSCRIBER_CAPACITY;

/// Changes written to the address space under one lock by the feed task.
pub const FEED_SLICE: usize = 2048;

/// Largest OPC UA message accepted or sent, in bytes (64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A running OPC UA server.
#[derive(Debug, Clone)]
pub struct OpcUaServer {
    /// The endpoint URL clients connect to, e.g. `opc.tcp://127.0.0.1:4840/`.
    pub endpoint_url: String,
    /// The bound TCP port.
    pub port: u16,
    /// Namespace index of the plant's nodes.
    pub namespace_index: u16,
    /// The PKI folder in use.
    pub pki_dir: PathBuf,
}

/// The PKI folder for `config`: `pki_dir`, or `<state_dir>/pki`.
pub fn pki_dir(config: &OpcUaServerConfig, state_dir: &Path) -> PathBuf {
    config
        .pki_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("pki"))
}

/// What the server serves history from: the historian and who may read it (`[history]`).
#[derive(Debug, Clone)]
pub struct HistoryService {
    /// The running historian.
    pub historian: crate::history::Historian,
    /// The `[history]` section (`readers`).
    pub config: crate::config::history::HistoryConfig,
}

/// Binds the listener, builds the address space from the twin and starts serving under
/// `supervisor`, fed by the twin's fan-out. Client writes go to `control`; the plugins' status
/// objects' `ClearQuarantine` methods to `clear_quarantine`; users' passwords are checked on
/// `logins`, the daemon's password pool; HistoryRead is served from `history` when given.
///
/// Errors: the listen address cannot be bound, or async-opcua rejects the configuration.
pub async fn start(
    config: &OpcUaServerConfig,
    control: ControlHandle,
    clear_quarantine: Option<node_manager::ClearQuarantine>,
    logins: &crate::northbound::login::LoginPool,
    history: Option<HistoryService>,
    context: ComponentContext<'_>,
) -> anyhow::Result<OpcUaServer> {
    let ComponentContext {
        twin,
        metrics,
        supervisor,
        readiness,
        state_dir,
    } = context;
    let listening = readiness.register("OPC UA server is not listening");
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let port = listener.local_addr()?.port();
    let host = config.host_name.clone().unwrap_or_else(|| {
        if config.listen.ip().is_unspecified() {
            opcua::crypto::X509Data::computer_hostnames()
                .into_iter()
                .next()
                .unwrap_or_else(|| "localhost".to_owned())
        } else {
            config.listen.ip().to_string()
        }
    });
    let endpoint_url = format!("opc.tcp://{host}:{port}/");
    let application_uri = config.application_uri.clone().unwrap_or_else(|| {
        let name = opcua::crypto::X509Data::computer_hostnames()
            .into_iter()
            .next()
            .unwrap_or_else(|| "localhost".to_owned());
        format!("urn:twinloom:{name}")
    });
    let pki = pki_dir(config, state_dir);
    pki::protect_private_folder(&pki)
        .with_context(|| format!("cannot prepare {}", pki.display()))?;
    let throttled = Arc::new(AtomicU64::new(0));
    let refused_items = Arc::new(AtomicU64::new(0));
    let authenticator = Arc::new(
        auth::Authenticator::new(
            config,
            metrics.opcua.failed_logins.clone(),
            Arc::clone(&throttled),
            logins.clone(),
        )
        .with_history_readers(history.as_ref().map(|h| h.config.clone())),
    );
    // The server's own token: on stop it first announces the shutdown (below), then closes.
    let token = tokio_util::sync::CancellationToken::new();
    let publishing_ms = config.min_publishing_interval.as_secs_f64() * 1000.0;
    let mut builder = ServerBuilder::new()
        .application_name("Twinloom")
        .application_uri(application_uri)
        .product_uri("urn:twinloom")
        .host(host)
        .port(port)
        .pki_dir(&pki)
        .create_sample_keypair(true)
        .trust_client_certs(config.auto_trust_clients)
        .with_authenticator(authenticator)
        .with_node_manager(InMemoryNodeManagerBuilder::new(TwinNodeManagerBuilder {
            namespace_uri: config.namespace_uri.clone(),
            twin: Arc::clone(twin),
            control,
            clear_quarantine,
            max_monitored_items_per_user: config.limits.max_monitored_items_per_user,
            refused_monitored_items: Arc::clone(&refused_items),
            history: history.as_ref().map(|h| h.historian.clone()),
        }))
        .max_sessions(config.max_sessions)
        // async-opcua's defaults (arrays of 1000, messages of 320 KiB) are far below a plant of
        // 100 000 properties: one CreateMonitoredItems or Publish may carry tens of thousands.
        .max_array_length(config.max_monitored_items_per_subscription.max(100_000))
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_chunk_count(MAX_MESSAGE_BYTES / 65_535 + 1)
        .subscription_poll_interval_ms((publishing_ms as u64).max(1))
        .discovery_urls(vec![endpoint_url.clone()])
        .diagnostics_enabled(true)
        .hardening_limits(HardeningLimits {
            max_connections: config.limits.max_connections,
            max_connections_per_address: config.limits.max_connections_per_address,
            handshake_timeout: Some(config.limits.handshake_timeout),
            max_unauthenticated_message_size: config.limits.max_unauthenticated_message_bytes,
            max_unauthenticated_buffered: config.limits.max_unauthenticated_buffered_bytes,
            max_sessions_per_user: config.limits.max_sessions_per_user,
            max_subscriptions_per_user: config.limits.max_subscriptions_per_user,
        })
        .token(token);
    if history.is_some() {
        // OPC UA Part 11 §5.4.2 (patch 0006 of the series lets the builder set these).
        builder = builder.history_capabilities(opcua::server::HistoryServerCapabilities {
            access_history_data: true,
            max_return_data_values: history::MAX_RETURN_DATA_VALUES as u32,
            server_timestamp_supported: true,
            ..Default::default()
        });
    }
    // ServerEndpoint::new rather than the per-policy constructors: async-opcua 0.19 marks
    // `new_basic256sha256_sign` deprecated, though OPC UA only deprecates Basic128Rsa15 and Basic256.
    for policy in [
        SecurityPolicy::Basic256Sha256,
        SecurityPolicy::Aes128Sha256RsaOaep,
        SecurityPolicy::Aes256Sha256RsaPss,
    ] {
        for mode in [
            MessageSecurityMode::Sign,
            MessageSecurityMode::SignAndEncrypt,
        ] {
            builder = builder.add_endpoint(
                format!("{policy}_{mode}"),
                ServerEndpoint::new("/", policy, mode, &[]),
            );
        }
    }
    if config.allow_security_none {
        builder = builder.add_endpoint("none", ServerEndpoint::new_none("/", &[]));
    }
    {
        let limits = builder.limits_mut();
        limits.subscriptions.min_publishing_interval_ms = publishing_ms;
        limits.subscriptions.min_sampling_interval_ms =
            config.min_sampling_interval.as_secs_f64() * 1000.0;
        limits.subscriptions.max_subscriptions_per_session = config.max_subscriptions_per_session;
        limits.subscriptions.max_monitored_items_per_sub =
            config.max_monitored_items_per_subscription;
        limits.subscriptions.max_queued_notifications =
            config.max_monitored_items_per_subscription.max(20_000) * 2;
        limits.subscriptions.max_notifications_per_publish =
            config.max_monitored_items_per_subscription as u64;
        limits.operational.max_monitored_items_per_call =
            config.max_monitored_items_per_subscription;
        limits.operational.max_nodes_per_read = config.max_monitored_items_per_subscription;
        limits.operational.max_nodes_per_write = 10_000;
        limits.operational.max_nodes_per_browse = 10_000;
    }
    let (server, handle) = builder
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the OPC UA server: {e}"))?;
    // async-opcua writes a new private key with the process umask's mode.
    pki::protect_private_keys(&pki)
        .with_context(|| format!("cannot restrict the private keys in {}", pki.display()))?;
    let expires = handle
        .info()
        .server_certificate
        .as_ref()
        .and_then(|certificate| certificate.not_after().ok())
        .map(|at| at.timestamp());
    if let Some(expires) = expires {
        watch_expiry(
            pki.join("own/cert.der"),
            expires,
            config.certificate_expiry_warning,
            supervisor,
        );
    }
    let pruned = Arc::new(AtomicU64::new(0));
    cap_rejected(
        pki.clone(),
        config.limits.max_rejected_certificates,
        Arc::clone(&pruned),
        supervisor,
    );
    let manager = handle
        .node_managers()
        .get_of_type::<TwinNodeManager>()
        .context("twin node manager missing")?;
    let namespace_index = manager.inner().namespace_index();
    metrics.register_collector(Box::new(ServerCollector {
        info: Arc::clone(handle.info()),
        manager: Arc::clone(&manager),
        throttled,
        pruned,
        refused_items,
        expires,
    }));
    let subscriptions = Arc::clone(handle.subscriptions());
    let stopping = handle.clone();
    let delay = config.shutdown_delay;
    supervisor.spawn("opcua-shutdown", move |token| async move {
        token.cancelled().await;
        // OPC UA Part 5 §12.6 (ServerStatusDataType): clients see State = Shutdown and
        // SecondsTillShutdown count down before their connections close, and can fail over.
        stopping.shutdown_after(delay, LocalizedText::new("en", "Twinloom is stopping"));
        stopping.set_server_state(ServerState::Shutdown);
        Ok(())
    });

    // Feed: subscribe first, then load every current value, then apply changes as they come.
    let mut changes = twin.subscribe(Filter::All, SERVER_SUBSCRIBER_CAPACITY);
    let mut plant = health::PlantHealth::new(twin.model());
    let ids: Vec<PropertyId> = (0..twin.model().properties().len() as u32)
        .map(PropertyId)
        .collect();
    for (id, sample) in ids.iter().zip(twin.samples(&ids)) {
        plant.update(*id, sample.quality.level);
    }
    let mut service_level = plant.service_level();
    handle.set_service_level(service_level);
    let initial = manager.inner().all_values();
    manager
        .set_values(
            &subscriptions,
            initial.iter().map(|(id, dv)| (id, None, dv.clone())),
        )
        .map_err(|status| anyhow::anyhow!("cannot load initial values: {status}"))?;
    let feeder = Arc::clone(&manager);
    supervisor.spawn("opcua-feed", move |token| async move {
        let mut batch = Vec::new();
        loop {
            batch.clear();
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                _ = changes.recv(&mut batch) => {}
            }
            let inner = feeder.inner();
            for change in &batch {
                plant.update(change.property, change.sample.quality.level);
            }
            if plant.service_level() != service_level {
                service_level = plant.service_level();
                handle.set_service_level(service_level);
            }
            // In slices, so that the address-space lock is released between them and client
            // requests (reads, CreateMonitoredItems) are not held up by a plant-wide update.
            for slice in batch.chunks(FEED_SLICE) {
                let values = slice.iter().map(|change| {
                    (
                        inner.node_of(change.property),
                        None,
                        node_manager::data_value(&change.sample),
                    )
                });
                if let Err(status) = feeder.set_values(&subscriptions, values) {
                    events::ValuesNotUpdated { status: &status }.emit();
                }
                tokio::task::yield_now().await;
            }
        }
    });
    supervisor.spawn("opcua-server", move |_token| async move {
        server
            .run_with(listener)
            .await
            .map_err(|e| anyhow::anyhow!("OPC UA server stopped: {e}"))
    });
    events::Listening {
        endpoint: &endpoint_url,
        pki: &pki,
    }
    .emit(&listening);
    Ok(OpcUaServer {
        endpoint_url,
        port,
        namespace_index,
        pki_dir: pki,
    })
}

/// Seconds from now until `unix_seconds` (negative when it has passed).
fn seconds_until(unix_seconds: i64) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    unix_seconds - now
}

/// Warns at start, and then daily, while the server certificate at `certificate` expires within
/// `warn_before` (`expires` in seconds since the Unix epoch).
fn watch_expiry(
    certificate: PathBuf,
    expires: i64,
    warn_before: std::time::Duration,
    supervisor: &Supervisor,
) {
    supervisor.spawn("opcua-certificate-expiry", move |token| async move {
        let mut daily = tokio::time::interval(std::time::Duration::from_secs(24 * 3600));
        loop {
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                _ = daily.tick() => {}
            }
            let seconds_left = seconds_until(expires);
            if seconds_left < warn_before.as_secs() as i64 {
                events::CertificateExpiring {
                    certificate: &certificate,
                    seconds_left,
                }
                .emit();
            }
        }
    });
}

/// Keeps at most `keep` certificates in `<pki>/rejected/` (every refused client leaves one
/// there, so an attacker could fill the disk): prunes at start and whenever a file lands there
/// (inotify), counting what it deleted in `pruned`. Without a watcher it prunes at start only.
fn cap_rejected(pki: PathBuf, keep: usize, pruned: Arc<AtomicU64>, supervisor: &Supervisor) {
    use notify::{EventKind, RecursiveMode, Watcher};
    let (landed, mut arrivals) = tokio::sync::mpsc::channel::<()>(1);
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_))) {
            // One pending signal is enough: a prune sees every file present.
            let _ = landed.try_send(());
        }
    })
    .and_then(|mut watcher| {
        let rejected = pki.join("rejected");
        std::fs::create_dir_all(&rejected).map_err(notify::Error::io)?;
        watcher.watch(&rejected, RecursiveMode::NonRecursive)?;
        Ok(watcher)
    });
    let watcher = match watcher {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            events::RejectedNotWatched {
                pki: &pki,
                error: &error,
            }
            .emit();
            None
        }
    };
    supervisor.spawn("opcua-rejected-cap", move |token| async move {
        let _watcher = watcher;
        loop {
            let folder = pki.clone();
            match tokio::task::spawn_blocking(move || pki::prune_rejected(&folder, keep)).await? {
                Ok(0) => {}
                Ok(deleted) => events::RejectedCapped::Deleted { deleted, keep }.emit(&pruned),
                Err(error) => events::RejectedCapped::Failed {
                    pki: &pki,
                    error: &error,
                }
                .emit(&pruned),
            }
            tokio::select! {
                () = token.cancelled() => return Ok(()),
                arrival = arrivals.recv() => if arrival.is_none() { return Ok(()) },
            }
        }
    });
}

/// Exposes sessions, subscriptions, monitored items, connections and the bounds on clients that
/// bit (`twinloom_opcua_limit_hits_total{limit}`, labelled with the config key) at scrape time.
struct ServerCollector {
    info: Arc<opcua::server::ServerInfo>,
    manager: Arc<TwinNodeManager>,
    /// Logins refused by the per-address throttle.
    throttled: Arc<AtomicU64>,
    /// Rejected client certificates deleted beyond `max_rejected_certificates`.
    pruned: Arc<AtomicU64>,
    /// Monitored items refused beyond `max_monitored_items_per_user`.
    refused_items: Arc<AtomicU64>,
    /// When the server certificate expires, in seconds since the Unix epoch.
    expires: Option<i64>,
}

impl std::fmt::Debug for ServerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerCollector")
    }
}

impl prometheus_client::collector::Collector for ServerCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use opcua::types::{VariableId, Variant};
        let count = |id: VariableId| match self.info.diagnostics.get(id).and_then(|dv| dv.value) {
            Some(Variant::UInt32(n)) => i64::from(n),
            _ => 0,
        };
        crate::telemetry::metrics::encode_gauges(
            &mut encoder,
            &[
                (
                    "opcua_sessions",
                    "Current OPC UA sessions",
                    count(VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSessionCount),
                ),
                (
                    "opcua_subscriptions",
                    "Current OPC UA subscriptions",
                    count(VariableId::Server_ServerDiagnostics_ServerDiagnosticsSummary_CurrentSubscriptionCount),
                ),
                ("opcua_monitored_items", "Monitored items on twin nodes", self.manager.inner().monitored_items()),
                (
                    "opcua_connections",
                    "Open OPC UA connections",
                    self.info.hardening.connections() as i64,
                ),
                (
                    "opcua_certificate_expiry_seconds",
                    "Seconds until the OPC UA server certificate expires (negative once it has)",
                    self.expires.map_or(0, seconds_until),
                ),
                (
                    "opcua_unauthenticated_buffered_bytes",
                    "Bytes of incomplete messages held for OPC UA clients without a session",
                    self.info.hardening.unauthenticated_buffered() as i64,
                ),
            ],
        )?;
        let hits = &self.info.hardening.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        crate::telemetry::metrics::encode_labelled_counters(
            &mut encoder,
            "opcua_limit_hits",
            "Times a bound on OPC UA clients bit, by its [opcua_server.limits] key",
            "limit",
            &[
                ("max_connections", read(&hits.refused_connections)),
                (
                    "max_connections_per_address",
                    read(&hits.refused_per_address),
                ),
                ("handshake_timeout", read(&hits.handshake_timeouts)),
                // A message over its bound or a full shared budget: both close the connection.
                (
                    "max_unauthenticated_bytes",
                    read(&hits.unauthenticated_overflows),
                ),
                ("login_failures_per_minute", read(&self.throttled)),
                ("max_rejected_certificates", read(&self.pruned)),
                ("max_sessions_per_user", read(&hits.sessions_per_user)),
                (
                    "max_subscriptions_per_user",
                    read(&hits.subscriptions_per_user),
                ),
                ("max_monitored_items_per_user", read(&self.refused_items)),
            ],
        )
    }
}
