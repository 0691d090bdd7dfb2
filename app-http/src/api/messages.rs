//! `/v1/apps/{app}/messages`: send (directly or from a template), list, read, retry and
//! cancel messages.
//!
//! A `now` send runs in its own task and the request waits for it at most
//! `http.send_wait_secs`: a slower send is answered 202 with the message as stored, and
//! finishes in the background. Running it in a task also means that a client that hangs up
//! does not cut a send short.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_domain::app::SenderKind;
use clarion_domain::ids::{DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{
    Channel, Content, Delivery, DeliveryState, DeliveryTally, Message, MessageState, Priority,
    PushOptions, Target,
};
use clarion_domain::ports::MessageFilter;
use clarion_domain::service::{
    Dispatch, SendError, SendRequest, TemplateSend, TemplateSendRequest,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use utoipa::{IntoParams, ToSchema};

use crate::api::devices::PlatformDto;
use crate::api::{paginate, parse_cursor, parse_limit, parse_time};
use crate::error::{ApiError, Problem, id_error};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::AppState;

/// Who a message is for: exactly one of a user, device ids, or a broadcast.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetDto {
    /// Every active device of this user.
    UserId(String),
    /// These devices of the application.
    DeviceIds(Vec<i64>),
    /// Every active device of the application, optionally of one platform.
    Broadcast(BroadcastDto),
}

/// A broadcast filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BroadcastDto {
    #[serde(default)]
    pub platform: Option<PlatformDto>,
}

impl TargetDto {
    fn into_domain(self) -> Result<Target, ApiError> {
        Ok(match self {
            TargetDto::UserId(raw) => Target::User {
                user_id: UserId::parse(&raw).map_err(|e| id_error("target.user_id", &e))?,
            },
            TargetDto::DeviceIds(ids) => Target::Devices {
                device_ids: ids.into_iter().map(DeviceId).collect(),
            },
            TargetDto::Broadcast(filter) => Target::Broadcast {
                platform: filter.platform.map(Into::into),
            },
        })
    }

    fn from_domain(target: &Target) -> Self {
        match target {
            Target::User { user_id } => TargetDto::UserId(user_id.to_string()),
            Target::Devices { device_ids } => {
                TargetDto::DeviceIds(device_ids.iter().map(|d| d.0).collect())
            }
            Target::Broadcast { platform } => TargetDto::Broadcast(BroadcastDto {
                platform: platform.map(Into::into),
            }),
        }
    }
}

/// How urgently a message should be delivered.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PriorityDto {
    #[default]
    High,
    Normal,
}

impl From<PriorityDto> for Priority {
    fn from(value: PriorityDto) -> Self {
        match value {
            PriorityDto::High => Priority::High,
            PriorityDto::Normal => Priority::Normal,
        }
    }
}

impl From<Priority> for PriorityDto {
    fn from(value: Priority) -> Self {
        match value {
            Priority::High => PriorityDto::High,
            Priority::Normal => PriorityDto::Normal,
        }
    }
}

/// Whether the message is sent during the request or left to the worker.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DispatchDto {
    Now,
    Queue,
}

/// Platform options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OptionsDto {
    pub badge: Option<u32>,
    pub sound: Option<String>,
    pub thread_id: Option<String>,
    pub category: Option<String>,
    /// APNs `apns-collapse-id`, FCM `collapse_key`, Web Push `Topic`.
    pub collapse_key: Option<String>,
    /// Seconds the provider keeps the message for an offline device (at most 28 days).
    pub time_to_live: Option<u32>,
    pub content_available: bool,
    pub mutable_content: bool,
}

impl From<OptionsDto> for PushOptions {
    fn from(o: OptionsDto) -> Self {
        PushOptions {
            badge: o.badge,
            sound: o.sound,
            thread_id: o.thread_id,
            category: o.category,
            collapse_key: o.collapse_key,
            time_to_live: o.time_to_live,
            content_available: o.content_available,
            mutable_content: o.mutable_content,
        }
    }
}

impl From<&PushOptions> for OptionsDto {
    fn from(o: &PushOptions) -> Self {
        OptionsDto {
            badge: o.badge,
            sound: o.sound.clone(),
            thread_id: o.thread_id.clone(),
            category: o.category.clone(),
            collapse_key: o.collapse_key.clone(),
            time_to_live: o.time_to_live,
            content_available: o.content_available,
            mutable_content: o.mutable_content,
        }
    }
}

/// An object of the calling application that a message is about, such as `order` / `42`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RelatedObjectDto {
    pub kind: String,
    pub object_id: String,
}

fn related_objects(raw: Vec<RelatedObjectDto>) -> Result<Vec<RelatedObject>, ApiError> {
    raw.into_iter()
        .enumerate()
        .map(|(i, r)| {
            RelatedObject::new(&r.kind, &r.object_id)
                .map_err(|e| id_error(&format!("related_objects[{i}]"), &e))
        })
        .collect()
}

fn tag(raw: Option<&str>) -> Result<Option<Tag>, ApiError> {
    raw.map(|raw| Tag::parse(raw).map_err(|e| id_error("tag", &e)))
        .transpose()
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    pub target: TargetDto,
    /// The title.
    #[serde(default)]
    pub heading: Option<String>,
    /// The text; may be empty for a silent push with `options.content_available`.
    pub body: String,
    /// A URL to open.
    #[serde(default)]
    pub url: Option<String>,
    /// Custom data delivered with the notification.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extra_data: Option<Map<String, Value>>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub priority: Option<PriorityDto>,
    #[serde(default)]
    pub options: Option<OptionsDto>,
    #[serde(default)]
    pub related_objects: Option<Vec<RelatedObjectDto>>,
    /// Whether transient failures are retried; true by default.
    #[serde(default)]
    pub retry_sending: Option<bool>,
    /// `now` (the default) or `queue` (the default for broadcasts).
    #[serde(default)]
    pub dispatch: Option<DispatchDto>,
}

/// A message to send from a stored template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateSendBody {
    pub slug: String,
    /// The template's variables.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
    pub target: TargetDto,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub extra_data: Option<Map<String, Value>>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub priority: Option<PriorityDto>,
    #[serde(default)]
    pub options: Option<OptionsDto>,
    #[serde(default)]
    pub related_objects: Option<Vec<RelatedObjectDto>>,
    #[serde(default)]
    pub retry_sending: Option<bool>,
    #[serde(default)]
    pub dispatch: Option<DispatchDto>,
}

impl SendBody {
    /// The domain's request, and whether it is sent now or queued.
    pub(crate) fn into_request(self) -> Result<(SendRequest, Dispatch), ApiError> {
        let target = self.target.into_domain()?;
        let dispatch = dispatch_for(self.dispatch, &target);
        let request = SendRequest {
            target,
            content: Content {
                heading: self.heading,
                body: self.body,
                url: self.url,
                extra_data: self.extra_data,
            },
            tag: tag(self.tag.as_deref())?,
            priority: self.priority.unwrap_or_default().into(),
            options: self.options.unwrap_or_default().into(),
            related_objects: related_objects(self.related_objects.unwrap_or_default())?,
            retry_sending: self.retry_sending.unwrap_or(true),
        };
        Ok((request, dispatch))
    }
}

impl TemplateSendBody {
    /// The domain's request, and whether it is sent now or queued.
    pub(crate) fn into_request(self) -> Result<(TemplateSendRequest, Dispatch), ApiError> {
        let target = self.target.into_domain()?;
        let dispatch = dispatch_for(self.dispatch, &target);
        let request = TemplateSendRequest {
            slug: Slug::parse(&self.slug).map_err(|e| id_error("slug", &e))?,
            context: self.context.unwrap_or_default(),
            target,
            extra_data: self.extra_data,
            tag: tag(self.tag.as_deref())?,
            priority: self.priority.unwrap_or_default().into(),
            options: self.options.unwrap_or_default().into(),
            related_objects: related_objects(self.related_objects.unwrap_or_default())?,
            retry_sending: self.retry_sending.unwrap_or(true),
        };
        Ok((request, dispatch))
    }
}

fn dispatch_for(chosen: Option<DispatchDto>, target: &Target) -> Dispatch {
    match chosen {
        Some(DispatchDto::Now) => Dispatch::Now,
        Some(DispatchDto::Queue) => Dispatch::Queue,
        None if matches!(target, Target::Broadcast { .. }) => Dispatch::Queue,
        None => Dispatch::Now,
    }
}

/// A message's state.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StateDto {
    Waiting,
    Sent,
    Error,
    ErrorRetry,
    Debug,
}

impl From<MessageState> for StateDto {
    fn from(value: MessageState) -> Self {
        match value {
            MessageState::Waiting => StateDto::Waiting,
            MessageState::Sent => StateDto::Sent,
            MessageState::Error => StateDto::Error,
            MessageState::ErrorRetry => StateDto::ErrorRetry,
            MessageState::Debug => StateDto::Debug,
        }
    }
}

/// How a message leaves the process.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SenderDto {
    Direct,
    Onesignal,
    Debug,
}

/// The provider a delivery goes through.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelDto {
    Apns,
    Fcm,
    Webpush,
    Onesignal,
    Debug,
}

/// The state of one delivery.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStateDto {
    Pending,
    Accepted,
    Retrying,
    Failed,
    DeadToken,
    Debug,
}

/// One targeted device (or OneSignal user) of a message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryResponse {
    pub id: i64,
    /// `null` for OneSignal deliveries.
    pub device_id: Option<i64>,
    pub channel: ChannelDto,
    pub state: DeliveryStateDto,
    pub attempts: u32,
    /// The provider's id of the notification (`apns-id`, the FCM message name...).
    pub provider_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Delivery> for DeliveryResponse {
    fn from(d: &Delivery) -> Self {
        Self {
            id: d.id.0,
            device_id: d.device_id.map(|id| id.0),
            channel: match d.channel {
                Channel::Apns => ChannelDto::Apns,
                Channel::Fcm => ChannelDto::Fcm,
                Channel::Webpush => ChannelDto::Webpush,
                Channel::Onesignal => ChannelDto::Onesignal,
                Channel::Debug => ChannelDto::Debug,
            },
            state: match d.state() {
                DeliveryState::Pending => DeliveryStateDto::Pending,
                DeliveryState::Accepted => DeliveryStateDto::Accepted,
                DeliveryState::Retrying => DeliveryStateDto::Retrying,
                DeliveryState::Failed => DeliveryStateDto::Failed,
                DeliveryState::DeadToken => DeliveryStateDto::DeadToken,
                DeliveryState::Debug => DeliveryStateDto::Debug,
            },
            attempts: d.attempts(),
            provider_id: d.provider_id().map(str::to_owned),
            error_code: d.error_code().map(str::to_owned),
            error_text: d.error_text().map(str::to_owned),
            details: d.details().cloned(),
            updated_at: d.updated_at(),
        }
    }
}

/// A stored message with its deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageResponse {
    pub id: i64,
    pub app: String,
    pub target: TargetDto,
    pub heading: Option<String>,
    pub body: String,
    pub url: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub extra_data: Option<Map<String, Value>>,
    /// The template it was rendered from, if any.
    pub template_slug: Option<String>,
    pub tag: Option<String>,
    pub priority: PriorityDto,
    pub options: OptionsDto,
    pub related_objects: Vec<RelatedObjectDto>,
    pub retry_sending: bool,
    pub sender: SenderDto,
    pub state: StateDto,
    pub error: Option<String>,
    pub number_of_send_attempts: u32,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// Provider response details (OneSignal).
    #[schema(value_type = Option<Object>)]
    pub extra_sender_data: Option<Value>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// The message's deliveries in id order: all of them, or the first 1,000 of a larger
    /// message (a broadcast); `deliveries_total` then says how many there are.
    pub deliveries: Vec<DeliveryResponse>,
    /// How many deliveries the message has, when they were counted (reading one message by
    /// its id, or a send answered 202); absent in lists and in other answers, whose
    /// `deliveries` are complete for a message of up to 1,000 deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_total: Option<u64>,
}

impl From<&(Message, DeliveryTally)> for MessageResponse {
    fn from((message, tally): &(Message, DeliveryTally)) -> Self {
        Self {
            deliveries_total: Some(tally.total),
            ..message.into()
        }
    }
}

impl From<&Message> for MessageResponse {
    fn from(m: &Message) -> Self {
        let spec = &m.spec;
        let progress = m.progress();
        Self {
            id: m.id.0,
            app: spec.app.to_string(),
            target: TargetDto::from_domain(&spec.target),
            heading: spec.content.heading.clone(),
            body: spec.content.body.clone(),
            url: spec.content.url.clone(),
            extra_data: spec.content.extra_data.clone(),
            template_slug: spec.template_slug.as_ref().map(ToString::to_string),
            tag: spec.tag.as_ref().map(ToString::to_string),
            priority: spec.priority.into(),
            options: (&spec.options).into(),
            related_objects: spec
                .related_objects
                .iter()
                .map(|r| RelatedObjectDto {
                    kind: r.kind().to_owned(),
                    object_id: r.object_id().to_owned(),
                })
                .collect(),
            retry_sending: spec.retry_sending,
            sender: match m.sender {
                SenderKind::Direct => SenderDto::Direct,
                SenderKind::Onesignal => SenderDto::Onesignal,
                SenderKind::Debug => SenderDto::Debug,
            },
            state: progress.state.into(),
            error: progress.error.clone(),
            number_of_send_attempts: progress.number_of_send_attempts,
            next_attempt_at: progress.next_attempt_at,
            sent_at: progress.sent_at,
            extra_sender_data: m.extra_sender_data.clone(),
            created_at: m.created_at,
            changed_at: m.changed_at,
            deliveries: m.deliveries.iter().map(Into::into).collect(),
            deliveries_total: None,
        }
    }
}

/// A page of messages, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<MessageResponse>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_cursor: Option<i64>,
}

/// Filters and pagination of the message list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    #[param(value_type = Option<StateDto>)]
    pub state: Option<String>,
    #[param(value_type = Option<String>)]
    pub tag: Option<String>,
    /// Only messages to this user id.
    #[param(value_type = Option<String>)]
    pub recipient: Option<String>,
    /// Only messages about this object, as `kind:object_id`.
    #[param(value_type = Option<String>)]
    pub related: Option<String>,
    /// Only messages created at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_after: Option<String>,
    /// Only messages created before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub created_before: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<i64>)]
    pub before: Option<String>,
    /// 1 to 500; 50 by default.
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
}

type Sent = (StatusCode, Json<MessageResponse>);

/// Runs a send in its own task and waits for it at most `wait`. A send that takes longer is
/// answered 202 with the message as stored so far; it finishes in the background. A queued
/// send only stores the message, which the answer waits for in any case: it runs in the
/// request's own task, sparing a task and a timer per request.
async fn bounded<T, F, Fut>(
    state: &AppState,
    (app, dispatch): (&str, Dispatch),
    run: F,
) -> Result<Result<T, Sent>, ApiError>
where
    F: FnOnce(Box<dyn Fn(MessageId) + Send + Sync>) -> Fut,
    Fut: Future<Output = Result<T, SendError>> + Send + 'static,
    T: Send + 'static,
{
    if dispatch == Dispatch::Queue {
        return Ok(Ok(run(Box::new(|_| {})).await?));
    }
    let (stored_tx, stored_rx) = oneshot::channel::<MessageId>();
    let stored_tx = Mutex::new(Some(stored_tx));
    let on_stored = Box::new(move |id: MessageId| {
        if let Some(tx) = stored_tx.lock().ok().and_then(|mut tx| tx.take()) {
            let _ = tx.send(id);
        }
    });
    let mut task = tokio::spawn(run(on_stored));
    let wait: Duration = state.send_wait;
    let joined = match tokio::time::timeout(wait, &mut task).await {
        Ok(joined) => joined,
        Err(_) => match stored_rx.await {
            Ok(id) => {
                tracing::info!(message = id.0, "send still under way; answering 202");
                let message = state.service.get_message(app, id).await?;
                return Ok(Err((StatusCode::ACCEPTED, Json((&message).into()))));
            }
            // The send failed before it stored anything: its task is done.
            Err(_) => task.await,
        },
    };
    let outcome = joined.map_err(|e| ApiError::Internal(anyhow::Error::new(e)))?;
    Ok(Ok(outcome?))
}

fn answer(message: &Message, dispatch: Dispatch) -> Sent {
    let status = match dispatch {
        Dispatch::Now => StatusCode::CREATED,
        Dispatch::Queue => StatusCode::ACCEPTED,
    };
    (status, Json(message.into()))
}

/// Send a message.
#[utoipa::path(
    post, path = "/v1/apps/{app}/messages", tag = "messages",
    params(("app" = String, Path, description = "The application id")),
    request_body = SendBody,
    responses(
        (status = 201, description = "Sent now; the message carries each delivery's outcome", body = MessageResponse),
        (status = 202, description = "Queued for the worker, or still sending after the bounded wait", body = MessageResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send_message(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Sent, ApiError> {
    let (request, dispatch) = body.into_request()?;
    let service = state.service.clone();
    let owned_app = app.clone();
    let sent = bounded(&state, (&app, dispatch), move |on_stored| async move {
        service
            .send_reporting(&owned_app, request, dispatch, &*on_stored)
            .await
    })
    .await?;
    Ok(match sent {
        Ok(message) => answer(&message, dispatch),
        Err(still_sending) => still_sending,
    })
}

/// Render a stored template and send the result.
#[utoipa::path(
    post, path = "/v1/apps/{app}/messages/template", tag = "messages",
    params(("app" = String, Path, description = "The application id")),
    request_body = TemplateSendBody,
    responses(
        (status = 201, description = "Sent now", body = MessageResponse),
        (status = 202, description = "Queued, or still sending after the bounded wait", body = MessageResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, description = "Unknown application or template", body = Problem),
        (status = 409, description = "The template may not send (inactive, or a duplicate); nothing was stored", body = Problem),
        (status = 413, body = Problem),
        (status = 422, description = "Invalid fields, or the template failed to render", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send_template(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiJson(body): ApiJson<TemplateSendBody>,
) -> Result<Sent, ApiError> {
    let (request, dispatch) = body.into_request()?;
    let service = state.service.clone();
    let owned_app = app.clone();
    let sent = bounded(&state, (&app, dispatch), move |on_stored| async move {
        service
            .send_template_reporting(&owned_app, request, dispatch, &*on_stored)
            .await
    })
    .await?;
    match sent {
        Ok(TemplateSend::Sent(message)) => Ok(answer(&message, dispatch)),
        Ok(TemplateSend::NotSent(reason)) => Err(ApiError::Conflict(format!("not sent: {reason}"))),
        Err(still_sending) => Ok(still_sending),
    }
}

/// List messages, newest first.
#[utoipa::path(
    get, path = "/v1/apps/{app}/messages", tag = "messages",
    params(("app" = String, Path, description = "The application id"), MessageListQuery),
    responses(
        (status = 200, body = MessagePage),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_messages(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiQuery(query): ApiQuery<MessageListQuery>,
) -> Result<Json<MessagePage>, ApiError> {
    let app_id = state.service.applications().get(&app)?.id.clone();
    let limit = parse_limit(query.limit.as_deref())?;
    let filter = MessageFilter {
        app: Some(app_id),
        state: query
            .state
            .as_deref()
            .map(|raw| {
                raw.parse::<MessageState>()
                    .map_err(|e| ApiError::invalid("state", e))
            })
            .transpose()?,
        tag: tag(query.tag.as_deref())?,
        recipient: query
            .recipient
            .as_deref()
            .map(|raw| UserId::parse(raw).map_err(|e| id_error("recipient", &e)))
            .transpose()?,
        related: query
            .related
            .as_deref()
            .map(|raw| RelatedObject::parse_pair(raw).map_err(|e| id_error("related", &e)))
            .transpose()?,
        created_after: parse_time("created_after", query.created_after.as_deref())?,
        created_before: parse_time("created_before", query.created_before.as_deref())?,
        before: parse_cursor("before", query.before.as_deref())?.map(MessageId),
        limit: Some(limit + 1),
    };
    let messages = state.service.list_messages(&filter).await?;
    let (messages, next_cursor) = paginate(messages, limit, |m| m.id.0);
    Ok(Json(MessagePage {
        items: messages.iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Read one message with its deliveries.
#[utoipa::path(
    get, path = "/v1/apps/{app}/messages/{id}", tag = "messages",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The message id")),
    responses(
        (status = 200, body = MessageResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_message(
    State(state): State<AppState>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
) -> Result<Json<MessageResponse>, ApiError> {
    let message = state.service.get_message(&app, MessageId(id)).await?;
    Ok(Json((&message).into()))
}

/// Send an ERROR message again: it goes back to WAITING for the worker.
#[utoipa::path(
    post, path = "/v1/apps/{app}/messages/{id}/retry", tag = "messages",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The message id")),
    responses(
        (status = 200, body = MessageResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "The message is not in state ERROR", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry_message(
    State(state): State<AppState>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
) -> Result<Json<MessageResponse>, ApiError> {
    let message = state.service.retry_message(&app, MessageId(id)).await?;
    Ok(Json((&message).into()))
}

/// Cancel a WAITING message: it becomes ERROR `cancelled`.
#[utoipa::path(
    post, path = "/v1/apps/{app}/messages/{id}/cancel", tag = "messages",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The message id")),
    responses(
        (status = 200, body = MessageResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "The message is not in state WAITING", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn cancel_message(
    State(state): State<AppState>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
) -> Result<Json<MessageResponse>, ApiError> {
    let message = state.service.cancel_message(&app, MessageId(id)).await?;
    Ok(Json((&message).into()))
}
