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
        let text = text.trim_end_matches('\r');
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
