//! Unit tests of the services with mockall mocks of every port.

use std::sync::Mutex;

use mockall::predicate::eq;
use time::macros::datetime;

use super::*;
use crate::app::{ApnsSettings, OneSignalSettings};
use crate::auth::{ApiKey, ApiKeyId, AuthError, KeyHash, KeyScope, NewApiKey, Principal};
use crate::ids::{AppId, DeliveryId};
use crate::message::{DeliveryState, Progress};
use crate::ports::{
    MockApiKeyStore, MockClock, MockDeviceStore, MockMessageStore, MockPushProvider,
    MockReportStore, MockTemplateRenderer, MockTemplateStore,
};
use crate::token::EndpointPolicy;

const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);
const APNS_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The deliveries the fake message store keeps, as the real stores would.
type Shared = Arc<Mutex<Vec<Delivery>>>;

struct Mocks {
    deliveries: Shared,
    /// What the clock says; a test may move it.
    now: Arc<Mutex<OffsetDateTime>>,
    devices: MockDeviceStore,
    messages: MockMessageStore,
    templates: MockTemplateStore,
    keys: MockApiKeyStore,
    reports: MockReportStore,
    renderer: MockTemplateRenderer,
    providers: Vec<(Channel, MockPushProvider)>,
    sender: SenderKind,
}

impl Mocks {
    fn new(sender: SenderKind) -> Self {
        Self {
            deliveries: Shared::default(),
            now: Arc::new(Mutex::new(NOW)),
            devices: MockDeviceStore::new(),
            messages: MockMessageStore::new(),
            templates: MockTemplateStore::new(),
            keys: MockApiKeyStore::new(),
            reports: MockReportStore::new(),
            renderer: MockTemplateRenderer::new(),
            providers: Vec::new(),
            sender,
        }
    }

    fn service(mut self) -> PushService {
        serve_deliveries(&mut self.messages, &self.deliveries);
        let mut app = Application::new(AppId::parse("shop").unwrap(), self.sender);
        app.apns = Some(ApnsSettings {
            topic: "com.example.shop".into(),
        });
        app.onesignal = Some(OneSignalSettings {
            app_id: "os-app".into(),
            language: "en".into(),
        });
        let mut clock = MockClock::new();
        let now = self.now.clone();
        clock.expect_now().returning(move || *now.lock().unwrap());
        let ports = Ports {
            devices: Arc::new(self.devices),
            messages: Arc::new(self.messages),
            templates: Arc::new(self.templates),
            keys: Arc::new(self.keys),
            reports: Arc::new(self.reports),
            renderer: Arc::new(self.renderer),
            clock: Arc::new(clock),
        };
        let providers = self
            .providers
            .into_iter()
            .fold(Providers::default(), |p, (channel, provider)| {
                p.with(channel, Arc::new(provider))
            });
        PushService::new(
            Arc::new(Applications::new([app])),
            ports,
            providers,
            ServiceSettings::default(),
        )
    }
}

fn device(id: i64, token: DeviceToken) -> Device {
    Device {
        id: DeviceId(id),
        app: AppId::parse("shop").unwrap(),
        token,
        name: None,
        active: true,
        user_id: Some(UserId::parse("alice").unwrap()),
        device_id: None,
        created_at: NOW,
        updated_at: NOW,
        deactivated_at: None,
        deactivation_reason: None,
    }
}

fn apns_device(id: i64) -> Device {
    device(
        id,
        DeviceToken::Apns {
            token: crate::token::ApnsToken::parse(APNS_TOKEN).unwrap(),
        },
    )
}

fn fcm_device(id: i64) -> Device {
    device(
        id,
        DeviceToken::Fcm {
            token: crate::token::FcmToken::parse(&format!("fcm-token-{id}")).unwrap(),
        },
    )
}

/// What the store returns for an inserted message: ids assigned, deliveries pending.
fn stored(new: &NewMessage) -> Message {
    let mut m = Message::from_storage(
        MessageId(1),
        new.spec.clone(),
        new.sender,
        new.progress.clone(),
        new.now,
        new.now,
    );
    let NewDeliveries::Listed(listed) = &new.deliveries else {
        return m;
    };
    m.deliveries = listed
        .iter()
        .enumerate()
        .map(|(i, (channel, device))| Delivery {
            id: DeliveryId(i as i64 + 1),
            message_id: MessageId(1),
            device_id: *device,
            channel: *channel,
            state: DeliveryState::Pending,
            attempts: 0,
            provider_id: None,
            error_code: None,
            error_text: None,
            details: None,
            updated_at: new.now,
        })
        .collect();
    m
}

/// An `insert_message` that keeps the new deliveries in `shared`.
fn storing(shared: &Shared) -> impl Fn(&NewMessage) -> Result<Message, StoreError> + use<> {
    let shared = shared.clone();
    move |new| {
        let m = stored(new);
        shared.lock().unwrap().extend(m.deliveries.iter().cloned());
        Ok(m)
    }
}

/// A `record_deliveries` that updates `shared`, never changing an accepted delivery.
fn recording(shared: &Shared) -> impl Fn(&[Delivery]) -> Result<(), StoreError> + use<> {
    let shared = shared.clone();
    move |deliveries| {
        let mut all = shared.lock().unwrap();
        for delivery in deliveries {
            if let Some(d) = all.iter_mut().find(|d| d.id == delivery.id)
                && d.state.is_due()
            {
                *d = delivery.clone();
            }
        }
        Ok(())
    }
}

/// Pages, tallies and gives up the deliveries in `shared`; every lease is held and renewed.
fn serve_deliveries(messages: &mut MockMessageStore, shared: &Shared) {
    // The deliveries and their devices are read apart, through the mocks of each.
    messages.expect_due_page().returning(|_, _, _, _| Ok(None));
    let all = shared.clone();
    messages
        .expect_due_deliveries()
        .returning(move |id, after, limit| {
            Ok(all
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d.message_id == id && d.state.is_due())
                .filter(|d| after.is_none_or(|a| d.id > a))
                .take(limit as usize)
                .cloned()
                .collect())
        });
    let all = shared.clone();
    messages.expect_delivery_tally().returning(move |id| {
        let all = all.lock().unwrap();
        let mine: Vec<Delivery> = all.iter().filter(|d| d.message_id == id).cloned().collect();
        Ok(crate::message::DeliveryTally::of(&mine))
    });
    let all = shared.clone();
    messages
        .expect_give_up_due_deliveries()
        .returning(move |id, _, give_up, now| {
            let mut all = all.lock().unwrap();
            let mut m = Message::from_storage(
                id,
                claimed_message(vec![], Message::initial_progress(now)).spec,
                SenderKind::Direct,
                Message::initial_progress(now),
                now,
                now,
            );
            m.deliveries = all.iter().filter(|d| d.message_id == id).cloned().collect();
            m.give_up_due(give_up, now);
            all.retain(|d| d.message_id != id);
            all.extend(m.deliveries);
            all.sort_by_key(|d| d.id);
            Ok(true)
        });
    messages
        .expect_renew_lease()
        .returning(|ids, _| Ok(ids.to_vec()));
}

fn to_alice(body: &str) -> SendRequest {
    SendRequest {
        target: Target::User {
            user_id: UserId::parse("alice").unwrap(),
        },
        content: Content {
            heading: Some("Hi".into()),
            body: body.into(),
            url: None,
            extra_data: None,
        },
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: vec![],
        retry_sending: true,
    }
}

fn expect_user_devices(mocks: &mut Mocks, devices: Vec<Device>) {
    mocks
        .devices
        .expect_list_devices()
        .returning(move |_, filter| {
            assert_eq!(filter.active, Some(true));
            assert_eq!(filter.user_id.as_ref().map(UserId::as_str), Some("alice"));
            Ok(devices.clone())
        });
}

fn provider(outcome: SendOutcome, times: usize) -> MockPushProvider {
    let mut p = MockPushProvider::new();
    p.expect_send().times(times).return_const(outcome);
    p
}

/// Captures the progress saved, alone or with the outcomes of an attempt.
fn capture_saves(mocks: &mut Mocks) -> Arc<Mutex<Vec<Message>>> {
    let saved = Arc::new(Mutex::new(Vec::new()));
    let sink = saved.clone();
    mocks
        .messages
        .expect_save_progress()
        .returning(move |m, _| {
            sink.lock().unwrap().push(m.clone());
            Ok(true)
        });
    let sink = saved.clone();
    mocks
        .messages
        .expect_save_attempt()
        .returning(move |m, _, _| {
            sink.lock().unwrap().push(m.clone());
            Ok(true)
        });
    saved
}

#[tokio::test]
async fn registering_a_private_web_push_endpoint_is_refused_before_the_store() {
    let mocks = Mocks::new(SenderKind::Direct);
    let service = mocks.service();
    let result = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Webpush,
                token: "https://10.0.0.1/push".into(),
                p256dh: Some(format!("B{}", "A".repeat(86))),
                auth: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await;
    assert!(matches!(
        result,
        Err(DeviceError::InvalidToken(TokenError::EndpointNotPublic(_)))
    ));
}

#[tokio::test]
async fn registering_for_an_unknown_application_names_it() {
    let service = Mocks::new(SenderKind::Direct).service();
    let err = service
        .register_device(
            "nope",
            RegisterDevice {
                platform: Platform::Apns,
                token: APNS_TOKEN.into(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown application \"nope\"");
}

#[tokio::test]
async fn registering_a_valid_token_stores_it_lower_case() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_register_device()
        .withf(|d, now| d.token.key() == APNS_TOKEN && *now == NOW)
        .times(1)
        .returning(|_, _| Ok((apns_device(1), Registration::Created)));
    let service = mocks.service();
    let (device, registration) = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Apns,
                token: APNS_TOKEN.to_ascii_uppercase(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(registration, Registration::Created);
    assert_eq!(device.id, DeviceId(1));
}

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
    assert_eq!(message.deliveries[0].state, DeliveryState::Accepted);
    assert_eq!(
        message.deliveries[0].provider_id.as_deref(),
        Some("apns-id-1")
    );
    assert_eq!(message.deliveries[1].state, DeliveryState::DeadToken);
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
    assert_eq!(message.deliveries[0].state, DeliveryState::Accepted);
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

/// A claimed message as the store holds it: its deliveries are in the store, and the claim
/// brings the first of them (see [`first_deliveries`]).
fn claimed(shared: &Shared, message: Message) -> Message {
    shared
        .lock()
        .unwrap()
        .extend(message.deliveries.iter().cloned());
    message
}

/// A store whose first claim brings `messages` and whose later claims find nothing due.
fn claims_once(mocks: &mut Mocks, messages: Vec<Message>) {
    let mut claims = Some(messages);
    mocks
        .messages
        .expect_claim_due_except()
        .returning(move |_, _, _, _, each| {
            Ok(first_deliveries(claims.take().unwrap_or_default(), each))
        });
}

/// A store whose first claim brings one message with `progress` to APNs device 1.
fn claims_one_device_message(mocks: &mut Mocks, progress: Progress) {
    let message = claimed(
        &mocks.deliveries,
        claimed_message(vec![(Channel::Apns, 1)], progress),
    );
    claims_once(mocks, vec![message]);
    mocks
        .devices
        .expect_get_devices()
        .returning(|_, _| Ok(vec![apns_device(1)]));
}

/// Messages 1 to `count` in the store, message n with one delivery (n) to APNs device n.
fn one_device_messages(mocks: &Mocks, count: i64) -> Vec<Message> {
    (1..=count)
        .map(|n| {
            let mut message =
                claimed_message(vec![(Channel::Apns, n)], Message::initial_progress(NOW));
            message.id = MessageId(n);
            for delivery in &mut message.deliveries {
                delivery.id = DeliveryId(n);
                delivery.message_id = MessageId(n);
            }
            claimed(&mocks.deliveries, message)
        })
        .collect()
}

/// Claimed messages as `claim_due_except` returns them: each with its first `each` deliveries.
fn first_deliveries(messages: Vec<Message>, each: u32) -> Vec<Message> {
    messages
        .into_iter()
        .map(|mut message| {
            message.deliveries.truncate(each as usize);
            message
        })
        .collect()
}

fn claimed_message(deliveries: Vec<(Channel, i64)>, progress: Progress) -> Message {
    let new = NewMessage {
        spec: MessageSpec {
            app: AppId::parse("shop").unwrap(),
            target: Target::User {
                user_id: UserId::parse("alice").unwrap(),
            },
            content: Content {
                body: "hi".into(),
                ..Content::default()
            },
            template_slug: None,
            tag: None,
            priority: Priority::High,
            options: PushOptions::default(),
            related_objects: vec![],
            retry_sending: true,
        },
        sender: SenderKind::Direct,
        progress,
        deliveries: NewDeliveries::Listed(
            deliveries
                .into_iter()
                .map(|(c, d)| (c, Some(DeviceId(d))))
                .collect(),
        ),
        lease: None,
        now: NOW,
    };
    stored(&new)
}

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
            .all(|d| d.state == DeliveryState::Accepted)
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
    assert_eq!(saved[0].deliveries[0].state, DeliveryState::Failed);
    assert_eq!(
        saved[0].deliveries[0].error_code.as_deref(),
        Some("expired")
    );
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
            && matches!(held.as_slice(), [d] if d.state == DeliveryState::Accepted)
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
    assert_eq!(deliveries[0].state, DeliveryState::Accepted);
    assert_eq!(deliveries[0].provider_id.as_deref(), Some("apns-1"));
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
        message.deliveries[0].error_text.as_deref(),
        Some("no fcm provider is configured for application shop")
    );
}

#[tokio::test]
async fn an_operator_can_retry_an_error_message_but_not_a_sent_one() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let mut failed = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    failed.fail("boom", NOW).unwrap();
    let mut sent = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    sent.record_outcome(
        DeliveryId(1),
        &SendOutcome::Accepted {
            provider_id: None,
            details: None,
        },
        NOW,
    );
    sent.finish_attempt(&crate::retry::RetryPolicy::default(), None, NOW)
        .unwrap();
    mocks
        .messages
        .expect_get_message()
        .with(mockall::predicate::always(), eq(MessageId(1)))
        .returning(move |_, _| Ok(Some(failed.clone())));
    mocks
        .messages
        .expect_get_message()
        .with(mockall::predicate::always(), eq(MessageId(2)))
        .returning(move |_, _| Ok(Some(sent.clone())));
    let saved = capture_saves(&mut mocks);
    let service = mocks.service();

    let retried = service.retry_message("shop", MessageId(1)).await.unwrap();
    let refused = service.retry_message("shop", MessageId(2)).await;

    assert_eq!(retried.state(), MessageState::Waiting);
    assert_eq!(retried.due_deliveries().count(), 1);
    assert!(matches!(refused, Err(MessageError::Illegal(_))));
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn prune_deactivates_dead_devices_and_deletes_old_inactive_ones() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_deactivate_dead_devices()
        .returning(|_, _| Ok(2));
    mocks
        .devices
        .expect_delete_inactive_devices()
        .with(
            mockall::predicate::always(),
            eq(NOW - Duration::from_secs(86400)),
        )
        .returning(|_, _| Ok(3));
    let service = mocks.service();

    let report = service
        .prune("shop", Some(Duration::from_secs(86400)))
        .await
        .unwrap();

    assert_eq!(
        report,
        PruneReport {
            deactivated: 2,
            deleted: 3
        }
    );
}

#[test]
fn the_endpoint_policy_of_an_application_defaults_to_public_only() {
    let app = Application::new(AppId::parse("x").unwrap(), SenderKind::Debug);
    assert_eq!(app.endpoint_policy, EndpointPolicy::PublicOnly);
}

fn stored_key(new: &NewApiKey, revoked: bool) -> ApiKey {
    ApiKey {
        id: ApiKeyId(1),
        name: new.name.clone(),
        scope: new.scope.clone(),
        prefix: new.prefix.clone(),
        created_at: NOW,
        revoked_at: revoked.then_some(NOW),
        hash: Some(new.hash.clone()),
    }
}

const SECRET: &str = "clk_0123456789abcdefghijklmnopqrstuvwxyz";

#[tokio::test]
async fn a_created_key_is_stored_as_a_hash_and_authenticates_to_its_scope() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    let stored: Arc<Mutex<Option<ApiKey>>> = Arc::default();
    let sink = stored.clone();
    mocks
        .keys
        .expect_insert_api_key()
        .withf(|new, _| new.hash == KeyHash::of(SECRET) && new.prefix == "clk_01234567")
        .returning(move |new, _| {
            let key = stored_key(new, false);
            *sink.lock().unwrap() = Some(key.clone());
            Ok(key)
        });
    let source = stored.clone();
    mocks.keys.expect_find_api_key().returning(move |hash| {
        Ok(source
            .lock()
            .unwrap()
            .clone()
            .filter(|k| k.hash.as_ref() == Some(hash)))
    });
    let service = mocks.service();

    let created = service
        .create_api_key(
            "ci",
            KeyScope::App(AppId::parse("shop").unwrap()),
            SECRET.into(),
        )
        .await
        .unwrap();
    let principal = service.authenticate_key(SECRET).await.unwrap();
    let wrong = service.authenticate_key("clk_not-the-key").await.unwrap();

    assert_eq!(created.secret, SECRET);
    assert_eq!(principal, Ok(Principal::App(AppId::parse("shop").unwrap())));
    assert_eq!(wrong, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks.keys.expect_find_api_key().returning(|hash| {
        Ok(Some(stored_key(
            &NewApiKey {
                name: "old".into(),
                scope: KeyScope::Admin,
                prefix: "clk_".into(),
                hash: hash.clone(),
            },
            true,
        )))
    });
    let service = mocks.service();
    assert_eq!(
        service.authenticate_key(SECRET).await.unwrap(),
        Err(AuthError::Revoked)
    );
}

#[tokio::test]
async fn a_key_for_an_unknown_application_or_with_a_short_secret_is_refused() {
    let service = Mocks::new(SenderKind::Debug).service();
    let unknown = service
        .create_api_key(
            "x",
            KeyScope::App(AppId::parse("nope").unwrap()),
            SECRET.into(),
        )
        .await;
    let short = service
        .create_api_key("x", KeyScope::Admin, "short".into())
        .await;
    assert!(matches!(unknown, Err(KeyError::UnknownApplication(_))));
    assert!(matches!(short, Err(KeyError::WeakSecret)));
}

#[tokio::test]
async fn an_operator_action_on_a_message_a_worker_holds_is_refused_as_busy() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let waiting = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    mocks
        .messages
        .expect_get_message()
        .returning(move |_, _| Ok(Some(waiting.clone())));
    mocks
        .messages
        .expect_save_progress()
        .withf(|_, lease| lease.is_none())
        .times(1)
        .returning(|_, _| Ok(false));
    let service = mocks.service();

    let result = service.cancel_message("shop", MessageId(1)).await;

    assert!(matches!(result, Err(MessageError::Busy(MessageId(1)))));
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

#[tokio::test]
async fn a_prune_preview_counts_what_a_prune_would_touch_and_changes_nothing() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .reports
        .expect_count_dead_devices()
        .returning(|_| Ok(2));
    mocks
        .reports
        .expect_count_inactive_devices()
        .withf(|_, before| *before == NOW - Duration::from_secs(3600))
        .returning(|_, _| Ok(5));
    // No expectation on the device store: a preview that deactivated or deleted would panic.

    let preview = mocks
        .service()
        .prune_preview("shop", Some(Duration::from_secs(3600)))
        .await
        .unwrap();

    assert_eq!(
        preview,
        PruneReport {
            deactivated: 2,
            deleted: 5
        }
    );
}

#[tokio::test]
async fn an_overview_covers_the_window_before_now() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let since = NOW - Duration::from_secs(86_400);
    mocks
        .reports
        .expect_count_devices()
        .returning(|_| Ok(vec![]));
    mocks
        .reports
        .expect_count_messages_by_state()
        .withf(move |_, at| *at == since)
        .returning(|_, _| Ok(vec![]));
    mocks
        .reports
        .expect_count_due_in_app()
        .withf(|_, at| *at == NOW)
        .returning(|_, _| Ok(3));
    mocks
        .reports
        .expect_error_reasons()
        .withf(move |_, at, _| *at == since)
        .returning(|_, _, _| Ok(vec![]));

    let overview = mocks
        .service()
        .overview("shop", Duration::from_secs(86_400))
        .await
        .unwrap();

    assert_eq!(overview.since, since);
    assert_eq!(overview.backlog, 3);
}
