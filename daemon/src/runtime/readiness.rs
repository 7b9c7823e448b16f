//! Readiness: what `/readyz` reports on. Each component registers the conditions it must meet
//! (a source: "connected"; the OPC UA server: "listening") and sets its flag as its state changes;
//! the admin endpoint lists the conditions not met. Nothing is read back out of metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One condition: the line `/readyz` shows while it is unmet, and its state.
type Condition = (String, Arc<FlagState>);

/// Whether a condition is met, and why it last failed.
#[derive(Debug, Default)]
struct FlagState {
    met: AtomicBool,
    /// The error of the last [`ReadyFlag::fail`] (a source's last connection error).
    last_error: Mutex<Option<String>>,
}

/// The daemon's readiness conditions, in registration order. Cheap to clone; clones share them.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    conditions: Arc<Mutex<Vec<Condition>>>,
}

/// One component's readiness condition; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReadyFlag(Arc<FlagState>);

impl ReadyFlag {
    /// Sets whether the condition is met.
    pub fn set(&self, ready: bool) {
        self.0.met.store(ready, Ordering::Relaxed);
    }

    /// Sets the condition unmet because of `error` (a source's connection error), which
    /// [`Readiness::source_error`] reports until the next failure replaces it.
    pub fn fail(&self, error: &str) {
        self.set(false);
        *self.0.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    /// Whether the condition is met.
    pub fn is_ready(&self) -> bool {
        self.0.met.load(Ordering::Relaxed)
    }
}

impl Readiness {
    /// Registers a condition, not met until its flag is set. `unmet` is the line `/readyz` shows
    /// while it is not met (e.g. `source plc is not connected`); registering the same line again
    /// (a source restarted on reload) replaces the old flag.
    pub fn register(&self, unmet: impl Into<String>) -> ReadyFlag {
        let unmet = unmet.into();
        let flag = Arc::new(FlagState::default());
        let mut conditions = self.conditions.lock().unwrap_or_else(|e| e.into_inner());
        match conditions.iter_mut().find(|(line, _)| *line == unmet) {
            Some((_, old)) => *old = Arc::clone(&flag),
            None => conditions.push((unmet, Arc::clone(&flag))),
        }
        ReadyFlag(flag)
    }

    /// Registers the condition of the source `id` (of any kind): its connection or session is
    /// up. See [`Self::is_source_connected`].
    pub fn register_source(&self, id: &str) -> ReadyFlag {
        self.register(source_condition(id))
    }

    /// Whether the source `id` reports its connection up (false for an id no source registered).
    pub fn is_source_connected(&self, id: &str) -> bool {
        let line = source_condition(id);
        self.conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(unmet, flag)| *unmet == line && flag.met.load(Ordering::Relaxed))
    }

    /// The last connection error the source `id` reported ([`ReadyFlag::fail`]), kept after it
    /// connects again; `None` before any.
    pub fn source_error(&self, id: &str) -> Option<String> {
        let line = source_condition(id);
        self.conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(unmet, _)| *unmet == line)
            .and_then(|(_, flag)| {
                flag.last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
    }

    /// The lines of the conditions not met, in registration order; empty when ready.
    pub fn unmet(&self) -> Vec<String> {
        self.conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, flag)| !flag.met.load(Ordering::Relaxed))
            .map(|(line, _)| line.clone())
            .collect()
    }
}

/// The line `/readyz` shows while the source `id` is not connected.
fn source_condition(id: &str) -> String {
    format!("source {id} is not connected")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmet_conditions_are_listed_in_order_and_a_new_registration_replaces_the_old() {
        let readiness = Readiness::default();
        let a = readiness.register("source a is not connected");
        let b = readiness.register("source b is not connected");
        assert_eq!(
            readiness.unmet(),
            ["source a is not connected", "source b is not connected"]
        );
        a.set(true);
        assert_eq!(readiness.unmet(), ["source b is not connected"]);
        b.set(true);
        assert!(readiness.unmet().is_empty());
        // Source a restarts: its new flag starts unmet; the old one no longer counts.
        let again = readiness.register("source a is not connected");
        assert_eq!(readiness.unmet(), ["source a is not connected"]);
        a.set(true);
        assert_eq!(readiness.unmet(), ["source a is not connected"]);
        again.set(true);
        assert!(readiness.unmet().is_empty());
    }

    #[test]
    fn a_source_is_connected_while_its_latest_flag_is_set() {
        let readiness = Readiness::default();
        assert!(!readiness.is_source_connected("plc"));
        let first = readiness.register_source("plc");
        assert!(!readiness.is_source_connected("plc"));
        first.set(true);
        assert!(readiness.is_source_connected("plc"));
        assert_eq!(readiness.unmet(), Vec::<String>::new());
        // Restarted on reload: the new flag decides.
        let second = readiness.register_source("plc");
        assert!(!readiness.is_source_connected("plc"));
        assert_eq!(readiness.unmet(), ["source plc is not connected"]);
        second.set(true);
        assert!(readiness.is_source_connected("plc"));
        assert!(!readiness.is_source_connected("other"));
        // The last error stays after the source connects again.
        assert_eq!(readiness.source_error("plc"), None);
        second.fail("connection refused");
        assert!(!readiness.is_source_connected("plc"));
        second.set(true);
        assert_eq!(
            readiness.source_error("plc").as_deref(),
            Some("connection refused")
        );
    }
}
