//! The providers' HTTP/2 connection pool (ADR 4): per application, provider and origin, up
//! to `connections` HTTP/2 connections, each carrying at most the stream limit its peer
//! advertises (`SETTINGS_MAX_CONCURRENT_STREAMS`), within `max_in_flight` requests in all.
//!
//! A request goes to the least loaded connection with a free stream; a new connection is
//! opened (one at a time) only when every open one is full. A request the peer refused
//! without processing it (`REFUSED_STREAM`, or above a graceful `GOAWAY`'s last stream id) is
//! sent again on another connection, so that nothing is lost or sent twice; a connection
//! that got `GOAWAY` takes no new request and is replaced. A request whose connection failed
//! after it was sent has an unknown outcome and is reported as a transient `connection`
//! failure, for the retry policy.

mod conn;
pub mod connect;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use clarion_domain::message::SendOutcome;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use self::conn::{Conn, Failure};
pub use self::connect::{AddressGuard, ClientIdentity, ConnectError, NotPublic, Origin};
pub use crate::providers::http::BODY_LIMIT;

/// Connections per application and provider (per origin for Web Push) when unset.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Connections per application to FCM when unset: Google's front ends allow 100 streams on a
/// connection (APNs 1,000), so 16 connections hold 1,600 requests, 32,000 a second at a 50 ms
/// round trip.
pub const DEFAULT_FCM_CONNECTIONS: usize = 16;
/// The most connections a setting may ask for.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests in flight per application and provider when unset.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4000;
/// The most requests in flight a setting may ask for (about 10 KiB each; see ADR 4).
pub const MAX_MAX_IN_FLIGHT: usize = 100_000;
/// The interval of the pings that keep an idle connection open, as APNs asks.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How many new connections in a row one request lets the provider close before they were
/// ready (a `GOAWAY` during setup) before it fails to connect.
const MAX_WENT_AWAY: usize = 3;
/// How many times one request is sent again after being refused unprocessed.
const MAX_RESENDS: usize = 8;
/// How long a failed connection attempt answers the requests that wait for one, so that a
/// host that refuses connections is not dialled once per waiting request.
const FAILURE_MEMORY: Duration = Duration::from_secs(1);

/// How a pool behaves.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// The most HTTP/2 connections of the pool.
    pub connections: usize,
    /// How long resolving, connecting and the TLS and HTTP/2 setup may take.
    pub connect_timeout: Duration,
    /// How long one request may take, waiting for a free stream included.
    pub request_timeout: Duration,
    /// The interval of keep-alive pings.
    pub keep_alive: Duration,
    /// The TLS settings of `https` origins.
    pub tls: Arc<rustls::ClientConfig>,
    /// Which addresses the pool may connect to.
    pub guard: AddressGuard,
}

/// One request: the path on the pool's origin, headers and body. The pool adds the
/// `user-agent`.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: http::Method,
    /// The path and query, starting with `/`.
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// An answer, its body cut at [`BODY_LIMIT`] bytes.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PoolError {
    /// The request did not finish within the request timeout.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No connection could be made.
    #[error("could not connect: {0}")]
    Connect(ConnectError),
    /// The connection failed after the request was sent; the peer may have acted on it.
    #[error("the connection failed after the request was sent: {0}")]
    Lost(String),
    /// The peer refused the request unprocessed every time it was sent.
    #[error("refused unprocessed {MAX_RESENDS} times in a row: {0}")]
    Refused(String),
    /// The answer's body could not be read.
    #[error("the answer could not be read: {0}")]
    Body(String),
}

impl PoolError {
    /// The outcome of a request that failed so: every kind is transient (the retry policy
    /// decides), `timeout`, `connection` or `transport`. A refused address is the caller's to
    /// report (see [`PoolError::not_public`]).
    #[must_use]
    pub fn outcome(&self, provider: &str) -> SendOutcome {
        let code = match self {
            PoolError::Timeout(_) => "timeout",
            PoolError::Connect(_) | PoolError::Lost(_) | PoolError::Refused(_) => "connection",
            PoolError::Body(_) => "transport",
        };
        SendOutcome::Transient {
            code: code.to_owned(),
            reason: format!("{provider} request failed: {self}"),
            retry_after: None,
        }
    }

    /// The guard's refusal, when that is why.
    #[must_use]
    pub fn not_public(&self) -> Option<&NotPublic> {
        match self {
            PoolError::Connect(ConnectError::NotPublic(refused)) => Some(refused),
            _ => None,
        }
    }
}

/// The connections to one origin.
#[derive(Debug)]
pub struct Pool {
    origin: Origin,
    settings: PoolSettings,
    /// `max_in_flight`, shared by the pools of one application and provider.
    in_flight: Arc<Semaphore>,
    user_agent: http::HeaderValue,
    state: Mutex<State>,
    /// Woken when a stream is freed (one waiter) or a connection opens or closes (all).
    changed: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    conns: Vec<Arc<Conn>>,
    /// A connection is being opened.
    opening: bool,
    /// The last failed attempt to connect, and when.
    failed: Option<(Instant, ConnectError)>,
}

/// A stream leased on a connection; dropping it frees the stream.
struct Lease<'a> {
    conn: Arc<Conn>,
    pool: &'a Pool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        self.conn.release();
        self.pool.changed.notify_one();
    }
}

/// Clears the pool's `opening` mark however the attempt ends (a cancelled send included).
struct Opening<'a>(&'a Pool);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.state().opening = false;
        self.0.changed.notify_waiters();
    }
}

impl Pool {
    /// A pool for `origin`; it connects on the first request.
    #[must_use]
    pub fn new(origin: Origin, settings: PoolSettings, in_flight: Arc<Semaphore>) -> Self {
        Self {
            origin,
            settings,
            in_flight,
            user_agent: http::HeaderValue::from_static(concat!(
                "clarion/",
                env!("CARGO_PKG_VERSION")
            )),
            state: Mutex::new(State::default()),
            changed: Arc::new(Notify::new()),
        }
    }

    /// The origin the pool connects to.
    #[must_use]
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The open connections that take requests.
    #[must_use]
    pub fn open_connections(&self) -> usize {
        self.state().conns.iter().filter(|c| c.usable()).count()
    }

    /// Requests in flight on this pool's connections.
    #[must_use]
    pub fn streams_in_flight(&self) -> usize {
        self.state().conns.iter().map(|c| c.active()).sum()
    }

    /// Sends one request: waits for room under `max_in_flight` and for a stream (as long as it
    /// takes, as the send of an attempt waits for its turn; a connection that must be opened
    /// is bounded by the connect timeout), then for the answer within the request timeout.
    ///
    /// # Errors
    /// See [`PoolError`].
    pub async fn send(&self, request: &Request) -> Result<Response, PoolError> {
        // The semaphore is never closed, so acquiring only waits.
        let _permit = self.in_flight.acquire().await;
        self.send_on_a_connection(request).await
    }

    /// Sends on the least loaded connection, again on another when the provider refused the
    /// request unprocessed. The request timeout counts the time on the wire only, from the
    /// moment the request has its stream: waiting for room (a stream of a full pool) is
    /// bounded by the requests ahead, each of which is bounded by the timeout.
    async fn send_on_a_connection(&self, request: &Request) -> Result<Response, PoolError> {
        let timeout = self.settings.request_timeout;
        let mut refused = String::new();
        for _ in 0..MAX_RESENDS {
            let lease = self.lease().await?;
            let sent = tokio::time::timeout(
                timeout,
                lease.conn.request(
                    request,
                    self.origin.scheme(),
                    self.origin.authority(),
                    &self.user_agent,
                ),
            )
            .await
            .map_err(|_| PoolError::Timeout(timeout))?;
            match sent {
                Ok(response) => return Ok(response),
                Err(Failure::NotSent { why, retire }) => {
                    tracing::debug!(
                        origin = self.origin.authority(),
                        reason = why,
                        "a provider refused a request unprocessed; sending it again"
                    );
                    if retire {
                        lease.conn.retire();
                        self.changed.notify_waiters();
                    }
                    refused = why;
                }
                Err(Failure::Lost(why)) => {
                    lease.conn.retire();
                    return Err(PoolError::Lost(why));
                }
                Err(Failure::Body(why)) => return Err(PoolError::Body(why)),
            }
        }
        Err(PoolError::Refused(refused))
    }

    /// A stream on the least loaded connection with room, opening a connection when every
    /// one is full and there may be more.
    async fn lease(&self) -> Result<Lease<'_>, PoolError> {
        // New connections the provider closed cleanly before they were ready (it was going
        // away); past a few, that counts as a failure to connect.
        let mut went_away = 0;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before looking, so that a stream freed meanwhile wakes this waiter.
            changed.as_mut().enable();
            let open = {
                let mut state = self.state();
                state.conns.retain(|conn| conn.usable());
                let best = state
                    .conns
                    .iter()
                    .filter(|conn| conn.active() < conn.capacity())
                    .min_by_key(|conn| conn.active());
                if let Some(conn) = best {
                    conn.lease();
                    return Ok(Lease {
                        conn: Arc::clone(conn),
                        pool: self,
                    });
                }
                let failed = state
                    .failed
                    .as_ref()
                    .filter(|(at, _)| at.elapsed() < FAILURE_MEMORY)
                    .map(|(_, error)| error.clone());
                if let Some(error) = &failed
                    && state.conns.is_empty()
                {
                    return Err(PoolError::Connect(error.clone()));
                }
                // After a failed attempt, wait for a stream of the open connections instead.
                let open = failed.is_none()
                    && !state.opening
                    && state.conns.len() < self.settings.connections;
                if open {
                    state.opening = true;
                }
                open
            };
            if open {
                let _opening = Opening(self);
                match self.open().await {
                    Ok(conn) => {
                        let mut state = self.state();
                        state.failed = None;
                        state.conns.push(Arc::new(conn));
                    }
                    Err(ConnectError::WentAway) if went_away < MAX_WENT_AWAY => {
                        went_away += 1;
                    }
                    Err(error) => {
                        self.state().failed = Some((Instant::now(), error.clone()));
                        return Err(PoolError::Connect(error));
                    }
                }
                continue;
            }
            changed.await;
        }
    }

    /// Opens one connection within the connect timeout.
    async fn open(&self) -> Result<Conn, ConnectError> {
        let timeout = self.settings.connect_timeout;
        tokio::time::timeout(timeout, self.connect())
            .await
            .unwrap_or_else(|_| {
                Err(ConnectError::Failed(format!(
                    "no connection within {timeout:?}"
                )))
            })
    }

    async fn connect(&self) -> Result<Conn, ConnectError> {
        let origin = &self.origin;
        let addrs = connect::resolve(origin.host_ref(), origin.port(), self.settings.guard).await?;
        let tcp = connect::tcp(&addrs).await?;
        let keep_alive = self.settings.keep_alive;
        let ping_timeout = self.settings.connect_timeout;
        let changed = Arc::clone(&self.changed);
        if !origin.is_tls() {
            // Plain `http` (local mocks and proxies): HTTP/2 with prior knowledge.
            return Conn::handshake(tcp, keep_alive, ping_timeout, changed).await;
        }
        let name = origin
            .server_name()
            .map_err(|why| ConnectError::Failed(why.to_owned()))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.settings.tls))
            .connect(name, tcp)
            .await
            .map_err(|error| ConnectError::Failed(format!("TLS handshake failed: {error}")))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ConnectError::Failed(
                "the server did not agree to HTTP/2 (ALPN h2)".to_owned(),
            ));
        }
        Conn::handshake(tls, keep_alive, ping_timeout, changed).await
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `connections` and `max_in_flight` of a provider section, defaulted (`connections` to
/// `default_connections`) and checked.
///
/// # Errors
/// When a value is out of range; the message names the setting (`section` is like
/// `apps.shop.apns`).
pub fn limits(
    section: &str,
    default_connections: usize,
    connections: Option<usize>,
    max_in_flight: Option<usize>,
) -> anyhow::Result<(usize, usize)> {
    let connections = connections.unwrap_or(default_connections);
    anyhow::ensure!(
        (1..=MAX_CONNECTIONS).contains(&connections),
        "{section}.connections: must be between 1 and {MAX_CONNECTIONS}, got {connections}"
    );
    let max_in_flight = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    anyhow::ensure!(
        (1..=MAX_MAX_IN_FLIGHT).contains(&max_in_flight),
        "{section}.max_in_flight: must be between 1 and {MAX_MAX_IN_FLIGHT}, got {max_in_flight}"
    );
    Ok((connections, max_in_flight))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_to_4_connections_and_4000_requests() {
        assert_eq!(
            limits("apps.shop.apns", DEFAULT_CONNECTIONS, None, None).unwrap(),
            (4, 4000)
        );
        assert_eq!(
            limits("apps.shop.apns", DEFAULT_CONNECTIONS, Some(1), Some(1)).unwrap(),
            (1, 1)
        );
    }

    #[test]
    fn limits_out_of_range_are_refused_naming_the_setting() {
        let cases = [
            (
                Some(0),
                None,
                "apps.shop.fcm.connections: must be between 1 and 64, got 0",
            ),
            (Some(65), None, "apps.shop.fcm.connections"),
            (
                None,
                Some(0),
                "apps.shop.fcm.max_in_flight: must be between 1 and 100000, got 0",
            ),
            (None, Some(100_001), "apps.shop.fcm.max_in_flight"),
        ];
        for (connections, max_in_flight, expected) in cases {
            let error = limits(
                "apps.shop.fcm",
                DEFAULT_FCM_CONNECTIONS,
                connections,
                max_in_flight,
            )
            .unwrap_err()
            .to_string();
            assert!(error.starts_with(expected), "{expected}: {error}");
        }
    }

    #[test]
    fn every_failure_is_transient_and_names_the_provider() {
        let failures = [
            (PoolError::Timeout(Duration::from_secs(5)), "timeout"),
            (
                PoolError::Connect(ConnectError::Failed("refused".to_owned())),
                "connection",
            ),
            (PoolError::Lost("reset".to_owned()), "connection"),
            (PoolError::Refused("GOAWAY".to_owned()), "connection"),
            (PoolError::Body("reset".to_owned()), "transport"),
        ];
        for (failure, expected) in failures {
            let SendOutcome::Transient { code, reason, .. } = failure.outcome("APNs") else {
                panic!("{failure:?} is not transient");
            };
            assert_eq!(code, expected);
            assert!(reason.starts_with("APNs request failed: "), "{reason}");
        }
    }
}
