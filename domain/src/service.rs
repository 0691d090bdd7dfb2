//! The services: register devices, send messages (directly or from templates), process a batch
//! of due messages, prune dead devices, and let an operator retry or cancel. The CLI and the
//! HTTP server call these and nothing below them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::future::{self, Either};
use futures_util::sink::SinkExt as _;
use futures_util::stream::{self, Stream, StreamExt as _, TryStreamExt as _};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::app::{Application, Applications, SenderKind, UnknownApplication};
use crate::auth::{
    ApiKey, ApiKeyId, AuthError, CreatedApiKey, KeyHash, KeyScope, NewApiKey, Principal,
};
use crate::device::{
    BulkRegistration, Device, DeviceFieldError, DeviceFilter, DeviceUpdate, NewDevice, Recipient,
    Registration,
};
use crate::ids::{DeliveryId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use crate::message::{
    AttemptEnd, Channel, Content, Delivery, DeliveryTally, GiveUp, IllegalTransition, Message,
    MessageSpec, MessageState, OptionError, Priority, PushOptions, SendOutcome, Target,
};
use crate::payload::{self, Payload, PayloadError, PayloadTarget};
use crate::ports::{
    ApiKeyStore, Clock, DELIVERIES_SHOWN, DeviceCount, DeviceStore, DueDelivery, ErrorReason,
    Lease, MessageFilter, MessageStore, NewDeliveries, NewMessage, PushProvider, RenderError,
    ReportStore, StateCount, StoreError, TemplateRenderer, TemplateStore,
};
use crate::template::{CannotSend, Rendered, Template, TemplateSpec};
use crate::text::{UnstorableText, storable};
use crate::token::{DeviceToken, Platform, TokenError};

/// The ports the services use.
#[derive(Clone)]
pub struct Ports {
    pub devices: Arc<dyn DeviceStore>,
    pub messages: Arc<dyn MessageStore>,
    pub templates: Arc<dyn TemplateStore>,
    pub keys: Arc<dyn ApiKeyStore>,
    pub reports: Arc<dyn ReportStore>,
    pub renderer: Arc<dyn TemplateRenderer>,
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// The push providers, by the channel they serve.
#[derive(Clone, Default)]
pub struct Providers {
    by_channel: BTreeMap<&'static str, Arc<dyn PushProvider>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_channel.keys()).finish()
    }
}

impl Providers {
    /// Registers the provider that serves `channel`.
    #[must_use]
    pub fn with(mut self, channel: Channel, provider: Arc<dyn PushProvider>) -> Self {
        self.by_channel.insert(channel.as_str(), provider);
        self
    }

    fn get(&self, channel: Channel) -> Option<&Arc<dyn PushProvider>> {
        self.by_channel.get(channel.as_str())
    }
}

/// Settings of the services.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Who claims messages; shown in leases. It must be unique per process (a host name,
    /// process id and random suffix), since a lease is checked by its owner.
    pub worker_id: String,
    /// How long a claim on a message lasts before another worker may take it over. A worker
    /// renews its lease once half of it has passed.
    pub lease: Duration,
    /// How many messages one claim takes: one store statement claims up to this many.
    pub claim_size: u32,
    /// The page size when walking the devices of a broadcast.
    pub device_page: u32,
    /// How many due deliveries of one message an attempt loads at a time.
    pub delivery_page: u32,
    /// How many claimed messages a batch works on at once. A one-device message holds its
    /// slot for about one provider round trip, so this is what bounds how fast a queue of
    /// small messages drains: 2,000 at a 50 ms round trip is up to 40,000 messages a second.
    pub message_concurrency: usize,
    /// How many of those may belong to one application while another application's messages
    /// are due: a provider that hangs then holds back only its own application's messages.
    pub app_concurrency: usize,
    /// How many deliveries of one message are sent at once.
    pub delivery_concurrency: usize,
    /// How many messages of one application with more than a first small page of due
    /// deliveries (broadcasts, users with many devices) a batch sends at once; the others
    /// wait for one of them to finish reading its deliveries. Each holds a page of
    /// `delivery_page` deliveries and up to `delivery_concurrency` sends.
    pub large_message_concurrency: usize,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            worker_id: "clarion".to_owned(),
            lease: Duration::from_secs(60),
            claim_size: 500,
            device_page: 1000,
            delivery_page: 500,
            message_concurrency: 2000,
            app_concurrency: 500,
            delivery_concurrency: 4096,
            large_message_concurrency: 4,
        }
    }
}

/// Whether a new message is sent at once or left to the batch worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    #[default]
    Now,
    Queue,
}

/// A device registration as received at the edge; the token is parsed here because a Web
/// Push endpoint's policy depends on the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDevice {
    pub platform: Platform,
    /// The APNs or FCM token, or the Web Push endpoint.
    pub token: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub name: Option<String>,
    pub user_id: Option<UserId>,
    pub device_id: Option<String>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    pub target: Target,
    pub content: Content,
    pub tag: Option<Tag>,
    pub priority: Priority,
    pub options: PushOptions,
    pub related_objects: Vec<RelatedObject>,
    pub retry_sending: bool,
}

/// A message to send from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSendRequest {
    pub slug: Slug,
    pub context: Map<String, Value>,
    pub target: Target,
    pub extra_data: Option<Map<String, Value>>,
    pub tag: Option<Tag>,
    pub priority: Priority,
    pub options: PushOptions,
    pub related_objects: Vec<RelatedObject>,
    pub retry_sending: bool,
}

/// What `send_template` did.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateSend {
    Sent(Box<Message>),
    /// The template may not send; nothing was stored.
    NotSent(CannotSend),
}

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
    #[error(transparent)]
    InvalidField(#[from] DeviceFieldError),
    #[error("device {0} not found")]
    NotFound(DeviceId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most devices one bulk registration takes.
pub const MAX_BULK_DEVICES: usize = 5000;

/// Why a bulk registration failed. Nothing is registered when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum BulkDeviceError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("{given} devices given; at most {MAX_BULK_DEVICES} are registered at once")]
    TooMany { given: usize },
    /// The device at `index` (from 0) of the list is invalid.
    #[error("device {index}: {error}")]
    Invalid { index: usize, error: DeviceError },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a message could not be sent. Nothing is stored when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("invalid message: {0}")]
    Invalid(#[from] OptionError),
    #[error("unknown device ids for this application: {}", join_ids(.0))]
    UnknownDevices(Vec<DeviceId>),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("template {0} not found")]
    TemplateNotFound(Slug),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join_ids(ids: &[DeviceId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an operation on a stored message failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("message {0} not found")]
    NotFound(MessageId),
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// A worker holds the message's lease (it is being sent); try again once it is done.
    #[error("message {0} is being sent by a worker; try again when it is done")]
    Busy(MessageId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("template {0} not found")]
    NotFound(Slug),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error("a key name must be 1 to 100 characters")]
    BadName,
    #[error("a key secret must be at least 32 characters")]
    WeakSecret,
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
    #[error("API key {0} not found")]
    NotFound(ApiKeyId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one batch run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchReport {
    pub processed: u64,
    pub sent: u64,
    pub debug: u64,
    pub retrying: u64,
    pub failed: u64,
    /// Messages whose lease another worker took over mid-attempt; that worker finishes them.
    #[serde(default)]
    pub lost: u64,
}

impl BatchReport {
    fn count(&mut self, message: &Message) {
        self.processed += 1;
        match message.state() {
            MessageState::Sent => self.sent += 1,
            MessageState::Debug => self.debug += 1,
            MessageState::ErrorRetry => self.retrying += 1,
            MessageState::Error | MessageState::Waiting => self.failed += 1,
        }
    }
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An application at a glance: its devices, its recent messages and errors, and its backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// The start of the window the message counts and errors cover.
    pub since: OffsetDateTime,
    pub devices: Vec<DeviceCount>,
    pub messages: Vec<StateCount>,
    /// The application's messages due now.
    pub backlog: u64,
    pub errors: Vec<ErrorReason>,
}

/// The most error reasons an overview lists.
const OVERVIEW_ERRORS: u32 = 20;
/// The most delivery outcomes written in one batch.
const RECORD_BATCH: usize = 512;
/// The first page of due deliveries a batch reads of a claimed message: a message with more
/// is a large one (see [`PushService::due_pages`]).
const FIRST_PAGE: u32 = 64;

/// The devices of a loaded message's deliveries, by id, as sending needs them.
type PageDevices = BTreeMap<DeviceId, Recipient>;
/// What one delivery needs to go out, or the outcome it gets without a request.
enum Prepared<'a> {
    Send(&'a Arc<dyn PushProvider>, Payload),
    Done(SendOutcome),
}

/// One sent delivery with its outcome, or the store failure that ended the sending.
type Sent = Result<(Delivery, SendOutcome), StoreError>;

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PruneReport {
    pub deactivated: u64,
    pub deleted: u64,
}

/// Clarion's services.
#[derive(Debug, Clone)]
pub struct PushService {
    apps: Arc<Applications>,
    ports: Ports,
    providers: Providers,
    settings: ServiceSettings,
}

impl PushService {
    #[must_use]
    pub fn new(
        apps: Arc<Applications>,
        ports: Ports,
        providers: Providers,
        settings: ServiceSettings,
    ) -> Self {
        Self {
            apps,
            ports,
            providers,
            settings,
        }
    }

    #[must_use]
    pub fn applications(&self) -> &Applications {
        &self.apps
    }

    fn now(&self) -> OffsetDateTime {
        self.ports.clock.now()
    }

    fn lease(&self, now: OffsetDateTime) -> Lease {
        Lease {
            owner: self.settings.worker_id.clone(),
            until: now + self.settings.lease,
        }
    }

    // ----- devices -----

    /// Registers a device, or updates the device with the same token.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidToken`] naming the field,
    /// [`DeviceError::InvalidField`], or [`DeviceError::Store`].
    pub async fn register_device(
        &self,
        app: &str,
        request: RegisterDevice,
    ) -> Result<(Device, Registration), DeviceError> {
        let app = self.apps.get(app)?;
        let token = DeviceToken::parse(
            request.platform,
            &request.token,
            request.p256dh.as_deref(),
            request.auth.as_deref(),
            app.endpoint_policy,
        )?;
        let device = NewDevice {
            app: app.id.clone(),
            token,
            name: request.name,
            user_id: request.user_id,
            device_id: request.device_id,
        };
        device.validate()?;
        Ok(self
            .ports
            .devices
            .register_device(&device, self.now())
            .await?)
    }

    /// Registers up to [`MAX_BULK_DEVICES`] devices at once, all or none, each as
    /// [`PushService::register_device`] would (a token given twice is registered once, with
    /// its last registration).
    ///
    /// # Errors
    /// [`BulkDeviceError::UnknownApplication`], [`BulkDeviceError::TooMany`],
    /// [`BulkDeviceError::Invalid`] for the first invalid device, or
    /// [`BulkDeviceError::Store`].
    pub async fn register_devices(
        &self,
        app: &str,
        requests: Vec<RegisterDevice>,
    ) -> Result<BulkRegistration, BulkDeviceError> {
        let app = self.apps.get(app)?;
        if requests.len() > MAX_BULK_DEVICES {
            return Err(BulkDeviceError::TooMany {
                given: requests.len(),
            });
        }
        let mut devices = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let invalid = |error: DeviceError| BulkDeviceError::Invalid { index, error };
            let token = DeviceToken::parse(
                request.platform,
                &request.token,
                request.p256dh.as_deref(),
                request.auth.as_deref(),
                app.endpoint_policy,
            )
            .map_err(|e| invalid(e.into()))?;
            let device = NewDevice {
                app: app.id.clone(),
                token,
                name: request.name,
                user_id: request.user_id,
                device_id: request.device_id,
            };
            device.validate().map_err(|e| invalid(e.into()))?;
            devices.push(device);
        }
        Ok(self
            .ports
            .devices
            .register_devices(&devices, self.now())
            .await?)
    }

    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn get_device(&self, app: &str, id: DeviceId) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        self.ports
            .devices
            .get_device(&app.id, id)
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`] for a token prefix
    /// that cannot be stored, or [`DeviceError::Store`].
    pub async fn list_devices(
        &self,
        app: &str,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, DeviceError> {
        let app = self.apps.get(app)?;
        filter.validate()?;
        Ok(self.ports.devices.list_devices(&app.id, filter).await?)
    }

    /// Deactivates a device with the operator's reason.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`] for a reason that
    /// cannot be stored, [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn deactivate_device(
        &self,
        app: &str,
        id: DeviceId,
        reason: &str,
    ) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        storable("reason", reason).map_err(DeviceFieldError::from)?;
        if !self
            .ports
            .devices
            .deactivate_device(&app.id, id, reason, self.now())
            .await?
        {
            return Err(DeviceError::NotFound(id));
        }
        self.ports
            .devices
            .get_device(&app.id, id)
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// Changes a device's name, owner or active flag.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`],
    /// [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn update_device(
        &self,
        app: &str,
        id: DeviceId,
        update: &DeviceUpdate,
    ) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        update.validate()?;
        self.ports
            .devices
            .update_device(&app.id, id, update, self.now())
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn delete_device(&self, app: &str, id: DeviceId) -> Result<(), DeviceError> {
        let app = self.apps.get(app)?;
        if self.ports.devices.delete_device(&app.id, id).await? {
            Ok(())
        } else {
            Err(DeviceError::NotFound(id))
        }
    }

    /// Deactivates the devices whose latest delivery hit a dead token and, when
    /// `delete_inactive_older_than` is given, deletes inactive devices deactivated longer ago.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`] or [`DeviceError::Store`].
    pub async fn prune(
        &self,
        app: &str,
        delete_inactive_older_than: Option<Duration>,
    ) -> Result<PruneReport, DeviceError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let deactivated = self
            .ports
            .devices
            .deactivate_dead_devices(&app.id, now)
            .await?;
        let deleted = match delete_inactive_older_than {
            Some(age) => {
                self.ports
                    .devices
                    .delete_inactive_devices(&app.id, now - age)
                    .await?
            }
            None => 0,
        };
        Ok(PruneReport {
            deactivated,
            deleted,
        })
    }

    /// What [`PushService::prune`] would do now with the same argument, changing nothing:
    /// how many devices it would deactivate and how many it would delete. A device that is
    /// both dead and old enough is counted once, as deactivated, because a prune deactivates
    /// it now and deletes it later.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`] or [`DeviceError::Store`].
    pub async fn prune_preview(
        &self,
        app: &str,
        delete_inactive_older_than: Option<Duration>,
    ) -> Result<PruneReport, DeviceError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let reports = &self.ports.reports;
        let deactivated = reports.count_dead_devices(&app.id).await?;
        let deleted = match delete_inactive_older_than {
            Some(age) => reports.count_inactive_devices(&app.id, now - age).await?,
            None => 0,
        };
        Ok(PruneReport {
            deactivated,
            deleted,
        })
    }

    /// The overview of an application: devices by platform and active flag, messages by
    /// state and errors by reason over the last `window`, and its backlog.
    ///
    /// # Errors
    /// [`ReportError::UnknownApplication`] or [`ReportError::Store`].
    pub async fn overview(&self, app: &str, window: Duration) -> Result<Overview, ReportError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let since = now - window;
        let reports = &self.ports.reports;
        Ok(Overview {
            since,
            devices: reports.count_devices(&app.id).await?,
            messages: reports.count_messages_by_state(&app.id, since).await?,
            backlog: reports.count_due_in_app(&app.id, now).await?,
            errors: reports
                .error_reasons(&app.id, since, OVERVIEW_ERRORS)
                .await?,
        })
    }

    // ----- sending -----

    /// Stores a message with one delivery per targeted device and, with [`Dispatch::Now`],
    /// sends it at once. A recipient with no active device gives a stored ERROR message.
    ///
    /// # Errors
    /// A [`SendError`]; nothing is stored then, except on [`SendError::Store`] after the
    /// message was stored (the batch worker then takes it over when its lease expires).
    pub async fn send(
        &self,
        app: &str,
        request: SendRequest,
        dispatch: Dispatch,
    ) -> Result<Message, SendError> {
        self.send_reporting(app, request, dispatch, &|_| {}).await
    }

    /// [`PushService::send`], calling `on_stored` with the message's id as soon as it is
    /// stored, before anything is sent: a caller that stops waiting for a slow send can still
    /// say which message it was.
    ///
    /// # Errors
    /// As [`PushService::send`].
    pub async fn send_reporting(
        &self,
        app: &str,
        request: SendRequest,
        dispatch: Dispatch,
        on_stored: &(dyn Fn(MessageId) + Send + Sync),
    ) -> Result<Message, SendError> {
        let app = self.apps.get(app)?;
        let spec = MessageSpec {
            app: app.id.clone(),
            target: request.target,
            content: request.content,
            template_slug: None,
            tag: request.tag,
            priority: request.priority,
            options: request.options,
            related_objects: dedup(request.related_objects),
            retry_sending: request.retry_sending,
        };
        self.store_and_dispatch(app, spec, dispatch, on_stored)
            .await
    }

    /// Renders a template and sends the result, unless the template may not send
    /// ([`TemplateSend::NotSent`], nothing stored).
    ///
    /// # Errors
    /// [`SendError::TemplateNotFound`] for an unknown slug, [`SendError::Render`] when
    /// rendering fails, and the errors of [`PushService::send`]. Nothing is stored then.
    pub async fn send_template(
        &self,
        app: &str,
        request: TemplateSendRequest,
        dispatch: Dispatch,
    ) -> Result<TemplateSend, SendError> {
        self.send_template_reporting(app, request, dispatch, &|_| {})
            .await
    }

    /// [`PushService::send_template`], calling `on_stored` with the message's id as soon as
    /// it is stored (see [`PushService::send_reporting`]).
    ///
    /// # Errors
    /// As [`PushService::send_template`].
    pub async fn send_template_reporting(
        &self,
        app: &str,
        request: TemplateSendRequest,
        dispatch: Dispatch,
        on_stored: &(dyn Fn(MessageId) + Send + Sync),
    ) -> Result<TemplateSend, SendError> {
        let app = self.apps.get(app)?;
        let template = self
            .ports
            .templates
            .get_template(&app.id, &request.slug)
            .await?
            .ok_or_else(|| SendError::TemplateNotFound(request.slug.clone()))?;
        let related = dedup(request.related_objects);
        if let Some(reason) = self.cannot_send(&template, &related).await? {
            return Ok(TemplateSend::NotSent(reason));
        }
        let rendered = self.render(&template, &request.context).await?;
        let spec = MessageSpec {
            app: app.id.clone(),
            target: request.target,
            content: Content {
                heading: rendered.heading,
                body: rendered.body,
                url: rendered.url,
                extra_data: request.extra_data,
            },
            template_slug: Some(template.slug.clone()),
            tag: request.tag,
            priority: request.priority,
            options: request.options,
            related_objects: related,
            retry_sending: request.retry_sending,
        };
        let message = self
            .store_and_dispatch(app, spec, dispatch, on_stored)
            .await?;
        Ok(TemplateSend::Sent(Box::new(message)))
    }

    /// pymess's `can_send`: `None` when the template may send for these related objects.
    async fn cannot_send(
        &self,
        template: &Template,
        related: &[RelatedObject],
    ) -> Result<Option<CannotSend>, StoreError> {
        if !template.is_active {
            return Ok(Some(CannotSend::Inactive {
                slug: template.slug.to_string(),
            }));
        }
        if template.allow_duplicates {
            return Ok(None);
        }
        let earlier = self
            .ports
            .messages
            .find_template_message(&template.app, &template.slug, related)
            .await?;
        Ok(earlier.map(|id| CannotSend::Duplicate {
            slug: template.slug.to_string(),
            message_id: id.0,
        }))
    }

    async fn render(
        &self,
        template: &Template,
        context: &Map<String, Value>,
    ) -> Result<Rendered, RenderError> {
        let renderer = &self.ports.renderer;
        let body = renderer.render("body", &template.body, context).await?;
        let heading = match &template.heading {
            Some(source) => Some(renderer.render("heading", source, context).await?),
            None => None,
        };
        let url = match &template.url {
            Some(source) => Some(renderer.render("url", source, context).await?),
            None => None,
        };
        Ok(Rendered { body, heading, url })
    }

    async fn store_and_dispatch(
        &self,
        app: &Application,
        spec: MessageSpec,
        dispatch: Dispatch,
        on_stored: &(dyn Fn(MessageId) + Send + Sync),
    ) -> Result<Message, SendError> {
        spec.options.validate()?;
        spec.content.validate(&spec.options)?;
        if let Target::Devices { device_ids } = &spec.target
            && device_ids.is_empty()
        {
            return Err(OptionError::NoDevices.into());
        }
        let (deliveries, devices) = self.plan_deliveries(app, &spec).await?;
        let listed = match &deliveries {
            NewDeliveries::Listed(list) => Some(list.len()),
            NewDeliveries::Broadcast { .. } => None,
        };
        let none = listed == Some(0);
        let now = self.now();
        let lease = (dispatch == Dispatch::Now || none).then(|| self.lease(now));
        let new = NewMessage {
            progress: Message::initial_progress(now),
            sender: app.sender,
            deliveries,
            lease: lease.clone(),
            spec,
            now,
        };
        let message = self.ports.messages.insert_message(&new).await?;
        on_stored(message.id);
        let Some(lease) = lease else {
            return Ok(message);
        };
        if none {
            return Ok(self.fail_undeliverable(message, &lease).await?);
        }
        // The stored message carries its listed deliveries, and planning read their devices.
        let loaded = match listed {
            Some(count) if message.deliveries.len() == count => Loaded::All(Arc::new(devices)),
            _ => Loaded::Paged,
        };
        // Boxed: the attempt's future (the provider sends under it) is many kilobytes, and
        // without the box every request's future would be that large, queued ones included,
        // and copied whole each time it is moved (into its task, for one).
        Ok(Box::pin(self.attempt(app, message, lease, loaded, None))
            .await?
            .into_message())
    }

    async fn fail_undeliverable(
        &self,
        mut message: Message,
        lease: &Lease,
    ) -> Result<Message, StoreError> {
        let reason = match &message.spec.target {
            Target::User { user_id } => format!("recipient {user_id} has no active device"),
            Target::Devices { .. } => "none of the given devices is active".to_owned(),
            Target::Broadcast { .. } => "the application has no matching active device".to_owned(),
        };
        let now = self.now();
        if message.fail(&reason, now).is_ok() {
            self.ports
                .messages
                .save_progress(&message, Some(lease))
                .await?;
        }
        Ok(message)
    }

    /// Finds the deliveries a message needs and checks each payload against its provider's
    /// limits before anything is stored. Returns them with the devices they name (none for a
    /// broadcast, whose deliveries the store creates).
    async fn plan_deliveries(
        &self,
        app: &Application,
        spec: &MessageSpec,
    ) -> Result<(NewDeliveries, PageDevices), SendError> {
        let now = self.now();
        if app.sender == SenderKind::Onesignal {
            let Target::User { user_id } = &spec.target else {
                return Err(SendError::Unsupported(format!(
                    "application {} uses the onesignal sender, which sends to a user id only; \
                     device ids and broadcasts need the direct sender",
                    app.id
                )));
            };
            payload::build(app, spec, PayloadTarget::ExternalUser(user_id), now)?;
            return Ok((
                NewDeliveries::Listed(vec![(Channel::Onesignal, None)]),
                PageDevices::new(),
            ));
        }
        let debug = (app.sender == SenderKind::Debug).then_some(Channel::Debug);
        if let Target::Broadcast { platform } = &spec.target {
            let deliveries = self.plan_broadcast(app, spec, *platform, debug).await?;
            return Ok((deliveries, PageDevices::new()));
        }
        let devices = self.target_devices(app, &spec.target).await?;
        let mut checked: BTreeSet<Platform> = BTreeSet::new();
        for device in &devices {
            if checked.insert(device.platform()) {
                payload::build(app, spec, PayloadTarget::Device(&device.token), now)?;
            }
        }
        let listed = devices
            .iter()
            .map(|d| (debug.unwrap_or(Channel::from(d.platform())), Some(d.id)))
            .collect();
        let devices = devices
            .into_iter()
            .map(|d| (d.id, Recipient::from(d)))
            .collect();
        Ok((NewDeliveries::Listed(listed), devices))
    }

    /// Checks a broadcast's payload against one device of each platform it reaches, walking
    /// the devices a page at a time and stopping once every platform was seen; the store then
    /// creates the deliveries itself. No device at all gives an empty list (an ERROR message).
    async fn plan_broadcast(
        &self,
        app: &Application,
        spec: &MessageSpec,
        platform: Option<Platform>,
        debug: Option<Channel>,
    ) -> Result<NewDeliveries, SendError> {
        let now = self.now();
        let page = self.settings.device_page.max(1);
        let mut filter = DeviceFilter {
            platform,
            active: Some(true),
            limit: Some(page),
            ..DeviceFilter::default()
        };
        let reachable = match platform {
            Some(_) => 1,
            None => 3,
        };
        let mut checked: BTreeSet<Platform> = BTreeSet::new();
        loop {
            let batch = self.ports.devices.list_devices(&app.id, &filter).await?;
            for device in &batch {
                if checked.insert(device.platform()) {
                    payload::build(app, spec, PayloadTarget::Device(&device.token), now)?;
                }
            }
            if checked.len() >= reachable || batch.len() < page as usize {
                break;
            }
            filter.after = batch.last().map(|d| d.id);
        }
        if checked.is_empty() {
            return Ok(NewDeliveries::Listed(Vec::new()));
        }
        Ok(NewDeliveries::Broadcast {
            platform,
            channel: debug,
        })
    }

    /// The active devices a target names.
    async fn target_devices(
        &self,
        app: &Application,
        target: &Target,
    ) -> Result<Vec<Device>, SendError> {
        let store = &self.ports.devices;
        match target {
            Target::Devices { device_ids } => {
                let found = store.get_devices(&app.id, device_ids).await?;
                let known: BTreeSet<DeviceId> = found.iter().map(|d| d.id).collect();
                let unknown: Vec<DeviceId> = device_ids
                    .iter()
                    .filter(|id| !known.contains(id))
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                if !unknown.is_empty() {
                    return Err(SendError::UnknownDevices(unknown));
                }
                Ok(found.into_iter().filter(|d| d.active).collect())
            }
            Target::User { user_id } => {
                let filter = DeviceFilter {
                    user_id: Some(user_id.clone()),
                    active: Some(true),
                    ..DeviceFilter::default()
                };
                self.all_pages(app, filter).await
            }
            Target::Broadcast { platform } => {
                let filter = DeviceFilter {
                    platform: *platform,
                    active: Some(true),
                    ..DeviceFilter::default()
                };
                self.all_pages(app, filter).await
            }
        }
    }

    async fn all_pages(
        &self,
        app: &Application,
        mut filter: DeviceFilter,
    ) -> Result<Vec<Device>, SendError> {
        let page = self.settings.device_page.max(1);
        filter.limit = Some(page);
        let mut all = Vec::new();
        loop {
            let batch = self.ports.devices.list_devices(&app.id, &filter).await?;
            let full = batch.len() >= page as usize;
            filter.after = batch.last().map(|d| d.id);
            all.extend(batch);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Keeps `lease` on message `id`: renews it once half of it has passed, together with the
    /// other leases of its batch that need it when the message is one of a batch's. Returns
    /// `false` when another worker took the message over.
    async fn keep_lease(
        &self,
        id: MessageId,
        lease: &mut Lease,
        batch: Option<&Batch>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let fresh = |lease: &Lease| now + self.settings.lease / 2 < lease.until;
        if fresh(lease) {
            return Ok(true);
        }
        if let Some(batch) = batch {
            return batch.leases.keep(self, id, lease, now, fresh).await;
        }
        let renewed = self.lease(now);
        let held = self.ports.messages.renew_lease(&[id], &renewed).await?;
        if !held.contains(&id) {
            return Ok(false);
        }
        *lease = renewed;
        Ok(true)
    }

    /// Makes one attempt at a claimed message: sends its due deliveries a page at a time, records
    /// each outcome as soon as it is known, deactivates dead devices, concludes the attempt and
    /// releases the claim. The lease is renewed while sending; once it is lost the attempt
    /// stops and saves nothing, since the worker that took the message over sends the rest.
    ///
    /// A message whose deliveries are all loaded writes the outcomes that arrive last, and
    /// the deliveries it gives up, with its progress in one write (see
    /// [`PushService::record_outcomes`]): a one-device message costs one write in all.
    async fn attempt(
        &self,
        app: &Application,
        mut message: Message,
        mut lease: Lease,
        loaded: Loaded,
        batch: Option<&Batch>,
    ) -> Result<Attempted, StoreError> {
        let started = self.now();
        if message.is_expired(&app.retry, started) {
            let expiry = Message::expiry();
            if !self
                .give_up_due(&mut message, &lease, &loaded, &expiry, started)
                .await?
            {
                return Ok(Attempted::Lost(message));
            }
            let tally = self.tally(&message, &loaded).await?;
            if message.expire_tallied(&tally, started).is_ok()
                && !self.save_attempt(&message, &lease, &[]).await?
            {
                return Ok(Attempted::Lost(message));
            }
            return Ok(Attempted::Done(message));
        }
        let mut retry_after: Option<Duration> = None;
        // The outcomes the attempt holds back to write them with the message's progress.
        let mut held: Vec<Delivery> = Vec::new();
        if !self
            .send_due(
                app,
                &mut message,
                (&mut lease, batch),
                &loaded,
                started,
                (&mut retry_after, &mut held),
            )
            .await?
        {
            return Ok(Attempted::Lost(message));
        }
        if let Some(batch) = batch {
            batch.sent(message.id);
        }
        let now = self.now();
        let tally = self.tally(&message, &loaded).await?;
        let end = match message.finish_attempt_tallied(&app.retry, retry_after, &tally, now) {
            Ok(end) => end,
            Err(_) => {
                self.record_held(&held).await?;
                return Ok(Attempted::Done(message));
            }
        };
        if let AttemptEnd::GiveUp(_, give_up) = end {
            if !self
                .give_up_due(&mut message, &lease, &loaded, &give_up, now)
                .await?
            {
                return Ok(Attempted::Lost(message));
            }
            let tally = self.tally(&message, &loaded).await?;
            if message.conclude_tallied(&tally, now).is_err() {
                self.record_held(&held).await?;
                return Ok(Attempted::Done(message));
            }
        }
        if !self.save_attempt(&message, &lease, &held).await? {
            return Ok(Attempted::Lost(message));
        }
        Ok(Attempted::Done(message))
    }

    /// Records the outcomes an attempt held back when no save follows to write them.
    async fn record_held(&self, held: &[Delivery]) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        self.ports.messages.record_deliveries(held).await
    }

    /// Gives up the deliveries of `message` that are still due: in the store and in memory
    /// for a paged message, in memory only for a loaded one, whose save writes every loaded
    /// delivery with its progress in one transaction. Returns `false` when the lease was lost.
    async fn give_up_due(
        &self,
        message: &mut Message,
        lease: &Lease,
        loaded: &Loaded,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if matches!(loaded, Loaded::Paged)
            && !self
                .ports
                .messages
                .give_up_due_deliveries(message.id, lease, give_up, now)
                .await?
        {
            return Ok(false);
        }
        message.give_up_due(give_up, now);
        Ok(true)
    }

    /// Saves the conclusion of an attempt, with `held`, the outcomes not yet recorded, in the
    /// same write. Returns `false` when the lease was lost; the held outcomes are recorded
    /// anyway then, since a provider's answer is a fact worth keeping whoever holds the lease.
    async fn save_attempt(
        &self,
        message: &Message,
        lease: &Lease,
        held: &[Delivery],
    ) -> Result<bool, StoreError> {
        let store = &self.ports.messages;
        if held.is_empty() {
            return store.save_progress(message, Some(lease)).await;
        }
        match store.save_attempt(message, lease, held).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                store.record_deliveries(held).await?;
                Ok(false)
            }
            Err(error) => {
                // The write may have failed for a moment only (a busy database): one more try
                // at the outcomes alone spares their devices a second notification. Its own
                // failure adds nothing to the error returned.
                let _ = store.record_deliveries(held).await;
                Err(error)
            }
        }
    }

    /// The tally of `message`'s deliveries: counted in memory when they are all loaded (and
    /// kept up to date by the attempt), asked of the store otherwise.
    async fn tally(&self, message: &Message, loaded: &Loaded) -> Result<DeliveryTally, StoreError> {
        match loaded {
            Loaded::All(_) => Ok(DeliveryTally::of(&message.deliveries)),
            Loaded::Paged => self.ports.messages.delivery_tally(message.id).await,
        }
    }

    /// Sends every due delivery of `message`, `delivery_concurrency` at a time, and records
    /// the outcomes as they come in (also on the loaded copy in `message`, when it has one).
    ///
    /// Two halves run side by side in one task. The sending half reads the due deliveries a
    /// page at a time, with their devices, reading the next page while the last sends of the
    /// previous one are still in flight, and keeps `delivery_concurrency` sends going. The
    /// recording half writes outcomes in batches: every outcome that arrived while the
    /// previous batch was being written, up to [`RECORD_BATCH`]. A slow provider thus has
    /// its answers written nearly one by one, as they arrive, and a fast one costs one commit
    /// per batch instead of one per device. When the recording half falls behind, the
    /// channel between them fills and the sending half waits.
    ///
    /// A loaded message holds the outcomes of its last batch in `held` rather than recording
    /// them: the save that concludes the attempt writes them (see
    /// [`PushService::record_outcomes`]).
    ///
    /// Returns `false` when the lease was lost; the sends still in flight are dropped then.
    async fn send_due(
        &self,
        app: &Application,
        message: &mut Message,
        (lease, batch): (&mut Lease, Option<&Batch>),
        loaded: &Loaded,
        started: OffsetDateTime,
        (retry_after, held): (&mut Option<Duration>, &mut Vec<Delivery>),
    ) -> Result<bool, StoreError> {
        if !self.keep_lease(message.id, lease, batch).await? {
            return Ok(false);
        }
        let (mut outcomes_tx, outcomes_rx) = mpsc::channel::<Sent>(RECORD_BATCH);
        let spec = message.spec.clone();
        let concurrency = self.settings.delivery_concurrency.max(1);
        // Each due delivery of a loaded message gives exactly one outcome, so the recording
        // half knows which batch is the last.
        let expected = match loaded {
            Loaded::All(_) => Some(message.due_deliveries().count()),
            Loaded::Paged => None,
        };
        let pages = match loaded {
            // Known from planning: one page of every due delivery, with no store call.
            Loaded::All(devices) => {
                let page: Vec<DueDelivery> = message
                    .due_deliveries()
                    .map(|delivery| {
                        let device = delivery.device_id.and_then(|id| devices.get(&id).cloned());
                        (delivery.clone(), device)
                    })
                    .collect();
                Either::Left(stream::once(future::ready(Ok(page))))
            }
            Loaded::Paged => Either::Right(self.due_pages(app, message.id, batch)),
        };
        let sending = async move {
            let spec = &spec;
            let mut built = BTreeMap::new();
            let mut sent = std::pin::pin!(
                pages
                    .map_ok(|page| stream::iter(page).map(Ok::<_, StoreError>))
                    .try_flatten()
                    .map(move |due| {
                        let prepared = due.map(|(delivery, device)| {
                            let prepared = self.prepare(
                                app,
                                spec,
                                &delivery,
                                device.as_ref(),
                                started,
                                &mut built,
                            );
                            (delivery, prepared)
                        });
                        async move {
                            let (delivery, prepared) = prepared?;
                            let outcome = match prepared {
                                Prepared::Send(provider, payload) => {
                                    provider.send(&app.id, &payload).await
                                }
                                Prepared::Done(outcome) => outcome,
                            };
                            Ok((delivery, outcome))
                        }
                    })
                    .buffer_unordered(concurrency)
            );
            while let Some(item) = sent.next().await {
                let failed = item.is_err();
                // A closed channel means the recording half stopped: the lease was lost or
                // the store failed, and the sends still in flight are dropped.
                if outcomes_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        };
        let recording = self.record_outcomes(
            app,
            message,
            (lease, batch),
            (outcomes_rx, expected),
            (retry_after, held),
        );
        let (sending, recording) = (std::pin::pin!(sending), std::pin::pin!(recording));
        match future::select(sending, recording).await {
            // Everything was sent: the recording half writes what is left and ends when the
            // channel closes.
            Either::Left(((), recording)) => recording.await,
            // The recording half stopped first (the lease was lost or the store failed): the
            // sends still in flight are dropped at once.
            Either::Right((kept, _sending)) => kept,
        }
    }

    /// The due deliveries of message `id`, a page at a time, each with its device.
    ///
    /// In a batch, the first page is small ([`FIRST_PAGE`]), and a message with more due
    /// deliveries than that is a large one: it waits for one of the few permits its
    /// application has for large messages in the batch before it reads on. A batch may send
    /// a thousand messages at once, but only a few per application hold a page of
    /// `delivery_page` deliveries and `delivery_concurrency` sends each, which bounds its
    /// memory however its backlog is made.
    fn due_pages<'a>(
        &'a self,
        app: &'a Application,
        id: MessageId,
        batch: Option<&'a Batch>,
    ) -> impl Stream<Item = Result<Vec<DueDelivery>, StoreError>> + Send + 'a {
        let page = self.settings.delivery_page.max(1);
        let first = match batch {
            Some(_) => page.min(FIRST_PAGE),
            None => page,
        };
        // The state is the cursor, `None` once the last page was read, and the permit of a
        // large message, held until its last page was read.
        stream::try_unfold(
            (Some(None), None::<Permit>),
            move |(cursor, permit): (Option<Option<DeliveryId>>, Option<Permit>)| async move {
                let Some(after) = cursor else {
                    return Ok(None);
                };
                let (limit, permit) = match (after, batch) {
                    (None, _) => (first, permit),
                    (Some(_), Some(batch)) if permit.is_none() => {
                        (page, Some(batch.large_message(&app.id).await))
                    }
                    (Some(_), _) => (page, permit),
                };
                let page = self.due_page(app, id, after, limit).await?;
                let Some((last, _)) = page.last() else {
                    return Ok(None);
                };
                let next = (page.len() >= limit as usize).then_some(Some(last.id));
                Ok(Some((page, (next, permit))))
            },
        )
    }

    /// One page of due deliveries of message `id` with their devices: in one read when the
    /// store can, else the deliveries and then their devices.
    async fn due_page(
        &self,
        app: &Application,
        id: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let messages = &self.ports.messages;
        if let Some(page) = messages.due_page(&app.id, id, after, limit).await? {
            return Ok(page);
        }
        let due = messages.due_deliveries(id, after, limit).await?;
        let device_ids: Vec<DeviceId> = due.iter().filter_map(|d| d.device_id).collect();
        let devices: PageDevices = if device_ids.is_empty() {
            BTreeMap::new()
        } else {
            self.ports
                .devices
                .get_devices(&app.id, &device_ids)
                .await?
                .into_iter()
                .map(|d| (d.id, Recipient::from(d)))
                .collect()
        };
        Ok(due
            .into_iter()
            .map(|delivery| {
                let device = delivery.device_id.and_then(|id| devices.get(&id).cloned());
                (delivery, device)
            })
            .collect())
    }

    /// The recording half of [`PushService::send_due`]. Returns `false` when the lease was
    /// lost.
    ///
    /// When `expected` outcomes are all there will be (a loaded message), the batch that
    /// brings the last of them is not recorded but moved to `held`, for the save that
    /// concludes the attempt: no send waits between that batch and the save (only the
    /// deactivation of dead devices comes between), so holding it loses no more in a crash
    /// than recording it first would, and saves a write. Batches
    /// that arrive while sends are still in flight are recorded as they come.
    async fn record_outcomes(
        &self,
        app: &Application,
        message: &mut Message,
        (lease, in_batch): (&mut Lease, Option<&Batch>),
        (mut outcomes, expected): (mpsc::Receiver<Sent>, Option<usize>),
        (retry_after, held): (&mut Option<Duration>, &mut Vec<Delivery>),
    ) -> Result<bool, StoreError> {
        // Sized for what the message can bring, not for a full batch: a worker has up to a
        // thousand one-device messages in flight, and 512 deliveries reserved for each held
        // 80 MB (heaptrack, 52,000 queued messages drained through the APNs mock at 50 ms).
        let mut batch: Vec<Delivery> =
            Vec::with_capacity(expected.unwrap_or(RECORD_BATCH).min(RECORD_BATCH));
        let mut dead: Vec<(DeviceId, String)> = Vec::new();
        let mut received: usize = 0;
        while let Some(first) = outcomes.next().await {
            let mut failure = None;
            let mut next = Some(first);
            while let Some(item) = next {
                let (mut delivery, outcome) = match item {
                    Ok(sent) => sent,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                if let SendOutcome::Transient {
                    retry_after: Some(wait),
                    ..
                } = &outcome
                {
                    *retry_after = Some(retry_after.map_or(*wait, |w| w.max(*wait)));
                }
                if delivery.channel == Channel::Onesignal
                    && let SendOutcome::Accepted { details, .. } = &outcome
                {
                    message.extra_sender_data.clone_from(details);
                }
                let now = self.now();
                delivery.record(&outcome, now);
                message.record_outcome(delivery.id, &outcome, now);
                if let (SendOutcome::DeadToken { reason, .. }, Some(device)) =
                    (&outcome, delivery.device_id)
                {
                    dead.push((device, format!("dead token: {reason}")));
                }
                batch.push(delivery);
                received += 1;
                next = if batch.len() < RECORD_BATCH {
                    outcomes.try_recv().ok()
                } else {
                    None
                };
            }
            if failure.is_none() && expected == Some(received) {
                held.append(&mut batch);
            } else {
                // What was sent is recorded even when reading the next page failed.
                self.ports.messages.record_deliveries(&batch).await?;
                batch.clear();
            }
            let now = self.now();
            for (device, reason) in dead.drain(..) {
                self.ports
                    .devices
                    .deactivate_device(&app.id, device, &reason, now)
                    .await?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if !self.keep_lease(message.id, lease, in_batch).await? {
                // No save follows: what is held is recorded now.
                self.record_held(held).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What delivery `delivery` needs to go out: its provider and payload, or the outcome it
    /// gets without a request. `device` is its device, `None` when it was not found. `built`
    /// keeps the first payload of each platform, so that a payload that does not depend on the
    /// device (APNs) is built once per attempt.
    fn prepare(
        &self,
        app: &Application,
        spec: &MessageSpec,
        delivery: &Delivery,
        device: Option<&Recipient>,
        now: OffsetDateTime,
        built: &mut BTreeMap<Platform, Payload>,
    ) -> Prepared<'_> {
        let payload = match delivery.device_id {
            Some(id) => match device {
                None => {
                    return Prepared::Done(permanent(
                        "device_deleted",
                        &format!("device {id} no longer exists"),
                    ));
                }
                Some(device) if !device.active => {
                    let why = device
                        .deactivation_reason
                        .as_deref()
                        .unwrap_or("deactivated");
                    return Prepared::Done(permanent(
                        "device_inactive",
                        &format!("device {id} is inactive: {why}"),
                    ));
                }
                Some(device) => {
                    let platform = device.platform();
                    match built
                        .get(&platform)
                        .and_then(|first| first.for_device(&device.token))
                    {
                        Some(payload) => Ok(payload),
                        None => {
                            let payload = payload::build(
                                app,
                                spec,
                                PayloadTarget::Device(&device.token),
                                now,
                            );
                            if let Ok(payload) = &payload {
                                built.entry(platform).or_insert_with(|| payload.clone());
                            }
                            payload
                        }
                    }
                }
            },
            None => match spec.target.recipient() {
                Some(user) => payload::build(app, spec, PayloadTarget::ExternalUser(user), now),
                None => {
                    return Prepared::Done(permanent(
                        "no_recipient",
                        "a OneSignal delivery needs a user id",
                    ));
                }
            },
        };
        let payload: Payload = match payload {
            Ok(p) => p,
            Err(e) => return Prepared::Done(permanent("payload", &e.to_string())),
        };
        let Some(provider) = self.providers.get(delivery.channel) else {
            return Prepared::Done(SendOutcome::Misconfigured {
                code: "no_provider".to_owned(),
                reason: format!(
                    "no {} provider is configured for application {}",
                    delivery.channel.as_str(),
                    app.id
                ),
            });
        };
        Prepared::Send(provider, payload)
    }

    /// Releases every lease this worker holds, so that other workers take its messages at
    /// once (a graceful shutdown). Returns how many were released.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn release_leases(&self) -> Result<u64, StoreError> {
        self.ports
            .messages
            .release_leases(&self.settings.worker_id)
            .await
    }

    /// The id this worker's leases carry.
    #[must_use]
    pub fn worker_id(&self) -> &str {
        &self.settings.worker_id
    }

    /// How many messages are due now.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        self.ports.messages.count_due(self.now()).await
    }

    // ----- stored messages -----

    /// A message as it is shown: with its first [`DELIVERIES_SHOWN`] deliveries, and the
    /// tally of all of them.
    ///
    /// # Errors
    /// [`MessageError::UnknownApplication`], [`MessageError::NotFound`] or
    /// [`MessageError::Store`].
    pub async fn get_message(
        &self,
        app: &str,
        id: MessageId,
    ) -> Result<(Message, DeliveryTally), MessageError> {
        let app = self.apps.get(app)?;
        let message = self
            .ports
            .messages
            .get_message_head(&app.id, id, DELIVERIES_SHOWN)
            .await?
            .ok_or(MessageError::NotFound(id))?;
        let tally = self.ports.messages.delivery_tally(id).await?;
        Ok((message, tally))
    }

    /// A message with all its deliveries, for an operator's action on it.
    async fn whole_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let app = self.apps.get(app)?;
        self.ports
            .messages
            .get_message(&app.id, id)
            .await?
            .ok_or(MessageError::NotFound(id))
    }

    /// Messages matching the filter; the filter's application, when set, must be configured.
    ///
    /// # Errors
    /// [`MessageError::UnknownApplication`] or [`MessageError::Store`].
    pub async fn list_messages(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<Message>, MessageError> {
        if let Some(app) = &filter.app {
            self.apps.get(app.as_str())?;
        }
        Ok(self.ports.messages.list_messages(filter).await?)
    }

    /// An operator's retry of an ERROR message: it goes back to WAITING for the batch worker.
    ///
    /// # Errors
    /// [`MessageError::Illegal`] unless the message is ERROR, and the errors of
    /// [`PushService::get_message`].
    pub async fn retry_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let mut message = self.whole_message(app, id).await?;
        message.requeue(self.now())?;
        if !self.ports.messages.save_progress(&message, None).await? {
            return Err(MessageError::Busy(id));
        }
        Ok(message)
    }

    /// An operator's cancel of a WAITING message: it becomes ERROR `cancelled`.
    ///
    /// # Errors
    /// [`MessageError::Illegal`] unless the message is WAITING, and the errors of
    /// [`PushService::get_message`].
    pub async fn cancel_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let mut message = self.whole_message(app, id).await?;
        message.cancel(self.now())?;
        if !self.ports.messages.save_progress(&message, None).await? {
            return Err(MessageError::Busy(id));
        }
        Ok(message)
    }

    // ----- API keys -----

    /// Stores a new key for `secret`, which the caller drew from a secure random source, and
    /// returns it with the secret: the only time the secret is seen.
    ///
    /// # Errors
    /// [`KeyError::BadName`], [`KeyError::Unstorable`] naming `name`, [`KeyError::WeakSecret`],
    /// [`KeyError::UnknownApplication`] for an application scope that is not configured, or
    /// [`KeyError::Store`].
    pub async fn create_api_key(
        &self,
        name: &str,
        scope: KeyScope,
        secret: String,
    ) -> Result<CreatedApiKey, KeyError> {
        let name = storable("name", name.trim())?;
        if name.is_empty() || name.chars().count() > 100 {
            return Err(KeyError::BadName);
        }
        if secret.len() < 32 {
            return Err(KeyError::WeakSecret);
        }
        if let KeyScope::App(app) = &scope {
            self.apps.get(app.as_str())?;
        }
        let new = NewApiKey {
            name: name.to_owned(),
            scope,
            prefix: secret.chars().take(12).collect(),
            hash: KeyHash::of(&secret),
        };
        let key = self.ports.keys.insert_api_key(&new, self.now()).await?;
        Ok(CreatedApiKey { key, secret })
    }

    /// The principal a presented API key secret acts for.
    ///
    /// # Errors
    /// [`AuthError::UnknownKey`] or [`AuthError::Revoked`]; a store failure is reported as
    /// `Err(Err(StoreError))` so that callers can answer 503 rather than 401.
    pub async fn authenticate_key(
        &self,
        secret: &str,
    ) -> Result<Result<Principal, AuthError>, StoreError> {
        self.authenticate_key_hash(&KeyHash::of(secret)).await
    }

    /// The principal the key whose secret hashes to `presented` acts for, asked again for
    /// each request of a session that signed in with it (the admin UI keeps the hash, not
    /// the key), so that revoking the key ends its sessions. The key store may answer from a
    /// cache that forgets a key revoked through it at once and one revoked by another
    /// process after a short age (the adapters' `key_cache`).
    ///
    /// # Errors
    /// As [`PushService::authenticate_key`].
    pub async fn authenticate_key_hash(
        &self,
        presented: &KeyHash,
    ) -> Result<Result<Principal, AuthError>, StoreError> {
        let Some(key) = self.ports.keys.find_api_key(presented).await? else {
            return Ok(Err(AuthError::UnknownKey));
        };
        if !key
            .hash
            .as_ref()
            .is_some_and(|stored| stored.matches(presented))
        {
            return Ok(Err(AuthError::UnknownKey));
        }
        if key.revoked_at.is_some() {
            return Ok(Err(AuthError::Revoked));
        }
        Ok(Ok(match key.scope {
            KeyScope::Admin => Principal::Admin,
            KeyScope::App(app) => Principal::App(app),
        }))
    }

    /// # Errors
    /// [`KeyError::Store`].
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, KeyError> {
        Ok(self.ports.keys.list_api_keys().await?)
    }

    /// # Errors
    /// [`KeyError::NotFound`] or [`KeyError::Store`].
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        self.ports
            .keys
            .revoke_api_key(id, self.now())
            .await?
            .ok_or(KeyError::NotFound(id))
    }

    /// Whether any key that is not revoked exists (the server creates a first admin key
    /// otherwise).
    ///
    /// # Errors
    /// [`KeyError::Store`].
    pub async fn has_active_api_keys(&self) -> Result<bool, KeyError> {
        Ok(self
            .ports
            .keys
            .list_api_keys()
            .await?
            .iter()
            .any(|k| k.revoked_at.is_none()))
    }

    // ----- templates -----

    /// Creates or replaces a template after checking that each field is within the
    /// renderer's size and nesting limits and parses.
    ///
    /// # Errors
    /// [`TemplateError::Unstorable`] naming the field, [`TemplateError::Render`] (a syntax
    /// error or a limit, naming the field), [`TemplateError::UnknownApplication`] or
    /// [`TemplateError::Store`].
    pub async fn put_template(
        &self,
        spec: TemplateSpec,
    ) -> Result<(Template, Registration), TemplateError> {
        self.apps.get(spec.app.as_str())?;
        spec.validate()?;
        let renderer = &self.ports.renderer;
        renderer.check("body", &spec.body).await?;
        if let Some(heading) = &spec.heading {
            renderer.check("heading", heading).await?;
        }
        if let Some(url) = &spec.url {
            renderer.check("url", url).await?;
        }
        Ok(self.ports.templates.put_template(&spec, self.now()).await?)
    }

    /// # Errors
    /// [`TemplateError::UnknownApplication`], [`TemplateError::NotFound`] or
    /// [`TemplateError::Store`].
    pub async fn get_template(&self, app: &str, slug: &Slug) -> Result<Template, TemplateError> {
        let app = self.apps.get(app)?;
        self.ports
            .templates
            .get_template(&app.id, slug)
            .await?
            .ok_or_else(|| TemplateError::NotFound(slug.clone()))
    }

    /// # Errors
    /// [`TemplateError::UnknownApplication`] or [`TemplateError::Store`].
    pub async fn list_templates(&self, app: &str) -> Result<Vec<Template>, TemplateError> {
        let app = self.apps.get(app)?;
        Ok(self.ports.templates.list_templates(&app.id).await?)
    }

    /// # Errors
    /// [`TemplateError::UnknownApplication`], [`TemplateError::NotFound`] or
    /// [`TemplateError::Store`].
    pub async fn delete_template(&self, app: &str, slug: &Slug) -> Result<(), TemplateError> {
        let app = self.apps.get(app)?;
        if self.ports.templates.delete_template(&app.id, slug).await? {
            Ok(())
        } else {
            Err(TemplateError::NotFound(slug.clone()))
        }
    }

    /// Renders a template that is not stored (an edit being previewed) with a context,
    /// storing and sending nothing.
    ///
    /// # Errors
    /// [`TemplateError::UnknownApplication`], or [`TemplateError::Unstorable`] or
    /// [`TemplateError::Render`] naming the field, as saving it would.
    pub async fn render_unsaved(
        &self,
        spec: &TemplateSpec,
        context: &Map<String, Value>,
    ) -> Result<Rendered, TemplateError> {
        self.apps.get(spec.app.as_str())?;
        spec.validate()?;
        let now = self.now();
        let template = Template {
            app: spec.app.clone(),
            slug: spec.slug.clone(),
            body: spec.body.clone(),
            heading: spec.heading.clone(),
            url: spec.url.clone(),
            is_active: spec.is_active,
            allow_duplicates: spec.allow_duplicates,
            created_at: now,
            updated_at: now,
        };
        Ok(self.render(&template, context).await?)
    }

    /// Renders a stored template with a context and sends nothing (a preview).
    ///
    /// # Errors
    /// [`TemplateError::Render`] and the errors of [`PushService::get_template`].
    pub async fn render_template(
        &self,
        app: &str,
        slug: &Slug,
        context: &Map<String, Value>,
    ) -> Result<Rendered, TemplateError> {
        let template = self.get_template(app, slug).await?;
        Ok(self.render(&template, context).await?)
    }
}

/// Where an attempt finds the deliveries it sends.
enum Loaded {
    /// In the store, read a page at a time with their devices (a claimed message with more
    /// deliveries than its claim brought, a broadcast).
    Paged,
    /// Every delivery of the message is in `message.deliveries` and every device its due
    /// deliveries name is here (perhaps with others of its application): a message with
    /// listed deliveries that was just stored, whose devices planning read, or a small message
    /// that came with its deliveries in a batch's claim, whose devices the claim read. The
    /// attempt then reads neither deliveries, devices nor tallies from the store, and writes
    /// its last outcomes with its progress.
    All(Arc<PageDevices>),
}

/// How an attempt at a claimed message ended.
enum Attempted {
    /// The attempt concluded (or found nothing to do) and saved what it did.
    Done(Message),
    /// Another worker took the message over; it finishes it, and nothing more was saved.
    Lost(Message),
}

impl Attempted {
    fn into_message(self) -> Message {
        match self {
            Attempted::Done(message) | Attempted::Lost(message) => message,
        }
    }
}

fn permanent(code: &str, reason: &str) -> SendOutcome {
    SendOutcome::Permanent {
        code: code.to_owned(),
        reason: reason.to_owned(),
        details: None,
    }
}

fn dedup(related: Vec<RelatedObject>) -> Vec<RelatedObject> {
    let mut seen = BTreeSet::new();
    related
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

mod batch;
pub use batch::PollAgain;
use batch::{Batch, Permit};
#[cfg(test)]
mod tests;
