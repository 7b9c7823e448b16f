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

/// A journal sealed an epoch: the seal record's sequence number and the chain's hash it vouches
/// for (the head hash at the epoch's end), logged so a copy of the hash lives outside the folder.
#[derive(Debug)]
pub(crate) struct EpochSealed<'a> {
    pub dir: &'a std::path::Path,
    pub key: &'a str,
    pub epoch: u64,
    pub seq: u64,
    pub hash: &'a str,
}

impl EpochSealed<'_> {
    pub fn emit(&self) {
        tracing::info!(dir = %self.dir.display(), key = %self.key, epoch = self.epoch, seq = self.seq, hash = %self.hash, "Journal epoch sealed");
    }
}

/// The sealing key of the new epoch could not replace the old one on disk: the old key stays
/// readable there (a thief could seal that epoch) until a later commit replaces it.
#[derive(Debug)]
pub(crate) struct SealingKeyNotReplaced<'a> {
    pub dir: &'a std::path::Path,
    pub epoch: u64,
    pub error: &'a super::journal::JournalError,
}

impl SealingKeyNotReplaced<'_> {
    pub fn emit(&self) {
        tracing::error!(dir = %self.dir.display(), epoch = self.epoch, error = %self.error, "Cannot replace the journal's sealing key on disk; the old key stays until a later commit replaces it");
    }
}
