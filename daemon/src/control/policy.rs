//! The gate's write policy: the whole list of named rules ([`super::rule`]), applied in order,
//! the first that refuses decides. Deciding is synchronous and touches only this state: whether
//! the plant is armed, the setpoints changed by hand, the valid selects, the last value accepted
//! for each property and when, and each origin's accepted writes in the last minute.
//!
//! Rules, in order:
//! 1. `disarmed`: a live plugin's proposal only while the plant is armed (shadow-mode proposals
//!    and people's writes are not held);
//! 2. `manual-override`: a plugin's proposal only to a setpoint not changed by hand since the
//!    gate wrote it, until the plant is armed again ([`Policy::override_by_hand`]);
//! 3. `select-before-operate`: a property with `select_before_operate` only from the origin
//!    holding a valid select ([`Policy::select`]); the select is used up here, whatever the
//!    later rules decide;
//! 4. `read-write-access`: the property is declared `access = "read-write"`;
//! 5. `data-type`: the value converts to the property's data type;
//! 6. `finite`: a number is neither NaN nor infinite (always, limits or not);
//! 7. `bounds`: within the property's `limits`, or clamped to them when it says `clamp = true`
//!    (the audit record then shows requested and written apart);
//! 8. `min-interval`: at least `min_write_interval` since the property last changed: a write
//!    the gate started (an `on_loss` write too) or a change by hand ([`Policy::carried_out`],
//!    [`Policy::changed_by_hand`]);
//! 9. `max-rate`: the step from the value the device holds (the twin's Good reading) and from
//!    the last value the gate started writing (the larger step counts: a write may be in
//!    flight), divided by the time since the property last changed (or since the gate started,
//!    for a property that has not changed since), at most `max_rate` engineering units per
//!    second;
//! 10. `interlock`: every interlock guarding the property holds ([`super::interlock`]);
//! 11. `origin-budget`: at most `[control] max_writes_per_origin_per_minute` writes per origin
//!     (an OPC UA user, a plugin) in any minute, counting the writes carried out (a request
//!     that reached the device: written, refused by it, or unanswered) and those under way;
//!     superseded, expired, held and failed-before-sending ones give their place back
//!     ([`Policy::started`], [`Policy::ended`]). A shadow decision counts when accepted.
//!
//! Rules 5 and 6 alone are [`typed`], which a plugin's runner also applies before it queues a
//! proposal (refusing it at once, as a rejected output). Refusals that are not this policy's:
//! `writable-list` and `mode-off` (a plugin's runner), `queue` (the gate's full queue),
//! `superseded` and `expired` (waiting for the property's turn), `audit` (the intent could not
//! be written), and `interlock` once more just before a write is carried out.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::interlock::Interlocks;
use super::{ControlError, Origin, Proposal};
use crate::twin::{Access, DataType, PropertyId, Twin, Value};

/// The window of the per-origin budget.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(60);

/// An accepted decision: what to write.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// The value to write, in engineering units (the request's, or clamped to the limits).
    pub value: Value,
    /// Whether `value` was clamped to the property's limits.
    pub clamped: bool,
}

/// The last change of a setpoint the rate rules count from.
#[derive(Debug, Clone, Copy)]
struct LastChange {
    /// The value written or set by hand, as a number (`None` for a string).
    value: Option<f64>,
    /// When the write started, or when the change by hand was seen.
    at: Instant,
}

/// The policy's state.
#[derive(Debug)]
pub struct Policy {
    /// Whether the plant is armed (plugins may write).
    armed: bool,
    /// Setpoints changed by hand since the gate wrote them: plugins do not write them until
    /// the plant is armed again.
    overridden: HashSet<PropertyId>,
    /// Valid selects (select-before-operate): the origin holding each and when it expires.
    selections: HashMap<PropertyId, (Origin, Instant)>,
    /// Each setpoint's last change: a write started or a change by hand.
    changed: HashMap<PropertyId, LastChange>,
    /// When the policy started: the rate of a setpoint that has not changed since counts from
    /// here.
    started: Instant,
    /// Each origin's writes carried out in the last [`BUDGET_WINDOW`].
    budgets: HashMap<String, VecDeque<Instant>>,
    /// Each origin's writes under way (started, not ended).
    under_way: HashMap<String, u32>,
    /// The write under way to each setpoint: its change and the one before it.
    in_flight: HashMap<PropertyId, (LastChange, Option<LastChange>)>,
    per_minute: u32,
    interlocks: Arc<Interlocks>,
}

impl Policy {
    /// A policy allowing each origin `per_minute` writes per minute, with `interlocks`; the
    /// plant disarmed ([`Self::set_armed`]).
    pub fn new(per_minute: u32, interlocks: Arc<Interlocks>) -> Self {
        Self {
            armed: false,
            overridden: HashSet::new(),
            selections: HashMap::new(),
            changed: HashMap::new(),
            started: Instant::now(),
            budgets: HashMap::new(),
            under_way: HashMap::new(),
            in_flight: HashMap::new(),
            per_minute,
            interlocks,
        }
    }

    /// Arms (`true`) or disarms the plant; arming lifts every manual override.
    pub fn set_armed(&mut self, armed: bool) {
        self.armed = armed;
        if armed {
            self.overridden.clear();
        }
    }

    /// Whether `property` was changed by hand since the gate wrote it (and the plant was not
    /// armed since).
    pub fn is_overridden(&self, property: PropertyId) -> bool {
        self.overridden.contains(&property)
    }

    /// `property` was changed by hand: plugins' proposals to it are refused (`manual-override`)
    /// until the plant is armed again.
    pub fn override_by_hand(&mut self, property: PropertyId) {
        self.overridden.insert(property);
    }

    /// The gate starts writing `value` to `property` at `at`, for `origin` (`None` for an
    /// `on_loss` write, which no budget limits): the interval and rate rules count from here,
    /// and the write holds a place in its origin's budget until it [`Self::ended`].
    pub fn started(
        &mut self,
        property: PropertyId,
        origin: Option<&Origin>,
        value: &Value,
        at: Instant,
    ) {
        let change = LastChange {
            value: value.as_f64(),
            at,
        };
        let before = self.changed.insert(property, change);
        self.in_flight.insert(property, (change, before));
        if let Some(origin) = origin {
            *self.under_way.entry(origin.to_string()).or_default() += 1;
        }
    }

    /// The write to `property` that [`Self::started`] for `origin` ended at `at`;
    /// `reached_device` says whether its request reached the device. When it did, it stays in
    /// its origin's budget for a minute; when it did not, its place is given back and the rules
    /// count from the change before it again (unless the setpoint changed by hand since).
    pub fn ended(
        &mut self,
        property: PropertyId,
        origin: Option<&Origin>,
        reached_device: bool,
        at: Instant,
    ) {
        if let Some((change, before)) = self.in_flight.remove(&property)
            && !reached_device
            && self
                .changed
                .get(&property)
                .is_some_and(|now| now.at == change.at)
        {
            match before {
                Some(before) => self.changed.insert(property, before),
                None => self.changed.remove(&property),
            };
        }
        let Some(origin) = origin else { return };
        let key = origin.to_string();
        if let Some(count) = self.under_way.get_mut(&key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.under_way.remove(&key);
            }
        }
        if reached_device {
            self.budgets.entry(key).or_default().push_back(at);
        }
    }

    /// `property` was seen changed to `value` by hand (not by the gate) at `at`: the interval
    /// and rate rules count from here.
    pub fn changed_by_hand(&mut self, property: PropertyId, value: f64, at: Instant) {
        self.changed.insert(
            property,
            LastChange {
                value: Some(value),
                at,
            },
        );
    }

    /// Whether `by` may select `property` at `now`: for how long the select would last.
    ///
    /// Errors: [`ControlError::NotSelected`] when the property takes writes without a select,
    /// or another origin holds a valid select on it.
    pub fn may_select(
        &self,
        twin: &Twin,
        property: PropertyId,
        by: &Origin,
        now: Instant,
    ) -> Result<Duration, ControlError> {
        let Some(lasts) = twin
            .model()
            .decl(property)
            .write_policy
            .select_before_operate
        else {
            return Err(ControlError::NotSelected(
                "this property takes writes without a select".into(),
            ));
        };
        if let Some((holder, until)) = self.selections.get(&property)
            && *until > now
            && holder != by
        {
            return Err(ControlError::NotSelected(format!("selected by {holder}")));
        }
        Ok(lasts)
    }

    /// Records `by`'s select of `property`, valid until `until` (after [`Self::may_select`] and
    /// its audit record).
    pub fn select(&mut self, property: PropertyId, by: Origin, until: Instant) {
        self.selections.insert(property, (by, until));
    }

    /// Decides `proposal` at `now` by the rules in order (the module's list); an accepted write
    /// counts against its origin's budget, and one to a property that needs a select uses up
    /// its origin's select.
    ///
    /// Errors: the refusing rule's [`ControlError`].
    pub fn decide(
        &mut self,
        twin: &Twin,
        proposal: &Proposal,
        now: Instant,
    ) -> Result<Accepted, ControlError> {
        let from_plugin = proposal.origin.is_plugin();
        if proposal.origin.needs_arming() && !proposal.shadow && !self.armed {
            return Err(ControlError::Disarmed);
        }
        if from_plugin && self.overridden.contains(&proposal.property) {
            return Err(ControlError::ManualOverride);
        }
        self.use_select(twin, proposal, now)?;
        let decl = twin.model().decl(proposal.property);
        if decl.access != Access::ReadWrite {
            return Err(ControlError::NotWritable);
        }
        let mut value = typed(&proposal.value, decl.data_type)?;
        let number = value.as_f64();
        let mut clamped = false;
        if let (Some(limits), Some(v)) = (decl.limits, number)
            && !limits.contains(v)
        {
            if !decl.write_policy.clamp {
                return Err(ControlError::OutOfLimits {
                    value: v,
                    low: limits.low,
                    high: limits.high,
                });
            }
            value = Value::from_number(v.clamp(limits.low, limits.high), decl.data_type);
            clamped = true;
        }
        let last = self.changed.get(&proposal.property).copied();
        if let (Some(interval), Some(last)) = (decl.write_policy.min_write_interval, last) {
            let since = now.saturating_duration_since(last.at);
            if since < interval {
                return Err(ControlError::TooSoon { interval, since });
            }
        }
        if let (Some(max), Some(next)) = (decl.write_policy.max_rate, value.as_f64()) {
            let sample = twin.sample(proposal.property);
            let holds = sample
                .value
                .as_ref()
                .and_then(Value::as_f64)
                .filter(|_| sample.quality.is_good());
            let step = [holds, last.and_then(|l| l.value)]
                .into_iter()
                .flatten()
                .map(|from| (next - from).abs())
                .fold(None, |most: Option<f64>, step| {
                    Some(most.map_or(step, |m| m.max(step)))
                });
            if let Some(step) = step {
                let since = now.saturating_duration_since(last.map_or(self.started, |l| l.at));
                let rate = step / since.as_secs_f64().max(1e-9);
                if rate > max {
                    return Err(ControlError::TooFast { rate, max });
                }
            }
        }
        self.interlocks.check(twin, proposal.property)?;
        let key = proposal.origin.to_string();
        let budget = self.budgets.entry(key.clone()).or_default();
        while budget
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= BUDGET_WINDOW)
        {
            budget.pop_front();
        }
        let under_way = self.under_way.get(&key).copied().unwrap_or(0) as usize;
        if budget.len() + under_way >= self.per_minute as usize {
            return Err(ControlError::OverBudget {
                per_minute: self.per_minute,
            });
        }
        // A shadow decision writes nothing: it counts when accepted, as a live write would
        // once carried out.
        if proposal.shadow {
            budget.push_back(now);
        }
        Ok(Accepted { value, clamped })
    }

    /// Rule `select-before-operate`: a proposal to a property that needs a select uses up its
    /// origin's select, valid or expired.
    fn use_select(
        &mut self,
        twin: &Twin,
        proposal: &Proposal,
        now: Instant,
    ) -> Result<(), ControlError> {
        let decl = twin.model().decl(proposal.property);
        if decl.write_policy.select_before_operate.is_none() {
            return Ok(());
        }
        match self.selections.get(&proposal.property) {
            Some((holder, until)) if *holder == proposal.origin => {
                let valid = *until > now;
                self.selections.remove(&proposal.property);
                if valid {
                    Ok(())
                } else {
                    Err(ControlError::NotSelected("the select expired".into()))
                }
            }
            _ => Err(ControlError::NotSelected(
                "select the property first (its Select method)".into(),
            )),
        }
    }
}

/// Rules `data-type` and `finite` alone: `value` as a value of `data_type`, a number neither
/// NaN nor infinite.
///
/// Errors: [`ControlError::TypeMismatch`] when the value does not convert (text into a number,
/// a negative or fractional number into an integer type, a number into text),
/// [`ControlError::NotFinite`].
pub fn typed(value: &Value, data_type: DataType) -> Result<Value, ControlError> {
    let mismatch = || ControlError::TypeMismatch(value.to_string());
    let typed = match data_type {
        DataType::Bool => Value::Bool(value.as_bool().ok_or_else(mismatch)?),
        DataType::Integer => Value::Int(value.as_i64().ok_or_else(mismatch)?),
        DataType::Unsigned => Value::UInt(value.as_u64().ok_or_else(mismatch)?),
        DataType::Float => Value::Float(value.as_f64().ok_or_else(mismatch)?),
        DataType::String => match value {
            Value::String(_) => value.clone(),
            _ => return Err(mismatch()),
        },
    };
    if let Some(v) = typed.as_f64()
        && !v.is_finite()
    {
        return Err(ControlError::NotFinite(v));
    }
    Ok(typed)
}
