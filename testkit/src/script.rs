//! The parts every mock shares: canned responses, the FIFO script, the artificial delay and the
//! record of every request received.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

/// A response a mock sends: a status, headers and a body.
///
/// Tests queue these with a mock's `enqueue` to script errors; the mocks also build their own
/// success and spec-violation answers with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CannedResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Response headers, in order (names are sent as given).
    pub headers: Vec<(String, String)>,
    /// The raw response body.
    pub body: Vec<u8>,
}

impl CannedResponse {
    /// A response with this status, no headers and an empty body.
    #[must_use]
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A response with this status and `body` serialized as JSON (with a JSON content type).
    #[must_use]
    pub fn json(status: u16, body: &Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            body: body.to_string().into_bytes(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Adds a `Retry-After` header in seconds.
    #[must_use]
    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_header("retry-after", &seconds.to_string())
    }

    /// The value of the first header with this name (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// One request a mock received, with what the mock made of it.
#[derive(Debug, Clone)]
pub struct RecordedRequest<V> {
    /// The HTTP method, such as `POST`.
    pub method: String,
    /// The path and query, such as `/3/device/abcd`.
    pub path: String,
    /// The HTTP version the request came in with: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every request header, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The raw request body.
    pub body: Vec<u8>,
    /// The mock-specific decoded and verified view of the request.
    pub view: V,
    /// Every spec violation the mock found; empty when the request was perfect.
    pub problems: Vec<String>,
    /// The status the mock answered with.
    pub status: u16,
}

impl<V> RecordedRequest<V> {
    /// The value of the first header with this name (case-insensitive).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON, if it is JSON.
    #[must_use]
    pub fn body_json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Whether the request came over HTTP/2.
    #[must_use]
    pub fn is_http2(&self) -> bool {
        self.version == "HTTP/2.0"
    }
}

pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The request as the server harness hands it to a mock.
#[derive(Debug, Clone)]
pub(crate) struct IncomingRequest {
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl IncomingRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// How many times a header occurs.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }

    /// The path without its query string.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or_default()
    }
}

/// The recording, scripting and delay state of one mock endpoint.
#[derive(Debug)]
pub(crate) struct Recorder<V> {
    requests: Mutex<Vec<RecordedRequest<V>>>,
    /// Every request answered, recorded or not.
    count: AtomicUsize,
    /// The requests in which the mock found a problem, recorded or not.
    faulty: AtomicUsize,
    /// Whether requests are only counted: set for load tests, where a record of a million
    /// requests would cost more memory than the process under test.
    counting_only: AtomicBool,
    queue: Mutex<VecDeque<CannedResponse>>,
    delay: Mutex<Duration>,
    /// The most a delay is lengthened at random, per request.
    jitter: Mutex<Duration>,
    /// The state of the jitter's random numbers (SplitMix64).
    jitter_seed: AtomicU64,
}

impl<V> Default for Recorder<V> {
    fn default() -> Self {
        Self {
            requests: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
            faulty: AtomicUsize::new(0),
            counting_only: AtomicBool::new(false),
            queue: Mutex::new(VecDeque::new()),
            delay: Mutex::new(Duration::ZERO),
            jitter: Mutex::new(Duration::ZERO),
            jitter_seed: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide the record from the others.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<V: Clone> Recorder<V> {
    pub fn enqueue(&self, response: CannedResponse) {
        lock(&self.queue).push_back(response);
    }

    pub fn next_canned(&self) -> Option<CannedResponse> {
        lock(&self.queue).pop_front()
    }

    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.delay) = delay;
    }

    /// Lengthens each delay by a random share of `jitter` (uniform between none and all).
    pub fn set_jitter(&self, jitter: Duration) {
        *lock(&self.jitter) = jitter;
    }

    /// The delay of the next answer: the fixed delay plus its jitter.
    pub fn delay(&self) -> Duration {
        let base = *lock(&self.delay);
        let jitter = *lock(&self.jitter);
        if jitter.is_zero() {
            return base;
        }
        let mut z = self
            .jitter_seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let nanos = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
        base + Duration::from_nanos(z % nanos.saturating_add(1))
    }

    pub fn record(
        &self,
        request: IncomingRequest,
        view: V,
        problems: Vec<String>,
        response: &CannedResponse,
    ) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if !problems.is_empty() {
            self.faulty.fetch_add(1, Ordering::Relaxed);
        }
        if self.counting_only() {
            return;
        }
        lock(&self.requests).push(RecordedRequest {
            method: request.method,
            path: request.path,
            version: request.version,
            headers: request.headers,
            body: request.body,
            view,
            problems,
            status: response.status,
        });
    }

    pub fn requests(&self) -> Vec<RecordedRequest<V>> {
        lock(&self.requests).clone()
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn faulty_count(&self) -> usize {
        self.faulty.load(Ordering::Relaxed)
    }

    /// Stops keeping requests (they are still checked, answered and counted).
    pub fn set_counting_only(&self) {
        self.counting_only.store(true, Ordering::Relaxed);
    }

    pub fn counting_only(&self) -> bool {
        self.counting_only.load(Ordering::Relaxed)
    }
}

pub(crate) fn lock_state<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    lock(mutex)
}
