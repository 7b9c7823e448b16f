//! Change fan-out: every subscriber gets the twin's changes over its own bounded queue.
//!
//! A subscriber that keeps up receives every change in order. When its queue is full (it is
//! slow), further changes go to an overflow map holding only the **latest change per property**:
//! memory stays bounded by the number of properties, the subscriber still ends up with the current
//! value of everything, and each change replaced in the overflow map is counted as *coalesced*.
//! While the overflow map is not empty every new change goes there too, so per-property order
//! is kept. A slow subscriber never slows the twin or the other subscribers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use indexmap::IndexMap;
use tokio::sync::Notify;

use crate::twin::model::PropertyId;
use crate::twin::value::Sample;

/// Default queue capacity of a subscription, in changes.
pub const DEFAULT_SUBSCRIBER_CAPACITY: usize = 4096;

/// One change of one property's sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The property that changed.
    pub property: PropertyId,
    /// Its new sample.
    pub sample: Sample,
}

/// Which properties a subscription receives.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Every property.
    All,
    /// Only these properties.
    Properties(Vec<PropertyId>),
}

#[derive(Debug, Default)]
struct Pending {
    queue: VecDeque<Change>,
    overflow: IndexMap<PropertyId, Change>,
}

#[derive(Debug)]
struct Shared {
    /// Bitset over property ids; `None` for all.
    filter: Option<Vec<u64>>,
    capacity: usize,
    pending: Mutex<Pending>,
    notify: Notify,
    coalesced: AtomicU64,
    alive: AtomicBool,
}

impl Shared {
    fn wants(&self, property: PropertyId) -> bool {
        match &self.filter {
            None => true,
            Some(bits) => bits
                .get(property.index() / 64)
                .is_some_and(|word| word >> (property.index() % 64) & 1 == 1),
        }
    }
}

/// The publishing side, owned by the twin.
#[derive(Debug, Default)]
pub(crate) struct Fanout {
    subscribers: RwLock<Vec<Arc<Shared>>>,
    /// Entries in `subscribers` (live or not yet pruned), read without the lock.
    registered: std::sync::atomic::AtomicUsize,
    coalesced_total: AtomicU64,
}

impl Fanout {
    /// A new subscription with `capacity` queued changes before coalescing starts (at least 1).
    pub(crate) fn subscribe(&self, filter: Filter, capacity: usize) -> Subscription {
        let filter = match filter {
            Filter::All => None,
            Filter::Properties(ids) => {
                let max = ids.iter().map(|id| id.index()).max().unwrap_or(0);
                let mut bits = vec![0u64; max / 64 + 1];
                for id in ids {
                    bits[id.index() / 64] |= 1 << (id.index() % 64);
                }
                Some(bits)
            }
        };
        let shared = Arc::new(Shared {
            filter,
            capacity: capacity.max(1),
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            coalesced: AtomicU64::new(0),
            alive: AtomicBool::new(true),
        });
        let mut subscribers = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
        subscribers.push(Arc::clone(&shared));
        self.registered.store(subscribers.len(), Ordering::Relaxed);
        Subscription { shared }
    }

    /// Hands `changes` to every live subscriber that wants them. Never blocks on a subscriber.
    pub(crate) fn publish(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let mut saw_dead = false;
        {
            let subscribers = self.subscribers.read().unwrap_or_else(|e| e.into_inner());
            for subscriber in subscribers.iter() {
                if !subscriber.alive.load(Ordering::Relaxed) {
                    saw_dead = true;
                    continue;
                }
                let mut delivered = false;
                let mut coalesced = 0u64;
                {
                    let mut pending = subscriber.pending.lock().unwrap_or_else(|e| e.into_inner());
                    for change in changes.iter().filter(|c| subscriber.wants(c.property)) {
                        delivered = true;
                        if pending.overflow.is_empty() && pending.queue.len() < subscriber.capacity
                        {
                            pending.queue.push_back(change.clone());
                        } else if pending
                            .overflow
                            .insert(change.property, change.clone())
                            .is_some()
                        {
                            coalesced += 1;
                        }
                    }
                }
                if coalesced > 0 {
                    subscriber.coalesced.fetch_add(coalesced, Ordering::Relaxed);
                    self.coalesced_total.fetch_add(coalesced, Ordering::Relaxed);
                }
                if delivered {
                    subscriber.notify.notify_one();
                }
            }
        }
        if saw_dead {
            let mut subscribers = self.subscribers.write().unwrap_or_else(|e| e.into_inner());
            subscribers.retain(|s| s.alive.load(Ordering::Relaxed));
            self.registered.store(subscribers.len(), Ordering::Relaxed);
        }
    }

    /// Whether nobody is subscribed (then the twin need not build change events).
    pub(crate) fn is_empty(&self) -> bool {
        self.registered.load(Ordering::Relaxed) == 0
    }

    /// Changes replaced in any subscriber's overflow map since start.
    pub(crate) fn coalesced_total(&self) -> u64 {
        self.coalesced_total.load(Ordering::Relaxed)
    }

    /// Live subscriptions.
    pub(crate) fn subscriber_count(&self) -> usize {
        self.subscribers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|s| s.alive.load(Ordering::Relaxed))
            .count()
    }
}

/// The receiving side of a subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    shared: Arc<Shared>,
}

impl Subscription {
    /// Moves every pending change into `out` (queue first, then the coalesced overflow, both in
    /// arrival order) and returns how many were moved. Does not wait.
    pub fn try_recv(&mut self, out: &mut Vec<Change>) -> usize {
        let mut pending = self
            .shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = out.len();
        out.extend(pending.queue.drain(..));
        out.extend(pending.overflow.drain(..).map(|(_, change)| change));
        out.len() - before
    }

    /// Waits until at least one change is pending, then moves all of them into `out`; returns how many.
    /// Cancel-safe: nothing is lost if the future is dropped.
    pub async fn recv(&mut self, out: &mut Vec<Change>) -> usize {
        loop {
            let moved = self.try_recv(out);
            if moved > 0 {
                return moved;
            }
            self.shared.notify.notified().await;
        }
    }

    /// Changes this subscriber lost to coalescing (a newer change of the same property replaced them).
    pub fn coalesced(&self) -> u64 {
        self.shared.coalesced.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.alive.store(false, Ordering::Relaxed);
    }
}
