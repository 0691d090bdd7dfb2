//! Tests of an attempt at a message: its pages and outcomes, its lease, and a missing provider.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::app::SenderKind;
use crate::ids::DeliveryId;
use crate::message::{Channel, DeliveryState, Message, MessageState, SendOutcome};
use crate::service::tests::helpers::{
    Mocks, NOW, apns_device, capture_saves, claimed, claimed_message, claims_once,
    claims_one_device_message, expect_user_devices, fcm_device, provider, recording, storing,
    to_alice,
};
use crate::service::{BatchReport, Dispatch};
#[tokio::test]
async fn a_fan_out_over_several_pages_records_every_outcome_once_in_batches() {
    const DEVICES: i64 = 1_200;
    let mut mocks = Mocks::new(SenderKind::Direct);
    let message = claimed(
        &mocks.deliveries,
        claimed_message(
            (1..=DEVICES).map(|id| (Channel::Apns, id)).collect(),
            Message::initial_progress(NOW),
        ),
    );
    claims_once(&mut mocks, vec![message]);
    mocks.devices.expect_get_devices().returning(|_, ids| {
        assert!(ids.len() <= 500, "a page of devices, not all of them");
        Ok(ids.iter().map(|id| apns_device(id.0)).collect())
    });
    let batches: Arc<Mutex<Vec<Vec<DeliveryId>>>> = Arc::default();
    let (seen, record) = (batches.clone(), recording(&mocks.deliveries));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(move |deliveries| {
            seen.lock()
                .unwrap()
                .push(deliveries.iter().map(|d| d.id).collect());
            record(deliveries)
        });
    let saved = capture_saves(&mut mocks);
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: None,
                details: None,
            },
            DEVICES as usize,
        ),
    ));
    let deliveries = mocks.deliveries.clone();
    let service = mocks.service();

    let report = service.process_batch(10, &|_| ()).await.unwrap();

    assert_eq!(report.processed, 1);
    assert_eq!(report.sent, 1);
    assert_eq!(
        saved.lock().unwrap().last().unwrap().state(),
        MessageState::Sent
    );
    let batches = batches.lock().unwrap();
    let mut recorded: Vec<DeliveryId> = batches.iter().flatten().copied().collect();
    recorded.sort_unstable();
    let expected: Vec<DeliveryId> = (1..=DEVICES).map(DeliveryId).collect();
    assert_eq!(recorded, expected, "every delivery recorded exactly once");
    assert!(
        batches.len() < DEVICES as usize / 10,
        "{} writes for {DEVICES} outcomes",
        batches.len()
    );
    assert!(batches.iter().all(|b| b.len() <= 512));
    assert!(
        deliveries
            .lock()
            .unwrap()
            .iter()
            .all(|d| d.state() == DeliveryState::Accepted)
    );
}

#[tokio::test]
async fn outcomes_held_for_the_save_are_recorded_when_another_worker_took_the_message() {
    // Arrange: the save finds the lease taken over after the send.
    let mut mocks = Mocks::new(SenderKind::Direct);
    claims_one_device_message(&mut mocks, Message::initial_progress(NOW));
    mocks
        .messages
        .expect_save_attempt()
        .times(1)
        .returning(|_, _, _| Ok(false));
    mocks
        .messages
        .expect_record_deliveries()
        .times(1)
        .returning(recording(&mocks.deliveries));
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: Some("apns-1".into()),
                details: None,
            },
            1,
        ),
    ));
    let deliveries = mocks.deliveries.clone();
    let service = mocks.service();

    // Act
    let report = service.process_batch(10, &|_| {}).await.unwrap();

    // Assert: the provider's answer is kept although the message is another worker's now.
    assert_eq!(report.lost, 1);
    let deliveries = deliveries.lock().unwrap();
    assert_eq!(deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(deliveries[0].provider_id(), Some("apns-1"));
}

#[tokio::test]
async fn a_missing_provider_fails_the_delivery_with_a_clear_reason() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    expect_user_devices(&mut mocks, vec![fcm_device(2)]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![fcm_device(2)]));
    mocks
        .messages
        .expect_insert_message()
        .returning(storing(&mocks.deliveries));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    capture_saves(&mut mocks);
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Error);
    assert_eq!(
        message.deliveries[0].error_text(),
        Some("no fcm provider is configured for application shop")
    );
}

#[tokio::test]
async fn a_lost_lease_stops_the_attempt_without_saving() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let message = claimed(
        &mocks.deliveries,
        claimed_message(
            vec![(Channel::Apns, 1), (Channel::Apns, 2)],
            Message::initial_progress(NOW),
        ),
    );
    claims_once(&mut mocks, vec![message]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1), apns_device(2)]));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    // Another worker took the message over: renewing returns nothing.
    mocks
        .messages
        .expect_renew_lease()
        .returning(|_, _| Ok(vec![]));
    mocks.messages.expect_save_progress().never();
    mocks.messages.expect_give_up_due_deliveries().never();
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: None,
                details: None,
            },
            0,
        ),
    ));
    // A lease of zero length is always at its half, so the first check renews it.
    let mut service = mocks.service();
    service.settings.lease = Duration::ZERO;

    let report = service.process_batch(10, &|_| {}).await.unwrap();

    assert_eq!(
        report,
        BatchReport {
            processed: 1,
            lost: 1,
            ..BatchReport::default()
        }
    );
}

#[tokio::test]
async fn the_lease_is_renewed_once_half_of_it_has_passed() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    claims_one_device_message(&mut mocks, Message::initial_progress(NOW));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    let renewals = Arc::new(Mutex::new(Vec::new()));
    let seen = renewals.clone();
    mocks
        .messages
        .expect_renew_lease()
        .returning(move |ids, lease| {
            seen.lock().unwrap().push(lease.clone());
            Ok(ids.to_vec())
        });
    let saved = Arc::new(Mutex::new(Vec::new()));
    let sink = saved.clone();
    mocks
        .messages
        .expect_save_attempt()
        .returning(move |m, lease, _| {
            sink.lock().unwrap().push((m.state(), Some(lease.clone())));
            Ok(true)
        });
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: None,
                details: None,
            },
            1,
        ),
    ));
    let mut service = mocks.service();
    service.settings.lease = Duration::ZERO;

    service.process_batch(10, &|_| {}).await.unwrap();

    // Renewed before the page and after the outcome; the save carries the renewed lease.
    let renewals = renewals.lock().unwrap();
    assert_eq!(renewals.len(), 2);
    let saved = saved.lock().unwrap();
    assert_eq!(
        saved.as_slice(),
        &[(MessageState::Sent, renewals.last().cloned())]
    );
}
