//! The layering of `daemon/src`: every path to another top-level module (`crate::x`, `crate::{x,
//! y}`, `super::…` that climbs out of its module), in `use` lines and inline alike, must be an
//! edge of the allowed list in ARCHITECTURE.md (between `<!-- layers:begin -->` and
//! `<!-- layers:end -->`), and neither the code's graph nor the list may have a cycle. Inside a
//! top-level module with a list of its own (between `<!-- sublayers:begin -->` and
//! `<!-- sublayers:end -->`, e.g. `plugins/native: contract runtime stdio`), every path from one
//! child module to a sibling (`super::wasm`, `crate::plugins::wasm::X`) must be an edge of that
//! list, by the same rules: so `plugins/native` never uses `plugins/wasm`.
//!
//! Comments, string and character literals are skipped, so a doc comment that names a module is
//! not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A lexical token of Rust source that matters for paths, with its line.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Bang,
    Other,
}

/// Tokens of `source` (identifiers, `::`, braces), skipping comments and literals.
fn tokens(source: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if at(i + 1) == '/' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if at(i + 1) == '*' => {
                let mut depth = 0;
                loop {
                    if at(i) == '/' && at(i + 1) == '*' {
                        depth += 1;
                        i += 2;
                    } else if at(i) == '*' && at(i + 1) == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        if at(i) == '\n' {
                            line += 1;
                        }
                        i += 1;
                        if i >= chars.len() {
                            break;
                        }
                    }
                }
            }
            'r' | 'b' if raw_string_start(&chars, i).is_some() => {
                let (hashes, body) = raw_string_start(&chars, i).unwrap();
                i = body;
                loop {
                    if i >= chars.len() {
                        break;
                    }
                    if chars[i] == '"' && (0..hashes).all(|k| at(i + 1 + k) == '#') {
                        i += 1 + hashes;
                        break;
                    }
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    if at(i) == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A character literal ('x', '\n', '\u{1F600}'), or a lifetime ('a).
                if at(i + 1) == '\\' {
                    i += 2;
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if at(i + 2) == '\'' {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            ':' if at(i + 1) == ':' => {
                out.push((Token::PathSep, line));
                i += 2;
            }
            '{' => {
                out.push((Token::Open, line));
                i += 1;
            }
            '}' => {
                out.push((Token::Close, line));
                i += 1;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push((Token::Ident(chars[start..i].iter().collect()), line));
            }
            c if c.is_whitespace() => i += 1,
            '!' => {
                out.push((Token::Bang, line));
                i += 1;
            }
            _ => {
                out.push((Token::Other, line));
                i += 1;
            }
        }
    }
    out
}

/// For a raw (byte) string starting at `i` (`r"`, `r#"`, `br#"`): the number of `#` and where
/// its body starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    // Not the tail of an identifier (`for`, `br`): the character before must not be one.
    if i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// One use of another module: the top-level module it names and where.
#[derive(Debug, Clone)]
struct Use {
    to: String,
    file: PathBuf,
    line: usize,
}

/// The module path of a file below `src` (`sources/modbus/poller.rs` → `[sources, modbus,
/// poller]`; `mod.rs` names its folder; `lib.rs` is the root).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

/// The paths the tokens from `tokens[start]` on name, each after `prefix`: one for `a::b`, one
/// per leaf for a group `{a, b::{c, d}}` (`self` names the prefix itself).
fn expand(tokens: &[(Token, usize)], start: usize, prefix: &[String]) -> Vec<Vec<String>> {
    match tokens.get(start).map(|t| &t.0) {
        Some(Token::Ident(name)) => {
            let mut path = prefix.to_vec();
            if name != "self" {
                path.push(name.clone());
            }
            if tokens.get(start + 1).map(|t| &t.0) == Some(&Token::PathSep) {
                expand(tokens, start + 2, &path)
            } else {
                vec![path]
            }
        }
        Some(Token::Open) => {
            let mut paths = Vec::new();
            let (mut depth, mut item_starts) = (0, false);
            for (k, (token, _)) in tokens.iter().enumerate().skip(start) {
                match token {
                    Token::Open if depth == 0 => {
                        depth = 1;
                        item_starts = true;
                        continue;
                    }
                    Token::Open => depth += 1,
                    Token::Close => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    Token::Other | Token::Bang if depth == 1 => {
                        // The comma between items.
                        item_starts = true;
                        continue;
                    }
                    _ => {}
                }
                if item_starts && depth == 1 {
                    paths.extend(expand(tokens, k, prefix));
                }
                item_starts = false;
            }
            paths
        }
        _ => vec![prefix.to_vec()],
    }
}

/// A path of `file` to an item of the crate, resolved from the crate root (`super::wasm::X` in
/// `plugins/native/mod.rs` → `[plugins, wasm, X]`), and its line.
#[derive(Debug, Clone)]
struct Target {
    path: Vec<String>,
    line: usize,
}

/// Every `crate::` and `super::` path in `file`, resolved from the crate root.
fn targets(src: &Path, file: &Path) -> Vec<Target> {
    let source = std::fs::read_to_string(file).unwrap();
    let tokens = tokens(&source);
    let path = module_path(src, file);
    let mut found = Vec::new();
    // Inline modules (`mod tests { … }`) the scan is inside, with the brace depth they close at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let ident = |i: usize| match tokens.get(i) {
        Some((Token::Ident(name), _)) => Some(name.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Open => depth += 1,
            Token::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Token::Ident(word) if word == "mod" => {
                if let Some(name) = ident(i + 1)
                    && tokens.get(i + 2).map(|t| &t.0) == Some(&Token::Open)
                {
                    inline.push((name.to_owned(), depth + 1));
                }
            }
            Token::Ident(word) if word == "crate" || word == "super" => {
                let line = tokens[i].1;
                // The module the path starts from.
                let mut base: Vec<String> = path.clone();
                base.extend(inline.iter().map(|(name, _)| name.clone()));
                let mut j = i;
                if word == "crate" {
                    base.clear();
                    j += 1;
                } else {
                    while ident(j) == Some("super")
                        && tokens.get(j + 1).map(|t| &t.0) == Some(&Token::PathSep)
                    {
                        base.pop();
                        j += 2;
                    }
                    j -= 1;
                }
                if tokens.get(j).map(|t| &t.0) != Some(&Token::PathSep) {
                    i += 1;
                    continue;
                }
                for path in expand(&tokens, j + 1, &base) {
                    found.push(Target { path, line });
                }
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Every use of a top-level module in `file` other than the file's own.
fn uses(src: &Path, file: &Path, modules: &BTreeSet<String>) -> Vec<Use> {
    let own = module_path(src, file);
    let mut found: Vec<Use> = Vec::new();
    for target in targets(src, file) {
        let Some(to) = target.path.first() else {
            continue;
        };
        if modules.contains(to)
            && Some(to) != own.first()
            && !found.iter().any(|u| u.to == *to && u.line == target.line)
        {
            found.push(Use {
                to: to.clone(),
                file: file.to_owned(),
                line: target.line,
            });
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level modules declared in `lib.rs`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let tokens = tokens(&lib);
    let mut modules = BTreeSet::new();
    for window in tokens.windows(2) {
        if let [(Token::Ident(word), _), (Token::Ident(name), _)] = window
            && word == "mod"
        {
            modules.insert(name.clone());
        }
    }
    modules
}

/// An allowed list of ARCHITECTURE.md, the one between `<!-- {list}:begin -->` and
/// `<!-- {list}:end -->`: `module: dependency dependency …` per line (a module of the `sublayers`
/// list is named with its parent, `plugins/native`).
fn allowed(architecture: &str, list: &str) -> BTreeMap<String, BTreeSet<String>> {
    let begin = architecture
        .find(&format!("<!-- {list}:begin -->"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has <!-- {list}:begin -->"));
    let end = architecture
        .find(&format!("<!-- {list}:end -->"))
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has <!-- {list}:end -->"));
    architecture[begin..end]
        .lines()
        .filter_map(|line| {
            let (module, deps) = line.trim().split_once(':')?;
            let module = module.trim();
            (!module.is_empty()
                && module
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c == '_' || c == '/'))
            .then(|| {
                let deps = deps
                    .split_whitespace()
                    .filter(|d| *d != "—" && *d != "(none)")
                    .map(str::to_owned)
                    .collect();
                (module.to_owned(), deps)
            })
        })
        .collect()
}

/// A cycle of `graph`, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|m| m == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(cycle);
        }
    }
    None
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn daemon_modules_depend_only_downwards_as_architecture_md_allows() {
    let src = repo().join("daemon/src");
    let modules = top_level_modules(&src);
    assert!(
        modules.contains("twin") && modules.contains("app"),
        "{modules:?}"
    );
    let architecture = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let allowed = allowed(&architecture, "layers");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for module in &modules {
        if !allowed.contains_key(module) {
            problems.push(format!(
                "module `{module}` is missing from the allowed list in ARCHITECTURE.md"
            ));
        }
        graph.entry(module.clone()).or_default();
    }
    for file in files.iter().filter(|f| !f.ends_with("main.rs")) {
        let Some(from) = module_path(&src, file).first().cloned() else {
            continue;
        };
        for found in uses(&src, file, &modules) {
            if !allowed
                .get(&from)
                .is_some_and(|deps| deps.contains(&found.to))
            {
                problems.push(format!(
                    "{}:{}: `{from}` uses `{}`, an edge the allowed list in ARCHITECTURE.md does not have",
                    found.file.strip_prefix(repo()).unwrap_or(&found.file).display(),
                    found.line,
                    found.to
                ));
            }
            graph.entry(from.clone()).or_default().insert(found.to);
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        problems.push(format!("the code has a cycle: {}", cycle.join(" → ")));
    }
    if let Some(cycle) = find_cycle(&allowed) {
        problems.push(format!(
            "the allowed list in ARCHITECTURE.md has a cycle: {}",
            cycle.join(" → ")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Inside a top-level module with a list of its own (`<!-- sublayers:begin -->`, lines
/// `parent/child: sibling sibling …`), a child module (a file or folder of the parent) may use
/// only the siblings its line names: the plugin hosts `wasm` and `native` are siblings over the
/// shared `contract`, and neither uses the other.
#[test]
fn submodules_depend_only_as_architecture_md_allows() {
    let src = repo().join("daemon/src");
    let architecture = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    // parent → child → the siblings it may use.
    let mut lists: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (key, deps) in allowed(&architecture, "sublayers") {
        let (parent, child) = key
            .split_once('/')
            .unwrap_or_else(|| panic!("`{key}` in the sublayers list is not `parent/child`"));
        lists
            .entry(parent.to_owned())
            .or_default()
            .insert(child.to_owned(), deps);
    }
    assert!(lists.contains_key("plugins"), "{lists:?}");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for (parent, allowed) in &lists {
        // The children on disk: `parent/x.rs` and `parent/x/`.
        let children: BTreeSet<String> = files
            .iter()
            .filter_map(|f| {
                let path = module_path(&src, f);
                (path.len() >= 2 && path[0] == *parent).then(|| path[1].clone())
            })
            .collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for child in &children {
            if !allowed.contains_key(child) {
                problems.push(format!(
                    "module `{parent}/{child}` is missing from the sublayers list in ARCHITECTURE.md"
                ));
            }
            graph.entry(child.clone()).or_default();
        }
        for file in &files {
            let from = module_path(&src, file);
            if from.len() < 2 || from[0] != *parent {
                continue;
            }
            for target in targets(&src, file) {
                let [head, to, ..] = target.path.as_slice() else {
                    continue;
                };
                if head != parent || *to == from[1] || !children.contains(to) {
                    continue;
                }
                if !allowed.get(&from[1]).is_some_and(|deps| deps.contains(to)) {
                    problems.push(format!(
                        "{}:{}: `{parent}/{}` uses `{parent}/{to}`, an edge the sublayers list in ARCHITECTURE.md does not have",
                        file.strip_prefix(repo()).unwrap_or(file).display(),
                        target.line,
                        from[1]
                    ));
                }
                graph.entry(from[1].clone()).or_default().insert(to.clone());
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            problems.push(format!(
                "the code of `{parent}` has a cycle: {}",
                cycle.join(" → ")
            ));
        }
        if let Some(cycle) = find_cycle(allowed) {
            problems.push(format!(
                "the sublayers list of `{parent}` in ARCHITECTURE.md has a cycle: {}",
                cycle.join(" → ")
            ));
        }
    }
    problems.dedup();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_scanner_resolves_paths_below_the_top_level() {
    let source = r#"
use super::super::wasm::Instance;
use crate::plugins::{contract::{Level, plugin_log}, runtime, self};
use super::Library;
fn f() {
    let _ = crate::plugins::stdio::one_line("x");
}
"#;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("plugins/native")).unwrap();
    let file = src.join("plugins/native/instance.rs");
    std::fs::write(&file, source).unwrap();
    let found: Vec<(String, usize)> = targets(src, &file)
        .into_iter()
        .map(|t| (t.path.join("::"), t.line))
        .collect();
    let expected: Vec<(String, usize)> = [
        ("plugins::wasm::Instance", 2),
        ("plugins::contract::Level", 3),
        ("plugins::contract::plugin_log", 3),
        ("plugins::runtime", 3),
        ("plugins", 3),
        ("plugins::native::Library", 4),
        ("plugins::stdio::one_line", 6),
    ]
    .into_iter()
    .map(|(p, l)| (p.to_owned(), l))
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn the_scanner_sees_paths_in_code_and_not_in_comments_or_literals() {
    let source = r##"
//! Uses `crate::config` in a doc comment only.
use crate::twin::{Twin, Value};
use crate::{runtime, sources::Writers};
fn f() -> &'static str {
    let _ = crate::telemetry::init;
    let _c = '"';
    let _s = "crate::app";
    let _r = r#"crate::cli"#;
    /* crate::demo */
    "x"
}
mod tests {
    use super::super::super::control::Gate;
    use super::*;
}
"##;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("northbound")).unwrap();
    let file = src.join("northbound/server.rs");
    std::fs::write(&file, source).unwrap();
    let modules: BTreeSet<String> = [
        "app",
        "cli",
        "config",
        "control",
        "demo",
        "northbound",
        "runtime",
        "sources",
        "telemetry",
        "twin",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    let found: BTreeSet<(String, usize)> = uses(src, &file, &modules)
        .into_iter()
        .map(|u| (u.to, u.line))
        .collect();
    let expected: BTreeSet<(String, usize)> = [
        ("twin", 3),
        ("runtime", 4),
        ("sources", 4),
        ("telemetry", 6),
        ("control", 14),
    ]
    .into_iter()
    .map(|(m, l)| (m.to_owned(), l))
    .collect();
    assert_eq!(found, expected);
}

/// The `warn!` and `error!` invocations of `source` (not those in comments or literals): macro
/// name and line.
fn log_macros(source: &str) -> Vec<(String, usize)> {
    tokens(source)
        .windows(2)
        .filter_map(|window| match window {
            [(Token::Ident(name), line), (Token::Bang, _)] if name == "warn" || name == "error" => {
                Some((name.clone(), *line))
            }
            _ => None,
        })
        .collect()
}

/// Typed events: a component says what went wrong through an event type in its `events.rs`, whose
/// `emit` writes the log line and moves the metric (and readiness) together, from one place; a
/// raw `warn!` or `error!` anywhere else is a log line without its metric and a second place to
/// look for what the component reports. (A clippy `disallowed-macros` rule cannot carry the
/// exception: clippy 1.95 ignores `#[allow(clippy::disallowed_macros)]` for tracing's macros in
/// some modules and honours it in others, rust-clippy#14017.)
#[test]
fn warnings_and_errors_are_logged_only_from_events_modules() {
    let src = repo().join("daemon/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut raw = Vec::new();
    for file in files {
        if file.file_name().is_some_and(|n| n == "events.rs") {
            continue;
        }
        for (name, line) in log_macros(&std::fs::read_to_string(&file).unwrap()) {
            raw.push(format!(
                "{}:{line}: `{name}!` outside an events.rs",
                file.strip_prefix(repo()).unwrap_or(&file).display()
            ));
        }
    }
    assert!(raw.is_empty(), "{}", raw.join("\n"));
}

#[test]
fn the_scanner_sees_raw_log_macros_and_not_those_in_comments_or_strings() {
    let found = log_macros(
        "// warn!(x)\nlet s = \"error!(y)\";\ntracing::warn!(z);\nif !error {}\nerror!(w)",
    );
    assert_eq!(found, [("warn".to_owned(), 3), ("error".to_owned(), 5)]);
}

/// The binary that goes on a factory server links neither the plant simulator nor the component
/// tooling of `twinloom plugin build`: both sit behind the `demo` and `plugin-tools` features.
/// (Proc-macro edges are left out: wasmtime's `bindgen!` runs wit-component at compile time only.)
#[test]
fn the_default_build_links_neither_the_simulator_nor_component_tooling() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "-p",
            "twinloom",
            "-e",
            "normal,no-proc-macro",
            "--prefix",
            "none",
            "--locked",
            "--offline",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(tree.contains("wasmtime"), "{tree}");
    for unwanted in ["twinloom-sim", "wit-component"] {
        assert!(
            !tree.lines().any(|line| line.starts_with(unwanted)),
            "the default build depends on {unwanted}:\n{tree}"
        );
    }
}
