//! Tests of sending, directly and from a template: what is refused before the store, what is
//! stored, and what a send now does.

use std::sync::{Arc, Mutex};

use mockall::predicate::eq;

use crate::app::SenderKind;
use crate::ids::{AppId, DeviceId, MessageId, RelatedObject, Slug, UserId};
use crate::message::{
    Channel, DeliveryState, Message, MessageState, OptionError, Priority, PushOptions, SendOutcome,
    Target,
};
use crate::payload::PayloadError;
use crate::ports::{NewDeliveries, RenderError};
use crate::service::tests::helpers::{
    Mocks, NOW, apns_device, capture_saves, expect_user_devices, fcm_device, provider, recording,
    storing, to_alice,
};
use crate::service::{Dispatch, SendError, SendRequest, TemplateSend, TemplateSendRequest};
use crate::template::{CannotSend, Template};
#[tokio::test]
async fn a_user_with_devices_on_two_platforms_gets_one_delivery_each_with_its_own_outcome() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    expect_user_devices(&mut mocks, vec![apns_device(1), fcm_device(2)]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1), fcm_device(2)]));
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| {
            new.lease.is_some()
                && new.deliveries
                    == NewDeliveries::Listed(vec![
                        (Channel::Apns, Some(DeviceId(1))),
                        (Channel::Fcm, Some(DeviceId(2))),
                    ])
        })
        .times(1)
        .returning(storing(&mocks.deliveries));
    mocks
        .messages
        .expect_record_deliveries()
        .times(0..=1)
        .returning(recording(&mocks.deliveries));
    mocks
        .devices
        .expect_deactivate_device()
        .with(
            mockall::predicate::always(),
            eq(DeviceId(2)),
            eq("dead token: UNREGISTERED"),
            eq(NOW),
        )
        .times(1)
        .returning(|_, _, _, _| Ok(true));
    let saved = capture_saves(&mut mocks);
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: Some("apns-id-1".into()),
                details: None,
            },
            1,
        ),
    ));
    mocks.providers.push((
        Channel::Fcm,
        provider(
            SendOutcome::DeadToken {
                code: "404".into(),
                reason: "UNREGISTERED".into(),
            },
            1,
        ),
    ));
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Sent);
    assert_eq!(message.deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(message.deliveries[0].provider_id(), Some("apns-id-1"));
    assert_eq!(message.deliveries[1].state(), DeliveryState::DeadToken);
    assert_eq!(
        saved.lock().unwrap().last().map(Message::state),
        Some(MessageState::Sent)
    );
}

#[tokio::test]
async fn a_send_now_to_one_device_reads_no_delivery_device_or_tally_after_storing_it() {
    // Arrange: the store answers only the calls a send to a listed device needs; the
    // expectations set first win, so any read of deliveries, devices or a tally fails.
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_get_devices()
        .times(1)
        .returning(|_, _| Ok(vec![apns_device(1)]));
    mocks.messages.expect_due_deliveries().never();
    mocks.messages.expect_delivery_tally().never();
    mocks.messages.expect_renew_lease().never();
    mocks
        .messages
        .expect_insert_message()
        .times(1)
        .returning(storing(&mocks.deliveries));
    mocks.messages.expect_record_deliveries().never();
    mocks.messages.expect_save_progress().never();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let sink = outcomes.clone();
    mocks
        .messages
        .expect_save_attempt()
        .times(1)
        .returning(move |m, _, held| {
            sink.lock().unwrap().push((m.clone(), held.to_vec()));
            Ok(true)
        });
    mocks.providers.push((
        Channel::Apns,
        provider(
            SendOutcome::Accepted {
                provider_id: Some("apns-id-1".into()),
                details: None,
            },
            1,
        ),
    ));
    let service = mocks.service();
    let request = SendRequest {
        target: Target::Devices {
            device_ids: vec![DeviceId(1)],
        },
        ..to_alice("hello")
    };

    // Act
    let message = service.send("shop", request, Dispatch::Now).await.unwrap();

    // Assert: three store calls in all (get_devices, insert_message, save_attempt): the
    // outcome is written with the progress, and the tally counted in memory concluded it.
    assert_eq!(message.state(), MessageState::Sent);
    assert_eq!(message.deliveries[0].state(), DeliveryState::Accepted);
    let outcomes = outcomes.lock().unwrap();
    let [(saved, held)] = outcomes.as_slice() else {
        panic!("one save, not {}", outcomes.len());
    };
    assert_eq!(saved.state(), MessageState::Sent);
    assert_eq!(saved.deliveries, message.deliveries);
    assert_eq!(held.as_slice(), message.deliveries.as_slice());
}

#[tokio::test]
async fn a_user_without_active_devices_gets_an_error_message() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    expect_user_devices(&mut mocks, vec![]);
    mocks
        .messages
        .expect_insert_message()
        .times(1)
        .returning(storing(&mocks.deliveries));
    let saved = capture_saves(&mut mocks);
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Error);
    assert_eq!(
        message.error(),
        Some("recipient alice has no active device")
    );
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_oversized_payload_is_refused_and_nothing_is_stored() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    expect_user_devices(&mut mocks, vec![apns_device(1)]);
    mocks.messages.expect_insert_message().never();
    let service = mocks.service();

    let err = service
        .send("shop", to_alice(&"x".repeat(5000)), Dispatch::Now)
        .await
        .unwrap_err();

    let SendError::Payload(PayloadError::TooLarge {
        provider,
        limit,
        size,
    }) = err
    else {
        panic!("expected TooLarge, got {err:?}");
    };
    assert_eq!((provider, limit), ("APNs", 4096));
    assert!(size > 5000);
}

#[tokio::test]
async fn unknown_device_ids_are_named_and_nothing_is_stored() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1)]));
    mocks.messages.expect_insert_message().never();
    let service = mocks.service();
    let mut request = to_alice("hello");
    request.target = Target::Devices {
        device_ids: vec![DeviceId(1), DeviceId(9), DeviceId(7)],
    };

    let err = service
        .send("shop", request, Dispatch::Now)
        .await
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        "unknown device ids for this application: 7, 9"
    );
}

#[tokio::test]
async fn illegal_options_are_refused_before_the_store() {
    let service = Mocks::new(SenderKind::Direct).service();
    let mut request = to_alice("hello");
    request.options.time_to_live = Some(MAX_TTL_PLUS_ONE);
    let err = service
        .send("shop", request, Dispatch::Now)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        SendError::Invalid(OptionError::TimeToLive(_))
    ));
}

const MAX_TTL_PLUS_ONE: u32 = crate::message::MAX_TIME_TO_LIVE_SECS + 1;

#[tokio::test]
async fn the_onesignal_sender_refuses_device_targets() {
    let service = Mocks::new(SenderKind::Onesignal).service();
    let mut request = to_alice("hello");
    request.target = Target::Broadcast { platform: None };
    let err = service
        .send("shop", request, Dispatch::Now)
        .await
        .unwrap_err();
    assert!(matches!(err, SendError::Unsupported(_)));
}

#[tokio::test]
async fn the_onesignal_sender_makes_one_delivery_and_keeps_the_response() {
    let mut mocks = Mocks::new(SenderKind::Onesignal);
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| new.deliveries == NewDeliveries::Listed(vec![(Channel::Onesignal, None)]))
        .returning(storing(&mocks.deliveries));
    mocks.messages.expect_record_deliveries().never();
    let saved = capture_saves(&mut mocks);
    mocks.providers.push((
        Channel::Onesignal,
        provider(
            SendOutcome::Accepted {
                provider_id: Some("os-1".into()),
                details: Some(serde_json::json!({"id": "os-1"})),
            },
            1,
        ),
    ));
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Sent);
    assert_eq!(
        message.extra_sender_data,
        Some(serde_json::json!({"id": "os-1"}))
    );
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_debug_sender_ends_in_debug_and_sends_nothing_else() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    expect_user_devices(&mut mocks, vec![apns_device(1)]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1)]));
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| {
            new.deliveries == NewDeliveries::Listed(vec![(Channel::Debug, Some(DeviceId(1)))])
        })
        .returning(storing(&mocks.deliveries));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    capture_saves(&mut mocks);
    mocks
        .providers
        .push((Channel::Debug, provider(SendOutcome::Debug, 1)));
    mocks
        .providers
        .push((Channel::Apns, provider(SendOutcome::Debug, 0)));
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Debug);
}

#[tokio::test]
async fn a_queued_message_is_stored_waiting_without_a_lease() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    expect_user_devices(&mut mocks, vec![apns_device(1)]);
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| new.lease.is_none())
        .times(1)
        .returning(storing(&mocks.deliveries));
    mocks
        .providers
        .push((Channel::Apns, provider(SendOutcome::Debug, 0)));
    let service = mocks.service();

    let message = service
        .send("shop", to_alice("hello"), Dispatch::Queue)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Waiting);
}

fn template(is_active: bool, allow_duplicates: bool) -> Template {
    Template {
        app: AppId::parse("shop").unwrap(),
        slug: Slug::parse("order-shipped").unwrap(),
        body: "Order {{ id }} shipped".into(),
        heading: Some("Order {{ id }}".into()),
        url: None,
        is_active,
        allow_duplicates,
        created_at: NOW,
        updated_at: NOW,
    }
}

fn template_request() -> TemplateSendRequest {
    TemplateSendRequest {
        slug: Slug::parse("order-shipped").unwrap(),
        context: serde_json::json!({"id": "42"})
            .as_object()
            .cloned()
            .unwrap(),
        target: Target::User {
            user_id: UserId::parse("alice").unwrap(),
        },
        extra_data: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: vec![RelatedObject::new("order", "42").unwrap()],
        retry_sending: true,
    }
}

#[tokio::test]
async fn an_inactive_template_does_not_send_and_stores_nothing() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks
        .templates
        .expect_get_template()
        .returning(|_, _| Ok(Some(template(false, true))));
    mocks.messages.expect_insert_message().never();
    let service = mocks.service();

    let result = service
        .send_template("shop", template_request(), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(
        result,
        TemplateSend::NotSent(CannotSend::Inactive {
            slug: "order-shipped".into()
        })
    );
}

#[tokio::test]
async fn a_duplicate_for_the_same_related_objects_is_blocked() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks
        .templates
        .expect_get_template()
        .returning(|_, _| Ok(Some(template(true, false))));
    mocks
        .messages
        .expect_find_template_message()
        .withf(|_, slug, related| {
            slug.as_str() == "order-shipped"
                && related == [RelatedObject::new("order", "42").unwrap()]
        })
        .returning(|_, _, _| Ok(Some(MessageId(5))));
    mocks.messages.expect_insert_message().never();
    let service = mocks.service();

    let result = service
        .send_template("shop", template_request(), Dispatch::Now)
        .await
        .unwrap();

    assert_eq!(
        result,
        TemplateSend::NotSent(CannotSend::Duplicate {
            slug: "order-shipped".into(),
            message_id: 5
        })
    );
}

#[tokio::test]
async fn an_unknown_template_slug_is_not_found() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks
        .templates
        .expect_get_template()
        .returning(|_, _| Ok(None));
    let service = mocks.service();
    let err = service
        .send_template("shop", template_request(), Dispatch::Now)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "template order-shipped not found");
}

#[tokio::test]
async fn a_render_failure_stores_nothing() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks
        .templates
        .expect_get_template()
        .returning(|_, _| Ok(Some(template(true, true))));
    mocks.renderer.expect_render().returning(|field, _, _| {
        Err(RenderError::Undefined {
            field: field.to_owned(),
            detail: "id is undefined".into(),
        })
    });
    mocks.messages.expect_insert_message().never();
    let service = mocks.service();

    let err = service
        .send_template("shop", template_request(), Dispatch::Now)
        .await
        .unwrap_err();

    assert_eq!(
        err.to_string(),
        "undefined variable in body: id is undefined"
    );
}

#[tokio::test]
async fn a_template_message_keeps_its_slug_and_related_objects() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks
        .templates
        .expect_get_template()
        .returning(|_, _| Ok(Some(template(true, true))));
    mocks
        .renderer
        .expect_render()
        .returning(|_, source, _| Ok(source.replace("{{ id }}", "42")));
    expect_user_devices(&mut mocks, vec![apns_device(1)]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1)]));
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| {
            new.spec.template_slug.as_ref().map(Slug::as_str) == Some("order-shipped")
                && new.spec.content.body == "Order 42 shipped"
                && new.spec.content.heading.as_deref() == Some("Order 42")
                && new.spec.related_objects.len() == 1
        })
        .returning(storing(&mocks.deliveries));
    mocks
        .messages
        .expect_record_deliveries()
        .returning(recording(&mocks.deliveries));
    capture_saves(&mut mocks);
    mocks
        .providers
        .push((Channel::Debug, provider(SendOutcome::Debug, 1)));
    let service = mocks.service();

    let result = service
        .send_template("shop", template_request(), Dispatch::Now)
        .await
        .unwrap();

    let TemplateSend::Sent(message) = result else {
        panic!("expected a sent message");
    };
    assert_eq!(message.state(), MessageState::Debug);
}

#[tokio::test]
async fn a_broadcast_checks_one_device_per_platform_and_lets_the_store_create_the_deliveries() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_list_devices()
        .times(1)
        .returning(|_, filter| {
            assert_eq!(filter.active, Some(true));
            assert!(filter.limit.is_some());
            Ok(vec![apns_device(1), fcm_device(2)])
        });
    mocks
        .messages
        .expect_insert_message()
        .withf(|new| {
            new.lease.is_none()
                && new.deliveries
                    == NewDeliveries::Broadcast {
                        platform: None,
                        channel: None,
                    }
        })
        .times(1)
        .returning(storing(&mocks.deliveries));
    let service = mocks.service();
    let mut request = to_alice("hello");
    request.target = Target::Broadcast { platform: None };

    let message = service
        .send("shop", request, Dispatch::Queue)
        .await
        .unwrap();

    assert_eq!(message.state(), MessageState::Waiting);
}
