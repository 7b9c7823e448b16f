//! Simulated plant for Twinloom: devices reachable only through real protocols on loopback.

// The simulator is test and demo equipment, not part of the daemon: each server owns its tasks
// and aborts them when dropped, so the daemon's supervision rule does not apply here.
#![allow(clippy::disallowed_methods)]

pub mod modbus;
pub mod opcua;
pub mod plant;
