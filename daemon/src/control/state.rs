//! The control state that outlives the process: whether the plant was armed and which setpoints
//! were changed by hand, in `<state_dir>/control/state.json`, written (temporary file,
//! `fsync`, rename, `fsync` of the folder) whenever either changes. A restart or a reload reads
//! it back: manual overrides stay until an operator arms the plant again, and a plant that was
//! armed but whose configuration does not arm it starts disarmed with a `disarm` record that says
//! so (origin `config`).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file's name inside its folder.
pub const STATE_FILE: &str = "state.json";

/// What is kept: the armed flag and the overridden setpoints by property path (paths outlive a
/// configuration change; property ids do not).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlState {
    /// Whether the plant was armed.
    pub armed: bool,
    /// Setpoints changed by hand since the gate wrote them, by path.
    pub manual_overrides: BTreeSet<String>,
}

/// Where the control state is kept for the state folder `state_dir`.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join("control").join(STATE_FILE)
}

/// Why the control state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading, writing or syncing failed.
    #[error("control state {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file does not parse.
    #[error("control state {}: {detail}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

impl ControlState {
    /// Reads the state at `path`; a missing file is the default (never armed, no overrides).
    ///
    /// Errors: the file cannot be read or does not parse.
    pub fn load(path: &Path) -> Result<Self, StateError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Invalid {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(StateError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Writes the state to `path` so that a crash leaves the old or the new file, never a torn
    /// one: a temporary file beside it, `fsync`, rename, `fsync` of the folder.
    ///
    /// Errors: the folder or a file cannot be created, written or synced.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let failed = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let folder = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(folder).map_err(failed)?;
        let temporary = path.with_extension("json.partial");
        let text = serde_json::to_vec_pretty(self).map_err(|e| StateError::Invalid {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let mut file = std::fs::File::create(&temporary).map_err(failed)?;
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(failed)?;
        std::fs::rename(&temporary, path).map_err(failed)?;
        std::fs::File::open(folder)
            .and_then(|d| d.sync_all())
            .map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_loads_back_and_a_missing_one_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(ControlState::load(&path).unwrap(), ControlState::default());
        let state = ControlState {
            armed: true,
            manual_overrides: ["plant/tank1/setpoint".to_owned()].into(),
        };
        state.save(&path).unwrap();
        assert_eq!(ControlState::load(&path).unwrap(), state);
        std::fs::write(&path, b"{\"armed\": tru").unwrap();
        assert!(matches!(
            ControlState::load(&path),
            Err(StateError::Invalid { .. })
        ));
    }
}
