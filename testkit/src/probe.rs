//! HTTP/1.1 at the byte level, for what an HTTP client library will not send (a hundred
//! headers, a request line that never ends) or hides (a response without a body), and a
//! health prober that asks a route from a thread of its own, over a fresh connection each
//! time, and records how long every answer took.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A response read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body, with any chunked framing removed.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header with this (lower-case) name.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `request` as given on a new connection to `addr` and reads the answer until the
/// server closes the connection or the answer is complete. Each read and write may take at
/// most `timeout`. The request should say `Connection: close`.
///
/// A server may answer and close before it has read the whole request (a header section too
/// large, say): a failed write is then not an error as long as an answer can be read.
///
/// # Errors
/// When nothing can be connected to, no answer comes within the timeout, or the answer is not
/// HTTP/1.1.
pub fn exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<RawResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let written = stream.write_all(request);
    let mut received = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                received.extend_from_slice(&buffer[..read]);
                if let Some(response) = parse(&received, false)? {
                    return Ok(response);
                }
            }
            // A reset after the server has answered still leaves the answer readable.
            Err(error) if !received.is_empty() => {
                return parse(&received, true)?.ok_or(error);
            }
            Err(error) => return Err(written.err().unwrap_or(error)),
        }
    }
    parse(&received, true)?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the connection closed after {} bytes of an incomplete answer",
                received.len()
            ),
        )
    })
}

/// Parses a complete response, `None` while more bytes are needed. `closed` says that the
/// connection has ended, which ends a body sent without framing.
fn parse(received: &[u8], closed: bool) -> io::Result<Option<RawResponse>> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| invalid("the answer does not start with an HTTP/1.x status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let rest = &received[end + 4..];
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(rest) {
            Some(body) => body,
            None => return Ok(None),
        }
    } else if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| invalid("the content-length is not a number"))?;
        if rest.len() < length {
            return Ok(None);
        }
        rest[..length].to_vec()
    } else if closed {
        // Without framing the body ends where the connection does.
        rest.to_vec()
    } else {
        return Ok(None);
    };
    Ok(Some(RawResponse {
        status,
        headers,
        body,
    }))
}

/// The body of a complete chunked encoding, `None` while more bytes are needed.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// `GET path` with `Connection: close`.
#[must_use]
pub fn get_request(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// One probe's result.
#[derive(Debug, Clone)]
struct Probe {
    latency: Duration,
    /// The status, or why there was none.
    outcome: Result<u16, String>,
}

/// What a [`HealthProbe`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// How many probes were sent.
    pub probes: usize,
    /// The probes answered 200, by latency: median, 99th percentile and largest.
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    /// Every probe not answered 200, with what happened instead.
    pub failures: Vec<String>,
}

/// Asks `GET path` every `interval` from a thread, over a new connection each time, until
/// stopped. A probe waits for its answer as long as `patience`.
#[derive(Debug)]
pub struct HealthProbe {
    addr: Arc<Mutex<SocketAddr>>,
    probes: Arc<Mutex<Vec<Probe>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HealthProbe {
    #[must_use]
    pub fn start(
        addr: SocketAddr,
        path: &str,
        interval: Duration,
        patience: Duration,
    ) -> HealthProbe {
        let addr = Arc::new(Mutex::new(addr));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let request = get_request(path);
        let thread = {
            let (addr, probes, stop) = (Arc::clone(&addr), Arc::clone(&probes), Arc::clone(&stop));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let target = *addr.lock().unwrap_or_else(PoisonError::into_inner);
                    let started = Instant::now();
                    let outcome = exchange(target, &request, patience)
                        .map(|response| response.status)
                        .map_err(|error| error.to_string());
                    let latency = started.elapsed();
                    probes
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Probe { latency, outcome });
                    thread::sleep(interval.saturating_sub(latency));
                }
            })
        };
        HealthProbe {
            addr,
            probes,
            stop,
            thread: Some(thread),
        }
    }

    /// Probes another address from now on (a restarted server).
    pub fn retarget(&self, addr: SocketAddr) {
        *self.addr.lock().unwrap_or_else(PoisonError::into_inner) = addr;
    }

    /// Stops probing and reports.
    #[must_use]
    pub fn finish(mut self) -> ProbeReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let probes =
            std::mem::take(&mut *self.probes.lock().unwrap_or_else(PoisonError::into_inner));
        let mut answered: Vec<Duration> = probes
            .iter()
            .filter(|p| p.outcome == Ok(200))
            .map(|p| p.latency)
            .collect();
        answered.sort_unstable();
        let failures = probes
            .iter()
            .filter(|p| p.outcome != Ok(200))
            .map(|p| match &p.outcome {
                Ok(status) => format!("answered {status} after {:?}", p.latency),
                Err(error) => format!("{error} after {:?}", p.latency),
            })
            .collect();
        ProbeReport {
            probes: probes.len(),
            p50: percentile(&answered, 50),
            p99: percentile(&answered, 99),
            max: answered.last().copied().unwrap_or_default(),
            failures,
        }
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The nearest-rank percentile of sorted values; zero when there are none.
fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_complete_only_when_its_framing_says_so() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 4\r\n\r\n";
        assert_eq!(parse(head, false).unwrap(), None);
        let mut whole = head.to_vec();
        whole.extend_from_slice(b"{}{}");
        let response = parse(&whole, false).unwrap().unwrap();
        assert_eq!(response.status, 431);
        assert_eq!(response.header("content-length"), Some("4"));
        assert_eq!(response.body, b"{}{}");
    }

    #[test]
    fn a_chunked_body_is_joined_and_an_unframed_one_ends_with_the_connection() {
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse(chunked, false).unwrap().unwrap().body, b"abcde");
        assert_eq!(parse(&chunked[..chunked.len() - 5], false).unwrap(), None);
        let unframed = b"HTTP/1.1 408 Request Timeout\r\n\r\nslow";
        assert_eq!(parse(unframed, false).unwrap(), None);
        assert_eq!(parse(unframed, true).unwrap().unwrap().body, b"slow");
    }

    #[test]
    fn an_answer_that_is_not_http_is_an_error() {
        assert!(parse(b"SSH-2.0-OpenSSH\r\n\r\n", true).is_err());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted[..1], 99), Duration::from_millis(1));
        assert_eq!(percentile(&[], 99), Duration::ZERO);
    }
}
