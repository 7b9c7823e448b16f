//! Native plugins: trusted shared libraries speaking the C ABI of
//! `plugin-api/include/twinloom_plugin.h` (contract `twinloom:plugin@0.3.0`; Rust mirror
//! `twinloom-plugin-abi`), behind the same [runtime seam](super::runtime) as WebAssembly
//! components, so the runner schedules, batches, checks outputs, sends proposals through the
//! control gate, counts metrics and restarts, backs off and quarantines them the same way.
//!
//! **Not sandboxed.** A native plugin runs in the daemon's process with the daemon's rights; it
//! can corrupt memory or end the process. `kind = "native"` is for trusted code only (a vendor
//! SDK, a numeric library, the last nanosecond); everything else is a Wasm component.
//!
//! What the host does hold:
//! - **loading** ([`NativeHost::load`]): the file is copied to `<state_dir>/native/<sha256>.so`
//!   and that copy is loaded, because `dlopen` returns the library already loaded for a known path
//!   (a changed file under the same name would not be loaded again); libraries are never
//!   unloaded (an abandoned call may still run their code). The copies are files the daemon
//!   trusts with its whole process: the folder is made (or made again) `0700` and refused when it
//!   is a symlink; a copy is written to a fresh file (`O_EXCL`, `0500`), fsynced, renamed into
//!   place and the folder fsynced; an existing copy is opened without following symlinks and
//!   re-hashed just before it is loaded, and one whose bytes no longer match its name is
//!   replaced (so a copy edited in place is never loaded). The entry point must exist; the
//!   table's ABI version must be [`abi::ABI_VERSION`] (else [`PluginError::Contract`], naming
//!   both), its size at least the table this host reads, every function present, and a Rust
//!   library built with `panic = "unwind"` (a panic of one built with `abort` would end the
//!   daemon);
//! - **a thread per instance** ([`NativeInstance`]): a native call cannot be interrupted, so each
//!   instance runs on its own thread and the caller waits at most the deadline; past it the call
//!   is [`PluginError::Abandoned`], the thread is left to finish on its own (it then drops the
//!   instance and ends) and the runner quarantines the plugin at once;
//! - **outputs** checked against [`OutputCaps`] by their counts before anything is copied out of
//!   the plugin's memory, then copied and handed back (`free_outputs`); reasons must be UTF-8;
//! - **`log`** through the same per-instance rate limit and one-line escaping as Wasm plugins.
//!
//! The memory cap and fuel do not apply (config validation refuses `fuel` on a native plugin);
//! the deadline and the output caps do.
//!
//! Every `unsafe` block of the daemon is in this module, each with its `SAFETY:` reasoning.

#![allow(
    unsafe_code,
    reason = "the C ABI of native plugins: dlopen, raw pointers, foreign calls"
)]

mod instance;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::Digest;
use twinloom_plugin_abi as abi;

pub use instance::{LocalInstance, NativeInstance};

use super::contract::CONTRACT;
use super::runtime::{Limits, PluginError, PluginRuntime};
use crate::runtime::trusted::{private_folder, read_no_follow};

/// The folder under the state directory that holds the loaded copies.
pub const COPIES: &str = "native";

/// Loads native plugin libraries; their copies go to `<state_dir>/native/`.
#[derive(Debug, Clone)]
pub struct NativeHost {
    copies: PathBuf,
}

/// A loaded library: its function table, valid for the life of the process.
#[derive(Debug)]
pub struct Library {
    table: &'static abi::Plugin,
    /// The copy that was loaded.
    path: PathBuf,
}

impl Library {
    /// The loaded copy, `<state_dir>/native/<sha256>.so`.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl NativeHost {
    /// A host whose copies go to `<state_dir>/native/`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            copies: state_dir.join(COPIES),
        }
    }

    /// Copies `bytes` (a plugin file) to `<state_dir>/native/<sha256>.so`, unless that copy is
    /// there already, loads it and checks its table.
    ///
    /// Errors: [`PluginError::Load`] when the copy cannot be written, the library cannot be loaded,
    /// has no entry point, returns no table, a table shorter than this ABI's or without a function,
    /// or was built with `panic = "abort"`; [`PluginError::Contract`] for another ABI version.
    pub fn load_library(&self, bytes: &[u8]) -> Result<Library, PluginError> {
        let load = |what: String| PluginError::Load(what);
        let digest = format!("{:x}", sha2::Sha256::digest(bytes));
        let path = self.copies.join(format!("{digest}.so"));
        private_folder(&self.copies)
            .map_err(|e| load(format!("cannot use {}: {e}", self.copies.display())))?;
        let intact = match read_no_follow(&path) {
            Ok(copy) => format!("{:x}", sha2::Sha256::digest(&copy)) == digest,
            Err(_) => false,
        };
        if !intact {
            write_copy(&self.copies, &path, &digest, bytes)
                .map_err(|e| load(format!("cannot write {}: {e}", path.display())))?;
        }
        // SAFETY: loading runs the library's initialisers; a native plugin is trusted code by
        // configuration (`kind = "native"`), which is the whole of this safety argument.
        let library = unsafe { libloading::Library::new(&path) }
            .map_err(|e| load(format!("cannot load {}: {e}", path.display())))?;
        // SAFETY: the symbol, if present, is the header's entry point, of type `EntryFn`.
        let entry =
            unsafe { library.get::<abi::EntryFn>(abi::ENTRY.as_bytes()) }.map_err(|_| {
                load(format!(
                    "{} has no entry point `{}`: not a Twinloom native plugin",
                    path.display(),
                    abi::ENTRY
                ))
            })?;
        // SAFETY: the entry point takes nothing and returns a pointer to a static table.
        let table = unsafe { entry() };
        // Never unloaded: code of the library may still run on an abandoned thread, and the
        // table is 'static from here on.
        std::mem::forget(library);
        let table = check_table(table)?;
        Ok(Library { table, path })
    }
}

/// Writes `bytes` as the copy `path` in `folder`: to a fresh file (`O_EXCL`, mode `0500`, a
/// stale partial file from a crash removed first), fsynced, renamed over `path`, the folder
/// fsynced.
///
/// Errors: any of those steps.
fn write_copy(folder: &Path, path: &Path, digest: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = folder.join(format!(".{digest}.partial"));
    match std::fs::remove_file(&partial) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o500)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&partial, path)?;
    std::fs::File::open(folder)?.sync_all()
}

/// Checks a table from an entry point: version, size, functions, panic strategy.
fn check_table(table: *const abi::Plugin) -> Result<&'static abi::Plugin, PluginError> {
    if table.is_null() {
        return Err(PluginError::Load(
            "the entry point returned no table".into(),
        ));
    }
    // SAFETY: every version of the table starts with these two u32s (the header's promise), and
    // the library is never unloaded, so the pointer stays valid.
    let (version, size) = unsafe { ((*table).abi_version, (*table).size) };
    if version != abi::ABI_VERSION {
        return Err(PluginError::Contract {
            found: abi::contract(version),
            expected: CONTRACT,
        });
    }
    let needed = size_of::<abi::Plugin>();
    if (size as usize) < needed {
        return Err(PluginError::Load(format!(
            "the plugin's table is {size} bytes, {CONTRACT} has {needed}: it was built against another header"
        )));
    }
    // SAFETY: the version matches and the table is at least as large as this ABI's; it is static.
    let table: &'static abi::Plugin = unsafe { &*table };
    if table.panic_strategy == abi::PANIC_ABORT {
        return Err(PluginError::Load(
            "the library is built with panic = \"abort\": one panic would end the daemon; build it with panic = \"unwind\" (cargo's default)".into(),
        ));
    }
    let missing = [
        ("init", table.init.is_none()),
        ("on_changes", table.on_changes.is_none()),
        ("on_tick", table.on_tick.is_none()),
        ("free_outputs", table.free_outputs.is_none()),
        ("drop", table.drop.is_none()),
    ]
    .into_iter()
    .filter_map(|(name, missing)| missing.then_some(name))
    .collect::<Vec<_>>();
    if !missing.is_empty() {
        return Err(PluginError::Load(format!(
            "the plugin's table lacks {}",
            missing.join(", ")
        )));
    }
    Ok(table)
}

impl PluginRuntime for NativeHost {
    type Component = Arc<Library>;
    type Instance = NativeInstance;

    fn load(&self, bytes: &[u8]) -> Result<Arc<Library>, PluginError> {
        self.load_library(bytes).map(Arc::new)
    }

    fn instantiate(
        &self,
        name: &str,
        component: &Arc<Library>,
        limits: Limits,
    ) -> Result<NativeInstance, PluginError> {
        NativeInstance::start(name, component.table, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> abi::Plugin {
        abi::Plugin {
            abi_version: abi::ABI_VERSION,
            size: size_of::<abi::Plugin>() as u32,
            panic_strategy: abi::PANIC_NONE,
            reserved: 0,
            init: None,
            on_changes: None,
            on_tick: None,
            free_outputs: None,
            drop: None,
        }
    }

    fn checked(table: abi::Plugin) -> PluginError {
        // A leaked table, as a library's static would be.
        check_table(Box::leak(Box::new(table))).unwrap_err()
    }

    #[test]
    fn tables_of_another_version_size_panic_strategy_or_without_functions_are_refused() {
        let old = checked(abi::Plugin {
            abi_version: 0x00_02_00,
            ..table()
        });
        assert_eq!(
            old,
            PluginError::Contract {
                found: "twinloom:plugin@0.2.0".into(),
                expected: CONTRACT
            }
        );
        let short = checked(abi::Plugin {
            size: 16,
            ..table()
        });
        assert!(short.to_string().contains("table is 16 bytes"), "{short}");
        let abort = checked(abi::Plugin {
            panic_strategy: abi::PANIC_ABORT,
            ..table()
        });
        assert!(abort.to_string().contains("panic = \"abort\""), "{abort}");
        let empty = checked(table());
        assert!(
            empty
                .to_string()
                .contains("lacks init, on_changes, on_tick, free_outputs, drop"),
            "{empty}"
        );
        assert_eq!(
            check_table(std::ptr::null()).unwrap_err(),
            PluginError::Load("the entry point returned no table".into())
        );
    }

    #[test]
    fn a_file_that_is_not_a_library_or_has_no_entry_point_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let host = NativeHost::new(state.path());
        let error = host.load_library(b"not a library").unwrap_err();
        assert!(
            matches!(&error, PluginError::Load(text) if text.contains("cannot load")),
            "{error}"
        );
        // The copy is named by the file's SHA-256.
        let copy = state
            .path()
            .join(COPIES)
            .join(format!("{:x}.so", sha2::Sha256::digest(b"not a library")));
        assert!(copy.is_file());
    }

    #[test]
    fn copies_live_in_a_private_folder_and_one_edited_in_place_is_written_again() {
        use std::os::unix::fs::PermissionsExt as _;
        let state = tempfile::tempdir().unwrap();
        let host = NativeHost::new(state.path());
        let bytes = b"not a library either";
        let folder = state.path().join(COPIES);
        let copy = folder.join(format!("{:x}.so", sha2::Sha256::digest(bytes)));
        // A folder another user could write is made private again.
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777)).unwrap();
        let _ = host.load_library(bytes);
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);
        // A copy edited in place (its bytes no longer match its name) is replaced before loading.
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&copy, b"planted code").unwrap();
        let _ = host.load_library(bytes);
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);
        // A copy that is a symlink is not followed: it is replaced by a real file.
        let planted = state.path().join("planted.so");
        std::fs::write(&planted, b"planted code").unwrap();
        std::fs::remove_file(&copy).unwrap();
        std::os::unix::fs::symlink(&planted, &copy).unwrap();
        let _ = host.load_library(bytes);
        assert!(
            !std::fs::symlink_metadata(&copy)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);
        assert_eq!(std::fs::read(&planted).unwrap(), b"planted code");
        // A copies folder that is a symlink is refused.
        let elsewhere = tempfile::tempdir().unwrap();
        let linked = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), linked.path().join(COPIES)).unwrap();
        let error = NativeHost::new(linked.path())
            .load_library(bytes)
            .unwrap_err();
        assert!(
            matches!(&error, PluginError::Load(text) if text.contains("symlink")),
            "{error}"
        );
    }
}
