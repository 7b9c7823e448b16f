//! A plugin instance's write proposals on their way through the control gate, and the outcomes
//! the instance is told of (contract 0.3: every proposal gets exactly one outcome, delivered with
//! the first call after it is known).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::control::ControlError;
use crate::plugins::contract::{DeviceErrorKind, Outcome};
use crate::plugins::runtime::ProposalOutcome;
use crate::twin::WriteError;

pub(super) use crate::control::rule;

/// What the gate's answer means to the plugin.
pub(super) fn outcome_of(answer: Result<(), ControlError>) -> Outcome {
    match answer {
        Ok(()) => Outcome::Written,
        Err(ControlError::Closed | ControlError::Expired) => Outcome::Expired,
        Err(ControlError::Superseded) => Outcome::Superseded,
        Err(ControlError::Disarmed) => Outcome::Disarmed,
        Err(ControlError::Shadow) => Outcome::Shadow,
        Err(ControlError::Source(WriteError::ReadBackMismatch { .. })) => Outcome::ReadBackMismatch,
        Err(ControlError::Source(error)) => Outcome::DeviceError(match error {
            WriteError::NotBound => DeviceErrorKind::NotBound,
            WriteError::NotWritable { .. } => DeviceErrorKind::NotWritable,
            WriteError::NotConnected => DeviceErrorKind::NotConnected,
            WriteError::Stopped => DeviceErrorKind::Stopped,
            // The gate answers these as `expired` and `interlock` refusals; the contract's
            // nearest kinds otherwise.
            WriteError::Expired => DeviceErrorKind::Timeout,
            WriteError::Held { .. } => DeviceErrorKind::DeviceRejected,
            WriteError::Timeout => DeviceErrorKind::Timeout,
            WriteError::DeviceRejected { .. } => DeviceErrorKind::DeviceRejected,
            WriteError::Encoding { .. } => DeviceErrorKind::Encoding,
            WriteError::OutOfRange { .. } => DeviceErrorKind::OutOfRange,
            WriteError::ReadBackMismatch { .. } => unreachable!("answered above"),
        }),
        // Every other answer is a refusal by a named rule (`ControlError::rule` is exhaustive).
        Err(error) => Outcome::Refused(error.rule().unwrap_or(rule::QUEUE).into()),
    }
}

/// A proposal the gate has not answered yet.
#[derive(Debug)]
struct Waiting {
    proposal: u64,
    index: u32,
    answer: oneshot::Receiver<Result<(), ControlError>>,
}

/// One instance's proposals: numbering, those waiting for the gate, outcomes not yet delivered.
#[derive(Debug, Default)]
pub(super) struct Proposals {
    next: u64,
    waiting: Vec<Waiting>,
    known: Vec<ProposalOutcome>,
}

impl Proposals {
    /// The next proposal's number.
    pub fn number(&mut self) -> u64 {
        let number = self.next;
        self.next += 1;
        number
    }

    /// How many outcomes are known and not yet delivered (a mark for [`Self::refused_since`]).
    pub fn known(&self) -> usize {
        self.known.len()
    }

    /// The rules of the refusals decided since `mark` (from [`Self::known`]).
    pub fn refused_since(&self, mark: usize) -> impl Iterator<Item = &str> {
        self.known[mark.min(self.known.len())..]
            .iter()
            .filter_map(|known| match &known.outcome {
                Outcome::Refused(rule) => Some(rule.as_str()),
                _ => None,
            })
    }

    /// Proposal `proposal` (to writable `index`) was decided at once.
    pub fn decided(&mut self, proposal: u64, index: u32, outcome: Outcome) {
        self.known.push(ProposalOutcome {
            proposal,
            index,
            outcome,
        });
    }

    /// Proposal `proposal` went to the gate; its answer arrives on `answer`.
    pub fn sent(
        &mut self,
        proposal: u64,
        index: u32,
        answer: oneshot::Receiver<Result<(), ControlError>>,
    ) {
        self.waiting.push(Waiting {
            proposal,
            index,
            answer,
        });
    }

    /// The outcomes known now and not yet delivered, in proposal order; they count as delivered.
    pub fn deliver(&mut self) -> Arc<[ProposalOutcome]> {
        let known = &mut self.known;
        self.waiting.retain_mut(|waiting| {
            let outcome = match waiting.answer.try_recv() {
                Ok(answer) => outcome_of(answer),
                Err(oneshot::error::TryRecvError::Empty) => return true,
                // The gate dropped the proposal unanswered: it stopped.
                Err(oneshot::error::TryRecvError::Closed) => Outcome::Expired,
            };
            known.push(ProposalOutcome {
                proposal: waiting.proposal,
                index: waiting.index,
                outcome,
            });
            false
        });
        self.known.sort_by_key(|o| o.proposal);
        self.known.drain(..).collect()
    }

    /// A new instance starts: its numbering starts at 0 and the old instance's outcomes are
    /// dropped (the new one never made those proposals).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proposal_gets_one_outcome_in_order_once_known() {
        let mut proposals = Proposals::default();
        let first = proposals.number();
        let (answer_first, first_rx) = oneshot::channel();
        proposals.sent(first, 0, first_rx);
        let second = proposals.number();
        proposals.decided(second, 7, Outcome::Refused(rule::WRITABLE_LIST.into()));
        let third = proposals.number();
        let (answer_third, third_rx) = oneshot::channel::<Result<(), ControlError>>();
        proposals.sent(third, 1, third_rx);
        // Only the refusal is known: the gate has answered nothing yet.
        let delivered = proposals.deliver();
        assert_eq!(delivered.len(), 1);
        assert_eq!((delivered[0].proposal, delivered[0].index), (1, 7));
        answer_first
            .send(Err(ControlError::Source(WriteError::Timeout)))
            .unwrap();
        drop(answer_third);
        let delivered = proposals.deliver();
        assert_eq!(
            delivered
                .iter()
                .map(|o| (o.proposal, o.outcome.clone()))
                .collect::<Vec<_>>(),
            [
                (0, Outcome::DeviceError(DeviceErrorKind::Timeout)),
                (2, Outcome::Expired)
            ]
        );
        assert!(proposals.deliver().is_empty());
        proposals.reset();
        assert_eq!(proposals.number(), 0);
    }

    #[test]
    fn the_gates_answers_map_to_named_rules() {
        assert_eq!(outcome_of(Ok(())), Outcome::Written);
        assert_eq!(
            outcome_of(Err(ControlError::QueueFull)),
            Outcome::Refused("queue".into())
        );
        assert_eq!(
            outcome_of(Err(ControlError::OutOfLimits {
                value: 1.0,
                low: 2.0,
                high: 3.0
            })),
            Outcome::Refused("bounds".into())
        );
    }
}
