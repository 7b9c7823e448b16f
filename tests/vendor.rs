//! Each vendored crate (`daemon/vendor/<crate>/`) is the published crate plus the patch series of
//! `daemon/vendor/patches/<crate>/`, nothing else (see the series' README).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The published crates the copies are made from.
const SERVER: (&str, &str) = ("async-opcua-server", "0.19.0");
const TYPES: (&str, &str) = ("async-opcua-types", "0.19.0");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_owned());
        }
    }
}

/// Downloads the published crate `name` `version` with cargo (which checks it against the
/// registry's checksum) and unpacks it into `into`; returns its folder.
fn pristine(into: &Path, (name, version): (&str, &str)) -> PathBuf {
    let project = into.join("fetch");
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(project.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"fetch-pristine\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             [dependencies]\n{name} = \"={version}\"\n[workspace]\n"
        ),
    )
    .unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cargo"),
        PathBuf::from,
    );
    let status = Command::new(cargo)
        .args([
            "fetch",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--manifest-path",
        ])
        .arg(project.join("Cargo.toml"))
        .status()
        .unwrap();
    assert!(status.success(), "cargo fetch of {name} {version} failed");
    let archive = std::fs::read_dir(home.join("registry/cache"))
        .unwrap()
        .map(|index| {
            index
                .unwrap()
                .path()
                .join(format!("{name}-{version}.crate"))
        })
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{name}-{version}.crate is not in cargo's cache"));
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(status.success(), "cannot unpack {}", archive.display());
    into.join(format!("{name}-{version}"))
}

#[test]
fn the_vendored_copy_is_the_published_crate_plus_the_patch_series() {
    check(SERVER);
}

#[test]
fn the_vendored_types_are_the_published_crate_plus_their_patch_series() {
    check(TYPES);
}

/// Applies the series of `crate_` to the published crate and compares with the committed copy.
fn check(crate_: (&str, &str)) {
    let name = crate_.0;
    let scratch = tempfile::tempdir().unwrap();
    let patched = pristine(scratch.path(), crate_);
    let series_dir = repo().join("daemon/vendor/patches").join(name);
    let series = std::fs::read_to_string(series_dir.join("series")).unwrap();
    let patches: Vec<&str> = series.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!patches.is_empty(), "the series lists no patch");
    for patch in &patches {
        let output = Command::new("patch")
            .args(["-p1", "--forward", "--batch", "-d"])
            .arg(&patched)
            .arg("-i")
            .arg(series_dir.join(patch))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{patch} does not apply to the published crate:\n{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    let copy = repo().join("daemon/vendor").join(name);
    let mut committed = Vec::new();
    files(&copy, &copy, &mut committed);
    committed.sort();
    assert!(
        committed.iter().any(|f| f.ends_with("lib.rs")),
        "{committed:?}"
    );
    let mut differ = Vec::new();
    for file in &committed {
        match std::fs::read(patched.join(file)) {
            Ok(expected) if expected == std::fs::read(copy.join(file)).unwrap() => {}
            Ok(_) => differ.push(format!(
                "{}: differs from published + series",
                file.display()
            )),
            Err(_) => differ.push(format!("{}: not in the published crate", file.display())),
        }
    }
    assert!(
        differ.is_empty(),
        "the committed copy is not the published crate plus the series:\n{}",
        differ.join("\n")
    );
}
