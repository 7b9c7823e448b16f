//! `[admin_http]`: the admin HTTP endpoint's typed configuration.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[admin_http]`: health, readiness, metrics, and arming the plant over HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminHttpConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:9180`. Keep it on loopback unless a
    /// firewall guards it: only arming asks for a credential.
    pub listen: SocketAddr,
    /// Who may arm the plant with `POST /control/arm` (HTTP Basic authentication). None by
    /// default: arming over HTTP is then refused. Disarming needs no credential.
    #[serde(default)]
    pub operators: Vec<AdminUserConfig>,
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
