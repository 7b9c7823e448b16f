//! `twinloom pki`: list, trust and reject OPC UA client certificates.
//!
//! async-opcua keeps certificates as DER files in `<pki>/trusted/` and `<pki>/rejected/`; a client
//! whose certificate is not trusted is refused and its certificate lands in `rejected/`. Trusting
//! moves it to `trusted/`; rejecting moves it back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where a certificate sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// In `trusted/`: the client may connect.
    Trusted,
    /// In `rejected/`: the client was refused.
    Rejected,
}

impl Trust {
    fn folder(self) -> &'static str {
        match self {
            Self::Trusted => "trusted",
            Self::Rejected => "rejected",
        }
    }
}

/// One client certificate file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// File name (async-opcua names them after the certificate's subject and thumbprint).
    pub name: String,
    /// Trusted or rejected.
    pub trust: Trust,
}

/// Every client certificate in `pki`, trusted first, each group sorted by name.
///
/// Errors: a folder exists but cannot be read.
pub fn list(pki: &Path) -> io::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for trust in [Trust::Trusted, Trust::Rejected] {
        let dir = pki.join(trust.folder());
        if !dir.exists() {
            continue;
        }
        let mut names: Vec<String> = fs::read_dir(&dir)?
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        entries.extend(names.into_iter().map(|name| Entry { name, trust }));
    }
    Ok(entries)
}

/// Moves the certificate whose file name starts with `name` to `to`. Returns its new path.
///
/// Errors: no certificate or several certificates match `name` in the other folder, or the move fails.
pub fn set_trust(pki: &Path, name: &str, to: Trust) -> io::Result<PathBuf> {
    let from = match to {
        Trust::Trusted => Trust::Rejected,
        Trust::Rejected => Trust::Trusted,
    };
    let matches: Vec<Entry> = list(pki)?
        .into_iter()
        .filter(|e| e.trust == from && e.name.starts_with(name))
        .collect();
    let entry = match matches.as_slice() {
        [one] => one,
        [] => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no {} certificate matches `{name}`", from.folder()),
            ));
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "`{name}` matches {} certificates; give more of the name",
                    matches.len()
                ),
            ));
        }
    };
    let target_dir = pki.join(to.folder());
    fs::create_dir_all(&target_dir)?;
    let target = target_dir.join(&entry.name);
    fs::rename(pki.join(from.folder()).join(&entry.name), &target)?;
    Ok(target)
}

/// Creates `<pki>/private/` readable by the daemon's user only (0700; an existing folder is
/// narrowed to it), so that a key written into it is never readable by others, whatever its mode.
///
/// Errors: the folder cannot be created or its mode set.
pub fn protect_private_folder(pki: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let private = pki.join("private");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&private)?;
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
}

/// Sets every file in `<pki>/private/` (the server's private keys) to mode 0600.
///
/// Errors: the folder cannot be read or a file's mode set.
pub fn protect_private_keys(pki: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in fs::read_dir(pki.join("private"))? {
        let path = entry?.path();
        if path.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// Deletes the oldest certificates in `<pki>/rejected/` (by modification time, then name) until
/// at most `keep` remain; returns how many it deleted. A missing folder holds none.
///
/// Errors: the folder cannot be read or a file deleted.
pub fn prune_rejected(pki: &Path, keep: usize) -> io::Result<usize> {
    let dir = pki.join(Trust::Rejected.folder());
    if !dir.exists() {
        return Ok(0);
    }
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        let metadata = entry.metadata()?;
        if metadata.is_file() {
            files.push((metadata.modified()?, entry.path()));
        }
    }
    let excess = files.len().saturating_sub(keep);
    files.sort();
    for (_, path) in &files[..excess] {
        fs::remove_file(path)?;
    }
    Ok(excess)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_rejected_certificates() {
        let pki = tempfile::tempdir().unwrap();
        let rejected = pki.path().join("rejected");
        fs::create_dir_all(&rejected).unwrap();
        let epoch = std::time::SystemTime::UNIX_EPOCH;
        for (i, name) in ["c.der", "a.der", "d.der", "b.der"].iter().enumerate() {
            let file = fs::File::create(rejected.join(name)).unwrap();
            file.set_modified(epoch + std::time::Duration::from_secs(i as u64 * 60))
                .unwrap();
        }
        assert_eq!(prune_rejected(pki.path(), 2).unwrap(), 2);
        let names: Vec<String> = list(pki.path())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["b.der", "d.der"]);
        assert_eq!(prune_rejected(pki.path(), 2).unwrap(), 0);
    }

    #[test]
    fn trust_and_reject_move_certificates_between_folders() {
        let pki = tempfile::tempdir().unwrap();
        fs::create_dir_all(pki.path().join("rejected")).unwrap();
        fs::write(pki.path().join("rejected/scada [ab12].der"), b"der").unwrap();
        fs::write(pki.path().join("rejected/mes [cd34].der"), b"der").unwrap();
        assert_eq!(list(pki.path()).unwrap().len(), 2);
        set_trust(pki.path(), "scada", Trust::Trusted).unwrap();
        let entries = list(pki.path()).unwrap();
        assert_eq!(
            entries[0],
            Entry {
                name: "scada [ab12].der".into(),
                trust: Trust::Trusted
            }
        );
        assert!(set_trust(pki.path(), "nothing", Trust::Trusted).is_err());
        set_trust(pki.path(), "scada", Trust::Rejected).unwrap();
        assert!(
            list(pki.path())
                .unwrap()
                .iter()
                .all(|e| e.trust == Trust::Rejected)
        );
    }
}
