//! Who may open a session and what they may do: argon2-hashed users with roles, with failed
//! logins throttled per peer address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use opcua::server::ServerEndpoint;
use opcua::server::address_space::AccessLevel;
use opcua::server::authenticator::{
    AuthManager, Password, UserToken, user_pass_security_policy_id, user_pass_security_policy_uri,
};
use opcua::types::{Error, NodeId, StatusCode, UAString, UserTokenPolicy, UserTokenType};
use prometheus_client::metrics::counter::Counter;

use crate::config::opcua_server::{ClientLimits, OpcUaServerConfig, Role};

/// Policy id of the anonymous user token (OPC UA Part 4 §7.41).
const POLICY_ID_ANONYMOUS: &str = "anonymous";

/// Authenticates OPC UA sessions against the configured users and applies their roles.
pub struct Authenticator {
    users: HashMap<String, (String, Role)>,
    /// The hash an unknown user name is checked against (the first user's), so that refusing it
    /// takes as long as refusing a wrong password.
    stand_in: Option<String>,
    anonymous: bool,
    failed_logins: Counter,
    throttle: LoginThrottle,
}

/// Failed logins per peer address, as a token bucket per address: `burst` failures in a row,
/// then `per_minute`. Per address, never per user name: throttling a name would let anyone lock
/// out `operator`.
#[derive(Debug)]
struct LoginThrottle {
    burst: f64,
    per_second: f64,
    /// Tokens left and when they were counted, per address.
    buckets: std::sync::Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// Logins refused by the throttle (shared with the server's metrics collector).
    throttled: Arc<AtomicU64>,
}

/// Addresses remembered at most; beyond, the ones whose bucket has refilled are forgotten.
const THROTTLE_ADDRESSES: usize = 10_000;

impl LoginThrottle {
    fn new(limits: &ClientLimits, throttled: Arc<AtomicU64>) -> Self {
        Self {
            burst: f64::from(limits.login_failures_burst),
            per_second: f64::from(limits.login_failures_per_minute) / 60.0,
            buckets: Default::default(),
            throttled,
        }
    }

    fn tokens(&self, bucket: (f64, Instant), now: Instant) -> f64 {
        let (tokens, at) = bucket;
        (tokens + now.duration_since(at).as_secs_f64() * self.per_second).min(self.burst)
    }

    /// Takes one token from `address` for a login about to be checked, before the (slow)
    /// password check, so that parallel guesses cannot all pass on one token; `false` (counted)
    /// when there is none. A login that succeeds gives its token back ([`Self::succeeded`]).
    fn take(&self, address: IpAddr) -> bool {
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
            return false;
        }
        buckets.insert(address, (tokens - 1.0, now));
        true
    }

    /// Gives back the token a login from `address` took: it succeeded.
    fn succeeded(&self, address: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = buckets.get_mut(&address) {
            *bucket = ((self.tokens(*bucket, now) + 1.0).min(self.burst), now);
        }
    }
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("anonymous", &self.anonymous)
            .field("throttle", &self.throttle)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `config`'s users; failed logins increment `failed_logins`, logins
    /// refused by the per-address throttle `throttled`.
    pub fn new(
        config: &OpcUaServerConfig,
        failed_logins: Counter,
        throttled: Arc<AtomicU64>,
    ) -> Self {
        Self {
            users: config
                .users
                .iter()
                .map(|u| (u.name.clone(), (u.password_hash.clone(), u.role)))
                .collect(),
            stand_in: config.users.first().map(|u| u.password_hash.clone()),
            anonymous: config.anonymous,
            failed_logins,
            throttle: LoginThrottle::new(&config.limits, throttled),
        }
    }

    /// The role of an authenticated session's user token (anonymous sessions are viewers).
    pub fn role(&self, token: &UserToken) -> Role {
        self.users
            .get(&token.0)
            .map_or(Role::Viewer, |(_, role)| *role)
    }

    fn reject(&self, endpoint: &ServerEndpoint, user: &str, why: &str) -> Error {
        super::events::LoginFailed {
            user,
            policy: &endpoint.security_policy,
            mode: &endpoint.security_mode,
            why,
        }
        .emit(&self.failed_logins);
        Error::new(StatusCode::BadUserAccessDenied, "login failed")
    }
}

#[async_trait]
impl AuthManager for Authenticator {
    async fn authenticate_anonymous_token(&self, endpoint: &ServerEndpoint) -> Result<(), Error> {
        if self.anonymous {
            Ok(())
        } else {
            Err(self.reject(endpoint, "(anonymous)", "anonymous sessions are disabled"))
        }
    }

    async fn authenticate_username_identity_token(
        &self,
        endpoint: &ServerEndpoint,
        username: &str,
        password: &Password,
    ) -> Result<UserToken, Error> {
        // The peer's address comes from the connection's task (patch 0005 of the series).
        let peer = opcua::server::hardening::connection_peer().map(|peer| peer.ip());
        if let Some(address) = peer
            && !self.throttle.take(address)
        {
            return Err(self.reject(
                endpoint,
                username,
                "too many failed logins from this address",
            ));
        }
        let known = self.users.get(username).map(|(hash, _)| hash.as_str());
        let Some(stand_in) = &self.stand_in else {
            return Err(self.reject(endpoint, username, "no users are configured"));
        };
        if super::super::check_login(known, stand_in, password.get()).await {
            if let Some(address) = peer {
                self.throttle.succeeded(address);
            }
            super::events::LoggedIn { user: username }.emit();
            return Ok(UserToken(username.to_owned()));
        }
        let why = if known.is_some() {
            "wrong password"
        } else {
            "unknown user"
        };
        Err(self.reject(endpoint, username, why))
    }

    /// Methods (a plugin's `ClearQuarantine`, the gate's `Arm`) change what runs: operators
    /// only; `Disarm` makes the plant safer and is every session's.
    fn is_user_executable(&self, token: &UserToken, method_id: &NodeId) -> bool {
        let disarm = matches!(&method_id.identifier,
            opcua::types::Identifier::String(id) if id.as_ref() == super::node_manager::DISARM_METHOD);
        disarm || self.role(token) == Role::Operator
    }

    fn effective_user_access_level(
        &self,
        token: &UserToken,
        user_access_level: AccessLevel,
        _node_id: &NodeId,
    ) -> AccessLevel {
        match self.role(token) {
            Role::Operator => user_access_level,
            Role::Viewer => user_access_level & !AccessLevel::CURRENT_WRITE,
        }
    }

    fn user_token_policies(&self, endpoint: &ServerEndpoint) -> Vec<UserTokenPolicy> {
        let mut policies = Vec::new();
        if self.anonymous {
            policies.push(UserTokenPolicy {
                policy_id: UAString::from(POLICY_ID_ANONYMOUS),
                token_type: UserTokenType::Anonymous,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: UAString::null(),
            });
        }
        if !self.users.is_empty() {
            policies.push(UserTokenPolicy {
                policy_id: user_pass_security_policy_id(endpoint),
                token_type: UserTokenType::UserName,
                issued_token_type: UAString::null(),
                issuer_endpoint_url: UAString::null(),
                security_policy_uri: user_pass_security_policy_uri(endpoint),
            });
        }
        policies
    }
}

/// Hashes a password into an argon2id PHC string with a random salt (for `twinloom hash-password`).
///
/// Errors: argon2 rejects the input (only for absurd lengths).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_logins_throttle_their_address_only() {
        let limits = ClientLimits {
            login_failures_burst: 3,
            login_failures_per_minute: 1,
            ..ClientLimits::default()
        };
        let throttled = Arc::new(AtomicU64::new(0));
        let throttle = LoginThrottle::new(&limits, Arc::clone(&throttled));
        let (attacker, operator): (IpAddr, IpAddr) = ([10, 0, 0, 66].into(), [10, 0, 0, 7].into());
        for _ in 0..3 {
            assert!(throttle.take(attacker));
        }
        assert!(!throttle.take(attacker));
        assert!(!throttle.take(attacker));
        assert_eq!(throttled.load(Ordering::Relaxed), 2);
        // Another address is not affected by the attacker's failures; a login that succeeds
        // gives its token back.
        for _ in 0..10 {
            assert!(throttle.take(operator));
            throttle.succeeded(operator);
        }
    }

    /// The token is taken before the password check: guesses in flight at the same time pass
    /// no more than the burst, however long each check takes.
    #[test]
    fn parallel_guesses_pass_no_more_than_the_burst() {
        let limits = ClientLimits {
            login_failures_burst: 3,
            login_failures_per_minute: 1,
            ..ClientLimits::default()
        };
        let throttle = Arc::new(LoginThrottle::new(&limits, Arc::default()));
        let attacker: IpAddr = [10, 0, 0, 66].into();
        let admitted: usize = std::thread::scope(|scope| {
            let guesses: Vec<_> = (0..20)
                .map(|_| scope.spawn(|| usize::from(throttle.take(attacker))))
                .collect();
            guesses.into_iter().map(|g| g.join().unwrap()).sum()
        });
        assert_eq!(admitted, 3);
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let hash = hash_password("s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(crate::northbound::verify_password(hash.clone(), "s3cret".into()).await);
        assert!(!crate::northbound::verify_password(hash, "secret".into()).await);
        assert!(!crate::northbound::verify_password("not a hash".into(), "s3cret".into()).await);
    }
}
