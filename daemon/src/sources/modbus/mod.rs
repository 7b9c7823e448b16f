//! Modbus source: TCP, RTU and RTU-over-TCP on `tokio-modbus`.
//!
//! - its config, the `[[sources.modbus]]` and binding shapes and their validation, is
//!   [`crate::config::sources::modbus`] (config is plain data below every component).
//! - [`codec`]: registers ⇄ values in every encoding and word order.
//! - [`plan`]: the block-read optimiser.
//! - [`transport`]: opening connections.
//! - [`poller`]: the per-connection poll loop, failure isolation and writes.
//! - `events`: the connection and device events, each emitting its log line, metrics and
//!   readiness together.

pub mod codec;
mod events;
pub mod plan;
pub mod poller;
pub mod transport;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::sources::modbus::ModbusBindingConfig;
use crate::config::sources::modbus::{ModbusSourceConfig, RegisterTable};
use crate::context::ComponentContext;
use crate::runtime::{Backoff, ReadyFlag};
use crate::sources::{Bound, Spawned};
use crate::telemetry::{Metrics, Throttle};
use crate::twin::{PropertyId, Twin};
use codec::Layout;
use plan::{Limits, Point};
use poller::{Device, Link, PollGroup, Poller, WriteTarget};

/// Spawns the poller of one Modbus connection serving `bindings`. Returns its writer, the
/// properties it serves and the token that stops just this poller; registers its readiness
/// condition (connected).
///
/// Errors: none today (the config was validated); kept for sources whose build can fail.
pub fn spawn(
    source: &ModbusSourceConfig,
    bindings: &[Bound<ModbusBindingConfig>],
    context: ComponentContext<'_>,
) -> anyhow::Result<Spawned> {
    let ready = context.readiness.register_source(&source.id);
    let poller = build(source, bindings, context.twin, context.metrics, ready);
    let properties = poller.all_properties.clone();
    let (writer, writes) = poller::write_channel();
    let token = context
        .supervisor
        .spawn_cancellable(format!("modbus:{}", source.id), move |token| {
            poller.run(token, writes)
        });
    Ok(Spawned {
        properties,
        writer: Some(std::sync::Arc::new(writer)),
        token,
    })
}

/// Builds the poll plan of one source: every bound property, grouped per device and poll
/// interval, joined into blocks.
pub(crate) fn build(
    source: &ModbusSourceConfig,
    bindings: &[Bound<ModbusBindingConfig>],
    twin: &Arc<Twin>,
    metrics: &Metrics,
    ready: ReadyFlag,
) -> Poller {
    let model = twin.model();
    let family = metrics.set::<events::ModbusMetrics>();
    let device_list = source.device_list();
    let limits = Limits {
        max_registers: source.max_read_registers,
        max_bits: source.max_read_bits,
        max_gap_registers: source.max_gap_registers,
        max_gap_bits: source.max_gap_bits,
    };
    // device index → poll interval → table → points
    let mut points: Vec<BTreeMap<Duration, BTreeMap<RegisterTable, Vec<Point>>>> =
        vec![BTreeMap::new(); device_list.len()];
    let mut targets: Vec<(PropertyId, usize, Duration, RegisterTable, Point)> = Vec::new();
    let mut all_properties = Vec::new();
    for Bound {
        property,
        device,
        binding,
    } in bindings
    {
        let property = *property;
        let device = match device {
            Some(id) => device_list.iter().position(|d| &d.id == id).unwrap_or(0),
            None => 0,
        };
        let layout = Layout {
            encoding: binding.encoding(),
            order: binding.order(),
            bit: binding.bit.unwrap_or(0),
            length: binding.length.unwrap_or(0),
        };
        let point = Point {
            property,
            address: binding.address as u16,
            width: binding.width() as u16,
            layout,
        };
        let interval = binding.poll.unwrap_or(source.poll);
        targets.push((property, device, interval, binding.table, point.clone()));
        points[device]
            .entry(interval)
            .or_default()
            .entry(binding.table)
            .or_default()
            .push(point);
        all_properties.push(property);
    }
    let now = Instant::now();
    let mut devices = Vec::new();
    let mut group_index: Vec<HashMap<Duration, usize>> = Vec::new();
    for (d, device) in device_list.iter().enumerate() {
        let mut groups = Vec::new();
        let mut index = HashMap::new();
        for (interval, tables) in std::mem::take(&mut points[d]) {
            let blocks = tables
                .into_iter()
                .flat_map(|(table, points)| plan::plan(table, points, &limits))
                .collect();
            index.insert(interval, groups.len());
            groups.push(PollGroup {
                interval,
                blocks,
                next_due: now,
            });
        }
        group_index.push(index);
        devices.push(Device {
            id: device.id.clone(),
            unit_id: device.unit_id,
            groups,
            timeout_streak: 0,
            demoted: false,
            metrics: family.device(&source.id, &device.id),
        });
    }
    let writes = targets
        .into_iter()
        .map(|(property, device, interval, table, point)| {
            (
                property,
                WriteTarget {
                    device,
                    group: group_index[device][&interval],
                    table,
                    point,
                    scaling: model.property(property).scaling,
                },
            )
        })
        .collect();
    Poller {
        id: source.id.clone(),
        transport: transport::Transport::from_config(source),
        config: source.clone(),
        devices,
        writes,
        all_properties,
        twin: Arc::clone(twin),
        metrics: family.source(&source.id),
        link: Link::START,
        backoff: Backoff::new(source.backoff_min, source.backoff_max),
        readings: Vec::new(),
        ready,
        heartbeat: source.heartbeat.map(|_| (Instant::now(), 0)),
        repeats: Throttle::default(),
    }
}
