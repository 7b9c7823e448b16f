//! Plugins: per-industry logic fed by the twin. [`runner`] runs every plugin against the twin,
//! generic over the [`runtime`] seam; WebAssembly components implement it in [`wasm`], native
//! libraries (trusted, unsandboxed) in [`native`]: two siblings sharing the plugin [`contract`]
//! and neither depending on the other. A plugin's own log lines are [`events`].

#[cfg(feature = "plugin-tools")]
pub mod build;
pub mod contract;
pub mod events;
pub mod native;
pub mod replay;
pub mod runner;
pub mod runtime;
pub mod stdio;
pub mod wasm;
