//! The validation pass: every semantic error in the whole file, each with its key path.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::Incomplete;
use super::diagnostic::{KeyPath, Problem};
use super::model::{
    Access, AssetConfig, Config, DeadbandConfig, PluginKind, PropertyConfig, TypeConfig,
};
use super::sources::{BindingConfig, Bound, SourceConfig};
use crate::twin::{condition, units};

/// Checks `config` as a whole. `incomplete` says where each entry stands in the file and which
/// names belong to entries that failed the shape pass (references to them are not reported as
/// unknown).
pub(crate) fn validate(config: &Config, incomplete: &Incomplete) -> Vec<Problem> {
    let mut out = Vec::new();
    daemon(config, &mut out);
    listeners(config, &mut out);
    sources(config, incomplete, &mut out);
    let types = types(config, incomplete, &mut out);
    assets(config, incomplete, &types, &mut out);
    source_bindings(config, incomplete, &types, &mut out);
    plugins(config, incomplete, &mut out);
    interlocks(config, &mut out);
    change_log(config, &mut out);
    history(config, &mut out);
    sparkplug(config, &mut out);
    if config.control.audit_reserve.as_u64() < super::model::MIN_AUDIT_RESERVE {
        out.push(Problem::new(
            KeyPath::root().key("control").key("audit_reserve"),
            format!(
                "audit_reserve must be at least 64 KiB, not {}",
                config.control.audit_reserve.display().iec()
            ),
        ));
    }
    if config.control.max_writes_per_origin_per_minute == 0 {
        out.push(Problem::new(
            KeyPath::root()
                .key("control")
                .key("max_writes_per_origin_per_minute"),
            "max_writes_per_origin_per_minute must be 1 or more",
        ));
    }
    out
}

/// `[change_log]`: a budget that holds a few segments, a commit window of 1 ms to 10 s.
fn change_log(config: &Config, out: &mut Vec<Problem>) {
    use super::change_log::{MAX_COMMIT_WINDOW, MIN_MAX_DISK};
    let Some(log) = &config.change_log else {
        return;
    };
    let root = KeyPath::root().key("change_log");
    if log.max_disk.as_u64() < MIN_MAX_DISK {
        out.push(Problem::new(
            root.key("max_disk"),
            format!(
                "max_disk must be at least 256 KiB (four of the smallest segments), not {}",
                log.max_disk.display().iec()
            ),
        ));
    }
    if log.commit_window < std::time::Duration::from_millis(1)
        || log.commit_window > MAX_COMMIT_WINDOW
    {
        out.push(Problem::new(
            root.key("commit_window"),
            format!(
                "commit_window must be from 1 ms to 10 s, not {}",
                humantime::format_duration(log.commit_window)
            ),
        ));
    }
}

/// `[history]`: a retention of at least an hour, a budget of at least 16 MiB, readers named.
fn history(config: &Config, out: &mut Vec<Problem>) {
    use super::history::{MIN_MAX_DISK, MIN_RETENTION};
    let Some(history) = &config.history else {
        return;
    };
    let root = KeyPath::root().key("history");
    if history.retention < MIN_RETENTION {
        out.push(Problem::new(
            root.key("retention"),
            format!(
                "retention must be at least 1h (history files span an hour or more), not {}",
                humantime::format_duration(history.retention)
            ),
        ));
    }
    if history.max_disk.as_u64() < MIN_MAX_DISK {
        out.push(Problem::new(
            root.key("max_disk"),
            format!(
                "max_disk must be at least 16 MiB, not {}",
                history.max_disk.display().iec()
            ),
        ));
    }
    if history.readers.as_ref().is_some_and(Vec::is_empty) {
        out.push(Problem::new(
            root.key("readers"),
            "readers is empty: no session could read history; leave it out to let every role read",
        ));
    }
}

/// `[northbound.sparkplug]`: servers, ids Sparkplug can carry (and the device ids the asset
/// paths make: unique, without `+` or `#`), credentials, TLS files, and bounds.
fn sparkplug(config: &Config, out: &mut Vec<Problem>) {
    use super::sparkplug::{MAX_METRICS_PER_PAYLOAD, MqttServer, valid_sparkplug_id};
    let Some(sp) = &config.northbound.sparkplug else {
        return;
    };
    let root = KeyPath::root().key("northbound").key("sparkplug");
    if sp.servers.is_empty() {
        out.push(Problem::new(
            root.key("servers"),
            "servers must name at least one MQTT server (`tcp://host:port`)",
        ));
    }
    let mut tls_needed = false;
    for (i, server) in sp.servers.iter().enumerate() {
        match MqttServer::parse(server) {
            Ok(parsed) => tls_needed |= parsed.tls,
            Err(message) => out.push(Problem::new(root.key("servers").index(i), message)),
        }
    }
    if tls_needed && sp.tls.is_none() {
        out.push(Problem::new(
            root.key("servers"),
            "an `ssl://` server needs `[northbound.sparkplug.tls]` with `ca_file`",
        ));
    }
    let ids = [
        ("group_id", Some(&sp.group_id)),
        ("edge_node_id", Some(&sp.edge_node_id)),
        ("primary_host_id", sp.primary_host_id.as_ref()),
    ];
    for (key, id) in ids {
        if let Some(id) = id
            && !valid_sparkplug_id(id)
        {
            out.push(Problem::new(
                root.key(key),
                format!("{key} `{id}` must be non-empty and without `+`, `/` or `#` (Sparkplug 3.0 §4.1.1)"),
            ));
        }
    }
    let mut devices: HashMap<String, &str> = HashMap::new();
    for (i, asset) in config.assets.iter().enumerate() {
        let device = asset.path.replace('/', ":");
        if device.contains(['+', '#']) {
            out.push(Problem::new(
                KeyPath::root().key("assets").index(i).key("path"),
                format!(
                    "asset path `{}` cannot be a Sparkplug device id: it contains `+` or `#`",
                    asset.path
                ),
            ));
        } else if let Some(other) = devices.insert(device.clone(), &asset.path) {
            out.push(Problem::new(
                KeyPath::root().key("assets").index(i).key("path"),
                format!(
                    "asset paths `{other}` and `{}` make the same Sparkplug device id `{device}`",
                    asset.path
                ),
            ));
        }
    }
    if let Some(file) = &sp.password_file {
        if sp.username.is_none() {
            out.push(Problem::new(
                root.key("password_file"),
                "password_file needs `username` (MQTT 3.1.1 §3.1.2.9)",
            ));
        }
        let path = config.resolve(file);
        if let Err(error) = std::fs::metadata(&path) {
            out.push(Problem::new(
                root.key("password_file"),
                format!("cannot read `{}`: {error}", path.display()),
            ));
        }
    }
    if let Some(tls) = &sp.tls
        && let Err(problems) = tls.load(config.base_dir())
    {
        for (key, message) in problems {
            let path = match key {
                Some(key) => root.key("tls").key(key),
                None => root.key("tls"),
            };
            out.push(Problem::new(path, message));
        }
    }
    if sp.report_window < std::time::Duration::from_millis(1)
        || sp.report_window > std::time::Duration::from_secs(10)
    {
        out.push(Problem::new(
            root.key("report_window"),
            format!(
                "report_window must be from 1 ms to 10 s, not {}",
                humantime::format_duration(sp.report_window)
            ),
        ));
    }
    if !(1..=MAX_METRICS_PER_PAYLOAD).contains(&sp.max_metrics_per_payload) {
        out.push(Problem::new(
            root.key("max_metrics_per_payload"),
            format!(
                "max_metrics_per_payload must be from 1 to {MAX_METRICS_PER_PAYLOAD}, not {}",
                sp.max_metrics_per_payload
            ),
        ));
    }
    if sp.keep_alive < std::time::Duration::from_secs(5)
        || sp.keep_alive > std::time::Duration::from_secs(65_535)
    {
        out.push(Problem::new(
            root.key("keep_alive"),
            format!(
                "keep_alive must be from 5 s to 18 h (65 535 s, MQTT 3.1.1 §3.1.2.10), not {}",
                humantime::format_duration(sp.keep_alive)
            ),
        ));
    }
}

/// The key path of entry `index` of a section: where the shape pass found it, or (for a
/// `Config` made in code) its position.
fn entry_path(paths: &[KeyPath], section: &str, index: usize) -> KeyPath {
    paths
        .get(index)
        .cloned()
        .unwrap_or_else(|| KeyPath::root().key(section).index(index))
}

fn daemon(config: &Config, out: &mut Vec<Problem>) {
    let root = KeyPath::root().key("daemon");
    if let Err(error) = tracing_subscriber::EnvFilter::try_new(&config.daemon.log_level) {
        out.push(Problem::new(
            root.key("log_level"),
            format!("`{}` is not a log filter: {error}", config.daemon.log_level),
        ));
    }
    if config.daemon.shutdown_timeout.is_zero() {
        out.push(Problem::new(
            root.key("shutdown_timeout"),
            "shutdown_timeout must be positive",
        ));
    }
    if !(2..=1000).contains(&config.twin.stale_after_polls) {
        out.push(Problem::new(
            KeyPath::root().key("twin").key("stale_after_polls"),
            format!(
                "stale_after_polls {} is outside 2..=1000",
                config.twin.stale_after_polls
            ),
        ));
    }
}

/// User names OPC UA sessions use for themselves (async-opcua's `ANONYMOUS_USER_TOKEN_ID`),
/// refused for configured users in any letter case.
pub(crate) const RESERVED_USER_NAMES: [&str; 1] = ["ANONYMOUS"];

/// Two listeners conflict when they share a port and either binds the unspecified address.
fn listeners(config: &Config, out: &mut Vec<Problem>) {
    let mut listen: Vec<(KeyPath, SocketAddr)> = Vec::new();
    if let Some(server) = &config.opcua_server {
        listen.push((
            KeyPath::root().key("opcua_server").key("listen"),
            server.listen,
        ));
        let mut names = HashSet::new();
        for (i, user) in server.users.iter().enumerate() {
            let path = KeyPath::root().key("opcua_server").key("users").index(i);
            if !names.insert(user.name.as_str()) {
                out.push(Problem::new(
                    path.key("name"),
                    format!("user `{}` appears twice", user.name),
                ));
            }
            // async-opcua identifies anonymous sessions by this token id: a user of that name
            // would hand its role to every anonymous session.
            if RESERVED_USER_NAMES
                .iter()
                .any(|reserved| user.name.eq_ignore_ascii_case(reserved))
            {
                out.push(Problem::new(
                    path.key("name"),
                    format!(
                        "user name `{}` is reserved (anonymous sessions use it); choose another",
                        user.name
                    ),
                ));
            }
            password_hash(&user.password_hash, path.key("password_hash"), out);
        }
        let limits = KeyPath::root().key("opcua_server").key("limits");
        let at_least_one = [
            ("login_failures_burst", server.limits.login_failures_burst),
            (
                "login_failures_per_minute",
                server.limits.login_failures_per_minute,
            ),
        ];
        for (key, value) in at_least_one {
            if value == 0 {
                out.push(Problem::new(
                    limits.key(key),
                    format!("{key} must be at least 1 (0 would refuse every login)"),
                ));
            }
        }
        if server.limits.handshake_timeout.is_zero() {
            out.push(Problem::new(
                limits.key("handshake_timeout"),
                "handshake_timeout must be longer than 0 s",
            ));
        }
    }
    if let Some(admin) = &config.admin_http {
        listen.push((
            KeyPath::root().key("admin_http").key("listen"),
            admin.listen,
        ));
        admin_http(admin, config.base_dir(), out);
    }
    for (i, (path, addr)) in listen.iter().enumerate() {
        for (other_path, other) in &listen[..i] {
            let overlap = addr.ip() == other.ip()
                || addr.ip().is_unspecified()
                || other.ip().is_unspecified();
            if addr.port() != 0 && addr.port() == other.port() && overlap {
                out.push(Problem::new(
                    path.clone(),
                    format!("listen address {addr} is already claimed by `{other_path}`"),
                ));
            }
        }
    }
}

/// An argon2 PHC string whose algorithm and parameters argon2 accepts (a hash it cannot use
/// would refuse every login, found only at the first one).
fn password_hash(hash: &str, path: KeyPath, out: &mut Vec<Problem>) {
    use argon2::password_hash::PasswordHash;
    let usable = hash.starts_with("$argon2")
        && PasswordHash::new(hash).is_ok_and(|parsed| {
            argon2::Algorithm::try_from(parsed.algorithm).is_ok()
                && argon2::Params::try_from(&parsed).is_ok()
                && parsed.hash.is_some()
        });
    if !usable {
        out.push(Problem::new(
            path,
            "password_hash must be an argon2 PHC string (`$argon2id$v=19$...`); create one with `twinloom hash-password`",
        ));
    }
}

/// `[admin_http]`: operators (unique names, usable hashes), the TLS files (read and checked
/// here, so a missing or mismatched file stops the start with its key), allowed host names and
/// limits.
fn admin_http(
    admin: &super::admin_http::AdminHttpConfig,
    base: &std::path::Path,
    out: &mut Vec<Problem>,
) {
    let root = KeyPath::root().key("admin_http");
    let mut names = HashSet::new();
    for (i, user) in admin.operators.iter().enumerate() {
        let path = root.key("operators").index(i);
        if !names.insert(user.name.as_str()) {
            out.push(Problem::new(
                path.key("name"),
                format!("operator `{}` appears twice", user.name),
            ));
        }
        // HTTP Basic credentials are `name:password` (RFC 7617 §2).
        if user.name.is_empty() || user.name.contains(':') {
            out.push(Problem::new(
                path.key("name"),
                format!(
                    "operator name `{}` must be non-empty and without `:` (HTTP Basic authentication)",
                    user.name
                ),
            ));
        }
        password_hash(&user.password_hash, path.key("password_hash"), out);
    }
    if let Some(tls) = &admin.tls
        && let Err(problems) = tls.load(base)
    {
        for (key, message) in problems {
            let path = match key {
                Some(key) => root.key("tls").key(key),
                None => root.key("tls"),
            };
            out.push(Problem::new(path, message));
        }
    }
    for (i, host) in admin.allowed_hosts.iter().enumerate() {
        let name = host.strip_suffix('.').unwrap_or(host);
        let valid = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            out.push(Problem::new(
                root.key("allowed_hosts").index(i),
                format!(
                    "`{host}` is not a host name: give names such as `plant-gw.example`, without scheme or port (IP addresses and `localhost` are always allowed)"
                ),
            ));
        }
    }
    let limits = root.key("limits");
    let at_least_one = [
        ("max_connections", admin.limits.max_connections as u64),
        (
            "login_failures_burst",
            u64::from(admin.limits.login_failures_burst),
        ),
        (
            "login_failures_per_minute",
            u64::from(admin.limits.login_failures_per_minute),
        ),
    ];
    for (key, value) in at_least_one {
        if value == 0 {
            out.push(Problem::new(
                limits.key(key),
                format!("{key} must be at least 1 (0 would refuse every request or login)"),
            ));
        }
    }
    for (key, value) in [
        ("header_read_timeout", admin.limits.header_read_timeout),
        ("request_timeout", admin.limits.request_timeout),
        ("stream_write_stall", admin.limits.stream_write_stall),
    ] {
        if value.is_zero() {
            out.push(Problem::new(
                limits.key(key),
                format!("{key} must be longer than 0 s"),
            ));
        }
    }
}

fn source_path(config: &Config, incomplete: &Incomplete, index: usize) -> KeyPath {
    if let Some(path) = incomplete.source_paths.get(index) {
        return path.clone();
    }
    let kind = config.sources[index].kind();
    let position = config.sources[..index]
        .iter()
        .filter(|s| s.kind() == kind)
        .count();
    KeyPath::root()
        .key("sources")
        .key(kind.key())
        .index(position)
}

fn sources(config: &Config, incomplete: &Incomplete, out: &mut Vec<Problem>) {
    let mut ids: HashMap<&str, KeyPath> = HashMap::new();
    let mut claims: HashMap<String, KeyPath> = HashMap::new();
    for (i, source) in config.sources.iter().enumerate() {
        let path = source_path(config, incomplete, i);
        check_name(source.id(), &path.key("id"), "source id", out);
        if let Some(first) = ids.get(source.id()) {
            out.push(Problem::new(
                path.key("id"),
                format!("source id `{}` is already used by `{first}`", source.id()),
            ));
        } else {
            ids.insert(source.id(), path.clone());
        }
        source.section().validate(&path, out);
        for (key, resource) in source.claims() {
            let claim_path = path.join_dotted(key);
            if let Some(first) = claims.get(&resource) {
                out.push(Problem::new(
                    claim_path,
                    format!("`{resource}` is already claimed by `{first}`; put every device on that line into one source"),
                ));
            } else {
                claims.insert(resource, claim_path);
            }
        }
    }
}

fn check_name(name: &str, path: &KeyPath, what: &str, out: &mut Vec<Problem>) {
    let valid = !name.is_empty()
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        out.push(Problem::new(
            path.clone(),
            format!(
                "{what} `{name}` must start with a letter and use only letters, digits, `_` and `-`"
            ),
        ));
    }
}

fn types<'c>(
    config: &'c Config,
    incomplete: &Incomplete,
    out: &mut Vec<Problem>,
) -> HashMap<&'c str, &'c TypeConfig> {
    let mut by_name: HashMap<&str, &TypeConfig> = HashMap::new();
    for (i, ty) in config.types.iter().enumerate() {
        let path = entry_path(&incomplete.type_paths, "types", i);
        check_name(&ty.name, &path.key("name"), "type name", out);
        if [
            crate::twin::spec::PLUGIN_STATUS_TYPE,
            crate::twin::spec::CONTROL_STATUS_TYPE,
        ]
        .contains(&ty.name.as_str())
        {
            out.push(Problem::new(
                path.key("name"),
                format!(
                    "type name `{}` is reserved (the daemon's status objects have it); choose another",
                    ty.name
                ),
            ));
        }
        if by_name.insert(&ty.name, ty).is_some() {
            out.push(Problem::new(
                path.key("name"),
                format!("type `{}` is defined twice", ty.name),
            ));
        }
        let mut names = HashSet::new();
        for (j, property) in ty.properties.iter().enumerate() {
            let property_path = path.key("properties").index(j);
            check_name(
                &property.name,
                &property_path.key("name"),
                "property name",
                out,
            );
            if !names.insert(property.name.as_str()) {
                out.push(Problem::new(
                    property_path.key("name"),
                    format!(
                        "property `{}` appears twice in type `{}`",
                        property.name, ty.name
                    ),
                ));
            }
            property_rules(property, &property_path, out);
        }
    }
    by_name
}

fn property_rules(property: &PropertyConfig, path: &KeyPath, out: &mut Vec<Problem>) {
    let numeric = property.data_type.is_numeric();
    if let Some(unit) = &property.unit
        && units::lookup(unit).is_none()
    {
        out.push(Problem::new(
            path.key("unit"),
            format!("unit `{unit}` is not a known engineering unit; use a UNECE code such as CEL, BAR, KWT, P1 or a symbol such as °C"),
        ));
    }
    let range_ok = match property.range {
        Some(_) if !numeric => {
            out.push(Problem::new(
                path.key("range"),
                "a range applies only to numeric properties",
            ));
            false
        }
        Some([low, high]) if !(low.is_finite() && high.is_finite() && low < high) => {
            out.push(Problem::new(
                path.key("range"),
                format!("range [{low}, {high}] must be finite with low < high"),
            ));
            false
        }
        _ => true,
    };
    deadband_rules("deadband", property.deadband, property, range_ok, path, out);
    deadband_rules(
        "history_deadband",
        property.history_deadband,
        property,
        range_ok,
        path,
        out,
    );
    if !property.historizing {
        for (key, set) in [
            ("history_deadband", property.history_deadband.is_some()),
            (
                "history_max_interval",
                property.history_max_interval.is_some(),
            ),
        ] {
            if set {
                out.push(Problem::new(
                    path.key(key),
                    format!("{key} applies only to historized properties (this one says `historizing = false`)"),
                ));
            }
        }
    }
    if let Some(interval) = property.history_max_interval
        && interval < super::history::MIN_MAX_INTERVAL
    {
        out.push(Problem::new(
            path.key("history_max_interval"),
            format!(
                "history_max_interval must be at least 1s, not {}",
                humantime::format_duration(interval)
            ),
        ));
    }
    if let Some([low, high]) = property.limits {
        if property.access != Access::ReadWrite {
            out.push(Problem::new(
                path.key("limits"),
                "write limits apply only to `access = \"read-write\"` properties",
            ));
        } else if !numeric {
            out.push(Problem::new(
                path.key("limits"),
                "write limits apply only to numeric properties",
            ));
        } else if !(low.is_finite() && high.is_finite() && low <= high) {
            out.push(Problem::new(
                path.key("limits"),
                format!("limits [{low}, {high}] must be finite with low <= high"),
            ));
        } else if let (true, Some([range_low, range_high])) = (range_ok, property.range)
            && (low < range_low || high > range_high)
        {
            out.push(Problem::new(
                path.key("limits"),
                format!(
                    "limits [{low}, {high}] reach outside the range [{range_low}, {range_high}]"
                ),
            ));
        }
    }
    write_policy(property, numeric, path, out);
}

/// The rules of a deadband (`deadband` or `history_deadband`, named `key`) of `property`.
fn deadband_rules(
    key: &str,
    deadband: Option<DeadbandConfig>,
    property: &PropertyConfig,
    range_ok: bool,
    path: &KeyPath,
    out: &mut Vec<Problem>,
) {
    let numeric = property.data_type.is_numeric();
    match deadband {
        Some(_) if !numeric => {
            out.push(Problem::new(
                path.key(key),
                format!("a {key} applies only to numeric properties"),
            ));
        }
        Some(DeadbandConfig::Absolute(v)) | Some(DeadbandConfig::Percent(v))
            if !(v.is_finite() && v >= 0.0) =>
        {
            out.push(Problem::new(
                path.key(key),
                format!("{key} {v} must be a non-negative number"),
            ));
        }
        Some(DeadbandConfig::Percent(v)) if v > 100.0 => {
            out.push(Problem::new(
                path.key(key),
                format!("percent {key} {v} is above 100"),
            ));
        }
        Some(DeadbandConfig::Percent(_)) if property.range.is_none() => {
            out.push(Problem::new(
                path.key(key),
                format!(
                    "a percent {key} needs a `range` to take the percentage of (OPC UA Part 8 §6.2)"
                ),
            ));
        }
        Some(DeadbandConfig::Absolute(v)) => {
            if let (true, Some([low, high])) = (range_ok, property.range)
                && v > high - low
            {
                out.push(Problem::new(
                    path.key(key),
                    format!("absolute {key} {v} is wider than the range [{low}, {high}]; no change would ever be published"),
                ));
            }
        }
        _ => {}
    }
}

/// The write rules of a property: only on read-write properties, `clamp` only with limits,
/// `max_rate` only on numbers and positive, `min_write_interval` positive.
fn write_policy(property: &PropertyConfig, numeric: bool, path: &KeyPath, out: &mut Vec<Problem>) {
    let read_write = property.access == Access::ReadWrite;
    let only_writable = "applies only to `access = \"read-write\"` properties";
    if property.clamp && property.limits.is_none() {
        out.push(Problem::new(
            path.key("clamp"),
            "`clamp = true` needs `limits` to clamp to",
        ));
    }
    if let Some(rate) = property.max_rate {
        if !read_write {
            out.push(Problem::new(
                path.key("max_rate"),
                format!("max_rate {only_writable}"),
            ));
        } else if !numeric {
            out.push(Problem::new(
                path.key("max_rate"),
                "max_rate applies only to numeric properties",
            ));
        } else if !(rate.is_finite() && rate > 0.0) {
            out.push(Problem::new(
                path.key("max_rate"),
                format!("max_rate {rate} must be a positive number of units per second"),
            ));
        }
    }
    if let crate::twin::spec::OnLoss::Write(safe) = property.on_loss {
        let fits = match (safe, property.data_type) {
            (crate::twin::spec::SafeValue::Bool(_), crate::twin::DataType::Bool) => Ok(()),
            (crate::twin::spec::SafeValue::Number(v), _) if numeric => match property.limits {
                _ if !v.is_finite() => Err(format!("on_loss value {v} is not finite")),
                Some([low, high]) if !(low..=high).contains(&v) => Err(format!(
                    "on_loss value {v} is outside the write limits [{low}, {high}]"
                )),
                _ => Ok(()),
            },
            _ => Err(format!(
                "on_loss writes a value of the property's data type ({:?})",
                property.data_type
            )
            .to_lowercase()),
        };
        let fits = if read_write {
            fits
        } else {
            Err(format!("on_loss {only_writable}"))
        };
        if let Err(why) = fits {
            out.push(Problem::new(path.key("on_loss"), why));
        }
    }
    if let Some(select) = property.select_before_operate {
        if !read_write {
            out.push(Problem::new(
                path.key("select_before_operate"),
                format!("select_before_operate {only_writable}"),
            ));
        } else if select.is_zero() {
            out.push(Problem::new(
                path.key("select_before_operate"),
                "select_before_operate must be positive",
            ));
        }
    }
    if let Some(interval) = property.min_write_interval {
        if !read_write {
            out.push(Problem::new(
                path.key("min_write_interval"),
                format!("min_write_interval {only_writable}"),
            ));
        } else if interval.is_zero() {
            out.push(Problem::new(
                path.key("min_write_interval"),
                "min_write_interval must be positive",
            ));
        }
    }
}

fn check_asset_path(path_text: &str, path: &KeyPath, out: &mut Vec<Problem>) {
    let valid = !path_text.is_empty()
        && path_text.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if !valid {
        out.push(Problem::new(
            path.clone(),
            format!("asset path `{path_text}` must be `/`-separated non-empty segments of letters, digits, `_`, `-` and `.`"),
        ));
    }
}

fn assets(
    config: &Config,
    incomplete: &Incomplete,
    types: &HashMap<&str, &TypeConfig>,
    out: &mut Vec<Problem>,
) {
    let mut paths: HashMap<&str, usize> = HashMap::new();
    for (i, asset) in config.assets.iter().enumerate() {
        let path = entry_path(&incomplete.asset_paths, "assets", i);
        check_asset_path(&asset.path, &path.key("path"), out);
        let root = crate::twin::spec::SYSTEM_ROOT;
        if asset.path.split('/').next() == Some(root) {
            out.push(Problem::new(
                path.key("path"),
                format!(
                    "asset paths starting with `{root}/` are reserved for the daemon's own objects (plugin status); choose another"
                ),
            ));
        }
        if let Some(first) = paths.get(asset.path.as_str()) {
            out.push(Problem::new(
                path.key("path"),
                format!(
                    "asset path `{}` is already used by `{}`",
                    asset.path,
                    entry_path(&incomplete.asset_paths, "assets", *first)
                ),
            ));
        } else {
            paths.insert(&asset.path, i);
        }
        let ty = types.get(asset.type_name.as_str()).copied();
        if ty.is_none() && !incomplete.types.contains(&asset.type_name) {
            let mut known: Vec<_> = types.keys().copied().collect();
            known.sort_unstable();
            out.push(Problem::new(
                path.key("type"),
                format!(
                    "unknown type `{}`; defined types: {}",
                    asset.type_name,
                    list(&known)
                ),
            ));
        }
        let all_by_plugin = ty.is_some_and(|t| {
            t.properties
                .iter()
                .all(|p| matches!(asset.bindings.get(&p.name), Some(BindingConfig::Plugin(_))))
        });
        let source = match &asset.source {
            None => {
                if ty.is_some_and(|t| !t.properties.is_empty()) && !all_by_plugin {
                    out.push(Problem::new(
                        path.clone(),
                        "asset has no `source` to bind its properties to",
                    ));
                }
                None
            }
            Some(id) => {
                let found = config.source(id);
                if found.is_none() && !incomplete.sources.contains(id) {
                    let mut known: Vec<_> = config.sources.iter().map(SourceConfig::id).collect();
                    known.sort_unstable();
                    out.push(Problem::new(
                        path.key("source"),
                        format!("unknown source `{id}`; defined sources: {}", list(&known)),
                    ));
                }
                found
            }
        };
        if let Some(source) = source {
            let devices = source.device_ids();
            match &asset.device {
                Some(device) if !devices.contains(device) => out.push(Problem::new(
                    path.key("device"),
                    format!(
                        "source `{}` has no device `{device}`; its devices: {}",
                        source.id(),
                        list(&devices)
                    ),
                )),
                None if devices.len() > 1 => out.push(Problem::new(
                    path.clone(),
                    format!(
                        "source `{}` has several devices; name one with `device` ({})",
                        source.id(),
                        list(&devices)
                    ),
                )),
                _ => {}
            }
        }
        let Some(ty) = ty else { continue };
        if source.is_none() && !all_by_plugin {
            continue;
        }
        let bindings_path = path.key("bindings");
        for (name, binding) in &asset.bindings {
            let binding_path = bindings_path.key(name.as_str());
            match ty.properties.iter().find(|p| &p.name == name) {
                None => out.push(Problem::new(
                    binding_path,
                    format!("type `{}` has no property `{name}`", ty.name),
                )),
                Some(property) => binding.validate(property, config, &binding_path, out),
            }
        }
        for property in &ty.properties {
            if !asset.bindings.contains_key(&property.name)
                && !incomplete.bindings.contains(&(i, property.name.clone()))
            {
                out.push(Problem::new(
                    bindings_path.clone(),
                    format!(
                        "property `{}` of type `{}` has no binding",
                        property.name, ty.name
                    ),
                ));
            }
        }
    }
    // A property's NodeId is `asset/path/property`: an asset at that path would collide with it.
    for (i, asset) in config.assets.iter().enumerate() {
        let Some((parent, name)) = asset.path.rsplit_once('/') else {
            continue;
        };
        let Some(&parent_index) = paths.get(parent) else {
            continue;
        };
        let parent_asset = &config.assets[parent_index];
        if types
            .get(parent_asset.type_name.as_str())
            .is_some_and(|t| t.properties.iter().any(|p| p.name == name))
        {
            out.push(Problem::new(
                entry_path(&incomplete.asset_paths, "assets", i).key("path"),
                format!(
                    "asset path `{}` collides with property `{name}` of asset `{parent}`",
                    asset.path
                ),
            ));
        }
    }
}

/// Each source's checks over all of its bindings ([`SourceSection::validate_bindings`]).
fn source_bindings(
    config: &Config,
    incomplete: &Incomplete,
    types: &HashMap<&str, &TypeConfig>,
    out: &mut Vec<Problem>,
) {
    for (s, source) in config.sources.iter().enumerate() {
        let mut bound = Vec::new();
        for (i, asset) in config.assets.iter().enumerate() {
            if asset.source.as_deref() != Some(source.id()) {
                continue;
            }
            let Some(ty) = types.get(asset.type_name.as_str()) else {
                continue;
            };
            let bindings_path = entry_path(&incomplete.asset_paths, "assets", i).key("bindings");
            for (name, binding) in &asset.bindings {
                let Some(property) = ty.properties.iter().find(|p| &p.name == name) else {
                    continue;
                };
                bound.push(Bound {
                    path: bindings_path.key(name.as_str()),
                    binding,
                    writable: property.access == Access::ReadWrite,
                    device: asset.device.as_deref(),
                });
            }
        }
        let path = source_path(config, incomplete, s);
        source.section().validate_bindings(&path, &bound, out);
    }
}

fn plugins(config: &Config, incomplete: &Incomplete, out: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, plugin) in config.plugins.iter().enumerate() {
        let path = entry_path(&incomplete.plugin_paths, "plugins", i);
        check_name(&plugin.name, &path.key("name"), "plugin name", out);
        if !names.insert(plugin.name.as_str()) {
            out.push(Problem::new(
                path.key("name"),
                format!("plugin `{}` is defined twice", plugin.name),
            ));
        }
        if !(1..=4096).contains(&plugin.memory_mib) {
            out.push(Problem::new(
                path.key("memory_mib"),
                format!("memory_mib {} is outside 1..=4096", plugin.memory_mib),
            ));
        }
        if plugin.kind == PluginKind::Native && plugin.fuel.is_some() {
            out.push(Problem::new(
                path.key("fuel"),
                "fuel meters WebAssembly plugins; a native plugin's calls cannot be metered (only its deadline applies)",
            ));
        }
        for (key, duration) in [
            ("deadline", Some(plugin.deadline)),
            ("min_interval", Some(plugin.min_interval)),
            ("tick", plugin.tick),
        ] {
            if duration.is_some_and(|d| d.is_zero()) {
                out.push(Problem::new(
                    path.key(key),
                    format!("{key} must be positive"),
                ));
            }
        }
        for (j, subscription) in plugin.subscribe.iter().enumerate() {
            if subscription.assets.is_empty() || subscription.properties.is_empty() {
                out.push(Problem::new(
                    path.key("subscribe").index(j),
                    "a subscription needs an `assets` pattern and at least one property",
                ));
            }
        }
        for (j, target) in plugin.writes.iter().enumerate() {
            if let Err(why) = writable(config, target) {
                out.push(Problem::new(path.key("writes").index(j), why));
            }
        }
        let file = config.resolve(&plugin.file);
        if !file.is_file() {
            out.push(Problem::new(
                path.key("file"),
                format!(
                    "plugin file `{}` does not exist (looked for `{}`)",
                    plugin.file.display(),
                    file.display()
                ),
            ));
        }
    }
}

/// The asset and property declaration a property path `<asset path>/<property>` names.
fn property_at<'c>(
    config: &'c Config,
    target: &str,
) -> Result<(&'c AssetConfig, &'c PropertyConfig), String> {
    let (asset_path, name) = target
        .rsplit_once('/')
        .ok_or_else(|| format!("`{target}` is not a property path `<asset path>/<property>`"))?;
    let asset = config
        .assets
        .iter()
        .find(|a| a.path == asset_path)
        .ok_or_else(|| format!("`{target}`: there is no asset `{asset_path}`"))?;
    let property = config
        .types
        .iter()
        .find(|t| t.name == asset.type_name)
        .and_then(|t| t.properties.iter().find(|p| p.name == name))
        .ok_or_else(|| {
            format!(
                "`{target}`: asset `{asset_path}` (type `{}`) has no property `{name}`",
                asset.type_name
            )
        })?;
    Ok((asset, property))
}

/// Checks that `target` (a plugin's `writes` entry, an interlock's `applies_to`) names a
/// read-write property bound to a source.
fn writable(config: &Config, target: &str) -> Result<(), String> {
    let (asset, property) = property_at(config, target)?;
    if property.access != Access::ReadWrite {
        return Err(format!(
            "`{target}` is read-only: only properties with `access = \"read-write\"` are written"
        ));
    }
    if property.data_type == crate::twin::DataType::String {
        return Err(format!(
            "`{target}` is a string: a proposal carries a boolean, an integer or a float"
        ));
    }
    match asset.bindings.get(&property.name) {
        Some(BindingConfig::Plugin(by)) => Err(format!(
            "`{target}` is computed by plugin `{}`, not bound to a device",
            by.plugin
        )),
        Some(_) => Ok(()),
        None => Err(format!("`{target}` is not bound to a source")),
    }
}

/// `[[control.interlocks]]`: unique names, guarded properties that are written, conditions
/// that parse and type-check against the declared properties (errors inside the string).
fn interlocks(config: &Config, out: &mut Vec<Problem>) {
    let mut names = HashSet::new();
    for (i, interlock) in config.control.interlocks.iter().enumerate() {
        let path = KeyPath::root().key("control").key("interlocks").index(i);
        check_name(&interlock.name, &path.key("name"), "interlock name", out);
        if !names.insert(interlock.name.as_str()) {
            out.push(Problem::new(
                path.key("name"),
                format!("interlock `{}` is defined twice", interlock.name),
            ));
        }
        if interlock.applies_to.is_empty() {
            out.push(Problem::new(
                path.key("applies_to"),
                "an interlock needs at least one property to guard",
            ));
        }
        for (j, target) in interlock.applies_to.iter().enumerate() {
            if let Err(why) = writable(config, target) {
                out.push(Problem::new(path.key("applies_to").index(j), why));
            }
        }
        let type_of = |target: &str| property_at(config, target).map(|(_, p)| p.data_type);
        if let Err(errors) = condition::parse(&interlock.condition, type_of) {
            out.extend(
                errors.into_iter().map(|error| {
                    Problem::inside(path.key("condition"), error.offset, error.message)
                }),
            );
        }
    }
}

fn list<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(|n| format!("`{}`", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}
