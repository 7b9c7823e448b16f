//! `[northbound.sparkplug]`: the MQTT Sparkplug B 3.0 edge node's typed configuration (issue #29;
//! `docs/sparkplug.md`).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[northbound]`: northbound services configured as subsections (`[northbound.sparkplug]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NorthboundConfig {
    /// `[northbound.sparkplug]`: the Sparkplug B edge node, when present.
    #[serde(default)]
    pub sparkplug: Option<SparkplugConfig>,
}

/// The largest `max_metrics_per_payload`.
pub const MAX_METRICS_PER_PAYLOAD: usize = 100_000;

/// `[northbound.sparkplug]`: publish the twin to an MQTT broker as a Sparkplug B 3.0 edge node
/// (eclipse-sparkplug v3.0.0, chapters 4–6), MQTT 3.1.1. Each asset is a Sparkplug device whose
/// id is its path with `/` replaced by `:`; each property a metric named by the property's name.
/// The publisher reads the change log through its own cursor (`sparkplug`), so the change log
/// runs whenever this section is present.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugConfig {
    /// MQTT servers, tried in order with backoff: `tcp://host:port` (port 1883 when omitted) or
    /// `ssl://host:port` (TLS, port 8883 when omitted). At least one.
    pub servers: Vec<String>,
    /// The Sparkplug group id: non-empty UTF-8 without `+`, `/` or `#` (Sparkplug 3.0 §4.1.1.2,
    /// `tck-id-topic-structure-namespace-valid-group-id`).
    pub group_id: String,
    /// The edge node id: non-empty UTF-8 without `+`, `/` or `#` (§4.1.1.3).
    pub edge_node_id: String,
    /// The primary host application's id: when set, nothing is published until
    /// `spBv1.0/STATE/<id>` says `online: true` (§5.6). None by default.
    #[serde(default)]
    pub primary_host_id: Option<String>,
    /// Whether `DCMD` metrics are written (through the control gate, origin `sparkplug`, every
    /// rule applying). Default false: every DCMD is refused and logged.
    #[serde(default)]
    pub accept_commands: bool,
    /// MQTT user name. None by default (no credentials sent).
    #[serde(default)]
    pub username: Option<String>,
    /// File holding the MQTT password (its first line; relative to the configuration file's
    /// folder). Read at start, never logged. Needs `username`.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// MQTT client id. Default `twinloom-<group_id>-<edge_node_id>`, at most 23 bytes
    /// recommended by MQTT 3.1.1 §3.1.3.1 (mosquitto takes longer ones).
    #[serde(default)]
    pub client_id: Option<String>,
    /// TLS settings for `ssl://` servers (PEM files, relative to the configuration file's folder).
    #[serde(default)]
    pub tls: Option<SparkplugTlsConfig>,
    /// How long a changed metric may wait to share a DDATA payload with others of its device
    /// (report by exception): from 1 ms to 10 s; default 100 ms.
    #[serde(default = "default_report_window", with = "humantime_serde")]
    pub report_window: Duration,
    /// Most metrics in one DDATA payload, 1 to 100 000; a device with more changes in a window
    /// sends several. Default 1000.
    #[serde(default = "default_max_metrics")]
    pub max_metrics_per_payload: usize,
    /// Most stored (historical) metric changes published per second while a backlog drains
    /// after an outage, besides the live stream; 0 = no cap. Default 50 000.
    #[serde(default = "default_backlog_rate")]
    pub backlog_max_rate: u32,
    /// MQTT keep alive (MQTT 3.1.1 §3.1.2.10): from 5 s to 18 h; default 30 s.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
}

/// `[northbound.sparkplug.tls]`: how the broker is trusted and, optionally, who this node is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugTlsConfig {
    /// CA certificates (PEM) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// This node's client certificate chain (PEM), for brokers that require one; with
    /// `private_key`.
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS #8, PKCS #1 RSA or SEC1 EC).
    #[serde(default)]
    pub private_key: Option<PathBuf>,
}

fn default_report_window() -> Duration {
    Duration::from_millis(100)
}

fn default_max_metrics() -> usize {
    1000
}

fn default_backlog_rate() -> u32 {
    50_000
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

/// One MQTT server of `servers`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttServer {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `ssl://`: TLS.
    pub tls: bool,
}

impl MqttServer {
    /// Parses `tcp://host[:port]` or `ssl://host[:port]` (IPv6 in brackets).
    ///
    /// Errors: an unknown scheme, an empty host or a port that is not 1–65535, as text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("tcp://") {
            (false, rest)
        } else if let Some(rest) = text.strip_prefix("ssl://") {
            (true, rest)
        } else {
            return Err(format!(
                "`{text}` is not an MQTT server: give `tcp://host:port` or `ssl://host:port`"
            ));
        };
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{text}`: unclosed `[` in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(port) => Some(port),
                None if after.is_empty() => None,
                None => return Err(format!("`{text}`: expected `:port` after the host")),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("`{text}`: the host is missing or contains `/`"));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("`{text}`: port `{port}` is not 1 to 65535"))?,
        };
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// Which file of [`SparkplugTlsConfig`] a problem is with (its key), or the whole (`None`).
pub type TlsProblem = (Option<&'static str>, String);

impl SparkplugTlsConfig {
    /// The rustls client configuration of these files (`base`: the folder relative paths
    /// resolve against): the CA file's certificates as the only roots, the client certificate
    /// when given. Config validation calls it too, so a missing or unreadable file is a
    /// configuration error at load.
    ///
    /// Errors: every problem found, each with the key of the file it is about.
    pub fn load(
        &self,
        base: &std::path::Path,
    ) -> Result<std::sync::Arc<rustls::ClientConfig>, Vec<TlsProblem>> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut problems = Vec::new();
        let certificates = |key: &'static str, path: &std::path::Path| {
            let path = base.join(path);
            CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    format!(
                        "cannot read a PEM certificate from `{}`: {e}",
                        path.display()
                    )
                })
                .and_then(|found| {
                    if found.is_empty() {
                        Err(format!("`{}` holds no PEM certificate", path.display()))
                    } else {
                        Ok(found)
                    }
                })
                .map_err(|e| (Some(key), e))
        };
        let mut roots = rustls::RootCertStore::empty();
        match certificates("ca_file", &self.ca_file) {
            Ok(found) => {
                for cert in found {
                    if let Err(e) = roots.add(cert) {
                        problems.push((
                            Some("ca_file"),
                            format!("a CA certificate is unusable: {e}"),
                        ));
                    }
                }
            }
            Err(problem) => problems.push(problem),
        }
        let client = match (&self.certificate, &self.private_key) {
            (None, None) => None,
            (Some(certificate), Some(private_key)) => {
                let chain = certificates("certificate", certificate)
                    .map_err(|p| problems.push(p))
                    .ok();
                let path = base.join(private_key);
                let key = PrivateKeyDer::from_pem_file(&path)
                    .map_err(|e| {
                        problems.push((
                            Some("private_key"),
                            format!(
                                "cannot read a PEM private key from `{}`: {e}",
                                path.display()
                            ),
                        ))
                    })
                    .ok();
                chain.zip(key)
            }
            (Some(_), None) => {
                problems.push((
                    Some("certificate"),
                    "a client certificate needs `private_key`".into(),
                ));
                None
            }
            (None, Some(_)) => {
                problems.push((
                    Some("private_key"),
                    "a private key needs `certificate`".into(),
                ));
                None
            }
        };
        if !problems.is_empty() {
            return Err(problems);
        }
        // ring, as admin HTTP (`config::admin_http`): no cmake, no C toolchain beyond cc.
        #[allow(deprecated)]
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![(None, format!("no TLS protocol version: {e}"))])?
            .with_root_certificates(roots);
        let config = match client {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                vec![(
                    None,
                    format!(
                        "the client certificate and private key do not make a TLS identity: {e}"
                    ),
                )]
            })?,
            None => builder.with_no_client_auth(),
        };
        Ok(std::sync::Arc::new(config))
    }
}

/// Whether `id` may be a Sparkplug group, edge node or device id: non-empty, without `+`, `/`
/// and `#` (Sparkplug 3.0 §4.1.1, `tck-id-topic-structure-namespace-valid-*`).
pub fn valid_sparkplug_id(id: &str) -> bool {
    !id.is_empty() && !id.contains(['+', '/', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_their_default_ports() {
        let cases = [
            ("tcp://127.0.0.1:1884", Ok(("127.0.0.1", 1884, false))),
            ("tcp://broker", Ok(("broker", 1883, false))),
            ("ssl://broker", Ok(("broker", 8883, true))),
            ("ssl://[::1]:8884", Ok(("::1", 8884, true))),
            ("mqtt://broker", Err("is not an MQTT server")),
            ("tcp://:1883", Err("host is missing")),
            ("tcp://broker:0", Err("is not 1 to 65535")),
            ("tcp://broker:x", Err("is not 1 to 65535")),
        ];
        for (text, expected) in cases {
            match (MqttServer::parse(text), expected) {
                (Ok(server), Ok((host, port, tls))) => {
                    assert_eq!(
                        (server.host.as_str(), server.port, server.tls),
                        (host, port, tls)
                    )
                }
                (Err(error), Err(part)) => assert!(error.contains(part), "{text}: {error}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }
}
