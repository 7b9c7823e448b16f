//! The edge node's life: sessions (`Disconnected { backoff } → Connecting → waiting for the
//! primary host → Online`), births, the live and historical streams from the change log,
//! cursor markers, commands. Sparkplug 3.0 chapters 5 and 6; the tck-ids are named where a
//! rule is kept.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use prost::Message as _;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::events::{self, SparkplugMetrics};
use super::payload::{self, Describe, Metric, MetricValue, Payload};
use super::published::Published;
use super::{CURSOR, Devices, REBIRTH, alias_of, device_topic, marker_topic, node_topic};
use crate::change_log::{ChangeLog, Entry, Reader, Record};
use crate::config::sparkplug::{MqttServer, SparkplugConfig};
use crate::control::{ControlError, ControlHandle, Origin};
use crate::runtime::{Backoff, ReadyFlag};
use crate::twin::{PropertyId, QualityLevel, QualityReason, Sample, Twin};

/// Capacity of rumqttc's request queue (publishes waiting for the event loop).
const REQUEST_QUEUE: usize = 1024;

/// Incoming publishes (commands, STATE) waiting for the node; more are dropped and counted.
const INCOMING_QUEUE: usize = 256;

/// Largest MQTT packet sent or accepted (births of big plants are large).
const MAX_PACKET: usize = 64 * 1024 * 1024;

/// Historical records read per window when `backlog_max_rate` is 0 (no cap).
const UNCAPPED_BACKLOG_CHUNK: usize = 50_000;

/// How long a graceful stop waits for the NDEATH's PUBACK and the DISCONNECT.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How often the cursor is committed at most (and at every stop).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// Node metric aliases (below [`super::ALIAS_BASE`]).
const ALIAS_VERSION: u64 = 1;
const ALIAS_ARMED: u64 = 2;
const ALIAS_GAPS: u64 = 3;

/// Node metric names besides `bdSeq` and [`REBIRTH`].
const ARMED: &str = "Twinloom/Armed";
const GAPS: &str = "Twinloom/Change Log Gaps";

/// What `start` hands the node.
pub(super) struct Parts {
    pub config: Arc<SparkplugConfig>,
    pub servers: Vec<MqttServer>,
    pub password: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub twin: Arc<Twin>,
    pub control: ControlHandle,
    pub change_log: Option<ChangeLog>,
    pub state_dir: PathBuf,
    pub metrics: SparkplugMetrics,
    pub ready: ReadyFlag,
}

/// The edge node across sessions.
pub(super) struct Node {
    parts: Parts,
    devices: Devices,
    /// Property of each change log series of the current model.
    series: HashMap<u32, PropertyId>,
    /// The control gate's `armed` property, when there is one.
    armed: Option<PropertyId>,
    /// Offsets whose values were written to a connection and are not yet confirmed: one
    /// written again (after a lost PUBACK) is counted as a duplicate.
    published: Published,
    /// Offsets of the gap records counted in `gaps` and not yet confirmed (each counted once).
    gap_records: Published,
    /// Changes the log lost, as published in `Twinloom/Change Log Gaps`.
    gaps: u64,
    /// The offset confirmed by the last marker's PUBACK (kept across sessions), and the one
    /// last committed as the cursor.
    confirmed: Option<u64>,
    committed: u64,
    /// A bdSeq whose CONNECT was never accepted (no CONNACK: the broker registered no Will),
    /// used again by the next attempt.
    unused_bd_seq: Option<u8>,
    /// Whether the current session got its CONNACK.
    accepted: bool,
}

/// How a session ended.
enum Ended {
    /// Shutdown: NDEATH and DISCONNECT were sent.
    Stopped,
    /// The primary host went offline: NDEATH sent; start over at once.
    HostOffline,
    /// The connection failed or was lost.
    Lost(String),
}

/// Events the MQTT driver forwards that the session needs in order: connection acknowledged,
/// publishes written to the connection (their packet ids, 0 at QoS 0), PUBACKs, DISCONNECT sent.
#[derive(Debug)]
enum Control {
    ConnAck,
    Sent(u16),
    PubAck(u16),
    Disconnected,
}

/// A publish handed to the MQTT client: at QoS 0 until it is written, at QoS 1 until its PUBACK.
#[derive(Debug, Clone)]
enum Pending {
    /// A QoS 0 message (births, data): the change log offsets of its metric values (none for
    /// births and node metrics).
    Data(Vec<u64>),
    /// A cursor marker: everything before `offset` is published.
    Marker { offset: u64, sent: Instant },
    /// The graceful NDEATH.
    Death,
}

/// Metric values waiting for one device's next DDATA, with the change log offsets they come from.
#[derive(Debug, Clone, Default)]
struct Batch {
    metrics: Vec<Metric>,
    offsets: Vec<u64>,
}

impl Batch {
    /// Metrics that come from no change log record (births, node metrics).
    fn of(metrics: Vec<Metric>) -> Self {
        Self {
            metrics,
            offsets: Vec::new(),
        }
    }

    fn push(&mut self, offset: u64, metric: Metric) {
        self.metrics.push(metric);
        self.offsets.push(offset);
    }

    fn len(&self) -> usize {
        self.metrics.len()
    }

    fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    fn clear(&mut self) {
        self.metrics.clear();
        self.offsets.clear();
    }
}

/// One session's publishing state.
struct Session {
    client: AsyncClient,
    bd_seq: u8,
    /// The next `seq` (0–255; `tck-id-payloads-sequence-num-incrementing`).
    seq: u8,
    /// Live DDATA waiting for the window, per device.
    live: Vec<Batch>,
    /// Historical DDATA being gathered, per device.
    historical: Vec<Batch>,
    /// Devices currently dead (DDEATH sent: every source feeding them is lost).
    dead: Vec<bool>,
    /// Publishes not yet written to the network, in order (their packet ids come later).
    unsent: VecDeque<Pending>,
    /// QoS 1 publishes by packet id, waiting for their PUBACK.
    inflight: HashMap<u16, Pending>,
    /// DCMD writes waiting for the gate's answer.
    commands: FuturesUnordered<oneshot::Receiver<Result<(), ControlError>>>,
}

impl Node {
    pub fn new(parts: Parts) -> Self {
        let model = parts.twin.model();
        let devices = Devices::of(model);
        let armed = model.property_by_path(&crate::twin::spec::control_status_path("armed"));
        let series = match &parts.change_log {
            Some(log) => crate::change_log::SeriesTable::load(log.dir())
                .map(|table| {
                    table
                        .paths()
                        .into_iter()
                        .filter_map(|(id, path)| Some((id, model.property_by_path(&path)?)))
                        .collect()
                })
                .unwrap_or_default(),
            None => HashMap::new(),
        };
        Self {
            parts,
            devices,
            series,
            armed,
            published: Published::default(),
            gap_records: Published::default(),
            gaps: 0,
            confirmed: None,
            committed: 0,
            unused_bd_seq: None,
            accepted: false,
        }
    }

    /// Sessions until `token` is cancelled: each failure waits the shared backoff, then the
    /// next server in order.
    pub async fn run(mut self, token: CancellationToken) -> anyhow::Result<()> {
        // The cursor, or, the first time, the log's end (its history from before Sparkplug was
        // configured is not published), committed at once: what changes from now on while no
        // session is up is backlog.
        if let Some(log) = &self.parts.change_log {
            let cursor = crate::change_log::cursors(log.dir())
                .ok()
                .and_then(|c| c.get(CURSOR).copied());
            let start = cursor.unwrap_or(*log.subscribe().borrow());
            if cursor.is_none() {
                commit(log, start);
            }
            self.confirmed = Some(start);
            self.committed = start;
        }
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(30));
        let mut server_index = 0;
        let mut first = true;
        loop {
            if token.is_cancelled() {
                return Ok(());
            }
            if !first {
                events::Reconnecting.emit(&self.parts.metrics);
            }
            first = false;
            let server = self.parts.servers[server_index % self.parts.servers.len()].clone();
            match self.session(&server, &token, &mut backoff).await {
                Ended::Stopped => return Ok(()),
                Ended::HostOffline => continue,
                Ended::Lost(error) => {
                    let delay = backoff.next_delay();
                    events::SessionLost {
                        server: &server_label(&server),
                        error: &error,
                        retry_in: delay,
                    }
                    .emit(&self.parts.ready);
                    server_index += 1;
                    tokio::select! {
                        () = token.cancelled() => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn options(&self, server: &MqttServer, bd_seq: u8) -> MqttOptions {
        let config = &self.parts.config;
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("twinloom-{}-{}", config.group_id, config.edge_node_id));
        let mut options = MqttOptions::new(client_id, server.host.clone(), server.port);
        options.set_keep_alive(config.keep_alive);
        // tck-id-principles-persistence-clean-session-311: Clean Session true.
        options.set_clean_session(true);
        options.set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some(user) = &config.username {
            options.set_credentials(
                user.clone(),
                self.parts.password.clone().unwrap_or_default(),
            );
        }
        // tck-id-payloads-ndeath-will-message(-qos, -retain): NDEATH as the Will, QoS 1, not
        // retained, with this CONNECT's bdSeq and no seq (tck-id-payloads-ndeath-seq).
        options.set_last_will(LastWill::new(
            node_topic(config, "NDEATH"),
            death_payload(bd_seq),
            QoS::AtLeastOnce,
            false,
        ));
        if server.tls
            && let Some(tls) = &self.parts.tls
        {
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::clone(tls)),
            ));
        }
        options
    }

    /// One MQTT session on `server`, from CONNECT to its end.
    async fn session(
        &mut self,
        server: &MqttServer,
        token: &CancellationToken,
        backoff: &mut Backoff,
    ) -> Ended {
        let bd_seq = match self.unused_bd_seq.take() {
            Some(v) => v,
            None => match super::next_bd_seq(&self.parts.state_dir) {
                Ok(v) => v,
                Err(e) => return Ended::Lost(format!("cannot persist bdSeq: {e}")),
            },
        };
        self.accepted = false;
        let (client, eventloop) = AsyncClient::new(self.options(server, bd_seq), REQUEST_QUEUE);
        let (control_tx, mut control_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming_rx) = mpsc::channel(INCOMING_QUEUE);
        let mut session = Session {
            client,
            bd_seq,
            seq: 0,
            live: vec![Batch::default(); self.devices.devices.len()],
            historical: vec![Batch::default(); self.devices.devices.len()],
            dead: vec![false; self.devices.devices.len()],
            unsent: VecDeque::new(),
            inflight: HashMap::new(),
            commands: FuturesUnordered::new(),
        };
        let label = server_label(server);
        let ended = {
            let driver = drive(eventloop, control_tx, incoming_tx);
            let logic = self.online(
                &mut session,
                &mut control_rx,
                incoming_rx,
                token,
                backoff,
                &label,
            );
            tokio::pin!(driver);
            tokio::pin!(logic);
            tokio::select! {
            error = &mut driver => Ended::Lost(error),
            ended = &mut logic => {
                // The logic ended (stop or host offline) after asking for DISCONNECT: let the
                // driver send it, briefly.
                let _ = tokio::time::timeout(STOP_GRACE, &mut driver).await;
                ended
            }
            }
        };
        // What the driver wrote before the end counts as written (duplicates are exact).
        while let Ok(event) = control_rx.try_recv() {
            if let Control::Sent(pkid) = event {
                self.sent(&mut session, pkid);
            }
        }
        self.commit(true);
        if !self.accepted {
            self.unused_bd_seq = Some(bd_seq);
        }
        ended
    }

    /// Commits the confirmed offset as the cursor when it moved: at most every
    /// [`COMMIT_INTERVAL`], or now with `force`.
    fn commit(&mut self, force: bool) {
        let (Some(log), Some(confirmed)) = (&self.parts.change_log, self.confirmed) else {
            return;
        };
        if confirmed > self.committed || (force && confirmed != self.committed) {
            commit(log, confirmed);
            self.committed = confirmed;
        }
    }

    /// The session's logic: wait for CONNACK, subscribe, wait for the primary host, birth,
    /// then stream until stop, host offline or an error.
    async fn online(
        &mut self,
        s: &mut Session,
        control: &mut mpsc::UnboundedReceiver<Control>,
        mut incoming: mpsc::Receiver<rumqttc::Publish>,
        token: &CancellationToken,
        backoff: &mut Backoff,
        label: &str,
    ) -> Ended {
        let config = Arc::clone(&self.parts.config);
        loop {
            tokio::select! {
                () = token.cancelled() => return Ended::Stopped,
                event = control.recv() => match event {
                    Some(Control::ConnAck) => {
                        self.accepted = true;
                        break;
                    }
                    Some(_) => {}
                    None => return Ended::Lost("the MQTT event loop ended".into()),
                },
            }
        }
        backoff.reset();
        // tck-id-message-flow-edge-node-ncmd-subscribe and DCMD for every device, QoS 1.
        let mut topics = vec![
            node_topic(&config, "NCMD"),
            format!("{}/+", device_topic(&config, "DCMD", "")).replace("//+", "/+"),
        ];
        if let Some(host) = &config.primary_host_id {
            topics.push(format!("{}/STATE/{host}", super::NAMESPACE));
        }
        for topic in topics {
            if let Err(e) = s.client.subscribe(topic, QoS::AtLeastOnce).await {
                return Ended::Lost(e.to_string());
            }
        }
        // The primary host (tck-id-message-flow-edge-node-birth-publish-phid-wait*).
        let mut host = HostState::default();
        if let Some(id) = &config.primary_host_id {
            events::WaitingForHost { host: id }.emit(&self.parts.ready);
            loop {
                tokio::select! {
                    () = token.cancelled() => return self.stop(s, control, None).await,
                    event = control.recv() => if event.is_none() {
                        return Ended::Lost("the MQTT event loop ended".into());
                    },
                    publish = incoming.recv() => {
                        let Some(publish) = publish else {
                            return Ended::Lost("the MQTT event loop ended".into());
                        };
                        if host.observe(&publish, id) == Some(true) {
                            break;
                        }
                    }
                }
            }
        }
        let Some(log) = self.parts.change_log.clone() else {
            events::LogUnreadable {
                error: "the change log did not open",
            }
            .emit(&self.parts.ready);
            token.cancelled().await;
            return self.stop(s, control, None).await;
        };
        let mut written = log.subscribe();
        let boundary = *written.borrow_and_update();
        let cursor = self.confirmed.unwrap_or(boundary).min(boundary);
        if let Err(e) = self.births(s).await {
            return Ended::Lost(e);
        }
        events::Online {
            server: label,
            bd_seq: s.bd_seq,
            devices: self.devices.devices.len(),
            backlog: boundary - cursor,
        }
        .emit(&self.parts.ready);
        let mut history = (cursor < boundary).then(|| log.reader(cursor));
        let mut live = log.reader(boundary);
        let mut last_commit = Instant::now();
        let mut marked = cursor;
        let mut tick = tokio::time::interval(config.report_window);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let rate_per_window = (f64::from(config.backlog_max_rate)
            * config.report_window.as_secs_f64())
        .ceil() as usize;
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    let result = self.flush_all(s).await;
                    let at = history.as_ref().map_or(live.position(), Reader::position);
                    let mark = if result.is_ok() && at > marked { Some(at) } else { None };
                    return self.stop(s, control, mark).await;
                }
                event = control.recv() => match event {
                    Some(Control::Sent(pkid)) => self.sent(s, pkid),
                    Some(Control::PubAck(pkid)) => {
                        if let Some(Pending::Marker { offset, sent }) = s.inflight.remove(&pkid) {
                            self.parts.metrics.puback.observe(sent.elapsed().as_secs_f64());
                            self.confirm(offset);
                            if last_commit.elapsed() >= COMMIT_INTERVAL {
                                self.commit(false);
                                last_commit = Instant::now();
                            }
                        }
                    }
                    Some(_) => {}
                    None => return Ended::Lost("the MQTT event loop ended".into()),
                },
                publish = incoming.recv() => {
                    let Some(publish) = publish else {
                        return Ended::Lost("the MQTT event loop ended".into());
                    };
                    match self.command(s, &publish, &mut host).await {
                        Ok(true) => {
                            let id = config.primary_host_id.as_deref().unwrap_or_default();
                            let ended = self.stop(s, control, None).await;
                            events::HostOffline { host: id }.emit(&self.parts.ready);
                            return match ended {
                                Ended::Stopped => Ended::HostOffline,
                                other => other,
                            };
                        }
                        Ok(false) => {}
                        Err(e) => return Ended::Lost(e),
                    }
                }
                Some(outcome) = s.commands.next(), if !s.commands.is_empty() => {
                    events::CommandDecided { written: matches!(outcome, Ok(Ok(()))) }
                        .emit(&self.parts.metrics);
                }
                read = live.next_wait(&mut written) => match read {
                    Ok(entry) => {
                        if let Err(e) = self.live_entry(s, entry).await {
                            return Ended::Lost(e);
                        }
                    }
                    Err(e) => {
                        events::LogUnreadable { error: &e.to_string() }.emit(&self.parts.ready);
                        token.cancelled().await;
                        return self.stop(s, control, None).await;
                    }
                },
                _ = tick.tick() => {
                    if let Err(e) = self.flush(s, false).await {
                        return Ended::Lost(e);
                    }
                    if let Some(reader) = history.as_mut() {
                        let budget = if rate_per_window == 0 { UNCAPPED_BACKLOG_CHUNK } else { rate_per_window };
                        match self.backlog(s, reader, boundary, budget).await {
                            Ok(true) => history = None,
                            Ok(false) => {}
                            Err(e) => return Ended::Lost(e),
                        }
                    }
                    let at = history.as_ref().map_or(live.position(), Reader::position);
                    self.parts.metrics.backlog.set(
                        i64::try_from(history.as_ref().map_or(0, |r| boundary.saturating_sub(r.position())))
                            .unwrap_or(i64::MAX),
                    );
                    if history.is_none() {
                        self.parts.metrics.backlog_age.set(0);
                    }
                    if at > marked {
                        if let Err(e) = self.marker(s, at).await {
                            return Ended::Lost(e);
                        }
                        marked = at;
                    }
                }
            }
        }
    }

    /// NBIRTH (seq 0, bdSeq, `Node Control/Rebirth` false, node metrics) and a DBIRTH per device
    /// with every metric's current value, name, alias, datatype and properties; then DDEATH for
    /// devices whose every source is lost.
    async fn births(&mut self, s: &mut Session) -> Result<(), String> {
        let config = Arc::clone(&self.parts.config);
        let now = SystemTime::now();
        s.seq = 0;
        for buffer in s.live.iter_mut().chain(s.historical.iter_mut()) {
            buffer.clear();
        }
        let armed = self
            .armed
            .map(|p| self.parts.twin.sample(p))
            .and_then(|sample| sample.value.as_ref().map(payload::metric_value));
        let metrics = vec![
            payload::bd_seq_metric(s.bd_seq),
            // tck-id-operational-behavior-data-commands-rebirth-name-aliases: never aliased.
            node_metric(
                (Some(REBIRTH), None),
                payload::datatype::BOOLEAN,
                Some(MetricValue::BooleanValue(false)),
                now,
            ),
            node_metric(
                (Some("Twinloom/Version"), Some(ALIAS_VERSION)),
                payload::datatype::STRING,
                Some(MetricValue::StringValue(
                    env!("CARGO_PKG_VERSION").to_owned(),
                )),
                now,
            ),
            node_metric(
                (Some(GAPS), Some(ALIAS_GAPS)),
                payload::datatype::UINT64,
                Some(MetricValue::LongValue(self.gaps)),
                now,
            ),
            node_metric(
                (Some(ARMED), Some(ALIAS_ARMED)),
                payload::datatype::BOOLEAN,
                armed,
                now,
            ),
        ];
        let topic = node_topic(&config, "NBIRTH");
        self.publish(s, topic, "NBIRTH", Batch::of(metrics), now)
            .await?;
        for index in 0..self.devices.devices.len() {
            self.device_birth(s, index).await?;
            if self.device_lost(index) {
                self.device_death(s, index).await?;
            }
        }
        Ok(())
    }

    async fn device_birth(&mut self, s: &mut Session, index: usize) -> Result<(), String> {
        let now = SystemTime::now();
        let twin = Arc::clone(&self.parts.twin);
        let model = twin.model();
        let device = &self.devices.devices[index];
        let samples = twin.samples(&device.properties);
        let metrics = device
            .properties
            .iter()
            .zip(&samples)
            .map(|(&property, sample)| {
                let decl = model.decl(property);
                payload::sample_metric(
                    Some(&decl.name),
                    alias_of(property),
                    decl.data_type,
                    sample,
                    Describe {
                        decl: Some(decl),
                        status_code: status_code(sample),
                    },
                )
            })
            .collect();
        let topic = device_topic(&self.parts.config, "DBIRTH", &device.id);
        s.dead[index] = false;
        self.publish(s, topic, "DBIRTH", Batch::of(metrics), now)
            .await
    }

    async fn device_death(&mut self, s: &mut Session, index: usize) -> Result<(), String> {
        self.flush_device(s, index, false).await?;
        self.flush_device(s, index, true).await?;
        let topic = device_topic(
            &self.parts.config,
            "DDEATH",
            &self.devices.devices[index].id,
        );
        s.dead[index] = true;
        self.publish(s, topic, "DDEATH", Batch::default(), SystemTime::now())
            .await
    }

    /// Whether every property of device `index` has lost its source ([`source_lost`]): every
    /// source that feeds it, devices and plugins alike.
    fn device_lost(&self, index: usize) -> bool {
        let device = &self.devices.devices[index];
        !device.properties.is_empty()
            && self
                .parts
                .twin
                .samples(&device.properties)
                .iter()
                .all(source_lost)
    }

    /// Publishes `batch`'s metrics with the next `seq` at QoS 0, not retained
    /// (`tck-id-topics-*-mqtt`); its offsets count as written once the driver wrote it.
    async fn publish(
        &self,
        s: &mut Session,
        topic: String,
        kind: &'static str,
        batch: Batch,
        now: SystemTime,
    ) -> Result<(), String> {
        let payload = Payload {
            timestamp: Some(payload::millis(now)),
            metrics: batch.metrics,
            seq: Some(u64::from(s.seq)),
            ..Default::default()
        };
        s.seq = s.seq.wrapping_add(1);
        s.unsent.push_back(Pending::Data(batch.offsets));
        s.client
            .publish(topic, QoS::AtMostOnce, false, payload.encode_to_vec())
            .await
            .map_err(|e| e.to_string())?;
        self.parts.metrics.published(kind);
        Ok(())
    }

    /// A QoS 1 marker saying everything before `offset` was published on this connection.
    async fn marker(&mut self, s: &mut Session, offset: u64) -> Result<(), String> {
        s.unsent.push_back(Pending::Marker {
            offset,
            sent: Instant::now(),
        });
        s.client
            .publish(
                marker_topic(&self.parts.config),
                QoS::AtLeastOnce,
                false,
                offset.to_string().into_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
        self.parts.metrics.published("marker");
        Ok(())
    }

    /// The driver wrote the oldest unsent publish (`pkid` 0 at QoS 0): a QoS 1 one now waits
    /// for its PUBACK; a QoS 0 one's offsets are written, and each written before (on an
    /// earlier connection whose marker's PUBACK never came) is a duplicate.
    fn sent(&mut self, s: &mut Session, pkid: u16) {
        match s.unsent.pop_front() {
            Some(Pending::Data(offsets)) if pkid == 0 => {
                let again = offsets
                    .into_iter()
                    .filter(|&offset| !self.published.insert(offset))
                    .count();
                if again > 0 {
                    self.parts.metrics.duplicates.inc_by(again as u64);
                }
            }
            Some(pending @ (Pending::Marker { .. } | Pending::Death)) if pkid != 0 => {
                s.inflight.insert(pkid, pending);
            }
            _ => {}
        }
    }

    /// A marker's PUBACK: everything before `offset` is confirmed (never read again).
    fn confirm(&mut self, offset: u64) {
        let confirmed = self.confirmed.unwrap_or(0).max(offset);
        self.confirmed = Some(confirmed);
        self.published.forget_below(confirmed);
        self.gap_records.forget_below(confirmed);
    }

    /// A live change log record: a change buffered for its device's DDATA (or the node's
    /// NDATA), a gap published, a device's death or rebirth.
    async fn live_entry(&mut self, s: &mut Session, entry: Entry) -> Result<(), String> {
        match entry.record {
            Record::Change {
                series,
                value,
                quality,
                source_time,
                server_time,
                late,
            } => {
                let Some(&property) = self.series.get(&series) else {
                    return Ok(());
                };
                let sample = Sample {
                    value,
                    quality,
                    source_time,
                    server_time,
                };
                let index = self.parts.twin.model().property(property).asset.0 as usize;
                if late {
                    // Older than the twin's current value (a republished OPC UA sample): history
                    // for the host, never the metric's current state.
                    if !s.dead[index] {
                        s.historical[index].push(
                            entry.offset,
                            data_metric(&self.parts.twin, property, &sample, true),
                        );
                        self.parts.metrics.values("historical", 1);
                        self.flush_device(s, index, true).await?;
                    }
                    return Ok(());
                }
                if Some(property) == self.armed {
                    // The armed state as the node metric (its DDATA of `twinloom:control`
                    // carries the offset).
                    let metric = node_metric(
                        (None, Some(ALIAS_ARMED)),
                        payload::datatype::BOOLEAN,
                        sample.value.as_ref().map(payload::metric_value),
                        server_time,
                    );
                    let topic = node_topic(&self.parts.config, "NDATA");
                    let now = SystemTime::now();
                    self.publish(s, topic, "NDATA", Batch::of(vec![metric]), now)
                        .await?;
                }
                if s.dead[index] {
                    if !source_lost(&sample) {
                        self.device_birth(s, index).await?;
                    }
                    return Ok(());
                }
                if source_lost(&sample) && self.device_lost(index) {
                    return self.device_death(s, index).await;
                }
                let metric = data_metric(&self.parts.twin, property, &sample, false);
                s.live[index].push(entry.offset, metric);
                self.parts.metrics.values("live", 1);
                if s.live[index].len() >= self.parts.config.max_metrics_per_payload {
                    self.flush_device(s, index, false).await?;
                }
                Ok(())
            }
            Record::Gap {
                reason, lost, void, ..
            } => {
                let lost = lost.unwrap_or(void.end.saturating_sub(void.start)).max(1);
                self.gap(s, entry.offset, lost, reason.as_str()).await
            }
            Record::Started { .. } | Record::Stopped { .. } => Ok(()),
        }
    }

    /// Publishes `Twinloom/Change Log Gaps` (NDATA) after the log lost `lost` changes.
    /// The gap record at `offset` is counted once, however often it is read (again after a lost
    /// PUBACK); the NDATA carries the running total.
    async fn gap(
        &mut self,
        s: &mut Session,
        offset: u64,
        lost: u64,
        reason: &'static str,
    ) -> Result<(), String> {
        if self.gap_records.insert(offset) {
            self.gaps += lost;
            events::GapPublished { lost, reason }.emit(&self.parts.metrics);
        }
        let now = SystemTime::now();
        let metric = node_metric(
            (None, Some(ALIAS_GAPS)),
            payload::datatype::UINT64,
            Some(MetricValue::LongValue(self.gaps)),
            now,
        );
        let topic = node_topic(&self.parts.config, "NDATA");
        self.publish(s, topic, "NDATA", Batch::of(vec![metric]), now)
            .await
    }

    /// Reads at most `budget` records of the backlog (before `boundary`) and publishes them as
    /// historical DDATA. `true` when the backlog is done.
    async fn backlog(
        &mut self,
        s: &mut Session,
        reader: &mut Reader,
        boundary: u64,
        budget: usize,
    ) -> Result<bool, String> {
        let mut done = false;
        let mut read = 0;
        while read < budget {
            if reader.position() >= boundary {
                done = true;
                break;
            }
            let entry = match reader.try_next() {
                Ok(Some(entry)) => entry,
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => return Err(format!("cannot read the change log backlog: {e}")),
            };
            if entry.offset >= boundary {
                done = true;
                break;
            }
            read += 1;
            match entry.record {
                Record::Change {
                    series,
                    value,
                    quality,
                    source_time,
                    server_time,
                    ..
                } => {
                    let Some(&property) = self.series.get(&series) else {
                        continue;
                    };
                    let age = server_time.elapsed().unwrap_or_default();
                    self.parts
                        .metrics
                        .backlog_age
                        .set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                    let sample = Sample {
                        value,
                        quality,
                        source_time,
                        server_time,
                    };
                    let index = self.parts.twin.model().property(property).asset.0 as usize;
                    s.historical[index].push(
                        entry.offset,
                        data_metric(&self.parts.twin, property, &sample, true),
                    );
                    self.parts.metrics.values("historical", 1);
                    if s.historical[index].len() >= self.parts.config.max_metrics_per_payload {
                        self.flush_device(s, index, true).await?;
                    }
                }
                Record::Gap {
                    reason, lost, void, ..
                } => {
                    let lost = lost.unwrap_or(void.end.saturating_sub(void.start)).max(1);
                    self.gap(s, entry.offset, lost, reason.as_str()).await?;
                }
                Record::Started { .. } | Record::Stopped { .. } => {}
            }
        }
        self.flush(s, true).await?;
        Ok(done)
    }

    async fn flush_device(
        &mut self,
        s: &mut Session,
        index: usize,
        historical: bool,
    ) -> Result<(), String> {
        let buffer = if historical {
            &mut s.historical[index]
        } else {
            &mut s.live[index]
        };
        if buffer.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(buffer);
        let topic = device_topic(&self.parts.config, "DDATA", &self.devices.devices[index].id);
        self.publish(s, topic, "DDATA", batch, SystemTime::now())
            .await
    }

    /// Publishes every device's buffered live (or historical) DDATA.
    async fn flush(&mut self, s: &mut Session, historical: bool) -> Result<(), String> {
        for index in 0..self.devices.devices.len() {
            self.flush_device(s, index, historical).await?;
        }
        Ok(())
    }

    async fn flush_all(&mut self, s: &mut Session) -> Result<(), String> {
        self.flush(s, false).await?;
        self.flush(s, true).await
    }

    /// An incoming publish: NCMD (rebirth; anything else refused), DCMD (writes through the
    /// gate), STATE. `Ok(true)` when the primary host went offline.
    async fn command(
        &mut self,
        s: &mut Session,
        publish: &rumqttc::Publish,
        host: &mut HostState,
    ) -> Result<bool, String> {
        let config = Arc::clone(&self.parts.config);
        let topic = publish.topic.as_str();
        if let Some(id) = &config.primary_host_id
            && topic.starts_with(&format!("{}/STATE/", super::NAMESPACE))
        {
            return Ok(host.observe(publish, id) == Some(false));
        }
        let Ok(payload) = Payload::decode(publish.payload.as_ref()) else {
            events::CommandRefused {
                topic,
                metric: "",
                outcome: "undecodable",
            }
            .emit(&self.parts.metrics);
            return Ok(false);
        };
        if topic == node_topic(&config, "NCMD") {
            let mut rebirth = false;
            for metric in &payload.metrics {
                let name = metric.name.as_deref().unwrap_or_default();
                if name == REBIRTH && metric.value == Some(MetricValue::BooleanValue(true)) {
                    rebirth = true;
                } else {
                    events::CommandRefused {
                        topic,
                        metric: name,
                        outcome: "unsupported-ncmd",
                    }
                    .emit(&self.parts.metrics);
                }
            }
            if rebirth {
                events::RebirthRequested.emit(&self.parts.metrics);
                // Same bdSeq, same MQTT session (tck-id-operational-behavior-data-commands-rebirth-action-2).
                self.flush_all(s).await?;
                self.births(s).await?;
            }
            return Ok(false);
        }
        let prefix = format!(
            "{}/",
            device_topic(&config, "DCMD", "").trim_end_matches('/')
        );
        let Some(device_id) = topic.strip_prefix(&prefix) else {
            return Ok(false);
        };
        let Some(&index) = self.devices.by_id.get(device_id) else {
            events::CommandRefused {
                topic,
                metric: "",
                outcome: "unknown-metric",
            }
            .emit(&self.parts.metrics);
            return Ok(false);
        };
        let model = self.parts.twin.model();
        for metric in &payload.metrics {
            let device = &self.devices.devices[index];
            let property = device.properties.iter().copied().find(|&p| {
                metric.alias == Some(alias_of(p))
                    || metric.name.as_deref() == Some(model.decl(p).name.as_str())
            });
            let label = metric
                .name
                .clone()
                .or_else(|| metric.alias.map(|a| format!("alias {a}")))
                .unwrap_or_default();
            let Some(property) = property else {
                events::CommandRefused {
                    topic,
                    metric: &label,
                    outcome: "unknown-metric",
                }
                .emit(&self.parts.metrics);
                continue;
            };
            if !config.accept_commands {
                events::CommandRefused {
                    topic,
                    metric: &label,
                    outcome: "not-accepted",
                }
                .emit(&self.parts.metrics);
                continue;
            }
            let Some(value) = payload::command_value(metric, model.decl(property).data_type) else {
                events::CommandRefused {
                    topic,
                    metric: &label,
                    outcome: "bad-value",
                }
                .emit(&self.parts.metrics);
                continue;
            };
            let origin = Origin::Sparkplug {
                device: device.id.clone(),
            };
            match self.parts.control.propose(property, value, origin, false) {
                Ok(outcome) => s.commands.push(outcome),
                Err(_) => events::CommandDecided { written: false }.emit(&self.parts.metrics),
            }
        }
        Ok(false)
    }

    /// Ends the session gracefully: the last marker (`mark`), NDEATH at QoS 1, their PUBACKs
    /// (at most [`STOP_GRACE`]), the cursor committed, then DISCONNECT
    /// (`tck-id-payloads-ndeath-will-message-publisher-disconnect-mqtt311`).
    async fn stop(
        &mut self,
        s: &mut Session,
        control: &mut mpsc::UnboundedReceiver<Control>,
        mark: Option<u64>,
    ) -> Ended {
        if let Some(offset) = mark
            && self.marker(s, offset).await.is_err()
        {
            return Ended::Lost("cannot publish the last marker".into());
        }
        s.unsent.push_back(Pending::Death);
        let death = s.client.publish(
            node_topic(&self.parts.config, "NDEATH"),
            QoS::AtLeastOnce,
            false,
            death_payload(s.bd_seq),
        );
        if death.await.is_err() {
            return Ended::Lost("cannot publish NDEATH".into());
        }
        self.parts.metrics.published("NDEATH");
        let mut confirmed = None;
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while let Some(event) = control.recv().await {
                match event {
                    Control::Sent(pkid) => self.sent(s, pkid),
                    Control::PubAck(pkid) => match s.inflight.remove(&pkid) {
                        Some(Pending::Marker { offset, .. }) => confirmed = Some(offset),
                        Some(Pending::Death) => break,
                        _ => {}
                    },
                    _ => {}
                }
            }
        })
        .await;
        if let Some(offset) = confirmed {
            self.confirm(offset);
        }
        let _ = s.client.disconnect().await;
        let _ = tokio::time::timeout(STOP_GRACE, async {
            while let Some(event) = control.recv().await {
                if matches!(event, Control::Disconnected) {
                    break;
                }
            }
        })
        .await;
        Ended::Stopped
    }
}

/// The primary host's last `STATE` (Sparkplug 3.0 §5.6.2): online and its timestamp.
#[derive(Debug, Default)]
struct HostState {
    timestamp: Option<u64>,
}

impl HostState {
    /// Takes a STATE message for host `id`: `Some(online)` when it is one and not older than
    /// the last one seen (`tck-id-message-flow-edge-node-birth-publish-phid-wait-id`,
    /// `-online`, `-timestamp`), `None` otherwise.
    fn observe(&mut self, publish: &rumqttc::Publish, id: &str) -> Option<bool> {
        if publish.topic != format!("{}/STATE/{id}", super::NAMESPACE) {
            return None;
        }
        #[derive(serde::Deserialize)]
        struct State {
            online: bool,
            timestamp: u64,
        }
        let state: State = serde_json::from_slice(&publish.payload).ok()?;
        if self.timestamp.is_some_and(|last| state.timestamp < last) {
            return None;
        }
        self.timestamp = Some(state.timestamp);
        Some(state.online)
    }
}

/// Drives rumqttc's event loop until it fails: forwards what the session needs in order
/// ([`Control`], never dropped: one per publish) and incoming publishes
/// (dropped when [`INCOMING_QUEUE`] is full). Returns the error's text.
async fn drive(
    mut eventloop: EventLoop,
    control: mpsc::UnboundedSender<Control>,
    incoming: mpsc::Sender<rumqttc::Publish>,
) -> String {
    loop {
        let event = match eventloop.poll().await {
            Ok(event) => event,
            Err(error) => return error.to_string(),
        };
        let forward = match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    return format!("connection refused: {:?}", ack.code);
                }
                Some(Control::ConnAck)
            }
            Event::Incoming(Packet::PubAck(ack)) => Some(Control::PubAck(ack.pkid)),
            Event::Incoming(Packet::Publish(publish)) => {
                let _ = incoming.try_send(publish);
                None
            }
            // Every publish, QoS 0 too (packet id 0): reported after the socket write.
            Event::Outgoing(Outgoing::Publish(pkid)) => Some(Control::Sent(pkid)),
            Event::Outgoing(Outgoing::Disconnect) => Some(Control::Disconnected),
            _ => None,
        };
        if let Some(forward) = forward
            && control.send(forward).is_err()
        {
            return "the session ended".into();
        }
    }
}

/// The NDEATH payload: the bdSeq metric alone, a timestamp and no seq (§6.4.19,
/// `tck-id-topics-ndeath-payload`, `tck-id-topics-ndeath-seq`).
fn death_payload(bd_seq: u8) -> Vec<u8> {
    Payload {
        timestamp: Some(payload::millis(SystemTime::now())),
        metrics: vec![payload::bd_seq_metric(bd_seq)],
        seq: None,
        ..Default::default()
    }
    .encode_to_vec()
}

/// A DDATA metric of a change: alias only (`tck-id-payloads-alias-data-cmd-requirement`).
fn data_metric(twin: &Twin, property: PropertyId, sample: &Sample, historical: bool) -> Metric {
    let decl = twin.model().decl(property);
    let mut metric = payload::sample_metric(
        None,
        alias_of(property),
        decl.data_type,
        sample,
        Describe {
            decl: None,
            status_code: status_code(sample),
        },
    );
    if historical {
        metric.is_historical = Some(true);
    }
    metric
}

fn status_code(sample: &Sample) -> u32 {
    crate::northbound::opcua_server::node_manager::status_code(sample.quality).bits()
}

/// Whether a sample says its source is lost: Bad with no connection, a communication failure,
/// a timeout or nothing read yet (a device), or the plugin computing it failed or is
/// quarantined (`PluginFailure`). An asset is fed by its device and by the plugins deriving its
/// properties: DDEATH when every one of them is lost (`tck-id-operational-behavior-device-ddeath`).
fn source_lost(sample: &Sample) -> bool {
    sample.quality.level == QualityLevel::Bad
        && matches!(
            sample.quality.reason,
            QualityReason::NoConnection
                | QualityReason::CommunicationFailure
                | QualityReason::Timeout
                | QualityReason::NotYetRead
                | QualityReason::PluginFailure
        )
}

/// A node metric (NBIRTH, NDATA): `name` in births (none for NDATA), its `alias` (none for
/// `Node Control/Rebirth`, never aliased), Sparkplug `datatype`, value (`None`: `is_null`) and
/// timestamp.
fn node_metric(
    (name, alias): (Option<&str>, Option<u64>),
    datatype: u32,
    value: Option<MetricValue>,
    at: SystemTime,
) -> Metric {
    Metric {
        name: name.map(str::to_owned),
        alias,
        datatype: Some(datatype),
        is_null: value.is_none().then_some(true),
        value,
        timestamp: Some(payload::millis(at)),
        ..Default::default()
    }
}

fn commit(log: &ChangeLog, offset: u64) {
    if let Err(error) = log.commit_cursor(CURSOR, offset) {
        events::CursorNotCommitted {
            error: &error.to_string(),
        }
        .emit();
    }
}

fn server_label(server: &MqttServer) -> String {
    format!(
        "{}://{}:{}",
        if server.tls { "ssl" } else { "tcp" },
        server.host,
        server.port
    )
}
