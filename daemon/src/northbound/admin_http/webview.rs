//! The live web view at the endpoint's root (issue #31, `docs/webview.md`): a page whose assets
//! are compiled into the binary, the plant's structure and status as JSON, and the live values
//! as Server-Sent Events.
//!
//! - `GET /` → the page (`web/index.html`); `GET /web/app.js`, `GET /web/style.css` its script
//!   and style; `GET /web/vendor/uplot/{uPlot.iife.min.js,uPlot.min.css,LICENSE}` the charting
//!   library the trends use (uPlot 1.6.32, MIT, vendored from the npm registry's package).
//!   Nothing is fetched from outside the daemon.
//! - `GET /api/plant` → the twin's structure, JSON: `{"assets": [{"path", "type",
//!   "description", "properties": [{"id", "name", "unit", "unit_name", "data_type",
//!   "writable"}]}]}`; `id` is the property's index in this daemon's twin (stable until the
//!   configuration changes), `unit` the engineering unit's symbol (`°C`) or `null`.
//! - `GET /api/status` → `{"armed": bool, "sources": [{"id", "connected", "last_error"}],
//!   "plugins": [{"name", "state", "last_fault", "failures", "calls", "call_seconds"}],
//!   "unmet": [line]}`: whether the plant is armed, each source's connection and last
//!   connection error (`null` before any; kept after it reconnects), each plugin's state from
//!   its status object (`unloaded`, `running`, `backing-off`, `quarantined`), its last fault
//!   (`""` before any), its failures in a row, its calls since the start and the seconds they
//!   ran (counters: the page shows their rates), and `/readyz`'s unmet conditions.
//! - `GET /api/control` → `{"armed": bool, "interlocks": [{"name", "condition", "applies_to":
//!   [path], "holds": bool, "why": text | null, "inputs": [[path, value, quality, reason]]}],
//!   "audit": [record], "audit_error": text | null}`: each interlock evaluated now on its
//!   inputs' current samples (what the gate would decide), and the last [`AUDIT_SHOWN`] records
//!   of the control gate's audit log, newest first, read from its files
//!   ([`crate::control::audit::tail`]).
//! - `GET /api/trend?property=…` → a property's history decimated for a chart ([`super::trend`]).
//! - `GET /api/events?ids=1,2,3` → the live values of those properties ([`stream`]).
//!
//! Arming and disarming from the page use `POST /control/arm` and `/control/disarm` with the
//! operators' HTTP Basic credentials: the page has no login of its own.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::Uri;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use indexmap::IndexMap;
use serde_json::{Value as Json, json};

use super::AdminState;
use crate::twin::spec::{Access, DataType};
use crate::twin::{Filter, PropertyId, QualityLevel, QualityReason, Sample, Twin, Value};

/// The page, its script and its style, compiled in (`web/`).
const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const STYLE_CSS: &str = include_str!("web/style.css");

/// The vendored charting library (uPlot 1.6.32, MIT; `web/vendor/uplot/`).
const UPLOT_JS: &str = include_str!("web/vendor/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("web/vendor/uplot/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("web/vendor/uplot/LICENSE");

/// Audit records `/api/control` shows, the newest.
pub const AUDIT_SHOWN: usize = 50;

/// Most properties one event stream may carry: what one screen shows, with room to scroll.
pub const MAX_STREAM_PROPERTIES: usize = 2000;

/// Shortest time between two events of one stream: each property changes on the page at most
/// 10 times a second, however often it changes in the twin (the latest value wins).
pub const STREAM_INTERVAL: Duration = Duration::from_millis(100);

/// A stream's queue in the twin's fan-out before it coalesces to the latest change per
/// property (so a stream holds at most one pending change per property it carries).
const STREAM_QUEUE: usize = 256;

/// How long a browser waits before it reconnects a broken stream (the SSE `retry` field).
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The connection carries a stream: the endpoint's `request_timeout` does not cut it (a
/// response extension read by `serve`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Streaming;

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub(super) async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub(super) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

pub(super) async fn style_css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

pub(super) async fn uplot_js() -> Response {
    asset("text/javascript; charset=utf-8", UPLOT_JS)
}

pub(super) async fn uplot_css() -> Response {
    asset("text/css; charset=utf-8", UPLOT_CSS)
}

pub(super) async fn uplot_license() -> Response {
    asset("text/plain; charset=utf-8", UPLOT_LICENSE)
}

pub(super) fn json_response(body: &Json) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn data_type(data_type: DataType) -> &'static str {
    match data_type {
        DataType::Bool => "bool",
        DataType::Integer => "integer",
        DataType::Unsigned => "unsigned",
        DataType::Float => "float",
        DataType::String => "string",
    }
}

pub(super) async fn plant(State(state): State<Arc<AdminState>>) -> Response {
    let model = state.twin.model();
    let assets: Vec<Json> = model
        .assets()
        .iter()
        .map(|asset| {
            let properties: Vec<Json> = asset
                .properties
                .iter()
                .map(|&id| {
                    let decl = model.decl(id);
                    json!({
                        "id": id.0,
                        "name": decl.name,
                        "unit": decl.unit.map(|u| u.symbol),
                        "unit_name": decl.unit.map(|u| u.name),
                        "data_type": data_type(decl.data_type),
                        "writable": decl.access == Access::ReadWrite,
                    })
                })
                .collect();
            json!({
                "path": asset.path,
                "type": model.type_of(asset).name,
                "description": asset.description,
                "properties": properties,
            })
        })
        .collect();
    json_response(&json!({ "assets": assets }))
}

pub(super) async fn status(State(state): State<Arc<AdminState>>) -> Response {
    let sources: Vec<Json> = state
        .shown
        .sources
        .iter()
        .map(|id| {
            json!({
                "id": id,
                "connected": state.readiness.is_source_connected(id),
                "last_error": state.readiness.source_error(id),
            })
        })
        .collect();
    let plugins: Vec<Json> = state
        .shown
        .plugins
        .iter()
        .map(|name| plugin_json(&state, name))
        .collect();
    json_response(&json!({
        "armed": state.control.is_armed(),
        "sources": sources,
        "plugins": plugins,
        "unmet": state.readiness.unmet(),
    }))
}

/// Plugin `name` as `/api/status` shows it: its status object's `state`, `last_fault` and
/// `failures` (what OPC UA shows) and its call counters.
fn plugin_json(state: &AdminState, name: &str) -> Json {
    let model = state.twin.model();
    let path = crate::twin::spec::plugin_status_path(name);
    let value = |property: &str| {
        let sample = model
            .property_of(&path, property)
            .map(|id| state.twin.sample(id));
        value_json(sample.as_ref().and_then(|s| s.value.as_ref()))
    };
    let labels = crate::telemetry::metrics::PluginLabels {
        plugin: name.to_owned(),
    };
    let plugins = &state.metrics.plugins;
    json!({
        "name": name,
        "state": value("state"),
        "last_fault": value("last_fault"),
        "failures": value("failures"),
        "calls": plugins.calls.get_or_create(&labels).get(),
        "call_seconds": plugins.call_seconds.get_or_create(&labels).get(),
    })
}

pub(super) async fn control(State(state): State<Arc<AdminState>>) -> Response {
    let model = state.twin.model();
    let path = |id: PropertyId| model.property(id).path.clone();
    let interlocks: Vec<Json> = state
        .control
        .interlocks()
        .states(&state.twin)
        .into_iter()
        .map(|interlock| {
            let inputs: Vec<Json> = interlock
                .inputs
                .iter()
                .map(|(id, sample)| {
                    json!([
                        path(*id),
                        value_json(sample.value.as_ref()),
                        level(sample.quality.level),
                        reason_text(sample.quality.reason),
                    ])
                })
                .collect();
            json!({
                "name": interlock.name,
                "condition": interlock.condition,
                "applies_to": interlock.applies_to.iter().map(|&id| path(id)).collect::<Vec<_>>(),
                "holds": interlock.holds.is_ok(),
                "why": interlock.holds.err(),
                "inputs": inputs,
            })
        })
        .collect();
    let dir = state.audit_dir.clone();
    let audit = tokio::task::spawn_blocking(move || {
        if !dir.exists() {
            return Err("no audit log (no property is writable)".to_owned());
        }
        crate::control::audit::tail(&dir, AUDIT_SHOWN).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (records, error) = match audit {
        Ok(mut records) => {
            records.reverse();
            (records, None)
        }
        Err(why) => (Vec::new(), Some(why)),
    };
    json_response(&json!({
        "armed": state.control.is_armed(),
        "interlocks": interlocks,
        "audit": records,
        "audit_error": error,
    }))
}

/// The value of `key=` in a query string, as sent; `None` without one.
pub(super) fn param<'q>(query: Option<&'q str>, key: &str) -> Option<&'q str> {
    query?.split('&').find_map(|pair| {
        pair.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
    })
}

/// The value of `ids=` in a query string (`ids=1,2,3`; `%2C` for the commas is accepted);
/// empty without one.
fn ids_of(query: Option<&str>) -> String {
    param(query, "ids")
        .unwrap_or("")
        .replace("%2C", ",")
        .replace("%2c", ",")
}

/// The property ids of `ids` (`1,2,3`), each checked against the twin; an error names the first
/// that is not a property, or says there are more than [`MAX_STREAM_PROPERTIES`].
fn parse_ids(ids: &str, twin: &Twin) -> Result<Vec<PropertyId>, String> {
    let count = twin.model().properties().len();
    let mut out = Vec::new();
    for part in ids.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.parse::<u32>() {
            Ok(id) if (id as usize) < count => out.push(PropertyId(id)),
            _ => return Err(format!("`{part}` is not a property id of this twin")),
        }
        if out.len() > MAX_STREAM_PROPERTIES {
            return Err(format!(
                "a stream carries at most {MAX_STREAM_PROPERTIES} properties"
            ));
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// A value as JSON: numbers as numbers (NaN and infinities as the strings `NaN`, `inf`,
/// `-inf`), text as a string, booleans as booleans, no value as `null`.
pub(super) fn value_json(value: Option<&Value>) -> Json {
    match value {
        None => Json::Null,
        Some(Value::Bool(b)) => Json::Bool(*b),
        Some(Value::Int(i)) => json!(i),
        Some(Value::UInt(u)) => json!(u),
        Some(Value::Float(f)) if f.is_finite() => json!(f),
        Some(Value::Float(f)) => Json::String(f.to_string()),
        Some(Value::String(s)) => Json::String(s.to_string()),
    }
}

/// Milliseconds since the Unix epoch.
fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Why a quality is not good, as the page shows it: the reason's name (`no_connection`,
/// `stale`), with the device's exception code or the upstream status code; empty when good.
fn reason_text(reason: QualityReason) -> String {
    match reason {
        QualityReason::None => String::new(),
        QualityReason::DeviceException(code) => format!("device exception {code:#04x}"),
        QualityReason::Upstream(code) => format!("upstream status {code:#010x}"),
        other => other.as_str().to_owned(),
    }
}

/// A quality's level as the page shows it: `good`, `uncertain` or `bad`.
fn level(level: QualityLevel) -> &'static str {
    match level {
        QualityLevel::Good => "good",
        QualityLevel::Uncertain => "uncertain",
        QualityLevel::Bad => "bad",
    }
}

/// One property's sample as the page reads it: `[id, value, quality, reason, source time ms,
/// server time ms]`, quality `good`, `uncertain` or `bad`, source time `null` without one.
fn sample_json(id: PropertyId, sample: &Sample) -> Json {
    json!([
        id.0,
        value_json(sample.value.as_ref()),
        level(sample.quality.level),
        reason_text(sample.quality.reason),
        sample.source_time.map(millis),
        millis(sample.server_time),
    ])
}

/// One event: `{"snapshot": bool, "samples": [...]}` ([`sample_json`] each).
fn event(snapshot: bool, samples: impl Iterator<Item = Json>) -> Event {
    let samples: Vec<Json> = samples.collect();
    Event::default().data(json!({ "snapshot": snapshot, "samples": samples }).to_string())
}

/// The live values of `?ids=`: first a snapshot of all of them (also after every reconnect,
/// which is a new request), then their changes, at most one event per [`STREAM_INTERVAL`]
/// carrying the latest sample of each property that changed since the last one. 400 for an id
/// that is not a property or more than [`MAX_STREAM_PROPERTIES`]. The stream ends at shutdown;
/// a client that stops reading is dropped by `serve`'s write deadline, while the twin's
/// fan-out holds at most one pending change per property for it.
pub(super) async fn events(State(state): State<Arc<AdminState>>, uri: Uri) -> Response {
    let ids = match parse_ids(&ids_of(uri.query()), &state.twin) {
        Ok(ids) => ids,
        Err(why) => return (StatusCode::BAD_REQUEST, why + "\n").into_response(),
    };
    // Subscribed before the snapshot is read: a change in between comes again, never lost.
    let subscription = (!ids.is_empty()).then(|| {
        state
            .twin
            .subscribe(Filter::Properties(ids.clone()), STREAM_QUEUE)
    });
    let snapshot = state.twin.samples(&ids);
    let first = event(
        true,
        ids.iter().zip(&snapshot).map(|(&id, s)| sample_json(id, s)),
    )
    .retry(RECONNECT_AFTER);
    let stop = state.streams.clone();
    let changes = futures::stream::unfold(
        (subscription, stop, Vec::new(), None::<tokio::time::Instant>),
        |(mut subscription, stop, mut buffer, last)| async move {
            let subscription_ref = subscription.as_mut()?;
            if let Some(last) = last {
                tokio::select! {
                    () = stop.cancelled() => return None,
                    () = tokio::time::sleep_until(last + STREAM_INTERVAL) => {}
                }
            }
            buffer.clear();
            tokio::select! {
                () = stop.cancelled() => return None,
                _ = subscription_ref.recv(&mut buffer) => {}
            }
            let mut latest: IndexMap<PropertyId, &Sample> = IndexMap::with_capacity(buffer.len());
            for change in &buffer {
                latest.insert(change.property, &change.sample);
            }
            let event = event(false, latest.iter().map(|(&id, s)| sample_json(id, s)));
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (
                    subscription,
                    stop,
                    buffer,
                    Some(tokio::time::Instant::now()),
                ),
            ))
        },
    );
    let stream =
        futures::StreamExt::chain(futures::stream::once(async move { Ok(first) }), changes);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    response.extensions_mut().insert(Streaming);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualities_read_as_the_page_shows_them() {
        let sample = Sample {
            value: Some(Value::Float(f64::NAN)),
            quality: crate::twin::Quality::bad(QualityReason::DeviceException(4)),
            source_time: None,
            server_time: UNIX_EPOCH + Duration::from_millis(1500),
        };
        assert_eq!(
            sample_json(PropertyId(7), &sample).to_string(),
            r#"[7,"NaN","bad","device exception 0x04",null,1500]"#
        );
        assert_eq!(reason_text(QualityReason::Stale), "stale");
        assert_eq!(reason_text(QualityReason::None), "");
    }
}
