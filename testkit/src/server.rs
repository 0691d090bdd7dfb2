//! The HTTP server harness the mocks run on: 127.0.0.1 port 0, plain or TLS, HTTP/1.1 and HTTP/2,
//! stopped when its handle is dropped. Its [`ConnectionControl`] sets what a real provider's server
//! decides on its own: the HTTP/2 stream limit it advertises (`SETTINGS_MAX_CONCURRENT_STREAMS`)
//! and when it closes its connections with a graceful `GOAWAY`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::goaway::{FrameFilter, Trigger};
use crate::script::{CannedResponse, IncomingRequest};

/// What a mock does with one request. Checking and recording are synchronous; the harness
/// waits for the returned delay before it sends the answer.
pub(crate) trait Respond: Send + Sync + 'static {
    /// Checks, records and answers one request, and says how long to wait before answering.
    fn respond(&self, request: IncomingRequest) -> (CannedResponse, Duration);

    /// Like [`Respond::respond`], knowing what the TLS handshake established about the client.
    /// Only mocks that authenticate clients by certificate need more than the request.
    fn respond_to_peer(
        &self,
        request: IncomingRequest,
        _peer: &Peer,
    ) -> (CannedResponse, Duration) {
        self.respond(request)
    }

    /// Hears of a TLS handshake that failed, with the reason, so that a mock can report the
    /// clients it turned away before any request.
    fn handshake_failed(&self, _reason: &str) {}
}

/// What the TLS handshake established about the client of one connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    /// The client's certificate (end entity first, then any intermediates) when it presented
    /// one that the server's client verifier accepted; empty otherwise.
    pub certificates: Vec<Vec<u8>>,
}

/// A running server; dropping it stops the accept loop and every open connection.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
    control: Arc<ConnectionControl>,
}

/// The connection-level behaviour of a mock server, changeable while it runs: the HTTP/2
/// stream limit its connections advertise and the `GOAWAY`s they send.
#[derive(Debug)]
pub struct ConnectionControl {
    /// The `SETTINGS_MAX_CONCURRENT_STREAMS` that new HTTP/2 connections advertise; 0 keeps
    /// hyper's default.
    max_streams: AtomicU32,
    /// The number of the request (counted from 1 over the server's life) whose arrival sends
    /// a graceful `GOAWAY` on every open connection; 0 for never.
    go_away_at: AtomicU64,
    /// Requests that arrived so far.
    arrived: AtomicU64,
    /// Bumped for each `GOAWAY` round; every open connection watches it.
    go_away: tokio::sync::watch::Sender<u64>,
    /// Connections that were sent a `GOAWAY`.
    gone_away: AtomicUsize,
    /// Connections accepted so far.
    accepted: AtomicUsize,
    /// Whether a `GOAWAY` is sent in one phase, refusing the streams the client opened after
    /// the last one the connection received (see [`crate::goaway`]), rather than hyper's
    /// two-phase graceful shutdown.
    one_phase: AtomicBool,
    /// Requests (new streams) refused by a one-phase `GOAWAY`.
    refused: Arc<AtomicUsize>,
    /// How long incoming frames wait before hyper sees them, in microseconds (an accept
    /// queue, from which a one-phase `GOAWAY` refuses).
    hold: Arc<AtomicU64>,
}

impl Default for ConnectionControl {
    fn default() -> Self {
        Self {
            max_streams: AtomicU32::new(0),
            go_away_at: AtomicU64::new(0),
            arrived: AtomicU64::new(0),
            go_away: tokio::sync::watch::Sender::new(0),
            gone_away: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            one_phase: AtomicBool::new(false),
            refused: Arc::new(AtomicUsize::new(0)),
            hold: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl ConnectionControl {
    /// Advertises `streams` as the HTTP/2 stream limit of connections opened from now on.
    pub fn set_max_concurrent_streams(&self, streams: u32) {
        self.max_streams.store(streams, Ordering::Relaxed);
    }

    /// Sends a graceful `GOAWAY` on every open connection when request number `n` (counted
    /// from the server's start, from 1) arrives. The connections finish the requests they had
    /// accepted and refuse the rest, which the client must send again on a new connection.
    pub fn go_away_at_request(&self, n: u64) {
        self.go_away_at.store(n, Ordering::Relaxed);
    }

    /// Sends a graceful `GOAWAY` on every open connection now.
    pub fn go_away_now(&self) {
        self.go_away.send_modify(|round| *round += 1);
    }

    /// How many connections were sent a `GOAWAY`.
    pub fn goaways_sent(&self) -> usize {
        self.gone_away.load(Ordering::Relaxed)
    }

    /// Makes each later `GOAWAY` a one-phase one: it names the last stream the connection
    /// received, and the streams the client opened after it are refused (they never reach
    /// the mock), as a provider that stops at once does.
    /// While it is on, every incoming frame waits 2 ms before the server sees it (an accept
    /// queue), so that a `GOAWAY` finds requests received and not yet taken, to refuse.
    pub fn set_one_phase_go_away(&self, one_phase: bool) {
        self.one_phase.store(one_phase, Ordering::Relaxed);
        self.hold
            .store(if one_phase { 2_000 } else { 0 }, Ordering::Relaxed);
    }

    /// How many requests a one-phase `GOAWAY` refused.
    pub fn streams_refused(&self) -> usize {
        self.refused.load(Ordering::Relaxed)
    }

    /// How many connections the server accepted (TCP, before any TLS handshake).
    pub fn connections_accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    fn request_arrived(&self) {
        let n = self.arrived.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.go_away_at.load(Ordering::Relaxed) {
            self.go_away_now();
        }
    }
}

impl Server {
    pub async fn start(
        handler: Arc<dyn Respond>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("failed to bind a mock server to 127.0.0.1:0")?;
        let addr = listener
            .local_addr()
            .context("failed to read the mock server's address")?;
        let control = Arc::new(ConnectionControl::default());
        let task = tokio::spawn(accept_loop(
            listener,
            handler,
            tls.map(TlsAcceptor::from),
            Arc::clone(&control),
        ));
        Ok(Self {
            addr,
            task,
            control,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's connection-level behaviour.
    pub fn control(&self) -> &ConnectionControl {
        &self.control
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    handler: Arc<dyn Respond>,
    tls: Option<TlsAcceptor>,
    control: Arc<ConnectionControl>,
) {
    // The connections live in the loop's JoinSet so that aborting the loop closes them too.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    control.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve_connection(
                        stream,
                        Arc::clone(&handler),
                        tls.clone(),
                        Arc::clone(&control),
                    ));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    handler: Arc<dyn Respond>,
    tls: Option<TlsAcceptor>,
    control: Arc<ConnectionControl>,
) {
    // Connection errors (a client that hangs up, a failed handshake) end only this connection.
    let trigger = Arc::new(Trigger::new(Arc::clone(&control.hold)));
    let Some(acceptor) = tls else {
        let stream = FrameFilter::new(
            stream,
            None,
            Arc::clone(&trigger),
            Arc::clone(&control.refused),
        );
        return serve_http(
            TokioIo::new(stream),
            handler,
            Peer::default(),
            control,
            trigger,
        )
        .await;
    };
    let stream = match acceptor.accept(stream).await {
        Ok(stream) => stream,
        Err(error) => {
            handler.handshake_failed(&error.to_string());
            return;
        }
    };
    let peer = Peer {
        certificates: stream
            .get_ref()
            .1
            .peer_certificates()
            .unwrap_or_default()
            .iter()
            .map(|cert| cert.to_vec())
            .collect(),
    };
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let stream = FrameFilter::new(
        stream,
        Some(http2),
        Arc::clone(&trigger),
        Arc::clone(&control.refused),
    );
    serve_http(TokioIo::new(stream), handler, peer, control, trigger).await;
}

async fn serve_http<S>(
    io: TokioIo<S>,
    handler: Arc<dyn Respond>,
    peer: Peer,
    control: Arc<ConnectionControl>,
    trigger: Arc<Trigger>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let mut go_away = control.go_away.subscribe();
    let service = {
        let control = Arc::clone(&control);
        service_fn(move |request: Request<Incoming>| {
            let handler = Arc::clone(&handler);
            let peer = Arc::clone(&peer);
            control.request_arrived();
            async move { Ok::<_, Infallible>(handle(request, handler, &peer).await) }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let streams = control.max_streams.load(Ordering::Relaxed);
    if streams > 0 {
        builder.http2().max_concurrent_streams(streams);
    }
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        changed = go_away.changed() => {
            if changed.is_ok() {
                control.gone_away.fetch_add(1, Ordering::Relaxed);
                if control.one_phase.load(Ordering::Relaxed) {
                    trigger.go_away.store(true, Ordering::Relaxed);
                }
                connection.as_mut().graceful_shutdown();
            }
        }
    }
    // A graceful shutdown still answers the requests the connection accepted.
    let _ = connection.await;
}

async fn handle(
    request: Request<Incoming>,
    handler: Arc<dyn Respond>,
    peer: &Peer,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes().to_vec(),
        Err(_) => return to_response(CannedResponse::empty(400)),
    };
    let incoming = IncomingRequest {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let (response, delay) = handler.respond_to_peer(incoming, peer);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    to_response(response)
}

fn to_response(canned: CannedResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(canned.body)));
    *response.status_mut() = http::StatusCode::from_u16(canned.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in canned.headers {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
