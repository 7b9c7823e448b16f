//! `[opcua_server]`: the OPC UA server's typed configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[opcua_server]`: the OPC UA server that serves the twin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpcUaServerConfig {
    /// Address and TCP port to listen on, e.g. `0.0.0.0:4840` (4840 is OPC UA's IANA port).
    pub listen: SocketAddr,
    /// Host name put into endpoint URLs (`opc.tcp://HOST:PORT/`). Default: the listen address,
    /// or this machine's host name when listening on all addresses.
    #[serde(default)]
    pub host_name: Option<String>,
    /// Namespace URI of the plant's nodes. Default `urn:twinloom:plant`.
    #[serde(default = "default_namespace_uri")]
    pub namespace_uri: String,
    /// The server's application URI (also in its certificate). Default `urn:twinloom:<host name>`.
    #[serde(default)]
    pub application_uri: Option<String>,
    /// Folder of the server's certificate, key and trust lists (`own/`, `private/`, `trusted/`,
    /// `rejected/`). Default `<daemon.state_dir>/pki`. The certificate is created on first start.
    #[serde(default)]
    pub pki_dir: Option<PathBuf>,
    /// Offer the `None` security policy. Off by default; only for demos and isolated test rigs.
    #[serde(default)]
    pub allow_security_none: bool,
    /// Allow anonymous sessions (viewer role). Off by default.
    #[serde(default)]
    pub anonymous: bool,
    /// Trust every client certificate on first contact. For the demo only.
    #[serde(default)]
    pub auto_trust_clients: bool,
    /// Users who may open a session.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Shortest publishing interval a subscription may have. Default 50 ms (async-opcua's own
    /// floor is 100 ms; Twinloom pushes changes, so lower is cheap).
    #[serde(default = "default_min_publishing_interval", with = "humantime_serde")]
    pub min_publishing_interval: Duration,
    /// Shortest sampling interval a monitored item may ask for. Default 0 (changes are pushed
    /// from the twin as they happen; the interval only bounds what clients are told).
    #[serde(default, with = "humantime_serde")]
    pub min_sampling_interval: Duration,
    /// Most concurrent sessions. Default 50.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Most subscriptions per session. Default 20.
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_session: usize,
    /// Most monitored items per subscription. Default 100 000 (a whole plant on one subscription).
    #[serde(default = "default_max_monitored_items")]
    pub max_monitored_items_per_subscription: usize,
    /// How long before the server certificate expires the daemon starts warning (at start, then
    /// daily); the seconds left are the gauge `twinloom_opcua_certificate_expiry_seconds`.
    /// Default 30 days.
    #[serde(
        default = "default_certificate_expiry_warning",
        with = "humantime_serde"
    )]
    pub certificate_expiry_warning: Duration,
    /// Time between announcing a stop (ServerStatus.State = Shutdown, SecondsTillShutdown counting
    /// down: OPC UA Part 5 §12.6) and closing the connections, so clients can fail over.
    /// Default 1 s.
    #[serde(default = "default_shutdown_delay", with = "humantime_serde")]
    pub shutdown_delay: Duration,
    /// Bounds on connections and on clients that have not logged in yet (each counted in
    /// `twinloom_opcua_limit_hits_total{limit}` when it bites).
    #[serde(default)]
    pub limits: ClientLimits,
}

/// `[opcua_server.limits]`: what connections and not-yet-authenticated clients may cost.
///
/// The message sizes agreed in OPC UA's Hello/Acknowledge hold for a connection's whole life
/// (Part 6 §7.1.2), so the server's 64 MiB messages are bounded for peers without a session by
/// these instead. 0 turns a connection or byte bound off.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimits {
    /// Most open connections; a further one is closed as it is accepted. Default 100.
    pub max_connections: usize,
    /// Most open connections from one IP address. Default 20.
    pub max_connections_per_address: usize,
    /// Time from accepting a connection to a session activated on it (Hello, OpenSecureChannel,
    /// CreateSession, ActivateSession); then the connection is closed. Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Largest message, in bytes, a client may send before its session is activated. Default
    /// 131 072 (128 KiB; an OpenSecureChannel with a 16 384-bit certificate chain fits).
    pub max_unauthenticated_message_bytes: usize,
    /// Most bytes of incomplete messages held for all clients without a session together; a
    /// client whose chunk does not fit is disconnected. Default 8 MiB.
    pub max_unauthenticated_buffered_bytes: usize,
    /// Failed logins one IP address may make in a row before it is throttled. Default 5.
    pub login_failures_burst: u32,
    /// Failed logins per minute an IP address regains once throttled; logins beyond are refused
    /// without checking the password. Default 10.
    pub login_failures_per_minute: u32,
    /// Most sessions one user may have at once (all anonymous sessions count as one user).
    /// Default 10.
    pub max_sessions_per_user: usize,
    /// Most subscriptions one user may have over all their sessions. Default 50.
    pub max_subscriptions_per_user: usize,
    /// Most monitored items on the plant's nodes one user may have over all their sessions.
    /// Default 200 000 (the whole of a 100 000-property plant, twice).
    pub max_monitored_items_per_user: usize,
    /// Most refused client certificates kept in `<pki>/rejected/` for `twinloom pki trust`; the
    /// oldest beyond are deleted. Default 100.
    pub max_rejected_certificates: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        Self {
            max_connections: 100,
            max_connections_per_address: 20,
            handshake_timeout: Duration::from_secs(10),
            max_unauthenticated_message_bytes: 128 * 1024,
            max_unauthenticated_buffered_bytes: 8 * 1024 * 1024,
            login_failures_burst: 5,
            login_failures_per_minute: 10,
            max_rejected_certificates: 100,
            max_sessions_per_user: 10,
            max_subscriptions_per_user: 50,
            max_monitored_items_per_user: 200_000,
        }
    }
}

fn default_namespace_uri() -> String {
    "urn:twinloom:plant".to_owned()
}
fn default_min_publishing_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_certificate_expiry_warning() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_shutdown_delay() -> Duration {
    Duration::from_secs(1)
}
fn default_max_sessions() -> usize {
    50
}
fn default_max_subscriptions() -> usize {
    20
}
fn default_max_monitored_items() -> usize {
    100_000
}

/// One OPC UA user.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name as the client sends it.
    pub name: String,
    /// Argon2 password hash in PHC string format (`$argon2id$v=19$...`), made with
    /// `twinloom hash-password`.
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
}

/// What a northbound user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Browse, read and subscribe.
    Viewer,
    /// Everything a viewer may do, and write read-write properties (through the control gate).
    Operator,
}
