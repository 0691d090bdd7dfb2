//! The mock providers of the benchmark in a process of their own, so that their CPU time is
//! not the server's: APNs (TLS, HTTP/2), FCM with its OAuth token endpoint, and Web Push on
//! several push-service origins, each counting requests instead of recording them.
//!
//! `clarion-mocks --out FILE [--subscriptions N] [--webpush-origins N] [--streams N]` writes
//! the mocks' URLs, the CA that signed their certificates and the credentials they accept to
//! FILE as JSON, and runs until killed. On the control address it names it serves
//! `GET /stats` (request counts as JSON) and `GET /delay?ms=N&jitter_ms=J`, which sets every
//! mock's answer delay (N ms, lengthened by a random share of J ms) for the requests that
//! arrive from then on, so that one process serves runs at several round trips.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clarion_testkit::{
    ApnsMockConfig, MockApns, MockFcm, MockWebPush, TestCa, VapidTestKey, WebPushMockConfig,
    apns_test_key, fcm_test_service_account,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const TEAM_ID: &str = "BENCHTEAM1";
const KEY_ID: &str = "BENCHKEY01";
const TOPIC: &str = "com.example.bench";
const PROJECT_ID: &str = "clarion-bench";

const USAGE: &str = "usage: clarion-mocks --out FILE [--subscriptions N (10)] \
                     [--webpush-origins N (10)] [--streams N (1000)]";

struct Mocks {
    apns: MockApns,
    fcm: MockFcm,
    webpush: Vec<MockWebPush>,
}

impl Mocks {
    fn stats(&self) -> Value {
        let webpush_requests: usize = self.webpush.iter().map(MockWebPush::request_count).sum();
        let webpush_faulty: usize = self
            .webpush
            .iter()
            .map(MockWebPush::faulty_request_count)
            .sum();
        json!({
            "apns": {"requests": self.apns.request_count(), "faulty": self.apns.faulty_request_count()},
            "fcm": {"requests": self.fcm.request_count(), "faulty": self.fcm.faulty_request_count()},
            "webpush": {"requests": webpush_requests, "faulty": webpush_faulty},
        })
    }

    fn set_delay(&self, delay: Duration, jitter: Duration) {
        self.apns.set_delay(delay);
        self.apns.set_jitter(jitter);
        self.fcm.set_delay(delay);
        self.fcm.set_jitter(jitter);
        for webpush in &self.webpush {
            webpush.set_delay(delay);
            webpush.set_jitter(jitter);
        }
    }
}

/// The value after `name` on the command line, parsed, or `default` when the flag is absent.
fn arg<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => {
            let value = args
                .get(i + 1)
                .with_context(|| format!("{name} needs a value\n{USAGE}"))?;
            value
                .parse()
                .map_err(|_| anyhow::anyhow!("{name} takes a number, not {value:?}\n{USAGE}"))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out: String = arg("--out", String::new())?;
    if out.is_empty() {
        bail!("--out is required\n{USAGE}");
    }
    let subscriptions: usize = arg("--subscriptions", 10)?;
    let origins: usize = arg("--webpush-origins", 10)?;
    let streams: u32 = arg("--streams", 1000)?;
    if origins == 0 || streams == 0 {
        bail!("--webpush-origins and --streams must be at least 1\n{USAGE}");
    }

    let ca = TestCa::new()?;
    let (apns_private, apns_public) = apns_test_key()?;
    let apns = MockApns::start_with_ca(
        ApnsMockConfig {
            team_id: TEAM_ID.to_owned(),
            key_id: KEY_ID.to_owned(),
            public_key_pem: apns_public,
            topic: TOPIC.to_owned(),
        },
        &ca,
    )
    .await?;
    let fcm = MockFcm::start(PROJECT_ID).await?;
    let vapid = VapidTestKey::generate()?;
    let mut webpush = Vec::with_capacity(origins);
    for _ in 0..origins {
        let mock = MockWebPush::start_with_ca(
            WebPushMockConfig {
                expected_vapid_public_key: Some(vapid.public_key_b64url.clone()),
            },
            &ca,
        )
        .await?;
        mock.count_only();
        mock.connections().set_max_concurrent_streams(streams);
        webpush.push(mock);
    }
    apns.count_only();
    fcm.count_only();
    apns.connections().set_max_concurrent_streams(streams);
    fcm.connections().set_max_concurrent_streams(streams);
    // Subscriptions go round the origins, so that any prefix of the list spreads over all.
    let subscriptions: Vec<Value> = (0..subscriptions)
        .filter_map(|n| webpush.get(n % origins))
        .map(|mock| {
            let s = mock.new_subscription();
            json!({"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth})
        })
        .collect();
    let account = fcm_test_service_account(&fcm.token_uri(), PROJECT_ID);

    let mocks = Arc::new(Mocks { apns, fcm, webpush });
    let control = TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind the control listener")?;
    let control_url = format!(
        "http://{}",
        control.local_addr().context("control address")?
    );

    let description = json!({
        "ca_pem": ca.ca_pem,
        "stats_url": format!("{control_url}/stats"),
        "control_url": control_url,
        "streams": streams,
        "apns": {
            "url": mocks.apns.base_url(),
            "team_id": TEAM_ID,
            "key_id": KEY_ID,
            "topic": TOPIC,
            "key_pem": apns_private,
        },
        "fcm": {
            "url": mocks.fcm.base_url(),
            "token_uri": mocks.fcm.token_uri(),
            "project_id": PROJECT_ID,
            "client_email": account.client_email,
            "private_key_id": account.private_key_id,
            "private_key_pem": account.private_key_pem,
            "service_account_json": account.json,
        },
        "webpush": {
            "origins": mocks.webpush.iter().map(MockWebPush::origin).collect::<Vec<_>>(),
            "vapid_private_key_pem": vapid.private_key_pem,
            "vapid_private_key_b64url": vapid.private_key_b64url,
            "vapid_public_key_b64url": vapid.public_key_b64url,
            "subscriptions": subscriptions,
        },
    });
    // Written whole under another name, then renamed, so that a reader never sees half.
    let partial = format!("{out}.partial");
    std::fs::write(&partial, serde_json::to_vec(&description)?)
        .with_context(|| format!("failed to write {partial}"))?;
    std::fs::rename(&partial, &out).with_context(|| format!("failed to write {out}"))?;

    loop {
        let (mut stream, _) = control.accept().await.context("control listener failed")?;
        let mocks = Arc::clone(&mocks);
        tokio::spawn(async move {
            // Only the request line matters; it fits in the first read.
            let mut buffer = [0_u8; 1024];
            let read = stream.read(&mut buffer).await.unwrap_or(0);
            let head = String::from_utf8_lossy(buffer.get(..read).unwrap_or_default());
            let target = head.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = answer(&mocks, target);
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The control address's answer to a request for `target`: `/stats`, or `/delay?ms=&jitter_ms=`.
fn answer(mocks: &Mocks, target: &str) -> (&'static str, String) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match path {
        "/stats" => ("200 OK", mocks.stats().to_string()),
        "/delay" => {
            let mut delay_ms = None;
            let mut jitter_ms = Some(0);
            for pair in query.split('&') {
                match pair.split_once('=') {
                    Some(("ms", v)) => delay_ms = v.parse::<u64>().ok(),
                    Some(("jitter_ms", v)) => jitter_ms = v.parse::<u64>().ok(),
                    _ => {}
                }
            }
            let (Some(delay_ms), Some(jitter_ms)) = (delay_ms, jitter_ms) else {
                return (
                    "400 Bad Request",
                    json!({"error": "use /delay?ms=N&jitter_ms=J with whole milliseconds"})
                        .to_string(),
                );
            };
            mocks.set_delay(
                Duration::from_millis(delay_ms),
                Duration::from_millis(jitter_ms),
            );
            (
                "200 OK",
                json!({"delay_ms": delay_ms, "jitter_ms": jitter_ms}).to_string(),
            )
        }
        _ => (
            "404 Not Found",
            json!({"error": "use /stats or /delay"}).to_string(),
        ),
    }
}
