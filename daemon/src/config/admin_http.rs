//! `[admin_http]`: the admin HTTP endpoint's typed configuration.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[admin_http]`: health, readiness and metrics over HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminHttpConfig {
    /// Address and port to listen on, e.g. `127.0.0.1:9180`. Keep it on loopback unless a
    /// firewall guards it: it has no authentication.
    pub listen: SocketAddr,
}
