//! Slow clients against a server with small connection limits: connections that never finish
//! their headers (slowloris), a keep-alive connection left idle and a body trickled too slowly
//! are all closed by the server, and `/healthz` answers from a fresh connection once a slot
//! frees.

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};

use crate::server::Clarion;

/// The settings of the server this module attacks: small, so that the cut-offs come quickly.
pub const LIMITS: &[(&str, &str)] = &[
    ("CLARION_HTTP__HEADER_READ_TIMEOUT_SECS", "1"),
    ("CLARION_HTTP__MAX_CONNECTIONS", "64"),
    ("CLARION_HTTP__IDLE_TIMEOUT_SECS", "2"),
    ("CLARION_HTTP__BODY_READ_TIMEOUT_SECS", "2"),
];

/// How many connections stall at once: three times `max_connections`.
const STALLED: usize = 200;

/// A generous deadline for every cut-off (the limits above are 1 and 2 seconds): it bounds
/// the test, it does not time the server.
const PATIENCE: Duration = Duration::from_secs(60);

/// How a connection the test left hanging ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Closed (EOF or reset), after these bytes of an answer, if any.
    Closed(Vec<u8>),
    /// Still open at the deadline.
    Open,
}

/// Reads until the server closes the connection or `deadline` passes.
async fn wait_for_close(stream: &mut TcpStream, deadline: Instant) -> End {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match timeout(
            deadline.saturating_duration_since(Instant::now()),
            stream.read(&mut buffer),
        )
        .await
        {
            Err(_) => return End::Open,
            Ok(Ok(0) | Err(_)) => return End::Closed(received),
            Ok(Ok(read)) => received.extend_from_slice(&buffer[..read]),
        }
    }
}

/// Connections that send half a request line and headers, then nothing.
pub async fn slowloris(server: &Clarion) -> Result<String, String> {
    let mut stalled = Vec::new();
    for i in 0..STALLED {
        let mut stream = TcpStream::connect(server.addr())
            .await
            .map_err(|e| format!("connection {i} could not be opened: {e}"))?;
        // A server that refuses the connection at once may already have closed it.
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            .await;
        stalled.push(stream);
    }
    server
        .healthy_within(PATIENCE)
        .await
        .map_err(|e| format!("with {STALLED} stalled connections: {e}"))?;
    let started = Instant::now();
    let deadline = started + PATIENCE;
    let mut ends = JoinSet::new();
    for mut stream in stalled {
        ends.spawn(async move { wait_for_close(&mut stream, deadline).await });
    }
    let mut open = 0;
    while let Some(end) = ends.join_next().await {
        if end.map_err(|e| e.to_string())? == End::Open {
            open += 1;
        }
    }
    if open > 0 {
        return Err(format!(
            "{open} of {STALLED} stalled connections were still open after {PATIENCE:?}"
        ));
    }
    server.healthy_within(PATIENCE).await?;
    Ok(format!(
        "/healthz answered with {STALLED} stalled connections; all closed within {:?}",
        started.elapsed()
    ))
}

/// A keep-alive connection that asks once and then says nothing.
pub async fn idle(server: &Clarion) -> Result<String, String> {
    let mut stream = TcpStream::connect(server.addr())
        .await
        .map_err(|e| format!("no connection: {e}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| format!("the request could not be sent: {e}"))?;
    let mut buffer = [0u8; 4096];
    let read = timeout(PATIENCE, stream.read(&mut buffer))
        .await
        .map_err(|_| "no answer to the first request")?
        .map_err(|e| format!("the first answer broke off: {e}"))?;
    if !buffer[..read].starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "the first request was answered {:?}",
            String::from_utf8_lossy(&buffer[..read.min(40)])
        ));
    }
    let started = Instant::now();
    match wait_for_close(&mut stream, started + PATIENCE).await {
        End::Closed(_) => Ok(format!("closed after {:?} idle", started.elapsed())),
        End::Open => Err(format!("still open after {PATIENCE:?} idle")),
    }
}

/// A body that announces 1,000 bytes and sends 10.
pub async fn slow_body(server: &Clarion) -> Result<String, String> {
    let mut stream = TcpStream::connect(server.addr())
        .await
        .map_err(|e| format!("no connection: {e}"))?;
    let head = format!(
        "POST /v1/apps/shop/devices HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"platfor",
        server.app_key
    );
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("the request could not be sent: {e}"))?;
    let started = Instant::now();
    match wait_for_close(&mut stream, started + PATIENCE).await {
        End::Open => Err(format!("still open after {PATIENCE:?}")),
        End::Closed(answer) if answer.is_empty() => Ok(format!(
            "closed without an answer after {:?}",
            started.elapsed()
        )),
        End::Closed(answer) => {
            let text = String::from_utf8_lossy(&answer).to_lowercase();
            if text.starts_with("http/1.1 408")
                && text.contains("content-type: application/problem+json")
            {
                Ok(format!("answered 408 after {:?}", started.elapsed()))
            } else {
                Err(format!(
                    "expected a 408 problem document or a closed connection, got {:?}",
                    text.chars().take(200).collect::<String>()
                ))
            }
        }
    }
}
