//! `twinloom backup --to DIR` and `twinloom restore --from DIR` (issue #30; `docs/history.md`).
//!
//! A backup is a folder with the state that cannot be rebuilt from the plant:
//!
//! | in the backup | from the state folder | how it is made consistent |
//! |---|---|---|
//! | `change-log/cursors/`, `change-log/series` | consumers' positions, series ids | copied first: a cursor never runs ahead of the history copied after it |
//! | `history/*.redb` | the historian's files | copied under the folder's write lock (`history/write.lock`), which the historian holds while it writes: every file is at a committed transaction |
//! | `audit/` | the audit journal | its files as they are (append-only: the copy holds every record up to the head it copied) |
//! | `pki/` | the OPC UA server's certificate, key and trust lists | as they are |
//! | `control/state.json` | armed state, manual overrides | as it is (written by rename: whole) |
//!
//! It runs while the daemon runs, as the `twinloom` user (it only reads the state folder and
//! takes the history write lock). The change log's segments are not in it: they are a buffer for
//! consumers, and after a restore on another machine the historian sees a new log (its offsets
//! below the restored cursor) and reads it from its start.
//!
//! A restore copies a backup into the state folder of a stopped daemon (it takes the state
//! folder's lock, `runtime::state_lock`, and is refused while a daemon holds it), replacing
//! what the backup holds.

use std::path::{Path, PathBuf};

/// Why a backup or restore failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The target of a backup exists and is not an empty folder.
    #[error("{} exists and is not empty; back up into a new folder", .0.display())]
    NotEmpty(PathBuf),
    /// The source of a restore is not a backup.
    #[error("{} is not a twinloom backup (no {MARKER})", .0.display())]
    NotABackup(PathBuf),
    /// A daemon runs on the state folder.
    #[error(transparent)]
    InUse(#[from] crate::runtime::state_lock::StateLockError),
    /// The history write lock could not be taken.
    #[error(transparent)]
    History(#[from] crate::history::HistoryStoreError),
    /// A file could not be read, written or copied.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The error.
        error: std::io::Error,
    },
}

/// The file every backup holds (what was copied, for `restore` to recognise it).
pub const MARKER: &str = "twinloom-backup.txt";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |error| BackupError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Copies `from` (a file or folder tree) to `to`, creating folders; a missing `from` copies
/// nothing. Returns the files copied.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<usize, BackupError> {
    let meta = match std::fs::symlink_metadata(from) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io(from)(e)),
    };
    if skip(from) {
        return Ok(0);
    }
    if meta.is_dir() {
        std::fs::create_dir_all(to).map_err(io(to))?;
        let mut copied = 0;
        for entry in std::fs::read_dir(from).map_err(io(from))? {
            let entry = entry.map_err(io(from))?;
            copied += copy_tree(&entry.path(), &to.join(entry.file_name()), skip)?;
        }
        Ok(copied)
    } else if meta.is_file() {
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::copy(from, to).map_err(io(from))?;
        Ok(1)
    } else {
        // Sockets, symlinks: not state.
        Ok(0)
    }
}

/// Backs up the state folder `state` into the new folder `to` (see the module doc); returns the
/// files copied.
///
/// Errors: `to` is not empty, the history write lock cannot be taken, a file cannot be copied.
pub fn backup(state: &Path, to: &Path) -> Result<usize, BackupError> {
    if std::fs::read_dir(to).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(BackupError::NotEmpty(to.to_owned()));
    }
    std::fs::create_dir_all(to).map_err(io(to))?;
    let none = |_: &Path| false;
    let log = state.join(crate::change_log::DIR_NAME);
    // Cursors before the history: a restored cursor is never ahead of the restored files.
    let mut copied = copy_tree(
        &log.join("cursors"),
        &to.join(crate::change_log::DIR_NAME).join("cursors"),
        &|p: &Path| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        },
    )?;
    copied += copy_tree(
        &log.join("series"),
        &to.join(crate::change_log::DIR_NAME).join("series"),
        &none,
    )?;
    let history = crate::history::dir_in(state);
    if history.exists() {
        let _lock = crate::history::store::write_lock(&history)?;
        copied += copy_tree(&history, &to.join(crate::history::DIR_NAME), &|p: &Path| {
            p.file_name()
                .is_some_and(|n| n == crate::history::store::WRITE_LOCK)
        })?;
    }
    copied += copy_tree(&state.join("audit"), &to.join("audit"), &none)?;
    copied += copy_tree(&state.join("pki"), &to.join("pki"), &none)?;
    copied += copy_tree(
        &crate::control::state::path_in(state),
        &crate::control::state::path_in(to),
        &none,
    )?;
    std::fs::write(
        to.join(MARKER),
        format!("twinloom backup of {}\nfiles: {copied}\n", state.display()),
    )
    .map_err(io(to))?;
    Ok(copied)
}

/// Restores the backup `from` into the state folder `state` of a stopped daemon; returns the
/// files copied.
///
/// Errors: `from` is not a backup, a daemon holds the state folder, a file cannot be copied.
pub fn restore(from: &Path, state: &Path) -> Result<usize, BackupError> {
    if !from.join(MARKER).is_file() {
        return Err(BackupError::NotABackup(from.to_owned()));
    }
    let _held = crate::runtime::state_lock::lock(state)?;
    let history = crate::history::dir_in(state);
    if history.exists() {
        // The restored history replaces the folder's (files of other spans would mix in).
        std::fs::remove_dir_all(&history).map_err(io(&history))?;
    }
    copy_tree(from, state, &|p: &Path| {
        p.file_name().is_some_and(|n| n == MARKER)
    })
}
