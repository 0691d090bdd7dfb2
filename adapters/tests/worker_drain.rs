//! A queue of one-device messages drained by the batch worker through the APNs provider to
//! the testkit's mock APNs at a real provider's round trip: every message is sent once and
//! only once. The test prints how long the drain took; `CLARION_DRAIN_MESSAGES` sets how many
//! messages it queues (2,000 by default; 20,000 or more to measure the drain rate).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clarion_adapters::config::Config;
use clarion_adapters::wiring;
use clarion_domain::device::DeviceFilter;
use clarion_domain::ids::DeviceId;
use clarion_domain::message::{Content, Priority, PushOptions, Target};
use clarion_domain::service::{Dispatch, PushService, RegisterDevice, SendRequest};
use clarion_domain::token::Platform;
use clarion_testkit::{ApnsMockConfig, MockApns, apns_test_key};

const APP: &str = "shop";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.shop";
/// A provider's round trip from a data centre.
const ROUND_TRIP: Duration = Duration::from_millis(50);

fn messages_to_queue() -> usize {
    std::env::var("CLARION_DRAIN_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000)
}

/// A distinct 64-character hexadecimal token for each `n`.
fn device_token(n: usize) -> String {
    format!("{n:064x}")
}

async fn register_devices(service: &PushService, count: usize) -> Vec<DeviceId> {
    let tokens: Vec<usize> = (0..count).collect();
    for chunk in tokens.chunks(clarion_domain::service::MAX_BULK_DEVICES) {
        let requests = chunk
            .iter()
            .map(|n| RegisterDevice {
                platform: Platform::Apns,
                token: device_token(*n),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            })
            .collect();
        service
            .register_devices(APP, requests)
            .await
            .expect("register the devices");
    }
    let mut ids = Vec::with_capacity(count);
    let mut filter = DeviceFilter {
        limit: Some(1000),
        ..DeviceFilter::default()
    };
    loop {
        let page = service.list_devices(APP, &filter).await.expect("a page");
        let Some(last) = page.last() else {
            return ids;
        };
        filter.after = Some(last.id);
        ids.extend(page.iter().map(|d| d.id));
    }
}

fn to_device(id: DeviceId) -> SendRequest {
    SendRequest {
        target: Target::Devices {
            device_ids: vec![id],
        },
        content: Content {
            heading: Some("Your order".to_owned()),
            body: "has shipped".to_owned(),
            url: None,
            extra_data: None,
        },
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_one_device_messages_drains_with_each_sent_exactly_once() {
    // Arrange: the mock APNs answers after a real round trip, the server runs with its
    // default worker settings, and every message waits in the queue.
    clarion_testkit::install_default_crypto_provider();
    let count = messages_to_queue();
    let (p8, public) = apns_test_key().expect("an APNs test key");
    let mock = MockApns::start(ApnsMockConfig {
        team_id: TEAM_ID.to_owned(),
        key_id: KEY_ID.to_owned(),
        public_key_pem: public,
        topic: TOPIC.to_owned(),
    })
    .await
    .expect("start the APNs mock");
    mock.set_delay(ROUND_TRIP);
    let dir = tempfile::tempdir().expect("a temporary folder");
    std::fs::write(dir.path().join("AuthKey.p8"), p8).unwrap();
    std::fs::write(dir.path().join("ca.pem"), mock.ca_pem()).unwrap();
    let file = dir.path().join("clarion.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[database]
url = "sqlite://{db}"
[tls]
extra_ca_certs = ["{ca}"]
[apps.shop]
sender = "direct"
[apps.shop.apns]
team_id = "{TEAM_ID}"
key_id = "{KEY_ID}"
key = {{ file = "{key}" }}
topic = "{TOPIC}"
environment = "sandbox"
endpoint = "{endpoint}"
concurrency = 4000
"#,
            db = dir.path().join("clarion.db").display(),
            ca = dir.path().join("ca.pem").display(),
            key = dir.path().join("AuthKey.p8").display(),
            endpoint = mock.base_url(),
        ),
    )
    .unwrap();
    let config = Config::load(Some(&file)).expect("a valid configuration");
    let runtime = wiring::build(config, "drain-test").await.expect("wire");
    let service = runtime.service;
    let devices = register_devices(&service, count).await;
    let queued = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for chunk in devices.chunks(count.div_ceil(64).max(1)) {
        let (service, chunk) = (service.clone(), chunk.to_vec());
        senders.spawn(async move {
            for device in chunk {
                service
                    .send(APP, to_device(device), Dispatch::Queue)
                    .await
                    .expect("queue a message");
            }
        });
    }
    while let Some(done) = senders.join_next().await {
        done.expect("a sender task");
    }
    let queued = queued.elapsed();
    assert_eq!(service.backlog().await.unwrap(), count as u64);

    // Act
    let started = Instant::now();
    let report = service
        .process_batch(u64::MAX, &|_| {})
        .await
        .expect("the batch");
    let drained = started.elapsed();

    // Assert: every message sent, every device reached once.
    eprintln!(
        "queued {count} one-device messages in {queued:.2?} ({:.0}/s); drained them at a \
         {ROUND_TRIP:?} round trip in {drained:.2?} ({:.0} messages/s)",
        count as f64 / queued.as_secs_f64(),
        count as f64 / drained.as_secs_f64(),
    );
    assert_eq!(report.processed, count as u64, "{report:?}");
    assert_eq!(report.sent, count as u64, "{report:?}");
    assert_eq!(mock.request_count(), count);
    let mut per_token: BTreeMap<String, usize> = BTreeMap::new();
    for request in mock.requests() {
        *per_token
            .entry(request.view.device_token.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(per_token.len(), count, "some device got no notification");
    assert!(
        per_token.values().all(|n| *n == 1),
        "some device got more than one notification"
    );
    assert_eq!(service.backlog().await.unwrap(), 0);
}
