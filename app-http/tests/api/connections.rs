//! The server defends its connections: slow or idle clients are closed by the header read,
//! idle and body read timeouts, and beyond `http.max_connections` new connections wait while
//! the established ones are served. Each test asserts what happens, with generous bounds that
//! only fail when it never happens.

use std::time::Duration;

use clarion_adapters::config::Config;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, runtime_with, spawn};

/// Long enough for anything that happens at all; a bound, not a measured time.
const BOUND: Duration = Duration::from_secs(30);

async fn spawn_with(customise: impl FnOnce(&mut Config)) -> TestApp {
    let (runtime, dir) = runtime_with(customise).await;
    spawn(runtime, dir).await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("the server takes the connection")
}

/// Reads one HTTP/1.1 answer (head and a `Content-Length` body) and returns its status line,
/// its lower-cased head and its body.
async fn read_answer(stream: &mut TcpStream) -> (String, String, String) {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&received).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .map_or(0, |value| value.trim().parse().expect("a length"));
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                let status = head.lines().next().unwrap_or_default().to_owned();
                return (status, head, body.into_owned());
            }
        }
        let read = stream.read(&mut chunk).await.expect("the answer arrives");
        assert!(read > 0, "the connection closed mid-answer: {text}");
        received.extend_from_slice(&chunk[..read]);
    }
}

/// Sends a keep-alive `GET /healthz` and reads its answer.
async fn healthz_on(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .expect("the request is sent");
    tokio::time::timeout(BOUND, read_answer(stream))
        .await
        .expect("the answer arrives in time")
        .0
}

/// Waits until the server closes `stream` (end of stream or a reset).
async fn closed_by_the_server(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.is_ok()
}

#[tokio::test]
async fn a_connection_that_sends_its_headers_too_slowly_is_closed() {
    let app = spawn_with(|config| config.http.header_read_timeout_secs = 1).await;
    let mut slow = connect(&app).await;

    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: te")
        .await
        .unwrap();

    assert!(
        closed_by_the_server(&mut slow).await,
        "the connection is still open"
    );
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_header_timeout() {
    let app = spawn_with(|config| config.http.header_read_timeout_secs = 1).await;
    let mut silent = connect(&app).await;

    assert!(
        closed_by_the_server(&mut silent).await,
        "the connection is still open"
    );
}

#[tokio::test]
async fn a_connection_that_stops_moving_bytes_is_closed_after_the_idle_timeout() {
    let app = spawn_with(|config| {
        config.http.header_read_timeout_secs = 600;
        config.http.idle_timeout_secs = 1;
    })
    .await;
    let mut idle = connect(&app).await;
    assert!(healthz_on(&mut idle).await.contains("200"));

    assert!(
        closed_by_the_server(&mut idle).await,
        "the connection is still open"
    );
}

#[tokio::test]
async fn slow_connections_beyond_the_maximum_do_not_keep_healthz_from_answering() {
    let app = spawn_with(|config| {
        config.http.max_connections = 4;
        config.http.header_read_timeout_secs = 1;
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..12 {
        let mut stream = connect(&app).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        slow.push(stream);
    }

    let answer = tokio::time::timeout(BOUND, app.get("/healthz"))
        .await
        .expect("/healthz answers once the slow connections time out");

    assert_eq!(answer.status, 200, "{answer:?}");
    // The slow clients, still holding their sockets, were closed by the server.
    for stream in &mut slow {
        assert!(closed_by_the_server(stream).await);
    }
}

#[tokio::test]
async fn beyond_the_maximum_new_connections_wait_while_established_ones_are_served() {
    let app = spawn_with(|config| {
        config.http.max_connections = 3;
        config.http.header_read_timeout_secs = 600;
    })
    .await;
    // Three keep-alive connections, each served once: every slot is taken.
    let mut established = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&app).await;
        assert!(healthz_on(&mut stream).await.contains("200"));
        established.push(stream);
    }
    let mut waiting = connect(&app).await;
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();

    let early = tokio::time::timeout(Duration::from_millis(300), read_answer(&mut waiting)).await;
    assert!(early.is_err(), "a connection over the maximum was served");
    assert!(healthz_on(&mut established[0]).await.contains("200"));

    drop(established.pop());
    let (status, _, _) = tokio::time::timeout(BOUND, read_answer(&mut waiting))
        .await
        .expect("the waiting connection is served once a slot frees");
    assert!(status.contains("200"), "{status}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_is_cut_with_a_408_problem() {
    let app = spawn_with(|config| config.http.body_read_timeout_secs = 1).await;
    let mut stream = connect(&app).await;
    let head = format!(
        "POST /v1/apps/default/devices HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"platform\"",
        app.admin_key
    );

    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, head, body) = tokio::time::timeout(BOUND, read_answer(&mut stream))
        .await
        .expect("the server answers a body that stopped");

    assert!(status.contains("408"), "{status}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{head}"
    );
    let problem: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(problem["status"], 408);
    assert_eq!(problem["title"], "Request Timeout");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("body_read_timeout_secs")
    );
}

#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let app = spawn_with(|_| {}).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();

    let response = client.get(app.url("/healthz")).send().await.unwrap();

    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}
