//! Ports: the traits the domain needs from the outside world. The adapters crate implements
//! them; tests use the mockall mocks (`Mock*`, with the `mocks` feature or in this crate's
//! tests).
//!
//! Every port is held as `Arc<dyn Port>` and uses `async-trait`.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::app::SenderKind;
use crate::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
use crate::device::{
    BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Recipient, Registration,
};
use crate::ids::{AppId, DeliveryId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use crate::message::SendOutcome;
use crate::message::{
    Channel, Delivery, DeliveryTally, GiveUp, Message, MessageSpec, MessageState, Progress,
};
use crate::payload::Payload;
use crate::template::{Template, TemplateSpec};
use crate::token::Platform;

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The write would break a uniqueness rule; the text names it.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A stored row could not be read back into the domain (corrupt or foreign data); the text
    /// names the table, the row and the field.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The database cannot be reached or cannot write now: its disk is full, its file is
    /// read-only or damaged, it is locked by another process for too long, or its server is
    /// down. Nothing was written; the same call may succeed later, without a restart. The
    /// text says why in words that name no secret.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Any other failure, with its cause: an internal error to the caller.
    #[error(transparent)]
    Unknown(#[from] anyhow::Error),
}

/// A claim on a message held by one worker until `until`. A lease is held until its owner
/// releases it or another worker claims the message after `until`: an owner whose lease expired
/// but was not taken over may still save.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The id of the worker that holds it
    /// ([`ServiceSettings::worker_id`](crate::service::ServiceSettings::worker_id)), unique per
    /// process.
    pub owner: String,
    /// When the lease expires and another worker may take the message over.
    pub until: OffsetDateTime,
}

/// A message to store: its spec, sender and first progress, and the deliveries to create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// What the caller decided about the message.
    pub spec: MessageSpec,
    /// The sender its application has now.
    pub sender: SenderKind,
    /// Its first progress: WAITING, no attempt made ([`Message::initial_progress`]).
    pub progress: Progress,
    /// The deliveries to create.
    pub deliveries: NewDeliveries,
    /// Held by the creating process when it sends the message at once, so that no batch
    /// worker takes it meanwhile.
    pub lease: Option<Lease>,
    /// The time it is stored at: its `created_at` and `changed_at`.
    pub now: OffsetDateTime,
}

/// The deliveries of a new message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewDeliveries {
    /// One delivery per targeted device (`Some`) or per OneSignal user (`None`).
    Listed(Vec<(Channel, Option<DeviceId>)>),
    /// One delivery per active device of the message's application (of `platform` when set),
    /// created by the store in the message's transaction without loading the devices, so that
    /// a broadcast to any number of devices takes constant memory. The channel is the device's
    /// platform, or `channel` when set (the debug sender).
    Broadcast {
        /// Only the devices on this platform; every platform when `None`.
        platform: Option<Platform>,
        /// The channel of every delivery instead of the device's platform (the debug sender's).
        channel: Option<Channel>,
    },
}

/// Filters for listing messages. Results are newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageFilter {
    /// Only messages of this application.
    pub app: Option<AppId>,
    /// Only messages in this state.
    pub state: Option<MessageState>,
    /// Only messages with this tag.
    pub tag: Option<Tag>,
    /// Only messages to this user ([`Target::User`](crate::message::Target::User)).
    pub recipient: Option<UserId>,
    /// Only messages linked to this related object.
    pub related: Option<RelatedObject>,
    /// Only messages created at or after this time (inclusive).
    pub created_after: Option<OffsetDateTime>,
    /// Only messages created before this time (exclusive).
    pub created_before: Option<OffsetDateTime>,
    /// Only messages with an id lower than this (cursor pagination, newest first).
    pub before: Option<MessageId>,
    /// At most this many messages; `None` leaves the page size to the store, which also caps
    /// it.
    pub limit: Option<u32>,
}

/// A due delivery with what sending needs of its device, `None` when it has none (see
/// [`MessageStore::due_page`]).
pub type DueDelivery = (Delivery, Option<Recipient>);

/// Devices: registration, look-up, deactivation.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait DeviceStore: Send + Sync + 'static {
    /// Registers a device, or updates the device of the same application, platform and token
    /// (owner, name, client device id, `active = true`).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn register_device(
        &self,
        device: &NewDevice,
        now: OffsetDateTime,
    ) -> Result<(Device, Registration), StoreError>;

    /// Registers many devices in one transaction: all of them or, on an error, none. Each is
    /// inserted, or updates the device with the same application, platform and token as
    /// [`DeviceStore::register_device`] does; a token given twice counts once, its last
    /// registration winning (see [`crate::device::last_registration_of_each_token`]).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn register_devices(
        &self,
        devices: &[NewDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError>;

    /// The device of `app` with this id, or `None` when `app` has none.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure; [`StoreError::Corrupt`] for a row that
    /// cannot be read.
    async fn get_device(&self, app: &AppId, id: DeviceId) -> Result<Option<Device>, StoreError>;

    /// The devices among `ids` that belong to `app`, in id order.
    ///
    /// # Errors
    /// As [`DeviceStore::get_device`].
    async fn get_devices(&self, app: &AppId, ids: &[DeviceId]) -> Result<Vec<Device>, StoreError>;

    /// Devices of `app` matching the filter, in id order.
    ///
    /// # Errors
    /// As [`DeviceStore::get_device`].
    async fn list_devices(
        &self,
        app: &AppId,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, StoreError>;

    /// Sets `active = false` with the time and reason. Returns whether the device exists.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn deactivate_device(
        &self,
        app: &AppId,
        id: DeviceId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Changes a device's name, owner or active flag. Deactivating records the time and
    /// `reason`; activating clears them. Returns the device, or `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn update_device(
        &self,
        app: &AppId,
        id: DeviceId,
        update: &DeviceUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<Device>, StoreError>;

    /// Deletes a device; its past deliveries keep their records with no device. Returns
    /// whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn delete_device(&self, app: &AppId, id: DeviceId) -> Result<bool, StoreError>;

    /// Deactivates the active devices of `app` whose latest delivery ended with a dead token
    /// after the device was last registered (a device registered again since is left alone).
    /// Returns how many were deactivated.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn deactivate_dead_devices(
        &self,
        app: &AppId,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// Deletes the inactive devices of `app` deactivated before `before`. Returns how many.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn delete_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}

/// The most deliveries a message carries when it is read to be shown (the API, the admin UI,
/// the CLI); [`MessageStore::delivery_tally`] counts them all.
pub const DELIVERIES_SHOWN: u32 = 1000;

/// Messages, their deliveries and related objects, and the claim of due messages.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores a message with its related objects and deliveries (all `pending`) in one
    /// transaction, and returns it as stored: with its deliveries for
    /// [`NewDeliveries::Listed`], without them (however many there are) for
    /// [`NewDeliveries::Broadcast`]. Every listed delivery's device must exist.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure; nothing is stored then.
    async fn insert_message(&self, message: &NewMessage) -> Result<Message, StoreError>;

    /// A message of `app` with all its deliveries and related objects: its head with every
    /// delivery.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn get_message(&self, app: &AppId, id: MessageId) -> Result<Option<Message>, StoreError> {
        self.get_message_head(app, id, u32::MAX).await
    }

    /// A message of `app` with its related objects and its first `deliveries` deliveries (in id
    /// order): what is shown of a message that may be a broadcast to a million devices.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn get_message_head(
        &self,
        app: &AppId,
        id: MessageId,
        deliveries: u32,
    ) -> Result<Option<Message>, StoreError>;

    /// Messages matching the filter, newest first, each with its related objects and its first
    /// [`DELIVERIES_SHOWN`] deliveries.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<Message>, StoreError>;

    /// Claims up to `limit` due messages (WAITING, or ERROR_RETRY whose `next_attempt_at` has
    /// passed) whose lease is free or expired, oldest first, in one atomic step, and returns
    /// them with their related objects but without their deliveries (page them with
    /// [`MessageStore::due_deliveries`]). A claimed message is not returned to another caller
    /// until its lease expires or is released.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn claim_due(
        &self,
        now: OffsetDateTime,
        limit: u32,
        lease: &Lease,
    ) -> Result<Vec<Message>, StoreError> {
        self.claim_due_except(now, limit, lease, &[], 0).await
    }

    /// [`MessageStore::claim_due`], leaving the messages of the applications in `except`
    /// unclaimed (a worker that already sends as many messages of those applications as it
    /// allows one application), and bringing each claimed message's first `deliveries_each`
    /// deliveries, whatever their state, in id order (none when it is 0): a message that
    /// comes back with fewer has every delivery loaded, and a worker sends it without reading
    /// its deliveries again. The deliveries are read in one statement for the whole claim.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn claim_due_except(
        &self,
        now: OffsetDateTime,
        limit: u32,
        lease: &Lease,
        except: &[AppId],
        deliveries_each: u32,
    ) -> Result<Vec<Message>, StoreError>;

    /// Extends to `lease.until` the leases of `ids` that `lease.owner` still holds, and returns
    /// the ids it extended: an id missing from the answer was taken over (or released).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn renew_lease(
        &self,
        ids: &[MessageId],
        lease: &Lease,
    ) -> Result<Vec<MessageId>, StoreError>;

    /// Releases every lease `owner` holds (a graceful shutdown), so that other workers may
    /// claim those messages at once. Returns how many were released.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;

    /// Up to `limit` deliveries of `message` that are still due (pending or retrying), in id
    /// order, after the delivery `after` when given.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn due_deliveries(
        &self,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Up to `limit` due deliveries of `message` as [`MessageStore::due_deliveries`] gives
    /// them, each with what sending needs of its device: `None` for a delivery without one
    /// (OneSignal), for a device that no longer exists, and for one that is not of `app`.
    /// Read in one statement, which is what a broadcast pays for each page.
    ///
    /// Returns `Ok(None)` when the store cannot read them together (the default): the caller
    /// then reads the deliveries with [`MessageStore::due_deliveries`] and their devices with
    /// [`DeviceStore::get_devices`].
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn due_page(
        &self,
        _app: &AppId,
        _message: MessageId,
        _after: Option<DeliveryId>,
        _limit: u32,
    ) -> Result<Option<Vec<DueDelivery>>, StoreError> {
        Ok(None)
    }

    /// The counts of `message`'s deliveries by state and its first error.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn delivery_tally(&self, message: MessageId) -> Result<DeliveryTally, StoreError>;

    /// Gives up every delivery of `message` that is still due, as [`GiveUp`] says, if `lease`
    /// is still held. Returns `false`, writing nothing, when the lease was lost.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn give_up_due_deliveries(
        &self,
        message: MessageId,
        lease: &Lease,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Records the states of deliveries as soon as they are known, whoever holds their
    /// message's lease: a provider's answer is a fact worth keeping. All of them in one write
    /// (one transaction), so that a fan-out costs one commit per batch of answers rather than
    /// one per device. Idempotent, and a delivery already recorded as accepted or debug is
    /// never changed again.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure; then none of them was recorded.
    async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError>;

    /// Writes a message's progress, `extra_sender_data`, `changed_at` and its loaded
    /// deliveries (accepted and debug ones are never changed), and releases its lease, if the
    /// writer may:
    /// - a worker (`Some(lease)`) only while `lease.owner` holds the message's lease;
    /// - an operator (`None`) only while no worker holds a lease that is still running at
    ///   `message.changed_at` (the time of the operator's action).
    ///
    /// Returns `false`, writing nothing, when the writer may not (or the id is unknown).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn save_progress<'a>(
        &self,
        message: &Message,
        lease: Option<&'a Lease>,
    ) -> Result<bool, StoreError>;

    /// Concludes a worker's attempt at a message whose deliveries are all loaded: writes what
    /// [`MessageStore::save_progress`] with `Some(lease)` writes, and with it `outcomes`, the
    /// deliveries whose outcomes the attempt has not recorded with
    /// [`MessageStore::record_deliveries`] (each is also in `message.deliveries`, as recent).
    /// A small message thus costs one write for its outcomes and its progress together.
    ///
    /// The stores need not implement it: the loaded deliveries that `save_progress` writes
    /// carry the outcomes. A decorator that counts recorded outcomes counts `outcomes` here.
    ///
    /// Returns `false`, writing nothing, when `lease.owner` no longer holds the message.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure; nothing is written then.
    async fn save_attempt(
        &self,
        message: &Message,
        lease: &Lease,
        outcomes: &[Delivery],
    ) -> Result<bool, StoreError> {
        let _ = outcomes;
        self.save_progress(message, Some(lease)).await
    }

    /// The newest message of `app` sent from template `slug` that is linked to every one of
    /// `related` (to every message when `related` is empty).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn find_template_message(
        &self,
        app: &AppId,
        slug: &Slug,
        related: &[RelatedObject],
    ) -> Result<Option<MessageId>, StoreError>;

    /// How many messages are due at `now` (the backlog), leased ones included: they are not
    /// sent yet.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn count_due(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// Templates per application.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TemplateStore: Send + Sync + 'static {
    /// Creates the template, or replaces the one with the same application and slug.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn put_template(
        &self,
        template: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<(Template, Registration), StoreError>;

    /// The template of `app` with this slug, or `None` when `app` has none.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn get_template(&self, app: &AppId, slug: &Slug) -> Result<Option<Template>, StoreError>;

    /// Templates of `app` in slug order.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn list_templates(&self, app: &AppId) -> Result<Vec<Template>, StoreError>;

    /// Deletes a template; messages sent from it keep its slug. Returns whether it existed.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn delete_template(&self, app: &AppId, slug: &Slug) -> Result<bool, StoreError>;
}

/// How many devices of an application are on one platform in one active state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCount {
    /// The platform of the devices counted.
    pub platform: Platform,
    /// Whether the devices counted are active.
    pub active: bool,
    /// How many devices there are.
    pub count: u64,
}

/// How many messages are in one state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCount {
    /// The state of the messages counted.
    pub state: MessageState,
    /// How many messages there are.
    pub count: u64,
}

/// Where an error was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// A delivery's error code (the provider's outcome).
    Delivery,
    /// A failed message's error, for messages whose deliveries hold no error (no active
    /// device, an expired message, a cancel).
    Message,
}

/// Errors of one reason: a delivery's error code, or a message's error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorReason {
    /// Whether `reason` is a delivery's error code or a message's error text.
    pub source: ErrorSource,
    /// The delivery error code (`BadDeviceToken`) or the message's error text.
    pub reason: String,
    /// How many deliveries or messages had it.
    pub count: u64,
    /// When the latest of them was recorded.
    pub last_at: OffsetDateTime,
    /// One of their texts, for a delivery error code.
    pub example: Option<String>,
}

/// Read-only counts for operators: the admin overview and the preview of a prune. Nothing
/// here changes data.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// The devices of `app` counted by platform and active flag; combinations with no device
    /// are left out. In platform then active order (inactive first).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure; [`StoreError::Corrupt`] for an unknown
    /// platform.
    async fn count_devices(&self, app: &AppId) -> Result<Vec<DeviceCount>, StoreError>;

    /// The messages of `app` created at or after `since`, counted by state; states with no
    /// message are left out.
    ///
    /// # Errors
    /// As [`ReportStore::count_devices`].
    async fn count_messages_by_state(
        &self,
        app: &AppId,
        since: OffsetDateTime,
    ) -> Result<Vec<StateCount>, StoreError>;

    /// How many messages of `app` are due at `now` (the condition of
    /// [`MessageStore::count_due`]).
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn count_due_in_app(&self, app: &AppId, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// The errors of `app` recorded at or after `since`, grouped by reason, latest first, at
    /// most `limit`: deliveries by error code, and ERROR messages none of whose deliveries
    /// holds an error by their error text.
    ///
    /// # Errors
    /// As [`ReportStore::count_devices`].
    async fn error_reasons(
        &self,
        app: &AppId,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ErrorReason>, StoreError>;

    /// How many devices [`DeviceStore::deactivate_dead_devices`] would deactivate now.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn count_dead_devices(&self, app: &AppId) -> Result<u64, StoreError>;

    /// How many devices [`DeviceStore::delete_inactive_devices`] would delete with `before`.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn count_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError>;
}

/// API keys, stored as hashes of their secrets.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait ApiKeyStore: Send + Sync + 'static {
    /// Stores a key.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a key with the same hash exists;
    /// [`StoreError::Unknown`] on a database failure.
    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError>;

    /// The key whose secret hashes to `hash`, revoked or not, with its `hash` filled in.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError>;

    /// Every key, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] or [`StoreError::Corrupt`].
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key. Returns the key, or `None` when it does not exist; revoking twice keeps
    /// the first time.
    ///
    /// # Errors
    /// [`StoreError::Unknown`] on a database failure.
    async fn revoke_api_key(
        &self,
        id: ApiKeyId,
        now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError>;
}

/// One push service (APNs, FCM, Web Push, OneSignal, or the debug sender).
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait PushProvider: Send + Sync + 'static {
    /// Sends one notification. Every failure is an outcome, never an error: timeouts and
    /// connection errors are [`SendOutcome::Transient`], bad credentials
    /// [`SendOutcome::Misconfigured`].
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome;
}

/// A template failure. It is serialisable so that a renderer may carry it across a process
/// boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RenderError {
    /// The source does not parse.
    #[error("template syntax error in {field}: {detail}")]
    Syntax {
        /// The template field: `body`, `heading` or `url`.
        field: String,
        /// The renderer's message, with where in the source.
        detail: String,
    },
    /// The source uses a variable the context does not define.
    #[error("undefined variable in {field}: {detail}")]
    Undefined {
        /// The template field: `body`, `heading` or `url`.
        field: String,
        /// The renderer's message, naming the variable.
        detail: String,
    },
    /// Rendering took more steps than the renderer's fuel allows (`templates.fuel`).
    #[error("template {field} used more than its fuel (templates.fuel): too much work")]
    OutOfFuel {
        /// The template field: `body`, `heading` or `url`.
        field: String,
    },
    /// The template breaks one of the renderer's limits: its source size, its nesting, its
    /// output size, the size of a string it builds, or its memory or time budget. `limit`
    /// names the setting (`templates.max_nesting`).
    #[error("template {field} exceeds {limit}: {detail}")]
    Limit {
        /// The template field: `body`, `heading` or `url`.
        field: String,
        /// The setting that sets the limit, such as `templates.max_nesting`.
        limit: String,
        /// What was over the limit, and by how much.
        detail: String,
    },
    /// The renderer cannot take the template now (every renderer busy, or one could not be
    /// started); the template itself may be fine, and a later try may succeed.
    #[error("template {field} cannot be rendered now: {detail}")]
    Unavailable {
        /// The template field: `body`, `heading` or `url`.
        field: String,
        /// Why no renderer could take it.
        detail: String,
    },
    /// Any other failure to render, such as output that is not UTF-8.
    #[error("template {field} failed to render: {detail}")]
    Other {
        /// The template field: `body`, `heading` or `url`.
        field: String,
        /// What went wrong.
        detail: String,
    },
}

impl RenderError {
    /// The template field (`body`, `heading`, `url`) the error is about.
    #[must_use]
    pub fn field(&self) -> &str {
        match self {
            RenderError::Syntax { field, .. }
            | RenderError::Undefined { field, .. }
            | RenderError::OutOfFuel { field }
            | RenderError::Limit { field, .. }
            | RenderError::Unavailable { field, .. }
            | RenderError::Other { field, .. } => field,
        }
    }
}

/// Renders template source with a context. Plain text, no HTML escaping, bounded work, and an
/// undefined variable is an error. An implementation bounds the size, nesting, output, time
/// and memory of every template, whatever its text, and does the work away from the caller's
/// async runtime: both methods may take as long as a render does.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait TemplateRenderer: Send + Sync + 'static {
    /// Renders `source`; `field` names it in errors (`body`, `heading`, `url`).
    ///
    /// # Errors
    /// A [`RenderError`] naming the field: [`RenderError::Limit`] naming the setting for a
    /// template over a limit, [`RenderError::Unavailable`] when no renderer can take it now.
    async fn render(
        &self,
        field: &str,
        source: &str,
        context: &Map<String, Value>,
    ) -> Result<String, RenderError>;

    /// Checks that `source` is within the size and nesting limits and parses, without
    /// rendering it.
    ///
    /// # Errors
    /// [`RenderError::Limit`] or [`RenderError::Syntax`] naming the field.
    async fn check(&self, field: &str, source: &str) -> Result<(), RenderError>;
}

/// The time.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
pub trait Clock: Send + Sync + 'static {
    /// The current time. The services read the time here and nowhere else, so that a test can
    /// set it.
    fn now(&self) -> OffsetDateTime;
}

/// The lease a worker takes on claimed messages.
#[must_use]
pub fn lease_for(owner: &str, now: OffsetDateTime, length: Duration) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until: now + length,
    }
}
