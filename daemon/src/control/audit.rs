//! The audit log of the control gate, on a [`Journal`](crate::runtime::journal::Journal): every
//! write the gate carries out has an **intent** record, on disk before the device is written, and
//! an **outcome** record after; refusals are counted per origin and rule and summarised in one
//! **refusals** record per [`REFUSAL_SUMMARY_INTERVAL`] (a flood of refused proposals cannot fill
//! the disk). Records are JSON objects (the journal adds `seq` and `prev`, the chain):
//!
//! - `{"kind": "intent", "time", "origin", "user" | "plugin", "property", "old", "requested",
//!   "written", "rule": "accepted" | "clamped-to-bounds"}`;
//! - `{"kind": "outcome", "time", "intent": <seq of the intent>, "outcome", "error",
//!   "latency_ms", "holds"}`: `outcome` is `written`, `read-back-mismatch`, `device-error`,
//!   `not-sent` (nothing went on the wire: the deadline passed while the request waited in the
//!   source's queue, or an interlock stopped it just before sending) or `unknown` (the request was
//!   on the wire when the proposer's deadline passed — the proposer was told `timeout`, this
//!   record gives the device's late answer in `device_answer` — or the source stopped with the
//!   request possibly on the wire); `holds` is what the device held
//!   afterwards when the source read it back (engineering units), else null;
//! - `{"kind": "refusals", "time", "origin", "rule", "count", "since"}`;
//! - `{"kind": "shadow", "time", "origin", "plugin", "property", "requested", "written"}`: a
//!   shadow-mode plugin's proposal that every rule accepted; nothing was written;
//! - `{"kind": "arm" | "disarm", "time", "origin", "user", "dropped"}`: the plant armed or
//!   disarmed (a disarm's `dropped` counts the plugins' writes it dropped before execution);
//! - `{"kind": "controller-lost", "time", "why", "properties"}`: their `on_loss` applied;
//! - `{"kind": "select", "time", "origin", "user" | "plugin", "property", "lasts_ms"}`: a
//!   select-before-operate select;
//! - `{"kind": "manual-override", "time", "property", "written", "read"}`: a setpoint changed by
//!   hand since the gate wrote it (plugins no longer write it until the plant is armed again).
//!
//! When the intent cannot be written (full disk, failing disk, no audit folder) the write is
//! refused ([`ControlError::AuditUnavailable`]): fail safe. Reading is not affected.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::{Value as Json, json};

use super::{ControlError, Origin, Proposal};
use crate::runtime::journal::Journal;
use crate::twin::{Value, WriteError};

/// How often refusals are summarised into one record per origin and rule.
pub const REFUSAL_SUMMARY_INTERVAL: Duration = Duration::from_secs(10);

fn time(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

fn value(value: Option<&Value>) -> Json {
    match value {
        None => Json::Null,
        Some(Value::Bool(b)) => json!(b),
        Some(Value::Int(i)) => json!(i),
        Some(Value::UInt(u)) => json!(u),
        Some(Value::Float(f)) => json!(f),
        Some(Value::String(s)) => json!(s.as_ref()),
    }
}

fn who(origin: &Origin) -> (&'static str, &str) {
    match origin {
        Origin::OpcUa { user } | Origin::Admin { user } => ("user", user),
        Origin::Plugin { name } => ("plugin", name),
        Origin::Sparkplug { device } => ("sparkplug_device", device),
        Origin::OnLoss => ("reason", "on-loss"),
        Origin::Config => ("reason", "config"),
    }
}

/// Refusals of one origin and rule since the last summary.
#[derive(Debug)]
struct Refused {
    count: u64,
    since: SystemTime,
}

/// Refusals counted per origin and rule, not yet summarised.
#[derive(Debug, Default)]
pub struct Refusals(BTreeMap<(String, &'static str), Refused>);

impl Refusals {
    /// Counts a refusal by `rule` of a proposal from `origin`.
    pub fn count(&mut self, origin: &Origin, rule: &'static str) {
        self.0
            .entry((origin.to_string(), rule))
            .or_insert_with(|| Refused {
                count: 0,
                since: SystemTime::now(),
            })
            .count += 1;
    }
}

/// The gate's audit log: the journal, or why there is none. Cheap to clone (each write in flight
/// holds one).
#[derive(Debug, Clone)]
pub struct AuditLog {
    journal: Result<Journal, String>,
}

impl AuditLog {
    /// An audit log writing to `journal`, or refusing every write with the reason it has none.
    pub fn new(journal: Result<Journal, String>) -> Self {
        Self { journal }
    }

    /// Appends `record`, waiting until it is on disk; returns its sequence number.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when there is no journal or it cannot write.
    async fn append(&self, record: Json) -> Result<u64, ControlError> {
        let journal = self
            .journal
            .as_ref()
            .map_err(|why| ControlError::AuditUnavailable(why.clone()))?;
        journal
            .append(record)
            .await
            .map_err(|e| ControlError::AuditUnavailable(e.to_string()))
    }

    /// A record of `kind` about `proposal` on `property` that would write `written`: time,
    /// origin, user or plugin, requested and written value.
    fn decision(kind: &str, proposal: &Proposal, property: &str, written: &Value) -> Json {
        let (role, name) = who(&proposal.origin);
        let mut record = json!({
            "kind": kind,
            "time": time(SystemTime::now()),
            "origin": proposal.origin.to_string(),
            "property": property,
            "requested": value(Some(&proposal.value)),
            "written": value(Some(written)),
        });
        record[role] = json!(name);
        record
    }

    /// Writes the intent of carrying out `proposal` on `property` (from `old` to `written`, as
    /// `rule` decided: `accepted` or `clamped-to-bounds`) and waits until it is on disk; returns
    /// its sequence number.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn intent(
        &self,
        proposal: &Proposal,
        property: &str,
        old: Option<&Value>,
        written: &Value,
        rule: &str,
    ) -> Result<u64, ControlError> {
        let mut record = Self::decision("intent", proposal, property, written);
        record["old"] = value(old);
        record["rule"] = json!(rule);
        self.append(record).await
    }

    /// Writes a shadow decision: what `proposal` would have written to `property`.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn shadow(
        &self,
        proposal: &Proposal,
        property: &str,
        written: &Value,
    ) -> Result<(), ControlError> {
        let record = Self::decision("shadow", proposal, property, written);
        self.append(record).await.map(|_| ())
    }

    /// Writes that `by` armed (`armed`) or disarmed the plant, dropping `dropped` waiting writes.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn armed(
        &self,
        by: &Origin,
        armed: bool,
        dropped: usize,
    ) -> Result<(), ControlError> {
        let (role, name) = who(by);
        let mut record = json!({
            "kind": if armed { "arm" } else { "disarm" },
            "time": time(SystemTime::now()),
            "origin": by.to_string(),
            "dropped": dropped,
        });
        record[role] = json!(name);
        self.append(record).await.map(|_| ())
    }

    /// Writes that the controller of `properties` was lost (`why`) and their `on_loss` applies.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn controller_lost(
        &self,
        why: &str,
        properties: &[&str],
    ) -> Result<(), ControlError> {
        let record = json!({
            "kind": "controller-lost",
            "time": time(SystemTime::now()),
            "why": why,
            "properties": properties,
        });
        self.append(record).await.map(|_| ())
    }

    /// Writes that `by` selected `property` for a write within `lasts`.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn selected(
        &self,
        by: &Origin,
        property: &str,
        lasts: Duration,
    ) -> Result<(), ControlError> {
        let (role, name) = who(by);
        let mut record = json!({
            "kind": "select",
            "time": time(SystemTime::now()),
            "origin": by.to_string(),
            "property": property,
            "lasts_ms": lasts.as_millis() as u64,
        });
        record[role] = json!(name);
        self.append(record).await.map(|_| ())
    }

    /// Writes that `property`, last written `written`, now reads `read`: changed by hand.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn manual_override(
        &self,
        property: &str,
        written: f64,
        read: f64,
    ) -> Result<(), ControlError> {
        let record = json!({
            "kind": "manual-override",
            "time": time(SystemTime::now()),
            "property": property,
            "written": written,
            "read": read,
        });
        self.append(record).await.map(|_| ())
    }

    /// Writes the outcome of the write whose intent is record `intent`.
    ///
    /// Errors: the record could not be written (the write has happened: the caller logs it; the
    /// intent without an outcome shows in `twinloom audit verify`).
    pub async fn outcome(
        &self,
        intent: u64,
        result: &Result<(), ControlError>,
        holds: Option<&Value>,
        latency: Duration,
    ) -> Result<(), ControlError> {
        let record = json!({
            "kind": "outcome",
            "time": time(SystemTime::now()),
            "intent": intent,
            "outcome": match result {
                Ok(()) => "written",
                Err(ControlError::Source(WriteError::ReadBackMismatch { .. })) => {
                    "read-back-mismatch"
                }
                Err(ControlError::Expired | ControlError::Interlock { .. }) => "not-sent",
                // The source stopped (shutdown, reload) with the request possibly on the wire.
                Err(ControlError::Source(WriteError::Stopped)) => "unknown",
                Err(_) => "device-error",
            },
            "error": result.as_ref().err().map(ToString::to_string),
            "latency_ms": latency.as_secs_f64() * 1000.0,
            "holds": value(holds),
        });
        self.append(record).await.map(|_| ())
    }

    /// Writes the outcome of intent `intent` whose proposer was answered at its deadline
    /// (`timeout`) before the source answered: `answer` is the source's answer that came
    /// `latency` after the device write started. A request the source never sent is `not-sent`;
    /// one that was on the wire is `unknown`, with the device's answer and what it holds.
    ///
    /// Errors: [`ControlError::AuditUnavailable`] when it cannot be written.
    pub async fn late_outcome(
        &self,
        intent: u64,
        answer: &Result<Option<Value>, WriteError>,
        latency: Duration,
    ) -> Result<(), ControlError> {
        let (outcome, device_answer, holds) = match answer {
            Err(error @ (WriteError::Expired | WriteError::Held { .. })) => {
                ("not-sent", error.to_string(), None)
            }
            Ok(holds) => ("unknown", "written".to_owned(), holds.as_ref()),
            Err(error) => ("unknown", error.to_string(), None),
        };
        let record = json!({
            "kind": "outcome",
            "time": time(SystemTime::now()),
            "intent": intent,
            "outcome": outcome,
            "error": "no answer before the proposer's deadline",
            "device_answer": device_answer,
            "latency_ms": latency.as_secs_f64() * 1000.0,
            "holds": value(holds),
        });
        self.append(record).await.map(|_| ())
    }

    /// Writes one record per origin and rule of `refusals`, and starts them again.
    ///
    /// Errors: a record could not be written (the counts are dropped; the caller logs it).
    pub async fn summarise(&self, refusals: &mut Refusals) -> Result<(), ControlError> {
        let refusals = std::mem::take(&mut refusals.0);
        if self.journal.is_err() {
            return Ok(());
        }
        let now = time(SystemTime::now());
        for ((origin, rule), refused) in refusals {
            let record = json!({
                "kind": "refusals",
                "time": now,
                "origin": origin,
                "rule": rule,
                "count": refused.count,
                "since": time(refused.since),
            });
            self.append(record).await?;
        }
        Ok(())
    }
}

pub use crate::runtime::journal::{
    Archived, JournalError, MAX_GAPS, Recovered, Sealing, archive, recover, tail,
};

/// The audit log's folder in the daemon's state folder: `<state_dir>/audit`.
pub fn dir_in(state_dir: &std::path::Path) -> std::path::PathBuf {
    state_dir.join("audit")
}
pub use crate::runtime::seal::{DEFAULT_INTERVAL, VerifyKey, setup as setup_keys};

/// What `twinloom audit verify` found: the record count, the void ranges and the intents without
/// an outcome (writes in flight when the daemon stopped, or whose outcome could not be written).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditReport {
    /// Records in the journal.
    pub records: u64,
    /// Segment files.
    pub segments: usize,
    /// Sequence numbers of intents no outcome refers to (void records are not read: a void
    /// intent was refused, its write never carried out).
    pub open_intents: Vec<u64>,
    /// Void sequence numbers: commits that failed (refused to the gate) or that an operator's
    /// recovery gave up.
    pub void: Vec<crate::runtime::journal::Void>,
    /// The first record's sequence number (not 0 after `twinloom audit archive`).
    pub start: u64,
    /// Seal records in the chain.
    pub seal_records: u64,
    /// With verification keys, what the seals say; `None` for a chain-only check.
    pub sealing: Option<Sealing>,
}

/// Checks the audit journal in `dir` (the chain, the head and, with `keys`, the seals), streaming
/// it (memory grows only with the intents still without an outcome), and lists intents without
/// outcome.
///
/// Errors: the journal is damaged, cut off, its head missing, or (with keys) a seal does not
/// match (the message names the record); [`JournalError::Io`] when it cannot be read.
pub fn verify(dir: &std::path::Path, keys: &[VerifyKey]) -> Result<AuditReport, JournalError> {
    let mut open = std::collections::BTreeSet::new();
    let verified = crate::runtime::journal::verify_with(dir, keys, &mut |record| match record
        .get("kind")
        .and_then(Json::as_str)
    {
        Some("intent") => {
            if let Some(seq) = record.get("seq").and_then(Json::as_u64) {
                open.insert(seq);
            }
        }
        Some("outcome") => {
            if let Some(intent) = record.get("intent").and_then(Json::as_u64) {
                open.remove(&intent);
            }
        }
        _ => {}
    })?;
    Ok(AuditReport {
        records: verified.records,
        segments: verified.segments,
        open_intents: open.into_iter().collect(),
        void: verified.void,
        start: verified.start,
        seal_records: verified.seal_records,
        sealing: verified.sealing,
    })
}
