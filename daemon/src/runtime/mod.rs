//! Task supervision, shutdown and backoff: how every long-running task is started and stopped.

pub mod backoff;
pub mod supervisor;

pub use backoff::Backoff;
pub use supervisor::Supervisor;
