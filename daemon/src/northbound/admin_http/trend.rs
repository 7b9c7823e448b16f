//! The web view's trends: a property's history, decimated on the server to what a chart of
//! `width` pixel columns can draw (issue #31, `docs/webview.md`).
//!
//! `GET /api/trend?property=<id>&from=<ms>&to=<ms>&width=<columns>` → JSON
//! `{"history": true, "property", "from", "to", "width", "t": [ms], "min": [number | null],
//! "max": [number | null]}`: the range `from..to` (milliseconds since the Unix epoch; default
//! the last hour up to now) cut into `width` columns (default 600, at most [`MAX_WIDTH`]); each
//! column that holds values gives one entry at its first value's time with the smallest and the
//! largest value it holds, and each column that holds a break (a change-log gap the historian
//! recorded, a bad sample, a sample without a number) one entry at the break's time with `null`
//! for both: so an answer has at most `2 × width` entries however many samples the range
//! holds, keeps every column's extremes, and a gap stays a gap. A value held from before `from`
//! (the historian's bounding value) is the first entry, at `from`. `{"history": false}` when
//! `[history]` does not run or the property is not historized (the page then charts the values
//! it has seen). 400 for a parameter out of range (a span over [`MAX_SPAN`]), 500 when the
//! historian cannot read its files.
//!
//! The historian is read one [`READ_SLICE`] at a time and folded into the columns as it is read,
//! so a request holds at most one slice's samples, never a day's.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AdminState;
use super::webview::{json_response, param};
use crate::history::{Historian, Point};
use crate::twin::{PropertyId, QualityLevel, Value};

/// Most columns a trend may ask for (a wide screen's pixels).
pub const MAX_WIDTH: usize = 4000;

/// Columns when the request names none.
pub const DEFAULT_WIDTH: usize = 600;

/// The longest range one request may cover.
pub const MAX_SPAN: Duration = Duration::from_secs(7 * 24 * 3600);

/// The range when the request names none: the last hour.
pub const DEFAULT_SPAN: Duration = Duration::from_secs(3600);

/// How much of the historian one read covers (µs): what a request holds in memory at once.
const READ_SLICE: i64 = 3_600_000_000;

/// A decimated trend: entries in time order, `t` in ms since the Unix epoch; `min[i]` and
/// `max[i]` both `None` for a break.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// Each entry's time, ms since the Unix epoch.
    pub t: Vec<i64>,
    /// Each entry's smallest value; `None` for a break.
    pub min: Vec<Option<f64>>,
    /// Each entry's largest value; `None` for a break.
    pub max: Vec<Option<f64>>,
}

/// What one column has seen so far.
#[derive(Debug, Clone, Copy)]
struct Column {
    index: usize,
    /// (time of its first value µs, smallest, largest).
    values: Option<(i64, f64, f64)>,
    /// Time of its first break, µs.
    first_break: Option<i64>,
}

/// Folds points, in time order, into at most two entries per column of `from..to` (µs).
#[derive(Debug)]
pub struct Decimator {
    from: i64,
    to: i64,
    width: usize,
    current: Option<Column>,
    out: Columns,
}

impl Decimator {
    /// Columns of `from..to` (µs, `from < to`), `width` of them (≥ 1).
    pub fn new(from: i64, to: i64, width: usize) -> Self {
        Self {
            from,
            to,
            width: width.max(1),
            current: None,
            out: Columns::default(),
        }
    }

    /// Adds the point at `time` (µs): a value, or `None` for a break (a gap, a bad sample, no
    /// number). Points must come in time order; those outside `from..to` are ignored.
    pub fn push(&mut self, time: i64, value: Option<f64>) {
        if time < self.from || time >= self.to {
            return;
        }
        let offset = i128::from(time - self.from) * self.width as i128;
        let index = (offset / i128::from(self.to - self.from)) as usize;
        let index = index.min(self.width - 1);
        if self.current.is_some_and(|c| c.index != index) {
            self.flush();
        }
        let column = self.current.get_or_insert(Column {
            index,
            values: None,
            first_break: None,
        });
        match value {
            Some(v) => {
                column.values = Some(match column.values {
                    None => (time, v, v),
                    Some((first, min, max)) => (first, min.min(v), max.max(v)),
                });
            }
            None => {
                column.first_break.get_or_insert(time);
            }
        }
    }

    fn flush(&mut self) {
        let Some(column) = self.current.take() else {
            return;
        };
        let mut entries: Vec<(i64, Option<f64>, Option<f64>)> = Vec::with_capacity(2);
        if let Some((time, min, max)) = column.values {
            entries.push((time, Some(min), Some(max)));
        }
        if let Some(time) = column.first_break {
            entries.push((time, None, None));
        }
        entries.sort_by_key(|e| e.0);
        for (time, min, max) in entries {
            self.out.t.push(time.div_euclid(1000));
            self.out.min.push(min);
            self.out.max.push(max);
        }
    }

    /// The entries.
    pub fn finish(mut self) -> Columns {
        self.flush();
        self.out
    }
}

/// A history point as the chart sees it: a number, or `None` for a break (a recorded gap, a bad
/// sample, no value, text, not finite). Uncertain values are drawn.
fn number(point: &Point) -> Option<f64> {
    let Point::Sample(sample) = point else {
        return None;
    };
    if sample.quality.level == QualityLevel::Bad {
        return None;
    }
    let value = match sample.value.as_ref()? {
        Value::Float(f) => *f,
        Value::Int(i) => *i as f64,
        Value::UInt(u) => *u as f64,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(_) => return None,
    };
    value.is_finite().then_some(value)
}

/// Reads `series` over `from..to` (µs) slice by slice into `width` columns, starting with the
/// value held at `from` when there is one. Blocking file I/O.
///
/// Errors: the historian cannot read its files.
fn read(
    historian: &Historian,
    series: u32,
    from: i64,
    to: i64,
    width: usize,
) -> Result<Columns, String> {
    let mut columns = Decimator::new(from, to, width);
    let held = historian
        .at_or_before(series, from)
        .map_err(|e| e.to_string())?;
    if let Some(held) = held.filter(|s| s.time < from) {
        columns.push(from, number(&Point::Sample(held)));
    }
    let mut start = from;
    while start < to {
        let end = start.saturating_add(READ_SLICE).min(to);
        for point in historian
            .read(series, start..end)
            .map_err(|e| e.to_string())?
        {
            columns.push(point.time(), number(&point));
        }
        start = end;
    }
    Ok(columns.finish())
}

/// A query parameter as a number; `Ok(None)` when absent.
fn number_param<T: std::str::FromStr>(query: Option<&str>, key: &str) -> Result<Option<T>, String> {
    param(query, key)
        .map(|v| {
            v.parse()
                .map_err(|_| format!("`{key}={v}` is not a number"))
        })
        .transpose()
}

fn bad_request(why: String) -> Response {
    (StatusCode::BAD_REQUEST, why + "\n").into_response()
}

pub(super) async fn trend(State(state): State<Arc<AdminState>>, uri: Uri) -> Response {
    let query = uri.query();
    let property = match number_param::<u32>(query, "property") {
        Ok(Some(id)) if (id as usize) < state.twin.model().properties().len() => PropertyId(id),
        Ok(_) => return bad_request("`property` names no property of this twin".to_owned()),
        Err(why) => return bad_request(why),
    };
    let now = crate::history::micros(SystemTime::now()).div_euclid(1000);
    let (to, from, width) = match (
        number_param::<i64>(query, "to"),
        number_param::<i64>(query, "from"),
        number_param::<usize>(query, "width"),
    ) {
        (Ok(to), Ok(from), Ok(width)) => {
            let to = to.unwrap_or(now);
            let from = from.unwrap_or(to - DEFAULT_SPAN.as_millis() as i64);
            (to, from, width.unwrap_or(DEFAULT_WIDTH))
        }
        (Err(why), _, _) | (_, Err(why), _) | (_, _, Err(why)) => return bad_request(why),
    };
    if from >= to || to - from > MAX_SPAN.as_millis() as i64 {
        return bad_request(format!(
            "`from` must be before `to`, at most {} h before it",
            MAX_SPAN.as_secs() / 3600
        ));
    }
    if !(1..=MAX_WIDTH).contains(&width) {
        return bad_request(format!("`width` must be 1 to {MAX_WIDTH}"));
    }
    let Some((historian, series)) = state
        .shown
        .history
        .as_ref()
        .and_then(|h| Some((h.clone(), h.series_of(property)?)))
    else {
        return json_response(&json!({ "history": false }));
    };
    let (from_us, to_us) = (from.saturating_mul(1000), to.saturating_mul(1000));
    let read = tokio::task::spawn_blocking(move || read(&historian, series, from_us, to_us, width))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match read {
        Ok(columns) => json_response(&json!({
            "history": true,
            "property": property.0,
            "from": from,
            "to": to,
            "width": width,
            "t": columns.t,
            "min": columns.min,
            "max": columns.max,
        })),
        Err(why) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("history cannot be read: {why}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A day of samples, one a second, cut into 500 columns: at most two entries per column,
    /// each column's smallest and largest value kept, and an hour without values (a break at
    /// its start) stays a gap.
    #[test]
    fn a_day_decimates_to_its_columns_keeping_extremes_and_gaps() {
        const DAY: i64 = 86_400;
        let from = 1_700_000_000 * 1_000_000i64;
        let to = from + DAY * 1_000_000;
        let width = 500;
        // A saw with a spike: value = second % 97, and 1000.0 at second 40 000.
        let value = |s: i64| if s == 40_000 { 1000.0 } else { (s % 97) as f64 };
        let (gap_from, gap_to) = (50_000, 53_600);
        let mut decimator = Decimator::new(from, to, width);
        let mut expected: Vec<Option<(f64, f64)>> = vec![None; width];
        for s in 0..DAY {
            let time = from + s * 1_000_000;
            let column = (s * width as i64 / DAY) as usize;
            if s == gap_from {
                decimator.push(time, None);
            } else if !(gap_from..gap_to).contains(&s) {
                decimator.push(time, Some(value(s)));
                let v = value(s);
                expected[column] = Some(match expected[column] {
                    None => (v, v),
                    Some((min, max)) => (min.min(v), max.max(v)),
                });
            }
        }
        let columns = decimator.finish();
        assert!(columns.t.len() <= 2 * width, "{} entries", columns.t.len());
        assert!(columns.t.windows(2).all(|w| w[0] <= w[1]), "in time order");
        let mut seen: Vec<Option<(f64, f64)>> = vec![None; width];
        let mut breaks = Vec::new();
        for i in 0..columns.t.len() {
            let column = ((columns.t[i] * 1000 - from) * width as i64 / (to - from)) as usize;
            match (columns.min[i], columns.max[i]) {
                (Some(min), Some(max)) => {
                    assert!(seen[column].is_none(), "column {column} twice");
                    seen[column] = Some((min, max));
                }
                (None, None) => breaks.push(columns.t[i]),
                other => panic!("half an entry: {other:?}"),
            }
        }
        assert_eq!(seen, expected);
        assert!(seen.iter().any(|c| c.is_some_and(|(_, max)| max == 1000.0)));
        assert_eq!(breaks, [(from + gap_from * 1_000_000) / 1000]);
        // The gap's columns hold nothing: no line is drawn across them.
        let gap_columns = (gap_from * width as i64 / DAY + 1)..(gap_to * width as i64 / DAY);
        assert!(!gap_columns.is_empty());
        for column in gap_columns {
            assert_eq!(seen[column as usize], None, "column {column}");
        }
    }
}
