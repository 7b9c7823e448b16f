//! `[change_log]`: the change log's typed configuration (issue #28; `docs/change-log.md`).

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// Smallest `max_disk`: four segments of the smallest size (`change_log::segment_bytes`).
pub const MIN_MAX_DISK: u64 = 256 * 1024;

/// Longest `commit_window`: what a power loss may cost must stay a matter of seconds.
pub const MAX_COMMIT_WINDOW: Duration = Duration::from_secs(10);

/// `[change_log]`: every change the twin accepts, on disk in order, for history, Sparkplug and
/// PostgreSQL. The log runs when this section is present, or with these defaults when a consumer
/// of it is configured (`[northbound.sparkplug]`; `Config::change_log_config`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeLogConfig {
    /// The log's own disk budget (`"2GiB"`, `"512MiB"`; binary or decimal units), at least
    /// 256 KiB. Past it the oldest segments are deleted, and a consumer whose cursor was in them
    /// reads a gap record. Default 2 GiB.
    #[serde(default = "default_max_disk")]
    pub max_disk: ByteSize,
    /// How often the log `fdatasync`s: what a power loss can cost (a crash of the process loses
    /// nothing that reached the log). From 1 ms to 10 s; default 100 ms.
    #[serde(default = "default_commit_window", with = "humantime_serde")]
    pub commit_window: Duration,
}

impl Default for ChangeLogConfig {
    fn default() -> Self {
        Self {
            max_disk: default_max_disk(),
            commit_window: default_commit_window(),
        }
    }
}

fn default_max_disk() -> ByteSize {
    ByteSize::gib(2)
}

fn default_commit_window() -> Duration {
    Duration::from_millis(100)
}
