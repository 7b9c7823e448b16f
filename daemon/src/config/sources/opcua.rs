//! Typed configuration of an OPC UA source (`[[sources.opcua]]`) and of an OPC UA binding.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::{BindingConfig, BindingSection, Bound, SourceSection};
use crate::config::diagnostic::{KeyPath, Problem};
use crate::twin::model::Scaling;
use crate::twin::spec::PropertyConfig;

/// `[[sources.opcua]]`: one OPC UA server whose variables feed the twin through a subscription.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaSourceConfig {
    /// Source id, unique across all sources.
    pub id: String,
    /// Endpoint URL, `opc.tcp://host:port/path`.
    pub endpoint: String,
    /// Security policy: `none`, `basic256sha256` (default), `aes128_sha256_rsaoaep`, `aes256_sha256_rsapss`.
    #[serde(default)]
    pub security_policy: SecurityPolicyName,
    /// Message security mode: `none`, `sign`, `sign_and_encrypt` (default).
    #[serde(default)]
    pub security_mode: SecurityModeName,
    /// User name for the session; anonymous when absent.
    #[serde(default)]
    pub user: Option<String>,
    /// Password of `user` (the server needs it in clear; protect the config file).
    #[serde(default)]
    pub password: Option<String>,
    /// Client certificate folder. Default `<daemon.state_dir>/pki-client`; the certificate is
    /// created on first connect.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// Trust the server's certificate without an entry in the client PKI's `trusted/`. Demo only.
    #[serde(default)]
    pub trust_server_certificate: bool,
    /// Publishing interval of the subscription. Default 500 ms.
    #[serde(default = "default_publishing", with = "humantime_serde")]
    pub publishing_interval: Duration,
    /// Sampling interval for bindings that set none. Default 250 ms.
    #[serde(default = "default_sampling", with = "humantime_serde")]
    pub sampling_interval: Duration,
    /// Time allowed for connecting and for each request. Default 5 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// First reconnect delay. Default 500 ms.
    #[serde(default = "default_backoff_min", with = "humantime_serde")]
    pub backoff_min: Duration,
    /// Longest reconnect delay. Default 30 s.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Namespace prefixes for `browse_path` bindings: prefix → namespace URI
    /// (`namespaces = { plc = "urn:plc:line1" }` lets a binding say `/plc:Line1/plc:Speed`). The
    /// URI is looked up in the server's NamespaceArray after every connect, so the paths survive
    /// servers that renumber their namespaces. Empty by default.
    #[serde(default)]
    pub namespaces: BTreeMap<String, String>,
}

fn default_publishing() -> Duration {
    Duration::from_millis(500)
}
fn default_sampling() -> Duration {
    Duration::from_millis(250)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_backoff_min() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// OPC UA security policies a source may use (OPC UA Part 7 security profiles).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityPolicyName {
    /// No security.
    None,
    /// Basic256Sha256.
    #[default]
    #[serde(rename = "basic256sha256")]
    Basic256Sha256,
    /// Aes128_Sha256_RsaOaep.
    #[serde(rename = "aes128_sha256_rsaoaep")]
    Aes128Sha256RsaOaep,
    /// Aes256_Sha256_RsaPss.
    #[serde(rename = "aes256_sha256_rsapss")]
    Aes256Sha256RsaPss,
}

/// OPC UA message security modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityModeName {
    /// No signing or encryption (only with policy `none`).
    None,
    /// Signed messages.
    Sign,
    /// Signed and encrypted messages.
    #[default]
    SignAndEncrypt,
}

/// Where one property's value comes from on an OPC UA server: exactly one of `node_id` and
/// `browse_path`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaBindingConfig {
    /// The variable's NodeId in OPC UA text form: `ns=2;s=Line1.Speed`, `ns=3;i=1001`, or with
    /// the namespace URI instead of its index, `nsu=urn:plc:line1;s=Speed` (OPC UA Part 6
    /// §5.3.1.10–11). The URI form survives servers that renumber their namespaces.
    #[serde(default)]
    pub node_id: Option<String>,
    /// The variable's browse path from the Objects folder (i=85), in the RelativePath text form of
    /// OPC UA Part 4 Annex A.2 with namespace prefixes of the source's `namespaces` instead of
    /// namespace indexes: `/plc:Line1/plc:Filler/plc:Speed`. Resolved with
    /// TranslateBrowsePathsToNodeIds (Part 4 §5.8.4) after every connect.
    #[serde(default)]
    pub browse_path: Option<String>,
    /// Sampling interval the monitored item asks for; the source's `sampling_interval` when absent.
    #[serde(default, with = "humantime_serde")]
    pub sampling_interval: Option<Duration>,
    /// Engineering value = raw × scale + offset. Default 1.
    #[serde(default)]
    pub scale: Option<f64>,
    /// Engineering value = raw × scale + offset. Default 0.
    #[serde(default)]
    pub offset: Option<f64>,
}

impl OpcUaSourceConfig {
    /// Semantic checks of the source; `path` is its key path.
    pub fn validate(&self, path: &KeyPath, out: &mut Vec<Problem>) {
        if !self.endpoint.starts_with("opc.tcp://") || self.endpoint.len() <= "opc.tcp://".len() {
            out.push(Problem::new(
                path.key("endpoint"),
                format!(
                    "endpoint `{}` is not an `opc.tcp://host:port/...` URL",
                    self.endpoint
                ),
            ));
        }
        let none_policy = self.security_policy == SecurityPolicyName::None;
        let none_mode = self.security_mode == SecurityModeName::None;
        if none_policy != none_mode {
            out.push(Problem::new(
                path.key("security_mode"),
                "security policy `none` goes with security mode `none`, and only with it (OPC UA Part 4 §7.37)",
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            out.push(Problem::new(
                path.clone(),
                "`user` and `password` go together",
            ));
        }
        if self.publishing_interval.is_zero() {
            out.push(Problem::new(
                path.key("publishing_interval"),
                "publishing interval must be positive",
            ));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            out.push(Problem::new(
                path.key("backoff_min"),
                "backoff_min must be positive and at most backoff_max",
            ));
        }
        for (prefix, uri) in &self.namespaces {
            let at = path.key("namespaces").key(prefix.as_str());
            if prefix.is_empty()
                || prefix.chars().all(|c| c.is_ascii_digit())
                || prefix
                    .chars()
                    .any(|c| RESERVED.contains(c) || c.is_whitespace())
            {
                out.push(Problem::new(
                    at.clone(),
                    format!(
                        "namespace prefix `{prefix}` must be a name without digits only, spaces or any of `{RESERVED}`"
                    ),
                ));
            }
            if uri.trim().is_empty() {
                out.push(Problem::new(at, "the namespace URI is empty"));
            }
        }
    }

    /// The namespace index `prefix` stands for on a server with `namespace_array` (its
    /// NamespaceArray, Part 5 §6.3.1): `0` is namespace 0; a declared prefix is its URI's index.
    /// `None` when the prefix is not declared or the server does not have its URI.
    pub fn namespace_index(&self, prefix: &str, namespace_array: &[String]) -> Option<u16> {
        if prefix == "0" {
            return Some(0);
        }
        let uri = self.namespaces.get(prefix)?;
        u16::try_from(namespace_array.iter().position(|u| u == uri)?).ok()
    }
}

impl OpcUaBindingConfig {
    /// Semantic checks of one binding; `path` is its key path.
    pub fn validate(&self, property: &PropertyConfig, path: &KeyPath, out: &mut Vec<Problem>) {
        match (&self.node_id, &self.browse_path) {
            (Some(node_id), None) => {
                if parse_node_id(node_id).is_none() {
                    out.push(Problem::new(
                        path.key("node_id"),
                        format!(
                            "`{node_id}` is not a NodeId (e.g. `ns=2;s=Line1.Speed`, `ns=3;i=1001`)"
                        ),
                    ));
                }
            }
            (None, Some(browse_path)) => {
                if let Err(error) = BrowsePath::parse(browse_path) {
                    out.push(Problem::new(
                        path.key("browse_path"),
                        format!(
                            "`{browse_path}` is not a browse path (OPC UA Part 4 Annex A.2, e.g. `/plc:Line1/plc:Speed`): {error}"
                        ),
                    ));
                }
            }
            (Some(_), Some(_)) => out.push(Problem::new(
                path.key("browse_path"),
                "give either `node_id` or `browse_path`, not both",
            )),
            (None, None) => out.push(Problem::new(
                path.clone(),
                "an OPC UA binding needs `node_id` or `browse_path`",
            )),
        }
        if (self.scale.is_some() || self.offset.is_some()) && !property.data_type.is_numeric() {
            out.push(Problem::new(
                path.key("scale"),
                "scaling applies only to numeric properties",
            ));
        }
        if self.scale == Some(0.0) || self.scale.is_some_and(|s| !s.is_finite()) {
            out.push(Problem::new(
                path.key("scale"),
                "scale must be a finite non-zero number",
            ));
        }
        if self.offset.is_some_and(|o| !o.is_finite()) {
            out.push(Problem::new(
                path.key("offset"),
                "offset must be a finite number",
            ));
        }
    }
}

/// Parses `ns=..;..` / `i=..` / `s=..` (a NodeId) or `nsu=<uri>;<identifier>` (the namespace by
/// URI). Returns the namespace URI, if given, and the NodeId (namespace 0 until resolved).
pub fn parse_node_id(text: &str) -> Option<(Option<String>, opcua::types::NodeId)> {
    if let Some(rest) = text.strip_prefix("nsu=") {
        let (uri, identifier) = rest.split_once(';')?;
        if uri.is_empty() {
            return None;
        }
        let node = opcua::types::NodeId::from_str(identifier).ok()?;
        return Some((Some(uri.to_owned()), node));
    }
    opcua::types::NodeId::from_str(text)
        .ok()
        .map(|node| (None, node))
}

impl SourceSection for OpcUaSourceConfig {
    fn id(&self) -> &str {
        &self.id
    }

    fn device_ids(&self) -> Vec<String> {
        vec![self.id.clone()]
    }

    fn claims(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn default_poll(&self) -> Duration {
        self.sampling_interval
    }

    fn validate(&self, path: &KeyPath, out: &mut Vec<Problem>) {
        Self::validate(self, path, out);
    }

    /// Every prefix of a browse path is declared in `namespaces`; two read-write properties do
    /// not write one variable (the same NodeId text, or the same browse path).
    fn validate_bindings(&self, _path: &KeyPath, bindings: &[Bound<'_>], out: &mut Vec<Problem>) {
        let mut written: Vec<(Target, &KeyPath)> = Vec::new();
        for bound in bindings {
            let BindingConfig::OpcUa(binding) = bound.binding else {
                continue;
            };
            let Some(target) = binding.target() else {
                continue;
            };
            if let Target::Path(browse_path) = &target {
                for prefix in browse_path.prefixes() {
                    if prefix != "0" && !self.namespaces.contains_key(prefix) {
                        out.push(Problem::new(
                            bound.path.key("browse_path"),
                            format!(
                                "namespace prefix `{prefix}` is not declared in the source's `namespaces`"
                            ),
                        ));
                    }
                }
            }
            if !bound.writable {
                continue;
            }
            if let Some((_, earlier)) = written.iter().find(|(t, _)| *t == target) {
                out.push(Problem::new(
                    bound.path.clone(),
                    format!(
                        "{} is also written by `{earlier}`: two read-write properties may not write the same variable",
                        target.describe()
                    ),
                ));
            } else {
                written.push((target, &bound.path));
            }
        }
    }
}

/// The variable a binding names, parsed: by NodeId (its namespace by index, or by URI) or by
/// browse path.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `node_id`: the namespace URI when given as `nsu=`, and the NodeId (namespace 0 until the
    /// URI is resolved).
    Node(Option<String>, opcua::types::NodeId),
    /// `browse_path`.
    Path(BrowsePath),
}

impl Target {
    /// How a diagnostic names it.
    pub fn describe(&self) -> String {
        match self {
            Self::Node(Some(uri), node) => {
                format!("NodeId `nsu={uri};{}`", node.identifier)
            }
            Self::Node(None, node) => format!("NodeId `{node}`"),
            Self::Path(path) => format!("browse path `{path}`"),
        }
    }
}

impl OpcUaBindingConfig {
    /// The variable the binding names; `None` when it names none or does not parse (validation
    /// reports that).
    pub fn target(&self) -> Option<Target> {
        match (&self.node_id, &self.browse_path) {
            (Some(node_id), None) => {
                parse_node_id(node_id).map(|(uri, node)| Target::Node(uri, node))
            }
            (None, Some(path)) => BrowsePath::parse(path).ok().map(Target::Path),
            _ => None,
        }
    }

    /// The binding's variable as written in the config (`node_id` or `browse_path`).
    pub fn describe(&self) -> &str {
        self.node_id
            .as_deref()
            .or(self.browse_path.as_deref())
            .unwrap_or_default()
    }
}

/// The characters a browse name must escape with `&` (OPC UA Part 4 Annex A.2).
pub const RESERVED: &str = "/.<>:#!&";

/// A browse path in the RelativePath text form of OPC UA Part 4 Annex A.2, with namespace
/// prefixes instead of namespace indexes: `/plc:Line1.plc:Speed`, `<HasComponent>plc:Speed`,
/// `<!HasChild>Parent`, `&` escaping a reserved character inside a name.
///
/// async-opcua 0.19 has a parser (`RelativePath::from_str`), not used here: it takes numeric
/// namespace indexes only (which servers renumber: the prefixes exist for that), and its target
/// name pattern `[0-9+]:` reads one digit, so `12:Speed` becomes the name `12:Speed` in namespace 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowsePath {
    text: String,
    elements: Vec<PathElement>,
}

/// One element of a [`BrowsePath`]: a reference to follow and the browse name it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathElement {
    /// The reference type (namespace 0): HierarchicalReferences for `/`, Aggregates for `.`, or
    /// the standard reference type named in `<…>`.
    pub reference_type: opcua::types::NodeId,
    /// `<!…>`: follow the reference backwards.
    pub is_inverse: bool,
    /// Not `<#…>`: subtypes of the reference type are followed too.
    pub include_subtypes: bool,
    /// The target's namespace prefix; `None` for namespace 0.
    pub prefix: Option<String>,
    /// The target's browse name, unescaped.
    pub name: String,
}

impl std::fmt::Display for BrowsePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl BrowsePath {
    /// Parses the text form (Part 4 Annex A.2): elements `/name`, `.name` or `<[#][!]Type>name`,
    /// a name optionally `prefix:`-qualified, reserved characters escaped with `&`; reference
    /// types by their standard browse name (namespace 0).
    ///
    /// Errors: the reason, lowercase (an empty path or name, an unknown reference type, a reserved
    /// character not escaped, a dangling `&`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let chars: Vec<char> = text.chars().collect();
        if chars.is_empty() {
            return Err("the path is empty".into());
        }
        let mut elements = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let (reference_type, is_inverse, include_subtypes) = match chars[at] {
                '/' => {
                    at += 1;
                    (
                        opcua::types::ReferenceTypeId::HierarchicalReferences.into(),
                        false,
                        true,
                    )
                }
                '.' => {
                    at += 1;
                    (
                        opcua::types::ReferenceTypeId::Aggregates.into(),
                        false,
                        true,
                    )
                }
                '<' => {
                    at += 1;
                    let mut flags = (false, true);
                    while let Some(c @ ('#' | '!')) = chars.get(at) {
                        if *c == '#' {
                            flags.1 = false;
                        } else {
                            flags.0 = true;
                        }
                        at += 1;
                    }
                    let (prefix, name, next) = read_name(&chars, at, &['>'])?;
                    if chars.get(next) != Some(&'>') {
                        return Err("a `<` reference type is not closed with `>`".into());
                    }
                    at = next + 1;
                    if prefix.as_deref().is_some_and(|p| p != "0") {
                        return Err(format!(
                            "reference type `{name}`: only the standard reference types (namespace 0) are supported"
                        ));
                    }
                    (standard_reference_type(&name)?, flags.0, flags.1)
                }
                c => {
                    return Err(format!(
                        "expected `/`, `.` or `<` at character {}, found `{c}`",
                        at + 1
                    ));
                }
            };
            let (prefix, name, next) = read_name(&chars, at, &['/', '.', '<'])?;
            at = next;
            if name.is_empty() || prefix.as_deref() == Some("") {
                return Err(format!("a browse name is missing at character {}", at + 1));
            }
            elements.push(PathElement {
                reference_type,
                is_inverse,
                include_subtypes,
                prefix,
                name,
            });
        }
        Ok(Self {
            text: text.to_owned(),
            elements,
        })
    }

    /// The elements, first to last.
    pub fn elements(&self) -> &[PathElement] {
        &self.elements
    }

    /// The namespace prefixes the path uses.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.elements.iter().filter_map(|e| e.prefix.as_deref())
    }

    /// The RelativePath for TranslateBrowsePathsToNodeIds (Part 4 §5.8.4, §7.31), each prefix
    /// replaced by its namespace index from `index_of`.
    ///
    /// Errors: the first prefix `index_of` does not know.
    pub fn relative_path(
        &self,
        index_of: impl Fn(&str) -> Option<u16>,
    ) -> Result<opcua::types::RelativePath, String> {
        let mut elements = Vec::with_capacity(self.elements.len());
        for e in &self.elements {
            let namespace = match &e.prefix {
                Some(prefix) => index_of(prefix).ok_or_else(|| prefix.clone())?,
                None => 0,
            };
            elements.push(opcua::types::RelativePathElement {
                reference_type_id: e.reference_type.clone(),
                is_inverse: e.is_inverse,
                include_subtypes: e.include_subtypes,
                target_name: opcua::types::QualifiedName::new(namespace, e.name.as_str()),
            });
        }
        Ok(opcua::types::RelativePath {
            elements: Some(elements),
        })
    }
}

/// Reads a browse name `[prefix:]name` from `at` up to an unescaped character of `stop` (or the
/// end), unescaping `&x`. Returns the prefix, the name and where it stopped.
///
/// Errors: a reserved character not escaped, a dangling `&`.
fn read_name(
    chars: &[char],
    mut at: usize,
    stop: &[char],
) -> Result<(Option<String>, String, usize), String> {
    let mut prefix = None;
    let mut name = String::new();
    while let Some(&c) = chars.get(at) {
        match c {
            '&' => {
                let escaped = chars
                    .get(at + 1)
                    .ok_or_else(|| "`&` at the end escapes nothing".to_owned())?;
                name.push(*escaped);
                at += 2;
            }
            c if stop.contains(&c) => break,
            ':' if prefix.is_none() => {
                prefix = Some(std::mem::take(&mut name));
                at += 1;
            }
            c if RESERVED.contains(c) => {
                return Err(format!(
                    "`{c}` at character {} is reserved: escape it as `&{c}`",
                    at + 1
                ));
            }
            c => {
                name.push(c);
                at += 1;
            }
        }
    }
    Ok((prefix, name, at))
}

/// The standard reference type (namespace 0) with this browse name.
fn standard_reference_type(name: &str) -> Result<opcua::types::NodeId, String> {
    match opcua::types::RelativePathElement::default_node_resolver(0, name) {
        Some(node) if node.as_u32().is_some() => Ok(node),
        _ => Err(format!("`{name}` is not a standard reference type")),
    }
}

impl BindingSection for OpcUaBindingConfig {
    fn scaling(&self) -> Scaling {
        Scaling::configured(self.scale, self.offset)
    }

    fn poll(&self) -> Option<Duration> {
        self.sampling_interval
    }

    fn refresh_interval(&self, _default: Duration) -> Option<Duration> {
        None
    }
    fn validate(
        &self,
        property: &PropertyConfig,
        _config: &crate::config::Config,
        path: &KeyPath,
        out: &mut Vec<Problem>,
    ) {
        Self::validate(self, property, path, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_parse_by_index_or_by_uri() {
        let (uri, node) = parse_node_id("ns=3;s=Line1.Speed").unwrap();
        assert_eq!(
            (uri, node),
            (None, opcua::types::NodeId::new(3, "Line1.Speed"))
        );
        let (uri, node) = parse_node_id("nsu=urn:plc:line1;i=1001").unwrap();
        assert_eq!(uri.as_deref(), Some("urn:plc:line1"));
        assert_eq!(node, opcua::types::NodeId::new(0, 1001u32));
        assert!(parse_node_id("nsu=;s=x").is_none());
        assert!(parse_node_id("Line1.Speed").is_none());
    }

    #[test]
    fn browse_paths_parse_in_the_annex_a_text_form_with_prefixes() {
        use opcua::types::ReferenceTypeId;
        let path = BrowsePath::parse("/plc:Line1.plc:Speed<#!HasComponent>Up&/Down").unwrap();
        let got: Vec<_> = path
            .elements()
            .iter()
            .map(|e| {
                (
                    e.reference_type.clone(),
                    e.is_inverse,
                    e.include_subtypes,
                    e.prefix.clone(),
                    e.name.clone(),
                )
            })
            .collect();
        let plc = Some("plc".to_owned());
        assert_eq!(
            got,
            vec![
                (
                    ReferenceTypeId::HierarchicalReferences.into(),
                    false,
                    true,
                    plc.clone(),
                    "Line1".into()
                ),
                (
                    ReferenceTypeId::Aggregates.into(),
                    false,
                    true,
                    plc,
                    "Speed".into()
                ),
                (
                    ReferenceTypeId::HasComponent.into(),
                    true,
                    false,
                    None,
                    "Up/Down".into()
                ),
            ]
        );
        let relative = path.relative_path(|p| (p == "plc").then_some(12)).unwrap();
        let names: Vec<_> = relative
            .elements
            .unwrap()
            .into_iter()
            .map(|e| e.target_name)
            .collect();
        assert_eq!(names[0], opcua::types::QualifiedName::new(12, "Line1"));
        assert_eq!(names[2], opcua::types::QualifiedName::new(0, "Up/Down"));
        assert_eq!(path.relative_path(|_| None).unwrap_err(), "plc");
        assert_eq!(
            BrowsePath::parse("/a&:b").unwrap().elements()[0].prefix,
            None,
            "an escaped colon is part of the name"
        );
        for bad in [
            "",
            "Line1",
            "/plc:",
            "/a:b:c",
            "/a>b",
            "<Nope>x",
            "<HasChild",
            "/a&",
            "/",
        ] {
            assert!(BrowsePath::parse(bad).is_err(), "{bad}");
        }
    }

    /// async-opcua 0.19's own parser reads one digit of a namespace index: `12:Speed` becomes the
    /// name `12:Speed` in namespace 0 (why `BrowsePath` has its own parser).
    #[test]
    fn async_opcua_reads_one_digit_of_a_namespace_index() {
        let path = opcua::types::RelativePath::try_from("/12:Speed").unwrap();
        let name = &path.elements.unwrap()[0].target_name;
        assert_eq!(name.namespace_index, 0);
        assert_eq!(name.name.as_ref(), "12:Speed");
    }
}
