//! The gate's write policy: one named rule after another ([`super::rule`]), the first that
//! refuses decides. Deciding is synchronous and touches only this state: the last value accepted
//! for each property and when, and each origin's accepted writes in the last minute.
//!
//! Rules, in order:
//! 1. `read-write-access`: the property is declared `access = "read-write"`;
//! 2. `data-type`: the value converts to the property's data type;
//! 3. `finite`: a number is neither NaN nor infinite (always, limits or not);
//! 4. `bounds`: within the property's `limits`, or clamped to them when it says `clamp = true`
//!    (the audit record then shows requested and written apart);
//! 5. `min-interval`: at least `min_write_interval` since the last accepted write to the
//!    property;
//! 6. `max-rate`: the step from the last accepted value, divided by the time since, at most
//!    `max_rate` engineering units per second (the first write to a property is not limited);
//! 7. `interlock`: every interlock guarding the property holds ([`super::interlock`]);
//! 8. `origin-budget`: at most `[control] max_writes_per_origin_per_minute` accepted writes per
//!    origin (an OPC UA user, a plugin) in any minute.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::interlock::Interlocks;
use super::{ControlError, WriteRequest};
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

/// The policy's state.
#[derive(Debug)]
pub struct Policy {
    /// Last value accepted for each property (as a number) and when.
    written: HashMap<PropertyId, (Option<f64>, Instant)>,
    /// Each origin's accepted writes in the last [`BUDGET_WINDOW`].
    budgets: HashMap<String, VecDeque<Instant>>,
    per_minute: u32,
    interlocks: Arc<Interlocks>,
}

impl Policy {
    /// A policy allowing each origin `per_minute` writes per minute, with `interlocks`.
    pub fn new(per_minute: u32, interlocks: Arc<Interlocks>) -> Self {
        Self {
            written: HashMap::new(),
            budgets: HashMap::new(),
            per_minute,
            interlocks,
        }
    }

    /// Decides `request` at `now`; an accepted write counts against its origin's budget.
    ///
    /// Errors: the refusing rule's [`ControlError`].
    pub fn decide(
        &mut self,
        twin: &Twin,
        request: &WriteRequest,
        now: Instant,
    ) -> Result<Accepted, ControlError> {
        let decl = twin.model().decl(request.property);
        if decl.access != Access::ReadWrite {
            return Err(ControlError::NotWritable);
        }
        let mismatch = || ControlError::TypeMismatch(request.value.to_string());
        let mut value = match decl.data_type {
            DataType::Bool => Value::Bool(request.value.as_bool().ok_or_else(mismatch)?),
            DataType::Integer => Value::Int(request.value.as_i64().ok_or_else(mismatch)?),
            DataType::Unsigned => Value::UInt(request.value.as_u64().ok_or_else(mismatch)?),
            DataType::Float => Value::Float(request.value.as_f64().ok_or_else(mismatch)?),
            DataType::String => match &request.value {
                Value::String(_) => request.value.clone(),
                _ => return Err(mismatch()),
            },
        };
        let number = value.as_f64();
        if let Some(v) = number
            && !v.is_finite()
        {
            return Err(ControlError::NotFinite(v));
        }
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
            let within = v.clamp(limits.low, limits.high);
            value = match decl.data_type {
                DataType::Integer => Value::Int(within.round() as i64),
                DataType::Unsigned => Value::UInt(within.round().max(0.0) as u64),
                _ => Value::Float(within),
            };
            clamped = true;
        }
        if let Some(&(last, at)) = self.written.get(&request.property) {
            let since = now.saturating_duration_since(at);
            if let Some(interval) = decl.write_policy.min_write_interval
                && since < interval
            {
                return Err(ControlError::TooSoon { interval, since });
            }
            if let (Some(max), Some(last), Some(next)) =
                (decl.write_policy.max_rate, last, value.as_f64())
            {
                let rate = (next - last).abs() / since.as_secs_f64().max(1e-9);
                if rate > max {
                    return Err(ControlError::TooFast { rate, max });
                }
            }
        }
        self.interlocks.check(twin, request.property)?;
        let budget = self.budgets.entry(request.origin.to_string()).or_default();
        while budget
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= BUDGET_WINDOW)
        {
            budget.pop_front();
        }
        if budget.len() >= self.per_minute as usize {
            return Err(ControlError::OverBudget {
                per_minute: self.per_minute,
            });
        }
        budget.push_back(now);
        // The interval and rate rules count from the last accepted value (whether or not the
        // device then took it: the conservative choice while writes are in flight); a shadow
        // decision writes nothing, so it does not count (it does spend its origin's budget).
        if !request.shadow {
            self.written.insert(request.property, (value.as_f64(), now));
        }
        Ok(Accepted { value, clamped })
    }
}
