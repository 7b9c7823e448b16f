//! Simulated plant for Twinloom: devices reachable only through real protocols on loopback.

pub mod modbus;
pub mod opcua;
pub mod plant;
