//! Locating configuration errors: key paths, byte spans and `line:col` positions.
//!
//! Every configuration error Twinloom reports is a [`Diagnostic`]: the file, the 1-based line and
//! column, the key path (`assets[3].bindings.oil_temperature.address`) and a lowercase message.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One segment of a [`KeyPath`]: a table key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A key inside a table.
    Key(String),
    /// A zero-based index inside an array.
    Index(usize),
}

/// A path from the document root to a value, printed as `sources.modbus[0].timeout`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The document root (prints as `(root)`).
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path extended by a table key.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Key(key.into()));
        Self(segments)
    }

    /// This path extended by an array index.
    pub fn index(&self, index: usize) -> Self {
        let mut segments = self.0.clone();
        segments.push(Segment::Index(index));
        Self(segments)
    }

    /// This path extended by a dotted relative path as printed by `serde_path_to_error`
    /// (`bindings.oil_temperature.address`, `range[1]`).
    pub fn join_dotted(&self, dotted: &str) -> Self {
        let mut out = self.clone();
        if dotted.is_empty() || dotted == "." {
            return out;
        }
        for part in dotted.split('.') {
            // `name[3][4]` becomes Key(name), Index(3), Index(4).
            let (name, mut rest) = match part.find('[') {
                Some(at) => (&part[..at], &part[at..]),
                None => (part, ""),
            };
            if !name.is_empty() && name != "?" {
                out.0.push(Segment::Key(name.to_owned()));
            }
            while let Some(close) = rest.find(']') {
                if let Ok(index) = rest[1..close].parse() {
                    out.0.push(Segment::Index(index));
                }
                rest = &rest[close + 1..];
            }
        }
        out
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(root)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A configuration error with its position.
///
/// Displays as `FILE:LINE:COL: KEY.PATH: message` (line and column are 1-based; the column counts
/// characters, not bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The configuration file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number, in characters.
    pub column: usize,
    /// Where in the document the error is.
    pub path: KeyPath,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.column,
            self.path,
            self.message
        )
    }
}

/// A semantic error found by validation before its position is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where the offending value is.
    pub path: KeyPath,
    /// What is wrong, lowercase.
    pub message: String,
    /// For a string value: the byte offset inside the string's contents where the problem is
    /// (an error inside an interlock's condition).
    pub inside: Option<usize>,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: KeyPath, message: impl Into<String>) -> Self {
        Self {
            path,
            message: message.into(),
            inside: None,
        }
    }

    /// A problem at byte `offset` of the contents of the string at `path`.
    pub fn inside(path: KeyPath, offset: usize, message: impl Into<String>) -> Self {
        Self {
            inside: Some(offset),
            ..Self::new(path, message)
        }
    }
}

/// Maps key paths and byte offsets of one parsed document to `line:col` positions.
#[derive(Debug)]
pub struct SourceMap<'a> {
    file: &'a Path,
    text: &'a str,
    root: &'a Spanned<DeTable<'a>>,
}

impl<'a> SourceMap<'a> {
    /// A map over `root`, which was parsed from `text`, read from `file`.
    pub fn new(file: &'a Path, text: &'a str, root: &'a Spanned<DeTable<'a>>) -> Self {
        Self { file, text, root }
    }

    /// The diagnostic for `problem`, positioned at the deepest existing value on its path.
    pub fn locate(&self, problem: Problem) -> Diagnostic {
        let span = self.span_of(&problem.path);
        let offset = match problem.inside {
            Some(inside) => span.start + self.contents_start(span.start) + inside,
            None => span.start,
        };
        self.at_offset(offset, problem.path, problem.message)
    }

    /// How many bytes a string value starting at `at` has before its contents: the quote (`"` or
    /// `'`), or three and a newline right after them (multi-line strings). Offsets inside a
    /// string with escapes count the unescaped text, so they land a little early after an escape.
    fn contents_start(&self, at: usize) -> usize {
        let rest = self.text.get(at..).unwrap_or_default();
        if rest.starts_with("\"\"\"") || rest.starts_with("'''") {
            let after = &rest[3..];
            3 + if after.starts_with("\r\n") {
                2
            } else {
                usize::from(after.starts_with('\n'))
            }
        } else {
            usize::from(rest.starts_with('"') || rest.starts_with('\''))
        }
    }

    /// A diagnostic at byte `offset` of the text.
    pub fn at_offset(&self, offset: usize, path: KeyPath, message: String) -> Diagnostic {
        let (line, column) = line_col(self.text, offset);
        Diagnostic {
            file: self.file.to_owned(),
            line,
            column,
            path,
            message,
        }
    }

    /// The byte span of the value at `path`, or of the deepest ancestor that exists.
    pub fn span_of(&self, path: &KeyPath) -> Range<usize> {
        let mut span = self.root.span();
        let mut table: Option<&DeTable<'_>> = Some(self.root.get_ref());
        let mut array: Option<&[Spanned<DeValue<'_>>]> = None;
        for segment in path.segments() {
            let next: Option<&Spanned<DeValue<'_>>> = match (segment, table, array) {
                (Segment::Key(key), Some(t), _) => t.get(key.as_str()),
                (Segment::Index(i), _, Some(a)) => a.get(*i),
                _ => None,
            };
            let Some(value) = next else { break };
            span = value.span();
            table = None;
            array = None;
            match value.get_ref() {
                DeValue::Table(t) => table = Some(t),
                DeValue::Array(a) => array = Some(a.as_ref()),
                _ => {}
            }
        }
        span
    }
}

/// 1-based line and character column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_print_like_toml_keys() {
        let path = KeyPath::root()
            .key("assets")
            .index(3)
            .key("bindings")
            .key("oil_temperature");
        assert_eq!(path.to_string(), "assets[3].bindings.oil_temperature");
        assert_eq!(KeyPath::root().to_string(), "(root)");
    }

    #[test]
    fn dotted_paths_join_with_indexes() {
        let path = KeyPath::root()
            .key("types")
            .index(0)
            .join_dotted("properties[2].range[1]");
        assert_eq!(path.to_string(), "types[0].properties[2].range[1]");
        assert_eq!(
            KeyPath::root().key("a").join_dotted("."),
            KeyPath::root().key("a")
        );
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        // The byte after "bé" (3 bytes) is the 3rd character of line 2.
        assert_eq!(line_col(text, 9), (2, 3));
    }

    #[test]
    fn spans_resolve_to_the_deepest_existing_value() {
        let text = "[[assets]]\npath = \"a\"\n[assets.bindings]\nx = { address = 7 }\n";
        let root = DeTable::parse(text).unwrap();
        let map = SourceMap::new(Path::new("t.toml"), text, &root);
        let at = |p: &KeyPath| line_col(text, map.span_of(p).start);
        let assets0 = KeyPath::root().key("assets").index(0);
        assert_eq!(at(&assets0.key("path")), (2, 8));
        assert_eq!(
            at(&assets0.key("bindings").key("x").key("address")),
            (4, 17)
        );
        // A missing key falls back to its parent: the `x` inline table.
        assert_eq!(at(&assets0.key("bindings").key("x").key("missing")), (4, 5));
    }
}
