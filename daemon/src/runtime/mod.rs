//! Task supervision, shutdown, backoff and readiness: how every long-running task is started and
//! stopped, and how it says it is ready; the durable journal records are kept in; the lock
//! that keeps one daemon per state folder; and the files and folders the daemon trusts.

pub mod backoff;
mod events;
pub mod journal;
pub mod readiness;
pub mod seal;
pub mod state_lock;
pub mod supervisor;
pub mod trusted;

pub use backoff::Backoff;
pub use readiness::{Readiness, ReadyFlag};
pub use supervisor::Supervisor;
