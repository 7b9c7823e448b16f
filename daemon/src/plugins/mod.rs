//! Plugins: per-industry logic fed by the twin. WebAssembly components run in [`wasm`]; native
//! libraries will share the same host API.

pub mod build;
pub mod runner;
pub mod stdio;
pub mod wasm;
