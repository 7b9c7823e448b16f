//! The task runtime's events: one type per occurrence, whose `emit` writes the log line.

use std::time::Duration;

/// A supervised task ended with an error or panicked: the daemon shuts down.
#[derive(Debug)]
pub(crate) struct TaskFailed<'a> {
    pub task: &'a str,
    pub message: &'a str,
}

impl TaskFailed<'_> {
    pub fn emit(&self) {
        tracing::error!(task = %self.task, message = %self.message, "Task ended with an error; shutting down");
    }
}

/// Shutdown gave up waiting: some tasks were still running at the deadline.
#[derive(Debug)]
pub(crate) struct ShutdownOverran {
    pub deadline: Duration,
}

impl ShutdownOverran {
    pub fn emit(&self) {
        tracing::warn!(deadline = ?self.deadline, "Some tasks did not finish before the shutdown deadline");
    }
}
