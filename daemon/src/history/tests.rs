//! Historian tests: changes across chunk and file boundaries read back exactly (values,
//! qualities, times); a restart from an older cursor stores nothing twice; late samples in
//! order, too-old ones flagged; the history deadband. Each waits on the change log's offset
//! watch and the supervisor's drain, never on time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::change_log::ChangeLogConfig;
use crate::runtime::{Readiness, Supervisor};
use crate::telemetry::Metrics;
use crate::twin::{Quality, QualityReason, Reading, Twin};

fn twin_of(extra: &str) -> Arc<Twin> {
    let text = format!(
        "[history]\n\
         [[sources.modbus]]\nid = \"plc\"\ntcp = \"127.0.0.1:502\"\n\
         [[types]]\nname = \"M\"\nproperties = [{{ name = \"v\", data_type = \"float\", range = [-10.0, 10000.0] {extra} }}]\n\
         [[assets]]\npath = \"site/a\"\ntype = \"M\"\nsource = \"plc\"\nbindings.v = {{ table = \"holding\", address = 0 }}\n\
         [[assets]]\npath = \"site/b\"\ntype = \"M\"\nsource = \"plc\"\nbindings.v = {{ table = \"holding\", address = 2 }}\n"
    );
    let config = crate::config::parse(Path::new("t.toml"), &text).expect("valid config");
    Arc::new(Twin::new(Arc::new(config.twin_model()), &config.twin))
}

struct Running {
    log: ChangeLog,
    history: Historian,
    supervisor: Supervisor,
}

fn start_both(twin: &Arc<Twin>, state: &Path) -> Running {
    let supervisor = Supervisor::new();
    let metrics = Metrics::new();
    let readiness = Readiness::default();
    let context = ComponentContext {
        twin,
        supervisor: &supervisor,
        metrics: &metrics,
        readiness: &readiness,
        state_dir: state,
    };
    let log = crate::change_log::start(
        &ChangeLogConfig {
            commit_window: Duration::from_millis(10),
            ..Default::default()
        },
        crate::config::model::ControlConfig::default()
            .audit_reserve
            .as_u64(),
        context,
    )
    .expect("the log opens");
    // Files of one hour (an eighth of the retention).
    let config = HistoryConfig {
        retention: Duration::from_secs(8 * 3600),
        ..Default::default()
    };
    let history = start(&config, &log, context).expect("history opens");
    Running {
        log,
        history,
        supervisor,
    }
}

/// Waits until the log has written up to `until` and the historian has taken it.
async fn logged(running: &Running, until: u64) {
    let mut rx = running.log.subscribe();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|end| *end >= until))
        .await
        .expect("the log writes")
        .expect("the log runs");
    let mut taken = running.history.taken();
    tokio::time::timeout(Duration::from_secs(20), taken.wait_for(|end| *end >= until))
        .await
        .expect("the historian reads")
        .expect("the historian runs");
}

/// An hour boundary two hours ago, µs.
fn boundary() -> i64 {
    let hour = 3_600_000_000i64;
    (micros(SystemTime::now()) / hour - 2) * hour
}

fn at(us: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us as u64)
}

fn samples(points: &[Point]) -> Vec<(i64, Option<f64>, Quality)> {
    points
        .iter()
        .filter_map(|p| match p {
            Point::Sample(s) => Some((
                s.time,
                match s.value {
                    Some(Value::Float(f)) => Some(f),
                    _ => None,
                },
                s.quality,
            )),
            Point::Lost { .. } => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_across_files_read_back_exactly_and_a_replay_stores_nothing_twice() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    let b = boundary();
    let a = PropertyId(0);
    // 5 000 changes one second apart across the hour boundary (more than a chunk holds), every
    // tenth a timeout (bad, keeping the last value).
    let mut expected = Vec::new();
    let start = *running.log.subscribe().borrow();
    for i in 0..5000i64 {
        let time = b - 2500 * 1_000_000 + i * 1_000_000;
        if i % 10 == 9 {
            // A failure keeps the last value and its source timestamp.
            twin.apply(&[Reading::failed(a, QualityReason::Timeout)]);
            let (last_time, last, _) = *expected.last().unwrap();
            expected.push((last_time, last, Quality::bad(QualityReason::Timeout)));
        } else {
            twin.apply(&[Reading::value(a, Value::Float(i as f64), Some(at(time)))]);
            expected.push((time, Some(i as f64), Quality::GOOD));
        }
    }
    logged(&running, start + 5000).await;
    let history = running.history.clone();
    let range = b - 3_600_000_000..b + 3_600_000_000;
    let series = history.series_of(a).expect("historized");
    // Buffered, not yet flushed: read all the same.
    let buffered = history.read(series, range.clone()).unwrap();
    assert_eq!(samples(&buffered), expected);
    running.supervisor.shutdown(Duration::from_secs(10)).await;
    // redb opens a file once per process: the next start needs the old handles gone.
    drop((history, running));
    let files: Vec<_> = std::fs::read_dir(state.path().join(DIR_NAME))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "redb"))
        })
        .collect();
    assert_eq!(files.len(), 2, "split at the hour boundary");

    // A crash between the files' commit and the cursor's: the log is read again from 0.
    crate::change_log::commit_cursor(&state.path().join(crate::change_log::DIR_NAME), CURSOR, 0)
        .unwrap();
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    let start = *running.log.subscribe().borrow();
    let later = b + 2600 * 1_000_000;
    twin.apply(&[Reading::value(a, Value::Float(-1.0), Some(at(later)))]);
    logged(&running, start + 1).await;
    running.supervisor.shutdown(Duration::from_secs(10)).await;
    drop(running);
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    let stored = running.history.read(series, range).unwrap();
    expected.push((later, Some(-1.0), Quality::GOOD));
    assert_eq!(samples(&stored), expected);
    running.supervisor.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_go_in_order_and_too_old_ones_are_kept_flagged() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    let b = boundary();
    let a = PropertyId(1);
    let start = *running.log.subscribe().borrow();
    let minute = 60_000_000;
    for (offset, value) in [(60, 1.0), (50, 2.0), (70, 3.0), (0, 4.0)] {
        twin.apply(&[Reading::value(
            a,
            Value::Float(value),
            Some(at(b + offset * minute)),
        )]);
    }
    logged(&running, start + 4).await;
    let series = running.history.series_of(a).unwrap();
    let points = running
        .history
        .read(series, b - minute..b + 80 * minute)
        .unwrap();
    let got: Vec<(i64, f64, bool)> = points
        .iter()
        .filter_map(|p| match p {
            Point::Sample(Sample {
                time,
                value: Some(Value::Float(v)),
                flagged,
                ..
            }) => Some(((time - b) / minute, *v, *flagged)),
            _ => None,
        })
        .collect();
    // 50 min is 20 min late (in order); 0 min is 70 min behind the newest: flagged.
    assert_eq!(
        got,
        vec![
            (0, 4.0, true),
            (50, 2.0, false),
            (60, 1.0, false),
            (70, 3.0, false)
        ]
    );
    running.supervisor.shutdown(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_deadband_keeps_only_changes_beyond_it() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(", history_deadband = { absolute = 1.0 }");
    let running = start_both(&twin, state.path());
    let b = boundary();
    let a = PropertyId(0);
    let start = *running.log.subscribe().borrow();
    let values = [10.0, 10.5, 11.0, 11.5, 20.0, 19.2];
    for (i, v) in values.iter().enumerate() {
        twin.apply(&[Reading::value(
            a,
            Value::Float(*v),
            Some(at(b + i as i64 * 1_000_000)),
        )]);
    }
    logged(&running, start + values.len() as u64).await;
    let series = running.history.series_of(a).unwrap();
    let stored: Vec<Option<f64>> =
        samples(&running.history.read(series, b..b + 60_000_000).unwrap())
            .into_iter()
            .map(|(_, v, _)| v)
            .collect();
    assert_eq!(stored, vec![Some(10.0), Some(11.5), Some(20.0)]);
    running.supervisor.shutdown(Duration::from_secs(10)).await;
}

/// StartOfArchive follows the archive: nothing while it is empty, the first sample's file as
/// soon as it is buffered, and the next file once retention deleted the oldest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_of_the_archive_follows_the_first_sample_and_retention() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    assert_eq!(running.history.start_of_archive(), None);
    let hour = 3_600_000_000i64;
    let b = boundary();
    let a = PropertyId(0);
    let start = *running.log.subscribe().borrow();
    twin.apply(&[Reading::value(
        a,
        Value::Float(1.0),
        Some(at(b - 20 * hour)),
    )]);
    twin.apply(&[Reading::value(a, Value::Float(2.0), Some(at(b)))]);
    logged(&running, start + 2).await;
    // Buffered only: the archive starts with the first sample's file.
    assert_eq!(running.history.start_of_archive(), Some(b - 20 * hour));
    // Stopping writes both files; retention (8 h) then deletes the older.
    running.supervisor.shutdown(Duration::from_secs(10)).await;
    assert_eq!(running.history.start_of_archive(), Some(b - 20 * hour));
    let older_than = micros(SystemTime::now()) - 8 * hour;
    assert_eq!(
        running
            .history
            .shared
            .store
            .enforce(older_than, u64::MAX)
            .unwrap(),
        1
    );
    assert_eq!(running.history.start_of_archive(), Some(b));
}

/// Compaction merges a closed file's small chunks (one per flush) and reads back exactly the
/// same points, before and after a restart; a compacted file is not compacted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_chunks_and_reads_back_the_same() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    let b = boundary();
    let a = PropertyId(0);
    let start = *running.log.subscribe().borrow();
    for i in 0..3000i64 {
        let time = b - 1500 * 1_000_000 + i * 1_000_000;
        if i % 10 == 9 {
            twin.apply(&[Reading::failed(a, QualityReason::Timeout)]);
        } else {
            twin.apply(&[Reading::value(
                a,
                Value::Float(i as f64 * 0.01),
                Some(at(time)),
            )]);
        }
    }
    logged(&running, start + 3000).await;
    running.supervisor.shutdown(Duration::from_secs(10)).await;
    let series = running.history.series_of(a).unwrap();
    let range = b - 3_600_000_000..b + 3_600_000_000;
    let before = running.history.read(series, range.clone()).unwrap();
    assert_eq!(samples(&before).len(), 3000);
    let store = &running.history.shared.store;
    let bytes = store.disk_bytes();
    let closed = micros(SystemTime::now());
    assert_eq!(
        store.compact_closed(closed).unwrap(),
        2,
        "both files closed"
    );
    assert_eq!(running.history.read(series, range.clone()).unwrap(), before);
    assert!(
        store.disk_bytes() <= bytes,
        "{} > {bytes}",
        store.disk_bytes()
    );
    assert_eq!(store.compact_closed(closed).unwrap(), 0, "done once");
    drop(running);
    let twin = twin_of("");
    let running = start_both(&twin, state.path());
    assert_eq!(running.history.read(series, range).unwrap(), before);
    assert_eq!(
        running.history.shared.store.compact_closed(closed).unwrap(),
        0,
        "a restart knows the files are compacted"
    );
    let leftovers = std::fs::read_dir(state.path().join(DIR_NAME))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".compacting"))
        })
        .count();
    assert_eq!(leftovers, 0);
    running.supervisor.shutdown(Duration::from_secs(10)).await;
}
