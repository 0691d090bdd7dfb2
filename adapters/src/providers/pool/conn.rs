//! One HTTP/2 connection of a pool: its h2 handle, the streams leased on it, and the task that
//! drives it and pings it to keep it open.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::connect::ConnectError;
use super::{BODY_LIMIT, Request, Response};

/// What the connection's task reports to the pool.
#[derive(Debug, Default)]
struct Health {
    /// The connection takes no new requests: it ended, failed a ping, or got `GOAWAY`.
    closed: AtomicBool,
    /// Why the connection ended, when it ended with an error.
    error: Mutex<Option<String>>,
}

/// One HTTP/2 connection.
#[derive(Debug)]
pub(super) struct Conn {
    send: h2::client::SendRequest<Bytes>,
    /// Requests leased on this connection and not finished.
    active: AtomicUsize,
    health: Arc<Health>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The last lease is gone and the pool dropped it: close the connection.
        self.task.abort();
    }
}

/// Why a request on a connection got no answer.
#[derive(Debug)]
pub(super) enum Failure {
    /// The peer never processed the request: it was not sent, or the peer refused its stream
    /// (`REFUSED_STREAM`, or a graceful `GOAWAY` whose last stream id is below it). Sending
    /// it again elsewhere cannot deliver it twice. `retire` says the connection is done.
    NotSent { why: String, retire: bool },
    /// The request was sent and the connection failed before the answer: the peer may or may
    /// not have acted on it.
    Lost(String),
    /// The answer's head arrived, but its body could not be read.
    Body(String),
}

impl Conn {
    /// Runs the HTTP/2 handshake on `io`, starts the connection's task, and waits for the
    /// answer to a first ping: by then the peer's SETTINGS (sent before anything else) are
    /// applied, so that [`Conn::capacity`] is the peer's stream limit.
    pub(super) async fn handshake<T>(
        io: T,
        keep_alive: Duration,
        ping_timeout: Duration,
        changed: Arc<Notify>,
    ) -> Result<Self, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut connection) = h2::client::Builder::new()
            // Room for the answers of many streams at once (they are small, and read as they
            // come), so that the connection window never holds a stream back.
            .initial_connection_window_size(1 << 20)
            .handshake::<T, Bytes>(io)
            .await
            .map_err(|error| {
                ConnectError::Failed(format!("the HTTP/2 handshake failed: {error}"))
            })?;
        let mut ping_pong = connection.ping_pong().ok_or_else(|| {
            ConnectError::Failed("the HTTP/2 connection offers no ping".to_owned())
        })?;
        let health = Arc::new(Health::default());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let health = Arc::clone(&health);
            async move {
                let pings = async move {
                    if ping_pong.ping(h2::Ping::opaque()).await.is_err() {
                        return;
                    }
                    let _ = ready_tx.send(());
                    loop {
                        tokio::time::sleep(keep_alive).await;
                        let answered =
                            tokio::time::timeout(ping_timeout, ping_pong.ping(h2::Ping::opaque()))
                                .await;
                        if !matches!(answered, Ok(Ok(_))) {
                            tracing::debug!(
                                "a provider connection did not answer a ping; closing it"
                            );
                            return;
                        }
                    }
                };
                tokio::select! {
                    ended = connection => {
                        if let Err(error) = ended {
                            let mut slot = health.error.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                            *slot = Some(error_chain(&error));
                        }
                    }
                    () = pings => {}
                }
                health.closed.store(true, Ordering::SeqCst);
                changed.notify_waiters();
            }
        });
        let conn = Self {
            send,
            active: AtomicUsize::new(0),
            health,
            task,
        };
        if ready_rx.await.is_err() {
            let error = conn
                .health
                .error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            // No error: the provider closed it cleanly, with a GOAWAY.
            return Err(error.map_or(ConnectError::WentAway, ConnectError::Failed));
        }
        Ok(conn)
    }

    /// Whether the connection takes new requests.
    pub(super) fn usable(&self) -> bool {
        !self.health.closed.load(Ordering::SeqCst)
    }

    /// Stops new requests on this connection; those in flight finish.
    pub(super) fn retire(&self) {
        self.health.closed.store(true, Ordering::SeqCst);
    }

    /// The peer's stream limit (`SETTINGS_MAX_CONCURRENT_STREAMS`).
    pub(super) fn capacity(&self) -> usize {
        self.send.current_max_send_streams()
    }

    pub(super) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    pub(super) fn lease(&self) {
        self.active.fetch_add(1, Ordering::SeqCst);
    }

    pub(super) fn release(&self) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }

    /// Sends one request and reads its answer, the body up to [`BODY_LIMIT`] bytes.
    pub(super) async fn request(
        &self,
        request: &Request,
        scheme: &str,
        authority: &str,
        user_agent: &http::HeaderValue,
    ) -> Result<Response, Failure> {
        let not_sent = |error: h2::Error| Failure::NotSent {
            why: error_chain(&error),
            retire: true,
        };
        let mut send = self.send.clone().ready().await.map_err(not_sent)?;
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(request.path_and_query.as_str())
            .build()
            .map_err(|error| Failure::NotSent {
                why: format!("the request URL is not valid: {error}"),
                retire: false,
            })?;
        let mut head = http::Request::new(());
        *head.method_mut() = request.method.clone();
        *head.uri_mut() = uri;
        *head.headers_mut() = request.headers.clone();
        head.headers_mut()
            .insert(http::header::USER_AGENT, user_agent.clone());
        let end = request.body.is_empty();
        let (answer, mut body) = send.send_request(head, end).map_err(not_sent)?;
        if !end {
            body.send_data(request.body.clone(), true)
                .map_err(classify)?;
        }
        let answer = answer.await.map_err(classify)?;
        let (parts, mut stream) = answer.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk.map_err(|error| Failure::Body(error_chain(&error)))?;
            let _ = stream.flow_control().release_capacity(chunk.len());
            let room = BODY_LIMIT.saturating_sub(bytes.len());
            bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if bytes.len() >= BODY_LIMIT {
                // Dropping the stream resets it: the rest is never read.
                break;
            }
        }
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body: bytes,
        })
    }
}

/// Sorts an error of a sent request: refused by the peer without processing (RFC 9113
/// §8.7: `REFUSED_STREAM`, or a stream above a graceful `GOAWAY`'s last stream id, which h2
/// reports as a remote `GOAWAY` with `NO_ERROR`), or lost with an unknown outcome.
///
/// A `GOAWAY` with an error code is not taken as a refusal: h2 reports that code on the
/// streams below the last stream id too when the connection then closes, and those the peer
/// may have processed.
fn classify(error: h2::Error) -> Failure {
    let refused = error.reason() == Some(Reason::REFUSED_STREAM)
        || (error.is_go_away() && error.is_remote() && error.reason() == Some(Reason::NO_ERROR));
    if refused {
        return Failure::NotSent {
            retire: error.is_go_away(),
            why: error_chain(&error),
        };
    }
    Failure::Lost(error_chain(&error))
}

/// The error and its sources on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = inner.source();
    }
    text
}
