//! A simulated Modbus device bank served over real Modbus TCP or RTU-over-TCP on loopback.
//!
//! Each [`SimDevice`] holds the four data tables (65 536 entries each) and a [`Behaviour`] that
//! tests and the demo use to inject faults: a maximum read length (longer reads answer exception
//! 03, Modbus Application Protocol v1.1b3 §6.3), address ranges that do not exist (exception 02),
//! a reply delay, or silence (the request is accepted and never answered).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_modbus::prelude::{ExceptionCode, Request, Response, SlaveRequest};
use tokio_modbus::server::Service;

const TABLE: usize = 65_536;

/// The four Modbus data tables of one device.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Coils (read-write bits).
    pub coils: Vec<bool>,
    /// Discrete inputs (read-only bits).
    pub discrete: Vec<bool>,
    /// Input registers (read-only words).
    pub input: Vec<u16>,
    /// Holding registers (read-write words).
    pub holding: Vec<u16>,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            coils: vec![false; TABLE],
            discrete: vec![false; TABLE],
            input: vec![0; TABLE],
            holding: vec![0; TABLE],
        }
    }
}

/// Fault injection for one device.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Longest register read answered; longer ones get exception 03. Default 125.
    pub max_read_registers: u16,
    /// Longest bit read answered; longer ones get exception 03. Default 2000.
    pub max_read_bits: u16,
    /// Register addresses (holding and input) that do not exist: reads touching them get exception 02.
    pub missing_registers: Vec<Range<u16>>,
    /// Delay before every reply.
    pub delay: Duration,
    /// Accept requests and never answer them.
    pub silent: bool,
    /// Holding registers whose writes are answered as taken but not applied (the PLC's own
    /// logic holds them), so a read-back differs.
    pub frozen_registers: Vec<Range<u16>>,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            max_read_registers: 125,
            max_read_bits: 2000,
            missing_registers: Vec::new(),
            delay: Duration::ZERO,
            silent: false,
            frozen_registers: Vec::new(),
        }
    }
}

/// One simulated device.
#[derive(Debug, Default)]
pub struct SimDevice {
    tables: Mutex<Tables>,
    behaviour: Mutex<Behaviour>,
    requests: AtomicU64,
    /// Every holding register write the device took, in order: (address, word).
    register_writes: Mutex<Vec<(u16, u16)>>,
}

impl SimDevice {
    /// A device with zeroed tables and default behaviour.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Runs `f` on the tables (for setting or reading values).
    pub fn with_tables<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        f(&mut self.tables.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Sets holding registers from `address` on.
    pub fn set_holding(&self, address: u16, words: &[u16]) {
        self.with_tables(|t| {
            t.holding[usize::from(address)..][..words.len()].copy_from_slice(words)
        });
    }

    /// Sets input registers from `address` on.
    pub fn set_input(&self, address: u16, words: &[u16]) {
        self.with_tables(|t| t.input[usize::from(address)..][..words.len()].copy_from_slice(words));
    }

    /// Sets one coil.
    pub fn set_coil(&self, address: u16, on: bool) {
        self.with_tables(|t| t.coils[usize::from(address)] = on);
    }

    /// Sets one discrete input.
    pub fn set_discrete(&self, address: u16, on: bool) {
        self.with_tables(|t| t.discrete[usize::from(address)] = on);
    }

    /// Every holding register write the device took so far, in order: (address, word) per
    /// register (function codes 6 and 16), as a PLC's write log would show them.
    pub fn register_writes(&self) -> Vec<(u16, u16)> {
        self.register_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn log_writes(&self, address: u16, words: &[u16]) {
        let mut log = self
            .register_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (i, word) in words.iter().enumerate() {
            log.push((address.wrapping_add(i as u16), *word));
        }
    }

    /// Holding registers from `address`.
    pub fn holding(&self, address: u16, count: u16) -> Vec<u16> {
        self.with_tables(|t| t.holding[usize::from(address)..][..usize::from(count)].to_vec())
    }

    /// Changes the fault behaviour.
    pub fn behave(&self, f: impl FnOnce(&mut Behaviour)) {
        f(&mut self.behaviour.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Requests received so far (answered or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn answer(&self, request: Request<'static>) -> Result<Response, ExceptionCode> {
        let behaviour = self
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let registers = |address: u16, count: u16| -> Result<Range<usize>, ExceptionCode> {
            if count == 0 || count > behaviour.max_read_registers {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let end = u32::from(address) + u32::from(count);
            if end > TABLE as u32 {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            if behaviour
                .missing_registers
                .iter()
                .any(|m| u32::from(m.start) < end && u32::from(m.end) > u32::from(address))
            {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            Ok(usize::from(address)..end as usize)
        };
        let bits = |address: u16, count: u16| -> Result<Range<usize>, ExceptionCode> {
            if count == 0 || count > behaviour.max_read_bits {
                return Err(ExceptionCode::IllegalDataValue);
            }
            let end = usize::from(address) + usize::from(count);
            if end > TABLE {
                return Err(ExceptionCode::IllegalDataAddress);
            }
            Ok(usize::from(address)..end)
        };
        let mut t = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        Ok(match request {
            Request::ReadCoils(a, n) => Response::ReadCoils(t.coils[bits(a, n)?].to_vec()),
            Request::ReadDiscreteInputs(a, n) => {
                Response::ReadDiscreteInputs(t.discrete[bits(a, n)?].to_vec())
            }
            Request::ReadHoldingRegisters(a, n) => {
                Response::ReadHoldingRegisters(t.holding[registers(a, n)?].to_vec())
            }
            Request::ReadInputRegisters(a, n) => {
                Response::ReadInputRegisters(t.input[registers(a, n)?].to_vec())
            }
            Request::WriteSingleCoil(a, on) => {
                t.coils[usize::from(a)] = on;
                Response::WriteSingleCoil(a, on)
            }
            Request::WriteMultipleCoils(a, values) => {
                let range = bits(a, values.len() as u16)?;
                t.coils[range].copy_from_slice(&values);
                Response::WriteMultipleCoils(a, values.len() as u16)
            }
            Request::WriteSingleRegister(a, word) => {
                registers(a, 1)?;
                if !behaviour.frozen_registers.iter().any(|r| r.contains(&a)) {
                    t.holding[usize::from(a)] = word;
                }
                self.log_writes(a, &[word]);
                Response::WriteSingleRegister(a, word)
            }
            Request::WriteMultipleRegisters(a, words) => {
                let range = registers(a, words.len() as u16)?;
                t.holding[range].copy_from_slice(&words);
                self.log_writes(a, &words);
                Response::WriteMultipleRegisters(a, words.len() as u16)
            }
            Request::MaskWriteRegister(a, and, or) => {
                registers(a, 1)?;
                // Modbus Application Protocol §6.16: (current AND and_mask) OR (or_mask AND NOT and_mask).
                let current = t.holding[usize::from(a)];
                t.holding[usize::from(a)] = (current & and) | (or & !and);
                Response::MaskWriteRegister(a, and, or)
            }
            _ => return Err(ExceptionCode::IllegalFunction),
        })
    }
}

/// The framing a simulated server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Modbus TCP (MBAP header).
    Tcp,
    /// RTU frames with CRC over TCP, as a serial gateway.
    RtuOverTcp,
}

#[derive(Clone)]
struct Bank {
    devices: Arc<HashMap<u8, Arc<SimDevice>>>,
}

impl Service for Bank {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Pin<Box<dyn Future<Output = Result<Option<Response>, ExceptionCode>> + Send>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        let device = self.devices.get(&request.slave).cloned();
        Box::pin(async move {
            let Some(device) = device else {
                // No such unit behind this "gateway": Modbus Application Protocol §7, code 0B.
                return Err(ExceptionCode::GatewayTargetDevice);
            };
            device.requests.fetch_add(1, Ordering::Relaxed);
            let (silent, delay) = {
                let b = device.behaviour.lock().unwrap_or_else(|e| e.into_inner());
                (b.silent, b.delay)
            };
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if silent {
                return Ok(None);
            }
            device.answer(request.request).map(Some)
        })
    }
}

/// A running simulated server. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct ModbusServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
    connections: Arc<AtomicU64>,
}

impl ModbusServer {
    /// Serves `devices` (by unit id) on `listener` until stopped.
    pub fn start(
        listener: TcpListener,
        framing: Framing,
        devices: HashMap<u8, Arc<SimDevice>>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let bank = Bank {
            devices: Arc::new(devices),
        };
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let new_service = move |_peer| {
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(Some(bank.clone()))
            };
            let result = match framing {
                Framing::Tcp => {
                    let server = tokio_modbus::server::tcp::Server::new(listener);
                    let on_connected = |stream, peer| {
                        let new_service = new_service.clone();
                        async move {
                            tokio_modbus::server::tcp::accept_tcp_connection(
                                stream,
                                peer,
                                new_service,
                            )
                        }
                    };
                    server.serve(&on_connected, |_error| {}).await
                }
                Framing::RtuOverTcp => {
                    let server = tokio_modbus::server::rtu_over_tcp::Server::new(listener);
                    let on_connected = |stream, peer| {
                        let new_service = new_service.clone();
                        async move {
                            tokio_modbus::server::rtu_over_tcp::accept_tcp_connection(
                                stream,
                                peer,
                                new_service,
                            )
                        }
                    };
                    server.serve(&on_connected, |_error| {}).await
                }
            };
            if let Err(error) = result {
                tracing::warn!(%error, "Simulated Modbus server stopped");
            }
        });
        Ok(Self {
            addr,
            task,
            connections,
        })
    }

    /// Serves `devices` as RTU slaves on the serial port at `path` (for example one end of a
    /// pseudo-terminal pair) until stopped. `addr()` of such a server is `0.0.0.0:0`.
    pub fn serial(
        path: &str,
        baud: u32,
        devices: HashMap<u8, Arc<SimDevice>>,
    ) -> std::io::Result<Self> {
        let server = tokio_modbus::server::rtu::Server::new_from_path(path, baud)?;
        let bank = Bank {
            devices: Arc::new(devices),
        };
        let task = tokio::spawn(async move {
            if let Err(error) = server.serve_forever(bank).await {
                tracing::warn!(%error, "Simulated Modbus RTU server stopped");
            }
        });
        Ok(Self {
            addr: ([0, 0, 0, 0], 0).into(),
            task,
            connections: Arc::new(AtomicU64::new(1)),
        })
    }

    /// Binds `addr` (use port 0 for a free one) and serves `devices`.
    pub async fn bind(
        addr: SocketAddr,
        framing: Framing,
        devices: HashMap<u8, Arc<SimDevice>>,
    ) -> std::io::Result<Self> {
        Self::start(TcpListener::bind(addr).await?, framing, devices)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far (a serial server counts its one line).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Stops listening and drops every connection, keeping the value (for restarting in its place).
    pub async fn halt(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Stops listening and drops every connection; returns once the port is free again.
    pub async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ModbusServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
