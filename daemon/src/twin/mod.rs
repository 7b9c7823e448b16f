//! The twin: the single source of truth for every property's current value.
//!
//! Sources hand the twin [`Reading`]s (raw values or failures). The twin scales raw values into
//! engineering units, marks values outside their EU range, filters changes by deadband, stamps the
//! server timestamp, stores the current [`Sample`] per property, and fans every published
//! [`Change`] out to subscribers (OPC UA server, plugins, admin view) over bounded queues.
//! Everyone else reads snapshots or changes; nobody else writes values.

pub mod condition;
pub mod fanout;
pub mod model;
pub mod spec;
pub mod tap;
pub mod units;
pub mod value;
pub mod write;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

pub use fanout::{Change, DEFAULT_SUBSCRIBER_CAPACITY, Filter, Subscription};
pub use model::{PropertyId, TwinModel};
pub use spec::{Access, DataType};
pub use tap::{TAP_CAPACITY, TapReceiver, Tapped};
pub use value::{Quality, QualityLevel, QualityReason, Sample, Value};
pub use write::WriteError;

use fanout::Fanout;
use spec::TwinConfig;

/// What a source observed for one property.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The property.
    pub property: PropertyId,
    /// The raw value as decoded, or why there is none (the reason becomes the quality; the last
    /// value and its source timestamp are kept).
    pub outcome: Result<Value, QualityReason>,
    /// When the device produced the value, if the protocol says; otherwise the twin uses the
    /// time the reading arrived.
    pub source_time: Option<SystemTime>,
    /// With a value: its quality when it is not plain Good — uncertain for a reason (a derived
    /// value whose plugin says an input is uncertain), or the upstream server's status code
    /// ([`Quality::from_status_code`]); `None` for a plain Good value. A value out of its range is
    /// Bad (`OutOfRange`) whatever this says.
    pub quality: Option<Quality>,
}

impl Reading {
    /// A successful raw reading.
    pub fn value(property: PropertyId, raw: Value, source_time: Option<SystemTime>) -> Self {
        Self {
            property,
            outcome: Ok(raw),
            source_time,
            quality: None,
        }
    }

    /// A reading whose value comes with `quality` (an upstream server's status code that is not
    /// plain Good, [`Quality::from_status_code`]).
    pub fn qualified(
        property: PropertyId,
        raw: Value,
        source_time: Option<SystemTime>,
        quality: Quality,
    ) -> Self {
        Self {
            quality: (quality != Quality::GOOD).then_some(quality),
            ..Self::value(property, raw, source_time)
        }
    }

    /// A reading whose value is usable but uncertain for `reason`.
    pub fn uncertain(
        property: PropertyId,
        raw: Value,
        source_time: Option<SystemTime>,
        reason: QualityReason,
    ) -> Self {
        Self::qualified(property, raw, source_time, Quality::uncertain(reason))
    }

    /// A failed reading.
    pub fn failed(property: PropertyId, reason: QualityReason) -> Self {
        Self {
            property,
            outcome: Err(reason),
            source_time: None,
            quality: None,
        }
    }
}

/// Counters the twin keeps, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TwinStats {
    /// Readings applied.
    pub readings: u64,
    /// Changes published (value beyond deadband, or quality changed).
    pub changes: u64,
    /// Readings that changed nothing (same value, or within the deadband).
    pub filtered: u64,
    /// Changes coalesced away for slow subscribers.
    pub coalesced: u64,
    /// Late samples: values whose source timestamp was older than the one the twin held, kept
    /// out of the current value and handed to the change log only ([`Tapped::Late`]).
    pub late: u64,
    /// Live subscriptions.
    pub subscribers: usize,
}

#[derive(Debug, Clone)]
struct Slot {
    sample: Sample,
    last_refresh: Option<Instant>,
}

/// The twin's store. Shared behind an `Arc`; all methods take `&self`.
#[derive(Debug)]
pub struct Twin {
    model: Arc<TwinModel>,
    slots: RwLock<Vec<Slot>>,
    fanout: Fanout,
    /// The change log's lossless tap, when one is taken ([`Twin::tap`]).
    tap: RwLock<Option<Arc<tap::TapShared>>>,
    stale_after_polls: u32,
    readings: AtomicU64,
    changes: AtomicU64,
    filtered: AtomicU64,
    late: AtomicU64,
}

/// What applying one reading did to its slot.
enum Update {
    /// Nothing published (same value, within the deadband, same quality).
    Unchanged,
    /// The current sample changed.
    Changed,
    /// A late sample (older source timestamp than the current one), not stored.
    Late(Sample),
}

impl Twin {
    /// A twin for `model` with every property bad (`NotYetRead`) and no value.
    pub fn new(model: Arc<TwinModel>, config: &TwinConfig) -> Self {
        let now = SystemTime::now();
        let slots = vec![
            Slot {
                sample: Sample {
                    value: None,
                    quality: Quality::bad(QualityReason::NotYetRead),
                    source_time: None,
                    server_time: now,
                },
                last_refresh: None,
            };
            model.properties().len()
        ];
        Self {
            model,
            slots: RwLock::new(slots),
            fanout: Fanout::default(),
            tap: RwLock::new(None),
            stale_after_polls: config.stale_after_polls.max(1),
            readings: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    /// The structure this twin holds values for.
    pub fn model(&self) -> &Arc<TwinModel> {
        &self.model
    }

    /// Applies readings now; returns how many changes were published.
    /// Every reading becomes the current value, whatever its source timestamp (a device whose
    /// clock stepped back still updates the twin). Never waits: the tap takes a copy under a
    /// short mutex.
    pub fn apply(&self, readings: &[Reading]) -> usize {
        self.apply_at(readings, Instant::now(), SystemTime::now())
    }

    /// Applies readings a source got back after newer ones (an OPC UA NotificationMessage
    /// recovered with Republish, Part 4 §5.13.6): a value whose source timestamp is older than
    /// the current sample's is *late* — it never replaces the current value (subscribers and
    /// OPC UA clients keep the newest) and goes to the change log's tap only ([`Tapped::Late`]),
    /// scaled and range-checked like any value but with no deadband, counted in
    /// [`TwinStats::late`]; any other reading is applied as by [`Self::apply`]. Only readings
    /// known to be recovered come here, so a source clock that steps back never freezes the
    /// current value. Returns how many changes were published.
    pub fn apply_recovered(&self, readings: &[Reading]) -> usize {
        self.apply_with(readings, Instant::now(), SystemTime::now(), true)
    }

    /// Marks every one of `properties` failed with `reason` (their last values are kept), as a
    /// source does when its connection is lost or a plugin when it fails. Returns how many
    /// samples changed.
    pub fn fail_all(
        &self,
        properties: impl IntoIterator<Item = PropertyId>,
        reason: QualityReason,
    ) -> usize {
        let readings: Vec<_> = properties
            .into_iter()
            .map(|id| Reading::failed(id, reason))
            .collect();
        self.apply(&readings)
    }

    /// Reports that `messages` upstream messages a source missed are lost for good (the server
    /// no longer has them): the change log records a gap ([`Tapped::UpstreamLost`]). Does nothing
    /// without a tap. Never waits.
    pub fn upstream_lost(&self, messages: u64) {
        if let Some(tap) = self.tap.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
            tap.push_upstream_lost(messages);
        }
    }

    /// Applies readings as of `now` (monotonic, for staleness) and `wall` (server timestamp).
    /// Returns how many changes were published (late samples are not; see [`Self::apply`]).
    pub fn apply_at(&self, readings: &[Reading], now: Instant, wall: SystemTime) -> usize {
        self.apply_with(readings, now, wall, false)
    }

    /// [`Self::apply_at`]; with `recovered`, older samples are late ([`Self::apply_recovered`]).
    fn apply_with(
        &self,
        readings: &[Reading],
        now: Instant,
        wall: SystemTime,
        recovered: bool,
    ) -> usize {
        let mut changes = Vec::new();
        let mut late = Vec::new();
        let mut published = 0;
        let tap = self.tap.read().unwrap_or_else(|e| e.into_inner()).clone();
        let listening = !self.fanout.is_empty() || tap.is_some();
        {
            let mut slots = self.slots.write().unwrap_or_else(|e| e.into_inner());
            for reading in readings {
                let Some(slot) = slots.get_mut(reading.property.index()) else {
                    continue;
                };
                match self.update(slot, reading, now, wall, recovered) {
                    Update::Unchanged => {}
                    Update::Changed => {
                        published += 1;
                        if listening {
                            changes.push(Change {
                                property: reading.property,
                                sample: slot.sample.clone(),
                            });
                        }
                    }
                    Update::Late(sample) => late.push((
                        changes.len(),
                        Change {
                            property: reading.property,
                            sample,
                        },
                    )),
                }
            }
            // Under the slots' lock: the log holds changes in exactly the order the twin stored
            // them (a stale sweep and a source's reading of one property cannot swap places).
            // The tap's own lock is held for a copy, never for its reader.
            if let Some(tap) = &tap {
                tap.push(&changes, &late);
            }
        }
        self.readings
            .fetch_add(readings.len() as u64, Ordering::Relaxed);
        self.changes.fetch_add(published as u64, Ordering::Relaxed);
        self.late.fetch_add(late.len() as u64, Ordering::Relaxed);
        self.filtered.fetch_add(
            (readings.len() - published - late.len()) as u64,
            Ordering::Relaxed,
        );
        self.fanout.publish(&changes);
        published
    }

    /// Applies one reading to its slot: whether the sample changed (and must be published), or,
    /// for a `recovered` reading, the late sample when its source time is older than the
    /// current sample's.
    fn update(
        &self,
        slot: &mut Slot,
        reading: &Reading,
        now: Instant,
        wall: SystemTime,
        recovered: bool,
    ) -> Update {
        let decl = self.model.decl(reading.property);
        let def = self.model.property(reading.property);
        let old = &slot.sample;
        let is_late = recovered
            && reading.outcome.is_ok()
            && matches!((reading.source_time, old.source_time), (Some(at), Some(held)) if at < held);
        if !is_late {
            slot.last_refresh = Some(now);
        }
        let (value, quality, source_time) = match &reading.outcome {
            Ok(raw) => match def.scaling.to_eu(raw, decl.data_type) {
                Ok(eu) => {
                    let in_range = match (eu.as_f64(), decl.range) {
                        // NaN and ±infinity are never Good, with a range or without one.
                        (Some(v), _) if !v.is_finite() => false,
                        (Some(v), Some(range)) => range.contains(v),
                        _ => true,
                    };
                    let quality = match reading.quality {
                        _ if !in_range => Quality::bad(QualityReason::OutOfRange),
                        Some(quality) => quality,
                        None => Quality::GOOD,
                    };
                    (Some(eu), quality, Some(reading.source_time.unwrap_or(wall)))
                }
                Err(_) => (
                    old.value.clone(),
                    Quality::bad(QualityReason::ConfigurationError),
                    old.source_time,
                ),
            },
            Err(reason) => {
                let quality = match *reason {
                    QualityReason::Stale => Quality::uncertain(*reason),
                    // No usable value came with the code: at best uncertain, the last value kept.
                    QualityReason::Upstream(code) => match Quality::from_status_code(code) {
                        q if q.is_good() => Quality::uncertain(*reason),
                        q => q,
                    },
                    _ => Quality::bad(*reason),
                };
                (old.value.clone(), quality, old.source_time)
            }
        };
        if is_late {
            return Update::Late(Sample {
                value,
                quality,
                source_time,
                server_time: wall,
            });
        }
        let quality_changed = quality != old.quality;
        let value_changed = match (&old.value, &value) {
            (Some(Value::Float(a)), Some(Value::Float(b))) if a.is_nan() || b.is_nan() => {
                a.is_nan() != b.is_nan()
            }
            (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) if !matches!(a, Value::String(_)) => {
                    let threshold = decl.deadband.threshold(decl.range);
                    if threshold > 0.0 {
                        (y - x).abs() > threshold
                    } else {
                        a != b
                    }
                }
                _ => a != b,
            },
            (None, None) => false,
            _ => true,
        };
        if !quality_changed && !value_changed {
            return Update::Unchanged;
        }
        slot.sample = Sample {
            value,
            quality,
            source_time,
            server_time: wall,
        };
        Update::Changed
    }

    /// Marks good properties whose source has not refreshed them for `stale_after_polls` refresh
    /// intervals as uncertain (stale), keeping their value. Returns how many were marked.
    pub fn sweep_stale(&self, now: Instant, wall: SystemTime) -> usize {
        let mut stale = Vec::new();
        {
            let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
            for (index, slot) in slots.iter().enumerate() {
                let def = &self.model.properties()[index];
                let (Some(last), Some(interval)) = (slot.last_refresh, def.refresh_interval) else {
                    continue;
                };
                if slot.sample.quality.is_good()
                    && now.saturating_duration_since(last) > interval * self.stale_after_polls
                {
                    stale.push(Reading::failed(
                        PropertyId(index as u32),
                        QualityReason::Stale,
                    ));
                }
            }
        }
        if stale.is_empty() {
            return 0;
        }
        // Applying a stale reading refreshes `last_refresh`; that is fine: the quality already
        // says uncertain, and the next real reading sets it again.
        self.apply_at(&stale, now, wall)
    }

    /// The current sample of one property.
    pub fn sample(&self, property: PropertyId) -> Sample {
        self.slots.read().unwrap_or_else(|e| e.into_inner())[property.index()]
            .sample
            .clone()
    }

    /// The current samples of several properties, under one lock.
    pub fn samples(&self, properties: &[PropertyId]) -> Vec<Sample> {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        properties
            .iter()
            .map(|id| slots[id.index()].sample.clone())
            .collect()
    }

    /// Counts of properties per quality level: (good, uncertain, bad).
    pub fn quality_counts(&self) -> (usize, usize, usize) {
        let slots = self.slots.read().unwrap_or_else(|e| e.into_inner());
        slots.iter().fold((0, 0, 0), |(g, u, b), slot| {
            match slot.sample.quality.level {
                QualityLevel::Good => (g + 1, u, b),
                QualityLevel::Uncertain => (g, u + 1, b),
                QualityLevel::Bad => (g, u, b + 1),
            }
        })
    }

    /// Subscribes to changes. `capacity` changes queue up before coalescing starts.
    pub fn subscribe(&self, filter: Filter, capacity: usize) -> Subscription {
        self.fanout.subscribe(filter, capacity)
    }

    /// Taps every change from now on, losslessly and in order, with room for `capacity` queued
    /// changes before further ones are counted as lost (see [`tap`]); replaces an earlier tap.
    /// The change log's one way in: it never blocks [`Self::apply`].
    pub fn tap(&self, capacity: usize) -> TapReceiver {
        let shared = tap::shared(capacity);
        *self.tap.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::clone(&shared));
        TapReceiver { shared }
    }

    /// Counters for metrics.
    pub fn stats(&self) -> TwinStats {
        TwinStats {
            readings: self.readings.load(Ordering::Relaxed),
            changes: self.changes.load(Ordering::Relaxed),
            filtered: self.filtered.load(Ordering::Relaxed),
            late: self.late.load(Ordering::Relaxed),
            coalesced: self.fanout.coalesced_total(),
            subscribers: self.fanout.subscriber_count(),
        }
    }
}

#[cfg(test)]
mod tests;
