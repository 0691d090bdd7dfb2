//! The default retry walk end to end: the batch service over a real (SQLite) store, a provider
//! that always fails for a transient reason, and a manual clock moved to each
//! `next_attempt_at`: ERROR_RETRY after attempts 1, 2 and 3, ERROR after the 4th.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a failed expectation is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use clarion_adapters::sqlite::SqliteStore;
use clarion_domain::app::{Application, Applications, SenderKind};
use clarion_domain::ids::AppId;
use clarion_domain::message::{Channel, MessageState, SendOutcome, Target};
use clarion_domain::payload::Payload;
use clarion_domain::ports::{Clock as _, PushProvider};
use clarion_domain::service::{Dispatch, Providers, PushService, RegisterDevice, ServiceSettings};
use clarion_domain::token::Platform;
use clarion_testkit::ManualClock;
use time::macros::datetime;

mod support;

/// Answers every send with a 503.
#[derive(Debug, Default)]
struct Unavailable {
    sends: AtomicUsize,
}

#[async_trait]
impl PushProvider for Unavailable {
    async fn send(&self, _app: &AppId, _payload: &Payload) -> SendOutcome {
        self.sends.fetch_add(1, Ordering::SeqCst);
        SendOutcome::Transient {
            code: "UNAVAILABLE".to_owned(),
            reason: "try later".to_owned(),
            retry_after: None,
        }
    }
}

#[tokio::test]
async fn the_default_walk_is_error_retry_after_attempts_one_to_three_and_error_after_the_fourth() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::connect(dir.path().join("walk.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::new(datetime!(2026-03-01 10:00 UTC)));
    let provider = Arc::new(Unavailable::default());
    let ports = support::ports(&store, &clock);
    let app = Application::new(AppId::parse("shop").unwrap(), SenderKind::Direct);
    let service = PushService::new(
        Arc::new(Applications::new([app])),
        ports,
        Providers::default().with(Channel::Fcm, provider.clone()),
        ServiceSettings::default(),
    );
    let (device, _) = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Fcm,
                token: "fcm-token-1".to_owned(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .unwrap();
    let queued = service
        .send(
            "shop",
            support::request(
                Target::Devices {
                    device_ids: vec![device.id],
                },
                None,
                "hello",
            ),
            Dispatch::Queue,
        )
        .await
        .unwrap();

    let mut walk = Vec::new();
    let mut waits = Vec::new();
    for _ in 0..4 {
        let before = clock.now();
        let report = service.process_batch(10, &|_| {}).await.unwrap();
        assert_eq!(report.processed, 1);
        // Nothing is due before next_attempt_at.
        assert_eq!(
            service.process_batch(10, &|_| {}).await.unwrap().processed,
            0
        );
        let (message, _) = service.get_message("shop", queued.id).await.unwrap();
        walk.push((message.state(), message.number_of_send_attempts()));
        if let Some(next) = message.next_attempt_at() {
            waits.push((next - before).whole_seconds());
            clock.set(next);
        }
    }

    assert_eq!(
        walk,
        vec![
            (MessageState::ErrorRetry, 1),
            (MessageState::ErrorRetry, 2),
            (MessageState::ErrorRetry, 3),
            (MessageState::Error, 4),
        ]
    );
    // 30 s doubling, with equal jitter: 15-30 s, 30-60 s, 60-120 s.
    for (wait, (low, high)) in waits.iter().zip([(15, 30), (30, 60), (60, 120)]) {
        assert!((low..=high).contains(wait), "{waits:?}");
    }
    assert_eq!(provider.sends.load(Ordering::SeqCst), 4);
    let (message, _) = service.get_message("shop", queued.id).await.unwrap();
    assert_eq!(
        message.deliveries[0].error_code(),
        Some("retries_exhausted")
    );
}
