//! A provider that closes its connections in the middle of a broadcast: the testkit's APNs
//! mock sends a graceful `GOAWAY` on every open connection twice while a broadcast to 20,000
//! devices is being sent. APNs does this when it is restarted or rebalanced; the requests it
//! did not take must be sent again on a new connection, and the ones it took must not be.
//! The first `GOAWAY` is the two-phase graceful one; the second is sent in one phase, naming
//! the last stream the mock took, so that the requests the client had sent after it are
//! refused. The mock records every request it handled, so a lost or doubled notification
//! shows as a device token seen zero or two times.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clarion_adapters::config::Config;
use clarion_domain::message::{MessageState, Target};
use clarion_domain::service::RegisterDevice;
use clarion_domain::token::Platform;
use clarion_testkit::{ApnsMockConfig, MockApns, apns_test_key};
use support::{Harness, request, temp_dir, write_file};

const DEVICES: usize = 20_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goaway_in_the_middle_of_a_broadcast_loses_and_doubles_nothing() {
    let (private_pem, public_key_pem) = apns_test_key().unwrap();
    let mock = MockApns::start(ApnsMockConfig {
        team_id: "TEAM123456".to_owned(),
        key_id: "KEY1234567".to_owned(),
        public_key_pem,
        topic: "com.example.shop".to_owned(),
    })
    .await
    .unwrap();
    // A round trip long enough for requests to be in flight when the GOAWAY goes out.
    mock.set_delay(Duration::from_millis(5));
    mock.set_jitter(Duration::from_millis(10));
    mock.connections().set_max_concurrent_streams(100);
    mock.connections().go_away_at_request(6_000);

    let dir = temp_dir();
    let toml = format!(
        r#"
[tls]
extra_ca_certs = ["{ca}"]
[apps.shop]
sender = "direct"
[apps.shop.apns]
team_id = "TEAM123456"
key_id = "KEY1234567"
key = {{ file = "{key}" }}
topic = "com.example.shop"
endpoint = "{endpoint}"
timeout_secs = 10
"#,
        ca = write_file(&dir, "mock-ca.pem", mock.ca_pem()).display(),
        key = write_file(&dir, "AuthKey.p8", &private_pem).display(),
        endpoint = mock.base_url(),
    );
    let config: Config = toml::from_str(&toml).expect("the test configuration");
    let harness = Harness::new(&config, dir).await;
    for chunk in 0..DEVICES / 1_000 {
        let devices = (chunk * 1_000..(chunk + 1) * 1_000)
            .map(|n| RegisterDevice {
                platform: Platform::Apns,
                token: format!("{n:064x}"),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            })
            .collect();
        harness
            .service
            .register_devices("shop", devices)
            .await
            .expect("register 1,000 devices");
    }
    // A second GOAWAY later in the broadcast, on the connections opened after the first.
    let mock = Arc::new(mock);
    let second = {
        let mock = Arc::clone(&mock);
        tokio::spawn(async move {
            while mock.request_count() < 10_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // From here the mock holds each request 2 ms before taking it, and its next
            // GOAWAY is sent in one phase: the requests it holds then are refused.
            mock.connections().set_one_phase_go_away(true);
            while mock.request_count() < 14_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            mock.connections().go_away_now();
        })
    };

    let message = harness
        .send(
            "shop",
            request(Target::Broadcast { platform: None }, Some("Hi"), "All"),
        )
        .await;
    second.await.unwrap();

    let stored = harness.message("shop", &message).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for recorded in mock.requests() {
        assert!(recorded.problems.is_empty(), "{:?}", recorded.problems);
        *seen.entry(recorded.view.device_token.unwrap()).or_default() += 1;
    }
    let mut failures: HashMap<String, usize> = HashMap::new();
    for delivery in &stored.deliveries {
        if let Some(code) = &delivery.error_code() {
            *failures
                .entry(format!("{code}: {}", delivery.error_text().unwrap_or("")))
                .or_default() += 1;
        }
    }
    let doubled = seen.values().filter(|n| **n > 1).count();
    assert_eq!(doubled, 0, "notifications sent twice");
    assert_eq!(
        seen.len(),
        DEVICES,
        "every device got the notification; failures among the first deliveries: {failures:?}"
    );
    assert_eq!(mock.request_count(), DEVICES);
    assert_eq!(stored.state(), MessageState::Sent, "{:?}", stored.error());
    assert!(
        mock.connections().goaways_sent() >= 2,
        "{}",
        mock.connections().goaways_sent()
    );
    assert!(
        mock.connections().streams_refused() > 0,
        "the one-phase GOAWAY refused no request"
    );
}
