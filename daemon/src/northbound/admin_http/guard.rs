//! What a request must show before any handler runs, so that a web page open in the control
//! room's browser cannot use the endpoint:
//!
//! - **Host** (every request): `localhost`, an IP address, or one of `[admin_http]
//!   allowed_hosts`; otherwise 421. A page whose own name was rebound to this address (DNS
//!   rebinding) sends its own name, never one of these. IP addresses are safe to allow: the
//!   attack needs a name the attacker controls.
//! - **Same origin** (every request but GET, HEAD and OPTIONS): the Fetch Metadata header
//!   `Sec-Fetch-Site` must be `same-origin` or `none` (typed by the user); without it, an
//!   `Origin` header must name the request's own host; otherwise 403. A request with neither
//!   comes from no browser (curl, scripts, Prometheus) and passes: browsers send `Origin` on
//!   every cross-origin POST (Fetch Standard §3.1, "Origin header"; the approach of OWASP's
//!   Fetch Metadata resource isolation and Go 1.25's `http.CrossOriginProtection`).
//!
//! HTTP Basic credentials are no defence here: a browser sends cached ones with a cross-site
//! form post.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AdminState;
use super::events::{Refused, RequestRefused};
use super::serve::Connection;

/// The host name (without port) a request is addressed to: the request target's authority in
/// absolute form (RFC 9112 §3.2.2), else the `Host` header; `None` without either.
fn target_host(request: &Request) -> Option<String> {
    if let Some(host) = request.uri().host() {
        return Some(host.to_owned());
    }
    let host = request.headers().get(header::HOST)?.to_str().ok()?;
    Some(host_name(host).to_owned())
}

/// `host` of `host[:port]` (IPv6 literals in brackets keep them).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .find(']')
            .map_or(authority, |end| &authority[..=end]);
    }
    match authority.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => authority,
    }
}

/// Whether `host` may be addressed: an IP address, `localhost`, or one of `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    literal.parse::<std::net::IpAddr>().is_ok()
        || host.eq_ignore_ascii_case("localhost")
        || allowed.iter().any(|name| {
            name.strip_suffix('.')
                .unwrap_or(name)
                .eq_ignore_ascii_case(host)
        })
}

/// Why a state-changing request is cross-origin, or `None` when it is same-origin or comes
/// from no browser.
fn cross_origin(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.as_bytes() {
            b"same-origin" | b"none" => None,
            _ => Some(format!(
                "Sec-Fetch-Site: {}",
                String::from_utf8_lossy(site.as_bytes())
            )),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).map(|h| h.as_bytes());
    let origin_host = origin.to_str().ok().and_then(|o| {
        o.strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
    });
    match (origin_host, host) {
        (Some(origin_host), Some(host)) if origin_host.as_bytes().eq_ignore_ascii_case(host) => {
            None
        }
        _ => Some(format!(
            "Origin {} is not this host",
            String::from_utf8_lossy(origin.as_bytes())
        )),
    }
}

/// The middleware: 421 for a foreign host, 403 for a cross-origin state-changing request;
/// otherwise the request goes on.
pub(super) async fn check(
    State(state): State<Arc<AdminState>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<Connection>()
        .map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.peer.ip());
    if let Some(host) = target_host(&request)
        && !host_allowed(&host, &state.allowed_hosts)
    {
        RequestRefused {
            peer,
            refused: Refused::Host,
            detail: &host,
        }
        .emit(&state.events);
        return (
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "host `{host}` is not this endpoint's: address it by IP address, localhost, or a name in [admin_http] allowed_hosts\n"
            ),
        )
            .into_response();
    }
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe && let Some(why) = cross_origin(request.headers()) {
        RequestRefused {
            peer,
            refused: Refused::CrossSite,
            detail: &why,
        }
        .emit(&state.events);
        return (
            StatusCode::FORBIDDEN,
            "cross-origin requests may not change the plant's state\n",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_ip_addresses_localhost_or_allowed_names() {
        let allowed = vec!["plant-gw.example".to_owned()];
        for (authority, expected) in [
            ("127.0.0.1:9180", true),
            ("10.1.2.3", true),
            ("[::1]:9180", true),
            ("localhost:9180", true),
            ("LOCALHOST", true),
            ("plant-gw.example:9180", true),
            ("Plant-GW.example.", true),
            ("evil.example:9180", false),
            ("127.0.0.1.nip.io:9180", false),
            ("plant-gw.example.evil.example", false),
        ] {
            assert_eq!(
                host_allowed(host_name(authority), &allowed),
                expected,
                "{authority}"
            );
        }
    }

    #[test]
    fn only_same_origin_or_non_browser_requests_pass() {
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let host = ("host", "127.0.0.1:9180");
        for (pairs, passes) in [
            (vec![host], true),
            (vec![host, ("sec-fetch-site", "same-origin")], true),
            (vec![host, ("sec-fetch-site", "none")], true),
            (vec![host, ("sec-fetch-site", "cross-site")], false),
            (vec![host, ("sec-fetch-site", "same-site")], false),
            (vec![host, ("origin", "http://127.0.0.1:9180")], true),
            (vec![host, ("origin", "https://127.0.0.1:9180")], true),
            (vec![host, ("origin", "http://evil.example")], false),
            (vec![host, ("origin", "http://127.0.0.1:9181")], false),
            (vec![host, ("origin", "null")], false),
            (vec![("origin", "http://127.0.0.1:9180")], false),
            // Fetch Metadata decides when both are there.
            (
                vec![
                    host,
                    ("origin", "http://127.0.0.1:9180"),
                    ("sec-fetch-site", "cross-site"),
                ],
                false,
            ),
        ] {
            assert_eq!(
                cross_origin(&headers(&pairs)).is_none(),
                passes,
                "{pairs:?}"
            );
        }
    }
}
