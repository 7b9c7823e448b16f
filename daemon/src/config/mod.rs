//! Configuration: TOML → typed structs → validated [`Config`], with every error reported at once.
//!
//! Loading has two passes. The **shape pass** deserializes each section and each array entry
//! separately (serde, `deny_unknown_fields`), so one bad entry does not hide the errors of the
//! next. The **validation pass** ([`validate`]) then checks meaning across the whole file: names
//! that must exist, paths that must be unique, addresses in range, resources claimed twice.
//! Both passes produce [`Diagnostic`]s with file, `line:col` and key path. Nothing is opened,
//! bound or written while loading.

pub mod admin_http;
pub mod diagnostic;
pub mod modbus;
pub mod model;
pub mod opcua_server;
pub mod opcua_source;
pub mod sources;
mod validate;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

pub use diagnostic::{Diagnostic, KeyPath, Problem};
pub use model::Config;
use model::{AssetConfig, AssetHead};

use crate::twin::TwinModel;
use crate::twin::spec::{AssetSpec, BindingSpec};
use modbus::{ModbusBindingConfig, ModbusSourceConfig};
use opcua_source::{OpcUaBindingConfig, OpcUaSourceConfig};
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

    /// The twin's model of this configuration (types, assets, properties).
    pub fn twin_model(&self) -> TwinModel {
        TwinModel::build(&self.types, &self.asset_specs())
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

/// Validates configuration `text` as if read from `file` (used for positions and relative paths).
///
/// Errors: [`ConfigError::Invalid`] with every error found.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    let (root, syntax_errors) = DeTable::parse_recoverable(text);
    let map = diagnostic::SourceMap::new(file, text, &root);
    if !syntax_errors.is_empty() {
        let diagnostics = syntax_errors
            .iter()
            .map(|error| {
                let offset = error.span().map_or(0, |span| span.start);
                map.at_offset(offset, KeyPath::root(), error.message().trim().to_owned())
            })
            .collect();
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

/// Which sections had entries that failed the shape pass, so that validation does not report
/// follow-on errors ("unknown type") for names it could not see.
#[derive(Debug, Default)]
pub(crate) struct Incomplete {
    pub sources: bool,
    pub types: bool,
    /// (asset index, property name) of bindings that failed the shape pass.
    pub bindings: std::collections::HashSet<(usize, String)>,
}

struct Loader<'m, 'a> {
    map: &'m diagnostic::SourceMap<'a>,
    diagnostics: Vec<Diagnostic>,
    incomplete: Incomplete,
    /// Kind of every source id seen, including sources that failed the shape pass, so that
    /// their assets' bindings are still checked.
    source_kinds: std::collections::HashMap<String, SourceKind>,
}

const SECTIONS: &str =
    "`daemon`, `twin`, `opcua_server`, `admin_http`, `sources`, `types`, `assets`, `plugins`";

impl Loader<'_, '_> {
    fn load(&mut self, file: &Path, root: &DeTable<'_>) -> Config {
        let mut config = Config {
            file: file.to_owned(),
            daemon: Default::default(),
            twin: Default::default(),
            opcua_server: None,
            admin_http: None,
            sources: Vec::new(),
            types: Vec::new(),
            assets: Vec::new(),
            plugins: Vec::new(),
        };
        let mut assets = None;
        for (key, value) in root {
            let path = KeyPath::root().key(key.get_ref().as_ref());
            match key.get_ref().as_ref() {
                "daemon" => config.daemon = self.de(&path, value).unwrap_or_default(),
                "twin" => config.twin = self.de(&path, value).unwrap_or_default(),
                "opcua_server" => config.opcua_server = self.de(&path, value),
                "admin_http" => config.admin_http = self.de(&path, value),
                "sources" => config.sources = self.sources(&path, value),
                "types" => {
                    let (types, complete) = self.array(&path, value);
                    config.types = types;
                    self.incomplete.types |= !complete;
                }
                "assets" => assets = Some((path, value)),
                "plugins" => config.plugins = self.array(&path, value).0,
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

    /// Deserializes one value; on failure records a diagnostic at the offending key.
    fn de<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) -> Option<T> {
        let deserializer = ValueDeserializer::from(value.clone());
        match serde_path_to_error::deserialize::<_, T>(deserializer) {
            Ok(parsed) => Some(parsed),
            Err(error) => {
                let full = path.join_dotted(&error.path().to_string());
                let error = error.into_inner();
                let offset = error
                    .span()
                    .map_or_else(|| self.map.span_of(&full).start, |span| span.start);
                self.error_at(offset, full, error.message().trim().to_owned());
                None
            }
        }
    }

    /// Deserializes an array of tables entry by entry. Returns the entries that parsed and
    /// whether all did.
    fn array<T: DeserializeOwned>(
        &mut self,
        path: &KeyPath,
        value: &Spanned<DeValue<'_>>,
    ) -> (Vec<T>, bool) {
        let DeValue::Array(items) = value.get_ref() else {
            self.error_at(
                value.span().start,
                path.clone(),
                format!("expected an array of tables (`[[{path}]]`)"),
            );
            return (Vec::new(), false);
        };
        let mut complete = true;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match self.de(&path.index(i), item) {
                Some(parsed) => out.push(parsed),
                None => complete = false,
            }
        }
        (out, complete)
    }

    fn sources(&mut self, path: &KeyPath, value: &Spanned<DeValue<'_>>) -> Vec<SourceConfig> {
        let DeValue::Table(table) = value.get_ref() else {
            self.error_at(
                value.span().start,
                path.clone(),
                "expected a table of source kinds".into(),
            );
            self.incomplete.sources = true;
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
            match kind {
                Some(SourceKind::Modbus) => {
                    let (parsed, complete) = self.array::<ModbusSourceConfig>(&kind_path, value);
                    self.incomplete.sources |= !complete;
                    sources.extend(parsed.into_iter().map(SourceConfig::Modbus));
                }
                Some(SourceKind::OpcUa) => {
                    let (parsed, complete) = self.array::<OpcUaSourceConfig>(&kind_path, value);
                    self.incomplete.sources |= !complete;
                    sources.extend(parsed.into_iter().map(SourceConfig::OpcUa));
                }
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
                    self.incomplete.sources = true;
                }
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
                                Some(SourceKind::Modbus) => self
                                    .de::<ModbusBindingConfig>(&binding_path, binding)
                                    .map(BindingConfig::Modbus),
                                Some(SourceKind::OpcUa) => self
                                    .de::<OpcUaBindingConfig>(&binding_path, binding)
                                    .map(BindingConfig::OpcUa),
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
