//! Who may open a session and what they may do: argon2-hashed users with roles, with failed
//! logins throttled per peer address.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use async_trait::async_trait;
use opcua::server::ServerEndpoint;
use opcua::server::address_space::AccessLevel;
use opcua::server::authenticator::{
    AuthManager, Password, UserToken, user_pass_security_policy_id, user_pass_security_policy_uri,
};
use opcua::types::{Error, NodeId, StatusCode, UAString, UserTokenPolicy, UserTokenType};
use prometheus_client::metrics::counter::Counter;

use crate::config::opcua_server::{OpcUaServerConfig, Role};
use crate::northbound::login::{LoginPool, LoginThrottle, Logins};

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
    logins: Logins,
    /// `[history]`, when history is served: whose sessions may read it.
    history: Option<crate::config::history::HistoryConfig>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("anonymous", &self.anonymous)
            .field("logins", &self.logins)
            .finish()
    }
}

impl Authenticator {
    /// An authenticator for `config`'s users, their passwords checked on `pool`; failed logins
    /// increment `failed_logins`, logins refused by the per-address throttle `throttled`.
    pub fn new(
        config: &OpcUaServerConfig,
        failed_logins: Counter,
        throttled: Arc<AtomicU64>,
        pool: LoginPool,
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
            logins: Logins::new(
                LoginThrottle::new(
                    config.limits.login_failures_burst,
                    config.limits.login_failures_per_minute,
                    throttled,
                ),
                pool,
            ),
            history: None,
        }
    }

    /// Sets who may read history (`[history] readers`): the HistoryRead bit of UserAccessLevel
    /// is cleared for every other role (OPC UA Part 11 §5.2.3: `Bad_UserAccessDenied`).
    pub fn with_history_readers(
        mut self,
        history: Option<crate::config::history::HistoryConfig>,
    ) -> Self {
        self.history = history;
        self
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
        let known = self.users.get(username).map(|(hash, _)| hash.as_str());
        match self
            .logins
            .check(peer, known, self.stand_in.as_deref(), password.get())
            .await
        {
            Ok(()) => {
                super::events::LoggedIn { user: username }.emit();
                Ok(UserToken(username.to_owned()))
            }
            Err(refusal) => Err(self.reject(endpoint, username, refusal.why())),
        }
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
        let role = self.role(token);
        let mut level = match role {
            Role::Operator => user_access_level,
            Role::Viewer => user_access_level & !AccessLevel::CURRENT_WRITE,
        };
        if !self.history.as_ref().is_some_and(|h| h.may_read(role)) {
            level &= !AccessLevel::HISTORY_READ;
        }
        level
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
