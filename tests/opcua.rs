//! The OPC UA server end to end with async-opcua's client: browse, read units and status codes,
//! subscriptions pushed by the twin, writes by role, security policies and failed logins.

// Tests and benchmarks drive peers and readers from outside the daemon; the rule that every
// task goes through the daemon's supervisor (clippy.toml) is the daemon's.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{config, metric, property, start, wait_for};
use opcua::client::{ClientBuilder, DataChangeCallback, IdentityToken, Password, Session};
use opcua::crypto::SecurityPolicy;
use opcua::types::{
    AttributeId, BrowseDescription, BrowseDirection, BrowseResultMask, DataValue, EUInformation,
    MessageSecurityMode, MonitoredItemCreateRequest, NodeId, NumericRange, QualifiedName, Range,
    ReadValueId, ReferenceTypeId, StatusCode, TimestampsToReturn, UserTokenPolicy, Variant,
    WriteValue,
};
use twinloom::twin::Value;
use twinloom_sim::modbus::{Framing, ModbusServer, SimDevice};

const WAIT: Duration = Duration::from_secs(20);

/// operator / operator-pw and viewer / viewer-pw.
fn users() -> String {
    let hash = |pw: &str| twinloom::northbound::opcua_server::auth::hash_password(pw).unwrap();
    format!(
        r#"users = [
  {{ name = "operator", role = "operator", password_hash = "{}" }},
  {{ name = "viewer", role = "viewer", password_hash = "{}" }},
]"#,
        hash("operator-pw"),
        hash("viewer-pw")
    )
}

struct Rig {
    handles: twinloom::app::Handles,
    device: Arc<SimDevice>,
    server: Option<ModbusServer>,
    url: String,
    ns: u16,
    _pki: tempfile::TempDir,
    client_pki: tempfile::TempDir,
}

async fn start_rig(extra_server_settings: &str) -> Rig {
    start_rig_with(extra_server_settings, "").await
}

/// [`start_rig`] with `extra` (types, assets, plugins) appended to the configuration.
async fn start_rig_with(extra_server_settings: &str, extra: &str) -> Rig {
    let device = SimDevice::new();
    device.set_holding(0, &[0x4228, 0x0000]); // 42.0 °C as f32
    device.set_holding(2, &[1500]); // setpoint 150.0 (scale 0.1)
    let server = common::modbus_tcp(&device).await;
    let pki = tempfile::tempdir().unwrap();
    let config = config(&format!(
        r#"
[opcua_server]
listen = "127.0.0.1:0"
pki_dir = "{pki}"
{extra_server_settings}
{users}

# No stale blips from a late poll on a loaded machine: the statuses seen are the device's.
[twin]
stale_after_polls = 1000

[[sources.modbus]]
id = "plc"
tcp = "{addr}"
poll = "50ms"
timeout = "200ms"
backoff_min = "50ms"
backoff_max = "200ms"

[[types]]
name = "Oven"
description = "A small electric oven"
properties = [
  {{ name = "temperature", data_type = "float", unit = "CEL", range = [0, 300], description = "Chamber temperature" }},
  {{ name = "setpoint", data_type = "float", unit = "°C", range = [0, 300], access = "read-write", limits = [0, 250] }},
  {{ name = "door_open", data_type = "bool" }},
]

[[assets]]
path = "plant/bakery/oven1"
type = "Oven"
source = "plc"
[assets.bindings]
temperature = {{ table = "holding", address = 0, encoding = "f32" }}
setpoint = {{ table = "holding", address = 2, scale = 0.1 }}
door_open = {{ table = "coil", address = 0 }}
{extra}
"#,
        pki = pki.path().display(),
        users = users(),
        addr = server.addr()
    ));
    let handles = start(&config).await;
    let opcua = handles.opcua.clone().expect("server started");
    // Wait for the first poll so that values are good.
    let temperature = property(&handles, "plant/bakery/oven1/temperature");
    wait_for(&handles, temperature, WAIT, |s| s.quality.is_good()).await;
    Rig {
        handles,
        device,
        server: Some(server),
        url: opcua.endpoint_url,
        ns: opcua.namespace_index,
        _pki: pki,
        client_pki: tempfile::tempdir().unwrap(),
    }
}

async fn connect(
    url: &str,
    pki: &Path,
    policy: SecurityPolicy,
    mode: MessageSecurityMode,
    identity: IdentityToken,
) -> Result<Arc<Session>, StatusCode> {
    let mut client = ClientBuilder::new()
        .application_name("twinloom-test-client")
        .application_uri("urn:twinloom:test-client")
        .pki_dir(pki)
        .create_sample_keypair(true)
        .trust_server_certs(true)
        .session_retry_limit(0)
        .client()
        .map_err(|_| StatusCode::BadConfigurationError)?;
    let endpoint = (url, policy.to_uri(), mode, UserTokenPolicy::anonymous());
    let (session, event_loop) = client
        .connect_to_matching_endpoint(endpoint, identity)
        .await
        .map_err(|e| e.status())?;
    let mut event_loop = event_loop.spawn();
    tokio::select! {
        connected = session.wait_for_connection() => {
            if connected { Ok(session) } else { Err(StatusCode::BadConnectionClosed) }
        }
        // The event loop ends only when the connection failed for good.
        status = &mut event_loop => Err(status.unwrap_or(StatusCode::BadUnexpectedError)),
        () = tokio::time::sleep(WAIT) => Err(StatusCode::BadTimeout),
    }
}

fn user(name: &str, password: &str) -> IdentityToken {
    IdentityToken::UserName(name.to_owned(), Password::new(password.to_owned()))
}

async fn read(session: &Session, nodes: &[NodeId]) -> Vec<DataValue> {
    let ids: Vec<ReadValueId> = nodes.iter().cloned().map(ReadValueId::from).collect();
    session
        .read(&ids, TimestampsToReturn::Both, 0.0)
        .await
        .unwrap()
}

async fn browse_names(session: &Session, node: NodeId) -> Vec<(String, NodeId)> {
    let results = session
        .browse(
            &[BrowseDescription {
                node_id: node,
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HierarchicalReferences.into(),
                include_subtypes: true,
                node_class_mask: 0,
                result_mask: BrowseResultMask::All as u32,
            }],
            1000,
            None,
        )
        .await
        .unwrap();
    results[0]
        .references
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|r| (r.browse_name.name.to_string(), r.node_id.node_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browse_read_subscribe_and_write_with_roles() {
    let mut rig = start_rig("auto_trust_clients = true").await;
    let ns = rig.ns;
    let node = |path: &str| NodeId::new(ns, path);
    let operator = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("operator", "operator-pw"),
    )
    .await
    .expect("operator connects with Basic256Sha256 SignAndEncrypt");

    // Browse: Objects → plant → bakery → oven1 → properties.
    let top = browse_names(&operator, NodeId::objects_folder_id()).await;
    assert!(
        top.iter()
            .any(|(name, id)| name == "plant" && *id == node("plant")),
        "{top:?}"
    );
    let bakery = browse_names(&operator, node("plant")).await;
    assert_eq!(bakery, vec![("bakery".to_owned(), node("plant/bakery"))]);
    let oven = browse_names(&operator, node("plant/bakery")).await;
    assert_eq!(oven, vec![("oven1".to_owned(), node("plant/bakery/oven1"))]);
    let mut properties: Vec<String> = browse_names(&operator, node("plant/bakery/oven1"))
        .await
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    properties.sort();
    assert_eq!(properties, ["door_open", "setpoint", "temperature"]);

    // The asset's type is an ObjectType named after the config's type.
    let type_def = operator
        .browse(
            &[BrowseDescription {
                node_id: node("plant/bakery/oven1"),
                browse_direction: BrowseDirection::Forward,
                reference_type_id: ReferenceTypeId::HasTypeDefinition.into(),
                include_subtypes: false,
                node_class_mask: 0,
                result_mask: BrowseResultMask::All as u32,
            }],
            10,
            None,
        )
        .await
        .unwrap();
    let reference = &type_def[0].references.as_ref().unwrap()[0];
    assert_eq!(reference.node_id.node_id, node("types/Oven"));
    assert_eq!(reference.browse_name, QualifiedName::new(ns, "Oven"));

    // Read: value, status, timestamps, engineering units and range.
    let values = read(
        &operator,
        &[
            node("plant/bakery/oven1/temperature"),
            node("plant/bakery/oven1/temperature/EngineeringUnits"),
            node("plant/bakery/oven1/temperature/EURange"),
            node("plant/bakery/oven1/setpoint"),
        ],
    )
    .await;
    assert_eq!(values[0].value, Some(Variant::Double(42.0)));
    assert_eq!(values[0].status, Some(StatusCode::Good));
    assert!(values[0].source_timestamp.is_some() && values[0].server_timestamp.is_some());
    let Some(Variant::ExtensionObject(eu)) = &values[1].value else {
        panic!("{:?}", values[1])
    };
    let eu = eu.inner_as::<EUInformation>().expect("EUInformation");
    assert_eq!(eu.unit_id, 4_408_652); // CEL
    assert_eq!(eu.display_name.text.as_ref(), "°C");
    let Some(Variant::ExtensionObject(range)) = &values[2].value else {
        panic!("{:?}", values[2])
    };
    assert_eq!(
        range.inner_as::<Range>(),
        Some(&Range {
            low: 0.0,
            high: 300.0
        })
    );
    assert_eq!(values[3].value, Some(Variant::Double(150.0)));

    // Subscribe: a change in the device reaches the client through the twin's fan-out.
    let seen: Arc<Mutex<Vec<DataValue>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let subscription = operator
        .create_subscription(
            Duration::from_millis(50),
            100,
            10,
            0,
            0,
            true,
            DataChangeCallback::new(move |value, _item| sink.lock().unwrap().push(value)),
        )
        .await
        .unwrap();
    let created = operator
        .create_monitored_items(
            subscription,
            TimestampsToReturn::Both,
            vec![MonitoredItemCreateRequest::from(node(
                "plant/bakery/oven1/temperature",
            ))],
        )
        .await
        .unwrap();
    assert_eq!(created[0].result.status_code, StatusCode::Good);
    let metrics = rig.handles.metrics.encode();
    assert_eq!(
        metric(&metrics, "twinloom_opcua_sessions"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "twinloom_opcua_monitored_items"),
        1.0,
        "{metrics}"
    );
    rig.device.set_holding(0, &[0x42C8, 0x0000]); // 100.0
    common::eventually(
        WAIT,
        || {
            seen.lock()
                .unwrap()
                .iter()
                .any(|v| v.value == Some(Variant::Double(100.0)))
        },
        || format!("no notification: {:?}", seen.lock().unwrap()),
    )
    .await;

    // Writes: the operator may write the setpoint within limits; it reaches the device.
    let write = |path: &str, value: Variant| WriteValue {
        node_id: node(path),
        attribute_id: AttributeId::Value as u32,
        index_range: NumericRange::None,
        value: DataValue::new_now(value),
    };
    let statuses = operator
        .write(&[
            write("plant/bakery/oven1/setpoint", Variant::Double(180.5)),
            write("plant/bakery/oven1/setpoint", Variant::Double(260.0)),
            write("plant/bakery/oven1/temperature", Variant::Double(1.0)),
        ])
        .await
        .unwrap();
    assert_eq!(
        statuses,
        [
            StatusCode::Good,
            StatusCode::BadOutOfRange,
            StatusCode::BadNotWritable
        ]
    );
    assert_eq!(rig.device.holding(2, 1), vec![1805]);
    let setpoint = property(&rig.handles, "plant/bakery/oven1/setpoint");
    wait_for(&rig.handles, setpoint, WAIT, |s| {
        s.value == Some(Value::Float(180.5))
    })
    .await;

    // A viewer may read but not write.
    let viewer = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Aes256Sha256RsaPss,
        MessageSecurityMode::SignAndEncrypt,
        user("viewer", "viewer-pw"),
    )
    .await
    .expect("viewer connects with Aes256_Sha256_RsaPss");
    let statuses = viewer
        .write(&[write("plant/bakery/oven1/setpoint", Variant::Double(100.0))])
        .await
        .unwrap();
    assert_eq!(statuses, [StatusCode::BadUserAccessDenied]);
    assert_eq!(rig.device.holding(2, 1), vec![1805]);
    assert_eq!(
        read(&viewer, &[node("plant/bakery/oven1/setpoint")]).await[0].status,
        Some(StatusCode::Good)
    );

    // The source goes down: clients see a bad status with the last value.
    rig.server.take().unwrap().stop().await;
    let temperature = property(&rig.handles, "plant/bakery/oven1/temperature");
    wait_for(&rig.handles, temperature, WAIT, |s| !s.quality.is_good()).await;
    // The address space follows the twin through the server's feed task: wait for it there.
    let deadline = tokio::time::Instant::now() + WAIT;
    let value = loop {
        let value = read(&viewer, &[node("plant/bakery/oven1/temperature")])
            .await
            .remove(0);
        if value.status.is_some_and(|s| s.is_bad()) {
            break value;
        }
        assert!(tokio::time::Instant::now() < deadline, "{value:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(value.value, Some(Variant::Double(100.0)));

    let _ = operator.disconnect().await;
    let _ = viewer.disconnect().await;
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// Log lines captured in memory (one test per process under nextest, so a global subscriber is fine).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_none_and_anonymous_are_off_unless_enabled_and_failed_logins_count() {
    let logs = Captured::default();
    let _ = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .try_init();
    let rig = start_rig("auto_trust_clients = true").await;
    let none = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await;
    assert!(
        none.is_err(),
        "security None must not be offered by default"
    );
    let anonymous = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::Sign,
        IdentityToken::Anonymous,
    )
    .await;
    assert!(anonymous.is_err(), "anonymous must be refused by default");
    let failed_before = metric(
        &rig.handles.metrics.encode(),
        "twinloom_opcua_failed_logins_total",
    );
    let wrong = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Aes128Sha256RsaOaep,
        MessageSecurityMode::SignAndEncrypt,
        user("operator", "guess"),
    )
    .await;
    assert!(wrong.is_err());
    let failed = metric(
        &rig.handles.metrics.encode(),
        "twinloom_opcua_failed_logins_total",
    );
    assert_eq!(failed, failed_before + 1.0, "the wrong password is counted");
    // ...and logged with the peer's address.
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains("OPC UA login failed") && l.contains("why=\"wrong password\""));
    assert!(
        line.is_some_and(|l| l.contains("peer=127.0.0.1:")),
        "{text}"
    );
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;

    let open =
        start_rig("allow_security_none = true\nanonymous = true\nauto_trust_clients = true").await;
    let session = connect(
        &open.url,
        open.client_pki.path(),
        SecurityPolicy::None,
        MessageSecurityMode::None,
        IdentityToken::Anonymous,
    )
    .await
    .expect("None + anonymous when enabled");
    let value = &read(
        &session,
        &[NodeId::new(open.ns, "plant/bakery/oven1/temperature")],
    )
    .await[0];
    assert_eq!(value.value, Some(Variant::Double(42.0)));
    let _ = session.disconnect().await;
    open.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_certificates_are_refused_until_trusted() {
    let rig = start_rig("").await;
    let pki = rig._pki.path().to_owned();
    let refused = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("operator", "operator-pw"),
    )
    .await;
    assert!(
        refused.is_err(),
        "an unknown client certificate must be refused"
    );
    // The server made its own certificate and key on first start.
    assert!(pki.join("own/cert.der").is_file() && pki.join("private/private.pem").is_file());
    use twinloom::northbound::opcua_server::pki::{self, Trust};
    let entries = pki::list(&pki).unwrap();
    assert!(
        entries.iter().any(|e| e.trust == Trust::Rejected),
        "{entries:?}"
    );
    let name = entries
        .iter()
        .find(|e| e.trust == Trust::Rejected)
        .unwrap()
        .name
        .clone();
    pki::set_trust(&pki, &name, Trust::Trusted).unwrap();
    let session = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("operator", "operator-pw"),
    )
    .await
    .expect("trusted now");
    let _ = session.disconnect().await;
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// The asyncua client process, driven line by line.
struct PyClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl PyClient {
    fn start(url: &str, user: &str, password: &str, workdir: &Path) -> Self {
        use std::io::BufRead;
        let mut child = std::process::Command::new(common::python())
            .arg(common::repo().join("tests/peers/opcua_client.py"))
            .args([url, user, password])
            .arg(workdir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python starts");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    fn send(&mut self, command: &str) {
        use std::io::Write;
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next JSON answer, waited for off the async workers.
    async fn next_async(self) -> (Self, serde_json::Value) {
        tokio::task::spawn_blocking(move || {
            let answer = self.next();
            (self, answer)
        })
        .await
        .unwrap()
    }

    /// The next JSON answer (within the wait limit).
    fn next(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(WAIT)
            .expect("asyncua client answered");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interoperates_with_asyncua_over_basic256sha256_sign_and_encrypt() {
    let mut rig = start_rig("auto_trust_clients = true").await;
    let workdir = tempfile::tempdir().unwrap();
    let url = rig.url.clone();
    let mut py = tokio::task::spawn_blocking({
        let workdir = workdir.path().to_owned();
        move || {
            let py = PyClient::start(&url, "operator", "operator-pw", &workdir);
            assert_eq!(py.next()["connected"], true);
            py
        }
    })
    .await
    .unwrap();
    let node = |path: &str| format!("ns={};s={path}", rig.ns);

    py.send("browse");
    let browsed = py.next();
    assert_eq!(
        browsed["assets"]["plant/bakery/oven1"],
        serde_json::json!(["door_open", "setpoint", "temperature"]),
        "{browsed}"
    );

    py.send(&format!("read {}", node("plant/bakery/oven1/temperature")));
    let read = py.next();
    assert_eq!(read["value"], 42.0);
    assert_eq!(read["status"], "Good");
    assert_eq!(read["unit"]["unit_id"], 4_408_652);
    assert_eq!(read["unit"]["display_name"], "°C");
    assert_eq!(
        read["unit"]["namespace"],
        "http://www.opcfoundation.org/UA/units/un/cefact"
    );
    assert_eq!(read["range"], serde_json::json!([0.0, 300.0]));

    py.send(&format!(
        "subscribe {}",
        node("plant/bakery/oven1/temperature")
    ));
    // The acknowledgement and the initial value may arrive in either order.
    let first_two = [py.next(), py.next()];
    assert!(
        first_two.iter().any(|m| m["subscribed"] == true),
        "{first_two:?}"
    );
    assert!(
        first_two.iter().any(|m| m["notification"] == 42.0),
        "{first_two:?}"
    );
    rig.device.set_holding(0, &[0x4348, 0x0000]); // 200.0
    let (py, answer) = py.next_async().await;
    assert_eq!(answer["notification"], 200.0);

    // The source goes down: the subscriber sees the bad status, with the last value.
    rig.server.take().unwrap().stop().await;
    let (mut py, answer) = py.next_async().await;
    assert!(
        answer["status"].as_str().unwrap().starts_with("Bad"),
        "{answer}"
    );
    assert_eq!(answer["notification"], 200.0);
    py.send("quit");
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncua_sees_the_whole_demo_plant_live_and_a_device_outage() {
    use twinloom_sim::plant::Plant;
    tokio::task::spawn_blocking(twinloom::demo::build_plugins)
        .await
        .unwrap()
        .unwrap();
    let mut plant = Plant::start().await.unwrap();
    let mut config = twinloom::demo::config().unwrap();
    twinloom::demo::attach(&mut config, &plant);
    let state = tempfile::tempdir().unwrap();
    config.daemon.state_dir = Some(state.path().to_owned());
    config.opcua_server.as_mut().unwrap().listen.set_port(0);
    config.admin_http.as_mut().unwrap().listen.set_port(0);
    let handles = start(&config).await;
    let server = handles.opcua.clone().unwrap();
    // Every property good in the twin first: the plant's 32, the control gate's `armed` and the
    // three of each of the four plugins' status objects.
    common::eventually(
        WAIT,
        || handles.twin.quality_counts() == (45, 0, 0),
        || format!("demo never fully good: {:?}", handles.twin.quality_counts()),
    )
    .await;
    let workdir = tempfile::tempdir().unwrap();
    let url = server.endpoint_url.clone();
    let work = workdir.path().to_owned();
    let mut py = tokio::task::spawn_blocking(move || {
        let py = PyClient::start(&url, "operator", "operator", &work);
        assert_eq!(py.next()["connected"], true);
        py
    })
    .await
    .unwrap();

    // Every demo asset, with every property of its type, all good.
    py.send("browse");
    let assets = py.next()["assets"].clone();
    let model = handles.twin.model();
    assert_eq!(
        assets.as_object().unwrap().len(),
        model.assets().len(),
        "{assets}"
    );
    for asset in model.assets() {
        let mut names: Vec<String> = model
            .type_of(asset)
            .properties
            .iter()
            .map(|p| p.name.clone())
            .collect();
        names.sort();
        assert_eq!(
            assets[asset.path.as_str()],
            serde_json::json!(names),
            "{}",
            asset.path
        );
        for name in names {
            py.send(&format!(
                "read ns={};s={}/{name}",
                server.namespace_index, asset.path
            ));
            let read = py.next();
            assert_eq!(read["status"], "Good", "{}/{name}: {read}", asset.path);
        }
    }

    // Values change over time: the energy meter's kWh keeps rising.
    let (py_back, first, second) = tokio::task::spawn_blocking({
        let node = format!(
            "ns={};s=demo-plant/energy/main/energy",
            server.namespace_index
        );
        move || {
            py.send(&format!("subscribe {node}"));
            let mut values = Vec::new();
            while values.len() < 2 {
                let message = py.next();
                if let Some(v) = message["notification"].as_f64() {
                    values.push(v);
                }
            }
            (py, values[0], values[1])
        }
    })
    .await
    .unwrap();
    py = py_back;
    assert!(second > first, "energy {first} → {second}");

    // The line PLC goes away: its properties go bad within the timeout; back, they are good again.
    let addr = plant.line_plc.addr();
    plant.line_plc.halt().await;
    let good_count = property(&handles, "demo-plant/line1/filler/good_count");
    let went_bad = tokio::time::Instant::now();
    wait_for(&handles, good_count, WAIT, |s| !s.quality.is_good()).await;
    // Timeout 500 ms + poll 250 ms, with slack for a loaded CI machine.
    assert!(
        went_bad.elapsed() < Duration::from_millis(500 + 250 + 2000),
        "{:?}",
        went_bad.elapsed()
    );
    py.send(&format!(
        "read ns={};s=demo-plant/line1/filler/good_count",
        server.namespace_index
    ));
    let (mut py, read) = py.next_async().await;
    assert!(
        read["status"].as_str().unwrap().starts_with("Bad"),
        "{read}"
    );
    plant.line_plc = ModbusServer::bind(
        addr,
        Framing::Tcp,
        HashMap::from([(1, Arc::clone(&plant.devices.filler))]),
    )
    .await
    .unwrap();
    wait_for(&handles, good_count, WAIT, |s| s.quality.is_good()).await;
    py.send(&format!(
        "read ns={};s=demo-plant/line1/filler/good_count",
        server.namespace_index
    ));
    let (mut py, read) = py.next_async().await;
    assert_eq!(read["status"], "Good");
    py.send("quit");
    handles.supervisor.shutdown(Duration::from_secs(5)).await;
    plant.stop().await;
}

/// The probe plugin component (`tests/plugins/probe`), built like the other plugins.
async fn probe() -> std::path::PathBuf {
    let dir = common::repo().join("tests/plugins/probe");
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(common::repo().join("target/wasm")),
        ..Default::default()
    };
    tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
        .await
        .unwrap()
        .expect("the probe plugin builds (tests/run.sh builds it first)")
}

/// A derived value's quality, as its plugin reports it, is what an OPC UA client reads: bad as
/// Bad, uncertain as `Uncertain_SubNormal` (derived from inputs that are not all good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_bad_and_uncertain_outputs_read_as_such_over_opcua() {
    let dir = common::repo().join("tests/plugins/probe");
    let options = twinloom::plugins::build::BuildOptions {
        target_dir: Some(common::repo().join("target/wasm")),
        ..Default::default()
    };
    let probe =
        tokio::task::spawn_blocking(move || twinloom::plugins::build::build(&dir, &options))
            .await
            .unwrap()
            .expect("the probe plugin builds (tests/run.sh builds it first)");
    let rig = start_rig_with(
        "auto_trust_clients = true",
        &format!(
            r#"
[[types]]
name = "Derived"
properties = [
  {{ name = "bad", data_type = "float" }},
  {{ name = "uncertain", data_type = "float" }},
]

[[assets]]
path = "plant/bakery/probe"
type = "Derived"
bindings.bad = {{ plugin = "probe" }}
bindings.uncertain = {{ plugin = "probe" }}

[[plugins]]
name = "probe"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "50ms"
config = {{ behaviour = "quality" }}
"#,
            file = probe.display()
        ),
    )
    .await;
    let bad = property(&rig.handles, "plant/bakery/probe/bad");
    wait_for(&rig.handles, bad, WAIT, |s| {
        s.value.is_some() && s.quality.level == twinloom::twin::QualityLevel::Bad
    })
    .await;
    let uncertain = property(&rig.handles, "plant/bakery/probe/uncertain");
    wait_for(&rig.handles, uncertain, WAIT, |s| {
        s.quality.level == twinloom::twin::QualityLevel::Uncertain
    })
    .await;
    let viewer = connect(
        &rig.url,
        rig.client_pki.path(),
        SecurityPolicy::Basic256Sha256,
        MessageSecurityMode::SignAndEncrypt,
        user("viewer", "viewer-pw"),
    )
    .await
    .expect("viewer connects");
    let node = |path: &str| NodeId::new(rig.ns, path);
    let values = read(
        &viewer,
        &[
            node("plant/bakery/probe/bad"),
            node("plant/bakery/probe/uncertain"),
        ],
    )
    .await;
    assert_eq!(values[0].status, Some(StatusCode::Bad), "{:?}", values[0]);
    assert_eq!(
        values[0].value,
        Some(Variant::Double(1.0)),
        "the last value is kept"
    );
    assert_eq!(
        values[1].status,
        Some(StatusCode::UncertainSubNormal),
        "{:?}",
        values[1]
    );
    assert_eq!(values[1].value, Some(Variant::Double(2.0)));
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// Every plugin's state is an object on OPC UA (`twinloom/plugins/<name>`: state, last fault,
/// failures in a row) and a metric; its `ClearQuarantine` method starts a quarantined plugin
/// again, for operators only, and says `Bad_InvalidState` for a plugin that is not quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugins_state_is_visible_and_an_operator_clears_its_quarantine() {
    let probe = probe().await;
    let rig = start_rig_with(
        "auto_trust_clients = true",
        &format!(
            r#"
[[types]]
name = "Derived"
properties = [
  {{ name = "bad", data_type = "float" }},
  {{ name = "uncertain", data_type = "float" }},
]

[[assets]]
path = "plant/bakery/probe"
type = "Derived"
bindings.bad = {{ plugin = "healthy" }}
bindings.uncertain = {{ plugin = "healthy" }}

[[plugins]]
name = "sleeper"
file = "{file}"
deadline = "200ms"
tick = "20ms"
quarantine_after = 1
config = {{ behaviour = "sleep" }}

[[plugins]]
name = "healthy"
file = "{file}"
# A generous deadline: a loaded machine must not turn a slow call into a fault.
deadline = "10s"
tick = "50ms"
config = {{ behaviour = "quality" }}
"#,
            file = probe.display()
        ),
    )
    .await;
    let state = property(&rig.handles, "twinloom/plugins/sleeper/state");
    let quarantined = Some(Value::String("quarantined".into()));
    wait_for(&rig.handles, state, WAIT, |s| s.value == quarantined).await;
    let running = property(&rig.handles, "twinloom/plugins/healthy/state");
    wait_for(&rig.handles, running, WAIT, |s| {
        s.value == Some(Value::String("running".into()))
    })
    .await;
    let text = rig.handles.metrics.encode();
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_state{plugin="sleeper",state="quarantined"}"#
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            r#"twinloom_plugin_state{plugin="sleeper",state="running"}"#
        ),
        0.0
    );

    let node = |path: &str| NodeId::new(rig.ns, path);
    let connect_as = |name: &'static str, password: &'static str| {
        connect(
            &rig.url,
            rig.client_pki.path(),
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            user(name, password),
        )
    };
    let viewer = connect_as("viewer", "viewer-pw")
        .await
        .expect("viewer connects");
    let values = read(
        &viewer,
        &[
            node("twinloom/plugins/sleeper/state"),
            node("twinloom/plugins/sleeper/last_fault"),
            node("twinloom/plugins/sleeper/failures"),
        ],
    )
    .await;
    assert_eq!(values[0].value, Some(Variant::from("quarantined")));
    let Some(Variant::String(fault)) = &values[1].value else {
        panic!("{:?}", values[1])
    };
    assert!(fault.as_ref().contains("may not block"), "{fault}");
    assert_eq!(values[2].value, Some(Variant::UInt64(1)));

    let clear = |plugin: &str| {
        (
            node(&format!("twinloom/plugins/{plugin}")),
            node(&format!("twinloom/plugins/{plugin}/ClearQuarantine")),
            None::<Vec<Variant>>,
        )
    };
    let refused = viewer.call_one(clear("sleeper")).await.unwrap();
    assert_eq!(refused.status_code, StatusCode::BadUserAccessDenied);
    let operator = connect_as("operator", "operator-pw")
        .await
        .expect("operator connects");
    let not_quarantined = operator.call_one(clear("healthy")).await.unwrap();
    assert_eq!(not_quarantined.status_code, StatusCode::BadInvalidState);
    let blocked = r#"twinloom_plugin_failures_total{plugin="sleeper",kind="blocked"}"#;
    assert_eq!(metric(&rig.handles.metrics.encode(), blocked), 1.0);
    let cleared = operator.call_one(clear("sleeper")).await.unwrap();
    assert_eq!(cleared.status_code, StatusCode::Good);
    // It starts again, sleeps again, and is quarantined again after its one allowed fault.
    common::eventually(
        WAIT,
        || metric(&rig.handles.metrics.encode(), blocked) == 2.0,
        || rig.handles.metrics.encode(),
    )
    .await;
    wait_for(&rig.handles, state, WAIT, |s| s.value == quarantined).await;
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// The control gate's status object (`twinloom/control`) shows whether the plant is armed; its
/// `Arm` method is an operator's, its `Disarm` method every session's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_arms_the_plant_and_any_session_disarms_it() {
    let rig = start_rig_with("auto_trust_clients = true", "").await;
    let node = |path: &str| NodeId::new(rig.ns, path);
    let connect_as = |name: &'static str, password: &'static str| {
        connect(
            &rig.url,
            rig.client_pki.path(),
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            user(name, password),
        )
    };
    let call = |method: &str| {
        (
            node("twinloom/control"),
            node(&format!("twinloom/control/{method}")),
            None::<Vec<Variant>>,
        )
    };
    let armed = node("twinloom/control/armed");
    let viewer = connect_as("viewer", "viewer-pw")
        .await
        .expect("viewer connects");
    assert_eq!(
        read(&viewer, std::slice::from_ref(&armed)).await[0].value,
        Some(Variant::Boolean(false))
    );
    let refused = viewer.call_one(call("Arm")).await.unwrap();
    assert_eq!(refused.status_code, StatusCode::BadUserAccessDenied);
    assert!(!rig.handles.control.is_armed());
    let operator = connect_as("operator", "operator-pw")
        .await
        .expect("operator connects");
    assert_eq!(
        operator.call_one(call("Arm")).await.unwrap().status_code,
        StatusCode::Good
    );
    assert!(rig.handles.control.is_armed());
    assert_eq!(
        read(&viewer, std::slice::from_ref(&armed)).await[0].value,
        Some(Variant::Boolean(true))
    );
    assert_eq!(
        metric(&rig.handles.metrics.encode(), "twinloom_control_armed"),
        1.0
    );
    assert_eq!(
        viewer.call_one(call("Disarm")).await.unwrap().status_code,
        StatusCode::Good
    );
    assert!(!rig.handles.control.is_armed());
    assert_eq!(
        read(&viewer, std::slice::from_ref(&armed)).await[0].value,
        Some(Variant::Boolean(false))
    );
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}

/// Select-before-operate: a property with `select_before_operate` takes a write only from the
/// user who selected it (the asset's `Select_<property>` method, operators only), once, within
/// the select's time; another user's valid select makes a select `Bad_InvalidState`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_select_before_operate_setpoint_takes_one_write_from_its_selector() {
    use twinloom::control::Origin;
    let rig = start_rig_with(
        "auto_trust_clients = true",
        r#"
[[types]]
name = "Valve"
properties = [{ name = "position", data_type = "float", unit = "%", access = "read-write", select_before_operate = "300ms" }]

[[assets]]
path = "plant/bakery/valve1"
type = "Valve"
source = "plc"
bindings.position = { table = "holding", address = 40 }
"#,
    )
    .await;
    let node = |path: &str| NodeId::new(rig.ns, path);
    let connect_as = |name: &'static str, password: &'static str| {
        connect(
            &rig.url,
            rig.client_pki.path(),
            SecurityPolicy::Basic256Sha256,
            MessageSecurityMode::SignAndEncrypt,
            user(name, password),
        )
    };
    let operator = connect_as("operator", "operator-pw")
        .await
        .expect("operator connects");
    let viewer = connect_as("viewer", "viewer-pw")
        .await
        .expect("viewer connects");
    let select = (
        node("plant/bakery/valve1"),
        node("plant/bakery/valve1/position/Select"),
        None::<Vec<Variant>>,
    );
    let write = |value: f64| {
        let operator = &operator;
        let position = node("plant/bakery/valve1/position");
        async move {
            operator
                .write(&[WriteValue {
                    node_id: position,
                    attribute_id: AttributeId::Value as u32,
                    index_range: NumericRange::None,
                    value: DataValue::new_now(Variant::Double(value)),
                }])
                .await
                .unwrap()[0]
        }
    };
    // No select: refused, the PLC untouched.
    assert_eq!(write(10.0).await, StatusCode::BadRequestNotAllowed);
    assert_eq!(rig.device.holding(40, 1), [0]);
    assert_eq!(
        viewer.call_one(select.clone()).await.unwrap().status_code,
        StatusCode::BadUserAccessDenied
    );
    // Selected: one write goes through, the next needs a new select.
    assert_eq!(
        operator.call_one(select.clone()).await.unwrap().status_code,
        StatusCode::Good
    );
    assert_eq!(write(20.0).await, StatusCode::Good);
    assert_eq!(rig.device.holding(40, 1), [20]);
    assert_eq!(write(30.0).await, StatusCode::BadRequestNotAllowed);
    // A select not used within its 300 ms expires.
    assert_eq!(
        operator.call_one(select.clone()).await.unwrap().status_code,
        StatusCode::Good
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(write(40.0).await, StatusCode::BadRequestNotAllowed);
    assert_eq!(rig.device.holding(40, 1), [20]);
    // Another user's valid select: the operator's select is refused.
    let position = property(&rig.handles, "plant/bakery/valve1/position");
    rig.handles
        .control
        .select(
            position,
            Origin::OpcUa {
                user: "engineer".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        operator.call_one(select).await.unwrap().status_code,
        StatusCode::BadInvalidState
    );
    rig.handles
        .supervisor
        .shutdown(Duration::from_secs(5))
        .await;
}
