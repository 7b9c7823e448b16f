//! Carrying out a decided write: its intent on disk first ([`super::audit`]), then the device
//! through [`Writers`] within the write timeout (or the proposer's deadline), then its outcome.
//! Each write in flight is one [`Executor::run`] future holding cheap clones; the gate runs
//! them side by side, at most one per property.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audit::AuditLog;
use super::events::{AuditRecordLost, OnLossUnaudited, Unaudited};
use super::interlock::Interlocks;
use super::policy::Accepted;
use super::{ControlError, Proposal};
use crate::sources::Writers;
use crate::telemetry::metrics::ControlMetrics;
use crate::twin::{Twin, WriteError};

/// The rule name of an `on_loss` write in the audit log and metrics.
pub(super) const ON_LOSS: &str = "on-loss";

/// A write being carried out: it ends with its proposal, the rule that accepted it and the
/// outcome.
pub(super) type Carried =
    futures::future::BoxFuture<'static, (Proposal, &'static str, Result<(), ControlError>)>;

/// A decided write waiting for its property's turn.
#[derive(Debug)]
pub(super) struct Job {
    pub proposal: Proposal,
    pub accepted: Accepted,
    /// An `on_loss` write: carried out even when it cannot be audited, with no interlock or
    /// proposer to wait for.
    pub forced: bool,
}

/// What the gate carries out with: cheap clones every write in flight holds.
#[derive(Debug, Clone)]
pub(super) struct Executor {
    pub twin: Arc<Twin>,
    pub writers: Writers,
    pub audit: AuditLog,
    pub write_timeout: Duration,
    pub metrics: ControlMetrics,
    pub interlocks: Arc<Interlocks>,
}

impl Executor {
    /// Carries out `job`: its intent on disk first, then the device (within the write timeout),
    /// then its outcome. A proposer that has gone meanwhile (an OPC UA client that timed out)
    /// gets nothing written: `expired`.
    pub async fn run(self, job: Job) -> (Proposal, &'static str, Result<(), ControlError>) {
        let Job {
            proposal,
            accepted,
            forced,
        } = job;
        let rule = match (forced, accepted.clamped) {
            (true, _) => ON_LOSS,
            (false, true) => "clamped-to-bounds",
            (false, false) => "accepted",
        };
        let gone =
            proposal.reply.is_closed() || proposal.deadline.is_some_and(|at| at <= Instant::now());
        if !forced && gone {
            return (proposal, rule, Err(ControlError::Expired));
        }
        // The interlocks again: the write may have waited for its turn while a condition changed.
        if !forced && let Err(held) = self.interlocks.check(&self.twin, proposal.property) {
            return (proposal, rule, Err(held));
        }
        let path = self.twin.model().property(proposal.property).path.clone();
        let old = self.twin.sample(proposal.property).value;
        let intent = match self
            .audit
            .intent(&proposal, &path, old.as_ref(), &accepted.value, rule)
            .await
        {
            Ok(intent) => Some(intent),
            // The fallback is written even when it cannot be audited: refusing it could leave a
            // heater at full power.
            Err(error) if forced => {
                OnLossUnaudited {
                    property: &path,
                    error: &error,
                }
                .emit();
                None
            }
            Err(error) => return (proposal, rule, Err(error)),
        };
        let started = Instant::now();
        let ends = proposal
            .deadline
            .map_or(started + self.write_timeout, |at| {
                at.min(started + self.write_timeout)
            });
        let result = match tokio::time::timeout_at(
            ends.into(),
            self.writers.write(proposal.property, accepted.value),
        )
        .await
        {
            Ok(written) => written.map_err(ControlError::from),
            Err(_) => Err(ControlError::Source(WriteError::Timeout)),
        };
        self.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        if let Some(intent) = intent
            && let Err(error) = self.audit.outcome(intent, &result, started.elapsed()).await
        {
            AuditRecordLost {
                record: Unaudited::Outcome {
                    property: &path,
                    intent,
                },
                error: &error,
            }
            .emit();
        }
        (proposal, rule, result)
    }
}
