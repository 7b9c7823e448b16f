//! Twin unit tests: scaling, both deadband kinds, quality transitions, stale marking, coalescing.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;

/// A twin with one asset of a type exercising scaling, ranges and both deadband kinds, its
/// bindings polled every 100 ms.
fn twin() -> Twin {
    #[derive(serde::Deserialize)]
    struct Types {
        types: Vec<spec::TypeConfig>,
    }
    let Types { types } = toml::from_str(
        r#"
[[types]]
name = "Tank"
properties = [
  { name = "level", data_type = "float", unit = "%", range = [0, 100], deadband = { percent = 1.0 } },
  { name = "temperature", data_type = "float", unit = "CEL", range = [-20, 150], deadband = { absolute = 0.5 } },
  { name = "count", data_type = "unsigned" },
  { name = "raw", data_type = "integer" },
  { name = "name", data_type = "string" },
  { name = "flow", data_type = "float" },
]
"#,
    )
    .expect("valid types");
    let polled = |scale, offset| spec::BindingSpec {
        scaling: model::Scaling { scale, offset },
        refresh_interval: Some(Duration::from_millis(100)),
    };
    let asset = spec::AssetSpec {
        path: "site/area/tank1".into(),
        type_name: "Tank".into(),
        description: None,
        bindings: [
            ("level", polled(0.1, 0.0)),
            ("temperature", polled(0.1, -20.0)),
            ("count", polled(1.0, 0.0)),
            ("raw", polled(1.0, 0.0)),
            ("name", polled(1.0, 0.0)),
            ("flow", polled(1.0, 0.0)),
        ]
        .into_iter()
        .map(|(name, binding)| (name.to_owned(), binding))
        .collect(),
    };
    let model = TwinModel::build(&types, &[asset]);
    Twin::new(Arc::new(model), &spec::TwinConfig::default())
}

fn id(twin: &Twin, name: &str) -> PropertyId {
    twin.model().property_of("site/area/tank1", name).unwrap()
}

#[test]
fn everything_starts_bad_not_yet_read() {
    let twin = twin();
    let sample = twin.sample(id(&twin, "level"));
    assert_eq!(sample.value, None);
    assert_eq!(sample.quality, Quality::bad(QualityReason::NotYetRead));
    assert_eq!(twin.quality_counts(), (0, 0, 6));
}

#[test]
fn scaling_maps_raw_to_engineering_units() {
    let twin = twin();
    let (level, temperature, count, raw) = (
        id(&twin, "level"),
        id(&twin, "temperature"),
        id(&twin, "count"),
        id(&twin, "raw"),
    );
    twin.apply(&[
        Reading::value(level, Value::UInt(523), None),
        Reading::value(temperature, Value::Int(856), None),
        Reading::value(count, Value::UInt(4_000_000_000), None),
        Reading::value(raw, Value::Int(-7), None),
    ]);
    assert_eq!(
        twin.sample(level).value,
        Some(Value::Float(52.300000000000004))
    );
    // 856 × 0.1 − 20 = 65.6 °C
    let t = twin.sample(temperature).value.unwrap().as_f64().unwrap();
    assert!((t - 65.6).abs() < 1e-9, "{t}");
    // Identity scaling keeps integers exact.
    assert_eq!(twin.sample(count).value, Some(Value::UInt(4_000_000_000)));
    assert_eq!(twin.sample(raw).value, Some(Value::Int(-7)));
    assert!(twin.sample(level).quality.is_good());
}

#[test]
fn scaling_inverse_gives_back_the_raw_value() {
    let scaling = model::Scaling {
        scale: 0.1,
        offset: -20.0,
    };
    let eu = scaling.to_eu(&Value::Int(856), DataType::Float).unwrap();
    let raw = scaling.to_raw(&eu).as_f64().unwrap();
    assert!((raw - 856.0).abs() < 1e-9, "{raw}");
    // Text cannot become a number.
    assert!(
        scaling
            .to_eu(&Value::String("x".into()), DataType::Float)
            .is_err()
    );
    // A negative number cannot become unsigned.
    assert!(
        model::Scaling::IDENTITY
            .to_eu(&Value::Int(-1), DataType::Unsigned)
            .is_err()
    );
}

#[test]
fn absolute_deadband_filters_small_changes() {
    let twin = twin();
    let t = id(&twin, "temperature");
    // raw 400 → 20.0 °C; deadband 0.5 °C.
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(400), None)]), 1);
    // 20.4 °C: within 0.5 of the last published 20.0 → filtered.
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(404), None)]), 0);
    // 20.5 °C: equal to the deadband, not exceeding it → filtered (OPC UA Part 8 §6.2: "exceeds").
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(405), None)]), 0);
    // 20.6 °C exceeds it → published, and becomes the new reference.
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(406), None)]), 1);
    let value = twin.sample(t).value.unwrap().as_f64().unwrap();
    assert!((value - 20.6).abs() < 1e-9);
    // Drift in small steps is measured against the last published value, not the last reading.
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(409), None)]), 0);
    assert_eq!(twin.apply(&[Reading::value(t, Value::Int(412), None)]), 1);
    let stats = twin.stats();
    assert_eq!((stats.readings, stats.changes, stats.filtered), (6, 3, 3));
}

#[test]
fn percent_deadband_is_a_share_of_the_range() {
    let twin = twin();
    let level = id(&twin, "level");
    // Range 0..100 %, deadband 1 % of the span = 1.0 engineering unit; scale 0.1.
    assert_eq!(
        twin.apply(&[Reading::value(level, Value::UInt(500), None)]),
        1
    );
    assert_eq!(
        twin.apply(&[Reading::value(level, Value::UInt(509), None)]),
        0
    );
    assert_eq!(
        twin.apply(&[Reading::value(level, Value::UInt(511), None)]),
        1
    );
    assert_eq!(
        twin.apply(&[Reading::value(level, Value::UInt(502), None)]),
        0
    );
    assert_eq!(
        twin.apply(&[Reading::value(level, Value::UInt(500), None)]),
        1
    );
}

#[test]
fn quality_transitions_keep_the_last_value_and_its_source_time() {
    let twin = twin();
    let level = id(&twin, "level");
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
    let now = Instant::now();
    twin.apply_at(
        &[Reading::value(level, Value::UInt(420), Some(t0))],
        now,
        t0,
    );
    let good = twin.sample(level);
    assert!(good.quality.is_good());
    assert_eq!(good.source_time, Some(t0));

    // Communication failure: bad, value and source time kept, server time moves.
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(
        twin.apply_at(
            &[Reading::failed(level, QualityReason::CommunicationFailure)],
            now,
            t1
        ),
        1
    );
    let bad = twin.sample(level);
    assert_eq!(
        bad.quality,
        Quality::bad(QualityReason::CommunicationFailure)
    );
    assert_eq!(bad.value, good.value);
    assert_eq!(bad.source_time, Some(t0));
    assert_eq!(bad.server_time, t1);
    // The same failure again changes nothing.
    assert_eq!(
        twin.apply_at(
            &[Reading::failed(level, QualityReason::CommunicationFailure)],
            now,
            t1
        ),
        0
    );

    // Recovery with the same value still publishes: the quality changed.
    let t2 = t1 + Duration::from_secs(5);
    assert_eq!(
        twin.apply_at(
            &[Reading::value(level, Value::UInt(420), Some(t2))],
            now,
            t2
        ),
        1
    );
    assert!(twin.sample(level).quality.is_good());

    // Out of range: value stored, quality bad; back in range: good.
    twin.apply(&[Reading::value(level, Value::UInt(1_500), None)]);
    let out = twin.sample(level);
    assert_eq!(out.quality, Quality::bad(QualityReason::OutOfRange));
    assert_eq!(out.value, Some(Value::Float(150.0)));
    twin.apply(&[Reading::value(level, Value::UInt(990), None)]);
    assert!(twin.sample(level).quality.is_good());

    // A raw value of the wrong kind is a configuration error; the last value stays.
    twin.apply(&[Reading::value(level, Value::String("oops".into()), None)]);
    let misbound = twin.sample(level);
    assert_eq!(
        misbound.quality,
        Quality::bad(QualityReason::ConfigurationError)
    );
    assert_eq!(misbound.value, Some(Value::Float(99.0)));
}

#[test]
fn unrefreshed_properties_become_stale_then_good_again() {
    let twin = twin();
    let level = id(&twin, "level");
    let count = id(&twin, "count");
    let start = Instant::now();
    let wall = SystemTime::now();
    twin.apply_at(&[Reading::value(level, Value::UInt(1), None)], start, wall);
    // Poll 100 ms × 3 polls = 300 ms. Not yet stale at 300 ms.
    assert_eq!(
        twin.sweep_stale(start + Duration::from_millis(300), wall),
        0
    );
    assert_eq!(
        twin.sweep_stale(start + Duration::from_millis(301), wall),
        1
    );
    let stale = twin.sample(level);
    assert_eq!(stale.quality, Quality::uncertain(QualityReason::Stale));
    assert_eq!(stale.value, Some(Value::Float(0.1)));
    // Never-read properties stay `NotYetRead`, not stale.
    assert_eq!(
        twin.sample(count).quality,
        Quality::bad(QualityReason::NotYetRead)
    );
    twin.apply_at(
        &[Reading::value(level, Value::UInt(1), None)],
        start + Duration::from_secs(1),
        wall,
    );
    assert!(twin.sample(level).quality.is_good());
}

#[test]
fn strings_and_nan_are_compared_without_deadband() {
    let twin = twin();
    let name = id(&twin, "name");
    assert_eq!(
        twin.apply(&[Reading::value(name, Value::String("A".into()), None)]),
        1
    );
    assert_eq!(
        twin.apply(&[Reading::value(name, Value::String("A".into()), None)]),
        0
    );
    assert_eq!(
        twin.apply(&[Reading::value(name, Value::String("B".into()), None)]),
        1
    );
    let t = id(&twin, "temperature");
    twin.apply(&[Reading::value(t, Value::Int(400), None)]);
    // NaN can never be a measurement: bad, out of range, and published once.
    assert_eq!(
        twin.apply(&[Reading::value(t, Value::Float(f64::NAN), None)]),
        1
    );
    assert_eq!(
        twin.sample(t).quality,
        Quality::bad(QualityReason::OutOfRange)
    );
    assert_eq!(
        twin.apply(&[Reading::value(t, Value::Float(f64::NAN), None)]),
        0
    );
}

#[test]
fn an_upstream_status_code_is_kept_and_its_severity_sets_the_level() {
    let twin = twin();
    let flow = id(&twin, "flow");
    // Uncertain_LastUsableValue (0x4090_0000) with the value: stored, uncertain, code kept.
    let uncertain = Quality::from_status_code(0x4090_0000);
    twin.apply(&[Reading::qualified(flow, Value::Float(3.5), None, uncertain)]);
    let sample = twin.sample(flow);
    assert_eq!(sample.value, Some(Value::Float(3.5)));
    assert_eq!(sample.quality.level, QualityLevel::Uncertain);
    assert_eq!(sample.quality.reason, QualityReason::Upstream(0x4090_0000));
    // Bad_SensorFailure (0x808B_0000): Bad, the last value kept.
    twin.apply(&[Reading::failed(flow, QualityReason::Upstream(0x808B_0000))]);
    let sample = twin.sample(flow);
    assert_eq!(sample.value, Some(Value::Float(3.5)));
    assert_eq!(
        sample.quality,
        Quality::bad(QualityReason::Upstream(0x808B_0000))
    );
    // Plain Good is plain Good.
    assert_eq!(Quality::from_status_code(0), Quality::GOOD);
}

#[test]
fn infinity_is_never_good_even_without_a_range() {
    let twin = twin();
    let flow = id(&twin, "flow");
    for infinite in [f64::INFINITY, f64::NEG_INFINITY] {
        twin.apply(&[Reading::value(flow, Value::Float(12.5), None)]);
        assert!(twin.sample(flow).quality.is_good());
        twin.apply(&[Reading::value(flow, Value::Float(infinite), None)]);
        assert_eq!(
            twin.sample(flow).quality,
            Quality::bad(QualityReason::OutOfRange),
            "{infinite}"
        );
    }
}

#[tokio::test]
async fn subscribers_receive_changes_in_order() {
    let twin = twin();
    let level = id(&twin, "level");
    let mut subscription = twin.subscribe(Filter::All, 16);
    for raw in [100u64, 200, 300] {
        twin.apply(&[Reading::value(level, Value::UInt(raw), None)]);
    }
    let mut changes = Vec::new();
    assert_eq!(subscription.recv(&mut changes).await, 3);
    let values: Vec<_> = changes
        .iter()
        .map(|c| c.sample.value.clone().unwrap())
        .collect();
    assert_eq!(
        values,
        [Value::Float(10.0), Value::Float(20.0), Value::Float(30.0)]
    );
    assert_eq!(subscription.coalesced(), 0);
}

#[test]
fn a_slow_subscriber_gets_the_latest_value_per_property_and_coalescing_is_counted() {
    let twin = twin();
    let count = id(&twin, "count");
    let raw = id(&twin, "raw");
    let mut slow = twin.subscribe(Filter::All, 2);
    let mut fast = twin.subscribe(Filter::Properties(vec![raw]), 1024);
    let mut fast_seen = Vec::new();
    // 100 updates of two properties; the slow subscriber reads nothing meanwhile.
    for i in 0..100i64 {
        twin.apply(&[
            Reading::value(count, Value::UInt(i as u64), None),
            Reading::value(raw, Value::Int(i), None),
        ]);
        fast.try_recv(&mut fast_seen);
    }
    // The fast, filtered subscriber saw every change of `raw`, and nothing else.
    assert_eq!(fast_seen.len(), 100);
    assert!(fast_seen.iter().all(|c| c.property == raw));
    assert_eq!(fast.coalesced(), 0);

    let mut got = Vec::new();
    slow.try_recv(&mut got);
    // Queue of 2 (the first two changes), then one latest entry per property.
    assert_eq!(got.len(), 4);
    assert_eq!(got[0].sample.value, Some(Value::UInt(0)));
    assert_eq!(got[1].sample.value, Some(Value::Int(0)));
    let last_count = got.iter().rev().find(|c| c.property == count).unwrap();
    let last_raw = got.iter().rev().find(|c| c.property == raw).unwrap();
    assert_eq!(last_count.sample.value, Some(Value::UInt(99)));
    assert_eq!(last_raw.sample.value, Some(Value::Int(99)));
    // 200 changes offered, 4 delivered, 196 coalesced.
    assert_eq!(slow.coalesced(), 196);
    assert_eq!(twin.stats().coalesced, 196);
    // After draining, the slow subscriber is back to in-order delivery.
    twin.apply(&[Reading::value(raw, Value::Int(1_000), None)]);
    got.clear();
    slow.try_recv(&mut got);
    assert_eq!(got.len(), 1);
}

#[test]
fn dropped_subscriptions_are_removed() {
    let twin = twin();
    let level = id(&twin, "level");
    let subscription = twin.subscribe(Filter::All, 4);
    assert_eq!(twin.stats().subscribers, 1);
    drop(subscription);
    twin.apply(&[Reading::value(level, Value::UInt(1), None)]);
    assert_eq!(twin.stats().subscribers, 0);
}
