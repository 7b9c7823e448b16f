//! Twinloom patch: bounds on connections and on what a client may cost before it has activated a
//! session.
//!
//! The limits agreed in Hello/Acknowledge hold for a connection's whole life (OPC UA Part 6
//! §7.1.2), so a server that offers large messages to its users offers them to every peer that
//! says Hello. These bounds apply until a session is activated on the connection; they are off
//! (0 / `None`) unless set with `ServerBuilder::hardening_limits`.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// Bounds on connections and on peers without an activated session; 0 or `None` is no bound.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HardeningLimits {
    /// Most open connections; a further one is closed as it is accepted.
    pub max_connections: usize,
    /// Most open connections from one IP address.
    pub max_connections_per_address: usize,
    /// Time from accepting a connection to a session activated on it; past it the connection is
    /// closed with `Bad_Timeout`.
    pub handshake_timeout: Option<Duration>,
    /// Largest message (the sum of its chunks' bodies, in bytes) a connection may send before a
    /// session is activated on it; a larger one closes the connection.
    pub max_unauthenticated_message_size: usize,
    /// Most bytes of incomplete messages held for all connections without an activated session
    /// together; a chunk that does not fit closes its connection.
    pub max_unauthenticated_buffered: usize,
    /// Most activated sessions of one user (all anonymous sessions are one user); ActivateSession
    /// beyond answers `Bad_TooManySessions`.
    pub max_sessions_per_user: usize,
    /// Most subscriptions of one user across their sessions; CreateSubscription beyond answers
    /// `Bad_TooManySubscriptions`.
    pub max_subscriptions_per_user: usize,
}

/// How often each bound bit, for the embedding application's metrics.
#[derive(Debug, Default)]
pub struct HardeningCounters {
    /// Connections closed on accept because `max_connections` were open.
    pub refused_connections: AtomicU64,
    /// Connections closed on accept because `max_connections_per_address` were open from there.
    pub refused_per_address: AtomicU64,
    /// Connections closed because no session was activated within `handshake_timeout`.
    pub handshake_timeouts: AtomicU64,
    /// Connections closed for an unauthenticated message over its bound or a full shared budget.
    pub unauthenticated_overflows: AtomicU64,
    /// ActivateSession refused because the user had `max_sessions_per_user` sessions.
    pub sessions_per_user: AtomicU64,
    /// CreateSubscription refused because the user had `max_subscriptions_per_user`.
    pub subscriptions_per_user: AtomicU64,
}

/// The server's shared state for these bounds (in `ServerInfo::hardening`).
#[derive(Debug, Default)]
pub struct Hardening {
    /// The bounds.
    pub limits: HardeningLimits,
    /// How often they bit.
    pub counters: HardeningCounters,
    buffered: AtomicUsize,
    connections: Mutex<Connections>,
}

#[derive(Debug, Default)]
struct Connections {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

impl Hardening {
    /// State for `limits`, with nothing open.
    pub fn new(limits: HardeningLimits) -> Self {
        Self {
            limits,
            ..Default::default()
        }
    }

    /// Bytes of incomplete messages held now for connections without an activated session.
    pub fn unauthenticated_buffered(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.connections.lock().total
    }

    /// A place for a new connection from `address`, or `None` (counted) when a bound is reached.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Option<ConnectionPermit> {
        let mut connections = self.connections.lock();
        let limits = &self.limits;
        if limits.max_connections > 0 && connections.total >= limits.max_connections {
            self.counters
                .refused_connections
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let from_there = connections.per_address.entry(address).or_default();
        if limits.max_connections_per_address > 0
            && *from_there >= limits.max_connections_per_address
        {
            self.counters
                .refused_per_address
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *from_there += 1;
        connections.total += 1;
        Some(ConnectionPermit {
            hardening: Arc::clone(self),
            address,
        })
    }

    /// Takes `bytes` from the shared unauthenticated budget; `false` (nothing taken) when they
    /// do not fit.
    pub(crate) fn reserve(&self, bytes: usize) -> bool {
        let max = self.limits.max_unauthenticated_buffered;
        self.buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&n| max == 0 || n <= max)
            })
            .is_ok()
    }

    /// Gives `bytes` back to the shared unauthenticated budget.
    pub(crate) fn release(&self, bytes: usize) {
        self.buffered.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// One admitted connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    hardening: Arc<Hardening>,
    address: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut connections = self.hardening.connections.lock();
        connections.total -= 1;
        if let Some(count) = connections.per_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                connections.per_address.remove(&self.address);
            }
        }
    }
}

tokio::task_local! {
    static PEER: SocketAddr;
}

/// The remote address of the connection whose request is being served, for an `AuthManager`
/// that throttles logins per address; `None` outside a connection's task (reverse connections).
pub fn connection_peer() -> Option<SocketAddr> {
    PEER.try_with(|peer| *peer).ok()
}

/// Runs a connection's task with its peer address known to [`connection_peer`].
pub(crate) async fn serving_peer<F: Future>(peer: SocketAddr, task: F) -> F::Output {
    PEER.scope(peer, task).await
}
