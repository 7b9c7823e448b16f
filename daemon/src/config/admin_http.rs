//! `[admin_http]`: the admin HTTP endpoint's typed configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

/// `[admin_http]`: health, readiness, metrics, and arming the plant over HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminHttpConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:9180`. Keep it on loopback unless a
    /// firewall guards it: only arming asks for a credential. Beyond loopback without `tls` the
    /// daemon warns at start (credentials would cross the network in clear text).
    pub listen: SocketAddr,
    /// Who may arm the plant with `POST /control/arm` (HTTP Basic authentication). None by
    /// default: arming over HTTP is then refused. Disarming needs no credential.
    #[serde(default)]
    pub operators: Vec<AdminUserConfig>,
    /// Serve HTTPS (TLS 1.2 and 1.3, rustls) instead of plain HTTP. Off by default.
    #[serde(default)]
    pub tls: Option<AdminTlsConfig>,
    /// Host names (without port) a request's `Host` header may name besides `localhost` and IP
    /// addresses, e.g. `["plant-gw.example"]` when Prometheus or a browser reach the endpoint by
    /// name. Any other name is answered 421: a web page whose name was rebound to this address
    /// (DNS rebinding) cannot talk to it. Empty by default.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Bounds on connections and on clients that have not logged in.
    #[serde(default)]
    pub limits: AdminHttpLimits,
}

/// `[admin_http.tls]`: the admin port's certificate (PEM files; relative paths resolve against
/// the configuration file's folder). Read and checked at config load.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTlsConfig {
    /// The certificate chain, leaf first, PEM (`-----BEGIN CERTIFICATE-----`).
    pub certificate: PathBuf,
    /// The certificate's private key, PEM (PKCS #8, PKCS #1 RSA or SEC1 EC).
    pub private_key: PathBuf,
}

/// `[admin_http.limits]`: what connections and clients that have not logged in may cost. Each
/// bound counts in `twinloom_admin_http_refusals_total{reason}` when it bites.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminHttpLimits {
    /// Most open connections; a further one is closed as it is accepted
    /// (`reason="max-connections"`). Default 32.
    pub max_connections: usize,
    /// Time from accepting a connection to its request's headers read, TLS handshake included;
    /// then the connection is closed. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time from the request's headers to the end of its answer; then it is answered 503 and
    /// the connection closed. Each connection serves one request. The web view's event streams
    /// (`/api/events`) are not cut by it: they last until the client goes or stops reading.
    /// Default 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a write to a client may wait for it to read before its connection is closed:
    /// what bounds a web view event stream (`/api/events`) whose client stopped reading. Default
    /// 10 s.
    #[serde(with = "humantime_serde")]
    pub stream_write_stall: Duration,
    /// Failed logins one IP address may make in a row before it is throttled. Default 5.
    pub login_failures_burst: u32,
    /// Failed logins per minute an IP address regains once throttled; logins beyond are
    /// answered 429 with `Retry-After` without checking the password. Default 10.
    pub login_failures_per_minute: u32,
}

impl Default for AdminHttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 32,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            stream_write_stall: Duration::from_secs(10),
            login_failures_burst: 5,
            login_failures_per_minute: 10,
        }
    }
}

/// One user of the admin endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminUserConfig {
    /// User name sent in HTTP Basic authentication.
    pub name: String,
    /// Argon2 password hash in PHC string format, made with `twinloom hash-password`.
    pub password_hash: String,
}

/// Which file of [`AdminTlsConfig`] a problem is with (its key), or the pair (`None`).
pub type TlsProblem = (Option<&'static str>, String);

impl AdminTlsConfig {
    /// The rustls server configuration of these files (`base`: the folder relative paths
    /// resolve against), offering HTTP/1.1 by ALPN. Config validation calls it too, so a file
    /// that is missing, unreadable or not PEM, or a key that does not belong to the
    /// certificate, is a configuration error at load.
    ///
    /// Errors: every problem found, each with the key of the file it is about (`None`: the
    /// key does not match the certificate).
    pub fn load(&self, base: &Path) -> Result<Arc<rustls::ServerConfig>, Vec<TlsProblem>> {
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let mut problems = Vec::new();
        let certificate = base.join(&self.certificate);
        let chain = CertificateDer::pem_file_iter(&certificate)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                format!(
                    "cannot read a PEM certificate from `{}`: {e}",
                    certificate.display()
                )
            })
            .and_then(|chain| {
                if chain.is_empty() {
                    Err(format!(
                        "`{}` holds no PEM certificate",
                        certificate.display()
                    ))
                } else {
                    Ok(chain)
                }
            })
            .map_err(|e| problems.push((Some("certificate"), e)))
            .ok();
        let private_key = base.join(&self.private_key);
        let key = PrivateKeyDer::from_pem_file(&private_key)
            .map_err(|e| {
                let e = format!(
                    "cannot read a PEM private key from `{}`: {e}",
                    private_key.display()
                );
                problems.push((Some("private_key"), e));
            })
            .ok();
        let (Some(chain), Some(key)) = (chain, key) else {
            return Err(problems);
        };
        // ring: no C toolchain beyond cc, no cmake (aws-lc-rs needs both and builds for
        // minutes). rustls 0.23.48 deprecates it for lacking post-quantum key exchange; an
        // admin port's sessions (X25519, P-256) are not worth recording for a decade.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| {
                vec![(
                    None,
                    format!("the certificate and private key do not make a TLS identity: {e}"),
                )]
            })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
