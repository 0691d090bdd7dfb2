//! The mock providers of the benchmark in a process of their own, so that their CPU time is
//! not the server's: APNs (TLS, HTTP/2), FCM with its OAuth token endpoint, and Web Push,
//! each answering at once and counting requests instead of recording them.
//!
//! `clarion-mocks --out FILE [--subscriptions N]` writes the mocks' URLs, the CA that signed
//! their certificates and the credentials they accept to FILE as JSON, serves request counts
//! as JSON at the `stats_url` it names, and runs until killed.

use std::sync::Arc;

use anyhow::Context as _;
use clarion_testkit::{
    ApnsMockConfig, MockApns, MockFcm, MockWebPush, TestCa, VapidTestKey, WebPushMockConfig,
    apns_test_key, fcm_test_service_account,
};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const TEAM_ID: &str = "BENCHTEAM1";
const KEY_ID: &str = "BENCHKEY01";
const TOPIC: &str = "com.example.bench";
const PROJECT_ID: &str = "clarion-bench";

struct Mocks {
    apns: MockApns,
    fcm: MockFcm,
    webpush: MockWebPush,
}

impl Mocks {
    fn stats(&self) -> serde_json::Value {
        json!({
            "apns": {"requests": self.apns.request_count(), "faulty": self.apns.faulty_request_count()},
            "fcm": {"requests": self.fcm.request_count(), "faulty": self.fcm.faulty_request_count()},
            "webpush": {"requests": self.webpush.request_count(), "faulty": self.webpush.faulty_request_count()},
        })
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let out = arg("--out").context("usage: clarion-mocks --out FILE [--subscriptions N]")?;
    let subscriptions: usize = arg("--subscriptions")
        .map(|n| n.parse())
        .transpose()
        .context("--subscriptions takes a number")?
        .unwrap_or(10);

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
    let webpush = MockWebPush::start_with_ca(
        WebPushMockConfig {
            expected_vapid_public_key: Some(vapid.public_key_b64url.clone()),
        },
        &ca,
    )
    .await?;
    apns.count_only();
    fcm.count_only();
    webpush.count_only();
    let subscriptions: Vec<_> = (0..subscriptions)
        .map(|_| {
            let s = webpush.new_subscription();
            json!({"endpoint": s.endpoint, "p256dh": s.p256dh, "auth": s.auth})
        })
        .collect();
    let account = fcm_test_service_account(&fcm.token_uri(), PROJECT_ID);

    let mocks = Arc::new(Mocks { apns, fcm, webpush });
    let stats = TcpListener::bind("127.0.0.1:0")
        .await
        .context("failed to bind the stats listener")?;
    let stats_url = format!(
        "http://{}/stats",
        stats.local_addr().context("stats address")?
    );

    let description = json!({
        "ca_pem": ca.ca_pem,
        "stats_url": stats_url,
        "apns": {
            "url": mocks.apns.base_url(),
            "team_id": TEAM_ID,
            "key_id": KEY_ID,
            "topic": TOPIC,
            "key_pem": apns_private,
        },
        "fcm": {
            "url": mocks.fcm.base_url(),
            "service_account_json": account.json,
        },
        "webpush": {
            "origin": mocks.webpush.origin(),
            "vapid_private_key_pem": vapid.private_key_pem,
            "vapid_private_key_b64url": vapid.private_key_b64url,
            "vapid_public_key_b64url": vapid.public_key_b64url,
            "subscriptions": subscriptions,
        },
    });
    // Written whole under another name, then renamed, so that a reader never sees half.
    let partial = format!("{out}.partial");
    std::fs::write(&partial, serde_json::to_vec_pretty(&description)?)
        .with_context(|| format!("failed to write {partial}"))?;
    std::fs::rename(&partial, &out).with_context(|| format!("failed to write {out}"))?;

    loop {
        let (mut stream, _) = stats.accept().await.context("stats listener failed")?;
        let mocks = Arc::clone(&mocks);
        tokio::spawn(async move {
            // Any request gets the counts; the request itself is not read beyond its start.
            let mut buffer = [0_u8; 1024];
            let _ = stream.read(&mut buffer).await;
            let body = mocks.stats().to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
