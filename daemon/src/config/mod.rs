//! Configuration: TOML → typed structs → validated [`Config`], with every error reported at once.
//!
//! Loading has two passes. The **shape pass** deserializes each section and each array entry
//! separately (serde, `deny_unknown_fields`), so one bad entry does not hide the errors of the
//! next. The **validation pass** ([`validate`]) then checks meaning across the whole file: names
//! that must exist, paths that must be unique, addresses in range, resources claimed twice.
//! Both passes produce [`Diagnostic`]s with file, `line:col` and key path. Nothing is opened,
//! bound or written while loading.

pub mod admin_http;
pub mod change_log;
pub mod diagnostic;
pub mod history;
pub mod model;
pub mod opcua_server;
pub mod sources;
pub mod sparkplug;
mod validate;

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use diagnostic::{Diagnostic, KeyPath, Problem};
pub use model::Config;
use model::{AssetConfig, AssetHead};

use crate::twin::TwinModel;
use crate::twin::spec::{AssetSpec, BindingSpec};
use sources::{BindingConfig, SourceConfig, SourceKind};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file was read but is invalid; every error found, ordered by position.
    #[error("{}", Rendered(.0))]
    Invalid(Vec<Diagnostic>),
}

struct Rendered<'a>(&'a [Diagnostic]);

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, diagnostic) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{diagnostic}")?;
        }
        Ok(())
    }
}

impl Config {
    /// The source with this id.
    pub fn source(&self, id: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.id() == id)
    }

    /// The folder relative paths in this config resolve against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// `path` resolved against [`Self::base_dir`] when relative.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.base_dir().join(path)
    }

    /// The change log's settings when the log is to run: `[change_log]`, or its defaults when
    /// only a consumer of the log is configured (`[history]`, `[northbound.sparkplug]`); `None`
    /// when nothing asks for the log.
    pub fn change_log_config(&self) -> Option<change_log::ChangeLogConfig> {
        let consumer = self.history.is_some() || self.northbound.sparkplug.is_some();
        self.change_log
            .clone()
            .or_else(|| consumer.then(change_log::ChangeLogConfig::default))
    }

    /// The folder for state the daemon writes (PKI, audit log): `daemon.state_dir`, systemd's
    /// `$STATE_DIRECTORY`, or `/var/lib/twinloom`.
    pub fn state_dir(&self) -> PathBuf {
        self.daemon
            .state_dir
            .clone()
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/lib/twinloom"))
    }

    /// The twin's builder input made from this configuration: every asset with, per bound
    /// property, its binding's scaling and refresh interval (the binding's poll, else its source's
    /// default poll; none for subscriptions and plugins).
    pub fn asset_specs(&self) -> Vec<AssetSpec> {
        self.assets
            .iter()
            .map(|asset| {
                let default_poll = asset
                    .source
                    .as_deref()
                    .and_then(|id| self.source(id))
                    .map_or(Duration::from_secs(1), SourceConfig::default_poll);
                AssetSpec {
                    path: asset.path.clone(),
                    type_name: asset.type_name.clone(),
                    description: asset.description.clone(),
                    bindings: asset
                        .bindings
                        .iter()
                        .map(|(name, binding)| {
                            let spec = BindingSpec {
                                scaling: binding.scaling(),
                                refresh_interval: binding.refresh_interval(default_poll),
                            };
                            (name.clone(), spec)
                        })
                        .collect(),
                }
            })
            .collect()
    }

    /// The twin's model of this configuration (types, assets, properties), with a status object
    /// per plugin (`twinloom/plugins/<name>`, type `TwinloomPlugin`) and, when some property is
    /// read-write, the control gate's (`twinloom/control`, type `TwinloomControl`).
    pub fn twin_model(&self) -> TwinModel {
        let mut types = self.types.clone();
        let mut assets = self.asset_specs();
        let writable = self
            .types
            .iter()
            .flat_map(|t| &t.properties)
            .any(|p| p.access == crate::twin::Access::ReadWrite);
        if writable {
            types.push(crate::twin::spec::control_status_type());
            assets.push(AssetSpec {
                path: format!("{}/control", crate::twin::spec::SYSTEM_ROOT),
                type_name: crate::twin::spec::CONTROL_STATUS_TYPE.to_owned(),
                description: Some("The control gate".to_owned()),
                bindings: Default::default(),
            });
        }
        if !self.plugins.is_empty() {
            types.push(crate::twin::spec::plugin_status_type());
            assets.extend(self.plugins.iter().map(|plugin| AssetSpec {
                path: crate::twin::spec::plugin_status_path(&plugin.name),
                type_name: crate::twin::spec::PLUGIN_STATUS_TYPE.to_owned(),
                description: Some(format!("Plugin `{}`", plugin.name)),
                bindings: Default::default(),
            }));
        }
        TwinModel::build(&types, &assets)
    }

    /// Every binding of the assets served by source `id`, in file order: the asset, the
    /// property's name, the device id (for sources with several devices) and the binding.
    pub fn bindings_of<'a>(
        &'a self,
        id: &'a str,
    ) -> impl Iterator<Item = (&'a AssetConfig, &'a str, &'a BindingConfig)> + 'a {
        self.assets
            .iter()
            .filter(move |a| a.source.as_deref() == Some(id))
            .flat_map(|asset| {
                asset
                    .bindings
                    .iter()
                    .map(move |(name, binding)| (asset, name.as_str(), binding))
            })
    }
}

/// Reads and validates the configuration file at `path`.
///
/// Errors: [`ConfigError::Read`] when the file cannot be read; [`ConfigError::Invalid`] with every
/// shape and semantic error otherwise.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Places `problems` found in the valid configuration `text` of `file` (by `twinloom check
/// --online`) at their `line:col`, in file order.
pub fn locate(file: &Path, text: &str, problems: Vec<Problem>) -> Vec<Diagnostic> {
    let (root, _) = DeTable::parse_recoverable(text);
    let map = diagnostic::SourceMap::new(file, text, &root);
    let mut diagnostics: Vec<Diagnostic> = problems.into_iter().map(|p| map.locate(p)).collect();
    diagnostics.sort_by_key(|d| (d.line, d.column));
    diagnostics
}

/// Validates configuration `text` as if read from `file` (used for positions and relative paths).
///
/// Errors: [`ConfigError::Invalid`] with every error found.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    let map = diagnostic::SourceMap::new(file, text, &root);
    if !syntax_errors.is_empty() {
        let mut diagnostics: Vec<Diagnostic> = syntax_errors
            .iter()
            .map(|error| {
                let offset = error.span().map_or(0, |span| span.start);
                map.at_offset(offset, KeyPath::root(), error.message().trim().to_owned())
            })
            .collect();
        // The parser does not report in file order (an unclosed array before a broken string
        // inside it).
        diagnostics.sort_by_key(|d| (d.line, d.column));
        diagnostics.dedup();
        return Err(ConfigError::Invalid(diagnostics));
    }
    let mut loader = Loader {
        map: &map,
        diagnostics: Vec::new(),
        incomplete: Incomplete::default(),
        source_kinds: Default::default(),
    };
    let config = loader.load(file, root.get_ref());
    let problems = validate::validate(&config, &loader.incomplete);
    let mut diagnostics = loader.diagnostics;
    diagnostics.extend(problems.into_iter().map(|p| map.locate(p)));
    if diagnostics.is_empty() {
        Ok(config)
    } else {
        diagnostics.sort_by_key(|d| (d.line, d.column));
        diagnostics.dedup();
        Err(ConfigError::Invalid(diagnostics))
    }
}

/// What the shape pass tells the validation pass: where each parsed entry stands in the file
/// (entries that failed drop out, so an index into `Config` is not a position in the file), and
/// which names belong to entries that failed, so that references to them are not reported as
/// unknown (their own errors were).
#[derive(Debug, Default)]
pub(crate) struct Incomplete {
    /// Ids of sources whose entry failed the shape pass (or sits under an unknown kind).
    pub sources: HashSet<String>,
    /// Names of types whose entry failed the shape pass.
    pub types: HashSet<String>,
    /// (asset index in `Config::assets`, property name) of bindings that failed the shape pass.
    pub bindings: HashSet<(usize, String)>,
    /// Key path of each entry of `Config::sources`, `types`, `assets` and `plugins`, in order.
    pub source_paths: Vec<KeyPath>,
    pub type_paths: Vec<KeyPath>,
    pub asset_paths: Vec<KeyPath>,
    pub plugin_paths: Vec<KeyPath>,
}

/// The string value of `key` in `value` when it is a table that has one.
fn string_field(value: &DeValue<'_>, key: &str) -> Option<String> {
    let DeValue::Table(fields) = value else {
        return None;
    };
    match fields.get(key).map(Spanned::get_ref) {
        Some(DeValue::String(text)) => Some(text.to_string()),
        _ => None,
    }
}

/// Removes the table key that `segments` (a path into `value` from serde_path_to_error) ends
/// at. Returns whether a key was removed (the path ends at a table key that exists).
fn remove_at(value: &mut DeValue<'_>, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        current = match (segment, current) {
            (Segment::Map { key }, DeValue::Table(table)) => {
                match table.iter_mut().find(|(k, _)| k.get_ref() == key) {
                    Some((_, v)) => v.get_mut(),
                    None => return false,
                }
            }
            (Segment::Seq { index }, DeValue::Array(items)) => match items.get_mut(*index) {
                Some(v) => v.get_mut(),
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, current) {
        (Segment::Map { key }, DeValue::Table(table)) => {
            let found = table.keys().find(|k| k.get_ref() == key).cloned();
            found.is_some_and(|k| table.remove(&k).is_some())
        }
        _ => false,
    }
}

struct Loader<'m, 'a> {
    map: &'m diagnostic::SourceMap<'a>,
    diagnostics: Vec<Diagnostic>,
    incomplete: Incomplete,
    /// Kind of every source id seen, including sources that failed the shape pass, so that
    /// their assets' bindings are still checked.
    source_kinds: std::collections::HashMap<String, SourceKind>,
}

const SECTIONS: &str = "`daemon`, `twin`, `opcua_server`, `admin_http`, `change_log`, `history`, `northbound`, `control`, `sources`, `types`, `assets`, `plugins`";

impl Loader<'_, '_> {
    fn load(&mut self, file: &Path, root: &DeTable<'_>) -> Config {
        let mut config = Config {
            file: file.to_owned(),
            daemon: Default::default(),
            twin: Default::default(),
            opcua_server: None,
            admin_http: None,
            change_log: None,
            history: None,
            northbound: Default::default(),
            sources: Vec::new(),
            types: Vec::new(),
            assets: Vec::new(),
            plugins: Vec::new(),
            control: Default::default(),
        };
        let mut assets = None;
        for (key, value) in root {
            let path = KeyPath::root().key(key.get_ref().as_ref());
            match key.get_ref().as_ref() {
                "daemon" => config.daemon = self.de(&path, value).unwrap_or_default(),
                "twin" => config.twin = self.de(&path, value).unwrap_or_default(),
                "opcua_server" => config.opcua_server = self.de(&path, value),
                "admin_http" => config.admin_http = self.de(&path, value),
                "change_log" => config.change_log = self.de(&path, value),
                "history" => config.history = self.de(&path, value),
                "northbound" => config.northbound = self.de(&path, value).unwrap_or_default(),
                "control" => config.control = self.de(&path, value).unwrap_or_default(),
                "sources" => config.sources = self.sources(&path, value),
                "types" => {
                    let (types, broken) = self.array(&path, value, "name");
                    (config.types, self.incomplete.type_paths) = types.into_iter().unzip();
                    self.incomplete.types.extend(broken);
                }
                "assets" => assets = Some((path, value)),
                "plugins" => {
                    let (plugins, _) = self.array(&path, value, "name");
                    (config.plugins, self.incomplete.plugin_paths) = plugins.into_iter().unzip();
                }
                other => self.error_at(
                    key.span().start,
                    path.clone(),
                    format!("unknown section `{other}`, expected one of {SECTIONS}"),
                ),
            }
        }
        if let Some((path, value)) = assets {
            config.assets = self.assets(&path, value);
        }
        config
    }

    fn error_at(&mut self, offset: usize, path: KeyPath, message: String) {
        self.diagnostics
            .push(self.map.at_offset(offset, path, message));
    }

    /// Deserializes one value, recording a diagnostic at each offending key. After an error the
    /// offending key is taken out and the value deserialized again, so that every shape error of
    /// one entry is reported in one run, and an entry whose broken keys are all optional still
    /// parses (with their defaults) and gets its semantic checks. Gives up (`None`) when a
    /// required key was the broken one, or the error is not at a table key.
    fn de<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let mut value = value.clone();
        let mut removed: Vec<String> = Vec::new();
        loop {
            let deserializer = ValueDeserializer::from(value.clone());
            let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
                Ok(parsed) => return Some(parsed),
                Err(error) => error,
            };
            let at = error.path().to_string();
            let segments: Vec<Segment> = error.path().iter().cloned().collect();
            let error = error.into_inner();
            let message = error.message().trim().to_owned();
            // A required key that an earlier round took out: its error is already reported.
            if let Some(field) = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                let missing = if at == "." || at.is_empty() {
                    field.to_owned()
                } else {
                    format!("{at}.{field}")
                };
                if removed.contains(&missing) {
                    return None;
                }
            }
            let full = path.join_dotted(&at);
            let offset = error
                .span()
                .map_or_else(|| self.map.span_of(&full).start, |span| span.start);
            self.error_at(offset, full, message);
            if !remove_at(value.get_mut(), &segments) {
                return None;
            }
            removed.push(at);
        }
    }

    /// Deserializes an array of tables entry by entry. Returns the entries that parsed, each
    /// with its key path, and the value of `name_key` (an id or a name) of every entry that did
    /// not.
    fn array<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
        name_key: &str,
    ) -> (Vec<(T, KeyPath)>, Vec<String>) {
        let DeValue::Array(items) = value.get_ref() else {
            self.error_at(
                value.span().start,
                path.clone(),
                format!("expected an array of tables (`[[{path}]]`)"),
            );
            return (Vec::new(), Vec::new());
        };
        let (mut out, mut broken) = (Vec::with_capacity(items.len()), Vec::new());
        for (i, item) in items.iter().enumerate() {
            let entry_path = path.index(i);
            match self.de(&entry_path, item) {
                Some(parsed) => out.push((parsed, entry_path)),
                None => broken.extend(string_field(item.get_ref(), name_key)),
            }
        }
        (out, broken)
    }

    fn sources(&mut self, path: &KeyPath, value: &Spanned<DeValue<'_>>) -> Vec<SourceConfig> {
        let DeValue::Table(table) = value.get_ref() else {
            self.error_at(
                value.span().start,
                path.clone(),
                "expected a table of source kinds".into(),
            );
            return Vec::new();
        };
        let mut sources = Vec::new();
        for (key, value) in table {
            let kind_path = path.key(key.get_ref().as_ref());
            let kind = SourceKind::from_key(key.get_ref());
            if let (Some(kind), DeValue::Array(items)) = (kind, value.get_ref()) {
                for item in items.iter() {
                    if let DeValue::Table(fields) = item.get_ref()
                        && let Some(id) = fields.get("id")
                        && let DeValue::String(id) = id.get_ref()
                    {
                        self.source_kinds.insert(id.to_string(), kind);
                    }
                }
            }
            let (parsed, broken) = match kind {
                Some(kind) => kind.parse_sections(self, &kind_path, value),
                None => {
                    let known: Vec<_> = SourceKind::ALL
                        .iter()
                        .map(|k| format!("`{}`", k.key()))
                        .collect();
                    self.error_at(
                        key.span().start,
                        kind_path,
                        format!(
                            "unknown source kind `{}`, expected one of {}",
                            key.get_ref(),
                            known.join(", ")
                        ),
                    );
                    // Its entries' ids are not reported again as unknown where assets name them.
                    let ids = match value.get_ref() {
                        DeValue::Array(items) => items
                            .iter()
                            .filter_map(|item| string_field(item.get_ref(), "id"))
                            .collect(),
                        _ => Vec::new(),
                    };
                    (Vec::new(), ids)
                }
            };
            self.incomplete.sources.extend(broken);
            for (source, path) in parsed {
                sources.push(source);
                self.incomplete.source_paths.push(path);
            }
        }
        sources
    }

    fn assets(&mut self, path: &KeyPath, value: &Spanned<DeValue<'_>>) -> Vec<AssetConfig> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error_at(
                value.span().start,
                path.clone(),
                "expected an array of tables (`[[assets]]`)".into(),
            );
            return Vec::new();
        };
        let mut assets = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let asset_path = path.index(i);
            let Some(head) = self.de::<AssetHead>(&asset_path, item) else {
                continue;
            };
            let kind = head
                .source
                .as_deref()
                .and_then(|id| self.source_kinds.get(id).copied());
            let mut bindings = IndexMap::new();
            if let DeValue::Table(table) = item.get_ref()
                && let Some(raw) = table.get("bindings")
            {
                let bindings_path = asset_path.key("bindings");
                match (raw.get_ref(), kind) {
                    (DeValue::Table(entries), kind) => {
                        for (name, binding) in entries {
                            let binding_path = bindings_path.key(name.get_ref().as_ref());
                            let by_plugin = matches!(binding.get_ref(), DeValue::Table(t) if t.contains_key("plugin"));
                            let parsed = match kind {
                                _ if by_plugin => self
                                    .de::<sources::PluginBindingConfig>(&binding_path, binding)
                                    .map(BindingConfig::Plugin),
                                Some(kind) => kind.parse_binding(self, &binding_path, binding),
                                // Unknown or missing source: validation reports it.
                                None => continue,
                            };
                            match parsed {
                                Some(parsed) => {
                                    bindings.insert(name.get_ref().to_string(), parsed);
                                }
                                None => {
                                    self.incomplete
                                        .bindings
                                        .insert((assets.len(), name.get_ref().to_string()));
                                }
                            }
                        }
                    }
                    _ => self.error_at(
                        raw.span().start,
                        bindings_path,
                        "expected a table of bindings by property name".into(),
                    ),
                }
            }
            self.incomplete.asset_paths.push(asset_path);
            assets.push(AssetConfig {
                path: head.path,
                type_name: head.type_name,
                source: head.source,
                device: head.device,
                description: head.description,
                bindings,
            });
        }
        assets
    }
}

#[cfg(test)]
mod tests;
