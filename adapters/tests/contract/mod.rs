//! The storage contract: what every implementation of `DeviceStore`, `MessageStore` and
//! `TemplateStore` must do, written once against the ports and run on every store through
//! [`store_contract_tests!`].
//!
//! Each contract is a `pub async fn` taking a fresh, migrated, empty store. A store must be
//! `Clone` (sharing its pool) so that the concurrency contract can spawn tasks with it.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    dead_code,
    reason = "test code: a failed expectation is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clarion_domain::app::SenderKind;
use clarion_domain::auth::{ApiKeyId, KeyHash, KeyScope, NewApiKey};
use clarion_domain::device::{
    Device, DeviceFilter, DeviceUpdate, NewDevice, Recipient, Registration,
};
use clarion_domain::ids::{AppId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{
    Channel, Content, Delivery, DeliveryProgress, DeliveryState, GiveUp, Message, MessageSpec,
    MessageState, Priority, Progress, PushOptions, SendOutcome, Target,
};
use clarion_domain::ports::{
    ApiKeyStore, DeviceCount, DeviceStore, ErrorSource, Lease, MessageFilter, MessageStore,
    NewDeliveries, NewMessage, ReportStore, StateCount, TemplateStore,
};
use clarion_domain::retry::RetryPolicy;
use clarion_domain::template::TemplateSpec;
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

/// Everything the contract needs from a store.
pub trait Stores:
    DeviceStore + MessageStore + TemplateStore + ApiKeyStore + ReportStore + Clone
{
}

impl<T: DeviceStore + MessageStore + TemplateStore + ApiKeyStore + ReportStore + Clone> Stores
    for T
{
}

/// Expands to one `#[tokio::test]` per contract. `$factory` is an expression whose value is a
/// future of a fixture that dereferences to a fresh, empty store (and keeps alive whatever
/// the store needs, such as a temporary folder). Invoke it at the root of the test crate,
/// next to `mod contract;`.
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::contract::store_contract_tests!(@each $factory;
            registering_the_same_token_twice_updates_the_owner_and_reactivates,
            registering_one_token_from_many_tasks_at_once_creates_one_device,
            registrations_made_at_once_each_get_their_own_device_back,
            writes_from_many_tasks_at_once_all_succeed,
            messages_sent_at_once_are_each_stored_with_their_own_id_and_deliveries,
            a_message_that_cannot_be_stored_fails_alone_among_messages_sent_at_once,
            a_lost_lease_refuses_only_its_own_save_among_saves_made_at_once,
            the_same_token_on_another_app_or_platform_is_a_separate_device,
            registering_devices_in_bulk_creates_new_tokens_and_updates_known_ones,
            getting_more_devices_than_a_statement_binds_returns_them_all_in_id_order,
            a_web_push_subscription_keeps_its_keys_and_an_update_replaces_them,
            listing_devices_filters_by_owner_platform_and_activity_and_pages_by_id,
            getting_devices_ignores_ids_of_other_apps,
            device_reads_made_at_once_each_get_their_own_devices,
            deactivating_and_deleting_a_device_say_whether_it_existed,
            deleting_a_device_keeps_its_deliveries_without_a_device,
            dead_devices_are_those_whose_latest_delivery_hit_a_dead_token,
            only_devices_deactivated_before_the_cutoff_are_deleted,
            a_message_to_a_user_round_trips_every_field,
            messages_to_devices_and_broadcasts_round_trip_their_targets,
            a_message_of_another_app_is_not_found,
            listing_messages_filters_by_state_tag_recipient_related_object_and_time,
            listing_messages_is_newest_first_and_pages_by_id,
            claiming_returns_waiting_and_due_retries_oldest_first,
            a_claimed_message_is_not_claimed_again_until_its_lease_expires,
            a_claim_leaves_out_the_messages_of_the_applications_it_names,
            a_claim_brings_the_first_deliveries_of_each_message_in_every_state,
            a_message_inserted_with_a_lease_is_not_claimed_until_the_lease_expires,
            two_concurrent_claimers_never_get_the_same_message,
            recording_a_delivery_never_changes_an_accepted_delivery,
            recording_a_batch_writes_every_delivery_but_the_final_ones,
            the_head_of_a_message_holds_its_first_deliveries,
            saving_progress_persists_the_state_machine_result_and_releases_the_lease,
            a_sent_message_keeps_its_accepted_and_failed_deliveries,
            the_template_message_is_the_newest_one_linked_to_every_related_object,
            the_backlog_counts_waiting_and_due_retries,
            templates_are_created_replaced_listed_and_deleted,
            timestamps_round_trip_to_the_millisecond,
            updating_a_device_changes_only_the_given_fields,
            api_keys_are_found_by_hash_listed_and_revoked_once,
            a_worker_saves_only_while_it_holds_the_lease,
            renewing_extends_only_the_leases_still_held,
            releasing_a_workers_leases_lets_others_claim_at_once,
            an_operator_save_is_refused_while_a_worker_holds_a_running_lease,
            due_deliveries_come_in_id_order_pages_without_finished_ones,
            a_page_of_due_deliveries_comes_with_what_sending_needs_of_each_device,
            a_broadcast_creates_one_delivery_per_active_device_without_loading_them,
            the_tally_counts_deliveries_and_giving_up_needs_the_lease,
            devices_are_found_by_the_start_of_their_token,
            reports_count_devices_by_platform_and_activity_of_one_app,
            reports_count_recent_messages_by_state_and_the_apps_backlog,
            reports_group_recent_errors_by_reason_latest_first,
            prune_counts_match_what_a_prune_then_does,
        );
    };
    (@each $factory:expr; $($name:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $factory.await;
                $crate::contract::$name(&*fixture).await;
            }
        )+
    };
}
pub(crate) use store_contract_tests;

// ---------------------------------------------------------------------------------------------
// Test data.

const T0: OffsetDateTime = datetime!(2025-03-04 05:06:07.089 UTC);
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
const OTHER_P256DH: &str =
    "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM";
const OTHER_AUTH: &str = "tBHItJI5svbpez7KI4CCXg";

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

fn app(name: &str) -> AppId {
    AppId::parse(name).expect("valid app id")
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("valid user id")
}

fn slug(name: &str) -> Slug {
    Slug::parse(name).expect("valid slug")
}

fn related(kind: &str, id: &str) -> RelatedObject {
    RelatedObject::new(kind, id).expect("valid related object")
}

fn apns(n: u8) -> DeviceToken {
    DeviceToken::parse(
        Platform::Apns,
        &format!("{n:02x}").repeat(32),
        None,
        None,
        EndpointPolicy::PublicOnly,
    )
    .expect("valid APNs token")
}

fn fcm(n: u8) -> DeviceToken {
    DeviceToken::parse(
        Platform::Fcm,
        &format!("fcm-token-{n}"),
        None,
        None,
        EndpointPolicy::PublicOnly,
    )
    .expect("valid FCM token")
}

fn webpush(n: u8, p256dh: &str, auth: &str) -> DeviceToken {
    DeviceToken::parse(
        Platform::Webpush,
        &format!("https://push.example.com:8443/send/{n}"),
        Some(p256dh),
        Some(auth),
        EndpointPolicy::PublicOnly,
    )
    .expect("valid subscription")
}

fn new_device(app_id: &str, token: DeviceToken, owner: Option<&str>) -> NewDevice {
    NewDevice {
        app: app(app_id),
        token,
        name: Some("phone".to_owned()),
        user_id: owner.map(user),
        device_id: Some("0b9c2f3e-1d2a-4c6b-9a8e-7f6d5c4b3a21".to_owned()),
    }
}

async fn register<S: Stores>(store: &S, device: &NewDevice, now: OffsetDateTime) -> DeviceId {
    store
        .register_device(device, now)
        .await
        .expect("registration")
        .0
        .id
}

fn spec(app_id: &str, target: Target) -> MessageSpec {
    MessageSpec {
        app: app(app_id),
        target,
        content: Content {
            heading: None,
            body: "hello".to_owned(),
            url: None,
            extra_data: None,
        },
        template_slug: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

fn to_user(app_id: &str, owner: &str) -> MessageSpec {
    spec(
        app_id,
        Target::User {
            user_id: user(owner),
        },
    )
}

fn new_message(
    spec: MessageSpec,
    deliveries: Vec<(Channel, Option<DeviceId>)>,
    now: OffsetDateTime,
) -> NewMessage {
    NewMessage {
        spec,
        sender: SenderKind::Direct,
        progress: Message::initial_progress(now),
        deliveries: NewDeliveries::Listed(deliveries),
        lease: None,
        now,
    }
}

/// A message in `state` with no delivery, as the state machine could have left it.
fn in_state(
    app_id: &str,
    state: MessageState,
    next_attempt_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> NewMessage {
    let mut message = new_message(to_user(app_id, "alice"), Vec::new(), now);
    message.progress = Progress {
        state,
        error: None,
        number_of_send_attempts: u32::from(state != MessageState::Waiting),
        next_attempt_at,
        // SENT and DEBUG are the states that have `sent_at`, as `Progress::check` requires.
        sent_at: matches!(state, MessageState::Sent | MessageState::Debug).then_some(now),
        queued_at: now,
    };
    message
}

/// `delivery` after outcomes left it in `state` with `attempts`, an error `code` and `text`,
/// at `updated_at`: what a worker hands the store to record (the provider id is dropped, as
/// recording a failure after an acceptance would write it).
fn after(
    delivery: &Delivery,
    state: DeliveryState,
    attempts: u32,
    code: Option<String>,
    text: Option<String>,
    updated_at: OffsetDateTime,
) -> Delivery {
    let progress = DeliveryProgress {
        state,
        attempts,
        provider_id: None,
        error_code: code,
        error_text: text,
        details: delivery.details().cloned(),
        updated_at,
    };
    Delivery::from_storage(
        delivery.id,
        delivery.message_id,
        delivery.device_id,
        delivery.channel,
        progress,
    )
    .expect("a delivery that recording outcomes reaches")
}

async fn insert<S: Stores>(store: &S, message: &NewMessage) -> Message {
    store.insert_message(message).await.expect("insert")
}

fn lease(owner: &str, until: OffsetDateTime) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until,
    }
}

fn ids(messages: &[Message]) -> Vec<MessageId> {
    messages.iter().map(|m| m.id).collect()
}

async fn listed<S: Stores>(store: &S, filter: MessageFilter) -> Vec<MessageId> {
    ids(&store.list_messages(&filter).await.expect("list"))
}

fn device_ids(devices: &[clarion_domain::device::Device]) -> Vec<DeviceId> {
    devices.iter().map(|d| d.id).collect()
}

// ---------------------------------------------------------------------------------------------
// Devices.

pub async fn registering_the_same_token_twice_updates_the_owner_and_reactivates<S: Stores>(
    store: &S,
) {
    let first = new_device("shop", apns(1), Some("alice"));
    let (created, how) = store.register_device(&first, at(0)).await.expect("first");
    assert_eq!(how, Registration::Created);
    store
        .deactivate_device(&app("shop"), created.id, "unregistered", at(1))
        .await
        .expect("deactivate");

    let mut second = new_device("shop", apns(1), Some("bob"));
    second.name = Some("tablet".to_owned());
    second.device_id = None;
    let (updated, how) = store.register_device(&second, at(2)).await.expect("second");

    assert_eq!(how, Registration::Updated);
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.user_id, Some(user("bob")));
    assert_eq!(updated.name.as_deref(), Some("tablet"));
    assert_eq!(updated.device_id, None);
    assert!(updated.active);
    assert_eq!(updated.deactivated_at, None);
    assert_eq!(updated.deactivation_reason, None);
    assert_eq!(updated.created_at, at(0));
    assert_eq!(updated.updated_at, at(2));
    let stored = store
        .get_device(&app("shop"), created.id)
        .await
        .expect("get");
    assert_eq!(stored, Some(updated));
}

/// Tasks that write at once in the concurrency contracts, as many as the clients of the
/// registration benchmark.
const CONCURRENT_TASKS: usize = 64;

fn numbered_apns(n: usize) -> DeviceToken {
    DeviceToken::parse(
        Platform::Apns,
        &format!("{:064x}", 0x3_0000 + n),
        None,
        None,
        EndpointPolicy::PublicOnly,
    )
    .expect("valid APNs token")
}

pub async fn registering_one_token_from_many_tasks_at_once_creates_one_device<S: Stores>(
    store: &S,
) {
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|n| {
            let store = store.clone();
            let device = new_device("shop", apns(7), Some(&format!("user-{n}")));
            tokio::spawn(async move { store.register_device(&device, at(0)).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task").expect("registration"));
    }

    let created = outcomes
        .iter()
        .filter(|(_, how)| *how == Registration::Created)
        .count();
    assert_eq!(created, 1, "exactly one registration creates the device");
    let ids: BTreeSet<DeviceId> = outcomes.iter().map(|(device, _)| device.id).collect();
    assert_eq!(ids.len(), 1, "every registration names the same device");
    let listed = store
        .list_devices(&app("shop"), &DeviceFilter::default())
        .await
        .expect("list");
    assert_eq!(device_ids(&listed), ids.into_iter().collect::<Vec<_>>());
}

/// Registrations made at the same time are written together; each must still get back the
/// device it registered, as it left it, whatever the platform.
pub async fn registrations_made_at_once_each_get_their_own_device_back<S: Stores>(store: &S) {
    fn token(n: usize) -> DeviceToken {
        let k = u8::try_from(n).expect("small");
        match n % 3 {
            0 => numbered_apns(n),
            1 => fcm(k),
            _ if n.is_multiple_of(2) => webpush(k, P256DH, AUTH),
            _ => webpush(k, OTHER_P256DH, OTHER_AUTH),
        }
    }
    async fn wave<S: Stores>(
        store: &S,
        name: &'static str,
        seconds: i64,
        which: impl Iterator<Item = usize>,
    ) -> BTreeMap<usize, (Device, Registration)> {
        let tasks: Vec<_> = which
            .map(|n| {
                let store = store.clone();
                let mut device = new_device("shop", token(n), Some(&format!("user-{n}")));
                device.name = Some(format!("{name} {n}"));
                let task =
                    tokio::spawn(async move { store.register_device(&device, at(seconds)).await });
                (n, task)
            })
            .collect();
        let mut outcomes = BTreeMap::new();
        for (n, task) in tasks {
            outcomes.insert(n, task.await.expect("task").expect("registration"));
        }
        outcomes
    }

    // The even ones first; then all of them at once, so that each batch of the second wave
    // mixes devices it creates with devices it updates.
    let first = wave(store, "first", 0, (0..CONCURRENT_TASKS).step_by(2)).await;
    let second = wave(store, "second", 5, 0..CONCURRENT_TASKS).await;
    for (n, (device, how)) in &second {
        let earlier = first.get(n);
        let expected = if earlier.is_some() {
            Registration::Updated
        } else {
            Registration::Created
        };
        assert_eq!(*how, expected, "{n}");
        assert_eq!(device.token, token(*n), "{n}");
        assert_eq!(device.name.as_deref(), Some(format!("second {n}").as_str()));
        assert_eq!(device.user_id, Some(user(&format!("user-{n}"))));
        assert_eq!(device.updated_at, at(5), "{n}");
        if let Some((created, how)) = earlier {
            assert_eq!(*how, Registration::Created, "{n}");
            assert_eq!(created.name.as_deref(), Some(format!("first {n}").as_str()));
            assert_eq!(device.id, created.id, "{n}");
            assert_eq!(device.created_at, at(0), "{n}");
        }
    }
    let ids: BTreeSet<DeviceId> = second.values().map(|(d, _)| d.id).collect();
    assert_eq!(ids.len(), CONCURRENT_TASKS);
}

pub async fn writes_from_many_tasks_at_once_all_succeed<S: Stores>(store: &S) {
    // Each task mixes the kinds of write: a bulk registration (a transaction that reads, then
    // writes), a registration, an update, a message (a transaction) and a deactivation.
    const BULK: usize = 10;
    let tasks: Vec<_> = (0..CONCURRENT_TASKS)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let bulk: Vec<NewDevice> = (0..BULK)
                    .map(|k| new_device("shop", numbered_apns(1000 + n * BULK + k), None))
                    .collect();
                store.register_devices(&bulk, at(0)).await?;
                let owner = format!("user-{n}");
                let device = new_device("shop", numbered_apns(n), Some(&owner));
                let (device, _) = store.register_device(&device, at(0)).await?;
                let rename = DeviceUpdate {
                    name: Some(Some(format!("phone {n}"))),
                    ..DeviceUpdate::default()
                };
                store
                    .update_device(&app("shop"), device.id, &rename, at(1))
                    .await?;
                let to_device = spec(
                    "shop",
                    Target::Devices {
                        device_ids: vec![device.id],
                    },
                );
                store
                    .insert_message(&new_message(
                        to_device,
                        vec![(Channel::Apns, Some(device.id))],
                        at(1),
                    ))
                    .await?;
                store
                    .deactivate_device(&app("shop"), device.id, "unregistered", at(2))
                    .await?;
                Ok::<_, clarion_domain::ports::StoreError>(())
            })
        })
        .collect();

    for task in tasks {
        task.await.expect("task").expect("every write succeeds");
    }

    let counts = store.count_devices(&app("shop")).await.expect("count");
    let active: u64 = counts.iter().filter(|c| c.active).map(|c| c.count).sum();
    let inactive: u64 = counts.iter().filter(|c| !c.active).map(|c| c.count).sum();
    assert_eq!(active, (CONCURRENT_TASKS * BULK) as u64);
    assert_eq!(inactive, CONCURRENT_TASKS as u64);
    let messages = store
        .list_messages(&MessageFilter {
            limit: Some(1000),
            ..MessageFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(messages.len(), CONCURRENT_TASKS);
}

pub async fn registering_devices_in_bulk_creates_new_tokens_and_updates_known_ones<S: Stores>(
    store: &S,
) {
    let known = register(store, &new_device("shop", apns(1), Some("alice")), at(0)).await;
    store
        .deactivate_device(&app("shop"), known, "unregistered", at(1))
        .await
        .expect("deactivate");
    // More devices than one statement writes, a token given twice (the last one wins), a
    // known token, and every platform.
    let mut devices = vec![new_device("shop", apns(1), Some("bob"))];
    devices.extend((0..2500_u32).map(|n| {
        let token = DeviceToken::parse(
            Platform::Apns,
            &format!("{:064x}", 0x1_0000 + n),
            None,
            None,
            EndpointPolicy::PublicOnly,
        )
        .expect("valid APNs token");
        new_device("shop", token, None)
    }));
    devices.push(new_device("shop", fcm(2), Some("carol")));
    devices.push(new_device("shop", webpush(3, P256DH, AUTH), None));
    devices.push(new_device("shop", fcm(2), Some("dave")));

    let empty = store.register_devices(&[], at(2)).await.expect("empty");
    let done = store.register_devices(&devices, at(2)).await.expect("bulk");

    assert_eq!((empty.created, empty.updated), (0, 0));
    assert_eq!((done.created, done.updated), (2502, 1));
    let reregistered = store
        .get_device(&app("shop"), known)
        .await
        .expect("get")
        .expect("still there");
    assert!(reregistered.active);
    assert_eq!(reregistered.user_id, Some(user("bob")));
    assert_eq!(reregistered.deactivation_reason, None);
    assert_eq!(reregistered.created_at, at(0));
    assert_eq!(reregistered.updated_at, at(2));
    let mut all = Vec::new();
    loop {
        let filter = DeviceFilter {
            after: all.last().map(|d: &clarion_domain::device::Device| d.id),
            limit: Some(1000),
            ..DeviceFilter::default()
        };
        let page = store
            .list_devices(&app("shop"), &filter)
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        all.extend(page);
    }
    assert_eq!(all.len(), 2503);
    let fcm_owners: Vec<_> = all
        .iter()
        .filter(|d| d.platform() == Platform::Fcm)
        .map(|d| d.user_id.clone())
        .collect();
    assert_eq!(fcm_owners, vec![Some(user("dave"))]);
    let subscription = all
        .iter()
        .find(|d| d.platform() == Platform::Webpush)
        .expect("the subscription");
    assert_eq!(subscription.token, webpush(3, P256DH, AUTH));
}

pub async fn getting_more_devices_than_a_statement_binds_returns_them_all_in_id_order<S: Stores>(
    store: &S,
) {
    // SQLite binds at most 32,766 values per statement; a broadcast reads every device.
    let devices: Vec<NewDevice> = (0..40_000_u32)
        .map(|n| {
            let token = DeviceToken::parse(
                Platform::Apns,
                &format!("{:064x}", 0x2_0000 + n),
                None,
                None,
                EndpointPolicy::PublicOnly,
            )
            .expect("valid APNs token");
            new_device("shop", token, None)
        })
        .collect();
    for chunk in devices.chunks(5000) {
        store.register_devices(chunk, at(0)).await.expect("bulk");
    }
    let mut ids = Vec::new();
    loop {
        let filter = DeviceFilter {
            after: ids.last().copied(),
            limit: Some(1000),
            ..DeviceFilter::default()
        };
        let page = store
            .list_devices(&app("shop"), &filter)
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        ids.extend(page.iter().map(|d| d.id));
    }
    let reversed: Vec<DeviceId> = ids.iter().rev().copied().collect();

    let found = store
        .get_devices(&app("shop"), &reversed)
        .await
        .expect("get");

    let found: Vec<DeviceId> = found.iter().map(|d| d.id).collect();
    assert_eq!(found.len(), 40_000);
    assert_eq!(found, ids);
}

pub async fn the_same_token_on_another_app_or_platform_is_a_separate_device<S: Stores>(store: &S) {
    let shop = register(store, &new_device("shop", apns(1), Some("alice")), at(0)).await;
    let (other_app, how) = store
        .register_device(&new_device("news", apns(1), Some("alice")), at(0))
        .await
        .expect("other app");
    assert_eq!(how, Registration::Created);
    // An FCM token may be any printable text, including an APNs token's hex digits.
    let hex = format!("{:02x}", 1).repeat(32);
    let fcm_same_text =
        DeviceToken::parse(Platform::Fcm, &hex, None, None, EndpointPolicy::PublicOnly)
            .expect("valid FCM token");
    let (other_platform, how) = store
        .register_device(&new_device("shop", fcm_same_text, None), at(0))
        .await
        .expect("other platform");
    assert_eq!(how, Registration::Created);

    let distinct: BTreeSet<DeviceId> = [shop, other_app.id, other_platform.id].into();
    assert_eq!(distinct.len(), 3);
    assert_eq!(other_platform.platform(), Platform::Fcm);
    assert_eq!(other_app.app, app("news"));
}

pub async fn a_web_push_subscription_keeps_its_keys_and_an_update_replaces_them<S: Stores>(
    store: &S,
) {
    let first = new_device("shop", webpush(1, P256DH, AUTH), Some("alice"));
    let (created, _) = store.register_device(&first, at(0)).await.expect("first");
    assert_eq!(created.token, first.token);

    let second = new_device("shop", webpush(1, OTHER_P256DH, OTHER_AUTH), Some("alice"));
    let (updated, how) = store.register_device(&second, at(1)).await.expect("second");

    assert_eq!(how, Registration::Updated);
    assert_eq!(updated.id, created.id);
    assert_eq!(updated.token, second.token);
    let stored = store
        .get_device(&app("shop"), created.id)
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(stored.token, second.token);
}

pub async fn listing_devices_filters_by_owner_platform_and_activity_and_pages_by_id<S: Stores>(
    store: &S,
) {
    let a1 = register(store, &new_device("shop", apns(1), Some("alice")), at(0)).await;
    let a2 = register(store, &new_device("shop", fcm(2), Some("alice")), at(0)).await;
    let b3 = register(store, &new_device("shop", apns(3), Some("bob")), at(0)).await;
    let n4 = register(store, &new_device("shop", fcm(4), None), at(0)).await;
    let _other = register(store, &new_device("news", apns(5), Some("alice")), at(0)).await;
    store
        .deactivate_device(&app("shop"), a2, "uninstalled", at(1))
        .await
        .expect("deactivate");
    let list = async |filter: DeviceFilter| {
        device_ids(
            &store
                .list_devices(&app("shop"), &filter)
                .await
                .expect("list"),
        )
    };

    assert_eq!(list(DeviceFilter::default()).await, vec![a1, a2, b3, n4]);
    let alice = DeviceFilter {
        user_id: Some(user("alice")),
        ..DeviceFilter::default()
    };
    assert_eq!(list(alice).await, vec![a1, a2]);
    let on_apns = DeviceFilter {
        platform: Some(Platform::Apns),
        ..DeviceFilter::default()
    };
    assert_eq!(list(on_apns).await, vec![a1, b3]);
    let active = DeviceFilter {
        active: Some(true),
        ..DeviceFilter::default()
    };
    assert_eq!(list(active).await, vec![a1, b3, n4]);
    let inactive = DeviceFilter {
        active: Some(false),
        ..DeviceFilter::default()
    };
    assert_eq!(list(inactive).await, vec![a2]);
    let first_page = DeviceFilter {
        limit: Some(2),
        ..DeviceFilter::default()
    };
    assert_eq!(list(first_page).await, vec![a1, a2]);
    let second_page = DeviceFilter {
        after: Some(a2),
        limit: Some(2),
        ..DeviceFilter::default()
    };
    assert_eq!(list(second_page).await, vec![b3, n4]);
    let past_the_end = DeviceFilter {
        after: Some(n4),
        ..DeviceFilter::default()
    };
    assert_eq!(list(past_the_end).await, Vec::<DeviceId>::new());
}

pub async fn getting_devices_ignores_ids_of_other_apps<S: Stores>(store: &S) {
    let mine1 = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let theirs = register(store, &new_device("news", apns(2), None), at(0)).await;
    let mine2 = register(store, &new_device("shop", fcm(3), None), at(0)).await;

    let got = store
        .get_devices(&app("shop"), &[mine2, theirs, DeviceId(9_999), mine1])
        .await
        .expect("get devices");

    assert_eq!(device_ids(&got), vec![mine1, mine2]);
    assert_eq!(
        store.get_device(&app("shop"), theirs).await.expect("get"),
        None
    );
    assert_eq!(
        store.get_devices(&app("shop"), &[]).await.expect("empty"),
        Vec::new()
    );
}

/// Reads of devices made at the same time are read together; each must still get what it
/// would have read alone: the devices of its own application among its ids, in id order, an id
/// given twice found twice.
pub async fn device_reads_made_at_once_each_get_their_own_devices<S: Stores>(store: &S) {
    let mut ids = Vec::new();
    for n in 0..24_u8 {
        let owner = if n % 3 == 0 { "news" } else { "shop" };
        ids.push(register(store, &new_device(owner, fcm(n), None), at(0)).await);
    }
    store
        .deactivate_device(&app("shop"), ids[1], "test", at(1))
        .await
        .expect("deactivate");
    let mut all: BTreeMap<DeviceId, Device> = BTreeMap::new();
    for owner in [app("shop"), app("news")] {
        let filter = DeviceFilter {
            limit: Some(1000),
            ..DeviceFilter::default()
        };
        let listed = store.list_devices(&owner, &filter).await.expect("list");
        all.extend(listed.into_iter().map(|device| (device.id, device)));
    }

    let reads: Vec<(AppId, Vec<DeviceId>)> = (0..CONCURRENT_TASKS)
        .map(|k| {
            let owner = app(if k % 2 == 0 { "shop" } else { "news" });
            // A window of the ids, backwards, with one of them twice and an unknown id.
            let mut wanted: Vec<DeviceId> =
                ids.iter().skip(k % 20).take(5).rev().copied().collect();
            wanted.push(ids[k % ids.len()]);
            wanted.push(DeviceId(1_000_000 + i64::try_from(k).expect("small")));
            (owner, wanted)
        })
        .collect();
    let tasks: Vec<_> = reads
        .iter()
        .cloned()
        .map(|(owner, wanted)| {
            let store = store.clone();
            tokio::spawn(async move { store.get_devices(&owner, &wanted).await })
        })
        .collect();

    for ((owner, wanted), task) in reads.iter().zip(tasks) {
        let got = task.await.expect("task").expect("get devices");
        let mut expected: Vec<Device> = wanted
            .iter()
            .filter_map(|id| all.get(id).filter(|d| d.app == *owner).cloned())
            .collect();
        expected.sort_by_key(|d| d.id);
        assert_eq!(got, expected, "{owner} {wanted:?}");
    }
}

pub async fn deactivating_and_deleting_a_device_say_whether_it_existed<S: Stores>(store: &S) {
    let id = register(store, &new_device("shop", apns(1), None), at(0)).await;

    assert!(
        !store
            .deactivate_device(&app("news"), id, "wrong app", at(1))
            .await
            .expect("deactivate other app")
    );
    assert!(
        store
            .deactivate_device(&app("shop"), id, "uninstalled", at(1))
            .await
            .expect("deactivate")
    );
    let device = store
        .get_device(&app("shop"), id)
        .await
        .expect("get")
        .expect("exists");
    assert!(!device.active);
    assert_eq!(device.deactivated_at, Some(at(1)));
    assert_eq!(device.deactivation_reason.as_deref(), Some("uninstalled"));

    assert!(
        !store
            .delete_device(&app("news"), id)
            .await
            .expect("delete other app")
    );
    assert!(store.delete_device(&app("shop"), id).await.expect("delete"));
    assert!(
        !store
            .delete_device(&app("shop"), id)
            .await
            .expect("delete again")
    );
    assert_eq!(store.get_device(&app("shop"), id).await.expect("get"), None);
    assert!(
        !store
            .deactivate_device(&app("shop"), id, "gone", at(2))
            .await
            .expect("deactivate deleted")
    );
}

pub async fn deleting_a_device_keeps_its_deliveries_without_a_device<S: Stores>(store: &S) {
    let kept = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let doomed = register(store, &new_device("shop", fcm(2), None), at(0)).await;
    let message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![kept, doomed],
                },
            ),
            vec![(Channel::Apns, Some(kept)), (Channel::Fcm, Some(doomed))],
            at(1),
        ),
    )
    .await;

    assert!(
        store
            .delete_device(&app("shop"), doomed)
            .await
            .expect("delete")
    );

    let stored = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("get")
        .expect("exists");
    let devices: Vec<Option<DeviceId>> = stored.deliveries.iter().map(|d| d.device_id).collect();
    assert_eq!(devices, vec![Some(kept), None]);
    assert_eq!(stored.deliveries[1].channel, Channel::Fcm);
    assert_eq!(stored.deliveries[1].id, message.deliveries[1].id);
}

pub async fn dead_devices_are_those_whose_latest_delivery_hit_a_dead_token<S: Stores>(store: &S) {
    let dead = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let revived = register(store, &new_device("shop", apns(2), None), at(0)).await;
    let recovered = register(store, &new_device("shop", apns(3), None), at(0)).await;
    let healthy = register(store, &new_device("shop", apns(4), None), at(0)).await;
    let elsewhere = register(store, &new_device("news", apns(5), None), at(0)).await;
    let outcome_of = async |app_id: &str, device: DeviceId, state: DeliveryState, t: i64| {
        let message = insert(
            store,
            &new_message(
                spec(
                    app_id,
                    Target::Devices {
                        device_ids: vec![device],
                    },
                ),
                vec![(Channel::Apns, Some(device))],
                at(t),
            ),
        )
        .await;
        let code = (state == DeliveryState::DeadToken).then(|| "Unregistered".to_owned());
        let delivery = after(&message.deliveries[0], state, 1, code, None, at(t));
        store
            .record_deliveries(std::slice::from_ref(&delivery))
            .await
            .expect("record");
    };
    outcome_of("shop", dead, DeliveryState::DeadToken, 10).await;
    outcome_of("shop", revived, DeliveryState::DeadToken, 10).await;
    outcome_of("shop", recovered, DeliveryState::DeadToken, 10).await;
    outcome_of("shop", recovered, DeliveryState::Accepted, 20).await;
    outcome_of("shop", healthy, DeliveryState::Accepted, 10).await;
    outcome_of("news", elsewhere, DeliveryState::DeadToken, 10).await;
    // Registered again after the dead token was reported: the token works again.
    register(store, &new_device("shop", apns(2), None), at(30)).await;

    let count = store
        .deactivate_dead_devices(&app("shop"), at(40))
        .await
        .expect("prune");

    assert_eq!(count, 1);
    let inactive = store
        .list_devices(
            &app("shop"),
            &DeviceFilter {
                active: Some(false),
                ..DeviceFilter::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(device_ids(&inactive), vec![dead]);
    assert_eq!(inactive[0].deactivated_at, Some(at(40)));
    assert_eq!(
        inactive[0].deactivation_reason.as_deref(),
        Some("dead token")
    );
    let other = store
        .get_device(&app("news"), elsewhere)
        .await
        .expect("get")
        .expect("exists");
    assert!(other.active, "another application's devices are left alone");
    assert_eq!(
        store
            .deactivate_dead_devices(&app("shop"), at(50))
            .await
            .expect("prune again"),
        0
    );
}

pub async fn only_devices_deactivated_before_the_cutoff_are_deleted<S: Stores>(store: &S) {
    let old = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let recent = register(store, &new_device("shop", apns(2), None), at(0)).await;
    let active = register(store, &new_device("shop", apns(3), None), at(0)).await;
    let elsewhere = register(store, &new_device("news", apns(4), None), at(0)).await;
    for (app_id, id, t) in [
        ("shop", old, 10),
        ("shop", recent, 100),
        ("news", elsewhere, 10),
    ] {
        store
            .deactivate_device(&app(app_id), id, "uninstalled", at(t))
            .await
            .expect("deactivate");
    }

    let deleted = store
        .delete_inactive_devices(&app("shop"), at(100))
        .await
        .expect("delete inactive");

    assert_eq!(deleted, 1);
    let left = store
        .list_devices(&app("shop"), &DeviceFilter::default())
        .await
        .expect("list");
    assert_eq!(device_ids(&left), vec![recent, active]);
    assert!(
        store
            .get_device(&app("news"), elsewhere)
            .await
            .expect("get")
            .is_some()
    );
}

// ---------------------------------------------------------------------------------------------
// Messages.

pub async fn a_message_to_a_user_round_trips_every_field<S: Stores>(store: &S) {
    let phone = register(store, &new_device("shop", apns(1), Some("alice")), at(0)).await;
    let browser = register(
        store,
        &new_device("shop", webpush(2, P256DH, AUTH), Some("alice")),
        at(0),
    )
    .await;
    let mut message_spec = to_user("shop", "alice");
    message_spec.content = Content {
        heading: Some("Your order".to_owned()),
        body: "has shipped: ✓ ünïcödé".to_owned(),
        url: Some("https://shop.example.com/orders/42".to_owned()),
        extra_data: json!({"order": 42, "items": ["a", "b"], "nested": {"x": null}})
            .as_object()
            .cloned(),
    };
    message_spec.template_slug = Some(slug("order-shipped"));
    message_spec.tag = Some(Tag::parse("spring campaign").expect("tag"));
    message_spec.priority = Priority::Normal;
    message_spec.options = PushOptions {
        badge: Some(3),
        sound: Some("chime.caf".to_owned()),
        thread_id: Some("orders".to_owned()),
        category: Some("ORDER".to_owned()),
        collapse_key: Some("order-42".to_owned()),
        time_to_live: Some(3600),
        content_available: true,
        mutable_content: true,
    };
    message_spec.related_objects = vec![related("order", "42"), related("customer", "7")];
    message_spec.retry_sending = false;
    let mut new = new_message(
        message_spec,
        vec![
            (Channel::Apns, Some(phone)),
            (Channel::Webpush, Some(browser)),
        ],
        at(5),
    );
    new.sender = SenderKind::Onesignal;

    let inserted = insert(store, &new).await;

    assert_eq!(inserted.spec, new.spec);
    assert_eq!(inserted.sender, SenderKind::Onesignal);
    assert_eq!(inserted.progress(), &new.progress);
    assert_eq!(inserted.state(), MessageState::Waiting);
    assert_eq!(inserted.extra_sender_data, None);
    assert_eq!(inserted.created_at, at(5));
    assert_eq!(inserted.changed_at, at(5));
    assert_eq!(inserted.deliveries.len(), 2);
    let NewDeliveries::Listed(listed) = &new.deliveries else {
        panic!("a listed message");
    };
    for (delivery, (channel, device)) in inserted.deliveries.iter().zip(listed) {
        assert_eq!(delivery.message_id, inserted.id);
        assert_eq!(delivery.channel, *channel);
        assert_eq!(delivery.device_id, *device);
        assert_eq!(delivery.state(), DeliveryState::Pending);
        assert_eq!(delivery.attempts(), 0);
        assert_eq!(delivery.provider_id(), None);
        assert_eq!(delivery.error_code(), None);
        assert_eq!(delivery.error_text(), None);
        assert_eq!(delivery.details(), None);
        assert_eq!(delivery.updated_at(), at(5));
    }
    assert_ne!(inserted.deliveries[0].id, inserted.deliveries[1].id);
    let fetched = store
        .get_message(&app("shop"), inserted.id)
        .await
        .expect("get");
    assert_eq!(fetched, Some(inserted));
}

pub async fn messages_to_devices_and_broadcasts_round_trip_their_targets<S: Stores>(store: &S) {
    let d1 = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let d2 = register(store, &new_device("shop", fcm(2), None), at(0)).await;
    let targets = [
        Target::Devices {
            device_ids: vec![d2, d1],
        },
        Target::Broadcast { platform: None },
        Target::Broadcast {
            platform: Some(Platform::Webpush),
        },
    ];
    for target in targets {
        let mut new = new_message(spec("shop", target.clone()), Vec::new(), at(1));
        // A OneSignal delivery has no device.
        new.deliveries = NewDeliveries::Listed(vec![(Channel::Onesignal, None)]);

        let inserted = insert(store, &new).await;

        assert_eq!(inserted.spec.target, target);
        assert_eq!(inserted.spec.target.recipient(), None);
        assert_eq!(inserted.deliveries[0].device_id, None);
        assert_eq!(inserted.deliveries[0].channel, Channel::Onesignal);
        let fetched = store
            .get_message(&app("shop"), inserted.id)
            .await
            .expect("get");
        assert_eq!(fetched, Some(inserted));
    }
}

pub async fn a_message_of_another_app_is_not_found<S: Stores>(store: &S) {
    let message = insert(
        store,
        &new_message(to_user("shop", "alice"), Vec::new(), at(0)),
    )
    .await;

    assert_eq!(
        store
            .get_message(&app("news"), message.id)
            .await
            .expect("get"),
        None
    );
    assert_eq!(
        store
            .get_message(&app("shop"), MessageId(message.id.0 + 1_000))
            .await
            .expect("get"),
        None
    );
}

pub async fn listing_messages_filters_by_state_tag_recipient_related_object_and_time<S: Stores>(
    store: &S,
) {
    let campaign = Tag::parse("spring").expect("tag");
    let mut tagged_spec = to_user("shop", "alice");
    tagged_spec.tag = Some(campaign.clone());
    tagged_spec.related_objects = vec![related("order", "42")];
    let tagged = insert(store, &new_message(tagged_spec, Vec::new(), at(10))).await;
    let to_bob = insert(
        store,
        &new_message(to_user("shop", "bob"), Vec::new(), at(20)),
    )
    .await;
    let failed = insert(store, &in_state("shop", MessageState::Error, None, at(30))).await;
    let mut broadcast_spec = spec("shop", Target::Broadcast { platform: None });
    broadcast_spec.related_objects = vec![related("order", "43"), related("order", "42")];
    let broadcast = insert(store, &new_message(broadcast_spec, Vec::new(), at(40))).await;
    let elsewhere = insert(
        store,
        &new_message(to_user("news", "alice"), Vec::new(), at(50)),
    )
    .await;
    let shop = || MessageFilter {
        app: Some(app("shop")),
        ..MessageFilter::default()
    };

    assert_eq!(
        listed(store, MessageFilter::default()).await,
        vec![elsewhere.id, broadcast.id, failed.id, to_bob.id, tagged.id]
    );
    assert_eq!(
        listed(store, shop()).await,
        vec![broadcast.id, failed.id, to_bob.id, tagged.id]
    );
    let in_error = MessageFilter {
        state: Some(MessageState::Error),
        ..shop()
    };
    assert_eq!(listed(store, in_error).await, vec![failed.id]);
    let by_tag = MessageFilter {
        tag: Some(campaign),
        ..shop()
    };
    assert_eq!(listed(store, by_tag).await, vec![tagged.id]);
    let for_bob = MessageFilter {
        recipient: Some(user("bob")),
        ..shop()
    };
    assert_eq!(listed(store, for_bob).await, vec![to_bob.id]);
    let for_alice_anywhere = MessageFilter {
        recipient: Some(user("alice")),
        ..MessageFilter::default()
    };
    assert_eq!(
        listed(store, for_alice_anywhere).await,
        vec![elsewhere.id, failed.id, tagged.id]
    );
    let about_order_42 = MessageFilter {
        related: Some(related("order", "42")),
        ..shop()
    };
    assert_eq!(
        listed(store, about_order_42).await,
        vec![broadcast.id, tagged.id]
    );
    let about_order_4 = MessageFilter {
        related: Some(related("order", "4")),
        ..shop()
    };
    assert_eq!(listed(store, about_order_4).await, Vec::<MessageId>::new());
    // `created_after` is inclusive and `created_before` exclusive: [after, before).
    let window = MessageFilter {
        created_after: Some(at(20)),
        created_before: Some(at(40)),
        ..shop()
    };
    assert_eq!(listed(store, window).await, vec![failed.id, to_bob.id]);
}

pub async fn listing_messages_is_newest_first_and_pages_by_id<S: Stores>(store: &S) {
    let mut all = Vec::new();
    for n in 0..5 {
        all.push(
            insert(
                store,
                &new_message(to_user("shop", "alice"), Vec::new(), at(n)),
            )
            .await
            .id,
        );
    }
    all.reverse();

    let first = MessageFilter {
        limit: Some(2),
        ..MessageFilter::default()
    };
    assert_eq!(listed(store, first).await, all[..2].to_vec());
    let second = MessageFilter {
        before: Some(all[1]),
        limit: Some(2),
        ..MessageFilter::default()
    };
    assert_eq!(listed(store, second).await, all[2..4].to_vec());
    let last = MessageFilter {
        before: Some(all[3]),
        limit: Some(2),
        ..MessageFilter::default()
    };
    assert_eq!(listed(store, last).await, all[4..].to_vec());
    assert_eq!(listed(store, MessageFilter::default()).await, all);
}

pub async fn claiming_returns_waiting_and_due_retries_oldest_first<S: Stores>(store: &S) {
    let device = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let mut with_delivery = new_message(
        spec(
            "shop",
            Target::Devices {
                device_ids: vec![device],
            },
        ),
        vec![(Channel::Apns, Some(device))],
        at(0),
    );
    with_delivery.spec.related_objects = vec![related("order", "1")];
    let waiting = insert(store, &with_delivery).await;
    let due_retry = insert(
        store,
        &in_state("shop", MessageState::ErrorRetry, Some(at(50)), at(0)),
    )
    .await;
    let retry_now = insert(
        store,
        &in_state("news", MessageState::ErrorRetry, Some(at(100)), at(0)),
    )
    .await;
    let _future_retry = insert(
        store,
        &in_state("shop", MessageState::ErrorRetry, Some(at(101)), at(0)),
    )
    .await;
    for state in [MessageState::Sent, MessageState::Error, MessageState::Debug] {
        insert(store, &in_state("shop", state, None, at(0))).await;
    }

    let claimed = store
        .claim_due(at(100), 10, &lease("worker-1", at(160)))
        .await
        .expect("claim");

    assert_eq!(ids(&claimed), vec![waiting.id, due_retry.id, retry_now.id]);
    let mut without_deliveries = waiting.clone();
    without_deliveries.deliveries.clear();
    assert_eq!(
        claimed[0], without_deliveries,
        "claimed messages come without their deliveries, which are paged"
    );
    let limited = store
        .claim_due(at(200), 2, &lease("worker-2", at(260)))
        .await
        .expect("claim with a limit");
    assert_eq!(ids(&limited), vec![waiting.id, due_retry.id]);
}

pub async fn a_claim_leaves_out_the_messages_of_the_applications_it_names<S: Stores>(store: &S) {
    let mut inserted = Vec::new();
    for app in ["shop", "news", "shop", "mail", "news"] {
        inserted.push(insert(store, &in_state(app, MessageState::Waiting, None, at(0))).await);
    }
    let shop = AppId::parse("shop").expect("an app id");
    let news = AppId::parse("news").expect("an app id");

    let without_shop = store
        .claim_due_except(
            at(10),
            10,
            &lease("worker-1", at(70)),
            std::slice::from_ref(&shop),
            0,
        )
        .await
        .expect("claim");
    let without_either = store
        .claim_due_except(at(10), 10, &lease("worker-2", at(70)), &[shop, news], 0)
        .await
        .expect("claim again");
    let the_rest = store
        .claim_due_except(at(10), 10, &lease("worker-3", at(70)), &[], 0)
        .await
        .expect("claim the rest");

    assert_eq!(
        ids(&without_shop),
        vec![inserted[1].id, inserted[3].id, inserted[4].id]
    );
    assert!(without_either.is_empty(), "{without_either:?}");
    assert_eq!(ids(&the_rest), vec![inserted[0].id, inserted[2].id]);
}

pub async fn a_claim_brings_the_first_deliveries_of_each_message_in_every_state<S: Stores>(
    store: &S,
) {
    // Arrange: a message to three devices whose first delivery was accepted already (a
    // retry), and a message to one device.
    let mut three = message_to_three_devices(store).await;
    three.deliveries[0].record(
        &SendOutcome::Accepted {
            provider_id: Some("apns-id-1".to_owned()),
            details: None,
        },
        at(1),
    );
    store
        .record_deliveries(&three.deliveries[..1])
        .await
        .expect("record");
    let device = three.deliveries[0].device_id;
    let one = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: device.into_iter().collect(),
                },
            ),
            vec![(Channel::Apns, device)],
            at(0),
        ),
    )
    .await;

    // Act
    let claimed = store
        .claim_due_except(at(2), 10, &lease("worker", at(62)), &[], 2)
        .await
        .expect("claim");

    // Assert: at most two deliveries each, in id order, the accepted one among them.
    assert_eq!(ids(&claimed), vec![three.id, one.id]);
    assert_eq!(claimed[0].deliveries, three.deliveries[..2].to_vec());
    assert_eq!(claimed[0].deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(claimed[1].deliveries, one.deliveries);
}

pub async fn a_claimed_message_is_not_claimed_again_until_its_lease_expires<S: Stores>(store: &S) {
    let message = insert(
        store,
        &new_message(to_user("shop", "alice"), Vec::new(), at(0)),
    )
    .await;
    let claimed = store
        .claim_due(at(1), 10, &lease("worker-1", at(61)))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), vec![message.id]);

    let while_leased = store
        .claim_due(at(60), 10, &lease("worker-2", at(120)))
        .await
        .expect("claim while leased");
    assert_eq!(ids(&while_leased), Vec::<MessageId>::new());

    let after_expiry = store
        .claim_due(at(61), 10, &lease("worker-2", at(121)))
        .await
        .expect("claim after expiry");
    assert_eq!(ids(&after_expiry), vec![message.id]);
}

pub async fn a_message_inserted_with_a_lease_is_not_claimed_until_the_lease_expires<S: Stores>(
    store: &S,
) {
    let mut new = new_message(to_user("shop", "alice"), Vec::new(), at(0));
    new.lease = Some(lease("api", at(30)));
    let message = insert(store, &new).await;

    let early = store
        .claim_due(at(29), 10, &lease("worker", at(90)))
        .await
        .expect("claim");
    assert_eq!(ids(&early), Vec::<MessageId>::new());
    let late = store
        .claim_due(at(30), 10, &lease("worker", at(90)))
        .await
        .expect("claim");
    assert_eq!(ids(&late), vec![message.id]);
}

pub async fn two_concurrent_claimers_never_get_the_same_message<S: Stores>(store: &S) {
    let mut all = BTreeSet::new();
    for n in 0..40 {
        let message = insert(
            store,
            &new_message(to_user("shop", "alice"), Vec::new(), at(n)),
        )
        .await;
        all.insert(message.id);
    }
    let claimer = |name: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut mine = Vec::new();
            // 40 messages in batches of 3 run dry in at most 14 rounds; a store that hands
            // out leased messages again never would.
            for _ in 0..100 {
                let batch = store
                    .claim_due(at(100), 3, &lease(name, at(400)))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(ids(&batch));
                tokio::task::yield_now().await;
            }
            panic!("{name} kept claiming messages: leased messages were handed out again");
        })
    };

    let first = claimer("worker-1");
    let second = claimer("worker-2");
    let first = first.await.expect("first claimer");
    let second = second.await.expect("second claimer");

    let first_set: BTreeSet<MessageId> = first.iter().copied().collect();
    let second_set: BTreeSet<MessageId> = second.iter().copied().collect();
    assert_eq!(
        first_set.len(),
        first.len(),
        "no message twice to one claimer"
    );
    assert_eq!(
        second_set.len(),
        second.len(),
        "no message twice to one claimer"
    );
    assert!(
        first_set.is_disjoint(&second_set),
        "both claimed {:?}",
        first_set.intersection(&second_set).collect::<Vec<_>>()
    );
    let union: BTreeSet<MessageId> = first_set.union(&second_set).copied().collect();
    assert_eq!(union, all);
}

pub async fn recording_a_delivery_never_changes_an_accepted_delivery<S: Stores>(store: &S) {
    let device = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![device],
                },
            ),
            vec![(Channel::Apns, Some(device))],
            at(0),
        ),
    )
    .await;
    let mut delivery = message.deliveries[0].clone();
    delivery.record(
        &SendOutcome::Accepted {
            provider_id: Some("apns-id-1".to_owned()),
            details: Some(json!({"status": 200})),
        },
        at(1),
    );
    store
        .record_deliveries(std::slice::from_ref(&delivery))
        .await
        .expect("record");
    store
        .record_deliveries(std::slice::from_ref(&delivery))
        .await
        .expect("record the same again");

    let late_failure = after(
        &delivery,
        DeliveryState::Failed,
        2,
        Some("timeout".to_owned()),
        Some("late report".to_owned()),
        at(2),
    );
    store
        .record_deliveries(std::slice::from_ref(&late_failure))
        .await
        .expect("record late failure");

    let stored = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.deliveries, vec![delivery]);
}

/// A message of `shop` to three new APNs devices, with its three pending deliveries.
async fn message_to_three_devices<S: Stores>(store: &S) -> Message {
    let mut ids = Vec::new();
    for n in 1..=3 {
        ids.push(register(store, &new_device("shop", apns(n), None), at(0)).await);
    }
    insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: ids.clone(),
                },
            ),
            ids.iter().map(|id| (Channel::Apns, Some(*id))).collect(),
            at(0),
        ),
    )
    .await
}

pub async fn recording_a_batch_writes_every_delivery_but_the_final_ones<S: Stores>(store: &S) {
    let message = message_to_three_devices(store).await;
    let mut first = message.deliveries[0].clone();
    first.record(
        &SendOutcome::Accepted {
            provider_id: Some("apns-id-1".to_owned()),
            details: None,
        },
        at(1),
    );
    store
        .record_deliveries(std::slice::from_ref(&first))
        .await
        .expect("record the first");
    store.record_deliveries(&[]).await.expect("record nothing");

    // One batch: a late failure of the accepted delivery (ignored), a retry and a failure.
    let mut late = first.clone();
    late.record(
        &SendOutcome::Permanent {
            code: "BadDeviceToken".to_owned(),
            reason: "late".to_owned(),
            details: None,
        },
        at(2),
    );
    let mut retrying = message.deliveries[1].clone();
    retrying.record(
        &SendOutcome::Transient {
            code: "503".to_owned(),
            reason: "ServiceUnavailable".to_owned(),
            retry_after: None,
        },
        at(2),
    );
    let mut failed = message.deliveries[2].clone();
    failed.record(
        &SendOutcome::Permanent {
            code: "BadDeviceToken".to_owned(),
            reason: "the token is malformed".to_owned(),
            details: None,
        },
        at(2),
    );
    store
        .record_deliveries(&[late, retrying.clone(), failed.clone()])
        .await
        .expect("record the batch");

    let stored = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.deliveries, vec![first, retrying, failed]);
    assert_eq!(stored.deliveries[1].state(), DeliveryState::Retrying);
    assert_eq!(stored.deliveries[2].state(), DeliveryState::Failed);
}

pub async fn the_head_of_a_message_holds_its_first_deliveries<S: Stores>(store: &S) {
    let message = message_to_three_devices(store).await;

    let head = store
        .get_message_head(&app("shop"), message.id, 2)
        .await
        .expect("read")
        .expect("exists");
    let whole = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("read")
        .expect("exists");

    assert_eq!(head.deliveries, message.deliveries[..2].to_vec());
    assert_eq!(whole.deliveries, message.deliveries);
    assert_eq!(head.spec, whole.spec);
    assert!(
        store
            .get_message_head(&app("news"), message.id, 2)
            .await
            .expect("read")
            .is_none(),
        "another application's message is not found"
    );
}

pub async fn saving_progress_persists_the_state_machine_result_and_releases_the_lease<S: Stores>(
    store: &S,
) {
    let ok = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let flaky = register(store, &new_device("shop", fcm(2), None), at(0)).await;
    let target = Target::Devices {
        device_ids: vec![ok, flaky],
    };
    insert(
        store,
        &new_message(
            spec("shop", target),
            vec![(Channel::Apns, Some(ok)), (Channel::Fcm, Some(flaky))],
            at(0),
        ),
    )
    .await;
    let mut message = store
        .claim_due(at(1), 1, &lease("worker", at(3_601)))
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    assert!(message.deliveries.is_empty(), "a claim loads no deliveries");
    message.deliveries = store
        .due_deliveries(message.id, None, 10)
        .await
        .expect("due deliveries");
    let (first, second) = (message.deliveries[0].id, message.deliveries[1].id);
    message.record_outcome(
        first,
        &SendOutcome::Accepted {
            provider_id: Some("apns-id".to_owned()),
            details: None,
        },
        at(2),
    );
    message.record_outcome(
        second,
        &SendOutcome::Transient {
            code: "UNAVAILABLE".to_owned(),
            reason: "try later".to_owned(),
            retry_after: Some(Duration::from_secs(120)),
        },
        at(2),
    );
    message
        .finish_attempt(
            &RetryPolicy::default(),
            Some(Duration::from_secs(120)),
            at(2),
        )
        .expect("finish");
    message.extra_sender_data = Some(json!({"batch": "b-1"}));
    assert_eq!(message.state(), MessageState::ErrorRetry);
    let next = message.next_attempt_at().expect("a retry time");

    assert!(
        store
            .save_progress(&message, Some(&lease("worker", at(3_601))))
            .await
            .expect("save")
    );

    let stored = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.state(), MessageState::ErrorRetry);
    assert_eq!(stored.error(), message.error());
    assert_eq!(stored.number_of_send_attempts(), 1);
    assert_eq!(stored.progress().sent_at, None);
    assert_eq!(stored.progress().queued_at, at(0));
    let stored_next = stored.next_attempt_at().expect("stored retry time");
    assert!(
        (stored_next - next).abs() < time::Duration::milliseconds(1),
        "{stored_next} vs {next}"
    );
    assert_eq!(stored.extra_sender_data, Some(json!({"batch": "b-1"})));
    assert_eq!(stored.changed_at, at(2));
    assert_eq!(stored.deliveries, message.deliveries);
    assert_eq!(stored.deliveries[0].state(), DeliveryState::Accepted);
    assert_eq!(stored.deliveries[1].state(), DeliveryState::Retrying);

    // The lease (until 3 601 s) was released: the retry is claimed as soon as it is due.
    let not_yet = store
        .claim_due(
            next - time::Duration::seconds(1),
            10,
            &lease("w2", at(7_200)),
        )
        .await
        .expect("claim before due");
    assert_eq!(ids(&not_yet), Vec::<MessageId>::new());
    let due = store
        .claim_due(stored_next, 10, &lease("w2", at(7_200)))
        .await
        .expect("claim when due");
    assert_eq!(ids(&due), vec![message.id]);
}

pub async fn a_sent_message_keeps_its_accepted_and_failed_deliveries<S: Stores>(store: &S) {
    let ok = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let bad = register(store, &new_device("shop", fcm(2), None), at(0)).await;
    let mut message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![ok, bad],
                },
            ),
            vec![(Channel::Apns, Some(ok)), (Channel::Fcm, Some(bad))],
            at(0),
        ),
    )
    .await;
    let (first, second) = (message.deliveries[0].id, message.deliveries[1].id);
    message.record_outcome(
        first,
        &SendOutcome::Accepted {
            provider_id: Some("apns-id".to_owned()),
            details: Some(json!({"apns-unique-id": "u-1"})),
        },
        at(1),
    );
    message.record_outcome(
        second,
        &SendOutcome::Permanent {
            code: "INVALID_ARGUMENT".to_owned(),
            reason: "bad payload".to_owned(),
            details: Some(json!({"field": "data"})),
        },
        at(1),
    );
    message
        .finish_attempt(&RetryPolicy::default(), None, at(1))
        .expect("finish");
    assert_eq!(message.state(), MessageState::Sent);

    assert!(store.save_progress(&message, None).await.expect("save"));

    let stored = store
        .get_message(&app("shop"), message.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored, message);
    assert_eq!(stored.progress().sent_at, Some(at(1)));
    let none = store
        .claim_due(at(10), 10, &lease("w", at(70)))
        .await
        .expect("claim");
    assert_eq!(ids(&none), Vec::<MessageId>::new());
}

pub async fn the_template_message_is_the_newest_one_linked_to_every_related_object<S: Stores>(
    store: &S,
) {
    let from_template = |app_id: &str, template: &str, objects: Vec<RelatedObject>| {
        let mut message_spec = to_user(app_id, "alice");
        message_spec.template_slug = Some(slug(template));
        message_spec.related_objects = objects;
        new_message(message_spec, Vec::new(), at(0))
    };
    let (order, customer) = (related("order", "42"), related("customer", "7"));
    assert_eq!(
        store
            .find_template_message(&app("shop"), &slug("welcome"), &[])
            .await
            .expect("find"),
        None
    );
    let both = insert(
        store,
        &from_template("shop", "welcome", vec![order.clone(), customer.clone()]),
    )
    .await;
    let order_only = insert(
        store,
        &from_template("shop", "welcome", vec![order.clone()]),
    )
    .await;
    let _other_template = insert(
        store,
        &from_template("shop", "goodbye", vec![order.clone()]),
    )
    .await;
    let _other_app = insert(
        store,
        &from_template("news", "welcome", vec![order.clone(), customer.clone()]),
    )
    .await;
    let find = async |objects: &[RelatedObject]| {
        store
            .find_template_message(&app("shop"), &slug("welcome"), objects)
            .await
            .expect("find")
    };

    assert_eq!(find(&[]).await, Some(order_only.id));
    assert_eq!(
        find(std::slice::from_ref(&order)).await,
        Some(order_only.id)
    );
    assert_eq!(
        find(&[order.clone(), customer.clone()]).await,
        Some(both.id)
    );
    assert_eq!(find(std::slice::from_ref(&customer)).await, Some(both.id));
    assert_eq!(find(&[related("order", "43")]).await, None);
    assert_eq!(find(&[customer, related("order", "43")]).await, None);
}

pub async fn the_backlog_counts_waiting_and_due_retries<S: Stores>(store: &S) {
    assert_eq!(store.count_due(at(0)).await.expect("count"), 0);
    insert(
        store,
        &new_message(to_user("shop", "alice"), Vec::new(), at(0)),
    )
    .await;
    let mut leased = new_message(to_user("news", "bob"), Vec::new(), at(0));
    leased.lease = Some(lease("api", at(1_000)));
    insert(store, &leased).await;
    insert(
        store,
        &in_state("shop", MessageState::ErrorRetry, Some(at(10)), at(0)),
    )
    .await;
    insert(
        store,
        &in_state("shop", MessageState::ErrorRetry, Some(at(20)), at(0)),
    )
    .await;
    insert(store, &in_state("shop", MessageState::Sent, None, at(0))).await;

    // Leased messages are still part of the backlog: they are not sent yet.
    assert_eq!(store.count_due(at(9)).await.expect("count"), 2);
    assert_eq!(store.count_due(at(10)).await.expect("count"), 3);
    assert_eq!(store.count_due(at(20)).await.expect("count"), 4);
}

// ---------------------------------------------------------------------------------------------
// Templates.

fn template(app_id: &str, name: &str, body: &str) -> TemplateSpec {
    TemplateSpec {
        app: app(app_id),
        slug: slug(name),
        body: body.to_owned(),
        heading: Some("Hi {{ name }}".to_owned()),
        url: Some("https://example.com/{{ id }}".to_owned()),
        is_active: true,
        allow_duplicates: false,
    }
}

pub async fn templates_are_created_replaced_listed_and_deleted<S: Stores>(store: &S) {
    let first = template("shop", "welcome", "Welcome, {{ name }}!");
    let (created, how) = store.put_template(&first, at(0)).await.expect("put");
    assert_eq!(how, Registration::Created);
    assert_eq!(
        (
            created.app.clone(),
            created.slug.clone(),
            created.body.as_str()
        ),
        (app("shop"), slug("welcome"), "Welcome, {{ name }}!")
    );
    assert_eq!(created.heading, first.heading);
    assert_eq!(created.url, first.url);
    assert!(created.is_active && !created.allow_duplicates);
    assert_eq!((created.created_at, created.updated_at), (at(0), at(0)));

    let replacement = TemplateSpec {
        body: "Hello again".to_owned(),
        heading: None,
        url: None,
        is_active: false,
        allow_duplicates: true,
        ..first.clone()
    };
    let (replaced, how) = store
        .put_template(&replacement, at(5))
        .await
        .expect("replace");
    assert_eq!(how, Registration::Updated);
    assert_eq!(replaced.body, "Hello again");
    assert_eq!(
        (replaced.heading.clone(), replaced.url.clone()),
        (None, None)
    );
    assert!(!replaced.is_active && replaced.allow_duplicates);
    assert_eq!((replaced.created_at, replaced.updated_at), (at(0), at(5)));
    assert_eq!(
        store
            .get_template(&app("shop"), &slug("welcome"))
            .await
            .expect("get"),
        Some(replaced.clone())
    );

    store
        .put_template(&template("shop", "a-first", "A"), at(1))
        .await
        .expect("put");
    store
        .put_template(&template("news", "welcome", "N"), at(1))
        .await
        .expect("put");
    let slugs: Vec<Slug> = store
        .list_templates(&app("shop"))
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.slug)
        .collect();
    assert_eq!(slugs, vec![slug("a-first"), slug("welcome")]);
    assert_eq!(
        store
            .get_template(&app("other"), &slug("welcome"))
            .await
            .expect("get"),
        None
    );

    assert!(
        store
            .delete_template(&app("shop"), &slug("welcome"))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_template(&app("shop"), &slug("welcome"))
            .await
            .expect("delete again")
    );
    assert_eq!(
        store
            .get_template(&app("shop"), &slug("welcome"))
            .await
            .expect("get"),
        None
    );
    let news = store
        .get_template(&app("news"), &slug("welcome"))
        .await
        .expect("get");
    assert!(news.is_some(), "another application's template is kept");
}

pub async fn timestamps_round_trip_to_the_millisecond<S: Stores>(store: &S) {
    let precise = datetime!(2031-12-31 23:59:59.999 UTC);
    let (device, _) = store
        .register_device(&new_device("shop", apns(1), None), precise)
        .await
        .expect("register");
    assert_eq!((device.created_at, device.updated_at), (precise, precise));
    let message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![device.id],
                },
            ),
            vec![(Channel::Apns, Some(device.id))],
            precise,
        ),
    )
    .await;
    assert_eq!((message.created_at, message.changed_at), (precise, precise));
    assert_eq!(message.progress().queued_at, precise);
    assert_eq!(message.deliveries[0].updated_at(), precise);
    let (stored_template, _) = store
        .put_template(&template("shop", "t", "x"), precise)
        .await
        .expect("put");
    assert_eq!(stored_template.created_at, precise);

    // Finer times keep at least their milliseconds, and a store may keep more.
    let fine = datetime!(2031-01-01 00:00:00.123456789 UTC);
    let (device, _) = store
        .register_device(&new_device("shop", apns(2), None), fine)
        .await
        .expect("register");
    let error = device.created_at - fine;
    assert!(
        error.abs() < time::Duration::milliseconds(1),
        "{} vs {fine}",
        device.created_at
    );
    let before_epoch = datetime!(1969-07-20 20:17:40.5 UTC);
    store
        .deactivate_device(&app("shop"), device.id, "moon", before_epoch)
        .await
        .expect("deactivate");
    let stored = store
        .get_device(&app("shop"), device.id)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(stored.deactivated_at, Some(before_epoch));
}

pub async fn updating_a_device_changes_only_the_given_fields<S: Stores>(store: &S) {
    let id = register(store, &new_device("shop", apns(1), Some("alice")), at(0)).await;

    let renamed = store
        .update_device(
            &app("shop"),
            id,
            &DeviceUpdate {
                name: Some(Some("Work phone".into())),
                ..DeviceUpdate::default()
            },
            at(1),
        )
        .await
        .expect("update")
        .expect("exists");
    assert_eq!(renamed.name.as_deref(), Some("Work phone"));
    assert_eq!(renamed.user_id, Some(user("alice")));
    assert!(renamed.active);
    assert_eq!(renamed.updated_at, at(1));

    let off = store
        .update_device(
            &app("shop"),
            id,
            &DeviceUpdate {
                active: Some(false),
                reason: Some("lost".into()),
                user_id: Some(None),
                ..DeviceUpdate::default()
            },
            at(2),
        )
        .await
        .expect("update")
        .expect("exists");
    assert!(!off.active);
    assert_eq!(off.user_id, None);
    assert_eq!(off.deactivated_at, Some(at(2)));
    assert_eq!(off.deactivation_reason.as_deref(), Some("lost"));
    assert_eq!(off.name.as_deref(), Some("Work phone"));

    let on = store
        .update_device(
            &app("shop"),
            id,
            &DeviceUpdate {
                active: Some(true),
                ..DeviceUpdate::default()
            },
            at(3),
        )
        .await
        .expect("update")
        .expect("exists");
    assert!(on.active);
    assert_eq!(on.deactivated_at, None);
    assert_eq!(on.deactivation_reason, None);

    let other_app = store
        .update_device(&app("news"), id, &DeviceUpdate::default(), at(4))
        .await
        .expect("update");
    assert_eq!(other_app, None);
}

pub async fn api_keys_are_found_by_hash_listed_and_revoked_once<S: Stores>(store: &S) {
    let admin = store
        .insert_api_key(
            &NewApiKey {
                name: "ops".into(),
                scope: KeyScope::Admin,
                prefix: "clk_aaaa".into(),
                hash: KeyHash::of("secret-one"),
            },
            at(0),
        )
        .await
        .expect("insert admin");
    let shop = store
        .insert_api_key(
            &NewApiKey {
                name: "shop backend".into(),
                scope: KeyScope::App(app("shop")),
                prefix: "clk_bbbb".into(),
                hash: KeyHash::of("secret-two"),
            },
            at(1),
        )
        .await
        .expect("insert app key");
    let duplicate = store
        .insert_api_key(
            &NewApiKey {
                name: "again".into(),
                scope: KeyScope::Admin,
                prefix: "clk_aaaa".into(),
                hash: KeyHash::of("secret-one"),
            },
            at(2),
        )
        .await;
    assert!(matches!(
        duplicate,
        Err(clarion_domain::ports::StoreError::Conflict(_))
    ));

    let found = store
        .find_api_key(&KeyHash::of("secret-two"))
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.id, shop.id);
    assert_eq!(found.scope, KeyScope::App(app("shop")));
    assert_eq!(found.hash, Some(KeyHash::of("secret-two")));
    assert_eq!(found.created_at, at(1));
    assert_eq!(
        store
            .find_api_key(&KeyHash::of("nope"))
            .await
            .expect("find"),
        None
    );

    let revoked = store
        .revoke_api_key(admin.id, at(5))
        .await
        .expect("revoke")
        .expect("exists");
    assert_eq!(revoked.revoked_at, Some(at(5)));
    let again = store
        .revoke_api_key(admin.id, at(9))
        .await
        .expect("revoke again")
        .expect("exists");
    assert_eq!(again.revoked_at, Some(at(5)));
    assert_eq!(
        store
            .revoke_api_key(ApiKeyId(999), at(9))
            .await
            .expect("revoke"),
        None
    );

    let listed: Vec<_> = store
        .list_api_keys()
        .await
        .expect("list")
        .into_iter()
        .map(|k| (k.id, k.revoked_at.is_some()))
        .collect();
    assert_eq!(listed, vec![(admin.id, true), (shop.id, false)]);
}

// ---------------------------------------------------------------------------------------------
// Lease ownership and paged deliveries.

/// A message to `n` fresh APNs devices of `shop`, inserted at `at(0)`.
async fn message_to_devices<S: Stores>(store: &S, n: u8) -> Message {
    let mut devices = Vec::new();
    for i in 0..n {
        devices.push(register(store, &new_device("shop", apns(i + 1), None), at(0)).await);
    }
    let deliveries = devices.iter().map(|d| (Channel::Apns, Some(*d))).collect();
    insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: devices,
                },
            ),
            deliveries,
            at(0),
        ),
    )
    .await
}

async fn stored_message<S: Stores>(store: &S, id: MessageId) -> Message {
    store
        .get_message(&app("shop"), id)
        .await
        .expect("get")
        .expect("exists")
}

pub async fn a_worker_saves_only_while_it_holds_the_lease<S: Stores>(store: &S) {
    let inserted = message_to_devices(store, 1).await;
    let first = lease("worker-1", at(10));
    let mut stale = store
        .claim_due(at(1), 1, &first)
        .await
        .expect("claim")
        .pop()
        .expect("claimed");
    // worker-1's lease expires and worker-2 takes the message over.
    let second = lease("worker-2", at(71));
    let taken = store.claim_due(at(11), 1, &second).await.expect("claim");
    assert_eq!(ids(&taken), vec![inserted.id]);

    stale.deliveries = store
        .due_deliveries(inserted.id, None, 10)
        .await
        .expect("due");
    stale.record_outcome(
        stale.deliveries[0].id,
        &SendOutcome::Permanent {
            code: "BadTopic".to_owned(),
            reason: "stale".to_owned(),
            details: None,
        },
        at(12),
    );
    stale
        .finish_attempt(&RetryPolicy::default(), None, at(12))
        .expect("finish");
    let saved = store
        .save_progress(&stale, Some(&first))
        .await
        .expect("save");

    assert!(!saved, "a lost lease must refuse the save");
    let stored = stored_message(store, inserted.id).await;
    assert_eq!(stored.state(), MessageState::Waiting);
    assert_eq!(stored.deliveries[0].state(), DeliveryState::Pending);
    // The new owner still holds it: nobody else can claim it, and its own save goes through.
    let none = store
        .claim_due(at(20), 10, &lease("worker-3", at(80)))
        .await
        .expect("claim");
    assert_eq!(ids(&none), Vec::<MessageId>::new());
    let mut fresh = stored;
    fresh.record_outcome(
        fresh.deliveries[0].id,
        &SendOutcome::Accepted {
            provider_id: None,
            details: None,
        },
        at(21),
    );
    fresh
        .finish_attempt(&RetryPolicy::default(), None, at(21))
        .expect("finish");
    assert!(
        store
            .save_progress(&fresh, Some(&second))
            .await
            .expect("save")
    );
    assert_eq!(
        stored_message(store, inserted.id).await.state(),
        MessageState::Sent
    );
}

/// A message of `shop` numbered `i`, to `devices`, with a related object named after it.
fn numbered_message(i: usize, devices: &[DeviceId]) -> NewMessage {
    let mut spec = spec(
        "shop",
        Target::Devices {
            device_ids: devices.to_vec(),
        },
    );
    spec.content.body = format!("message {i}");
    spec.related_objects = vec![RelatedObject::new("order", &format!("o-{i}")).expect("valid")];
    let deliveries = devices.iter().map(|d| (Channel::Apns, Some(*d))).collect();
    new_message(spec, deliveries, at(0))
}

pub async fn messages_sent_at_once_are_each_stored_with_their_own_id_and_deliveries<S: Stores>(
    store: &S,
) {
    let mut devices = Vec::new();
    for n in 1..=4 {
        devices.push(register(store, &new_device("shop", apns(n), None), at(0)).await);
    }

    let tasks: Vec<_> = (0..200_usize)
        .map(|i| {
            let store = store.clone();
            // One, two or three deliveries, to devices that differ from one message to the next.
            let targets: Vec<DeviceId> = (0..=i % 3).map(|k| devices[(i + k) % 4]).collect();
            let message = numbered_message(i, &targets);
            tokio::spawn(async move { (i, targets, store.insert_message(&message).await) })
        })
        .collect();
    let mut inserted = Vec::new();
    for task in tasks {
        let (i, targets, outcome) = task.await.expect("task");
        inserted.push((i, targets, outcome.expect("insert")));
    }

    let message_ids: BTreeSet<MessageId> = inserted.iter().map(|(_, _, m)| m.id).collect();
    assert_eq!(message_ids.len(), 200, "every message has an id of its own");
    let delivery_ids: BTreeSet<_> = inserted
        .iter()
        .flat_map(|(_, _, m)| m.deliveries.iter().map(|d| d.id))
        .collect();
    let listed: usize = inserted.iter().map(|(_, targets, _)| targets.len()).sum();
    assert_eq!(
        delivery_ids.len(),
        listed,
        "every delivery has an id of its own"
    );
    for (i, targets, message) in &inserted {
        assert_eq!(message.spec.content.body, format!("message {i}"));
        let delivered: Vec<Option<DeviceId>> =
            message.deliveries.iter().map(|d| d.device_id).collect();
        let expected: Vec<Option<DeviceId>> = targets.iter().copied().map(Some).collect();
        assert_eq!(delivered, expected, "message {i}");
        assert!(
            message
                .deliveries
                .iter()
                .all(|d| d.message_id == message.id)
        );
        assert!(
            message.deliveries.windows(2).all(|w| w[0].id < w[1].id),
            "message {i}'s deliveries are in id order"
        );
        // What the send got back is what the store keeps.
        assert_eq!(
            &stored_message(store, message.id).await,
            message,
            "message {i}"
        );
    }
}

pub async fn a_message_that_cannot_be_stored_fails_alone_among_messages_sent_at_once<S: Stores>(
    store: &S,
) {
    let device = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let missing = DeviceId(i64::MAX - 7);

    let tasks: Vec<_> = (0..20_usize)
        .map(|i| {
            let store = store.clone();
            let target = if i == 13 { missing } else { device };
            let message = numbered_message(i, &[target]);
            tokio::spawn(async move { (i, store.insert_message(&message).await) })
        })
        .collect();
    let mut stored = BTreeMap::new();
    for task in tasks {
        let (i, outcome) = task.await.expect("task");
        match (i, outcome) {
            (13, outcome) => assert!(outcome.is_err(), "a delivery to no device is refused"),
            (i, outcome) => {
                stored.insert(i, outcome.expect("the other messages are stored").id);
            }
        }
    }

    assert_eq!(stored.len(), 19);
    let all = store
        .list_messages(&MessageFilter {
            app: Some(app("shop")),
            ..MessageFilter::default()
        })
        .await
        .expect("list");
    let bodies: BTreeSet<String> = all.iter().map(|m| m.spec.content.body.clone()).collect();
    assert_eq!(all.len(), 19, "nothing of the refused message is stored");
    assert!(!bodies.contains("message 13"));
    for (i, id) in stored {
        let message = stored_message(store, id).await;
        assert_eq!(message.spec.content.body, format!("message {i}"));
        assert_eq!(message.deliveries.len(), 1);
    }
}

pub async fn a_lost_lease_refuses_only_its_own_save_among_saves_made_at_once<S: Stores>(store: &S) {
    let device = register(store, &new_device("shop", apns(1), None), at(0)).await;
    for i in 0..10 {
        insert(store, &numbered_message(i, &[device])).await;
    }
    let first = lease("worker-1", at(10));
    let claimed = store.claim_due(at(1), 10, &first).await.expect("claim");
    assert_eq!(claimed.len(), 10);
    // worker-1's leases expire and worker-2 takes over the oldest message only.
    let second = lease("worker-2", at(71));
    let taken = store.claim_due(at(11), 1, &second).await.expect("claim");
    assert_eq!(ids(&taken), vec![claimed[0].id]);

    let tasks: Vec<_> = claimed
        .into_iter()
        .map(|mut message| {
            let store = store.clone();
            let first = first.clone();
            tokio::spawn(async move {
                message.deliveries = store
                    .due_deliveries(message.id, None, 10)
                    .await
                    .expect("due");
                let delivery = message.deliveries[0].id;
                message.record_outcome(
                    delivery,
                    &SendOutcome::Accepted {
                        provider_id: None,
                        details: None,
                    },
                    at(12),
                );
                message
                    .finish_attempt(&RetryPolicy::default(), None, at(12))
                    .expect("finish");
                let saved = store.save_progress(&message, Some(&first)).await;
                (message.id, saved.expect("save"))
            })
        })
        .collect();
    let mut refused = Vec::new();
    for task in tasks {
        let (id, saved) = task.await.expect("task");
        if saved {
            assert_eq!(stored_message(store, id).await.state(), MessageState::Sent);
        } else {
            refused.push(id);
        }
    }

    assert_eq!(
        refused,
        ids(&taken),
        "only the message taken over refuses the save"
    );
    let kept = stored_message(store, taken[0].id).await;
    assert_eq!(kept.state(), MessageState::Waiting);
    assert_eq!(kept.deliveries[0].state(), DeliveryState::Pending);
}

pub async fn renewing_extends_only_the_leases_still_held<S: Stores>(store: &S) {
    let kept = message_to_devices(store, 1).await.id;
    let lost = insert(store, &in_state("shop", MessageState::Waiting, None, at(0)))
        .await
        .id;
    let claimed = store
        .claim_due(at(1), 10, &lease("worker-1", at(10)))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), vec![kept, lost]);
    // worker-1 renews `kept` in time but `lost` is taken over first.
    let renewed = store
        .renew_lease(&[kept], &lease("worker-1", at(100)))
        .await
        .expect("renew");
    assert_eq!(renewed, vec![kept]);
    let taken = store
        .claim_due(at(11), 10, &lease("worker-2", at(200)))
        .await
        .expect("claim");
    assert_eq!(ids(&taken), vec![lost]);

    let renewed = store
        .renew_lease(&[kept, lost], &lease("worker-1", at(150)))
        .await
        .expect("renew");

    assert_eq!(renewed, vec![kept]);
    let none = store
        .claim_due(at(120), 10, &lease("worker-3", at(180)))
        .await
        .expect("claim");
    assert_eq!(ids(&none), Vec::<MessageId>::new(), "kept runs to 150 s");
    let after = store
        .claim_due(at(150), 10, &lease("worker-3", at(210)))
        .await
        .expect("claim");
    assert_eq!(ids(&after), vec![kept]);
}

pub async fn releasing_a_workers_leases_lets_others_claim_at_once<S: Stores>(store: &S) {
    let a = insert(store, &in_state("shop", MessageState::Waiting, None, at(0)))
        .await
        .id;
    let b = insert(store, &in_state("shop", MessageState::Waiting, None, at(0)))
        .await
        .id;
    let other = insert(store, &in_state("shop", MessageState::Waiting, None, at(0)))
        .await
        .id;
    store
        .claim_due(at(1), 2, &lease("worker-1", at(600)))
        .await
        .expect("claim");
    store
        .claim_due(at(1), 2, &lease("worker-2", at(600)))
        .await
        .expect("claim");

    let released = store.release_leases("worker-1").await.expect("release");

    assert_eq!(released, 2);
    let claimed = store
        .claim_due(at(2), 10, &lease("worker-3", at(600)))
        .await
        .expect("claim");
    assert_eq!(ids(&claimed), vec![a, b], "{other} stays with worker-2");
    assert_eq!(store.release_leases("worker-1").await.expect("again"), 0);
}

pub async fn an_operator_save_is_refused_while_a_worker_holds_a_running_lease<S: Stores>(
    store: &S,
) {
    let inserted = message_to_devices(store, 1).await;
    store
        .claim_due(at(1), 1, &lease("worker", at(100)))
        .await
        .expect("claim");
    let mut cancelled = stored_message(store, inserted.id).await;
    cancelled.cancel(at(50)).expect("cancel a waiting message");

    let refused = store.save_progress(&cancelled, None).await.expect("save");

    assert!(!refused);
    let stored = stored_message(store, inserted.id).await;
    assert_eq!(stored.state(), MessageState::Waiting);
    assert_eq!(stored.deliveries[0].state(), DeliveryState::Pending);
    // Once the worker's lease has run out, the operator wins.
    let mut late = stored;
    late.cancel(at(100)).expect("cancel");
    assert!(store.save_progress(&late, None).await.expect("save"));
    assert_eq!(
        stored_message(store, inserted.id).await.state(),
        MessageState::Error
    );
}

pub async fn due_deliveries_come_in_id_order_pages_without_finished_ones<S: Stores>(store: &S) {
    let message = message_to_devices(store, 5).await;
    let all: Vec<_> = message.deliveries.iter().map(|d| d.id).collect();
    let mut accepted = message.deliveries[1].clone();
    accepted.record(
        &SendOutcome::Accepted {
            provider_id: None,
            details: None,
        },
        at(1),
    );
    store
        .record_deliveries(std::slice::from_ref(&accepted))
        .await
        .expect("record");
    let mut retrying = message.deliveries[3].clone();
    retrying.record(
        &SendOutcome::Transient {
            code: "UNAVAILABLE".to_owned(),
            reason: "later".to_owned(),
            retry_after: None,
        },
        at(1),
    );
    store
        .record_deliveries(std::slice::from_ref(&retrying))
        .await
        .expect("record");

    let first = store
        .due_deliveries(message.id, None, 2)
        .await
        .expect("page");
    let second = store
        .due_deliveries(message.id, first.last().map(|d| d.id), 2)
        .await
        .expect("page");
    let third = store
        .due_deliveries(message.id, second.last().map(|d| d.id), 2)
        .await
        .expect("page");

    let page_ids = |page: &[clarion_domain::message::Delivery]| -> Vec<_> {
        page.iter().map(|d| d.id).collect()
    };
    assert_eq!(page_ids(&first), vec![all[0], all[2]]);
    assert_eq!(page_ids(&second), vec![all[3], all[4]]);
    assert_eq!(second[0].state(), DeliveryState::Retrying);
    assert!(third.is_empty());
}

pub async fn a_page_of_due_deliveries_comes_with_what_sending_needs_of_each_device<S: Stores>(
    store: &S,
) {
    // Arrange: deliveries to an active device, a Web Push subscription, a device deactivated
    // and one deleted after the message was stored, a device of another application, one that
    // was already accepted, and a OneSignal user.
    let active = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let subscription = register(
        store,
        &new_device("shop", webpush(2, P256DH, AUTH), None),
        at(0),
    )
    .await;
    let deactivated = register(store, &new_device("shop", apns(3), None), at(0)).await;
    let deleted = register(store, &new_device("shop", fcm(4), None), at(0)).await;
    let foreign = register(store, &new_device("news", apns(5), None), at(0)).await;
    let accepted = register(store, &new_device("shop", apns(6), None), at(0)).await;
    let message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![active, subscription, deactivated, deleted, accepted],
                },
            ),
            vec![
                (Channel::Apns, Some(active)),
                (Channel::Webpush, Some(subscription)),
                (Channel::Apns, Some(deactivated)),
                (Channel::Fcm, Some(deleted)),
                (Channel::Apns, Some(foreign)),
                (Channel::Apns, Some(accepted)),
                (Channel::Onesignal, None),
            ],
            at(1),
        ),
    )
    .await;
    assert!(
        store
            .deactivate_device(&app("shop"), deactivated, "dead token: Unregistered", at(2))
            .await
            .expect("deactivate")
    );
    assert!(
        store
            .delete_device(&app("shop"), deleted)
            .await
            .expect("delete")
    );
    let mut done = message.deliveries[5].clone();
    done.record(
        &SendOutcome::Accepted {
            provider_id: Some("apns-1".to_owned()),
            details: None,
        },
        at(3),
    );
    store
        .record_deliveries(std::slice::from_ref(&done))
        .await
        .expect("record");

    // Act: two pages of four.
    let first = store
        .due_page(&app("shop"), message.id, None, 4)
        .await
        .expect("page")
        .expect("the store reads a page with its devices");
    let after = first.last().map(|(delivery, _)| delivery.id);
    let second = store
        .due_page(&app("shop"), message.id, after, 4)
        .await
        .expect("page")
        .expect("the store reads a page with its devices");

    // Assert: the deliveries are those `due_deliveries` reads, in id order.
    let due = store
        .due_deliveries(message.id, None, 10)
        .await
        .expect("due deliveries");
    let paged: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|(d, _)| d.clone())
        .collect();
    assert_eq!(paged, due);
    let ids: Vec<_> = paged.iter().map(|d| d.id).collect();
    let expected: Vec<_> = [0, 1, 2, 3, 4, 6]
        .iter()
        .map(|&i| message.deliveries[i].id)
        .collect();
    assert_eq!(ids, expected);
    let devices: Vec<_> = first
        .iter()
        .chain(&second)
        .map(|(_, r)| r.clone())
        .collect();
    let recipient = |id: DeviceId, token: DeviceToken, active: bool, reason: Option<&str>| {
        Some(Recipient {
            id,
            token,
            active,
            deactivation_reason: reason.map(str::to_owned),
        })
    };
    assert_eq!(
        devices,
        vec![
            recipient(active, apns(1), true, None),
            recipient(subscription, webpush(2, P256DH, AUTH), true, None),
            recipient(
                deactivated,
                apns(3),
                false,
                Some("dead token: Unregistered")
            ),
            // Deleted: the delivery kept, without its device.
            None,
            // Of another application: not this message's to send to.
            None,
            // OneSignal: no device.
            None,
        ]
    );
    assert_eq!(paged[3].device_id, None);
    assert_eq!(paged[4].device_id, Some(foreign));
    let past_the_end = store
        .due_page(
            &app("shop"),
            message.id,
            second.last().map(|(d, _)| d.id),
            4,
        )
        .await
        .expect("page")
        .expect("the store reads a page with its devices");
    assert!(past_the_end.is_empty());
}

pub async fn a_broadcast_creates_one_delivery_per_active_device_without_loading_them<S: Stores>(
    store: &S,
) {
    let mut apns_ids = Vec::new();
    for i in 1..=3 {
        apns_ids.push(register(store, &new_device("shop", apns(i), None), at(0)).await);
    }
    for i in 1..=2 {
        register(store, &new_device("shop", fcm(i), None), at(0)).await;
    }
    let gone = register(store, &new_device("shop", apns(9), None), at(0)).await;
    store
        .deactivate_device(&app("shop"), gone, "test", at(0))
        .await
        .expect("deactivate");
    register(store, &new_device("other", apns(1), None), at(0)).await;
    let mut to_apns = new_message(
        spec(
            "shop",
            Target::Broadcast {
                platform: Some(Platform::Apns),
            },
        ),
        Vec::new(),
        at(0),
    );
    to_apns.deliveries = NewDeliveries::Broadcast {
        platform: Some(Platform::Apns),
        channel: None,
    };
    let mut to_all = new_message(
        spec("shop", Target::Broadcast { platform: None }),
        Vec::new(),
        at(0),
    );
    to_all.deliveries = NewDeliveries::Broadcast {
        platform: None,
        channel: Some(Channel::Debug),
    };

    let apns_message = insert(store, &to_apns).await;
    let all_message = insert(store, &to_all).await;

    assert!(apns_message.deliveries.is_empty(), "not loaded");
    let apns_deliveries = stored_message(store, apns_message.id).await.deliveries;
    assert_eq!(
        apns_deliveries
            .iter()
            .map(|d| (d.channel, d.device_id))
            .collect::<Vec<_>>(),
        apns_ids
            .iter()
            .map(|id| (Channel::Apns, Some(*id)))
            .collect::<Vec<_>>()
    );
    let tally = store.delivery_tally(all_message.id).await.expect("tally");
    assert_eq!((tally.total, tally.due), (5, 5));
    let all_deliveries = stored_message(store, all_message.id).await.deliveries;
    assert!(all_deliveries.iter().all(|d| d.channel == Channel::Debug
        && d.state() == DeliveryState::Pending
        && d.device_id != Some(gone)));
}

pub async fn the_tally_counts_deliveries_and_giving_up_needs_the_lease<S: Stores>(store: &S) {
    let message = message_to_devices(store, 3).await;
    let held = lease("worker-1", at(60));
    store.claim_due(at(1), 1, &held).await.expect("claim");
    let mut accepted = message.deliveries[0].clone();
    accepted.record(
        &SendOutcome::Accepted {
            provider_id: None,
            details: None,
        },
        at(2),
    );
    store
        .record_deliveries(std::slice::from_ref(&accepted))
        .await
        .expect("record");
    let mut retrying = message.deliveries[1].clone();
    retrying.record(
        &SendOutcome::Transient {
            code: "UNAVAILABLE".to_owned(),
            reason: "later".to_owned(),
            retry_after: None,
        },
        at(2),
    );
    store
        .record_deliveries(std::slice::from_ref(&retrying))
        .await
        .expect("record");

    let tally = store.delivery_tally(message.id).await.expect("tally");

    assert_eq!(
        (
            tally.total,
            tally.accepted,
            tally.due,
            tally.failed,
            tally.errors
        ),
        (3, 1, 2, 0, 1)
    );
    assert_eq!(
        tally.first_error,
        Some(("UNAVAILABLE".to_owned(), Some("later".to_owned())))
    );
    let give_up = GiveUp {
        code: "retries_exhausted".to_owned(),
        reason: "gave up after 4 attempts".to_owned(),
    };
    let refused = store
        .give_up_due_deliveries(message.id, &lease("worker-2", at(60)), &give_up, at(3))
        .await
        .expect("give up");
    assert!(!refused, "worker-2 holds no lease");
    assert_eq!(
        store.delivery_tally(message.id).await.expect("tally"),
        tally
    );

    assert!(
        store
            .give_up_due_deliveries(message.id, &held, &give_up, at(3))
            .await
            .expect("give up")
    );

    let after = store.delivery_tally(message.id).await.expect("tally");
    assert_eq!(
        (after.accepted, after.due, after.failed, after.errors),
        (1, 0, 2, 2)
    );
    let stored = stored_message(store, message.id).await;
    assert_eq!(
        stored.deliveries[1].error_text(),
        Some("gave up after 4 attempts (last error: later)")
    );
    assert_eq!(
        stored.deliveries[2].error_text(),
        Some("gave up after 4 attempts")
    );
    assert_eq!(stored.deliveries[2].error_code(), Some("retries_exhausted"));
    assert_eq!(stored.deliveries[0].state(), DeliveryState::Accepted);
}

// ---------------------------------------------------------------------------------------------
// Search and reports (the admin UI).

pub async fn devices_are_found_by_the_start_of_their_token<S: Stores>(store: &S) {
    let one = register(store, &new_device("shop", apns(0x1a), None), at(0)).await;
    let _two = register(store, &new_device("shop", apns(0x2b), None), at(0)).await;
    let web = register(
        store,
        &new_device("shop", webpush(7, P256DH, AUTH), None),
        at(0),
    )
    .await;
    let _elsewhere = register(store, &new_device("news", apns(0x1a), None), at(0)).await;
    let search = async |prefix: &str| {
        let filter = DeviceFilter {
            token_prefix: Some(prefix.to_owned()),
            ..DeviceFilter::default()
        };
        device_ids(
            &store
                .list_devices(&app("shop"), &filter)
                .await
                .expect("list"),
        )
    };

    assert_eq!(search("1a1a").await, vec![one]);
    assert_eq!(search("https://push.example.com:8443/").await, vec![web]);
    // LIKE's wildcards are plain characters here.
    assert_eq!(search("%").await, Vec::<DeviceId>::new());
    assert_eq!(search("_a").await, Vec::<DeviceId>::new());
}

pub async fn reports_count_devices_by_platform_and_activity_of_one_app<S: Stores>(store: &S) {
    register(store, &new_device("shop", apns(1), None), at(0)).await;
    let gone = register(store, &new_device("shop", apns(2), None), at(0)).await;
    register(store, &new_device("shop", apns(3), None), at(0)).await;
    register(store, &new_device("shop", fcm(1), None), at(0)).await;
    register(store, &new_device("news", fcm(2), None), at(0)).await;
    store
        .deactivate_device(&app("shop"), gone, "test", at(1))
        .await
        .expect("deactivate");

    let counts = store.count_devices(&app("shop")).await.expect("count");

    let row = |platform, active, count| DeviceCount {
        platform,
        active,
        count,
    };
    assert_eq!(
        counts,
        vec![
            row(Platform::Apns, false, 1),
            row(Platform::Apns, true, 2),
            row(Platform::Fcm, true, 1),
        ]
    );
    assert_eq!(
        store.count_devices(&app("empty")).await.expect("count"),
        vec![]
    );
}

pub async fn reports_count_recent_messages_by_state_and_the_apps_backlog<S: Stores>(store: &S) {
    insert(store, &in_state("shop", MessageState::Sent, None, at(0))).await;
    insert(store, &in_state("shop", MessageState::Sent, None, at(100))).await;
    insert(
        store,
        &in_state("shop", MessageState::Waiting, None, at(100)),
    )
    .await;
    insert(
        store,
        &in_state("shop", MessageState::ErrorRetry, Some(at(500)), at(100)),
    )
    .await;
    insert(
        store,
        &in_state("news", MessageState::Waiting, None, at(100)),
    )
    .await;

    let counts = store
        .count_messages_by_state(&app("shop"), at(50))
        .await
        .expect("count");

    let mut counts: Vec<(MessageState, u64)> = counts
        .iter()
        .map(|c: &StateCount| (c.state, c.count))
        .collect();
    counts.sort_by_key(|(state, _)| state.as_str());
    assert_eq!(
        counts,
        vec![
            (MessageState::ErrorRetry, 1),
            (MessageState::Sent, 1),
            (MessageState::Waiting, 1),
        ]
    );
    assert_eq!(
        store.count_due_in_app(&app("shop"), at(200)).await.unwrap(),
        1
    );
    assert_eq!(
        store.count_due_in_app(&app("shop"), at(600)).await.unwrap(),
        2
    );
    assert_eq!(
        store.count_due_in_app(&app("news"), at(600)).await.unwrap(),
        1
    );
}

pub async fn reports_group_recent_errors_by_reason_latest_first<S: Stores>(store: &S) {
    let phone = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let failed = async |code: &str, text: &str, t: i64| {
        let message = insert(
            store,
            &new_message(
                spec(
                    "shop",
                    Target::Devices {
                        device_ids: vec![phone],
                    },
                ),
                vec![(Channel::Apns, Some(phone))],
                at(t),
            ),
        )
        .await;
        let delivery = after(
            &message.deliveries[0],
            DeliveryState::Failed,
            1,
            Some(code.to_owned()),
            Some(text.to_owned()),
            at(t),
        );
        store
            .record_deliveries(std::slice::from_ref(&delivery))
            .await
            .expect("record");
    };
    failed("BadTopic", "old", 0).await;
    failed("BadTopic", "topic is wrong", 100).await;
    failed("BadTopic", "topic is wrong", 110).await;
    failed("TooManyRequests", "slow down", 120).await;
    let mut undeliverable = in_state("shop", MessageState::Error, None, at(130));
    undeliverable.progress.error = Some("recipient alice has no active device".to_owned());
    let undeliverable = insert(store, &undeliverable).await;
    let mut news = in_state("news", MessageState::Error, None, at(130));
    news.progress.error = Some("not ours".to_owned());
    insert(store, &news).await;

    let reasons = store
        .error_reasons(&app("shop"), at(50), 10)
        .await
        .expect("reasons");

    let seen: Vec<(ErrorSource, &str, u64)> = reasons
        .iter()
        .map(|r| (r.source, r.reason.as_str(), r.count))
        .collect();
    assert_eq!(
        seen,
        vec![
            (
                ErrorSource::Message,
                "recipient alice has no active device",
                1
            ),
            (ErrorSource::Delivery, "TooManyRequests", 1),
            (ErrorSource::Delivery, "BadTopic", 2),
        ]
    );
    assert_eq!(reasons[0].last_at, undeliverable.created_at);
    assert_eq!(reasons[2].last_at, at(110));
    assert_eq!(reasons[2].example.as_deref(), Some("topic is wrong"));
    let first = store
        .error_reasons(&app("shop"), at(50), 1)
        .await
        .expect("reasons");
    assert_eq!(first.len(), 1);
}

pub async fn prune_counts_match_what_a_prune_then_does<S: Stores>(store: &S) {
    let dead = register(store, &new_device("shop", apns(1), None), at(0)).await;
    let old = register(store, &new_device("shop", apns(2), None), at(0)).await;
    let recent = register(store, &new_device("shop", apns(3), None), at(0)).await;
    register(store, &new_device("shop", apns(4), None), at(0)).await;
    let message = insert(
        store,
        &new_message(
            spec(
                "shop",
                Target::Devices {
                    device_ids: vec![dead],
                },
            ),
            vec![(Channel::Apns, Some(dead))],
            at(10),
        ),
    )
    .await;
    let delivery = after(
        &message.deliveries[0],
        DeliveryState::DeadToken,
        1,
        Some("Unregistered".to_owned()),
        None,
        at(10),
    );
    store
        .record_deliveries(std::slice::from_ref(&delivery))
        .await
        .expect("record");
    for (device, t) in [(old, 20), (recent, 200)] {
        store
            .deactivate_device(&app("shop"), device, "test", at(t))
            .await
            .expect("deactivate");
    }

    let would_deactivate = store.count_dead_devices(&app("shop")).await.expect("count");
    let would_delete = store
        .count_inactive_devices(&app("shop"), at(100))
        .await
        .expect("count");

    assert_eq!((would_deactivate, would_delete), (1, 1));
    assert_eq!(
        store.count_dead_devices(&app("news")).await.expect("count"),
        0
    );
    assert_eq!(
        store
            .deactivate_dead_devices(&app("shop"), at(300))
            .await
            .expect("prune"),
        would_deactivate
    );
    assert_eq!(
        store
            .delete_inactive_devices(&app("shop"), at(100))
            .await
            .expect("delete"),
        would_delete
    );
}
