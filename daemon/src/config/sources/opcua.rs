//! Typed configuration of an OPC UA source (`[[sources.opcua]]`) and of an OPC UA binding.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::{BindingSection, SourceSection};
use crate::config::diagnostic::{KeyPath, Problem};
use crate::twin::model::Scaling;
use crate::twin::spec::{Access, PropertyConfig};

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

/// Where one property's value comes from on an OPC UA server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaBindingConfig {
    /// The variable's NodeId in OPC UA text form: `ns=2;s=Line1.Speed`, `ns=3;i=1001`, or with
    /// the namespace URI instead of its index, `nsu=urn:plc:line1;s=Speed` (OPC UA Part 6
    /// §5.3.1.10–11). The URI form survives servers that renumber their namespaces.
    pub node_id: String,
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
    }
}

impl OpcUaBindingConfig {
    /// Semantic checks of one binding; `path` is its key path.
    pub fn validate(&self, property: &PropertyConfig, path: &KeyPath, out: &mut Vec<Problem>) {
        if parse_node_id(&self.node_id).is_none() {
            out.push(Problem::new(
                path.key("node_id"),
                format!(
                    "`{}` is not a NodeId (e.g. `ns=2;s=Line1.Speed`, `ns=3;i=1001`)",
                    self.node_id
                ),
            ));
        }
        if property.access == Access::ReadWrite {
            out.push(Problem::new(
                path.clone(),
                format!(
                    "property `{}` is read-write, but writes through OPC UA sources are not supported yet; bind setpoints to a Modbus source",
                    property.name
                ),
            ));
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
}
