//! Northbound services: how the twin is served to the outside.
//!
//! Each service is a module with one `start(section, …, ComponentContext)` that binds what it
//! serves on, spawns its tasks under the supervisor and registers its own readiness condition.

pub mod admin_http;
pub mod opcua_server;

/// Whether `password` matches the argon2 `hash` (PHC string format), checked on the blocking pool
/// (argon2 is deliberately slow). A hash that does not parse matches nothing.
pub(crate) async fn verify_password(hash: String, password: String) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

/// Whether `password` is right for the user whose hash is `known` (`None`: no user has the
/// name). An unknown name is checked against `stand_in`, a real hash of the same service, and
/// refused whatever the outcome, so that both answers take as long: response times do not tell
/// user names apart.
pub(crate) async fn check_login(known: Option<&str>, stand_in: &str, password: &str) -> bool {
    let hash = known.unwrap_or(stand_in).to_owned();
    let verified = verify_password(hash, password.to_owned()).await;
    verified && known.is_some()
}
