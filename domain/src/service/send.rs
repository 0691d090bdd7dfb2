//! Sending: a message, directly or from a template, is checked, planned (its deliveries and
//! their payloads against each provider's limits) and stored, and sent at once or left to the
//! batch worker; with the request and error types of sending.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::app::{Application, SenderKind, UnknownApplication};
use crate::device::{Device, DeviceFilter, Recipient};
use crate::ids::{DeviceId, MessageId, RelatedObject, Slug, Tag};
use crate::message::{
    Channel, Content, Message, MessageSpec, OptionError, Priority, PushOptions, Target,
};
use crate::payload::{self, PayloadError, PayloadTarget};
use crate::ports::{Lease, NewDeliveries, NewMessage, RenderError, StoreError};
use crate::service::PushService;
use crate::service::attempt::{Loaded, PageDevices};
use crate::template::{CannotSend, Template};
use crate::token::Platform;

/// Whether a new message is sent at once or left to the batch worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dispatch {
    /// Send within the call; the message comes back with the outcome of its first attempt. The
    /// default.
    #[default]
    Now,
    /// Store the message WAITING and return; the batch worker sends it.
    Queue,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendRequest {
    /// Who the message is for.
    pub target: Target,
    /// What it says.
    pub content: Content,
    /// A label to find and group messages by, such as a campaign.
    pub tag: Option<Tag>,
    /// How urgently it should be delivered.
    pub priority: Priority,
    /// The platform options: badge, sound, collapse key, time-to-live and the like.
    pub options: PushOptions,
    /// The caller's objects the message is about; one given twice is kept once.
    pub related_objects: Vec<RelatedObject>,
    /// Whether a transient failure is retried (pymess `retry_sending`); without it the first
    /// attempt is the last.
    pub retry_sending: bool,
}

/// A message to send from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSendRequest {
    /// The template to render, of the application sent for.
    pub slug: Slug,
    /// The variables the template is rendered with.
    pub context: Map<String, Value>,
    /// Who the message is for.
    pub target: Target,
    /// Custom data delivered with the notification, as given (it is not rendered).
    pub extra_data: Option<Map<String, Value>>,
    /// A label to find and group messages by.
    pub tag: Option<Tag>,
    /// How urgently it should be delivered.
    pub priority: Priority,
    /// The platform options.
    pub options: PushOptions,
    /// The caller's objects the message is about: a template that does not allow duplicates sends
    /// once for the same objects.
    pub related_objects: Vec<RelatedObject>,
    /// Whether a transient failure is retried.
    pub retry_sending: bool,
}

/// What `send_template` did.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateSend {
    /// The template rendered and the message was stored (and, with [`Dispatch::Now`], sent).
    Sent(Box<Message>),
    /// The template may not send; nothing was stored.
    NotSent(CannotSend),
}

/// Why a message could not be sent. Nothing is stored when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// An option or the content was refused; the error names the field.
    #[error("invalid message: {0}")]
    Invalid(#[from] OptionError),
    /// Some of the device ids are not devices of the application; it lists them.
    #[error("unknown device ids for this application: {}", join_ids(.0))]
    UnknownDevices(Vec<DeviceId>),
    /// The application's sender cannot reach this target: the `onesignal` sender sends to a user id
    /// only.
    #[error("{0}")]
    Unsupported(String),
    /// A payload is over its provider's limit, uses a key the provider reserves, or needs a
    /// setting the application lacks.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// The application has no template with this slug.
    #[error("template {0} not found")]
    TemplateNotFound(Slug),
    /// The template failed to render; the error names the field.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn join_ids(ids: &[DeviceId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl PushService {
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
}

fn dedup(related: Vec<RelatedObject>) -> Vec<RelatedObject> {
    let mut seen = BTreeSet::new();
    related
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}
