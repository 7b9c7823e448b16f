//! The endpoint's connections: accepted under a cap, each serving one HTTP/1.1 request within
//! its timeouts, over TLS when configured.
//!
//! What a client that has not logged in can cost is bounded here: at most `max_connections`
//! connections (a further one is closed as accepted), each holding at most
//! [`MAX_BUFFER_BYTES`] of request head, for at most `header_read_timeout` (TLS handshake and
//! headers) plus `request_timeout` (the answer). Request bodies are never read. Password checks
//! are bounded by the login pool (`northbound::login`).
//!
//! Connections are tasks of the server task's own `JoinSet`: they end with it (at shutdown,
//! after in-flight requests have had [`DRAIN`] to finish).
//!
//! The web view's event streams are the one kind of answer that outlives `request_timeout`:
//! their connection stays open until the client goes, the stream ends at shutdown, or a write
//! has made no progress for `stream_write_stall` (a client that stopped reading: what it has
//! not read is bounded by the socket's send buffer and hyper's write buffer, and the twin's
//! fan-out keeps at most one pending change per property for it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::events::{Events, Refused, RequestRefused};
use super::webview::Streaming;
use crate::config::admin_http::AdminHttpLimits;

/// Most bytes of request head a connection buffers (hyper's read buffer; its floor is 8 KiB).
/// The endpoint's requests are a line and a few headers.
pub const MAX_BUFFER_BYTES: usize = 16 * 1024;

/// At shutdown, how long requests in flight may take to finish before their connections are
/// dropped.
const DRAIN: Duration = Duration::from_secs(2);

/// After a failed `accept` (out of file descriptors), the pause before the next.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The connection a request came on (a request extension).
#[derive(Debug, Clone, Copy)]
pub(super) struct Connection {
    /// The client's address.
    pub peer: SocketAddr,
}

/// Serves `router` on `listener` until `token` is cancelled; then cancels `streams` (the event
/// streams end) and lets requests in flight finish for up to [`DRAIN`].
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: AdminHttpLimits,
    events: Arc<Events>,
    streams: CancellationToken,
    token: CancellationToken,
) -> anyhow::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = token.cancelled() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // EMFILE and the like: the next accept may succeed once connections close.
                    tokio::time::sleep(ACCEPT_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            RequestRefused {
                peer: peer.ip(),
                refused: Refused::MaxConnections,
                detail: "max_connections connections are open",
            }
            .emit(&events);
            continue;
        };
        let watcher = graceful.watcher();
        let (router, tls, limits, events) = (
            router.clone(),
            tls.clone(),
            limits.clone(),
            Arc::clone(&events),
        );
        connections.spawn(async move {
            let _permit = permit;
            let Some(acceptor) = tls else {
                return connection(stream, peer, router, &limits, watcher, events).await;
            };
            let detail =
                match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(stream)) => {
                        return connection(stream, peer, router, &limits, watcher, events).await;
                    }
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => "not finished within header_read_timeout".to_owned(),
                };
            RequestRefused {
                peer: peer.ip(),
                refused: Refused::TlsHandshake,
                detail: &detail,
            }
            .emit(&events);
        });
    }
    drop(listener);
    streams.cancel();
    // Connections waiting for a request close at once; requests in flight finish, up to DRAIN.
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
    connections.shutdown().await;
    Ok(())
}

/// One connection: one request, read within `header_read_timeout` and answered within
/// `request_timeout`.
async fn connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: &AdminHttpLimits,
    watcher: hyper_util::server::graceful::Watcher,
    events: Arc<Events>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let refused = move |refused: Refused, detail: &str| {
        RequestRefused {
            peer: peer.ip(),
            refused,
            detail,
        }
        .emit(&events);
    };
    let request_timeout = limits.request_timeout;
    let timed_out = refused.clone();
    let streaming = Arc::new(AtomicBool::new(false));
    let streaming_answer = Arc::clone(&streaming);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(Connection { peer });
        let (router, timed_out) = (router.clone(), timed_out.clone());
        let streaming = Arc::clone(&streaming_answer);
        async move {
            let response =
                match tokio::time::timeout(request_timeout, router.oneshot(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => {
                        timed_out(
                            Refused::RequestTimeout,
                            "not answered within request_timeout",
                        );
                        (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not answered within request_timeout\n",
                        )
                            .into_response()
                    }
                };
            if response.extensions().get::<Streaming>().is_some() {
                streaming.store(true, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_BUFFER_BYTES)
        .keep_alive(false);
    let io = WriteDeadline {
        io,
        limit: limits.stream_write_stall,
        stalled: None,
    };
    let mut served =
        std::pin::pin!(watcher.watch(http.serve_connection(TokioIo::new(io), service)));
    // hyper bounds each phase; this bounds the whole, whatever a client does — but an event
    // stream, which lasts until the client goes (or stops reading) or the daemon stops.
    let whole = limits.header_read_timeout + limits.request_timeout;
    let outcome = match tokio::time::timeout(whole, served.as_mut()).await {
        Ok(outcome) => Ok(outcome),
        Err(_) if streaming.load(Ordering::Relaxed) => Ok(served.await),
        Err(elapsed) => Err(elapsed),
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(error)) if error.is_timeout() => {
            refused(
                Refused::HeaderReadTimeout,
                "headers not read within header_read_timeout",
            );
        }
        // The client went away or sent what is not HTTP/1.1: hyper has answered what it could.
        Ok(Err(_)) => {}
        Err(_) => refused(
            Refused::RequestTimeout,
            "connection open past both timeouts",
        ),
    }
}

/// A connection whose writes must make progress: a write (or flush) that has waited `limit`
/// (`stream_write_stall`) for the client to read fails with `TimedOut`, and hyper drops the
/// connection.
struct WriteDeadline<I> {
    io: I,
    limit: Duration,
    /// Since when the current write has been waiting.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the client has not read for stream_write_stall",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
