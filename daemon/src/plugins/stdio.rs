//! A plugin's WASI stdout and stderr, written to the daemon's log one line at a time.
//!
//! Components built by other toolchains (Rust `println!`, Python `print`, C `printf`) speak
//! through WASI `cli/stdout` and `cli/stderr` (WASI 0.2, `wasi:io/streams.output-stream`). Each
//! complete line becomes one log event tagged with the plugin instance: stdout at INFO, stderr at
//! WARN. Lines longer than [`MAX_LINE`] bytes are cut there (the rest is dropped, the cut is
//! marked with `…`) so a plugin cannot make the host buffer without bound; invalid UTF-8 is
//! replaced. A partial last line is written when the stream is flushed or dropped.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// The longest line kept, in bytes.
pub const MAX_LINE: usize = 4096;

/// `text` as one log line a plugin cannot use to forge others: control characters (line feeds,
/// carriage returns, terminal escape sequences) are written as escapes (`\n`, `\r`,
/// `\u{1b}`), and text past [`MAX_LINE`] bytes is cut (marked `…`). Other characters, non-ASCII
/// ones included, stay as they are.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    let long = text.len() > MAX_LINE;
    if !long && !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = text.len().min(MAX_LINE);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut line = String::with_capacity(end + 8);
    for c in text[..end].chars() {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    if long {
        line.push('…');
    }
    std::borrow::Cow::Owned(line)
}

/// Which standard stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// `cli/stdout`: logged at INFO.
    Stdout,
    /// `cli/stderr`: logged at WARN.
    Stderr,
}

/// A standard stream of one plugin instance that writes to the log (give it to
/// `WasiCtxBuilder::stdout` / `stderr`).
#[derive(Debug, Clone)]
pub struct LogStream {
    plugin: Arc<str>,
    stdio: Stdio,
}

impl LogStream {
    /// The `stdio` stream of plugin instance `plugin`.
    pub fn new(plugin: &str, stdio: Stdio) -> Self {
        Self {
            plugin: plugin.into(),
            stdio,
        }
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            plugin: Arc::clone(&self.plugin),
            stdio: self.stdio,
            line: Vec::new(),
            cut: false,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.writer())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.writer())
    }
}

/// Splits written bytes into lines and logs each.
#[derive(Debug)]
struct LineWriter {
    plugin: Arc<str>,
    stdio: Stdio,
    line: Vec<u8>,
    cut: bool,
}

impl LineWriter {
    fn push(&mut self, bytes: &[u8]) {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match chunk.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (chunk, false),
            };
            let room = MAX_LINE - self.line.len();
            if text.len() > room {
                self.line.extend_from_slice(&text[..room]);
                self.cut = true;
            } else {
                self.line.extend_from_slice(text);
            }
            if ends {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = one_line(text.trim_end_matches('\r'));
        let ellipsis = if self.cut { "…" } else { "" };
        let plugin = &*self.plugin;
        match self.stdio {
            Stdio::Stdout => tracing::info!(plugin, stream = "stdout", "{text}{ellipsis}"),
            Stdio::Stderr => tracing::warn!(plugin, stream = "stderr", "{text}{ellipsis}"),
        }
        self.line.clear();
        self.cut = false;
    }

    fn flush_partial(&mut self) {
        if !self.line.is_empty() || self.cut {
            self.emit();
        }
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_partial();
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.flush_partial();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.flush_partial();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cannot_forge_another_line_and_is_capped() {
        assert!(matches!(
            one_line("pump z 2.1 °C ✓"),
            std::borrow::Cow::Borrowed("pump z 2.1 °C ✓")
        ));
        assert_eq!(
            one_line("ok\n2026-11-30T00:00:00Z ERROR twinloom: forged\r\u{1b}[31mred"),
            "ok\\n2026-11-30T00:00:00Z ERROR twinloom: forged\\r\\u{1b}[31mred"
        );
        let long = "é".repeat(MAX_LINE);
        let cut = one_line(&long);
        assert!(cut.ends_with('…'));
        assert_eq!(cut.len(), MAX_LINE + '…'.len_utf8());
        assert!(cut.trim_end_matches('…').chars().all(|c| c == 'é'));
    }
}
