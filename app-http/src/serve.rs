//! The connection loop: accepts TCP connections up to `http.max_connections`, serves each
//! with hyper (HTTP/1.1, or HTTP/2 with prior knowledge) under a header read timeout and an
//! idle timeout, and on shutdown stops accepting and lets the open connections finish.
//!
//! A connection's slot is taken before `accept`, so that beyond the maximum new connections
//! wait in the kernel's listen queue (and are refused once it is full) while the established
//! ones go on; a slot frees when a connection closes, whether its client left or a timeout
//! closed it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

/// The most header fields hyper parses. Above the 100 that [`crate::limits`] allows, so that
/// a request with too many is answered by Clarion with a problem document rather than by
/// hyper with an empty 431. Not much above: hyper sets aside room for this many on every
/// request it parses (two arrays, 40 bytes a field, filled before parsing), which at 1,024
/// cost each request 40 KiB and about 4% of its instructions.
const PARSED_HEADERS: usize = 256;

/// How far hyper's read buffer, and so the request line and headers it can parse, goes above
/// `http.max_header_bytes`, for the same reason.
const HEADER_BUFFER_FACTOR: usize = 4;

/// The smallest read buffer hyper accepts.
const MIN_BUFFER: usize = 8192;

/// The first and the longest pause after `accept` fails (for instance out of file
/// descriptors, EMFILE), so that the loop neither ends nor spins.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// How connections are served.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServeSettings {
    pub(crate) header_read_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits
/// for the open connections, which finish their requests and close.
pub(crate) async fn serve<F>(
    listener: TcpListener,
    router: Router,
    settings: ServeSettings,
    shutdown: F,
) where
    F: Future<Output = ()>,
{
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let builder = Arc::new(builder(&settings));
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    // Whether the warning about the maximum was given since slots were last free, so that a
    // full server logs it once rather than for every connection.
    let mut warned = false;
    loop {
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => {
                warned = false;
                permit
            }
            Err(_) => {
                if !warned {
                    tracing::warn!(
                        max_connections = settings.max_connections,
                        "http.max_connections reached: new connections wait until one closes"
                    );
                    warned = true;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    permit = Arc::clone(&slots).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        // The semaphore is never closed.
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = accept(&listener) => accepted,
        };
        let connection = Connection {
            builder: Arc::clone(&builder),
            router: router.clone(),
            watcher: graceful.watcher(),
            header_read_timeout: settings.header_read_timeout,
            idle_timeout: settings.idle_timeout,
        };
        tokio::spawn(async move {
            connection.serve(stream, peer).await;
            drop(permit);
        });
    }
    // Closing the listener refuses the connections still in its queue.
    drop(listener);
    graceful.shutdown().await;
}

/// The hyper connection builder: HTTP/1.1 with keep-alive and the header read timeout, or
/// HTTP/2 when the client opens with its preface, each with a parse limit above Clarion's own.
fn builder(settings: &ServeSettings) -> auto::Builder<TokioExecutor> {
    let buffer = settings
        .max_header_bytes
        .saturating_mul(HEADER_BUFFER_FACTOR)
        .max(MIN_BUFFER);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(buffer)
        .max_headers(PARSED_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(buffer).unwrap_or(u32::MAX));
    builder
}

/// Accepts the next connection. A failure is logged and retried after a pause that doubles
/// while failures go on: out of file descriptors, the server keeps serving the connections
/// it has and accepts again once one closes.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    let mut pause = ACCEPT_BACKOFF.0;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            // The client gave up before it was accepted: nothing to wait for.
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                tracing::warn!(
                    error = %error,
                    pause_ms = pause.as_millis(),
                    "failed to accept a connection; trying again after a pause"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What one connection's task needs.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Router,
    watcher: Watcher,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Connection {
    /// Serves the connection until it ends, or closes it once it has moved no bytes for the
    /// idle timeout, or when its first request's headers are not in within the header read
    /// timeout. Each request carries the peer's address as [`ConnectInfo`].
    ///
    /// hyper times the headers of HTTP/1.1 requests itself, but only once it knows the
    /// connection is HTTP/1.1: before that, while the first bytes are read to tell HTTP/1.1
    /// from HTTP/2, a client that sends nothing would only meet the idle timeout.
    async fn serve(self, stream: TcpStream, peer: SocketAddr) {
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            stream,
            activity: Arc::clone(&activity),
        });
        let router = self.router;
        let requests = Arc::clone(&activity);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            requests.requested.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request)
        });
        let served = self
            .watcher
            .watch(self.builder.serve_connection_with_upgrades(io, service));
        let mut served = pin!(served);
        loop {
            let idle = activity.idle_for();
            if idle >= self.idle_timeout {
                tracing::debug!(%peer, "closing a connection idle for http.idle_timeout_secs");
                return;
            }
            let mut wait = self.idle_timeout - idle;
            if !activity.requested.load(Ordering::Relaxed) {
                let open = activity.opened.elapsed();
                if open >= self.header_read_timeout {
                    tracing::debug!(
                        %peer,
                        "closing a connection without a request after http.header_read_timeout_secs"
                    );
                    return;
                }
                wait = wait.min(self.header_read_timeout - open);
            }
            tokio::select! {
                result = &mut served => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, error = %error, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// When a connection last moved bytes, as milliseconds since it opened, and whether a request
/// has come in on it.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
    requested: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
            requested: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// A TCP stream that records when bytes last moved, in either direction.
struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl Tracked {
    fn moved<T>(
        &self,
        poll: Poll<io::Result<T>>,
        bytes: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(Ok(value)) = &poll
            && bytes(value)
        {
            self.activity.touch();
        }
        poll
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len() > before;
        this.moved(poll, |()| read)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.moved(poll, |written| *written > 0)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.moved(poll, |written| *written > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
