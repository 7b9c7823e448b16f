//! A plugin's own lines: one type per occurrence, whose `emit` writes the log line, from one
//! place, whichever host the plugin runs in. What a plugin writes through the `log` import or to
//! WASI stdout and stderr has been rate-limited and escaped to one line before it gets here
//! ([`super::stdio`]); the count of dropped lines is the runner's event
//! (`runner::events::LogLinesDropped`).
//!
//! Each kind of line has a fixed target, so a log filter can single plugins' lines out (e.g.
//! `RUST_LOG=info,twinloom::plugins::log=warn`) without touching the daemon's own messages.

/// The target of lines from the `log` import, of Wasm and native plugins alike.
pub const PLUGIN_LOG_TARGET: &str = "twinloom::plugins::log";

/// The target of lines a Wasm plugin writes to WASI stdout or stderr.
pub const PLUGIN_STDIO_TARGET: &str = "twinloom::plugins::stdio";

/// A plugin called the `log` import: one line at the level it chose.
#[derive(Debug)]
pub struct PluginLogged<'a> {
    /// The plugin instance's name.
    pub plugin: &'a str,
    /// The level the plugin asked for.
    pub level: tracing::Level,
    /// The message, already one line.
    pub message: &'a str,
}

impl PluginLogged<'_> {
    /// Writes the line at its level under [`PLUGIN_LOG_TARGET`].
    pub fn emit(&self) {
        let (plugin, message) = (self.plugin, self.message);
        match self.level {
            tracing::Level::TRACE => {
                tracing::trace!(target: PLUGIN_LOG_TARGET, plugin, "{message}");
            }
            tracing::Level::DEBUG => {
                tracing::debug!(target: PLUGIN_LOG_TARGET, plugin, "{message}");
            }
            tracing::Level::INFO => tracing::info!(target: PLUGIN_LOG_TARGET, plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(target: PLUGIN_LOG_TARGET, plugin, "{message}"),
            tracing::Level::ERROR => {
                tracing::error!(target: PLUGIN_LOG_TARGET, plugin, "{message}");
            }
        }
    }
}

/// A Wasm plugin wrote a line to WASI stdout: logged at INFO.
#[derive(Debug)]
pub struct StdoutLine<'a> {
    /// The plugin instance's name.
    pub plugin: &'a str,
    /// The line, already one line.
    pub text: &'a str,
    /// Whether the line was cut at its length limit (then marked `…`).
    pub cut: bool,
}

impl StdoutLine<'_> {
    /// Writes the line at INFO under [`PLUGIN_STDIO_TARGET`].
    pub fn emit(&self) {
        let (plugin, text) = (self.plugin, self.text);
        let ellipsis = if self.cut { "…" } else { "" };
        tracing::info!(target: PLUGIN_STDIO_TARGET, plugin, stream = "stdout", "{text}{ellipsis}");
    }
}

/// A Wasm plugin wrote a line to WASI stderr: logged at WARN.
#[derive(Debug)]
pub struct StderrLine<'a> {
    /// The plugin instance's name.
    pub plugin: &'a str,
    /// The line, already one line.
    pub text: &'a str,
    /// Whether the line was cut at its length limit (then marked `…`).
    pub cut: bool,
}

impl StderrLine<'_> {
    /// Writes the line at WARN under [`PLUGIN_STDIO_TARGET`].
    pub fn emit(&self) {
        let (plugin, text) = (self.plugin, self.text);
        let ellipsis = if self.cut { "…" } else { "" };
        tracing::warn!(target: PLUGIN_STDIO_TARGET, plugin, stream = "stderr", "{text}{ellipsis}");
    }
}
