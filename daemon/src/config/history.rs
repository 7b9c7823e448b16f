//! `[history]`: the embedded historian's typed configuration (issue #30; `docs/history.md`).

use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use super::opcua_server::Role;

/// Shortest `retention`: a history file spans one hour at the least, and retention deletes whole
/// files.
pub const MIN_RETENTION: Duration = Duration::from_secs(3600);

/// Smallest `max_disk`.
pub const MIN_MAX_DISK: u64 = 16 * 1024 * 1024;

/// Shortest `history_max_interval` of a property.
pub const MIN_MAX_INTERVAL: Duration = Duration::from_secs(1);

/// `[history]`: present = every property is historized (unless its type says
/// `historizing = false`) and served over OPC UA HistoryRead (Part 11). The historian reads the
/// change log, which therefore runs (with `[change_log]`'s settings, or their defaults).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// How long samples are kept (`"30d"`, `"12h"`; at least 1 h): history files whose whole
    /// time span is older than this are deleted. Default 30 days.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    /// The historian's own disk budget (`"10GiB"`; binary or decimal units; at least 16 MiB):
    /// past it the oldest files are deleted, even within `retention`. Default 10 GiB.
    #[serde(default = "default_max_disk")]
    pub max_disk: ByteSize,
    /// The roles whose sessions may read history (`"viewer"`, `"operator"`; anonymous sessions
    /// are viewers). Default: every role.
    #[serde(default)]
    pub readers: Option<Vec<Role>>,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            retention: default_retention(),
            max_disk: default_max_disk(),
            readers: None,
        }
    }
}

impl HistoryConfig {
    /// Whether a session of `role` may read history.
    pub fn may_read(&self, role: Role) -> bool {
        self.readers.as_ref().is_none_or(|r| r.contains(&role))
    }
}

fn default_retention() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_max_disk() -> ByteSize {
    ByteSize::gib(10)
}
