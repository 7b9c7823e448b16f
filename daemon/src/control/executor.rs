//! Carrying out a decided write: its intent on disk first ([`super::audit`]), then the device
//! through [`Writers`] within the write timeout (or the proposer's deadline), then its outcome.
//! Each write in flight is one [`Executor::run`] future holding cheap clones; the gate runs
//! them side by side, at most one per property awaited by its proposer. A write whose deadline
//! came first continues as a [`Late`] future that only audits the source's answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::audit::AuditLog;
use super::events::{AuditRecordLost, OnLossUnaudited, Unaudited};
use super::interlock::Interlocks;
use super::policy::Accepted;
use super::{ControlError, Proposal};
use crate::sources::{DeviceWrite, SendGuard, Writers};
use crate::telemetry::metrics::ControlMetrics;
use crate::twin::{Twin, Value, WriteError};

/// The rule name of an `on_loss` write in the audit log and metrics.
pub(super) const ON_LOSS: &str = "on-loss";

/// A write being carried out: it ends with its proposal, the rule that accepted it, the outcome
/// to answer, and — when the proposer's deadline came first — the rest of it ([`Late`]).
pub(super) type Carried = futures::future::BoxFuture<'static, Ended>;

/// What [`Executor::run`] ends with.
pub(super) type Ended = (
    Proposal,
    &'static str,
    Result<(), ControlError>,
    Option<Late>,
);

/// The rest of a write whose proposer was answered at its deadline: it waits for the source's
/// answer (the request may be on the wire) and audits it as the outcome.
pub(super) type Late = futures::future::BoxFuture<'static, ()>;

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
    /// Carries `job` out: its intent on disk first, then the device, then its outcome.
    ///
    /// When the checks run: before the intent, the write is dropped (`expired`) when its proposer
    /// has gone or its deadline passed, and refused when an interlock no longer holds (it may
    /// have waited for its turn); after the intent is on disk, the source checks the interlocks
    /// once more immediately before the request goes on the wire (the [`SendGuard`]), and drops
    /// the request if the deadline passed while it waited in the source's queue.
    ///
    /// The device write ends at the proposer's deadline or the write timeout, whichever is
    /// first: the proposer is then answered `timeout` at once, and the returned [`Late`] waits
    /// for the source's answer and audits it (`not-sent`, or `unknown` with the device's answer
    /// and what it holds), so the audit says what the device got.
    pub async fn run(self, job: Job) -> Ended {
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
            return (proposal, rule, Err(ControlError::Expired), None);
        }
        // The interlocks again: the write may have waited for its turn while a condition changed.
        if !forced && let Err(held) = self.interlocks.check(&self.twin, proposal.property) {
            return (proposal, rule, Err(held), None);
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
            Err(error) => return (proposal, rule, Err(error), None),
        };
        let started = Instant::now();
        let ends = proposal
            .deadline
            .map_or(started + self.write_timeout, |at| {
                at.min(started + self.write_timeout)
            });
        // The interlock refusal the guard saw, to answer with it rather than with its text.
        let held: Arc<Mutex<Option<ControlError>>> = Arc::default();
        let guard: Option<SendGuard> = (!forced).then(|| {
            let (twin, interlocks, property) = (
                Arc::clone(&self.twin),
                Arc::clone(&self.interlocks),
                proposal.property,
            );
            let held = Arc::clone(&held);
            Arc::new(move || {
                interlocks.check(&twin, property).map_err(|refused| {
                    let detail = refused.to_string();
                    *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(refused);
                    detail
                })
            }) as SendGuard
        });
        let writers = self.writers.clone();
        let write = DeviceWrite {
            property: proposal.property,
            value: accepted.value.clone(),
            deadline: ends,
            guard,
        };
        let mut sending: futures::future::BoxFuture<'static, _> =
            Box::pin(async move { writers.write(write).await });
        let answer = match tokio::time::timeout_at(ends.into(), &mut sending).await {
            Ok(answer) => answer,
            Err(_) => {
                self.metrics
                    .write_latency
                    .observe(started.elapsed().as_secs_f64());
                let late = intent.map(|intent| self.late(intent, path, started, sending));
                return (
                    proposal,
                    rule,
                    Err(ControlError::Source(WriteError::Timeout)),
                    late,
                );
            }
        };
        self.metrics
            .write_latency
            .observe(started.elapsed().as_secs_f64());
        let holds = answer.as_ref().ok().cloned().flatten();
        let result = match answer {
            Ok(_) => Ok(()),
            Err(WriteError::Held { .. }) => Err(held
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or(ControlError::Expired)),
            Err(WriteError::Expired) => Err(ControlError::Expired),
            Err(error) => Err(ControlError::Source(error)),
        };
        if let Some(intent) = intent
            && let Err(error) = self
                .audit
                .outcome(intent, &result, holds.as_ref(), started.elapsed())
                .await
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
        (proposal, rule, result, None)
    }

    /// The rest of a write whose proposer was answered at the deadline: waits for `sending`
    /// (the source answers `expired` at once for a request it had not sent; one on the wire is
    /// bounded by the source's own timeout) and audits the answer as intent `intent`'s outcome.
    fn late(
        &self,
        intent: u64,
        path: String,
        started: Instant,
        sending: futures::future::BoxFuture<'static, Result<Option<Value>, WriteError>>,
    ) -> Late {
        let audit = self.audit.clone();
        Box::pin(async move {
            let answer = sending.await;
            if let Err(error) = audit.late_outcome(intent, &answer, started.elapsed()).await {
                AuditRecordLost {
                    record: Unaudited::Outcome {
                        property: &path,
                        intent,
                    },
                    error: &error,
                }
                .emit();
            }
        })
    }
}
