//! What can go wrong when a value is written to a device, in terms every source shares.
//!
//! Sources turn their protocol's failures into these kinds (a Modbus exception becomes
//! [`WriteError::DeviceRejected`] with the exception code in its detail); the control gate and the
//! OPC UA server act on the kind and never see a protocol type.

/// Why a write did not reach the device, or the device did not take it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// No running source serves the property.
    #[error("property is not bound to a source")]
    NotBound,
    /// The binding cannot be written at all (`detail` says why, e.g. an input register).
    #[error("not writable: {detail}")]
    NotWritable {
        /// Why, in the source's terms.
        detail: String,
    },
    /// The source has no connection to the device right now (or lost it during the write).
    #[error("not connected")]
    NotConnected,
    /// The source is stopping or stopped (shutdown, reload).
    #[error("the source is not running")]
    Stopped,
    /// The device did not answer within the source's timeout; whether it took the value is
    /// unknown until it is read back.
    #[error("no answer within the timeout")]
    Timeout,
    /// The write's deadline passed before the request went on the wire: nothing was sent (the
    /// proposer had been answered already; see `crate::sources::DeviceWrite`).
    #[error("the deadline passed before the request was sent; nothing was sent")]
    Expired,
    /// The guard the source calls immediately before sending refused (an interlock no longer
    /// holds): nothing was sent.
    #[error("held before sending: {detail}")]
    Held {
        /// Why the guard refused.
        detail: String,
    },
    /// The device answered and refused the write (`detail` carries the protocol's code, e.g.
    /// `Modbus exception 2 (illegal_data_address)`).
    #[error("device rejected the write: {detail}")]
    DeviceRejected {
        /// The protocol's code and name.
        detail: String,
    },
    /// The value cannot be encoded for the device (wrong kind for the binding's encoding).
    #[error("cannot encode value: {detail}")]
    Encoding {
        /// What did not fit.
        detail: String,
    },
    /// The value is outside what the binding's encoding can represent.
    #[error("value out of range: {detail}")]
    OutOfRange {
        /// What did not fit.
        detail: String,
    },
    /// The device took the write, but reading it back at once gave another image (the PLC's
    /// logic or an HMI overrode it, or the register does not hold what is written).
    #[error("read back differs: {detail}")]
    ReadBackMismatch {
        /// The image written and the image read, in the protocol's terms.
        detail: String,
    },
}
