//! Logins, one piece of code for every northbound service (OPC UA sessions, admin HTTP): the
//! per-address throttle of failed logins, and argon2 password checks on a pool of their own.
//!
//! A login is checked in this order, each step before anything costs more:
//!
//! 1. **Throttle** ([`LoginThrottle`]): a token of the peer address's bucket is taken *before*
//!    the password is checked, so parallel guesses cannot all pass on one token; with none left
//!    the login is refused at once, with the time until the next token ([`Refusal::Throttled`]).
//! 2. **Pool** ([`LoginPool`]): the argon2 check (19 MiB and tens of milliseconds each with the
//!    defaults of `twinloom hash-password`) runs on [`login_threads`] threads of its own behind
//!    a queue of [`LOGIN_QUEUE`] waiting checks. A full queue refuses the login at once
//!    ([`Refusal::Busy`]): memory before anyone is authenticated is bounded by the threads, and
//!    the tokio blocking pool the plugins' calls run on never sees a password check.
//! 3. A login that succeeds gives its token back; a busy pool gives it back too (no password was
//!    checked).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;

use crate::telemetry::metrics::MetricSet;

/// Most threads that run argon2 password checks, for all services together.
pub const LOGIN_THREADS_MAX: usize = 2;

/// Password checks that may wait for a thread; one more is refused at once ([`Refusal::Busy`])
/// and counted in `twinloom_login_queue_full_total`. A waiting check holds a user name and a
/// password, not argon2's memory; the last waits about 16 checks' time (≈ 0.5 s).
pub const LOGIN_QUEUE: usize = 16;

/// The threads of the daemon's password pool: one less than the machine's cores, at least 1,
/// at most [`LOGIN_THREADS_MAX`]. A flood of logins then always leaves a core to the sources
/// and plugins, and holds at most this many argon2 memories (19 MiB each with the defaults of
/// `twinloom hash-password`).
pub fn login_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .clamp(1, LOGIN_THREADS_MAX)
}

/// Addresses a throttle remembers at most; beyond, the ones whose bucket has refilled are
/// forgotten.
const THROTTLE_ADDRESSES: usize = 10_000;

/// Why a login was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer address has no token left: refused without checking the password; the next
    /// token comes after `retry_after`.
    Throttled {
        /// Time until the address may try again.
        retry_after: Duration,
    },
    /// [`LOGIN_QUEUE`] password checks are already waiting: refused without checking.
    Busy,
    /// No user has the name (checked against a stand-in hash all the same).
    UnknownUser,
    /// The user exists; the password is wrong.
    WrongPassword,
    /// The service has no users at all.
    NoUsers,
}

impl Refusal {
    /// A fixed lowercase name (a metric label value).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Throttled { .. } => "throttled",
            Self::Busy => "busy",
            Self::UnknownUser => "unknown-user",
            Self::WrongPassword => "wrong-password",
            Self::NoUsers => "no-users",
        }
    }

    /// Why, for a log line.
    pub fn why(self) -> &'static str {
        match self {
            Self::Throttled { .. } => "too many failed logins from this address",
            Self::Busy => "too many logins at once",
            Self::UnknownUser => "unknown user",
            Self::WrongPassword => "wrong password",
            Self::NoUsers => "no users are configured",
        }
    }
}

/// A service's logins: its throttle and the daemon's password pool.
#[derive(Debug)]
pub struct Logins {
    throttle: LoginThrottle,
    pool: LoginPool,
}

impl Logins {
    /// Logins checked with `throttle`'s per-address limits on `pool`.
    pub fn new(throttle: LoginThrottle, pool: LoginPool) -> Self {
        Self { throttle, pool }
    }

    /// Checks `password` for the user whose hash is `known` (`None`: no user has the name),
    /// from `peer` (`None` when the transport does not say: not throttled). An unknown name is
    /// checked against `stand_in` (a real hash of the same service; `None` when it has no
    /// users) and refused whatever the outcome, so both answers take as long and response times
    /// do not tell user names apart.
    ///
    /// Errors: the [`Refusal`], in the order of the module's steps.
    pub async fn check(
        &self,
        peer: Option<IpAddr>,
        known: Option<&str>,
        stand_in: Option<&str>,
        password: &str,
    ) -> Result<(), Refusal> {
        if let Some(address) = peer {
            self.throttle
                .take(address)
                .map_err(|retry_after| Refusal::Throttled { retry_after })?;
        }
        let give_back = || {
            if let Some(address) = peer {
                self.throttle.give_back(address);
            }
        };
        let Some(hash) = known.or(stand_in) else {
            return Err(Refusal::NoUsers);
        };
        match self.pool.verify(hash, password).await {
            Err(Busy) => {
                give_back();
                Err(Refusal::Busy)
            }
            Ok(true) if known.is_some() => {
                give_back();
                Ok(())
            }
            Ok(_) if known.is_some() => Err(Refusal::WrongPassword),
            Ok(_) => Err(Refusal::UnknownUser),
        }
    }
}

/// Failed logins per peer address, as a token bucket per address: `burst` failures in a row,
/// then `per_minute`. Per address, never per user name: throttling a name would let anyone lock
/// out `operator`.
#[derive(Debug)]
pub struct LoginThrottle {
    burst: f64,
    per_second: f64,
    /// Tokens left and when they were counted, per address.
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// Logins refused by the throttle (read by the service's metrics).
    throttled: Arc<AtomicU64>,
}

impl LoginThrottle {
    /// A throttle of `burst` failed logins in a row per address, regaining `per_minute`; logins
    /// it refuses are counted in `throttled`. Both limits are at least 1 (checked at config
    /// load).
    pub fn new(burst: u32, per_minute: u32, throttled: Arc<AtomicU64>) -> Self {
        Self {
            burst: f64::from(burst.max(1)),
            per_second: f64::from(per_minute.max(1)) / 60.0,
            buckets: Mutex::default(),
            throttled,
        }
    }

    fn tokens(&self, bucket: (f64, Instant), now: Instant) -> f64 {
        let (tokens, at) = bucket;
        (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// Takes one token from `address` for a login about to be checked, before the (slow)
    /// password check, so that parallel guesses cannot all pass on one token. Without one the
    /// login is refused (counted) and the error is the time until the next token (whole
    /// seconds, at least 1 s: what `Retry-After` says). A login that succeeds gives its token
    /// back ([`Self::give_back`]).
    pub fn take(&self, address: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= THROTTLE_ADDRESSES {
            buckets.retain(|_, bucket| self.tokens(*bucket, now) < self.burst);
        }
        let tokens = buckets
            .get(&address)
            .map_or(self.burst, |&bucket| self.tokens(bucket, now));
        if tokens < 1.0 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            let wait = ((1.0 - tokens) / self.per_second).ceil().max(1.0);
            return Err(Duration::from_secs_f64(wait));
        }
        buckets.insert(address, (tokens - 1.0, now));
        Ok(())
    }

    /// Gives back the token a login from `address` took: it succeeded, or its password was
    /// never checked.
    pub fn give_back(&self, address: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(&address) {
            *bucket = ((self.tokens(*bucket, now) + 1.0).min(self.burst), now);
        }
    }
}

/// The password pool's queue is full: the check was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{LOGIN_QUEUE} password checks are already waiting")]
pub struct Busy;

/// The password pool's metric families (`twinloom_login_*`), shared by every service.
#[derive(Debug, Clone, Default)]
pub struct LoginMetrics {
    /// Argon2 password checks run.
    checks: Counter,
    /// Logins refused because the queue was full.
    queue_full: Counter,
}

impl MetricSet for LoginMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let sub = registry.sub_registry_with_prefix("login");
        sub.register(
            "checks",
            "Argon2 password checks run for logins (OPC UA and admin HTTP)",
            metrics.checks.clone(),
        );
        sub.register(
            "queue_full",
            "Logins refused at once because LOGIN_QUEUE (16) password checks were waiting",
            metrics.queue_full.clone(),
        );
        metrics
    }
}

/// One password check for a pool thread.
struct Job {
    hash: String,
    password: String,
    answer: oneshot::Sender<bool>,
}

/// Argon2 password checks on threads of their own with a bounded queue (see the module's
/// steps). Cheap to clone; the threads end once every clone is dropped.
#[derive(Debug, Clone)]
pub struct LoginPool {
    jobs: mpsc::SyncSender<Job>,
    metrics: LoginMetrics,
}

impl LoginPool {
    /// Starts `threads` threads (named `twinloom-login`) behind a queue of `queue` checks.
    ///
    /// Errors: a thread cannot be started (the operating system's limit on threads).
    pub fn start(threads: usize, queue: usize, metrics: LoginMetrics) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::sync_channel::<Job>(queue);
        let inbox = Arc::new(Mutex::new(inbox));
        for _ in 0..threads.max(1) {
            let inbox = Arc::clone(&inbox);
            let checks = metrics.checks.clone();
            // A thread of its own, outside the supervisor: it holds no task state, ends when
            // the pool is dropped, and each check is bounded by argon2's own parameters. Not the
            // tokio blocking pool, which the plugins' calls run on.
            std::thread::Builder::new()
                .name("twinloom-login".into())
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let job = inbox.lock().unwrap_or_else(|e| e.into_inner()).recv();
                        let Ok(job) = job else { return };
                        checks.inc();
                        let _ = job.answer.send(verify(&job.hash, &job.password));
                    }
                })?;
        }
        Ok(Self { jobs, metrics })
    }

    /// Whether `password` matches the argon2 `hash` (PHC string format); a hash that does not
    /// parse matches nothing.
    ///
    /// Errors: [`Busy`] at once (counted) when [`LOGIN_QUEUE`] checks are already waiting.
    pub async fn verify(&self, hash: &str, password: &str) -> Result<bool, Busy> {
        let (answer, answered) = oneshot::channel();
        let job = Job {
            hash: hash.to_owned(),
            password: password.to_owned(),
            answer,
        };
        match self.jobs.try_send(job) {
            Ok(()) => Ok(answered.await.unwrap_or(false)),
            Err(mpsc::TrySendError::Full(_)) => {
                self.metrics.queue_full.inc();
                Err(Busy)
            }
            // The threads are gone (could not happen while a pool exists): no match.
            Err(mpsc::TrySendError::Disconnected(_)) => Ok(false),
        }
    }
}

/// Hashes a password into an argon2id PHC string with a random salt (for `twinloom hash-password`), for
/// every service's `password_hash`.
///
/// Errors: argon2 rejects the input (only for absurd lengths).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// The argon2 check itself (deliberately slow).
fn verify(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(burst: u32, per_minute: u32) -> (LoginThrottle, Arc<AtomicU64>) {
        let throttled = Arc::new(AtomicU64::new(0));
        (
            LoginThrottle::new(burst, per_minute, Arc::clone(&throttled)),
            throttled,
        )
    }

    #[test]
    fn failed_logins_throttle_their_address_only() {
        let (throttle, throttled) = throttle(3, 1);
        let (attacker, operator): (IpAddr, IpAddr) = ([10, 0, 0, 66].into(), [10, 0, 0, 7].into());
        for _ in 0..3 {
            assert!(throttle.take(attacker).is_ok());
        }
        // One token a minute: the next comes in a minute (give or take the test's own time).
        let retry = throttle.take(attacker).unwrap_err();
        assert!((59..=60).contains(&retry.as_secs()), "{retry:?}");
        assert!(throttle.take(attacker).is_err());
        assert_eq!(throttled.load(Ordering::Relaxed), 2);
        // Another address is not affected by the attacker's failures; a login that succeeds
        // gives its token back.
        for _ in 0..10 {
            assert!(throttle.take(operator).is_ok());
            throttle.give_back(operator);
        }
    }

    /// The token is taken before the password check: guesses in flight at the same time pass
    /// no more than the burst, however long each check takes.
    #[test]
    fn parallel_guesses_pass_no_more_than_the_burst() {
        let (throttle, _) = throttle(3, 1);
        let attacker: IpAddr = [10, 0, 0, 66].into();
        let admitted: usize = std::thread::scope(|scope| {
            let guesses: Vec<_> = (0..20)
                .map(|_| scope.spawn(|| usize::from(throttle.take(attacker).is_ok())))
                .collect();
            guesses.into_iter().map(|g| g.join().unwrap()).sum()
        });
        assert_eq!(admitted, 3);
    }

    fn hash(password: &str) -> String {
        hash_password(password).unwrap()
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let pool = LoginPool::start(1, 4, LoginMetrics::default()).unwrap();
        let hash = hash("s3cret");
        assert!(hash.starts_with("$argon2id$"));
        assert_eq!(pool.verify(&hash, "s3cret").await, Ok(true));
        assert_eq!(pool.verify(&hash, "secret").await, Ok(false));
        assert_eq!(pool.verify("not a hash", "s3cret").await, Ok(false));
        assert_eq!(pool.metrics.checks.get(), 3);
    }

    /// A full queue refuses at once, without a check: at most threads + queue checks are ever
    /// admitted, however many logins arrive together.
    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let pool = LoginPool::start(1, 2, LoginMetrics::default()).unwrap();
        let hash = hash("s3cret");
        let answers = futures::future::join_all((0..20).map(|_| pool.verify(&hash, "guess"))).await;
        let busy = answers.iter().filter(|a| **a == Err(Busy)).count();
        // The first is taken by the thread or waits with the next one; the rest find it full.
        assert!((17..=18).contains(&busy), "{answers:?}");
        assert_eq!(pool.metrics.queue_full.get(), busy as u64);
        assert_eq!(pool.metrics.checks.get(), 20 - busy as u64);
    }

    #[tokio::test]
    async fn logins_refuse_in_order_and_give_tokens_back() {
        let pool = LoginPool::start(1, 4, LoginMetrics::default()).unwrap();
        let (throttle, _) = throttle(2, 1);
        let logins = Logins::new(throttle, pool);
        let hash = hash("s3cret");
        let peer = Some(IpAddr::from([10, 0, 0, 7]));
        // Successes give their token back: any number of them.
        for _ in 0..3 {
            assert_eq!(
                logins.check(peer, Some(&hash), None, "s3cret").await,
                Ok(())
            );
        }
        assert_eq!(
            logins.check(peer, None, None, "x").await,
            Err(Refusal::NoUsers)
        );
        assert_eq!(
            logins.check(peer, None, Some(&hash), "s3cret").await,
            Err(Refusal::UnknownUser)
        );
        assert!(matches!(
            logins.check(peer, Some(&hash), None, "wrong").await,
            Err(Refusal::Throttled { .. })
        ));
        // Without a peer address there is nothing to throttle.
        assert_eq!(
            logins.check(None, Some(&hash), None, "wrong").await,
            Err(Refusal::WrongPassword)
        );
    }
}
