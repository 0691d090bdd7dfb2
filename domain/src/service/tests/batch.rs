//! Tests of the batch worker's pipeline: its claims, retries and expiry, and its leases renewed
//! together.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::SenderKind;
use crate::ids::MessageId;
use crate::message::{Channel, DeliveryState, Message, MessageState, SendOutcome};
use crate::ports::MockPushProvider;
use crate::service::BatchReport;
use crate::service::tests::helpers::{
    Mocks, NOW, apns_device, capture_saves, claimed, claimed_message, claims_once,
    claims_one_device_message, first_deliveries, one_device_messages, provider, recording,
};
#[tokio::test]
async fn a_batch_retries_transient_failures_later_and_honours_retry_after() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let mut claims = vec![
        vec![],
        vec![claimed(
            &mocks.deliveries,
            claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW)),
        )],
    ];
    mocks
        .messages
        .expect_claim_due_except()
        .times(2)
        .returning(move |_, limit, lease, _, each| {
            assert!(limit >= 1);
            assert_eq!(lease.until, NOW + Duration::from_secs(60));
            Ok(first_deliveries(claims.pop().unwrap(), each))
        });
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1)]));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    let saved = capture_saves(&mut mocks);
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Transient {
                code: "429".into(),
                reason: "TooManyRequests".into(),
                retry_after: Some(Duration::from_secs(1800)),
            },
            1,
        ),
    ));
    let service = mocks.service();
    let seen = Mutex::new(0);

    let report = service
        .process_batch(10, &|_| *seen.lock().unwrap() += 1)
        .await
        .unwrap();

    assert_eq!(
        report,
        BatchReport {
            processed: 1,
            retrying: 1,
            ..BatchReport::default()
        }
    );
    assert_eq!(*seen.lock().unwrap(), 1);
    let saved = saved.lock().unwrap();
    let message = saved.last().unwrap();
    assert_eq!(message.state(), MessageState::ErrorRetry);
    assert_eq!(
        message.next_attempt_at(),
        Some(NOW + Duration::from_secs(1800))
    );
}

#[tokio::test]
async fn a_batch_gives_up_an_expired_message_without_sending() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let old = Message::initial_progress(NOW - Duration::from_secs(7200));
    claims_one_device_message(&mut mocks, old);
    // The claim brought every delivery: they are given up with the save, in one write.
    mocks.messages.expect_give_up_due_deliveries().never();
    let saved = capture_saves(&mut mocks);
    mocks
        .providers
        .push((Channel::Apns, provider(SendOutcome::Debug, 0)));
    let service = mocks.service();

    let report = service.process_batch(10, &|_| {}).await.unwrap();

    assert_eq!(report.failed, 1);
    let saved = saved.lock().unwrap();
    assert_eq!(saved[0].state(), MessageState::Error);
    assert_eq!(saved[0].error(), Some("message is older than max_age"));
    assert_eq!(saved[0].deliveries[0].state(), DeliveryState::Failed);
    assert_eq!(saved[0].deliveries[0].error_code(), Some("expired"));
}

#[tokio::test]
async fn a_claim_of_one_device_messages_costs_a_few_reads_and_one_write_per_message() {
    // Arrange: 200 one-device messages come due together; every store call is counted, and
    // the reads a message used to cost (its deliveries, devices and tally) fail the test.
    const MESSAGES: i64 = 200;
    let mut mocks = Mocks::new(SenderKind::Direct);
    let messages = one_device_messages(&mocks, MESSAGES);
    // Later claims find nothing due (the pipeline claims again as slots free up).
    claims_once(&mut mocks, messages);
    let asked = Arc::new(Mutex::new(Vec::new()));
    let sink = asked.clone();
    mocks
        .devices
        .expect_get_devices()
        .times(1)
        .returning(move |_, ids| {
            sink.lock().unwrap().push(ids.len());
            Ok(ids.iter().map(|id| apns_device(id.0)).collect())
        });
    mocks.messages.expect_due_deliveries().never();
    mocks.messages.expect_delivery_tally().never();
    mocks.messages.expect_give_up_due_deliveries().never();
    mocks.messages.expect_record_deliveries().never();
    mocks.messages.expect_save_progress().never();
    let saves = Arc::new(Mutex::new(Vec::new()));
    let sink = saves.clone();
    mocks
        .messages
        .expect_save_attempt()
        .times(MESSAGES as usize)
        .returning(move |m, _, held| {
            sink.lock().unwrap().push((m.state(), held.to_vec()));
            Ok(true)
        });
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: None,
                details: None,
            },
            MESSAGES as usize,
        ),
    ));
    let service = mocks.service();

    // Act
    let report = service.process_batch(1000, &|_| {}).await.unwrap();

    // Assert: the claim that brought the messages read their devices in one call, and each
    // message cost one write, which carried its outcome.
    assert_eq!(report.sent, MESSAGES as u64);
    assert_eq!(asked.lock().unwrap().as_slice(), &[MESSAGES as usize]);
    let saves = saves.lock().unwrap();
    assert!(saves.iter().all(|(state, held)| {
        *state == MessageState::Sent
            && matches!(held.as_slice(), [d] if d.state() == DeliveryState::Accepted)
    }));
}

#[tokio::test]
async fn once_nothing_more_is_due_a_batch_claims_again_only_when_its_last_message_ends() {
    // Arrange: 200 one-device messages come due together, fewer than a claim may take; every
    // later claim finds nothing due.
    const MESSAGES: i64 = 200;
    let mut mocks = Mocks::new(SenderKind::Direct);
    let messages = one_device_messages(&mocks, MESSAGES);
    let claims = Arc::new(Mutex::new(0));
    let counted = claims.clone();
    let mut first = Some(messages);
    mocks
        .messages
        .expect_claim_due_except()
        .returning(move |_, _, _, _, each| {
            *counted.lock().unwrap() += 1;
            Ok(first_deliveries(first.take().unwrap_or_default(), each))
        });
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, ids| Ok(ids.iter().map(|id| apns_device(id.0)).collect()));
    mocks
        .messages
        .expect_save_attempt()
        .times(MESSAGES as usize)
        .returning(|_, _, _| Ok(true));
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: None,
                details: None,
            },
            MESSAGES as usize,
        ),
    ));
    let service = mocks.service();

    // Act
    let report = service.process_batch(1000, &|_| {}).await.unwrap();

    // Assert: the claim that brought the messages came back short, so the messages that
    // ended asked for no claim of their own; one more claim, once the last ended, found
    // nothing and ended the pass.
    assert_eq!(report.sent, MESSAGES as u64);
    assert_eq!(*claims.lock().unwrap(), 2);
}

#[tokio::test]
async fn the_leases_of_a_batch_are_renewed_together_in_one_call() {
    // Arrange: three one-device messages claimed together; the first send takes 40 s, past
    // the half of their 60-second lease.
    let mut mocks = Mocks::new(SenderKind::Direct);
    let messages = one_device_messages(&mocks, 3);
    claims_once(&mut mocks, messages);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, ids| Ok(ids.iter().map(|id| apns_device(id.0)).collect()));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    let renewals: Arc<Mutex<Vec<Vec<MessageId>>>> = Arc::default();
    let seen = renewals.clone();
    mocks
        .messages
        .expect_renew_lease()
        .returning(move |ids, _| {
            seen.lock().unwrap().push(ids.to_vec());
            Ok(ids.to_vec())
        });
    let saved = Arc::new(Mutex::new(Vec::new()));
    let sink = saved.clone();
    mocks
        .messages
        .expect_save_attempt()
        .returning(move |m, lease, _| {
            sink.lock().unwrap().push((m.id, Some(lease.clone())));
            Ok(true)
        });
    let (now, slow_once) = (mocks.now.clone(), std::sync::atomic::AtomicBool::new(true));
    let mut apns = MockPushProvider::new();
    apns.expect_send().times(3).returning(move |_, _| {
        if slow_once.swap(false, std::sync::atomic::Ordering::SeqCst) {
            *now.lock().unwrap() += Duration::from_secs(40);
        }
        SendOutcome::Accepted {
            provider_id: None,
            details: None,
        }
    });
    mocks.providers.push((Channel::Apns, apns));
    let service = mocks.service();

    // Act
    let report = service.process_batch(10, &|_| {}).await.unwrap();

    // Assert: one call renewed all three, and each save carries the renewed lease.
    assert_eq!(report.sent, 3);
    let renewals = renewals.lock().unwrap();
    assert_eq!(
        renewals.as_slice(),
        &[vec![MessageId(1), MessageId(2), MessageId(3)]]
    );
    let renewed_until = NOW + Duration::from_secs(100);
    let saved = saved.lock().unwrap();
    assert_eq!(saved.len(), 3);
    assert!(
        saved
            .iter()
            .all(|(_, lease)| lease.as_ref().map(|l| l.until) == Some(renewed_until)),
        "{saved:?}"
    );
}
