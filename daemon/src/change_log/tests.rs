//! Change log tests: order and offsets across restarts, a torn and a corrupted tail, a failed
//! `fdatasync`, a full disk, a consumer that stops and catches up, the budget, series identity,
//! the tap's overflow. Each waits on the log's own signals (`subscribe`, readiness), never on time.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::store;
use super::*;
use crate::runtime::{Readiness, Supervisor};
use crate::telemetry::Metrics;
use crate::twin::{PropertyId, Reading, Twin, Value};

/// A twin of `n` float properties `site/m<i>/v` (no source), from a configuration text.
fn twin_of(names: &[&str]) -> Arc<Twin> {
    let mut text = String::from(
        "[[sources.modbus]]\nid = \"plc\"\ntcp = \"127.0.0.1:502\"\n\
         [[types]]\nname = \"M\"\nproperties = [{ name = \"v\", data_type = \"float\" }]\n",
    );
    for (i, name) in names.iter().enumerate() {
        text.push_str(&format!(
            "[[assets]]\npath = \"site/{name}\"\ntype = \"M\"\nsource = \"plc\"\n\
             bindings.v = {{ table = \"holding\", address = {} }}\n",
            2 * i
        ));
    }
    let config = crate::config::parse(Path::new("t.toml"), &text).expect("valid config");
    Arc::new(Twin::new(Arc::new(config.twin_model()), &config.twin))
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

struct Running {
    log: ChangeLog,
    supervisor: Supervisor,
    readiness: Readiness,
}

/// Starts a log for `twin` in `state/change-log` with `free` bytes free (fake) and `fail_syncs`
/// syncs to fail.
fn start_log(
    twin: &Arc<Twin>,
    state: &Path,
    max_disk: u64,
    free: &Arc<AtomicU64>,
    fail_syncs: &Arc<AtomicU32>,
) -> Running {
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
    let free = Arc::clone(free);
    let config = ChangeLogConfig {
        max_disk: bytesize::ByteSize::b(max_disk),
        commit_window: Duration::from_millis(20),
    };
    let store = StoreConfig {
        dir: state.join(DIR_NAME),
        max_disk,
        reserve_bytes: 1000,
        free_space: Arc::new(move |_| Ok(free.load(Ordering::SeqCst))),
        fail_syncs: Arc::clone(fail_syncs),
    };
    let log = start_with(&config, store, context).expect("the log opens");
    Running {
        log,
        supervisor,
        readiness,
    }
}

fn plenty() -> Arc<AtomicU64> {
    Arc::new(AtomicU64::new(u64::MAX))
}

fn no_failures() -> Arc<AtomicU32> {
    Arc::new(AtomicU32::new(0))
}

/// Applies `count` changes, round robin over the twin's properties, values `from..from+count`.
fn produce(twin: &Twin, from: u64, count: u64) {
    let n = twin.model().properties().len() as u64;
    for i in from..from + count {
        twin.apply(&[Reading::value(
            PropertyId((i % n) as u32),
            Value::Float(i as f64),
            None,
        )]);
    }
}

/// [`produce`] in hand-offs of 5 000 changes, each written before the next is produced (a
/// producer faster than the writer would overflow the tap on a loaded machine); returns the
/// offset after the last.
async fn produce_logged(twin: &Twin, log: &ChangeLog, from: u64, count: u64) -> u64 {
    let mut end = *log.subscribe().borrow();
    let mut done = 0;
    while done < count {
        let chunk = (count - done).min(5000);
        produce(twin, from + done, chunk);
        end += chunk;
        written(log, end).await;
        done += chunk;
    }
    end
}

/// Waits until the log has written up to at least `offset`.
async fn written(log: &ChangeLog, offset: u64) {
    let mut rx = log.subscribe();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|end| *end >= offset))
        .await
        .expect("the log writes")
        .expect("the log runs");
}

/// Every record from `from` on that is on disk now.
fn read_all(dir: &Path, from: u64) -> Vec<Entry> {
    let mut reader = Reader::new(dir, from);
    let mut out = Vec::new();
    while let Some(entry) = reader.try_next().expect("readable") {
        out.push(entry);
    }
    out
}

/// The float values of the change records, in order.
fn values(entries: &[Entry]) -> Vec<u64> {
    entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Change {
                value: Some(Value::Float(v)),
                ..
            } => Some(*v as u64),
            _ => None,
        })
        .collect()
}

fn gaps(entries: &[Entry]) -> Vec<(GapReason, Option<u64>)> {
    entries
        .iter()
        .filter_map(|e| match &e.record {
            Record::Gap { reason, lost, .. } => Some((*reason, *lost)),
            _ => None,
        })
        .collect()
}

fn offsets_rise_by_one(entries: &[Entry]) {
    for pair in entries.windows(2) {
        assert_eq!(pair[1].offset, pair[0].offset + 1, "{:?}", &pair);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_is_logged_in_order_and_a_clean_restart_continues_the_offsets() {
    let state = tempfile::tempdir().unwrap();
    let names = names(10);
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let twin = twin_of(&names);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    produce(&twin, 1, 5000);
    // Started + 5000 changes.
    written(&running.log, 5001).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let dir = state.path().join(DIR_NAME);
    let first = read_all(&dir, 0);
    assert_eq!(values(&first), (1..=5000).collect::<Vec<_>>());
    assert!(matches!(first[0].record, Record::Started { .. }));
    assert!(matches!(
        first.last().unwrap().record,
        Record::Stopped { .. }
    ));
    offsets_rise_by_one(&first);

    // Again, clean: no gap, the offsets go on.
    let twin = twin_of(&names);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    produce(&twin, 10_001, 10);
    written(&running.log, first.len() as u64 + 11).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let all = read_all(&dir, 0);
    offsets_rise_by_one(&all);
    assert!(gaps(&all).is_empty(), "{:?}", gaps(&all));
    let second = read_all(&dir, first.len() as u64);
    assert_eq!(values(&second), (10_001..10_011).collect::<Vec<_>>());
    // Series ids: property i has series i (first start, config order).
    let Record::Change { series, .. } = &first[1].record else {
        panic!("{:?}", first[1]);
    };
    assert_eq!(*series, 1, "change 1 is of property 1");
}

/// What a source or plugin changes while it stops (a plugin's outputs going Bad, a source's
/// last readings) is logged before the `Stopped` record: the log stops in the supervisor's
/// last stage, after every other task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_other_tasks_stop_are_logged_before_the_stop() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a", "b"]);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    produce(&twin, 1, 10);
    written(&running.log, 11).await;
    let stopping = Arc::clone(&twin);
    running.supervisor.spawn("plugin", move |token| async move {
        token.cancelled().await;
        // A slow way out (a session closing), then the outputs go Bad.
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        stopping.fail_all(
            vec![PropertyId(0), PropertyId(1)],
            crate::twin::QualityReason::PluginFailure,
        );
        Ok(())
    });
    assert!(running.supervisor.shutdown(Duration::from_secs(5)).await);
    let all = read_all(&state.path().join(DIR_NAME), 0);
    let tail: Vec<&Record> = all.iter().rev().take(3).map(|e| &e.record).collect();
    assert!(matches!(tail[0], Record::Stopped { .. }), "{tail:?}");
    for record in &tail[1..] {
        let Record::Change { quality, .. } = record else {
            panic!("{tail:?}");
        };
        assert_eq!(
            quality.reason,
            crate::twin::QualityReason::PluginFailure,
            "{tail:?}"
        );
    }
}

/// Writes a log of 100 changes and stops it without the `Stopped` record's run (as `kill -9`
/// would leave it: the last batch written, nothing else), returning the log's folder.
async fn log_of_100(state: &Path) -> std::path::PathBuf {
    let twin = twin_of(&["a", "b"]);
    let running = start_log(&twin, state, 1 << 30, &plenty(), &no_failures());
    produce(&twin, 1, 100);
    written(&running.log, 101).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let dir = state.join(DIR_NAME);
    // Cut the `Stopped` record's batch off: the run ends as if killed.
    let (_, path, size) = store::segments(&dir).unwrap().pop().unwrap();
    let scanned = store::scan(&path, 0, &mut |_| {}).unwrap();
    assert!(scanned.ends_stopped);
    let stopped_batch = 8 + 20 + 2; // frame, body header, kind + time (0 µs after the base)
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(size - stopped_batch).unwrap();
    assert!(!store::scan(&path, 0, &mut |_| {}).unwrap().ends_stopped);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_tail_is_cut_at_open_and_the_unclean_stop_is_a_gap() {
    let state = tempfile::tempdir().unwrap();
    let dir = log_of_100(state.path()).await;
    let (_, path, _) = store::segments(&dir).unwrap().pop().unwrap();
    // Half a batch: a write the kill interrupted.
    let mut torn = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut torn, &[200, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let before = read_all(&dir, 0);
    assert_eq!(values(&before), (1..=100).collect::<Vec<_>>());

    let twin = twin_of(&["a", "b"]);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    produce(&twin, 1000, 5);
    written(&running.log, 101 + 2 + 5).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let after = read_all(&dir, 0);
    offsets_rise_by_one(&after);
    // Everything a reader saw before is there, unchanged; then the gap, the start, the new ones.
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(gaps(&after), [(GapReason::DamagedTail, None)]);
    assert_eq!(
        values(&after),
        (1..=100).chain(1000..1005).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_tail_is_cut_and_a_kill_without_damage_is_an_unclean_stop() {
    let state = tempfile::tempdir().unwrap();
    let dir = log_of_100(state.path()).await;
    let (_, path, size) = store::segments(&dir).unwrap().pop().unwrap();
    // A flipped bit in the last batch.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[size as usize - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    // A reader stops at the damage (it is not a batch being written: the checksum is wrong).
    assert!(Reader::new(&dir, 0).try_next().is_ok());
    let twin = twin_of(&["a", "b"]);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let after = read_all(&dir, 0);
    offsets_rise_by_one(&after);
    assert_eq!(gaps(&after), [(GapReason::DamagedTail, None)]);
    // The last batch (changes 100 and before, written together or not) went with the damage.
    let kept = values(&after);
    assert!(kept.len() < 100, "{}", kept.len());
    assert_eq!(kept, (1..=kept.len() as u64).collect::<Vec<_>>());

    // A kill that left no damage: the next start records an unclean stop.
    let state = tempfile::tempdir().unwrap();
    let dir = log_of_100(state.path()).await;
    let twin = twin_of(&["a", "b"]);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let after = read_all(&dir, 0);
    offsets_rise_by_one(&after);
    assert_eq!(values(&after), (1..=100).collect::<Vec<_>>());
    assert_eq!(gaps(&after), [(GapReason::UncleanStop, None)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_is_never_retried_its_records_are_void_and_the_log_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a"]);
    let fail = no_failures();
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &fail);
    produce(&twin, 1, 10);
    written(&running.log, 11).await;
    fail.store(1, Ordering::SeqCst);
    produce(&twin, 11, 10);
    // The failure's gap is written with the next batch, in a new segment.
    written(&running.log, 21).await;
    let dir = state.path().join(DIR_NAME);
    let segments_before = store::segments(&dir).unwrap().len();
    produce(&twin, 21, 10);
    let mut rx = running.log.subscribe();
    tokio::time::timeout(
        Duration::from_secs(20),
        rx.wait_for(|_| {
            let entries = read_all(&dir, 0);
            values(&entries).len() == 30
                && entries.iter().any(|e| {
                    matches!(
                        e.record,
                        Record::Gap {
                            reason: GapReason::SyncFailed,
                            ..
                        }
                    )
                })
        }),
    )
    .await
    .unwrap()
    .unwrap();
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    assert_eq!(fail.load(Ordering::SeqCst), 0, "the sync was attempted");
    let entries = read_all(&dir, 0);
    offsets_rise_by_one(&entries);
    let void = entries
        .iter()
        .find_map(|e| match &e.record {
            Record::Gap {
                reason: GapReason::SyncFailed,
                void,
                ..
            } => Some((e.offset, void.clone())),
            _ => None,
        })
        .unwrap();
    // The void range is the records written since the last good sync, all before the gap.
    assert!(!void.1.is_empty() && void.1.end <= void.0, "{void:?}");
    // The gap opened a segment of its own: the failed one is never written or synced again.
    let segments = store::segments(&dir).unwrap();
    assert!(segments.len() > segments_before.min(1), "{segments:?}");
    assert!(segments.iter().any(|(base, _, _)| *base == void.0));
    assert_eq!(values(&entries), (1..=30).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_log_unready_and_it_resumes_with_a_gap_counting_the_loss() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a", "b"]);
    let free = plenty();
    let running = start_log(&twin, state.path(), 1 << 30, &free, &no_failures());
    produce(&twin, 1, 10);
    written(&running.log, 11).await;
    assert!(running.readiness.unmet().is_empty());
    free.store(10, Ordering::SeqCst);
    produce(&twin, 11, 10);
    // Degraded: unready.
    let mut tries = 0;
    while running.readiness.unmet().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        tries += 1;
        assert!(tries < 4000, "the log never reported the full disk");
    }
    assert_eq!(running.readiness.unmet(), [READY_CONDITION]);
    // The twin goes on meanwhile.
    produce(&twin, 21, 30);
    assert_eq!(
        twin.sample(PropertyId(0)).value,
        Some(Value::Float(50.0)),
        "live values go on"
    );
    free.store(u64::MAX, Ordering::SeqCst);
    // Resumed (within the retry interval): ready again.
    let mut tries = 0;
    while !running.readiness.unmet().is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        tries += 1;
        assert!(tries < 4000, "the log never resumed");
    }
    produce(&twin, 51, 5);
    // Resumed: a gap of the 40 changes missed, then the new ones.
    written(&running.log, 11 + 1 + 5).await;
    assert!(running.readiness.unmet().is_empty());
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let entries = read_all(&state.path().join(DIR_NAME), 0);
    offsets_rise_by_one(&entries);
    assert_eq!(gaps(&entries), [(GapReason::DiskFull, Some(40))]);
    assert_eq!(values(&entries), (1..=10).chain(51..56).collect::<Vec<_>>());
}

/// A consumer stopped for "60 s": it commits its cursor and reads nothing while 60 s of the
/// test's rate (1 000 changes/s: 60 000 changes) are produced, across many segments; the
/// segments it has not read stay (under the budget), and it then reads every change it missed,
/// in order, from its cursor, and the segments behind its new cursor go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stopped_for_sixty_seconds_of_changes_catches_up_from_its_cursor() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a", "b", "c"]);
    // A 2 MiB budget: 256 KiB segments; 60 000 changes of ≈ 14 bytes fill several.
    let running = start_log(&twin, state.path(), 2 << 20, &plenty(), &no_failures());
    let dir = state.path().join(DIR_NAME);
    produce(&twin, 1, 100);
    written(&running.log, 101).await;
    // The consumer reads what there is, commits, and stops.
    let mut consumer = running.log.reader(0);
    let mut seen = Vec::new();
    while let Some(entry) = consumer.try_next().unwrap() {
        seen.push(entry);
    }
    commit_cursor(&dir, "history", consumer.position()).unwrap();
    drop(consumer);
    let rate = 1000;
    produce_logged(&twin, &running.log, 101, 60 * rate).await;
    assert!(
        store::segments(&dir).unwrap().len() >= 3,
        "several segments"
    );
    // Back: from its cursor, waking on new data.
    let from = store::cursors(&dir).unwrap()["history"];
    let mut consumer = running.log.reader(from);
    let mut written_rx = running.log.subscribe();
    let mut caught_up = Vec::new();
    while caught_up.len() < 60 * rate as usize {
        caught_up.push(consumer.next_wait(&mut written_rx).await.unwrap());
    }
    seen.extend(caught_up);
    offsets_rise_by_one(&seen);
    assert_eq!(values(&seen), (1..=100 + 60 * rate).collect::<Vec<_>>());
    assert!(gaps(&seen).is_empty());
    // Committed: the segments behind it go with the next write.
    running
        .log
        .commit_cursor("history", consumer.position())
        .unwrap();
    let before = store::segments(&dir).unwrap().len();
    produce(&twin, 1_000_000, 1);
    written(&running.log, consumer.position() + 1).await;
    assert!(store::segments(&dir).unwrap().len() < before);
    running.supervisor.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_budget_the_oldest_segments_go_and_a_lagging_consumer_reads_a_gap() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a", "b"]);
    let max_disk = 256 * 1024;
    let running = start_log(&twin, state.path(), max_disk, &plenty(), &no_failures());
    let dir = state.path().join(DIR_NAME);
    commit_cursor(&dir, "slow", 0).unwrap();
    produce_logged(&twin, &running.log, 1, 100_000).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let segments = store::segments(&dir).unwrap();
    let on_disk: u64 = segments.iter().map(|s| s.2).sum();
    assert!(on_disk <= max_disk, "{on_disk} bytes on disk");
    let fixed = store::segment_bytes(max_disk);
    assert!(segments.iter().all(|s| s.2 <= fixed), "{segments:?}");
    let entries = read_all(&dir, 0);
    let (reason, _) = gaps(&entries)[0];
    assert_eq!(reason, GapReason::Deleted);
    let values = values(&entries);
    // What is left is the newest, in order, without a hole.
    assert_eq!(*values.last().unwrap(), 100_000);
    assert!(values.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(values.len() < 100_000);
}

/// A reader in the middle of the log when the budget deletes the segments after its own: at the
/// end of its segment it hands out a `deleted` gap naming the offsets it will never read, then
/// goes on with the oldest segment left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_overtaken_by_deletion_reads_a_gap_then_goes_on() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a", "b"]);
    let max_disk = 256 * 1024;
    let running = start_log(&twin, state.path(), max_disk, &plenty(), &no_failures());
    produce_logged(&twin, &running.log, 1, 100).await;
    let mut reader = running.log.reader(0);
    let first = reader.try_next().unwrap().unwrap();
    assert!(matches!(first.record, Record::Started { .. }));
    // Far past the budget: the reader's segment and those after it are deleted (its open file
    // stays readable).
    produce_logged(&twin, &running.log, 101, 100_000).await;
    let mut rest = Vec::new();
    while let Some(entry) = reader.try_next().unwrap() {
        rest.push(entry);
    }
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let deleted = rest
        .iter()
        .position(|e| {
            matches!(
                e.record,
                Record::Gap {
                    reason: GapReason::Deleted,
                    ..
                }
            )
        })
        .expect("a deleted gap");
    // Offsets rise by one but over the gap, which names the ones deleted.
    offsets_rise_by_one(&rest[..=deleted]);
    offsets_rise_by_one(&rest[deleted + 1..]);
    let Record::Gap { void, .. } = &rest[deleted].record else {
        unreachable!()
    };
    assert_eq!(
        (void.start, void.end),
        (rest[deleted].offset, rest[deleted + 1].offset)
    );
    let before = values(&rest[..deleted]);
    let after = values(&rest[deleted..]);
    assert_eq!(before.first(), Some(&1));
    assert!(before.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(after[0] > *before.last().unwrap() + 1);
    assert_eq!(after.last(), Some(&100_100));
}

#[test]
fn reordered_added_and_removed_properties_keep_their_series() {
    let dir = tempfile::tempdir().unwrap();
    let paths = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut table = SeriesTable::load(dir.path()).unwrap();
    let first = table
        .assign(dir.path(), &paths(&["a/v", "b/v", "c/v"]))
        .unwrap();
    assert_eq!(first, [0, 1, 2]);
    // A new configuration: reordered, `b` removed, `d` added — read back from disk.
    let mut table = SeriesTable::load(dir.path()).unwrap();
    let second = table
        .assign(dir.path(), &paths(&["c/v", "d/v", "a/v"]))
        .unwrap();
    assert_eq!(second, [2, 3, 0]);
    let mut table = SeriesTable::load(dir.path()).unwrap();
    assert_eq!(
        table.assign(dir.path(), &paths(&["b/v", "d/v"])).unwrap(),
        [1, 3]
    );
    assert_eq!(table.paths()[&3], "d/v");
}

/// Through the twin and the log: the same property written before and after its configuration
/// moved it to another `PropertyId` is one series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_property_moved_in_the_configuration_stays_in_its_series() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().join(DIR_NAME);
    for (order, value) in [(["x", "y"], 1.0), (["y", "x"], 2.0)] {
        let twin = twin_of(&order);
        let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
        let x = twin.model().property_by_path("site/x/v").unwrap();
        let end = *running.log.subscribe().borrow();
        twin.apply(&[Reading::value(x, Value::Float(value), None)]);
        written(&running.log, end + 1).await;
        running.supervisor.shutdown(Duration::from_secs(5)).await;
    }
    let paths = SeriesTable::load(&dir).unwrap().paths();
    let series_of_x: Vec<&str> = read_all(&dir, 0)
        .iter()
        .filter_map(|e| match &e.record {
            Record::Change { series, .. } => Some(paths[series].as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(series_of_x, ["site/x/v", "site/x/v"]);
}

#[test]
fn a_full_tap_counts_what_it_cannot_take_at_one_place_in_the_order() {
    let twin = twin_of(&["a"]);
    let tap = twin.tap(3);
    produce(&twin, 1, 5);
    let mut out = Vec::new();
    assert_eq!(tap.drain(&mut out), 2);
    assert_eq!(out.len(), 3);
    produce(&twin, 6, 1);
    out.clear();
    assert_eq!(tap.drain(&mut out), 0);
    let crate::twin::Tapped::Change(change) = &out[0] else {
        panic!("{:?}", out[0]);
    };
    assert_eq!(change.sample.value, Some(Value::Float(6.0)));
    assert_eq!(tap.lost_total(), 2);
}

/// A recovered value (`apply_recovered`: a republished OPC UA notification) older by source time
/// than the one the twin holds is a `late` change record, never the current value; a source's
/// upstream loss is an `upstream` gap; both in the twin's order. A live reading with an older
/// source time (a device clock stepped back) is current as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_samples_are_logged_as_late_and_never_become_the_current_value() {
    let state = tempfile::tempdir().unwrap();
    let twin = twin_of(&["a"]);
    let running = start_log(&twin, state.path(), 1 << 30, &plenty(), &no_failures());
    let at = |s: u64| Some(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s));
    let a = PropertyId(0);
    twin.apply(&[Reading::value(a, Value::Float(1.0), at(1))]);
    twin.apply(&[Reading::value(a, Value::Float(4.0), at(4))]);
    // 2 and 3 come back late, in one batch with 5 (current); then 4 again (same time: nothing).
    twin.apply_recovered(&[
        Reading::value(a, Value::Float(2.0), at(2)),
        Reading::value(a, Value::Float(3.0), at(3)),
        Reading::value(a, Value::Float(5.0), at(5)),
    ]);
    assert_eq!(twin.sample(a).value, Some(Value::Float(5.0)));
    twin.apply_recovered(&[Reading::value(a, Value::Float(3.5), at(3))]);
    twin.upstream_lost(2);
    assert_eq!(twin.sample(a).value, Some(Value::Float(5.0)));
    assert_eq!(twin.sample(a).source_time, at(5));
    assert_eq!(twin.stats().late, 3);
    // A live reading from a clock that stepped back is the current value.
    twin.apply(&[Reading::value(a, Value::Float(6.0), at(2))]);
    assert_eq!(twin.sample(a).value, Some(Value::Float(6.0)));
    assert_eq!(twin.stats().late, 3);
    // Started, 1, 4, 2 (late), 3 (late), 5, 3.5 (late), the gap, 6.
    written(&running.log, 9).await;
    running.supervisor.shutdown(Duration::from_secs(5)).await;
    let all = read_all(&state.path().join(DIR_NAME), 0);
    let changes: Vec<(u64, bool, Option<std::time::SystemTime>)> = all
        .iter()
        .filter_map(|e| match &e.record {
            Record::Change {
                value: Some(Value::Float(v)),
                late,
                source_time,
                ..
            } => Some(((*v * 10.0) as u64, *late, *source_time)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        [
            (10, false, at(1)),
            (40, false, at(4)),
            (20, true, at(2)),
            (30, true, at(3)),
            (50, false, at(5)),
            (35, true, at(3)),
            (60, false, at(2)),
        ]
    );
    assert_eq!(gaps(&all), [(GapReason::Upstream, Some(2))]);
    offsets_rise_by_one(&all);
}

#[test]
fn segment_names_sizes_and_the_reserve_follow_the_budget() {
    assert_eq!(store::segment_bytes(2 << 30), 64 << 20);
    assert_eq!(store::segment_bytes(1 << 20), 128 << 10);
    assert_eq!(store::segment_bytes(256 << 10), 64 << 10);
    assert_eq!(store::segment_name(42), "00000000000000000042.log");
    let dir = tempfile::tempdir().unwrap();
    // The same file system as the state folder: twice the audit's reserve.
    let inner = dir.path().join("change-log");
    std::fs::create_dir(&inner).unwrap();
    assert_eq!(store::reserve_for(&inner, dir.path(), 64 << 20), 128 << 20);
    assert_eq!(store::reserve_for(&inner, dir.path(), 128 << 10), 256 << 10);
}
