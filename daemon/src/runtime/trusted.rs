//! Files and folders the daemon trusts (native plugin copies it loads into its process, the
//! audit journal, the demo's state): folders that are its own (`0700`, never a symlink) and
//! files read without following a symlink.

use std::io;
use std::path::Path;

/// Makes `folder` the daemon's own: created `0700` (with its parents) when missing, set back to
/// `0700` when it is not; refused when it is a symlink or not a folder.
///
/// Errors: the folder cannot be created or its mode set; it is a symlink or a file.
pub fn private_folder(folder: &Path) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    match std::fs::symlink_metadata(folder) {
        Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => Err(io::Error::other(
            "not a folder (a symlink or a file): refusing to trust it",
        )),
        Ok(meta) if meta.permissions().mode() & 0o777 == 0o700 => Ok(()),
        Ok(_) => std::fs::set_permissions(folder, std::fs::Permissions::from_mode(0o700)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder),
        Err(error) => Err(error),
    }
}

/// `path` opened for reading without following a symlink (`O_NOFOLLOW`: a symlink is an error,
/// `ELOOP`), so a link planted in a trusted folder cannot make the daemon read another file.
///
/// Errors: the file cannot be opened, or is a symlink.
pub fn open_no_follow(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The bytes of `path`, opened without following a symlink ([`open_no_follow`]).
///
/// Errors: the file cannot be opened or read, or is a symlink.
pub fn read_no_follow(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = open_no_follow(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_folder_is_made_private_and_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("a/b");
        private_folder(&folder).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_folder(&folder).unwrap();
        assert_eq!(mode(&folder), 0o700);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&folder, &link).unwrap();
        assert!(private_folder(&link).is_err());
        let file = folder.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(read_no_follow(&file).unwrap(), b"x");
        let file_link = dir.path().join("file-link");
        std::os::unix::fs::symlink(&file, &file_link).unwrap();
        assert!(read_no_follow(&file_link).is_err());
    }
}
