//! Config tests: the example is valid; each file in `config/invalid/` yields exactly the
//! diagnostics listed in its trailing `# expect: LINE:COL: PATH: MESSAGE-PREFIX` comments.

use std::path::{Path, PathBuf};

use super::*;

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

#[test]
fn the_example_config_is_valid_and_builds_a_twin() {
    let config = load(&repo_file("config/example.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.sources.len(), 4);
    assert_eq!(config.types.len(), 4);
    assert_eq!(config.assets.len(), 12);
    let model = config.twin_model();
    // 4 packaging machines × 5 + 2 tanks × 4 + 3 pumps × 4 + 3 meters × 3, and the control
    // gate's `twinloom/control/armed` (some properties are read-write).
    assert_eq!(model.properties().len(), 4 * 5 + 2 * 4 + 3 * 4 + 3 * 3 + 1);
    assert!(model.property_by_path("twinloom/control/armed").is_some());
    let id = model
        .property_by_path("plant-a/utilities/pump2/vibration_rms")
        .unwrap();
    assert_eq!(model.decl(id).unit.unwrap().code, "MMS");
    assert_eq!(
        model.property(id).refresh_interval,
        Some(std::time::Duration::from_millis(200))
    );
    let speed = model
        .property_by_path("plant-a/line1/filler/speed")
        .unwrap();
    assert_eq!(model.property(speed).scaling.scale, 0.1);
    assert_eq!(
        model.property(speed).refresh_interval,
        Some(std::time::Duration::from_millis(250))
    );
}

fn expectations(text: &str) -> Vec<(usize, usize, String, String)> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(|rest| {
            let (position, rest) = rest.split_once(": ").expect("position");
            let (path, message) = rest.split_once(": ").expect("path");
            let (line, column) = position.split_once(':').expect("line:col");
            (
                line.parse().unwrap(),
                column.parse().unwrap(),
                path.to_owned(),
                message.to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_invalid_config_reports_exactly_its_expected_errors() {
    let dir = repo_file("config/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the invalid config corpus in {}",
        dir.display()
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected = expectations(&text);
        assert!(
            !expected.is_empty(),
            "{} lists no expectations",
            file.display()
        );
        let Err(ConfigError::Invalid(got)) = load(&file) else {
            panic!("{} was accepted", file.display());
        };
        let summary = got.iter().map(|d| format!("  {d}\n")).collect::<String>();
        assert_eq!(got.len(), expected.len(), "{}:\n{summary}", file.display());
        for (diagnostic, (line, column, path, message)) in got.iter().zip(&expected) {
            assert_eq!(diagnostic.file, file);
            assert_eq!(
                (
                    diagnostic.line,
                    diagnostic.column,
                    diagnostic.path.to_string()
                ),
                (*line, *column, path.clone()),
                "{}:\n{summary}",
                file.display()
            );
            assert!(
                diagnostic.message.starts_with(message.as_str()),
                "{}: `{}` does not start with `{message}`",
                file.display(),
                diagnostic.message
            );
        }
    }
}

#[test]
fn diagnostics_print_file_position_path_and_message() {
    let text = "[[sources.modbus]]\nid = \"plc\"\ntcp = \"127.0.0.1:502\"\nmax_read_bits = 5000\n";
    let Err(error) = parse(Path::new("plant.toml"), text) else {
        panic!("accepted");
    };
    assert_eq!(
        error.to_string(),
        "plant.toml:4:17: sources.modbus[0].max_read_bits: max_read_bits 5000 is outside 1..=2000 (Modbus Application Protocol §6.1)"
    );
}

#[test]
fn an_empty_file_is_a_valid_config_with_nothing_in_it() {
    let config = parse(Path::new("empty.toml"), "").unwrap();
    assert!(config.sources.is_empty() && config.assets.is_empty());
    assert_eq!(
        config.daemon.shutdown_timeout,
        std::time::Duration::from_secs(5)
    );
}

#[test]
fn a_missing_file_is_a_read_error() {
    let error = load(Path::new("/nonexistent/twinloom.toml")).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }), "{error}");
}

/// Found by the `config` fuzz target (corpus file `syntax-errors-out-of-order.toml`): the TOML
/// parser reported an unclosed array (end of file) before the broken string inside it, and
/// syntax errors were not sorted like the other diagnostics.
#[test]
fn syntax_errors_are_ordered_by_position() {
    let text = "users = [\n  { name = \"anonymous\n\nid = 1\n";
    let Err(ConfigError::Invalid(diagnostics)) = parse(Path::new("t.toml"), text) else {
        panic!("a broken file parsed");
    };
    assert!(diagnostics.len() >= 2, "{diagnostics:?}");
    let positions: Vec<(usize, usize)> = diagnostics.iter().map(|d| (d.line, d.column)).collect();
    let mut sorted = positions.clone();
    sorted.sort();
    assert_eq!(positions, sorted);
}

/// Found by the `config` fuzz target's scaling check (corpus file `offset-nan.toml`): a binding's
/// `offset = nan` (or `inf`) passed validation and made every value of its property NaN.
#[test]
fn a_binding_offset_must_be_finite() {
    let example = std::fs::read_to_string(repo_file("config/example.toml")).unwrap();
    let binding = "address = 1, encoding = \"u16\", scale = 0.1 }";
    assert!(example.contains(binding));
    for offset in ["nan", "inf", "-inf"] {
        let text = example.replacen(
            binding,
            &binding.replace(" }", &format!(", offset = {offset} }}")),
            1,
        );
        let Err(ConfigError::Invalid(diagnostics)) = parse(Path::new("t.toml"), &text) else {
            panic!("offset = {offset} passed validation");
        };
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].path.to_string().ends_with(".speed.offset"));
        assert_eq!(diagnostics[0].message, "offset must be a finite number");
    }
}
