//! The Debian package (cargo-deb) as a plant engineer installs it, without systemd and without
//! touching the host: `tests/package.sh` runs in a private mount namespace (see there). Needs root
//! and cargo-deb, which `tests/run.sh` installs; the package is made from the test build's binary.

use std::path::Path;
use std::process::Command;

#[test]
fn the_debian_package_installs_a_service_its_user_can_run() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = tempfile::tempdir().unwrap();
    let deb = work.path().join("twinloom.deb");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The test build's binary (target/debug): no release build in CI.
    let built = Command::new(cargo)
        .current_dir(&repo)
        .args([
            "deb",
            "-p",
            "twinloom",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--quiet",
        ])
        .arg("--output")
        .arg(&deb)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "cargo deb (installed by tests/run.sh): {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let output = Command::new("unshare")
        .arg("--mount")
        .arg("bash")
        .arg(repo.join("tests/package.sh"))
        .arg(&deb)
        .arg(work.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "tests/package.sh (needs root):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
