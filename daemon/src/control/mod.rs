//! The control gate: the only way a write reaches a device.
//!
//! OPC UA clients (and, later, plugins) *propose* writes by sending a [`WriteRequest`] to the
//! gate's bounded queue. The gate checks the proposal against the property's declaration
//! (read-write access, data type, write limits in engineering units), forwards accepted writes to
//! the owning source through [`Writers`], logs every decision with its origin, and answers.
//! Richer policy (rate limits, interlocks, quality conditions) and a persistent audit log belong
//! to the control-path issue; they will live here, behind the same handle.

use std::fmt;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::runtime::Supervisor;
use crate::sources::Writers;
use crate::twin::{Access, DataType};
use crate::twin::{PropertyId, Twin, Value, WriteError};

/// Write proposals queued at the gate before `write` waits (a full queue slows proposers, not the gate).
pub const CONTROL_QUEUE_CAPACITY: usize = 256;

/// Who proposed a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An OPC UA client session, by user name (`anonymous` for anonymous sessions).
    OpcUa {
        /// The session's user.
        user: String,
    },
    /// A plugin, by instance name.
    Plugin {
        /// The plugin instance.
        name: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OpcUa { user } => write!(f, "opcua:{user}"),
            Self::Plugin { name } => write!(f, "plugin:{name}"),
        }
    }
}

/// Why the gate refused or could not carry out a write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    /// The property is read-only.
    #[error("property is read-only")]
    NotWritable,
    /// The value's kind does not fit the property's data type.
    #[error("value {0} does not fit the property's data type")]
    TypeMismatch(String),
    /// The value lies outside the property's write limits.
    #[error("value {value} is outside the write limits [{low}, {high}]")]
    OutOfLimits {
        /// The proposed value.
        value: f64,
        /// Lowest allowed.
        low: f64,
        /// Highest allowed.
        high: f64,
    },
    /// The source could not write it.
    #[error("source refused the write: {0}")]
    Source(#[from] WriteError),
    /// The gate's queue ([`CONTROL_QUEUE_CAPACITY`]) is full; the proposal was not queued.
    #[error("the control gate's queue is full")]
    QueueFull,
    /// The gate is not running.
    #[error("the control gate is not running")]
    Closed,
}

/// A write proposal.
#[derive(Debug)]
pub struct WriteRequest {
    /// The property to write.
    pub property: PropertyId,
    /// The value in engineering units.
    pub value: Value,
    /// Who proposes it.
    pub origin: Origin,
    /// Where the decision goes.
    pub reply: oneshot::Sender<Result<(), ControlError>>,
}

impl WriteRequest {
    /// A request and the receiver its outcome arrives on.
    fn new(
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> (Self, oneshot::Receiver<Result<(), ControlError>>) {
        let (reply, answer) = oneshot::channel();
        let request = Self {
            property,
            value,
            origin,
            reply,
        };
        (request, answer)
    }
}

/// Proposes writes to the gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::Sender<WriteRequest>,
}

impl ControlHandle {
    /// Proposes writing `value` (engineering units) to `property` and waits for the outcome.
    ///
    /// Errors: see [`ControlError`].
    pub async fn write(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> Result<(), ControlError> {
        let (request, answer) = WriteRequest::new(property, value, origin);
        self.tx
            .send(request)
            .await
            .map_err(|_| ControlError::Closed)?;
        answer.await.map_err(|_| ControlError::Closed)?
    }

    /// Queues a write proposal without waiting for its outcome (a plugin's proposals: the gate
    /// decides and logs each one). Never waits: when the gate's queue is full the proposal is
    /// not queued. Returns where the outcome arrives; a receiver whose sender is dropped means
    /// the gate dropped the proposal unanswered (it stopped).
    ///
    /// Errors: [`ControlError::QueueFull`], or [`ControlError::Closed`] when the gate stopped.
    pub fn propose(
        &self,
        property: PropertyId,
        value: Value,
        origin: Origin,
    ) -> Result<oneshot::Receiver<Result<(), ControlError>>, ControlError> {
        let (request, outcome) = WriteRequest::new(property, value, origin);
        self.tx.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => ControlError::QueueFull,
            mpsc::error::TrySendError::Closed(_) => ControlError::Closed,
        })?;
        Ok(outcome)
    }
}

#[cfg(test)]
impl ControlHandle {
    /// A handle whose gate is gone: every write answers [`ControlError::Closed`]. For tests of
    /// components that hold a handle but propose nothing.
    pub(crate) fn detached() -> Self {
        let (tx, _) = mpsc::channel(1);
        Self { tx }
    }
}

/// Starts the gate under `supervisor`.
pub fn spawn(twin: Arc<Twin>, writers: Writers, supervisor: &Supervisor) -> ControlHandle {
    let (tx, mut rx) = mpsc::channel::<WriteRequest>(CONTROL_QUEUE_CAPACITY);
    supervisor.spawn("control-gate", move |token| async move {
        loop {
            let request = tokio::select! {
                () = token.cancelled() => return Ok(()),
                request = rx.recv() => match request {
                    Some(request) => request,
                    None => return Ok(()),
                },
            };
            let outcome = decide(&twin, &request).map(|value| (value, writers.clone()));
            let outcome = match outcome {
                Ok((value, writers)) => writers
                    .write(request.property, value)
                    .await
                    .map_err(ControlError::from),
                Err(refused) => Err(refused),
            };
            WriteDecided {
                property: &twin.model().property(request.property).path,
                request: &request,
                outcome: &outcome,
            }
            .emit();
            let _ = request.reply.send(outcome);
        }
    });
    ControlHandle { tx }
}

/// Checks a proposal against the property's declaration; returns the value to write.
/// The gate decided a proposal (and, when accepted, the device answered): the one event per
/// decision, logged with its origin. The control-path work adds its audit record here.
#[derive(Debug)]
struct WriteDecided<'a> {
    property: &'a str,
    request: &'a WriteRequest,
    outcome: &'a Result<(), ControlError>,
}

impl WriteDecided<'_> {
    fn emit(&self) {
        let (property, value, origin) = (self.property, &self.request.value, &self.request.origin);
        match self.outcome {
            Ok(()) => tracing::info!(%property, %value, %origin, "Write accepted and carried out"),
            Err(error) => tracing::warn!(%property, %value, %origin, %error, "Write refused"),
        }
    }
}

fn decide(twin: &Twin, request: &WriteRequest) -> Result<Value, ControlError> {
    let decl = twin.model().decl(request.property);
    if decl.access != Access::ReadWrite {
        return Err(ControlError::NotWritable);
    }
    let mismatch = || ControlError::TypeMismatch(request.value.to_string());
    let value = match decl.data_type {
        DataType::Bool => Value::Bool(request.value.as_bool().ok_or_else(mismatch)?),
        DataType::Integer => Value::Int(request.value.as_i64().ok_or_else(mismatch)?),
        DataType::Unsigned => Value::UInt(request.value.as_u64().ok_or_else(mismatch)?),
        DataType::Float => Value::Float(request.value.as_f64().ok_or_else(mismatch)?),
        DataType::String => match &request.value {
            Value::String(_) => request.value.clone(),
            _ => return Err(mismatch()),
        },
    };
    if let (Some(limits), Some(v)) = (decl.limits, value.as_f64())
        && !(v.is_finite() && limits.contains(v))
    {
        return Err(ControlError::OutOfLimits {
            value: v,
            low: limits.low,
            high: limits.high,
        });
    }
    Ok(value)
}
