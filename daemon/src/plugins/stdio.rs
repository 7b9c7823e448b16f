//! A plugin's WASI stdout and stderr, written to the daemon's log one line at a time.
//!
//! Components built by other toolchains (Rust `println!`, Python `print`, C `printf`) speak
//! through WASI `cli/stdout` and `cli/stderr` (WASI 0.2, `wasi:io/streams.output-stream`). Each
//! complete line becomes one log event tagged with the plugin instance ([`events::StdoutLine`] at
//! INFO, [`events::StderrLine`] at WARN). Lines longer than [`MAX_LINE`] bytes are cut there (the
//! rest is dropped, the cut is marked with `…`) so a plugin cannot make the host buffer without
//! bound; invalid UTF-8 is replaced. A partial last line is written when the stream is flushed or
//! dropped.
//!
//! Every line, from stdout, stderr or the `log` import, spends a token of the instance's
//! [`LogBudget`]: a token bucket of [`LOG_BURST`] lines refilled at [`LOG_LINES_PER_SECOND`].
//! Lines past it are dropped and counted; the runner turns the count into a metric and one
//! summary line per interval.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use super::events;

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

/// Lines per second a plugin instance may write to the log, over time.
pub const LOG_LINES_PER_SECOND: f64 = 50.0;
/// Lines a plugin instance may write at once, after a quiet spell.
pub const LOG_BURST: f64 = 200.0;

/// One plugin instance's log budget: a token bucket shared by its `log` import, stdout and
/// stderr. Cheap to clone (clones share the bucket).
#[derive(Debug, Clone)]
#[allow(
    clippy::new_without_default,
    reason = "a budget starts full at a point in time"
)]
pub struct LogBudget {
    bucket: Arc<Mutex<Bucket>>,
    dropped: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl LogBudget {
    /// A full budget, starting now.
    #[allow(
        clippy::new_without_default,
        reason = "a budget starts full at a point in time"
    )]
    pub fn new() -> Self {
        Self {
            bucket: Arc::new(Mutex::new(Bucket {
                tokens: LOG_BURST,
                refilled: Instant::now(),
            })),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Spends a token for one line: `true` when the line may be written, `false` (and the line
    /// counted as dropped) when the budget is spent.
    pub fn take(&self) -> bool {
        let mut bucket = self
            .bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(bucket.refilled).as_secs_f64() * LOG_LINES_PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(LOG_BURST);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            drop(bucket);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines dropped since the previous call (the count starts again at zero).
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
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
    budget: LogBudget,
}

impl LogStream {
    /// The `stdio` stream of plugin instance `plugin`, spending `budget`.
    pub fn new(plugin: &str, stdio: Stdio, budget: LogBudget) -> Self {
        Self {
            plugin: plugin.into(),
            stdio,
            budget,
        }
    }

    fn writer(&self) -> LineWriter {
        LineWriter {
            plugin: Arc::clone(&self.plugin),
            stdio: self.stdio,
            budget: self.budget.clone(),
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
    budget: LogBudget,
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
        if !self.budget.take() {
            self.line.clear();
            self.cut = false;
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = one_line(text.trim_end_matches('\r'));
        let (plugin, cut) = (&*self.plugin, self.cut);
        match self.stdio {
            Stdio::Stdout => events::StdoutLine {
                plugin,
                text: &text,
                cut,
            }
            .emit(),
            Stdio::Stderr => events::StderrLine {
                plugin,
                text: &text,
                cut,
            }
            .emit(),
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

    #[test]
    fn the_budget_lets_a_burst_through_and_counts_every_line_past_it() {
        let budget = LogBudget::new();
        let mut written = 0;
        // Far more lines than the burst, written faster than the refill can matter: at most the
        // burst plus what refills while the loop runs gets through, every other line is counted.
        let started = Instant::now();
        for _ in 0..10_000 {
            if budget.take() {
                written += 1;
            }
        }
        let refill = started.elapsed().as_secs_f64() * LOG_LINES_PER_SECOND;
        assert!(written >= LOG_BURST as u64, "{written}");
        assert!(written as f64 <= LOG_BURST + refill + 1.0, "{written}");
        assert_eq!(budget.take_dropped(), 10_000 - written);
        assert_eq!(budget.take_dropped(), 0);
    }
}
