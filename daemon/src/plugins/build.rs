//! `twinloom plugin build` and `twinloom plugin new`: from a Rust crate to a checked component.
//!
//! `build` runs `cargo build --release --target wasm32-wasip2` on the crate (adding the target
//! with `rustup` when it is missing), finds the `.wasm` file among cargo's JSON artifact messages,
//! and loads it in the host to prove it is a component of the `twinloom:plugin` world. `new`
//! writes a plugin crate from the template in `template/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

use crate::plugins::wasm::{Limits, WasmHost};

/// The Rust target plugins are built for: WASI 0.2 components.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// The guest SDK in this source tree (`plugin-api/rust`), if the binary runs where it was built.
pub fn sdk_in_source_tree() -> Option<PathBuf> {
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-api/rust");
    sdk.canonicalize().ok()
}

/// The cargo to run: `$CARGO` (set by `cargo run`) or the one on `PATH`.
fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Makes sure the standard library for [`WASM_TARGET`] is installed, adding it with `rustup`
/// when it is not.
///
/// Errors: the target is missing and `rustup` is not available or fails.
pub fn ensure_target() -> anyhow::Result<()> {
    let libdir = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output()
        .context("cannot run rustc (is Rust installed?)")?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    if libdir.is_dir() {
        return Ok(());
    }
    eprintln!("Installing the {WASM_TARGET} target with rustup (once)…");
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        _ => bail!(
            "the {WASM_TARGET} target is not installed and `rustup target add {WASM_TARGET}` failed; \
             install it, or see plugins/README.md for building std from Debian's rust-web-src"
        ),
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
/// `target_dir` is cargo's `--target-dir` (cargo's default when `None`). Cargo's progress goes
/// to stderr.
///
/// Returns the path of the `.wasm` component.
///
/// Errors: no `Cargo.toml`, the target cannot be installed, the build fails, the crate is not a
/// `cdylib`, or the result is not a component of the `twinloom:plugin@0.1.0` world.
pub fn build(dir: &Path, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let name = package_name(dir)?;
    ensure_target()?;
    let mut command = cargo();
    command
        .args(["build", "--release", "--target", WASM_TARGET])
        .args([
            "--message-format",
            "json-render-diagnostics",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(target_dir) = target_dir {
        command.arg("--target-dir").arg(target_dir);
    }
    let output = command.output().context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building `{name}` failed (cargo's messages are above)");
    }
    let mut component = None;
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(message) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        let of_package = message["target"]["name"].as_str() == Some(&name.replace('-', "_"))
            || message["target"]["name"].as_str() == Some(&name);
        if message["reason"] == "compiler-artifact" && of_package {
            for file in message["filenames"].as_array().into_iter().flatten() {
                if let Some(file) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                    component = Some(PathBuf::from(file));
                }
            }
        }
    }
    let Some(component) = component else {
        bail!("`{name}` built no .wasm file: its [lib] needs crate-type = [\"cdylib\"]");
    };
    check(&component)?;
    Ok(component)
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
