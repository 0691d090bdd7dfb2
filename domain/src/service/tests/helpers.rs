//! The mocks and fixtures the tests of every concern share: a service on mocks of every port,
//! devices, stored and claimed messages, and fake stores that keep their deliveries.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;
use time::macros::datetime;

use crate::app::{ApnsSettings, Application, Applications, OneSignalSettings, SenderKind};
use crate::device::Device;
use crate::ids::{AppId, DeliveryId, DeviceId, MessageId, UserId};
use crate::message::{
    Channel, Content, Delivery, Message, MessageSpec, Priority, Progress, PushOptions, SendOutcome,
    Target,
};
use crate::ports::{
    MockApiKeyStore, MockClock, MockDeviceStore, MockMessageStore, MockPushProvider,
    MockReportStore, MockTemplateRenderer, MockTemplateStore, NewDeliveries, NewMessage,
    StoreError,
};
use crate::service::{Ports, Providers, PushService, SendRequest, ServiceSettings};
use crate::token::DeviceToken;
pub(super) const NOW: OffsetDateTime = datetime!(2026-03-01 10:00 UTC);
pub(super) const APNS_TOKEN: &str =
    "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// The deliveries the fake message store keeps, as the real stores would.
pub(super) type Shared = Arc<Mutex<Vec<Delivery>>>;

pub(super) struct Mocks {
    pub(super) deliveries: Shared,
    /// What the clock says; a test may move it.
    pub(super) now: Arc<Mutex<OffsetDateTime>>,
    pub(super) devices: MockDeviceStore,
    pub(super) messages: MockMessageStore,
    pub(super) templates: MockTemplateStore,
    pub(super) keys: MockApiKeyStore,
    pub(super) reports: MockReportStore,
    pub(super) renderer: MockTemplateRenderer,
    pub(super) providers: Vec<(Channel, MockPushProvider)>,
    sender: SenderKind,
}

impl Mocks {
    pub(super) fn new(sender: SenderKind) -> Self {
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

    pub(super) fn service(mut self) -> PushService {
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

pub(super) fn apns_device(id: i64) -> Device {
    device(
        id,
        DeviceToken::Apns {
            token: crate::token::ApnsToken::parse(APNS_TOKEN).unwrap(),
        },
    )
}

pub(super) fn fcm_device(id: i64) -> Device {
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
    )
    .expect("a new message's progress");
    let NewDeliveries::Listed(listed) = &new.deliveries else {
        return m;
    };
    m.deliveries = listed
        .iter()
        .enumerate()
        .map(|(i, (channel, device))| {
            Delivery::pending(
                DeliveryId(i as i64 + 1),
                MessageId(1),
                *device,
                *channel,
                new.now,
            )
        })
        .collect();
    m
}

/// An `insert_message` that keeps the new deliveries in `shared`.
pub(super) fn storing(
    shared: &Shared,
) -> impl Fn(&NewMessage) -> Result<Message, StoreError> + use<> {
    let shared = shared.clone();
    move |new| {
        let m = stored(new);
        shared.lock().unwrap().extend(m.deliveries.iter().cloned());
        Ok(m)
    }
}

/// A `record_deliveries` that updates `shared`, never changing an accepted delivery.
pub(super) fn recording(shared: &Shared) -> impl Fn(&[Delivery]) -> Result<(), StoreError> + use<> {
    let shared = shared.clone();
    move |deliveries| {
        let mut all = shared.lock().unwrap();
        for delivery in deliveries {
            if let Some(d) = all.iter_mut().find(|d| d.id == delivery.id)
                && d.state().is_due()
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
                .filter(|d| d.message_id == id && d.state().is_due())
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
            )
            .expect("a new message's progress");
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

pub(super) fn to_alice(body: &str) -> SendRequest {
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

pub(super) fn expect_user_devices(mocks: &mut Mocks, devices: Vec<Device>) {
    mocks
        .devices
        .expect_list_devices()
        .returning(move |_, filter| {
            assert_eq!(filter.active, Some(true));
            assert_eq!(filter.user_id.as_ref().map(UserId::as_str), Some("alice"));
            Ok(devices.clone())
        });
}

pub(super) fn provider(outcome: SendOutcome, times: usize) -> MockPushProvider {
    let mut p = MockPushProvider::new();
    p.expect_send().times(times).return_const(outcome);
    p
}

/// Captures the progress saved, alone or with the outcomes of an attempt.
pub(super) fn capture_saves(mocks: &mut Mocks) -> Arc<Mutex<Vec<Message>>> {
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

/// A claimed message as the store holds it: its deliveries are in the store, and the claim
/// brings the first of them (see [`first_deliveries`]).
pub(super) fn claimed(shared: &Shared, message: Message) -> Message {
    shared
        .lock()
        .unwrap()
        .extend(message.deliveries.iter().cloned());
    message
}

/// A store whose first claim brings `messages` and whose later claims find nothing due.
pub(super) fn claims_once(mocks: &mut Mocks, messages: Vec<Message>) {
    let mut claims = Some(messages);
    mocks
        .messages
        .expect_claim_due_except()
        .returning(move |_, _, _, _, each| {
            Ok(first_deliveries(claims.take().unwrap_or_default(), each))
        });
}

/// A store whose first claim brings one message with `progress` to APNs device 1.
pub(super) fn claims_one_device_message(mocks: &mut Mocks, progress: Progress) {
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
pub(super) fn one_device_messages(mocks: &Mocks, count: i64) -> Vec<Message> {
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
pub(super) fn first_deliveries(messages: Vec<Message>, each: u32) -> Vec<Message> {
    messages
        .into_iter()
        .map(|mut message| {
            message.deliveries.truncate(each as usize);
            message
        })
        .collect()
}

pub(super) fn claimed_message(deliveries: Vec<(Channel, i64)>, progress: Progress) -> Message {
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
