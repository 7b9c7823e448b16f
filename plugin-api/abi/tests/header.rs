//! The header `plugin-api/include/twinloom_plugin.h` and this crate describe one ABI: a C program
//! compiled with the system C compiler against the header prints every constant, size and field
//! offset, and each must equal the Rust side's.

use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::path::Path;
use std::process::Command;

use twinloom_plugin_abi as abi;

/// A struct's C name, its Rust size, and its fields as (C field, Rust offset).
type Layout = (&'static str, usize, Vec<(&'static str, usize)>);

/// The layout of every struct.
fn layouts() -> Vec<Layout> {
    macro_rules! layout {
        ($c:literal, $rust:ty, [$($cf:ident => $rf:ident),* $(,)?]) => {
            ($c, size_of::<$rust>(), vec![$((stringify!($cf), offset_of!($rust, $rf))),*])
        };
    }
    vec![
        layout!("twinloom_str", abi::Str, [ptr => ptr, len => len]),
        layout!("twinloom_writable_property", abi::WritableProperty, [path => path, data_type => data_type]),
        layout!("twinloom_properties", abi::Properties, [
            inputs => inputs, inputs_len => inputs_len, owned => owned, owned_len => owned_len,
            writable => writable, writable_len => writable_len,
        ]),
        layout!("twinloom_change_batch", abi::ChangeBatch, [
            properties => properties, values => values, qualities => qualities,
            source_times_ms => source_times_ms, len => len,
        ]),
        layout!("twinloom_proposal_outcome", abi::ProposalOutcome, [
            proposal => proposal, index => index, outcome => outcome, device_error => device_error,
            reserved => reserved, rule => rule,
        ]),
        layout!("twinloom_setpoint", abi::Setpoint, [kind => kind, boolean => boolean, integer => integer, real => real]),
        layout!("twinloom_write_proposal", abi::WriteProposal, [
            value => value, index => index, reason_start => reason_start, reason_len => reason_len,
            reserved => reserved,
        ]),
        layout!("twinloom_outputs", abi::Outputs, [
            indices => indices, values => values, qualities => qualities, values_len => values_len,
            proposals => proposals, proposals_len => proposals_len, reasons => reasons,
            reasons_len => reasons_len,
        ]),
        layout!("twinloom_host", abi::Host, [size => size, reserved => reserved, context => context, log => log]),
        layout!("twinloom_plugin", abi::Plugin, [
            abi_version => abi_version, size => size, panic_strategy => panic_strategy,
            reserved => reserved, init => init, on_changes => on_changes, on_tick => on_tick,
            free_outputs => free_outputs, drop => drop,
        ]),
    ]
}

/// The header's constants and their Rust values.
fn constants() -> Vec<(&'static str, i64)> {
    vec![
        ("TWINLOOM_PLUGIN_ABI_VERSION", abi::ABI_VERSION.into()),
        ("TWINLOOM_OK", abi::OK.into()),
        ("TWINLOOM_REFUSED", abi::REFUSED.into()),
        ("TWINLOOM_FAULT", abi::FAULT.into()),
        ("TWINLOOM_GOOD", abi::GOOD.into()),
        ("TWINLOOM_UNCERTAIN", abi::UNCERTAIN.into()),
        ("TWINLOOM_BAD", abi::BAD.into()),
        ("TWINLOOM_BOOLEAN", abi::BOOLEAN.into()),
        ("TWINLOOM_INTEGER", abi::INTEGER.into()),
        ("TWINLOOM_FLOAT", abi::FLOAT.into()),
        ("TWINLOOM_WRITTEN", abi::WRITTEN.into()),
        ("TWINLOOM_OUTCOME_REFUSED", abi::OUTCOME_REFUSED.into()),
        ("TWINLOOM_SHADOW", abi::SHADOW.into()),
        ("TWINLOOM_EXPIRED", abi::EXPIRED.into()),
        ("TWINLOOM_SUPERSEDED", abi::SUPERSEDED.into()),
        ("TWINLOOM_DISARMED", abi::DISARMED.into()),
        ("TWINLOOM_DEVICE_ERROR", abi::DEVICE_ERROR.into()),
        (
            "TWINLOOM_READ_BACK_MISMATCH",
            abi::READ_BACK_MISMATCH.into(),
        ),
        ("TWINLOOM_PANIC_NONE", abi::PANIC_NONE.into()),
        ("TWINLOOM_PANIC_UNWIND", abi::PANIC_UNWIND.into()),
        ("TWINLOOM_PANIC_ABORT", abi::PANIC_ABORT.into()),
    ]
}

#[test]
fn the_header_and_the_rust_types_have_one_layout() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    let mut program = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"twinloom_plugin.h\"\nint main(void) {\n",
    );
    for (name, _, fields) in layouts() {
        writeln!(program, "  printf(\"{name} %zu\\n\", sizeof({name}));").unwrap();
        for (field, _) in fields {
            writeln!(
                program,
                "  printf(\"{name}.{field} %zu\\n\", offsetof({name}, {field}));"
            )
            .unwrap();
        }
    }
    for (name, _) in constants() {
        writeln!(
            program,
            "  printf(\"{name} %lld\\n\", (long long)({name}));"
        )
        .unwrap();
    }
    program.push_str("  return 0;\n}\n");
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    std::fs::write(&source, program).unwrap();
    let compiled = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&include)
        .arg(&source)
        .arg("-o")
        .arg(&binary)
        .output()
        .expect("a C compiler (cc) on PATH");
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let output = Command::new(&binary).output().unwrap();
    let printed = String::from_utf8(output.stdout).unwrap();
    let c: std::collections::HashMap<&str, i64> = printed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    let mut expected = Vec::new();
    for (name, size, fields) in layouts() {
        expected.push((name.to_owned(), size as i64));
        for (field, offset) in fields {
            expected.push((format!("{name}.{field}"), offset as i64));
        }
    }
    for (name, value) in constants() {
        expected.push((name.to_owned(), value));
    }
    for (key, rust) in &expected {
        assert_eq!(
            c.get(key.as_str()),
            Some(rust),
            "{key}: C says {:?}, Rust {rust}",
            c.get(key.as_str())
        );
    }
    assert_eq!(c.len(), expected.len());
}
