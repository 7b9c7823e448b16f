//! The MQTT Sparkplug B 3.0 edge node (issue #29; `docs/sparkplug.md`): the twin published to
//! an MQTT broker from the change log, so an outage of the broker or of the primary host costs
//! latency, never data.
//!
//! - **Session** ([`node`]): MQTT 3.1.1 with `rumqttc`, Clean Session, a Will on `NDEATH` with
//!   `bdSeq` (persisted in `<state dir>/sparkplug/bdseq`, +1 per CONNECT the broker accepted,
//!   255 → 0: an attempt that got no CONNACK registered no Will and its bdSeq is used again), `NCMD` and
//!   `DCMD` subscribed at QoS 1; `NBIRTH` then a `DBIRTH` per asset; `seq` 0–255 on every
//!   message but NDEATH; a graceful stop publishes NDEATH, then DISCONNECT (Sparkplug 3.0 §5).
//! - **Devices** ([`Devices`]): each asset is a device whose id is its path with `/` as `:`;
//!   each property a metric of its name, aliased (property index + [`ALIAS_BASE`]).
//! - **Store and forward**: one cursor (`sparkplug`) in the change log. At each birth the log's
//!   end is the boundary: records after it are the live stream (DDATA by exception within
//!   `report_window`), records from the cursor to it the backlog (DDATA with `is_historical`,
//!   at most `backlog_max_rate` values per second besides the live stream). After each window a
//!   QoS 1 marker outside `spBv1.0/` ([`marker_topic`]) carries the offset everything before has
//!   been published up to; its PUBACK commits the cursor. Delivery is at least once: values
//!   written again after a lost PUBACK are counted exactly ([`published`]).
//! - **Devices' deaths**: DDEATH when every source feeding an asset (its device, the plugins
//!   deriving its properties) is lost; a partly fed asset marks its lost metrics' `Quality`.
//! - **Payloads** ([`payload`]): the protobuf messages written from the specification.

mod events;
mod node;
pub mod payload;
mod published;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::change_log::ChangeLog;
use crate::config::sparkplug::{MqttServer, SparkplugConfig};
use crate::context::ComponentContext;
use crate::control::ControlHandle;
use crate::twin::{PropertyId, TwinModel};

pub use events::SparkplugMetrics;

/// The Sparkplug B namespace element of every topic (Sparkplug 3.0 §4.1.1.1).
pub const NAMESPACE: &str = "spBv1.0";

/// The change log cursor's name.
pub const CURSOR: &str = "sparkplug";

/// The folder in the state folder that holds `bdseq`.
pub const STATE_DIR: &str = "sparkplug";

/// The first alias of a device metric; aliases below it are the node's own metrics.
pub const ALIAS_BASE: u64 = 16;

/// The node metric `Node Control/Rebirth` (§6.4.18: Boolean false in NBIRTH, never aliased).
pub const REBIRTH: &str = "Node Control/Rebirth";

/// The line `/readyz` shows while the node is not publishing.
pub const READY_CONDITION: &str =
    "sparkplug is not publishing (no MQTT session, or the primary host is offline)";

/// The twin as Sparkplug devices: each asset a device, each property a metric.
#[derive(Debug, Clone)]
pub struct Devices {
    /// Per asset (in the model's order): the device id and its properties.
    pub devices: Vec<Device>,
    /// Device index by device id.
    pub by_id: HashMap<String, usize>,
}

/// One asset as a Sparkplug device.
#[derive(Debug, Clone)]
pub struct Device {
    /// The asset's path with `/` replaced by `:` (§4.1.1.4: no `/`, `+`, `#`).
    pub id: String,
    /// Its properties, in the type's order.
    pub properties: Vec<PropertyId>,
}

impl Devices {
    /// The devices of `model`.
    pub fn of(model: &TwinModel) -> Self {
        let devices: Vec<Device> = model
            .assets()
            .iter()
            .map(|asset| Device {
                id: device_id(&asset.path),
                properties: asset.properties.clone(),
            })
            .collect();
        let by_id = devices
            .iter()
            .enumerate()
            .map(|(i, d)| (d.id.clone(), i))
            .collect();
        Self { devices, by_id }
    }
}

/// The device id of an asset path: `/` replaced by `:`.
pub fn device_id(asset_path: &str) -> String {
    asset_path.replace('/', ":")
}

/// A metric's alias: the property's index plus [`ALIAS_BASE`].
pub fn alias_of(property: PropertyId) -> u64 {
    property.index() as u64 + ALIAS_BASE
}

/// The topic of an edge node message (`NBIRTH`, `NDEATH`, `NDATA`, `NCMD`; §4.1).
pub fn node_topic(config: &SparkplugConfig, kind: &str) -> String {
    format!(
        "{NAMESPACE}/{}/{kind}/{}",
        config.group_id, config.edge_node_id
    )
}

/// The topic of a device message (`DBIRTH`, `DDEATH`, `DDATA`, `DCMD`; §4.1).
pub fn device_topic(config: &SparkplugConfig, kind: &str, device: &str) -> String {
    format!(
        "{NAMESPACE}/{}/{kind}/{}/{device}",
        config.group_id, config.edge_node_id
    )
}

/// The cursor marker's topic, outside `spBv1.0/` so Sparkplug hosts never see it:
/// `twinloom/sparkplug/<group_id>/<edge_node_id>/cursor` (payload: the offset, decimal text).
pub fn marker_topic(config: &SparkplugConfig) -> String {
    format!(
        "twinloom/sparkplug/{}/{}/cursor",
        config.group_id, config.edge_node_id
    )
}

/// Reads `<state dir>/sparkplug/bdseq` (absent: none yet), and writes and syncs the next value
/// (+1, 255 → 0; 0 the first time): the `bdSeq` of the next CONNECT (§6.4.19,
/// `tck-id-topics-nbirth-bdseq-increment`).
///
/// Errors: the folder or file cannot be written.
pub fn next_bd_seq(state_dir: &Path) -> std::io::Result<u8> {
    use std::io::Write as _;
    let dir = state_dir.join(STATE_DIR);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("bdseq");
    let next = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u8>().map_or(0, |v| v.wrapping_add(1)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e),
    };
    let tmp = dir.join("bdseq.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{next}\n").as_bytes())?;
    file.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(next)
}

/// Starts the edge node: reads the password file and TLS files, registers readiness
/// ([`READY_CONDITION`]) and spawns the `sparkplug` task, which connects, births and publishes
/// until shutdown (then NDEATH and DISCONNECT). `base_dir` resolves relative paths.
///
/// Errors: the password file or the TLS files cannot be read (validated at load, so only when
/// they changed since).
pub fn start(
    config: &SparkplugConfig,
    base_dir: &Path,
    control: ControlHandle,
    change_log: Option<ChangeLog>,
    context: ComponentContext<'_>,
) -> anyhow::Result<()> {
    let password = match &config.password_file {
        Some(file) => {
            let path: PathBuf = base_dir.join(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the Sparkplug password file {}: {e}",
                    path.display()
                )
            })?;
            Some(text.lines().next().unwrap_or_default().to_owned())
        }
        None => None,
    };
    let tls = match &config.tls {
        Some(tls) => Some(tls.load(base_dir).map_err(|problems| {
            let text: Vec<String> = problems.into_iter().map(|(_, m)| m).collect();
            anyhow::anyhow!("Sparkplug TLS: {}", text.join("; "))
        })?),
        None => None,
    };
    let servers = config
        .servers
        .iter()
        .map(|s| MqttServer::parse(s).map_err(|e| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let metrics: SparkplugMetrics = context.metrics.set();
    let ready = context.readiness.register(READY_CONDITION);
    let node = node::Node::new(node::Parts {
        config: Arc::new(config.clone()),
        servers,
        password,
        tls,
        twin: Arc::clone(context.twin),
        control,
        change_log,
        state_dir: context.state_dir.to_owned(),
        metrics,
        ready,
    });
    context
        .supervisor
        .spawn("sparkplug", move |token| node.run(token));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tck_id_topics_nbirth_bdseq_increment_wraps_255_to_0_and_persists() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(next_bd_seq(dir.path()).expect("first"), 0);
        assert_eq!(next_bd_seq(dir.path()).expect("second"), 1);
        std::fs::write(dir.path().join(STATE_DIR).join("bdseq"), "255\n").expect("write");
        assert_eq!(next_bd_seq(dir.path()).expect("wraps"), 0);
    }

    #[test]
    fn device_ids_replace_slashes() {
        assert_eq!(device_id("plant-a/line1/press1"), "plant-a:line1:press1");
    }
}
