//! Modbus source: TCP, RTU and RTU-over-TCP on `tokio-modbus`.

pub mod codec;
pub mod config;

use std::sync::Arc;

use crate::config::Config;
use crate::runtime::Supervisor;
use crate::twin::Twin;
use config::ModbusSourceConfig;

/// Spawns the poller of one Modbus connection.
pub fn spawn(
    _source: &ModbusSourceConfig,
    _config: &Config,
    _twin: &Arc<Twin>,
    _supervisor: &Supervisor,
) -> anyhow::Result<()> {
    Ok(())
}
