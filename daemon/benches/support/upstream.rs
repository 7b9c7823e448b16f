//! An upstream OPC UA server for the benchmarks: Twinloom's own server over a twin whose values
//! all change every 100 ms (the `opcua` benchmark measures it; the `opcua_source` benchmark
//! subscribes to it).

// The benchmark's own server task runs outside the daemon's supervision (clippy.toml's rule is
// the daemon's).
#![allow(clippy::disallowed_methods)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use twinloom::config::Config;
use twinloom::config::model::{AssetConfig, DataType, PropertyConfig, TypeConfig};
use twinloom::twin::{PropertyId, Reading, Twin, Value};

/// Properties per asset of the served twin.
pub const PROPERTIES: usize = 100;

/// The NodeId of item `i` on a server of [`serve`] whose namespace index is `ns`.
pub fn node(ns: u16, i: usize) -> opcua::types::NodeId {
    opcua::types::NodeId::new(ns, format!("bench/a{}/p{}", i / PROPERTIES, i % PROPERTIES))
}

/// Child process: a twin of `items` float properties (assets of [`PROPERTIES`]) served over
/// OPC UA by Twinloom's server (security None, anonymous), every value changing every 100 ms.
/// Prints `LISTENING <url> <namespace index>`; ends when stdin closes.
pub fn serve(items: usize) {
    let assets = items.div_ceil(PROPERTIES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let config = Config {
            file: "bench.toml".into(),
            daemon: Default::default(),
            twin: Default::default(),
            opcua_server: None,
            admin_http: None,
            change_log: None,
            history: None,
            northbound: Default::default(),
            control: Default::default(),
            sources: Vec::new(),
            types: vec![TypeConfig {
                name: "Probe".into(),
                description: None,
                properties: (0..PROPERTIES)
                    .map(|p| PropertyConfig {
                        name: format!("p{p}"),
                        data_type: DataType::Float,
                        unit: Some("CEL".into()),
                        description: None,
                        range: None,
                        deadband: None,
                        access: Default::default(),
                        limits: None,
                        clamp: false,
                        max_rate: None,
                        min_write_interval: None,
                        on_loss: Default::default(),
                        select_before_operate: None,
                        historizing: true,
                        history_deadband: None,
                        history_max_interval: None,
                    })
                    .collect(),
            }],
            assets: (0..assets)
                .map(|a| AssetConfig {
                    path: format!("bench/a{a}"),
                    type_name: "Probe".into(),
                    source: None,
                    device: None,
                    description: None,
                    bindings: IndexMap::new(),
                })
                .collect(),
            plugins: Vec::new(),
        };
        let twin = Arc::new(Twin::new(Arc::new(config.twin_model()), &config.twin));
        let supervisor = twinloom::runtime::Supervisor::new();
        let metrics = twinloom::telemetry::Metrics::new();
        // The benchmark writes nothing: no audit log.
        let control = twinloom::control::spawn(
            Arc::clone(&twin),
            Default::default(),
            twinloom::control::GateRecords::audit_only(Err("the benchmark writes nothing".into())),
            Default::default(),
            Default::default(),
            &twinloom::telemetry::metrics::ControlMetrics::default(),
            &supervisor,
        );
        let server_config: twinloom::config::model::OpcUaServerConfig = toml::from_str(
            "listen = \"127.0.0.1:0\"\nallow_security_none = true\nanonymous = true",
        )
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let readiness = twinloom::runtime::Readiness::default();
        let logins = twinloom::northbound::login::LoginPool::start(
            twinloom::northbound::login::login_threads(),
            twinloom::northbound::login::LOGIN_QUEUE,
            metrics.set(),
        )
        .unwrap();
        let server = twinloom::northbound::opcua_server::start(
            &server_config,
            control,
            None,
            &logins,
            None,
            twinloom::context::ComponentContext {
                twin: &twin,
                metrics: &metrics,
                supervisor: &supervisor,
                readiness: &readiness,
                state_dir: state.path(),
            },
        )
        .await
        .unwrap();
        println!(
            "LISTENING {} {}",
            server.endpoint_url, server.namespace_index
        );
        std::io::stdout().flush().unwrap();
        let updater = Arc::clone(&twin);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut step = 0u64;
            loop {
                tick.tick().await;
                step += 1;
                let readings: Vec<Reading> = (0..items)
                    .map(|i| {
                        Reading::value(
                            PropertyId(i as u32),
                            Value::Float((step * 1000 + i as u64) as f64),
                            None,
                        )
                    })
                    .collect();
                updater.apply(&readings);
            }
        });
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        supervisor.shutdown(Duration::from_secs(2)).await;
    });
}

/// A plain async-opcua client connected to `url` (security None, anonymous, large message and
/// array limits) with one subscription (publishing interval 100 ms) whose callback adds one to
/// `counter` per data change. Returns what must live as long as the session: the client, the
/// session, its event loop's task and the client's PKI folder; and the subscription id.
pub async fn counting_session(
    url: &str,
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> (
    Box<dyn std::any::Any + Send>,
    std::sync::Arc<opcua::client::Session>,
    u32,
) {
    use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken};
    use opcua::types::{MessageSecurityMode, UserTokenPolicy};
    let pki = tempfile::tempdir().unwrap();
    let mut client = ClientBuilder::new()
        .application_name("twinloom-bench")
        .application_uri("urn:twinloom:bench")
        .pki_dir(pki.path())
        .session_retry_limit(0)
        .max_message_size(64 * 1024 * 1024)
        .max_chunk_count(8192)
        .max_array_length(1_000_000)
        .client()
        .unwrap();
    let endpoint = (
        url,
        "http://opcfoundation.org/UA/SecurityPolicy#None",
        MessageSecurityMode::None,
        UserTokenPolicy::anonymous(),
    );
    let (session, event_loop) = client
        .connect_to_matching_endpoint(endpoint, IdentityToken::Anonymous)
        .await
        .unwrap();
    let events = event_loop.spawn();
    assert!(session.wait_for_connection().await);
    let subscription = session
        .create_subscription(
            Duration::from_millis(100),
            600,
            20,
            0,
            0,
            true,
            DataChangeCallback::new(move |_, _| {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }),
        )
        .await
        .unwrap();
    (
        Box::new((client, events, pki)),
        std::sync::Arc::clone(&session),
        subscription,
    )
}
