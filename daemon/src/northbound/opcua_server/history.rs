//! OPC UA HistoryRead of the twin's variables from the historian (OPC UA Part 11).
//!
//! - **ReadRawModifiedDetails** (§6.5.3; `IsReadModified` false, true answers
//!   `Bad_HistoryOperationUnsupported`): two of start, end and `NumValuesPerNode` must be given
//!   (else `Bad_InvalidTimestampArgument`). Start before end reads forward over
//!   `start <= t < end`; start after end reads backward over `end < t <= start`; equal times read
//!   the values at exactly that time; only a start reads forward from it, only an end reads
//!   backward from it (included). At most `NumValuesPerNode` values per answer (0: no limit) and
//!   never more than [`MAX_RETURN_DATA_VALUES`]: the rest comes with a continuation point (held by
//!   the session, released with `releaseContinuationPoints` or when the session closes).
//!   `ReturnBounds`: the value at or before the first time and the one at or after the last are
//!   added, each `Bad_BoundNotFound` (with that time) when there is none; bounds count against
//!   `NumValuesPerNode` (§6.5.3.2), the end bound on a page of its own when the values fill the
//!   last one. No value in the range: `Good_NoData`. A recorded loss (a
//!   change-log gap) is a value with `Bad_DataLost` at its time.
//! - **ReadAtTimeDetails** (§6.5.5): per requested time, the value stored at exactly it, else
//!   one interpolated from the bounding values ([`bounding_value`]): with `UseSimpleBounds` the
//!   nearest raw values whatever their quality (Part 13 §3.1.9: a Bad value before gives
//!   `Bad_NoData`, a Bad one after the earlier value, Uncertain), without it the nearest Good
//!   ones (Part 13 §3.1.8: Bad, Uncertain — `TreatUncertainAsBad` — and recorded losses
//!   skipped, the answer then Uncertain_DataSubNormal). Stepped variables take the earlier
//!   value, sloped ones the straight line between the two (Good and the Interpolated bit when
//!   both are Good and nothing was skipped, Uncertain_DataSubNormal otherwise; the earlier
//!   value, Uncertain, past the last one); `Bad_NoData` before the first value.
//! - Stepped (`HistoricalDataConfiguration.Stepped`): Boolean, String and integer properties
//!   without an engineering unit (states, modes, counts); floats and integers with a unit are
//!   sloped.

use opcua::server::ContinuationPoint;
use opcua::server::node_manager::HistoryNode;
use opcua::types::{
    DataValue, DateTime, HistoryData, ReadAtTimeDetails, ReadRawModifiedDetails, StatusCode,
    TimestampsToReturn,
};

use crate::history::{Historian, Point, Sample, micros};
use crate::twin::model::PropertyDecl;
use crate::twin::{DataType, QualityLevel, Value};

/// Most values one HistoryRead answer holds per node (`MaxReturnDataValues`, Part 11 §5.4.2).
pub const MAX_RETURN_DATA_VALUES: usize = 10_000;

/// Ticks (100 ns) from 1601-01-01 to the Unix epoch.
const TICKS_1601_TO_1970: i64 = 116_444_736_000_000_000;

/// OPC UA status bits of an interpolated value: InfoType DataValue and HistorianBits
/// Interpolated (Part 4 §7.39.1, Part 11 §6.3.2).
const INTERPOLATED: u32 = 0x0400 | 0x0002;

/// Whether a property's history is stepped (see the module doc).
pub fn stepped(decl: &PropertyDecl) -> bool {
    match decl.data_type {
        DataType::Bool | DataType::String => true,
        DataType::Integer | DataType::Unsigned => decl.unit.is_none(),
        DataType::Float => false,
    }
}

/// µs since the Unix epoch of an OPC UA DateTime; `None` for the null (MinValue) time.
pub fn micros_of(time: &DateTime) -> Option<i64> {
    let ticks = i64::from(*time);
    (ticks > 0).then(|| (ticks - TICKS_1601_TO_1970) / 10)
}

/// The OPC UA DateTime of `us` µs since the Unix epoch.
pub fn date_time(us: i64) -> DateTime {
    date_time_of(us)
}

fn date_time_of(us: i64) -> DateTime {
    DateTime::from(TICKS_1601_TO_1970.saturating_add(us.saturating_mul(10)))
}

/// Where a raw read resumes (a continuation point's content).
#[derive(Debug, Clone)]
pub struct RawContinuation {
    series: u32,
    /// The next time to read from (inclusive), in the reading direction, µs.
    next: i64,
    /// Points at exactly `next` already returned.
    skip: usize,
    /// Where the range ends (exclusive), µs; `None`: open (now, or the start of the archive).
    end: Option<i64>,
    forward: bool,
    /// The end bound is still to be added.
    end_bound: bool,
    limit: usize,
}

/// The DataValue of a stored sample, with the timestamps asked for.
fn sample_value(sample: &Sample, timestamps: TimestampsToReturn) -> DataValue {
    let status = super::node_manager::status_code(sample.quality);
    let mut value = DataValue {
        value: Some(sample.value.as_ref().map_or(
            opcua::types::Variant::Empty,
            crate::opcua_values::to_variant,
        )),
        status: Some(status),
        ..Default::default()
    };
    stamp(&mut value, sample.time, sample.server_time, timestamps);
    value
}

fn status_value(status: StatusCode, time: i64, timestamps: TimestampsToReturn) -> DataValue {
    let mut value = DataValue {
        value: None,
        status: Some(status),
        ..Default::default()
    };
    stamp(&mut value, time, time, timestamps);
    value
}

fn stamp(value: &mut DataValue, source: i64, server: i64, timestamps: TimestampsToReturn) {
    if matches!(
        timestamps,
        TimestampsToReturn::Source | TimestampsToReturn::Both
    ) {
        value.source_timestamp = Some(date_time_of(source));
    }
    if matches!(
        timestamps,
        TimestampsToReturn::Server | TimestampsToReturn::Both
    ) {
        value.server_timestamp = Some(date_time_of(server));
    }
}

fn point_value(point: &Point, timestamps: TimestampsToReturn) -> DataValue {
    match point {
        Point::Sample(sample) => sample_value(sample, timestamps),
        Point::Lost { time } => status_value(StatusCode::BadDataLost, *time, timestamps),
    }
}

/// The far end of an open forward read: a little into the future (µs).
fn open_end() -> i64 {
    micros(std::time::SystemTime::now()).saturating_add(crate::history::FUTURE_TOLERANCE_US)
}

/// Reads up to `limit + 1` points from `next` in the reading direction (skipping `skip` at
/// exactly `next`), in windows growing from one hour, up to `end` (exclusive; forward) or down to
/// `end` (exclusive; backward).
fn collect(
    historian: &Historian,
    series: u32,
    next: i64,
    skip: usize,
    end: i64,
    forward: bool,
    limit: usize,
) -> Result<Vec<Point>, StatusCode> {
    let mut out: Vec<Point> = Vec::new();
    let mut width = 3_600_000_000i64;
    let mut from = next;
    let mut skipped = 0;
    loop {
        let done_range = if forward { from >= end } else { from <= end };
        if done_range || out.len() > limit {
            break;
        }
        let window = if forward {
            from..from.saturating_add(width).min(end)
        } else {
            from.saturating_sub(width).max(end.saturating_add(1))..from.saturating_add(1)
        };
        let mut points = historian
            .read(series, window.clone())
            .map_err(|_| StatusCode::BadHistoryOperationInvalid)?;
        if !forward {
            points.reverse();
        }
        for point in points {
            if point.time() == next && skipped < skip {
                skipped += 1;
                continue;
            }
            out.push(point);
        }
        from = if forward {
            window.end
        } else {
            window.start.saturating_sub(1)
        };
        width = width.saturating_mul(4);
    }
    Ok(out)
}

/// Serves ReadRawModifiedDetails for `nodes` (each already checked readable: a historized
/// variable the user may read history of). `series_of` names each node's series.
pub fn read_raw(
    historian: &Historian,
    details: &ReadRawModifiedDetails,
    nodes: &mut [&mut &mut HistoryNode],
    timestamps: TimestampsToReturn,
    series_of: impl Fn(&opcua::types::NodeId) -> Option<u32>,
) -> Result<(), StatusCode> {
    if details.is_read_modified {
        return Err(StatusCode::BadHistoryOperationUnsupported);
    }
    if timestamps == TimestampsToReturn::Neither {
        return Err(StatusCode::BadTimestampsToReturnInvalid);
    }
    let start = micros_of(&details.start_time);
    let end = micros_of(&details.end_time);
    let num = details.num_values_per_node as usize;
    let given = usize::from(start.is_some()) + usize::from(end.is_some()) + usize::from(num > 0);
    if given < 2 {
        return Err(StatusCode::BadInvalidTimestampArgument);
    }
    let limit = if num == 0 {
        MAX_RETURN_DATA_VALUES
    } else {
        num.min(MAX_RETURN_DATA_VALUES)
    };
    for node in nodes.iter_mut() {
        let resumed = match node.continuation_point() {
            Some(point) => match point.get::<RawContinuation>() {
                Some(c) => Some(c.clone()),
                None => {
                    node.set_status(StatusCode::BadContinuationPointInvalid);
                    continue;
                }
            },
            None => None,
        };
        let Some(series) = series_of(node.node_id()) else {
            node.set_status(StatusCode::BadHistoryOperationUnsupported);
            continue;
        };
        if resumed.as_ref().is_some_and(|c| c.series != series) {
            // A continuation point handed out for another node.
            node.set_status(StatusCode::BadContinuationPointInvalid);
            continue;
        }
        let mut values = Vec::new();
        let state = match resumed {
            Some(state) => state,
            None => {
                let (from, to, forward) = match (start, end) {
                    (Some(s), Some(e)) if s == e => (s, Some(s + 1), true),
                    (Some(s), Some(e)) if s < e => (s, Some(e), true),
                    (Some(s), Some(e)) => (s, Some(e), false),
                    (Some(s), None) => (s, None, true),
                    (None, Some(e)) => (e, None, false),
                    (None, None) => unreachable!("two of three are given"),
                };
                if details.return_bounds {
                    let exact = historian
                        .read(series, from..from + 1)
                        .map_err(|_| StatusCode::BadHistoryOperationInvalid)?
                        .iter()
                        .any(|p| matches!(p, Point::Sample(_)));
                    if !exact {
                        let bound = if forward {
                            historian.at_or_before(series, from)
                        } else {
                            historian.at_or_after(series, from)
                        }
                        .map_err(|_| StatusCode::BadHistoryOperationInvalid)?;
                        values.push(match bound {
                            Some(sample) => sample_value(&sample, timestamps),
                            None => status_value(StatusCode::BadBoundNotFound, from, timestamps),
                        });
                    }
                }
                RawContinuation {
                    series,
                    next: from,
                    skip: 0,
                    end: to,
                    forward,
                    end_bound: details.return_bounds && to.is_some(),
                    limit,
                }
            }
        };
        let end_at = state.end.unwrap_or_else(|| {
            if state.forward {
                open_end()
            } else {
                historian
                    .start_of_archive()
                    .unwrap_or(state.next)
                    .saturating_sub(crate::history::store::MAX_CHUNK_SPAN_US)
            }
        });
        // Bounds count against the limit (Part 11 §6.5.3.2): the start bound takes one place
        // of the first page, the end bound one of the last (a page of its own when the values
        // fill the one before).
        let room = state.limit.saturating_sub(values.len());
        // A backward read's `end` is exclusive below; `collect` reads down to `end + 1`.
        let points = collect(
            historian,
            series,
            state.next,
            state.skip,
            end_at,
            state.forward,
            room,
        )?;
        let more = points.len() > room;
        let page = &points[..points.len().min(room)];
        values.extend(page.iter().map(|p| point_value(p, timestamps)));
        if more {
            let last = page.last().map_or(state.next, Point::time);
            let same = page.iter().rev().take_while(|p| p.time() == last).count();
            let skip = if last == state.next {
                state.skip + same
            } else {
                same
            };
            node.set_next_continuation_point(Some(ContinuationPoint::new(Box::new(
                RawContinuation {
                    next: last,
                    skip,
                    ..state
                },
            ))));
        } else if state.end_bound && values.len() >= state.limit {
            // Only the end bound is left: the next page holds it (reading from the range's
            // end finds no more values).
            node.set_next_continuation_point(Some(ContinuationPoint::new(Box::new(
                RawContinuation {
                    next: end_at,
                    skip: 0,
                    ..state
                },
            ))));
        } else if state.end_bound {
            let bound_at = state.end.unwrap_or(end_at);
            let bound = if state.forward {
                historian.at_or_after(series, bound_at)
            } else {
                historian.at_or_before(series, bound_at)
            }
            .map_err(|_| StatusCode::BadHistoryOperationInvalid)?;
            values.push(match bound {
                Some(sample) => sample_value(&sample, timestamps),
                None => status_value(StatusCode::BadBoundNotFound, bound_at, timestamps),
            });
        }
        let status = if values.is_empty() {
            StatusCode::GoodNoData
        } else {
            StatusCode::Good
        };
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(status);
    }
    Ok(())
}

/// Serves ReadAtTimeDetails for `nodes`. `decl_of` names each node's series and whether it is
/// stepped.
pub fn read_at_time(
    historian: &Historian,
    details: &ReadAtTimeDetails,
    nodes: &mut [&mut &mut HistoryNode],
    timestamps: TimestampsToReturn,
    series_of: impl Fn(&opcua::types::NodeId) -> Option<(u32, bool)>,
) -> Result<(), StatusCode> {
    if timestamps == TimestampsToReturn::Neither {
        return Err(StatusCode::BadTimestampsToReturnInvalid);
    }
    let times = details.req_times.as_deref().unwrap_or_default();
    if times.is_empty() {
        return Err(StatusCode::BadInvalidTimestampArgument);
    }
    if times.len() > MAX_RETURN_DATA_VALUES {
        return Err(StatusCode::BadTooManyOperations);
    }
    for node in nodes.iter_mut() {
        let Some((series, stepped)) = series_of(node.node_id()) else {
            node.set_status(StatusCode::BadHistoryOperationUnsupported);
            continue;
        };
        let mut values = Vec::with_capacity(times.len());
        for time in times {
            let Some(t) = micros_of(time) else {
                values.push(DataValue {
                    status: Some(StatusCode::BadInvalidTimestampArgument),
                    ..Default::default()
                });
                continue;
            };
            let value = at_time(
                historian,
                series,
                stepped,
                details.use_simple_bounds,
                t,
                timestamps,
            )?;
            values.push(value);
        }
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(StatusCode::Good);
    }
    Ok(())
}

/// Whether a point counts as non-Bad for interpolated bounding values: Good only, since the
/// server's `AggregateConfiguration` says `TreatUncertainAsBad` (OPC UA Part 13 §3.1.7); a
/// recorded loss is Bad.
fn non_bad(point: &Point) -> bool {
    matches!(point, Point::Sample(s) if s.quality.level == QualityLevel::Good)
}

/// The raw values around a requested time (none stored at exactly it that the bounds accept)
/// that [`bounding_value`] needs.
#[derive(Debug, Clone, Default)]
pub struct Around {
    /// The nearest value before (simple bounds: any value; interpolated: the nearest non-Bad).
    pub before: Option<Point>,
    /// Values skipped to find `before` (interpolated bounds), the one at the time among them.
    pub before_skipped: bool,
    /// The nearest value after (sloped only), found like `before`.
    pub after: Option<Point>,
    /// Values skipped to find `after`.
    pub after_skipped: bool,
}

/// The value at time `t` (µs) interpolated from the raw values around it (OPC UA Part 11
/// §6.5.5; a value stored at exactly `t` is returned as stored, before this), with the bounding values
/// of Part 13 §3.1.9 (`simple`: the nearest values whatever their quality) or §3.1.8 (the
/// nearest non-Bad values, Bad and — `TreatUncertainAsBad` — Uncertain ones skipped), stepped
/// or sloped (§3.1.5, §3.1.6), extrapolated stepped past the last value
/// (`UseSlopedExtrapolation` false). Returns the status (with the Interpolated bit when
/// interpolated) and the value (`None` for Bad_NoData).
pub fn bounding_value(
    around: &Around,
    t: i64,
    stepped: bool,
    simple: bool,
) -> (StatusCode, Option<Value>) {
    let interpolated = |base: StatusCode| StatusCode::from(base.bits() | INTERPOLATED);
    let uncertain = interpolated(StatusCode::UncertainDataSubNormal);
    let no_data = (StatusCode::BadNoData, None);
    let Some(Point::Sample(before)) = &around.before else {
        // No value before (or, with simple bounds, a loss: Bad).
        return no_data;
    };
    let level = |s: &Sample| s.quality.level;
    if simple && level(before) == QualityLevel::Bad {
        return no_data;
    }
    let good_status = |worse: bool| {
        if worse {
            uncertain
        } else {
            interpolated(StatusCode::Good)
        }
    };
    let before_worse = level(before) != QualityLevel::Good || around.before_skipped;
    if stepped {
        return (good_status(before_worse), before.value.clone());
    }
    let after = match &around.after {
        Some(Point::Sample(after)) if !(simple && level(after) == QualityLevel::Bad) => after,
        // No value after (extrapolated, stepped) or, with simple bounds, a Bad one: the value
        // before, Uncertain (Part 13 §3.1.9, §5.4.3.4 "After End of Data").
        _ => return (uncertain, before.value.clone()),
    };
    let number = |v: &Option<Value>| match v {
        Some(Value::Float(f)) => Some(*f),
        Some(Value::Int(i)) => Some(*i as f64),
        Some(Value::UInt(u)) => Some(*u as f64),
        _ => None,
    };
    match (number(&before.value), number(&after.value)) {
        (Some(a), Some(b)) if after.time > before.time => {
            let f = (t - before.time) as f64 / (after.time - before.time) as f64;
            let y = a + (b - a) * f;
            let value = match before.value {
                Some(Value::Int(_)) => Value::Int(y.round() as i64),
                Some(Value::UInt(_)) => Value::UInt(y.round().max(0.0) as u64),
                _ => Value::Float(y),
            };
            let worse = before_worse || level(after) != QualityLevel::Good || around.after_skipped;
            (good_status(worse), Some(value))
        }
        _ => (uncertain, before.value.clone()),
    }
}

fn at_time(
    historian: &Historian,
    series: u32,
    stepped: bool,
    simple: bool,
    t: i64,
    timestamps: TimestampsToReturn,
) -> Result<DataValue, StatusCode> {
    let failed = |_| StatusCode::BadHistoryOperationInvalid;
    let accept = |p: &Point| simple || non_bad(p);
    let at = historian
        .read(series, t..t.saturating_add(1))
        .map_err(failed)?;
    match at.iter().find(|p| accept(p)) {
        Some(Point::Sample(sample)) => return Ok(sample_value(sample, timestamps)),
        Some(Point::Lost { .. }) => {
            return Ok(status_value(StatusCode::BadDataLost, t, timestamps));
        }
        None => {}
    }
    // Interpolated bounds: values at `t` that are not Good are skipped on both sides.
    let skipped_at = !at.is_empty();
    let mut around = Around::default();
    let (before, skipped) = historian
        .nearest(series, t, false, false, accept)
        .map_err(failed)?;
    around.before = before;
    around.before_skipped = skipped || skipped_at;
    if !stepped && around.before.is_some() {
        let (after, skipped) = historian
            .nearest(series, t, true, false, accept)
            .map_err(failed)?;
        around.after = after;
        around.after_skipped = skipped || skipped_at;
    }
    let (status, value) = bounding_value(&around, t, stepped, simple);
    let mut dv = DataValue {
        value: value
            .as_ref()
            .map(crate::opcua_values::to_variant)
            .or(Some(opcua::types::Variant::Empty)),
        status: Some(status),
        ..Default::default()
    };
    if status == StatusCode::BadNoData {
        dv.value = None;
    }
    stamp(&mut dv, t, t, timestamps);
    Ok(dv)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::twin::{Quality, QualityReason};

    fn at(time: i64, value: f64, quality: Quality) -> Option<Point> {
        Some(Point::Sample(Sample {
            time,
            server_time: time,
            value: Some(Value::Float(value)),
            quality,
            flagged: false,
        }))
    }

    /// (case, around, stepped, simple, status, value).
    type Case = (&'static str, Around, bool, bool, StatusCode, Option<f64>);

    /// OPC UA Part 13 §3.1.8 (interpolated) and §3.1.9 (simple) bounding values at t = 15
    /// between raw values at 10 and 20, table-driven: (case, around, stepped, simple, expected
    /// status without the info bits, value).
    #[test]
    fn bounding_values_follow_part_13() {
        let good = Quality::GOOD;
        let uncertain = Quality::uncertain(QualityReason::Stale);
        let bad = Quality::bad(QualityReason::Timeout);
        let around = |before, before_skipped, after, after_skipped| Around {
            before,
            before_skipped,
            after,
            after_skipped,
        };
        let cases: Vec<Case> = vec![
            (
                "sloped, both Good",
                around(at(10, 1.0, good), false, at(20, 2.0, good), false),
                false,
                true,
                StatusCode::Good,
                Some(1.5),
            ),
            (
                "sloped, both Good, interpolated",
                around(at(10, 1.0, good), false, at(20, 2.0, good), false),
                false,
                false,
                StatusCode::Good,
                Some(1.5),
            ),
            (
                "simple: Bad before",
                around(at(10, 1.0, bad), false, at(20, 2.0, good), false),
                false,
                true,
                StatusCode::BadNoData,
                None,
            ),
            (
                "simple: Uncertain before",
                around(at(10, 1.0, uncertain), false, at(20, 2.0, good), false),
                false,
                true,
                StatusCode::UncertainDataSubNormal,
                Some(1.5),
            ),
            (
                "simple: Bad after takes the value before",
                around(at(10, 1.0, good), false, at(20, 2.0, bad), false),
                false,
                true,
                StatusCode::UncertainDataSubNormal,
                Some(1.0),
            ),
            (
                "simple: a loss before",
                around(
                    Some(Point::Lost { time: 12 }),
                    false,
                    at(20, 2.0, good),
                    false,
                ),
                false,
                true,
                StatusCode::BadNoData,
                None,
            ),
            (
                "interpolated: Bad skipped before",
                around(at(10, 1.0, good), true, at(20, 2.0, good), false),
                false,
                false,
                StatusCode::UncertainDataSubNormal,
                Some(1.5),
            ),
            (
                "interpolated: Bad skipped after",
                around(at(10, 1.0, good), false, at(20, 2.0, good), true),
                false,
                false,
                StatusCode::UncertainDataSubNormal,
                Some(1.5),
            ),
            (
                "no value before",
                around(None, false, at(20, 2.0, good), false),
                false,
                false,
                StatusCode::BadNoData,
                None,
            ),
            (
                "no value after: extrapolated stepped",
                around(at(10, 1.0, good), false, None, false),
                false,
                false,
                StatusCode::UncertainDataSubNormal,
                Some(1.0),
            ),
            (
                "stepped, Good before",
                around(at(10, 1.0, good), false, None, false),
                true,
                true,
                StatusCode::Good,
                Some(1.0),
            ),
            (
                "stepped, simple, Bad before",
                around(at(10, 1.0, bad), false, None, false),
                true,
                true,
                StatusCode::BadNoData,
                None,
            ),
            (
                "stepped, interpolated, Bad skipped",
                around(at(10, 1.0, good), true, None, false),
                true,
                false,
                StatusCode::UncertainDataSubNormal,
                Some(1.0),
            ),
        ];
        for (case, around, stepped, simple, status, value) in cases {
            let (got, got_value) = bounding_value(&around, 15, stepped, simple);
            assert_eq!(StatusCode::from(got.bits() & 0xFFFF_0000), status, "{case}");
            assert_eq!(got_value, value.map(Value::Float), "{case}");
            if got.is_good() || got.is_uncertain() {
                assert_eq!(
                    got.bits() & INTERPOLATED,
                    INTERPOLATED,
                    "{case}: Interpolated bit"
                );
            }
        }
    }

    #[test]
    fn date_times_and_micros_convert_both_ways() {
        let us = 1_765_000_000_123_456i64;
        assert_eq!(micros_of(&date_time_of(us)), Some(us));
        assert_eq!(micros_of(&DateTime::null()), None);
    }
}
