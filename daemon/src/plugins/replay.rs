//! Replay: a plugin run over a recorded change stream, for plugin authors
//! (`twinloom plugin test <component> --replay <file>`). The same component, settings, instance
//! name and records give byte-identical output: the plugin's clocks answer the recorded times and
//! its random source is seeded from the instance name (see [`super::wasm`]).
//!
//! A native library (an ELF file, built with `plugin build --native`) replays too, through the
//! native host. Nothing virtualises its clocks or random source, so its output repeats only when
//! it takes time from the call (`now_ms`, the record times) as a plugin should; the same source
//! built both ways then prints the same lines.
//!
//! The record format is JSON lines, one change per line, times not decreasing:
//!
//! ```text
//! {"time_ms": 1700000000000, "property": "site/pump1/vibration_rms", "value": 2.1, "quality": "good"}
//! {"time_ms": 1700000000500, "property": "site/pump1/vibration_rms", "value": null, "quality": "bad"}
//! ```
//!
//! `time_ms` is the change's source time in milliseconds since the Unix epoch; `value` the value
//! in engineering units (booleans 0 / 1; `null` when there is none, passed as NaN); `quality`
//! `good` (the default), `uncertain` or `bad`. Blank lines and lines starting with `#` are
//! skipped. The plugin's inputs are the properties of the file in the order they first appear.
//!
//! Calls: the records from one record's time up to (not including) that time plus
//! `min_interval` make one `on-changes` call at the last one's time (with `min_interval` 0, the
//! records of one time); with a `tick`, `on-tick` runs every tick from the first record's time,
//! before the changes of the same time. Proposals are not written anywhere: each is answered
//! `shadow` in the next call (or `refused("writable-list")` for an index outside the writable
//! list); the control gate's other rules do not run.
//!
//! Output, one JSON line per call: `time_ms`, `call` (`on-changes` / `on-tick`), `values` (owned
//! property, value, quality) and `proposals` (writable property, value, reason); a fault ends the
//! replay with a line carrying `fault`.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::contract::{
    ChangeBatch, DataType, Limits, Outcome, Outputs, Properties, ProposalOutcome, Quality,
    Setpoint, WritableProperty, quality_byte, quality_of_byte, reason,
};
use super::native::NativeHost;
use super::runtime::{PluginInstance, PluginRuntime};
use super::wasm::WasmHost;

/// One recorded change.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Source time, milliseconds since the Unix epoch.
    pub time_ms: i64,
    /// Full property path.
    pub property: String,
    /// Value in engineering units; `None` when there is none.
    pub value: Option<f64>,
    /// `good`, `uncertain` or `bad`.
    #[serde(default = "good")]
    pub quality: String,
}

fn good() -> String {
    "good".into()
}

/// Reads a JSON-lines record file.
///
/// Errors: a line that is not a record, an unknown quality, or a time earlier than the line
/// before; the message names the line.
pub fn read_records(text: &str) -> anyhow::Result<Vec<Record>> {
    let mut records: Vec<Record> = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let record: Record =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("line {}: {e}", number + 1))?;
        if !matches!(record.quality.as_str(), "good" | "uncertain" | "bad") {
            anyhow::bail!(
                "line {}: quality `{}` is not good, uncertain or bad",
                number + 1,
                record.quality
            );
        }
        if records.last().is_some_and(|r| r.time_ms > record.time_ms) {
            anyhow::bail!("line {}: time_ms goes back in time", number + 1);
        }
        records.push(record);
    }
    Ok(records)
}

/// What a replay runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// The instance name (seeds its random source).
    pub name: String,
    /// The plugin's settings, TOML text (its `config` table).
    pub settings: String,
    /// Owned properties, in index order.
    pub owned: Vec<String>,
    /// Writable properties, in index order.
    pub writable: Vec<WritableProperty>,
    /// Period of `on-tick`; none without.
    pub tick: Option<Duration>,
    /// Changes within this much of a batch's first record go into one call.
    pub min_interval: Duration,
}

fn quality_name(byte: u8) -> &'static str {
    match quality_of_byte(byte) {
        Quality::Good => "good",
        Quality::Uncertain => "uncertain",
        Quality::Bad => "bad",
    }
}

fn setpoint_json(value: &Setpoint) -> serde_json::Value {
    match value {
        Setpoint::Boolean(b) => json!({ "boolean": b }),
        Setpoint::Integer(i) => json!({ "integer": i }),
        Setpoint::Float(f) => json!({ "float": f }),
    }
}

/// One call's outputs as a JSON line, and the outcomes its proposals get in the next call.
fn report(
    time_ms: i64,
    call: &str,
    outputs: &Outputs,
    options: &ReplayOptions,
    next: &mut u64,
) -> (serde_json::Value, Vec<ProposalOutcome>) {
    let values: Vec<_> = outputs
        .values
        .indices
        .iter()
        .zip(&outputs.values.values)
        .zip(&outputs.values.qualities)
        .map(|((index, value), quality)| {
            json!({
                "property": options.owned.get(*index as usize),
                "value": value,
                "quality": quality_name(*quality),
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    let proposals: Vec<_> = outputs
        .proposals
        .iter()
        .map(|proposal| {
            let target = options.writable.get(proposal.index as usize);
            outcomes.push(ProposalOutcome {
                proposal: *next,
                index: proposal.index,
                outcome: match target {
                    Some(_) => Outcome::Shadow,
                    None => Outcome::Refused("writable-list".into()),
                },
            });
            *next += 1;
            json!({
                "property": target.map(|t| &t.path),
                "value": setpoint_json(&proposal.value),
                "reason": reason(outputs, proposal),
            })
        })
        .collect();
    let line = json!({
        "time_ms": time_ms,
        "call": call,
        "values": values,
        "proposals": proposals,
    });
    (line, outcomes)
}

/// Runs the component (or, for an ELF file, the native library) `bytes` over `records` as
/// `options` say, writing one JSON line per call to `out`.
///
/// Errors: the plugin does not load or its `init` refuses the settings; a call faults (the
/// fault is written as the last line first); `out` cannot be written.
pub fn replay(
    bytes: &[u8],
    records: &[Record],
    options: &ReplayOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    if bytes.starts_with(b"\x7fELF") {
        // The library's copy goes to a scratch state folder, removed afterwards.
        let state = tempfile::tempdir()?;
        return replay_on(&NativeHost::new(state.path()), bytes, records, options, out);
    }
    replay_on(&WasmHost::new(false)?, bytes, records, options, out)
}

/// [`replay`] on `runtime`.
fn replay_on<R: PluginRuntime>(
    runtime: &R,
    bytes: &[u8],
    records: &[Record],
    options: &ReplayOptions,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let component = runtime.load(bytes)?;
    let limits = Limits {
        // Not real time: only a plugin that loops without end is stopped.
        deadline: Duration::from_secs(10),
        ..Limits::default()
    };
    let mut instance = runtime.instantiate(&options.name, &component, limits)?;
    let mut inputs: Vec<String> = Vec::new();
    for record in records {
        if !inputs.contains(&record.property) {
            inputs.push(record.property.clone());
        }
    }
    let properties = Properties {
        inputs: inputs.clone(),
        owned: options.owned.clone(),
        writable: options.writable.clone(),
    };
    let start = records.first().map_or(0, |r| r.time_ms);
    instance
        .init(start, &options.settings, &properties)?
        .map_err(|refusal| anyhow::anyhow!("init refused the settings: {refusal}"))?;
    let tick_ms = options.tick.map(|t| (t.as_millis() as i64).max(1));
    let window = options.min_interval.as_millis() as i64;
    let end = records.last().map_or(start, |r| r.time_ms);
    let mut next_tick = tick_ms.map(|t| start + t);
    let mut outcomes: Vec<ProposalOutcome> = Vec::new();
    let mut numbered = 0u64;
    let mut outputs = Outputs::default();
    let mut i = 0;
    loop {
        let batch_at = records.get(i).map(|r| r.time_ms);
        let tick_due = match (next_tick, batch_at) {
            (Some(t), Some(b)) => t <= b,
            (Some(t), None) => t <= end,
            (None, _) => false,
        };
        let (time_ms, call, result) = if tick_due {
            let t = next_tick.unwrap_or(end);
            next_tick = tick_ms.map(|p| t + p);
            let given: Arc<[ProposalOutcome]> = std::mem::take(&mut outcomes).into();
            (t, "on-tick", instance.on_tick(t, &given, &mut outputs))
        } else if let Some(first) = batch_at {
            let mut batch = ChangeBatch {
                properties: Vec::new(),
                values: Vec::new(),
                qualities: Vec::new(),
                source_times_ms: Vec::new(),
            };
            let mut last = first;
            while let Some(record) = records.get(i)
                && (record.time_ms == first || record.time_ms < first + window)
            {
                let index = inputs
                    .iter()
                    .position(|p| *p == record.property)
                    .unwrap_or(0);
                batch.properties.push(index as u32);
                batch.values.push(record.value.unwrap_or(f64::NAN));
                batch
                    .qualities
                    .push(quality_byte(match record.quality.as_str() {
                        "good" => Quality::Good,
                        "uncertain" => Quality::Uncertain,
                        _ => Quality::Bad,
                    }));
                batch.source_times_ms.push(record.time_ms);
                last = record.time_ms;
                i += 1;
            }
            let given: Arc<[ProposalOutcome]> = std::mem::take(&mut outcomes).into();
            (
                last,
                "on-changes",
                instance.on_changes(last, &Arc::new(batch), &given, &mut outputs),
            )
        } else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                let (line, next) = report(time_ms, call, &outputs, options, &mut numbered);
                outcomes = next;
                writeln!(out, "{line}")?;
            }
            Err(fault) => {
                let line = json!({ "time_ms": time_ms, "call": call, "fault": fault.to_string() });
                writeln!(out, "{line}")?;
                anyhow::bail!("the plugin faulted at {time_ms}: {fault}");
            }
        }
    }
}

/// A `--writes` argument: `path` (a float setpoint) or `path:boolean|integer|float`.
///
/// Errors: an unknown data type.
pub fn writable_arg(text: &str) -> Result<WritableProperty, String> {
    let (path, data_type) = match text.rsplit_once(':') {
        Some((path, "boolean")) => (path, DataType::Boolean),
        Some((path, "integer")) => (path, DataType::Integer),
        Some((path, "float")) => (path, DataType::Float),
        Some((_, other)) => {
            return Err(format!(
                "unknown data type `{other}` (boolean, integer or float)"
            ));
        }
        None => (text, DataType::Float),
    };
    Ok(WritableProperty {
        path: path.to_owned(),
        data_type,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_with_their_line_numbers_in_errors() {
        let text = "# a comment\n\n{\"time_ms\": 5, \"property\": \"a/b\", \"value\": 1.5}\n{\"time_ms\": 6, \"property\": \"a/c\", \"value\": null, \"quality\": \"bad\"}\n";
        let records = read_records(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].quality, "good");
        assert_eq!(records[1].value, None);
        let back = "{\"time_ms\": 5, \"property\": \"a\", \"value\": 1}\n{\"time_ms\": 4, \"property\": \"a\", \"value\": 1}";
        assert!(
            read_records(back)
                .unwrap_err()
                .to_string()
                .contains("line 2")
        );
        let odd = "{\"time_ms\": 5, \"property\": \"a\", \"value\": 1, \"quality\": \"so-so\"}";
        assert!(read_records(odd).unwrap_err().to_string().contains("so-so"));
        assert_eq!(
            writable_arg("t/heater:boolean").unwrap().data_type,
            DataType::Boolean
        );
        assert_eq!(writable_arg("t/heater").unwrap().data_type, DataType::Float);
        assert!(writable_arg("t/heater:text").is_err());
    }
}
