//! One application's hanging provider cannot stall another's messages: the worker loop over
//! a real (SQLite) store, with a provider that holds application `hanging`'s sends until the
//! test lets them go (a provider that answers only at its timeout) and answers application
//! `other` at once.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a failed expectation is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use clarion_adapters::sqlite::SqliteStore;
use clarion_adapters::worker::{self, WorkerSettings};
use clarion_domain::app::{Application, Applications, SenderKind};
use clarion_domain::ids::{AppId, UserId};
use clarion_domain::message::{Channel, Message, MessageState, SendOutcome, Target};
use clarion_domain::payload::Payload;
use clarion_domain::ports::PushProvider;
use clarion_domain::service::{Dispatch, Providers, PushService, RegisterDevice, ServiceSettings};
use clarion_domain::token::Platform;
use clarion_testkit::ManualClock;
use tokio::sync::{Semaphore, watch};

mod support;

const HANGING: &str = "hanging";
const OTHER: &str = "other";

/// Holds `hanging`'s sends until the gate opens, then answers them as timed out; answers
/// `other`'s first send with a transient failure (so that it is retried) and the rest at once.
#[derive(Debug)]
struct Provider {
    gate: Semaphore,
    hanging_started: AtomicUsize,
    hanging_done: AtomicUsize,
    other_sends: AtomicUsize,
}

#[async_trait]
impl PushProvider for Provider {
    async fn send(&self, app: &AppId, _payload: &Payload) -> SendOutcome {
        if app.as_str() == HANGING {
            self.hanging_started.fetch_add(1, Ordering::SeqCst);
            let _permit = self.gate.acquire().await.unwrap();
            self.hanging_done.fetch_add(1, Ordering::SeqCst);
            return SendOutcome::Transient {
                code: "timeout".to_owned(),
                reason: "no answer within the timeout".to_owned(),
                retry_after: None,
            };
        }
        if self.other_sends.fetch_add(1, Ordering::SeqCst) == 0 {
            return SendOutcome::Transient {
                code: "UNAVAILABLE".to_owned(),
                reason: "try later".to_owned(),
                retry_after: None,
            };
        }
        SendOutcome::Accepted {
            provider_id: None,
            details: None,
        }
    }
}

async fn register(service: &PushService, app: &str, token: &str) {
    service
        .register_device(
            app,
            RegisterDevice {
                platform: Platform::Fcm,
                token: token.to_owned(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: Some(UserId::parse("user").unwrap()),
                device_id: None,
            },
        )
        .await
        .unwrap();
}

async fn send(service: &PushService, app: &str, dispatch: Dispatch) -> Message {
    let target = Target::User {
        user_id: UserId::parse("user").unwrap(),
    };
    let request = support::request(target, None, "hello");
    service.send(app, request, dispatch).await.unwrap()
}

/// Polls `condition` every few milliseconds until it holds or `deadline` passes.
async fn eventually<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if condition().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn another_applications_retry_leaves_while_one_applications_provider_hangs() {
    // Arrange: every hanging send can hold a slot (more messages than the worker has slots),
    // and the other application has a message whose retry falls due later.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::connect(dir.path().join("fair.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let clock = Arc::new(ManualClock::starting_now());
    let provider = Arc::new(Provider {
        gate: Semaphore::new(0),
        hanging_started: AtomicUsize::new(0),
        hanging_done: AtomicUsize::new(0),
        other_sends: AtomicUsize::new(0),
    });
    let ports = support::ports(&store, &clock);
    let apps =
        [HANGING, OTHER].map(|id| Application::new(AppId::parse(id).unwrap(), SenderKind::Direct));
    let settings = ServiceSettings::default();
    let slots = settings.message_concurrency;
    let service = PushService::new(
        Arc::new(Applications::new(apps)),
        ports,
        Providers::default().with(Channel::Fcm, provider.clone()),
        settings,
    );
    register(&service, HANGING, "hanging-token").await;
    register(&service, OTHER, "other-token").await;
    let retried = send(&service, OTHER, Dispatch::Now).await;
    assert_eq!(retried.state(), MessageState::ErrorRetry);
    let due = retried.next_attempt_at().unwrap();
    for _ in 0..slots + 2 {
        send(&service, HANGING, Dispatch::Queue).await;
    }
    let (stop, stopped) = watch::channel(false);
    let worker = tokio::spawn(worker::run(
        service.clone(),
        WorkerSettings {
            poll_interval: Duration::from_millis(20),
            batch_size: 100,
        },
        stopped,
    ));
    assert!(
        eventually(Duration::from_secs(10), || async {
            provider.hanging_started.load(Ordering::SeqCst) >= slots / 2
        })
        .await,
        "the hanging application's sends never started"
    );

    // Act: the other application's retry falls due while those sends hang.
    clock.set(due);
    let other_sent = eventually(Duration::from_secs(10), || async {
        service
            .get_message(OTHER, retried.id)
            .await
            .unwrap()
            .0
            .state()
            == MessageState::Sent
    })
    .await;

    // Assert: it left before any hanging send ended, and the hanging application did not
    // take every slot.
    let hanging = provider.hanging_started.load(Ordering::SeqCst);
    let hanging_done = provider.hanging_done.load(Ordering::SeqCst);
    provider.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    stop.send(true).unwrap();
    worker.await.unwrap();
    assert!(
        other_sent,
        "the other application's retry did not leave while {hanging} sends hung"
    );
    assert_eq!(
        hanging_done, 0,
        "a hanging send ended before the retry left"
    );
    assert!(
        hanging < slots,
        "the hanging application held every one of the {slots} slots"
    );
    assert_eq!(provider.other_sends.load(Ordering::SeqCst), 2);
}
