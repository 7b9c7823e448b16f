//! Opening a Modbus connection: TCP (MBAP), RTU over a serial port, RTU frames over TCP.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_modbus::client::{Context, rtu, tcp};

use crate::config::sources::modbus::{ModbusSourceConfig, Parity, RtuConfig};

/// Where and how a Modbus source connects.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Modbus TCP to `host:port` (Modbus Messaging on TCP/IP Implementation Guide v1.0b).
    Tcp(String),
    /// RTU frames (with CRC) over a TCP connection to a serial gateway at `host:port`.
    RtuOverTcp(String),
    /// RTU over a local serial port (Modbus over Serial Line v1.02).
    Rtu(RtuConfig),
}

impl Transport {
    /// The transport a validated source config names.
    pub fn from_config(config: &ModbusSourceConfig) -> Self {
        if let Some(endpoint) = &config.tcp {
            Self::Tcp(endpoint.clone())
        } else if let Some(endpoint) = &config.rtu_over_tcp {
            Self::RtuOverTcp(endpoint.clone())
        } else if let Some(rtu) = &config.rtu {
            Self::Rtu(rtu.clone())
        } else {
            // Validation requires exactly one transport.
            Self::Tcp(String::new())
        }
    }

    /// The silent interval to keep between requests: 3.5 character times on serial lines
    /// (Modbus over Serial Line v1.02 §2.5.1.1), none on TCP.
    pub fn frame_gap(&self) -> Duration {
        match self {
            Self::Rtu(rtu) => rtu.frame_gap(),
            Self::Tcp(_) | Self::RtuOverTcp(_) => Duration::ZERO,
        }
    }

    /// [`Self::connect`], given up after `limit`: the one way the poller connects.
    ///
    /// Errors: those of [`Self::connect`] as text, or `connect timed out`.
    pub async fn connect_within(&self, limit: Duration) -> Result<Context, String> {
        match tokio::time::timeout(limit, self.connect()).await {
            Ok(Ok(ctx)) => Ok(ctx),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connect timed out".to_owned()),
        }
    }

    /// A fresh client context (new transaction ids, empty buffers).
    ///
    /// Errors: the endpoint does not resolve, refuses the connection, or the serial port cannot be opened.
    pub async fn connect(&self) -> io::Result<Context> {
        match self {
            Self::Tcp(endpoint) => {
                let stream = TcpStream::connect(endpoint.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(tcp::attach(stream))
            }
            Self::RtuOverTcp(endpoint) => {
                let stream = TcpStream::connect(endpoint.as_str()).await?;
                stream.set_nodelay(true)?;
                Ok(rtu::attach(stream))
            }
            Self::Rtu(config) => {
                let builder = tokio_serial::new(&config.port, config.baud)
                    .parity(match config.parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .data_bits(if config.data_bits == 7 {
                        tokio_serial::DataBits::Seven
                    } else {
                        tokio_serial::DataBits::Eight
                    })
                    .stop_bits(if config.stop_bits == 2 {
                        tokio_serial::StopBits::Two
                    } else {
                        tokio_serial::StopBits::One
                    });
                let port = tokio_serial::SerialStream::open(&builder).map_err(io::Error::other)?;
                Ok(rtu::attach(port))
            }
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(endpoint) => write!(f, "tcp://{endpoint}"),
            Self::RtuOverTcp(endpoint) => write!(f, "rtu-over-tcp://{endpoint}"),
            Self::Rtu(rtu) => write!(f, "rtu://{}@{}", rtu.port, rtu.baud),
        }
    }
}
