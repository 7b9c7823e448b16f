//! Typed configuration of a Modbus source (`[[sources.modbus]]`) and of a Modbus binding.
//!
//! Addresses are **zero-based protocol addresses** as they travel in the PDU (Modbus Application
//! Protocol v1.1b3, §4.4). Many PLC manuals use the 1-based "40001" convention for holding
//! registers: holding register 40001 is `table = "holding", address = 0`, 40101 is address 100;
//! input register 30001 is `table = "input", address = 0`.

use std::time::Duration;

use serde::Deserialize;

use super::{BindingConfig, BindingSection, Bound, SourceSection};
use crate::config::diagnostic::{KeyPath, Problem};
use crate::twin::model::Scaling;
use crate::twin::spec::{Access, DataType, PropertyConfig};

/// `[[sources.modbus]]`: one Modbus connection (a TCP endpoint, a serial line, or a serial
/// gateway) and the devices (unit ids) reached through it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSourceConfig {
    /// Source id, unique across all sources; assets name it in `source`.
    pub id: String,
    /// Modbus TCP endpoint `host:port` (MBAP framing; port 502 by convention).
    #[serde(default)]
    pub tcp: Option<String>,
    /// Serial gateway endpoint `host:port` speaking RTU frames over TCP.
    #[serde(default)]
    pub rtu_over_tcp: Option<String>,
    /// Modbus RTU over a local serial port.
    #[serde(default)]
    pub rtu: Option<RtuConfig>,
    /// Unit id of the single device, when `devices` is empty. 1..=247 on serial lines
    /// (Modbus over Serial Line v1.02 §2.2); 0..=255 over TCP (255 addresses the gateway itself). Default 1.
    #[serde(default)]
    pub unit_id: Option<u8>,
    /// Several devices behind this one connection (a shared RS-485 line or a gateway).
    #[serde(default)]
    pub devices: Vec<ModbusDeviceConfig>,
    /// Time allowed for one request's reply. Default 1 s; tokio-modbus has no timeout of its own.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Further attempts after a failed request before its properties go bad. Default 1.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Pause between two requests on this connection, for slow devices and RS-485 turnaround. Default 0.
    #[serde(default, with = "humantime_serde")]
    pub request_delay: Duration,
    /// Poll interval for bindings that set none. Default 1 s.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll: Duration,
    /// First reconnect delay after a failure. Default 250 ms.
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest reconnect delay; delays double up to it, with ±20 % jitter. Default 30 s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Most registers one read may ask for. 1..=125 (Modbus Application Protocol §6.3). Default 125.
    #[serde(default = "default_max_read_registers")]
    pub max_read_registers: u16,
    /// Most coils or discrete inputs one read may ask for. 1..=2000 (§6.1). Default 2000.
    #[serde(default = "default_max_read_bits")]
    pub max_read_bits: u16,
    /// Unbound registers a block read may read through to join two bindings. Default 16.
    #[serde(default = "default_max_gap_registers")]
    pub max_gap_registers: u16,
    /// Unbound bits a block read may read through to join two bindings. Default 64.
    #[serde(default = "default_max_gap_bits")]
    pub max_gap_bits: u16,
    /// Consecutive timeouts after which a device is demoted (polled at `demoted_poll`). Default 3.
    #[serde(default = "default_demote_after")]
    pub demote_after: u32,
    /// Poll interval of a demoted device until it answers again. Default 10 s.
    #[serde(default = "default_demoted_poll", with = "humantime_serde")]
    pub demoted_poll: Duration,
    /// Read every written coil or register back at once and compare the device's image with the
    /// words written (not the floats): a difference answers the write "read-back mismatch".
    /// Default true; one more request per write.
    #[serde(default = "default_read_back")]
    pub read_back: bool,
    /// A holding register Twinloom writes a counter to periodically, so the PLC's own logic can
    /// tell that Twinloom stopped (its watchdog) and fall back on its own control.
    #[serde(default)]
    pub heartbeat: Option<HeartbeatConfig>,
}

/// `heartbeat = { address = 100, interval = "1s" }`: Twinloom writes 1, 2, 3, … (wrapping after
/// 65 535 to 0) to holding register `address` of unit `unit_id` every `interval` (function code
/// 6), whether or not the plant is armed. Not audited (it is no setpoint); a failed write is
/// logged and retried at the next interval.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatConfig {
    /// Holding register (zero-based protocol address).
    pub address: u16,
    /// Time between two writes. Default 1 s.
    #[serde(default = "default_heartbeat_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The unit written. Default the source's `unit_id` (or 1).
    #[serde(default)]
    pub unit_id: Option<u8>,
}

fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_read_back() -> bool {
    true
}

fn default_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_retries() -> u32 {
    1
}
fn default_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(250)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}
fn default_max_read_registers() -> u16 {
    125
}
fn default_max_read_bits() -> u16 {
    2000
}
fn default_max_gap_registers() -> u16 {
    16
}
fn default_max_gap_bits() -> u16 {
    64
}
fn default_demote_after() -> u32 {
    3
}
fn default_demoted_poll() -> Duration {
    Duration::from_secs(10)
}

/// Serial line settings for Modbus RTU.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtuConfig {
    /// Serial device, e.g. `/dev/ttyUSB0`. One serial port may be used by one source only.
    pub port: String,
    /// Bits per second. Default 19200 (Modbus over Serial Line v1.02 §2.5.1).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity. Default `even` (§2.5.1).
    #[serde(default)]
    pub parity: Parity,
    /// Data bits, 7 or 8. Default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Stop bits, 1 or 2. Default 1.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Silent interval between frames. Default 3.5 character times, at least 1.75 ms above
    /// 19200 bit/s (§2.5.1.1).
    #[serde(default, with = "humantime_serde")]
    pub inter_frame_delay: Option<Duration>,
}

fn default_baud() -> u32 {
    19_200
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

impl RtuConfig {
    /// The silent interval to keep between frames (§2.5.1.1): the configured one, or 3.5
    /// character times (11 bits each) with a floor of 1750 µs above 19200 bit/s.
    pub fn frame_gap(&self) -> Duration {
        if let Some(delay) = self.inter_frame_delay {
            return delay;
        }
        if self.baud > 19_200 {
            return Duration::from_micros(1_750);
        }
        let micros = 3.5 * 11.0 * 1_000_000.0 / f64::from(self.baud.max(1));
        Duration::from_micros(micros.ceil() as u64)
    }
}

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// No parity bit (then use 2 stop bits, §2.5.1).
    None,
    /// Even parity.
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

/// One device (unit id) behind a Modbus connection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusDeviceConfig {
    /// Device id, unique within the source; assets name it in `device`.
    pub id: String,
    /// Unit id (slave address).
    pub unit_id: u8,
}

/// The four Modbus data tables (Modbus Application Protocol v1.1b3, §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegisterTable {
    /// Coils: read-write bits (function codes 1, 5, 15).
    #[serde(alias = "coils")]
    Coil,
    /// Discrete inputs: read-only bits (function code 2).
    #[serde(alias = "discrete-input", alias = "discrete_input")]
    Discrete,
    /// Input registers: read-only 16-bit words (function code 4).
    #[serde(alias = "input-register", alias = "input_register")]
    Input,
    /// Holding registers: read-write 16-bit words (function codes 3, 6, 16).
    #[serde(alias = "holding-register", alias = "holding_register")]
    Holding,
}

impl RegisterTable {
    /// Whether the table holds bits (coils, discrete inputs) rather than 16-bit registers.
    pub fn is_bits(self) -> bool {
        matches!(self, Self::Coil | Self::Discrete)
    }

    /// Whether a Modbus client may write to it.
    pub fn is_writable(self) -> bool {
        matches!(self, Self::Coil | Self::Holding)
    }

    /// Name as used in the config and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coil => "coil",
            Self::Discrete => "discrete",
            Self::Input => "input",
            Self::Holding => "holding",
        }
    }
}

/// Where one property's value lives in a Modbus device, and how to decode and scale it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusBindingConfig {
    /// The data table.
    pub table: RegisterTable,
    /// Zero-based address of the first register or bit, 0..=65535.
    pub address: u32,
    /// Wire encoding. Default `bool` for bit tables, `u16` for register tables.
    #[serde(default)]
    pub encoding: Option<Encoding>,
    /// Word/byte order of multi-register values. Default `ABCD` (big-endian, §4.2 of the spec
    /// for each register, high word first).
    #[serde(default)]
    pub order: Option<WordOrder>,
    /// Bit number 0..=15 inside the register, for `encoding = "bit"` (0 = least significant).
    #[serde(default)]
    pub bit: Option<u8>,
    /// Length in registers (two characters each), for `encoding = "string"`.
    #[serde(default)]
    pub length: Option<u16>,
    /// Engineering value = raw × scale + offset. Default 1.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Engineering value = raw × scale + offset, in engineering units. Default 0.
    #[serde(default)]
    pub offset: Option<f64>,
    /// Poll interval; the source's `poll` when absent.
    #[serde(default, with = "humantime_serde")]
    pub poll: Option<Duration>,
}

impl ModbusBindingConfig {
    /// The encoding, with the table's default applied.
    pub fn encoding(&self) -> Encoding {
        self.encoding.unwrap_or(if self.table.is_bits() {
            Encoding::Bool
        } else {
            Encoding::U16
        })
    }

    /// The word order, `ABCD` when absent.
    pub fn order(&self) -> WordOrder {
        self.order.unwrap_or_default()
    }

    /// Registers (or bits, for bit tables) the value occupies.
    pub fn width(&self) -> u32 {
        if self.table.is_bits() {
            1
        } else {
            u32::from(self.encoding().registers(self.length.unwrap_or(0)))
        }
    }
}

impl ModbusSourceConfig {
    /// Device ids and unit ids: the `devices` list, or one device named like the source.
    pub fn device_list(&self) -> Vec<ModbusDeviceConfig> {
        if self.devices.is_empty() {
            vec![ModbusDeviceConfig {
                id: self.id.clone(),
                unit_id: self.unit_id.unwrap_or(1),
            }]
        } else {
            self.devices.clone()
        }
    }

    /// Semantic checks of the source itself; `path` is the source's key path.
    pub fn validate(&self, path: &KeyPath, out: &mut Vec<Problem>) {
        if let Some(heartbeat) = &self.heartbeat
            && heartbeat.interval.is_zero()
        {
            out.push(Problem::new(
                path.key("heartbeat").key("interval"),
                "the heartbeat interval must be positive",
            ));
        }
        let transports = [
            self.tcp.is_some(),
            self.rtu_over_tcp.is_some(),
            self.rtu.is_some(),
        ];
        match transports.iter().filter(|set| **set).count() {
            0 => out.push(Problem::new(
                path.clone(),
                "a modbus source needs one transport: `tcp`, `rtu_over_tcp` or `rtu`",
            )),
            1 => {}
            _ => out.push(Problem::new(
                path.clone(),
                "a modbus source has exactly one transport; `tcp`, `rtu_over_tcp` and `rtu` are exclusive",
            )),
        }
        for (key, endpoint) in [("tcp", &self.tcp), ("rtu_over_tcp", &self.rtu_over_tcp)] {
            if let Some(endpoint) = endpoint
                && let Err(message) = check_endpoint(endpoint)
            {
                out.push(Problem::new(path.key(key), message));
            }
        }
        let serial = self.rtu.is_some();
        if let Some(rtu) = &self.rtu {
            let rtu_path = path.key("rtu");
            if rtu.baud == 0 {
                out.push(Problem::new(
                    rtu_path.key("baud"),
                    "baud rate must be positive",
                ));
            }
            if !matches!(rtu.data_bits, 7 | 8) {
                out.push(Problem::new(
                    rtu_path.key("data_bits"),
                    format!("data bits {} is not 7 or 8", rtu.data_bits),
                ));
            }
            if !matches!(rtu.stop_bits, 1 | 2) {
                out.push(Problem::new(
                    rtu_path.key("stop_bits"),
                    format!("stop bits {} is not 1 or 2", rtu.stop_bits),
                ));
            }
        }
        if self.unit_id.is_some() && !self.devices.is_empty() {
            out.push(Problem::new(
                path.key("unit_id"),
                "set `unit_id` on each entry of `devices`, not on the source, when it lists devices",
            ));
        }
        let mut seen: Vec<&str> = Vec::new();
        let unit_ids = self.device_list();
        for (i, device) in unit_ids.iter().enumerate() {
            let device_path = if self.devices.is_empty() {
                path.clone()
            } else {
                path.key("devices").index(i)
            };
            if serial && !(1..=247).contains(&device.unit_id) {
                out.push(Problem::new(
                    device_path.key("unit_id"),
                    format!(
                        "unit id {} is outside 1..=247 for a serial line (Modbus over Serial Line v1.02 §2.2)",
                        device.unit_id
                    ),
                ));
            }
            if !self.devices.is_empty() {
                if seen.contains(&device.id.as_str()) {
                    out.push(Problem::new(
                        device_path.key("id"),
                        format!("device id `{}` appears twice in this source", device.id),
                    ));
                }
                seen.push(&device.id);
            }
        }
        if self.timeout.is_zero() {
            out.push(Problem::new(
                path.key("timeout"),
                "timeout must be positive",
            ));
        }
        if self.poll.is_zero() {
            out.push(Problem::new(
                path.key("poll"),
                "poll interval must be positive",
            ));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            out.push(Problem::new(
                path.key("backoff_min"),
                "backoff_min must be positive and at most backoff_max",
            ));
        }
        if !(1..=125).contains(&self.max_read_registers) {
            out.push(Problem::new(
                path.key("max_read_registers"),
                format!(
                    "max_read_registers {} is outside 1..=125 (Modbus Application Protocol §6.3)",
                    self.max_read_registers
                ),
            ));
        }
        if !(1..=2000).contains(&self.max_read_bits) {
            out.push(Problem::new(
                path.key("max_read_bits"),
                format!(
                    "max_read_bits {} is outside 1..=2000 (Modbus Application Protocol §6.1)",
                    self.max_read_bits
                ),
            ));
        }
        if self.demote_after == 0 {
            out.push(Problem::new(
                path.key("demote_after"),
                "demote_after must be at least 1",
            ));
        }
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let Some((host, port)) = endpoint.rsplit_once(':') else {
        return Err(format!("endpoint `{endpoint}` is not `host:port`"));
    };
    if host.is_empty() {
        return Err(format!("endpoint `{endpoint}` has no host"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!(
            "endpoint `{endpoint}` has no valid port (1..=65535)"
        )),
        Ok(_) => Ok(()),
    }
}

impl ModbusBindingConfig {
    /// Semantic checks of one binding against the property it serves; `path` is the binding's key path.
    pub fn validate(&self, property: &PropertyConfig, path: &KeyPath, out: &mut Vec<Problem>) {
        let encoding = self.encoding();
        if self.table.is_bits() && encoding != Encoding::Bool {
            out.push(Problem::new(
                path.key("encoding"),
                format!(
                    "the {} table holds single bits; encoding `{}` needs registers",
                    self.table.as_str(),
                    encoding.as_str()
                ),
            ));
        } else if !self.table.is_bits() && encoding == Encoding::Bool {
            out.push(Problem::new(
                path.key("encoding"),
                "encoding `bool` reads a coil or discrete input; use `bit` with `bit = N` for a bit of a register",
            ));
        }
        let width = self.width();
        if self.address > 65_535 || self.address + width - 1 > 65_535 {
            out.push(Problem::new(
                path.key("address"),
                format!(
                    "address {} is outside 0..=65535{}",
                    self.address,
                    if width > 1 && self.address <= 65_535 {
                        format!(" (the value spans {width} registers)")
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        match (encoding, self.bit) {
            (Encoding::Bit, None) => out.push(Problem::new(
                path.clone(),
                "encoding `bit` needs `bit = 0..=15`",
            )),
            (Encoding::Bit, Some(bit)) if bit > 15 => out.push(Problem::new(
                path.key("bit"),
                format!("bit {bit} is outside 0..=15"),
            )),
            (Encoding::Bit, Some(_)) => {}
            (_, Some(_)) => out.push(Problem::new(
                path.key("bit"),
                "`bit` applies only to `encoding = \"bit\"`",
            )),
            (_, None) => {}
        }
        match (encoding, self.length) {
            (Encoding::String, None) => out.push(Problem::new(
                path.clone(),
                "encoding `string` needs `length` in registers (1..=125)",
            )),
            (Encoding::String, Some(length)) if !(1..=125).contains(&length) => {
                out.push(Problem::new(
                    path.key("length"),
                    format!("length {length} is outside 1..=125"),
                ))
            }
            (Encoding::String, Some(_)) => {}
            (_, Some(_)) => out.push(Problem::new(
                path.key("length"),
                "`length` applies only to `encoding = \"string\"`",
            )),
            (_, None) => {}
        }
        if let Some(order) = self.order
            && !encoding.accepts(order)
        {
            out.push(Problem::new(
                path.key("order"),
                format!(
                    "order `{}` does not apply to encoding `{}`",
                    order.as_str(),
                    encoding.as_str()
                ),
            ));
        }
        let compatible = match property.data_type {
            DataType::Bool => matches!(encoding, Encoding::Bool | Encoding::Bit),
            DataType::String => encoding == Encoding::String,
            DataType::Integer | DataType::Unsigned | DataType::Float => {
                !matches!(encoding, Encoding::String)
            }
        };
        if !compatible {
            out.push(Problem::new(
                path.key("encoding"),
                format!(
                    "encoding `{}` cannot carry a {:?} property",
                    encoding.as_str(),
                    property.data_type
                )
                .to_lowercase(),
            ));
        }
        let scaled = self.scale.is_some() || self.offset.is_some();
        if scaled && !property.data_type.is_numeric() {
            out.push(Problem::new(
                path.key("scale"),
                "scaling applies only to numeric properties",
            ));
        }
        if self.scale == Some(0.0) || self.scale.is_some_and(|s| !s.is_finite()) {
            out.push(Problem::new(
                path.key("scale"),
                "scale must be a finite non-zero number (writes divide by it)",
            ));
        }
        if self.offset.is_some_and(|o| !o.is_finite()) {
            out.push(Problem::new(
                path.key("offset"),
                "offset must be a finite number",
            ));
        }
        if self.poll.is_some_and(|p| p.is_zero()) {
            out.push(Problem::new(
                path.key("poll"),
                "poll interval must be positive",
            ));
        }
        if property.access == Access::ReadWrite && !self.table.is_writable() {
            out.push(Problem::new(
                path.key("table"),
                format!(
                    "property `{}` is read-write but the {} table cannot be written",
                    property.name,
                    self.table.as_str()
                ),
            ));
        }
    }
}

/// How a value is laid out in registers or bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One coil or discrete input.
    Bool,
    /// One bit of a register (`bit = 0..=15`, 0 = least significant).
    Bit,
    /// Signed 16-bit integer, one register.
    I16,
    /// Unsigned 16-bit integer, one register.
    U16,
    /// Signed 32-bit integer, two registers.
    I32,
    /// Unsigned 32-bit integer, two registers.
    U32,
    /// Signed 64-bit integer, four registers.
    I64,
    /// Unsigned 64-bit integer, four registers.
    U64,
    /// IEEE 754 binary32, two registers.
    F32,
    /// IEEE 754 binary64, four registers.
    F64,
    /// Fixed-length text, two bytes per register, NUL-padded.
    String,
}

impl Encoding {
    /// Every encoding, for table tests and error messages.
    pub const ALL: [Self; 11] = [
        Self::Bool,
        Self::Bit,
        Self::I16,
        Self::U16,
        Self::I32,
        Self::U32,
        Self::I64,
        Self::U64,
        Self::F32,
        Self::F64,
        Self::String,
    ];

    /// Registers occupied; `string_length` is the configured length of a string in registers.
    /// Bit-table encodings occupy one bit and report 1.
    pub fn registers(self, string_length: u16) -> u16 {
        match self {
            Self::Bool | Self::Bit | Self::I16 | Self::U16 => 1,
            Self::I32 | Self::U32 | Self::F32 => 2,
            Self::I64 | Self::U64 | Self::F64 => 4,
            Self::String => string_length.max(1),
        }
    }

    /// Whether `order` means anything for this encoding.
    pub fn accepts(self, order: WordOrder) -> bool {
        match self {
            Self::Bool | Self::Bit | Self::I16 | Self::U16 => order == WordOrder::Abcd,
            Self::String => matches!(order, WordOrder::Abcd | WordOrder::Badc),
            _ => true,
        }
    }

    /// Name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::Bit => "bit",
            Self::I16 => "i16",
            Self::U16 => "u16",
            Self::I32 => "i32",
            Self::U32 => "u32",
            Self::I64 => "i64",
            Self::U64 => "u64",
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::String => "string",
        }
    }
}

/// Word and byte order of multi-register values (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub enum WordOrder {
    /// Big-endian: high word first, high byte first.
    #[default]
    #[serde(rename = "ABCD")]
    Abcd,
    /// Bytes swapped within each word.
    #[serde(rename = "BADC")]
    Badc,
    /// Words reversed, bytes in order.
    #[serde(rename = "CDAB")]
    Cdab,
    /// Little-endian: words reversed and bytes swapped.
    #[serde(rename = "DCBA")]
    Dcba,
}

impl WordOrder {
    /// All four orders.
    pub const ALL: [Self; 4] = [Self::Abcd, Self::Badc, Self::Cdab, Self::Dcba];

    /// Name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Abcd => "ABCD",
            Self::Badc => "BADC",
            Self::Cdab => "CDAB",
            Self::Dcba => "DCBA",
        }
    }

    /// Whether the two bytes of each register are swapped (`BADC`, `DCBA`).
    pub fn swaps_bytes(self) -> bool {
        matches!(self, Self::Badc | Self::Dcba)
    }

    /// Whether the registers come in reverse order (`CDAB`, `DCBA`).
    pub fn swaps_words(self) -> bool {
        matches!(self, Self::Cdab | Self::Dcba)
    }
}

impl SourceSection for ModbusSourceConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn device_ids(&self) -> Vec<String> {
        self.device_list().into_iter().map(|d| d.id).collect()
    }

    fn claims(&self) -> Vec<(&'static str, String)> {
        self.rtu
            .iter()
            .map(|rtu| ("rtu.port", rtu.port.clone()))
            .collect()
    }

    fn default_poll(&self) -> Duration {
        self.poll
    }

    fn validate(&self, path: &KeyPath, out: &mut Vec<Problem>) {
        Self::validate(self, path, out);
    }

    /// Nothing writes a bound register behind the gate: two read-write properties of one device
    /// may not share a coil, a register or a register bit (bits of one register, `encoding =
    /// "bit"` with different `bit`s, stay legal: each is written alone with FC22, Modbus
    /// Application Protocol §6.16), and the heartbeat may not write a register any property is
    /// bound to. Each problem is reported at the later binding (or at the heartbeat's address),
    /// naming the earlier one.
    fn validate_bindings(&self, path: &KeyPath, bindings: &[Bound<'_>], out: &mut Vec<Problem>) {
        let devices = self.device_list();
        let unit = |device: Option<&str>| match device {
            Some(id) => devices.iter().find(|d| d.id == id).map(|d| d.unit_id),
            None => (devices.len() == 1).then(|| devices[0].unit_id),
        };
        let spans: Vec<(&Bound<'_>, Span)> = bindings
            .iter()
            .filter_map(|bound| match bound.binding {
                BindingConfig::Modbus(binding) => {
                    Some((bound, Span::of(binding, unit(bound.device)?)))
                }
                _ => None,
            })
            .collect();
        for (i, (later, span)) in spans.iter().enumerate() {
            if !later.writable {
                continue;
            }
            let earlier = spans[..i]
                .iter()
                .find(|(bound, other)| bound.writable && span.overlaps(other));
            if let Some((earlier, _)) = earlier {
                out.push(Problem::new(
                    later.path.clone(),
                    format!(
                        "{} is also written by `{}`: two read-write properties may not write the same register, bit or coil",
                        span.describe(),
                        earlier.path
                    ),
                ));
            }
        }
        if let Some(heartbeat) = &self.heartbeat {
            let beat = Span {
                unit: heartbeat.unit_id.or(self.unit_id).unwrap_or(1),
                table: RegisterTable::Holding,
                first: u32::from(heartbeat.address),
                last: u32::from(heartbeat.address),
                bit: None,
            };
            if let Some((bound, _)) = spans.iter().find(|(_, span)| beat.overlaps(span)) {
                out.push(Problem::new(
                    path.key("heartbeat").key("address"),
                    format!(
                        "the heartbeat writes {}, which `{}` is bound to: give the heartbeat a register of its own",
                        beat.describe(),
                        bound.path
                    ),
                ));
            }
        }
    }
}

/// The coils, registers or register bit one binding occupies on its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    unit: u8,
    table: RegisterTable,
    /// First and last address (inclusive).
    first: u32,
    last: u32,
    /// The bit inside the register, for `encoding = "bit"`.
    bit: Option<u8>,
}

impl Span {
    fn of(binding: &ModbusBindingConfig, unit: u8) -> Self {
        Self {
            unit,
            table: binding.table,
            first: binding.address,
            last: binding.address + binding.width().max(1) - 1,
            bit: (binding.encoding() == Encoding::Bit)
                .then_some(binding.bit)
                .flatten(),
        }
    }

    /// Whether the two share a coil, a register or a bit (two different bits of one register
    /// do not).
    fn overlaps(&self, other: &Self) -> bool {
        self.unit == other.unit
            && self.table == other.table
            && self.first <= other.last
            && other.first <= self.last
            && !matches!((self.bit, other.bit), (Some(a), Some(b)) if a != b)
    }

    /// E.g. `holding registers 4..=5 of unit 1`, `bit 3 of holding register 7 of unit 2`.
    fn describe(&self) -> String {
        let table = self.table.as_str();
        let what = match (self.bit, self.first == self.last, self.table.is_bits()) {
            (Some(bit), ..) => format!("bit {bit} of {table} register {}", self.first),
            (None, true, true) => format!("{table} {}", self.first),
            (None, true, false) => format!("{table} register {}", self.first),
            (None, false, _) => format!("{table} registers {}..={}", self.first, self.last),
        };
        format!("{what} of unit {}", self.unit)
    }
}

impl BindingSection for ModbusBindingConfig {
    fn scaling(&self) -> Scaling {
        Scaling::configured(self.scale, self.offset)
    }

    fn poll(&self) -> Option<Duration> {
        self.poll
    }

    fn refresh_interval(&self, default: Duration) -> Option<Duration> {
        Some(self.poll.unwrap_or(default))
    }
    fn validate(
        &self,
        property: &PropertyConfig,
        _config: &crate::config::Config,
        path: &KeyPath,
        out: &mut Vec<Problem>,
    ) {
        Self::validate(self, property, path, out);
    }
}
