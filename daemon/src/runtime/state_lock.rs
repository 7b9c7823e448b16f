//! One daemon per state folder: the process holds an exclusive lock (`flock(2)`, through
//! [`std::fs::File::try_lock`]) on `<state folder>/twinloom.lock` for as long as it runs. Two
//! daemons on one folder would interleave the audit journal's sequence numbers and fight over
//! the PKI; the second is refused before it opens anything else. The kernel releases the lock
//! when the process ends, however it ends (`kill -9` included), so a stale lock file never
//! blocks a restart. The file holds the holder's process id (when it can write it), for the
//! refusal's message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the state folder.
pub const LOCK_FILE: &str = "twinloom.lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// Why the state folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another process holds the lock.
    #[error(
        "state folder {} is in use by another twinloom process{holder}; stop that one first, or give this one its own `daemon.state_dir`",
        dir.display()
    )]
    Held {
        /// The state folder.
        dir: PathBuf,
        /// ` (pid N)` when the holder wrote its id, else empty.
        holder: String,
    },
    /// The folder or the lock file could not be created, opened or locked.
    #[error("cannot lock state folder {}: {source}", dir.display())]
    Io {
        /// The state folder.
        dir: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Takes the lock of state folder `dir` (created when missing) without waiting.
///
/// Errors: [`StateLockError::Held`] when another process holds it; [`StateLockError::Io`] when
/// the folder or file cannot be made or the lock call fails.
pub fn lock(dir: &Path) -> Result<StateLock, StateLockError> {
    let failed = |source| StateLockError::Io {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let path = dir.join(LOCK_FILE);
    let (mut file, writable) = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
    {
        Ok(file) => (file, true),
        // A lock file another user left (a run as root): locking needs only a read handle; the
        // holder's pid is then not written.
        Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
            (File::open(&path).map_err(failed)?, false)
        }
        Err(error) => return Err(failed(error)),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                "" => String::new(),
                pid => format!(" (pid {pid})"),
            };
            return Err(StateLockError::Held {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(std::fs::TryLockError::Error(error)) => return Err(failed(error)),
    }
    if writable {
        file.set_len(0).map_err(failed)?;
        file.rewind().map_err(failed)?;
        writeln!(file, "{}", std::process::id()).map_err(failed)?;
    }
    Ok(StateLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_folder_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = lock(&state).unwrap();
        let error = lock(&state).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StateLockError::Held { .. }), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        drop(first);
        lock(&state).unwrap();
    }
}
