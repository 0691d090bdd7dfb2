//! What a store's [`WriteMany`] must leave in the database for a batch chosen by the test,
//! written once and run on SQLite (`sqlite::messages::tests`) and PostgreSQL
//! (`postgres::messages::tests`). The contract of `tests/contract` reaches batches only
//! through concurrent callers, so it cannot choose what shares a batch.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

use clarion_domain::app::SenderKind;
use clarion_domain::device::NewDevice;
use clarion_domain::ids::{AppId, DeviceId, RelatedObject};
use clarion_domain::message::{
    Channel, Content, Delivery, DeliveryProgress, DeliveryState, Message, MessageSpec,
    MessageState, Priority, Progress, PushOptions, Target,
};
use clarion_domain::ports::{DeviceStore, Lease, MessageStore, NewDeliveries, NewMessage};
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::grouped::{AttemptWrite, WriteMany};

/// Expands to one `#[tokio::test]` per contract of this module, each on the store that the
/// future `$fresh` gives and that `$finish` (an async fn taking the store) then disposes of.
/// The store's `messages` and `attempts` fields are the batch writers under test.
macro_rules! batch_contract_tests {
    ($fresh:expr, $finish:expr) => {
        $crate::grouped::batch_contract::batch_contract_tests!(@each $fresh, $finish;
            (a_batch_of_messages_gives_each_its_own_row_objects_and_deliveries, messages),
            (a_batch_larger_than_one_statement_keeps_every_row_with_its_message, messages),
            (a_batch_of_results_leaves_what_writing_them_in_turn_would, attempts),
            (a_batch_that_writes_each_delivery_once_writes_only_those_of_saved_messages, attempts),
            (saving_a_message_twice_in_a_batch_is_saving_it_twice_in_turn, attempts),
        );
    };
    (@each $fresh:expr, $finish:expr; $(($name:ident, $writer:ident)),+ $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let store = $fresh.await;
                $crate::grouped::batch_contract::$name(&store, store.$writer.store()).await;
                $finish(store).await;
            }
        )+
    };
}
pub(crate) use batch_contract_tests;

const T0: OffsetDateTime = datetime!(2025-03-04 05:06:07.089 UTC);

pub(crate) fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

fn shop() -> AppId {
    AppId::parse("shop").expect("valid app id")
}

/// `n` new APNs devices of `shop`.
async fn devices<S: DeviceStore>(store: &S, n: u8) -> Vec<DeviceId> {
    let mut ids = Vec::new();
    for i in 1..=n {
        let token = DeviceToken::parse(
            Platform::Apns,
            &format!("{i:02x}").repeat(32),
            None,
            None,
            EndpointPolicy::PublicOnly,
        )
        .expect("valid APNs token");
        let device = NewDevice {
            app: shop(),
            token,
            name: None,
            user_id: None,
            device_id: None,
        };
        let (stored, _) = store
            .register_device(&device, at(0))
            .await
            .expect("register");
        ids.push(stored.id);
    }
    ids
}

/// A waiting message of `shop` with `body`, to `devices`, with `related` objects.
pub(crate) fn new_message(
    body: &str,
    devices: &[DeviceId],
    related: Vec<RelatedObject>,
) -> NewMessage {
    let spec = MessageSpec {
        app: shop(),
        target: Target::Devices {
            device_ids: devices.to_vec(),
        },
        content: Content {
            heading: Some(format!("about {body}")),
            body: body.to_owned(),
            url: None,
            extra_data: json!({"body": body}).as_object().cloned(),
        },
        template_slug: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: related,
        retry_sending: true,
    };
    NewMessage {
        spec,
        sender: SenderKind::Direct,
        progress: Message::initial_progress(at(0)),
        deliveries: NewDeliveries::Listed(
            devices.iter().map(|d| (Channel::Apns, Some(*d))).collect(),
        ),
        lease: None,
        now: at(0),
    }
}

/// `delivery` after an attempt that left it in `state`, written by the write named `label`:
/// the label is its error text, and its error code when the state needs one.
pub(crate) fn outcome(delivery: &Delivery, state: DeliveryState, label: &str) -> Delivery {
    let failed = matches!(
        state,
        DeliveryState::Retrying | DeliveryState::Failed | DeliveryState::DeadToken
    );
    let progress = DeliveryProgress {
        state,
        attempts: delivery.attempts() + 1,
        provider_id: delivery.provider_id().map(str::to_owned),
        error_code: failed.then(|| label.to_owned()),
        error_text: Some(label.to_owned()),
        details: delivery.details().cloned(),
        updated_at: at(12),
    };
    Delivery::from_storage(
        delivery.id,
        delivery.message_id,
        delivery.device_id,
        delivery.channel,
        progress,
    )
    .expect("an outcome recording reaches")
}

/// `message` as a save named `label` writes it: in `state`, with `deliveries` loaded.
pub(crate) fn saved_as(
    message: &Message,
    state: MessageState,
    label: &str,
    deliveries: Vec<Delivery>,
) -> Message {
    let sent = matches!(state, MessageState::Sent | MessageState::Debug);
    let progress = Progress {
        state,
        error: Some(label.to_owned()),
        number_of_send_attempts: 1,
        next_attempt_at: None,
        sent_at: sent.then_some(at(12)),
        queued_at: message.progress().queued_at,
    };
    let mut saved = Message::from_storage(
        message.id,
        message.spec.clone(),
        message.sender,
        progress,
        message.created_at,
        at(12),
    )
    .expect("a progress the state machine reaches");
    saved.extra_sender_data = Some(json!({"saved by": label}));
    saved.deliveries = deliveries;
    saved
}

fn lease(owner: &str, until: OffsetDateTime) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until,
    }
}

async fn stored<S: MessageStore>(store: &S, message: &Message) -> Message {
    store
        .get_message(&shop(), message.id)
        .await
        .expect("get")
        .expect("exists")
}

/// Writes `batch` as one batch and checks that each message came back as given, in order.
async fn write_in_order<W>(writer: &W, batch: &[NewMessage]) -> Vec<Message>
where
    W: WriteMany<Item = NewMessage, Output = Message>,
{
    let written = writer.write_many(batch).await.expect("write");
    assert_eq!(written.len(), batch.len());
    assert!(
        written.windows(2).all(|w| w[0].id < w[1].id),
        "the messages' ids follow the batch's order"
    );
    for (i, (message, new)) in written.iter().zip(batch).enumerate() {
        assert_eq!(message.spec, new.spec, "message {i}");
    }
    written
}

pub(crate) async fn a_batch_of_messages_gives_each_its_own_row_objects_and_deliveries<S, W>(
    store: &S,
    writer: &W,
) where
    S: DeviceStore + MessageStore,
    W: WriteMany<Item = NewMessage, Output = Message>,
{
    let devices = devices(store, 3).await;
    // None to three deliveries and none to two related objects, varying from one to the next.
    let batch: Vec<NewMessage> = (0..12_usize)
        .map(|i| {
            let related = (0..i % 3)
                .map(|k| RelatedObject::new("order", &format!("o-{i}-{k}")).expect("valid"))
                .collect();
            new_message(&format!("message {i}"), &devices[..i % 4], related)
        })
        .collect();

    let written = write_in_order(writer, &batch).await;
    for (i, message) in written.iter().enumerate() {
        let delivered: Vec<Option<DeviceId>> =
            message.deliveries.iter().map(|d| d.device_id).collect();
        let listed: Vec<Option<DeviceId>> = devices[..i % 4].iter().copied().map(Some).collect();
        assert_eq!(delivered, listed, "message {i}");
        assert!(
            message
                .deliveries
                .iter()
                .all(|d| d.message_id == message.id)
        );
        assert_eq!(&stored(store, message).await, message, "message {i}");
    }
}

/// More messages, deliveries and related objects than one statement of a store may take
/// (SQLite inserts at most 1,024 rows a statement), each row still with its own message and
/// in its order.
pub(crate) async fn a_batch_larger_than_one_statement_keeps_every_row_with_its_message<S, W>(
    store: &S,
    writer: &W,
) where
    S: DeviceStore + MessageStore,
    W: WriteMany<Item = NewMessage, Output = Message>,
{
    // 1,100 messages, three of them OneSignal messages of 1,000 deliveries each (a OneSignal
    // delivery names no device), and one with 1,500 related objects.
    let batch: Vec<NewMessage> = (0..1100_usize)
        .map(|i| {
            let related = match i {
                7 => (0..1500)
                    .map(|k| RelatedObject::new("order", &format!("o-{k}")).expect("valid"))
                    .collect(),
                _ => Vec::new(),
            };
            let mut message = new_message(&format!("message {i}"), &[], related);
            if i % 500 == 1 {
                message.deliveries = NewDeliveries::Listed(vec![(Channel::Onesignal, None); 1000]);
            }
            message
        })
        .collect();

    let written = write_in_order(writer, &batch).await;
    for (i, message) in written.iter().enumerate() {
        let expected = if i % 500 == 1 { 1000 } else { 0 };
        assert_eq!(message.deliveries.len(), expected, "message {i}");
        assert!(
            message.deliveries.windows(2).all(|w| w[0].id < w[1].id),
            "message {i}: its deliveries' ids follow their order"
        );
        if i % 500 == 1 || i == 7 || i == 1099 {
            assert_eq!(&stored(store, message).await, message, "message {i}");
        }
    }
}

pub(crate) async fn a_batch_of_results_leaves_what_writing_them_in_turn_would<S, W>(
    store: &S,
    writer: &W,
) where
    S: DeviceStore + MessageStore,
    W: WriteMany<Item = AttemptWrite, Output = bool>,
{
    let devices = devices(store, 5).await;
    let a = store
        .insert_message(&new_message("a", &devices[0..2], Vec::new()))
        .await
        .expect("insert");
    let b = store
        .insert_message(&new_message("b", &devices[2..4], Vec::new()))
        .await
        .expect("insert");
    let c = store
        .insert_message(&new_message("c", &devices[4..5], Vec::new()))
        .await
        .expect("insert");
    // worker-1 claims a and b; its leases expire and worker-2 takes a over.
    let first = lease("worker-1", at(10));
    let claimed = store.claim_due(at(1), 2, &first).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|m| m.id).collect::<Vec<_>>(),
        [a.id, b.id]
    );
    let taken = store
        .claim_due(at(11), 1, &lease("worker-2", at(71)))
        .await
        .expect("claim");
    assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), [a.id]);
    let (a1, a2) = (&a.deliveries[0], &a.deliveries[1]);
    let (b1, b2) = (&b.deliveries[0], &b.deliveries[1]);
    let c1 = &c.deliveries[0];
    use DeliveryState::{Accepted, Failed, Retrying};

    let saved_b = saved_as(
        &b,
        MessageState::Sent,
        "3",
        vec![outcome(b1, Accepted, "3")],
    );
    let saved_c = saved_as(&c, MessageState::Error, "7", vec![outcome(c1, Failed, "7")]);
    let writes = vec![
        AttemptWrite::Deliveries(vec![outcome(a1, Retrying, "0")]),
        // worker-1 lost a's lease: neither a nor its deliveries are written.
        AttemptWrite::Progress(
            Box::new(saved_as(
                &a,
                MessageState::Sent,
                "1",
                vec![outcome(a1, Accepted, "1"), outcome(a2, Accepted, "1")],
            )),
            Some(first.clone()),
        ),
        AttemptWrite::Deliveries(vec![outcome(b1, Retrying, "2")]),
        AttemptWrite::Progress(Box::new(saved_b.clone()), Some(first.clone())),
        // b1 was accepted by the write before: final.
        AttemptWrite::Deliveries(vec![outcome(b1, Failed, "4")]),
        AttemptWrite::Deliveries(vec![outcome(b2, Accepted, "5"), outcome(a2, Failed, "5")]),
        AttemptWrite::Deliveries(vec![outcome(b2, Retrying, "6"), outcome(a1, Failed, "6")]),
        // An operator's save of a message nobody leases.
        AttemptWrite::Progress(Box::new(saved_c.clone()), None),
    ];

    let written = writer.write_many(&writes).await.expect("write");

    assert_eq!(written, [true, false, true, true, true, true, true, true]);
    let stored_a = stored(store, &a).await;
    assert_eq!(stored_a.progress(), a.progress(), "a is not saved");
    assert_eq!(
        stored_a.deliveries,
        [outcome(a1, Failed, "6"), outcome(a2, Failed, "5")]
    );
    let stored_b = stored(store, &b).await;
    assert_eq!(stored_b.progress(), saved_b.progress());
    assert_eq!(stored_b.extra_sender_data, saved_b.extra_sender_data);
    assert_eq!(stored_b.changed_at, saved_b.changed_at);
    assert_eq!(
        stored_b.deliveries,
        [outcome(b1, Accepted, "3"), outcome(b2, Accepted, "5")]
    );
    let stored_c = stored(store, &c).await;
    assert_eq!(stored_c.progress(), saved_c.progress());
    assert_eq!(stored_c.deliveries, [outcome(c1, Failed, "7")]);
}

/// The usual batch (each delivery written once, each message saved once), which a store may
/// write as one statement: the deliveries of a message whose save is refused are not written,
/// the others are.
pub(crate) async fn a_batch_that_writes_each_delivery_once_writes_only_those_of_saved_messages<
    S,
    W,
>(
    store: &S,
    writer: &W,
) where
    S: DeviceStore + MessageStore,
    W: WriteMany<Item = AttemptWrite, Output = bool>,
{
    // Arrange: worker-1 claims a and b; its leases expire and worker-2 takes a over.
    let devices = devices(store, 3).await;
    let mut inserted = Vec::new();
    for (i, body) in ["a", "b", "c"].into_iter().enumerate() {
        let message = store
            .insert_message(&new_message(body, &devices[i..=i], Vec::new()))
            .await
            .expect("insert");
        inserted.push(message);
    }
    let [a, b, c] = &inserted[..] else {
        panic!("three messages");
    };
    let first = lease("worker-1", at(10));
    store.claim_due(at(1), 2, &first).await.expect("claim");
    let taken = store
        .claim_due(at(11), 1, &lease("worker-2", at(71)))
        .await
        .expect("claim");
    assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), [a.id]);
    use DeliveryState::{Accepted, Failed};
    let saved_a = saved_as(
        a,
        MessageState::Sent,
        "1",
        vec![outcome(&a.deliveries[0], Accepted, "1")],
    );
    let saved_b = saved_as(
        b,
        MessageState::Sent,
        "2",
        vec![outcome(&b.deliveries[0], Accepted, "2")],
    );
    let writes = vec![
        AttemptWrite::Progress(Box::new(saved_a), Some(first.clone())),
        AttemptWrite::Progress(Box::new(saved_b.clone()), Some(first.clone())),
        AttemptWrite::Deliveries(vec![outcome(&c.deliveries[0], Failed, "3")]),
    ];

    // Act
    let written = writer.write_many(&writes).await.expect("write");

    // Assert: a's save is refused, and with it the write of its delivery.
    assert_eq!(written, [false, true, true]);
    let stored_a = stored(store, a).await;
    assert_eq!(stored_a.progress(), a.progress(), "a is not saved");
    assert_eq!(stored_a.deliveries, a.deliveries, "nor are its deliveries");
    let stored_b = stored(store, b).await;
    assert_eq!(stored_b.progress(), saved_b.progress());
    assert_eq!(stored_b.deliveries, saved_b.deliveries);
    let stored_c = stored(store, c).await;
    assert_eq!(
        stored_c.deliveries,
        [outcome(&c.deliveries[0], Failed, "3")]
    );
}

pub(crate) async fn saving_a_message_twice_in_a_batch_is_saving_it_twice_in_turn<S, W>(
    store: &S,
    writer: &W,
) where
    S: DeviceStore + MessageStore,
    W: WriteMany<Item = AttemptWrite, Output = bool>,
{
    let devices = devices(store, 2).await;
    let b = store
        .insert_message(&new_message("b", &devices[0..1], Vec::new()))
        .await
        .expect("insert");
    let c = store
        .insert_message(&new_message("c", &devices[1..2], Vec::new()))
        .await
        .expect("insert");
    let first = lease("worker-1", at(10));
    let claimed = store.claim_due(at(1), 1, &first).await.expect("claim");
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), [b.id]);
    let (b1, c1) = (&b.deliveries[0], &c.deliveries[0]);
    use DeliveryState::{Accepted, Failed, Retrying};

    let retry_b = saved_as(
        &b,
        MessageState::ErrorRetry,
        "0",
        vec![outcome(b1, Retrying, "0")],
    );
    let sent_c = saved_as(
        &c,
        MessageState::Sent,
        "2",
        vec![outcome(c1, Accepted, "2")],
    );
    let failed_c = saved_as(&c, MessageState::Error, "3", vec![outcome(c1, Failed, "3")]);
    let writes = vec![
        AttemptWrite::Progress(Box::new(retry_b.clone()), Some(first.clone())),
        // The save before released the lease: this one is refused.
        AttemptWrite::Progress(
            Box::new(saved_as(
                &b,
                MessageState::Sent,
                "1",
                vec![outcome(b1, Accepted, "1")],
            )),
            Some(first.clone()),
        ),
        AttemptWrite::Progress(Box::new(sent_c), None),
        // Saved again, but its delivery stays accepted.
        AttemptWrite::Progress(Box::new(failed_c.clone()), None),
    ];

    let written = writer.write_many(&writes).await.expect("write");

    assert_eq!(written, [true, false, true, true]);
    let stored_b = stored(store, &b).await;
    assert_eq!(stored_b.progress(), retry_b.progress());
    assert_eq!(stored_b.deliveries, [outcome(b1, Retrying, "0")]);
    let stored_c = stored(store, &c).await;
    assert_eq!(stored_c.progress(), failed_c.progress());
    assert_eq!(stored_c.deliveries, [outcome(c1, Accepted, "2")]);
}
