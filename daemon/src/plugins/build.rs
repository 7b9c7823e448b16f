//! `twinloom plugin build` and `twinloom plugin new`: from a Rust crate to a checked component.
//!
//! `build` runs `cargo build --release --target wasm32-wasip2` on the crate (adding the target
//! with `rustup` when it is missing; where that is impossible, building std from Debian's
//! library source for `wasm32-unknown-unknown` and making the module a component — see
//! [`Toolchain`]), finds the `.wasm` file among cargo's JSON artifact messages, and loads it in
//! the host to prove it is a component of the `twinloom:plugin` world. `new` writes a plugin
//! crate from the template in `template/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::plugins::contract::Limits;
use crate::plugins::wasm::WasmHost;

/// The Rust target plugins are built for: WASI 0.2 components.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The target of the build-std fallback: a core module without WASI, made a component here.
pub const CORE_TARGET: &str = "wasm32-unknown-unknown";

/// The Debian packages of the build-std fallback: Rust 1.96 (`rustc-web`, `cargo-web`) with its
/// library source (`rust-web-src`).
pub const BUILD_STD_PACKAGES: &str = "rustc-web cargo-web rust-web-src";

/// How `plugin build` turns a crate into a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Toolchain {
    /// `wasip2` when its standard library is installed or `rustup target add` can fetch it,
    /// `build-std` otherwise.
    #[default]
    Auto,
    /// cargo for `wasm32-wasip2` with rustup's prebuilt standard library; cargo's output is
    /// the component.
    Wasip2,
    /// For machines where rustup cannot download the target: Debian's Rust 1.96 builds std from
    /// its source for `wasm32-unknown-unknown` (`-Zbuild-std`, enabled by `RUSTC_BOOTSTRAP=1`),
    /// rustup's `rust-lld` links it, and wit-component's `ComponentEncoder` makes the core module
    /// a component. The plugin then has no WASI: its stdout and stderr go nowhere (the `log`
    /// import works as ever).
    BuildStd,
}

impl Toolchain {
    /// The concrete toolchain: [`Toolchain::Auto`] becomes `Wasip2` (its standard library is
    /// installed, or `rustup target add` added it) or `BuildStd` (its parts are there); the
    /// others stay as they are once their parts are checked. Resolve once before building several
    /// plugins, so an offline machine tries the rustup download once.
    ///
    /// Errors: the chosen toolchain is missing a part; for `Auto`, both are (the message says
    /// what each lacks).
    pub fn resolve(self) -> anyhow::Result<Self> {
        match self {
            Self::Auto => match ensure_target() {
                Ok(()) => Ok(Self::Wasip2),
                Err(wasip2) => BuildStd::find()
                    .map(|_| Self::BuildStd)
                    .map_err(|fallback| {
                        anyhow::anyhow!(
                            "{wasip2}; the build-std fallback is not available: {fallback}"
                        )
                    }),
            },
            Self::Wasip2 => ensure_target().map(|()| Self::Wasip2),
            Self::BuildStd => BuildStd::find().map(|_| Self::BuildStd),
        }
    }
}

/// What [`build`] does besides building.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Cargo's `--target-dir` (cargo's default when `None`).
    pub target_dir: Option<PathBuf>,
    /// Which toolchain builds the component.
    pub toolchain: Toolchain,
    /// Also install the component here (written beside it and renamed, so a daemon watching the
    /// file sees one complete replacement).
    pub out: Option<PathBuf>,
    /// Build a native shared library for this machine (`kind = "native"`) instead of a
    /// component: `cargo build --release --lib`, the library checked by loading it in the native
    /// host. `toolchain` does not apply.
    pub native: bool,
}

/// The guest SDK in this source tree (`plugin-api/rust`), if the binary runs where it was built.
pub fn sdk_in_source_tree() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/rust");
    sdk.canonicalize().ok()
}

/// The first line `command` prints, trimmed; `None` when it cannot run or fails.
fn first_line(command: &mut Command) -> Option<String> {
    let output = command.stderr(Stdio::null()).output().ok()?;
    output.status.success().then(|| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    })
}

/// Whether the standard library for [`WASM_TARGET`] is installed (for the `rustc` on `PATH`).
fn wasip2_installed() -> bool {
    first_line(Command::new("rustc").args(["--print", "target-libdir", "--target", WASM_TARGET]))
        .is_some_and(|libdir| Path::new(&libdir).is_dir())
}

/// Makes sure the standard library for [`WASM_TARGET`] is installed, adding it with `rustup`
/// when it is not.
///
/// Errors: the target is missing and `rustup` is not available or fails.
pub fn ensure_target() -> anyhow::Result<()> {
    if wasip2_installed() {
        return Ok(());
    }
    eprintln!("Installing the {WASM_TARGET} target with rustup (once)…");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        _ => bail!(
            "the {WASM_TARGET} target is not installed and `rustup target add {WASM_TARGET}` failed"
        ),
    }
}

/// Debian's Rust toolchain with the standard library's source, for [`Toolchain::BuildStd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStd {
    /// Debian's cargo (`cargo-web`).
    pub cargo: PathBuf,
    /// Debian's rustc (`rustc-web`), whose sysroot holds the library source (`rust-web-src`).
    pub rustc: PathBuf,
    /// The WebAssembly linker: `rust-lld`.
    pub linker: PathBuf,
}

impl BuildStd {
    /// Finds the fallback toolchain: `/usr/bin/cargo` and `/usr/bin/rustc` from Debian, the
    /// library source under that rustc's sysroot (`lib/rustlib/src/rust/library`), and a
    /// `rust-lld` — the rustup toolchain's (Debian's `/usr/bin/rust-lld` points at an `lld-22`
    /// that bookworm does not ship), else one at `/usr/bin/rust-lld` that resolves.
    ///
    /// Errors: a part is missing; the message names the Debian packages.
    pub fn find() -> anyhow::Result<Self> {
        let (cargo, rustc) = (
            PathBuf::from("/usr/bin/cargo"),
            PathBuf::from("/usr/bin/rustc"),
        );
        if !cargo.is_file() || !rustc.is_file() {
            bail!(
                "Debian's cargo and rustc are not installed (apt-get install {BUILD_STD_PACKAGES})"
            );
        }
        let sysroot = first_line(Command::new(&rustc).args(["--print", "sysroot"]))
            .with_context(|| format!("cannot run {}", rustc.display()))?;
        let library = Path::new(&sysroot).join("lib/rustlib/src/rust/library");
        if !library.join("std").is_dir() {
            bail!(
                "{}: the standard library's source is missing (apt-get install rust-web-src)",
                library.display()
            );
        }
        let mut linkers = Vec::new();
        if let Some(sysroot) = first_line(Command::new("rustc").args(["--print", "sysroot"]))
            && let Ok(hosts) = std::fs::read_dir(Path::new(&sysroot).join("lib/rustlib"))
        {
            linkers.extend(hosts.flatten().map(|host| host.path().join("bin/rust-lld")));
        }
        linkers.push(PathBuf::from("/usr/bin/rust-lld"));
        // `exists` follows symbolic links: a dangling one does not count.
        let linker = linkers
            .into_iter()
            .find(|linker| linker.exists())
            .context("no working rust-lld (the rustup toolchain's, or /usr/bin/rust-lld)")?;
        Ok(Self {
            cargo,
            rustc,
            linker,
        })
    }
}

/// The package name in `<dir>/Cargo.toml`.
fn package_name(dir: &Path) -> anyhow::Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{}: cannot read", manifest.display()))?;
    let table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{}: not valid TOML", manifest.display()))?;
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .with_context(|| format!("{}: has no [package] name", manifest.display()))
}

/// Builds the plugin crate in `dir` as a component and checks that the host can load it.
/// Cargo's progress goes to stderr.
///
/// Returns the path of the component: `options.out` when given, else where cargo wrote it
/// (`<target dir>/wasm32-wasip2/release/<crate>.wasm`, or with the build-std fallback
/// `<target dir>/wasm32-unknown-unknown/release/<crate>.component.wasm`).
///
/// Errors: no `Cargo.toml`; no toolchain (the wasip2 target is missing and cannot be added, and
/// the fallback is not installed — the message says what each lacks); the build fails; the
/// crate is not a `cdylib`; the result is not a component of the `twinloom:plugin@0.3.0`
/// world; `out` cannot be written.
pub fn build(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let built = if options.native {
        build_native(dir, options)?
    } else {
        build_component(dir, options)?
    };
    match &options.out {
        Some(out) => {
            install(&built, out)?;
            Ok(out.clone())
        }
        None => Ok(built),
    }
}

/// `cargo build --release --lib` of the crate in `dir` for this machine; the library, checked.
fn build_native(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let name = package_name(dir)?;
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["build", "--release", "--lib"]);
    let library = cargo_artifact(command, dir, &name, options, NATIVE_SUFFIX)?;
    check_native(&library)?;
    Ok(library)
}

/// The crate in `dir` as a component, with the toolchain `options` ask for; checked.
fn build_component(dir: &Path, options: &BuildOptions) -> anyhow::Result<PathBuf> {
    let name = package_name(dir)?;
    let toolchain = match options.toolchain.resolve()? {
        Toolchain::BuildStd => Some(BuildStd::find()?),
        _ => None,
    };
    let component = match toolchain {
        None => {
            let mut command =
                Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
            command.args(["build", "--release", "--target", WASM_TARGET]);
            cargo_artifact(command, dir, &name, options, ".wasm")?
        }
        Some(toolchain) => {
            eprintln!(
                "Building `{name}` with std from source ({} for {CORE_TARGET}, then a component)…",
                toolchain.cargo.display()
            );
            let mut command = Command::new(&toolchain.cargo);
            command
                .args(["build", "--release", "--target", CORE_TARGET])
                .arg("-Zbuild-std=std,panic_abort")
                .env("RUSTC", &toolchain.rustc)
                .env("RUSTC_BOOTSTRAP", "1")
                .env(
                    "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER",
                    &toolchain.linker,
                )
                // What `cargo run`/`cargo test` set for the rustup toolchain must not leak in.
                .env_remove("RUSTUP_TOOLCHAIN")
                .env_remove("RUSTC_WRAPPER")
                .env_remove("RUSTC_WORKSPACE_WRAPPER")
                .env_remove("RUSTDOC");
            let module = cargo_artifact(command, dir, &name, options, ".wasm")?;
            componentize(&module)?
        }
    };
    check(&component)?;
    Ok(component)
}

/// The file name ending of a native library on this system.
pub const NATIVE_SUFFIX: &str = std::env::consts::DLL_SUFFIX;

/// Runs the cargo build `command` (`build --release ...`) on the crate in `dir` and returns the
/// file ending in `suffix` (`.wasm`, [`NATIVE_SUFFIX`]) among cargo's JSON artifact messages.
fn cargo_artifact(
    mut command: Command,
    dir: &Path,
    name: &str,
    options: &BuildOptions,
    suffix: &str,
) -> anyhow::Result<PathBuf> {
    command
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(target_dir) = &options.target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    let output = command.output().context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building `{name}` failed (cargo's messages are above)");
    }
    let mut artifact = None;
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let of_package = message["target"]["name"].as_str() == Some(&name.replace('-', "_"))
            || message["target"]["name"].as_str() == Some(name);
        if message["reason"] == "compiler-artifact" && of_package {
            for file in message["filenames"].as_array().into_iter().flatten() {
                if let Some(file) = file.as_str().filter(|f| f.ends_with(suffix)) {
                    artifact = Some(PathBuf::from(file));
                }
            }
        }
    }
    artifact.with_context(|| {
        format!("`{name}` built no {suffix} file: its [lib] needs crate-type = [\"cdylib\"]")
    })
}

/// Makes the core module `module` (built with wit-bindgen, which embeds the world's type) a
/// component, written beside it as `<stem>.component.wasm`; returns that path.
///
/// Errors: the module cannot be read, has no embedded component type, or does not validate.
fn componentize(module: &Path) -> anyhow::Result<PathBuf> {
    let bytes =
        std::fs::read(module).with_context(|| format!("{}: cannot read", module.display()))?;
    let component = wit_component::ComponentEncoder::default()
        .module(&bytes)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| anyhow::anyhow!("{}: cannot make a component: {e:#}", module.display()))?;
    let path = module.with_extension("component.wasm");
    std::fs::write(&path, component)
        .with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(path)
}

/// Copies `component` to `out` through a temporary file beside `out` and a rename.
fn install(component: &Path, out: &Path) -> anyhow::Result<()> {
    let mut temporary = out.as_os_str().to_owned();
    // One temporary name per process: two builds installing the same file at once (the demo and
    // a test, say) must not rename each other's half-written copy.
    temporary.push(format!(".partial.{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{}: cannot create", parent.display()))?;
    }
    std::fs::copy(component, &temporary)
        .and_then(|_| std::fs::rename(&temporary, out))
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Loads the native library `file` in the native host (its copy goes to a temporary state
/// folder): it must export a table of this ABI version, built with `panic = "unwind"`.
///
/// Errors: it does not.
pub fn check_native(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let state = tempfile::tempdir().context("cannot create a scratch folder")?;
    crate::plugins::native::NativeHost::new(state.path())
        .load_library(&bytes)
        .with_context(|| format!("{}: not a Twinloom native plugin", file.display()))?;
    Ok(())
}

/// Loads `file` in the host: it must be a component of the `twinloom:plugin` world.
///
/// Errors: it is not.
pub fn check(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let host = WasmHost::new(false)?;
    let component = host.compile(&bytes)?;
    host.instantiate("check", &component, Limits::default())
        .with_context(|| format!("{}: not a twinloom:plugin component", file.display()))?;
    Ok(())
}

const TEMPLATE_MANIFEST: &str = include_str!("template/Cargo.toml.in");
const TEMPLATE_LIB: &str = include_str!("template/lib.rs.in");
const TEMPLATE_README: &str = include_str!("template/README.md.in");

/// Writes a new plugin crate `name` into `dir` (which must not exist): `Cargo.toml` (its own
/// workspace, depending on the guest SDK at `sdk`), `src/lib.rs` (a working plugin: an
/// exponentially smoothed copy of every input, with unit tests) and `README.md` (how to build
/// and configure it).
///
/// Errors: `name` is not a valid crate name (lowercase letters, digits, `-`, `_`, starting with
/// a letter), `dir` exists, or it cannot be written.
pub fn new(name: &str, dir: &Path, sdk: &Path) -> anyhow::Result<()> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !valid {
        bail!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits, `-` and `_`, starting with a letter"
        );
    }
    if dir.exists() {
        bail!("{}: already exists", dir.display());
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{sdk}}", &sdk.display().to_string())
    };
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("{}: cannot create", dir.display()))?;
    for (file, template) in [
        ("Cargo.toml", TEMPLATE_MANIFEST),
        ("src/lib.rs", TEMPLATE_LIB),
        ("README.md", TEMPLATE_README),
    ] {
        let path = dir.join(file);
        std::fs::write(&path, fill(template))
            .with_context(|| format!("{}: cannot write", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_checked_and_existing_folders_kept() {
        let dir = tempfile::tempdir().unwrap();
        let sdk = std::path::Path::new("/sdk");
        for bad in ["", "Upper", "1st", "sp ace", "dot.ted"] {
            assert!(
                super::new(bad, &dir.path().join("x"), sdk).is_err(),
                "{bad}"
            );
        }
        assert!(
            super::new("ok", dir.path(), sdk).is_err(),
            "existing folder"
        );
        super::new("line-limits", &dir.path().join("line-limits"), sdk).unwrap();
        let manifest = std::fs::read_to_string(dir.path().join("line-limits/Cargo.toml")).unwrap();
        assert!(manifest.contains(r#"name = "line-limits""#), "{manifest}");
        assert!(manifest.contains(r#"path = "/sdk""#), "{manifest}");
        let lib = std::fs::read_to_string(dir.path().join("line-limits/src/lib.rs")).unwrap();
        assert!(!lib.contains("{{"), "{lib}");
    }
}
