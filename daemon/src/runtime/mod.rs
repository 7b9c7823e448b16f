//! Task supervision, shutdown, backoff and readiness: how every long-running task is started and
//! stopped, and how it says it is ready; the durable journal records are kept in; and the lock
//! that keeps one daemon per state folder.

pub mod backoff;
mod events;
pub mod journal;
pub mod readiness;
pub mod seal;
pub mod state_lock;
pub mod supervisor;

pub use backoff::Backoff;
pub use readiness::{Readiness, ReadyFlag};
pub use supervisor::Supervisor;
