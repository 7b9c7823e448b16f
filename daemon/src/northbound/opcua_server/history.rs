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
//!   added, each `Bad_BoundNotFound` (with that time) when there is none; bounds are not counted
//!   against `NumValuesPerNode`. No value in the range: `Good_NoData`. A recorded loss (a
//!   change-log gap) is a value with `Bad_DataLost` at its time.
//! - **ReadAtTimeDetails** (§6.5.5): per requested time, the value stored at exactly it, else
//!   one interpolated from the bounding values (simple bounds, §3.1.7: the nearest raw values
//!   whatever their quality; `UseSimpleBounds = false` is served the same way): stepped variables
//!   take the earlier value, sloped ones the straight line between the two (Good and the
//!   Interpolated bit when both are Good, Uncertain_DataSubNormal otherwise; the earlier value,
//!   Uncertain, past the last one); `Bad_NoData` before the first value.
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
use crate::twin::{DataType, Value};

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
        // A backward read's `end` is exclusive below; `collect` reads down to `end + 1`.
        let points = collect(
            historian,
            series,
            state.next,
            state.skip,
            end_at,
            state.forward,
            state.limit,
        )?;
        let more = points.len() > state.limit;
        let page = &points[..points.len().min(state.limit)];
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
            let value = at_time(historian, series, stepped, t, timestamps)?;
            values.push(value);
        }
        node.set_result(HistoryData {
            data_values: Some(values),
        });
        node.set_status(StatusCode::Good);
    }
    Ok(())
}

fn at_time(
    historian: &Historian,
    series: u32,
    stepped: bool,
    t: i64,
    timestamps: TimestampsToReturn,
) -> Result<DataValue, StatusCode> {
    let failed = |_| StatusCode::BadHistoryOperationInvalid;
    let Some(before) = historian.at_or_before(series, t).map_err(failed)? else {
        return Ok(status_value(StatusCode::BadNoData, t, timestamps));
    };
    if before.time == t {
        return Ok(sample_value(&before, timestamps));
    }
    let after = if stepped {
        None
    } else {
        historian.at_or_after(series, t).map_err(failed)?
    };
    let good = |s: &Sample| s.quality.level == crate::twin::QualityLevel::Good;
    let interpolated = |base: StatusCode, value: Option<Value>| {
        let mut dv = DataValue {
            value: Some(value.as_ref().map_or(
                opcua::types::Variant::Empty,
                crate::opcua_values::to_variant,
            )),
            status: Some(StatusCode::from(base.bits() | INTERPOLATED)),
            ..Default::default()
        };
        stamp(&mut dv, t, t, timestamps);
        dv
    };
    let uncertain = StatusCode::UncertainDataSubNormal;
    Ok(match after {
        _ if stepped => interpolated(
            if good(&before) {
                StatusCode::Good
            } else {
                uncertain
            },
            before.value,
        ),
        None => interpolated(uncertain, before.value),
        Some(after) => {
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
                    let status = if good(&before) && good(&after) {
                        StatusCode::Good
                    } else {
                        uncertain
                    };
                    interpolated(status, Some(value))
                }
                _ => interpolated(uncertain, before.value.clone()),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_times_and_micros_convert_both_ways() {
        let us = 1_765_000_000_123_456i64;
        assert_eq!(micros_of(&date_time_of(us)), Some(us));
        assert_eq!(micros_of(&DateTime::null()), None);
    }
}
