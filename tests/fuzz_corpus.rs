//! Every saved input of every fuzz target (`daemon/fuzz/corpus/<target>/`, crashes found by the
//! campaigns among them) through its target's body in `twinloom::fuzzing`, as an ordinary test:
//! the checks the fuzzer ran, without an instrumented build. One test per target, so a failure
//! names the target; the panic names the file. See `docs/fuzzing.md`.

use std::path::{Path, PathBuf};

/// The files of one target's corpus, sorted; fails when there are none (a renamed folder must
/// not make its test pass by testing nothing).
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} holds no inputs", dir.display());
    files
}

/// Runs every input of `target`'s corpus through `body`, naming the file that fails. The inputs
/// run on the test's own thread (a 2 MiB stack, as a tokio worker's): `opcua_value/
/// nested-data-values` (≈ 1 300 DataValues nested in Variants) overflowed it until the depth
/// check of async-opcua-types patch 0001 (see docs/fuzzing.md, "Findings").
fn run(target: &'static str, body: fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).unwrap();
        if std::panic::catch_unwind(|| body(&data)).is_err() {
            panic!("{target}: {} fails", file.display());
        }
    }
}

#[test]
fn corpus_config() {
    run("config", twinloom::fuzzing::config);
}

#[test]
fn corpus_modbus() {
    run("modbus", twinloom::fuzzing::modbus);
}

#[test]
fn corpus_opcua_value() {
    run("opcua_value", twinloom::fuzzing::opcua_value);
}

#[test]
fn corpus_plugin_outputs() {
    run("plugin_outputs", twinloom::fuzzing::plugin_outputs);
}
