//! Plugins: per-industry logic fed by the twin. [`runner`] runs every plugin against the twin,
//! generic over the [`runtime`] seam; WebAssembly components implement it in [`wasm`]; native
//! libraries will implement it too.

#[cfg(feature = "plugin-tools")]
pub mod build;
pub mod replay;
pub mod runner;
pub mod runtime;
pub mod stdio;
pub mod wasm;
