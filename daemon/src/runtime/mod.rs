//! Task supervision, shutdown, backoff and readiness: how every long-running task is started and
//! stopped, and how it says it is ready; and the durable journal records are kept in.

pub mod backoff;
mod events;
pub mod journal;
pub mod readiness;
pub mod supervisor;

pub use backoff::Backoff;
pub use readiness::{Readiness, ReadyFlag};
pub use supervisor::Supervisor;
