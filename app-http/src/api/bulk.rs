//! `POST /v1/apps/{app}/messages/bulk`: up to [`MAX_BULK_MESSAGES`] messages in one request,
//! each with its own target, content or template, options and dispatch, each checked and
//! answered on its own.
//!
//! The whole request is refused (a problem document) when it cannot be read, holds no
//! message or more than [`MAX_BULK_MESSAGES`], or reaches more than [`MAX_BULK_DELIVERIES`]
//! deliveries. Otherwise the answer is 200 with one result per message, in order: the stored
//! message, or the problem the single send would have answered.
//!
//! The messages go through the same service calls as single sends, [`BULK_CONCURRENCY`] at a
//! time until each is stored, so that the store commits them in groups; a `now` message is
//! then sent while the next ones are stored. Like the single send, the request waits for
//! `now` sends at most `http.send_wait_secs` (counted once for the whole request): a message
//! still sending then is answered 202 with the message as stored, and finishes in the
//! background.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use clarion_domain::app::SenderKind;
use clarion_domain::device::DeviceFilter;
use clarion_domain::ids::{MessageId, UserId};
use clarion_domain::message::{Message, Target};
use clarion_domain::service::Dispatch;
use hyper::body::Body as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::api::messages::{MessageResponse, SendBody, TemplateSendBody};
use crate::bulk::{BulkItem, MAX_BULK_DELIVERIES, MAX_BULK_MESSAGES};
use crate::error::{ApiError, FieldError, Problem};
use crate::extract::{ApiPath, is_json};
use crate::limits::is_body_timeout;
use crate::routes::AppState;

/// How many messages of one bulk request are checked and stored at once.
pub(crate) const BULK_CONCURRENCY: usize = 64;

// Only the document's: the handler reads the list as an `Envelope` and each message on its
// own, with `BulkItem::parse_checked`.
/// Messages to send in one request.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkSendBody {
    /// 1 to 1,000 messages, reaching at most 10,000 deliveries in all (each device id counts
    /// one; a user counts their active devices). Broadcasts are refused per message.
    #[schema(min_items = 1, max_items = 1000)]
    pub messages: Vec<BulkMessage>,
}

/// One message of a bulk send: the body of a single send, or of a template send (it has
/// `slug`).
// Only the document's, as `BulkSendBody`.
#[allow(dead_code)]
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BulkMessage {
    Send(SendBody),
    Template(TemplateSendBody),
}

/// The outcome of each message of a bulk send, in the order of the request.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkSendResponse {
    /// How many messages were stored (status 201 or 202).
    pub stored: usize,
    /// How many were not (any other status).
    pub failed: usize,
    /// One result per message, in the order of `messages`.
    pub results: Vec<BulkResult>,
}

/// The outcome of one message.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum BulkResult {
    Stored(Box<BulkStored>),
    Failed(BulkFailed),
}

/// A stored message.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkStored {
    /// Its place in `messages`, from 0.
    pub index: usize,
    /// What the single send would have answered: 201 sent now; 202 queued, or still sending
    /// after the bounded wait.
    pub status: u16,
    pub message: MessageResponse,
}

/// A message that was not stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkFailed {
    /// Its place in `messages`, from 0.
    pub index: usize,
    /// What the single send would have answered (the problem's status).
    pub status: u16,
    /// Why, as the single send would have said; fields are named from the request, such as
    /// `messages[3].target.user_id`.
    pub problem: Problem,
}

/// The request body before its messages are read: each message stays text until it is
/// checked on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub(crate) messages: Vec<&'a RawValue>,
}

/// Send up to 1,000 messages, each checked and answered on its own.
#[utoipa::path(
    post, path = "/v1/apps/{app}/messages/bulk", tag = "messages",
    params(("app" = String, Path, description = "The application id")),
    request_body = BulkSendBody,
    responses(
        (status = 200, description = "Each message's outcome, in order: the stored message, or the problem", body = BulkSendResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 408, description = "The body did not arrive within http.body_read_timeout_secs", body = Problem),
        (status = 413, description = "The body is larger than http.bulk_body_limit_bytes", body = Problem),
        (status = 422, description = "No message, more than 1,000, or more than 10,000 deliveries in all", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn send_bulk(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BulkSendResponse>, ApiError> {
    let sender = state.service.applications().get(&app)?.sender;
    if !is_json(&headers) {
        return Err(ApiError::BadRequest(
            "the request body must be JSON, sent with Content-Type: application/json".into(),
        ));
    }
    let bytes = read_body(&headers, body, state.bulk_body_limit).await?;
    let envelope = envelope(&bytes)?;
    let mut results: Vec<Option<BulkResult>> = Vec::with_capacity(envelope.messages.len());
    let mut items = Vec::with_capacity(envelope.messages.len());
    for (index, raw) in envelope.messages.iter().enumerate() {
        match BulkItem::parse_checked(raw.get()) {
            Ok(item) => {
                items.push((index, item));
                results.push(None);
            }
            Err(error) => results.push(Some(failed(index, &error))),
        }
    }
    drop(envelope);
    check_deliveries(&state, &app, sender, &items).await?;
    for (index, result) in send_all(&state, &app, items).await {
        if let Some(slot) = results.get_mut(index) {
            *slot = Some(result);
        }
    }
    let results: Vec<BulkResult> = results.into_iter().flatten().collect();
    let stored = results
        .iter()
        .filter(|r| matches!(r, BulkResult::Stored(_)))
        .count();
    let failed = results.len() - stored;
    tracing::info!(app, stored, failed, "bulk send");
    Ok(Json(BulkSendResponse {
        stored,
        failed,
        results,
    }))
}

/// Reads the body up to `limit` bytes.
async fn read_body(headers: &HeaderMap, mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than {limit} bytes, the most a bulk send accepts \
             (http.bulk_body_limit_bytes)"
        ))
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|error| {
            if is_body_timeout(&error) {
                ApiError::RequestTimeout(
                    "the request body did not arrive in time (http.body_read_timeout_secs)".into(),
                )
            } else {
                ApiError::BadRequest(format!("cannot read the request body: {error}"))
            }
        })?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}

/// The list of messages, each still as text, checked for its length.
pub(crate) fn envelope(bytes: &[u8]) -> Result<Envelope<'_>, ApiError> {
    let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(|error| {
        if error.is_data() {
            ApiError::invalid("messages", error)
        } else {
            ApiError::BadRequest(format!("the request body is not valid JSON: {error}"))
        }
    })?;
    let given = envelope.messages.len();
    if given == 0 {
        return Err(ApiError::invalid(
            "messages",
            "holds no message; give 1 to 1000",
        ));
    }
    if given > MAX_BULK_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "{given} messages given; at most {MAX_BULK_MESSAGES} are sent in one request: \
                 split them"
            ),
        ));
    }
    Ok(envelope)
}

/// Refuses the request when its valid messages reach more than [`MAX_BULK_DELIVERIES`]
/// deliveries: each device id given counts one, and each user target the user's active
/// devices (one for an application that sends through OneSignal), looked up once per user.
async fn check_deliveries(
    state: &AppState,
    app: &str,
    sender: SenderKind,
    items: &[(usize, BulkItem)],
) -> Result<(), ApiError> {
    let mut total = 0_usize;
    let mut per_user: BTreeMap<&UserId, usize> = BTreeMap::new();
    for (_, item) in items {
        match item.target() {
            Target::Devices { device_ids } => total += device_ids.len(),
            Target::User { .. } if sender == SenderKind::Onesignal => total += 1,
            Target::User { user_id } => *per_user.entry(user_id).or_default() += 1,
            Target::Broadcast { .. } => {}
        }
    }
    let over = |total: usize| {
        ApiError::invalid(
            "messages",
            format!(
                "the messages reach more than {MAX_BULK_DELIVERIES} deliveries (at least \
                 {total}: each device id given counts one, each user their active devices); \
                 at most {MAX_BULK_DELIVERIES} are sent in one request: split them"
            ),
        )
    };
    if total > MAX_BULK_DELIVERIES {
        return Err(over(total));
    }
    // Each lookup stops one device past the limit: a user with more is over it alone.
    let cap = u32::try_from(MAX_BULK_DELIVERIES + 1).unwrap_or(u32::MAX);
    let mut lookups = JoinSet::new();
    let mut users = per_user.into_iter();
    loop {
        while lookups.len() < BULK_CONCURRENCY {
            let Some((user, messages)) = users.next() else {
                break;
            };
            let service = state.service.clone();
            let app = app.to_owned();
            let filter = DeviceFilter {
                user_id: Some(user.clone()),
                active: Some(true),
                limit: Some(cap),
                ..DeviceFilter::default()
            };
            lookups.spawn(async move {
                let devices = service.list_devices(&app, &filter).await?;
                Ok::<_, ApiError>(devices.len().saturating_mul(messages))
            });
        }
        let Some(joined) = lookups.join_next().await else {
            return Ok(());
        };
        total += joined.map_err(|e| ApiError::Internal(anyhow::Error::new(e)))??;
        if total > MAX_BULK_DELIVERIES {
            return Err(over(total));
        }
    }
}

/// Sends every item, [`BULK_CONCURRENCY`] at a time until each is stored, and answers each
/// as the single send would, waiting for `now` sends at most `http.send_wait_secs` in all.
async fn send_all(
    state: &AppState,
    app: &str,
    items: Vec<(usize, BulkItem)>,
) -> Vec<(usize, BulkResult)> {
    let deadline = Instant::now() + state.send_wait;
    let storing = Arc::new(Semaphore::new(BULK_CONCURRENCY));
    let mut running = Vec::with_capacity(items.len());
    for (index, item) in items {
        let dispatch = item.dispatch();
        let service = state.service.clone();
        let app = app.to_owned();
        let storing = storing.clone();
        let (stored_tx, stored_rx) = oneshot::channel::<MessageId>();
        let task = tokio::spawn(async move {
            // The semaphore is never closed; without a permit the item still runs.
            let permit = storing.acquire_owned().await.ok();
            // Once stored, the message frees its place for the next one to be stored, and a
            // `now` message is sent meanwhile.
            let stored = Mutex::new(Some((stored_tx, permit)));
            let on_stored = move |id: MessageId| {
                if let Some((tx, permit)) = stored.lock().ok().and_then(|mut s| s.take()) {
                    let _ = tx.send(id);
                    drop(permit);
                }
            };
            item.send(&service, &app, &on_stored).await
        });
        running.push((index, dispatch, task, stored_rx));
    }
    let mut results = Vec::with_capacity(running.len());
    for (index, dispatch, mut task, stored_rx) in running {
        let joined = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(joined) => joined,
            Err(_) => match stored_rx.await {
                Ok(id) => {
                    results.push((index, still_sending(state, app, index, id).await));
                    continue;
                }
                // It failed before it stored anything: its task is done.
                Err(_) => task.await,
            },
        };
        let result = match joined {
            Ok(Ok(message)) => stored(index, &message, dispatch),
            Ok(Err(refused)) => failed(index, &ApiError::from(refused)),
            Err(panicked) => failed(index, &ApiError::Internal(anyhow::Error::new(panicked))),
        };
        results.push((index, result));
    }
    results
}

/// A message still sending after the bounded wait: 202 with the message as stored.
async fn still_sending(state: &AppState, app: &str, index: usize, id: MessageId) -> BulkResult {
    tracing::info!(
        message = id.0,
        index,
        "bulk send still under way; answering 202"
    );
    match state.service.get_message(app, id).await {
        Ok(message) => BulkResult::Stored(Box::new(BulkStored {
            index,
            status: StatusCode::ACCEPTED.as_u16(),
            message: (&message).into(),
        })),
        Err(error) => failed(index, &ApiError::from(error)),
    }
}

fn stored(index: usize, message: &Message, dispatch: Dispatch) -> BulkResult {
    let status = match dispatch {
        Dispatch::Now => StatusCode::CREATED,
        Dispatch::Queue => StatusCode::ACCEPTED,
    };
    BulkResult::Stored(Box::new(BulkStored {
        index,
        status: status.as_u16(),
        message: message.into(),
    }))
}

/// The problem of one message, its fields named from the request (`messages[3].body`); the
/// cause of a 5xx is logged, as the single send's would be.
fn failed(index: usize, error: &ApiError) -> BulkResult {
    if let ApiError::Unavailable(cause) | ApiError::Internal(cause) = error {
        tracing::error!(
            error = format!("{cause:#}"),
            index,
            status = error.status().as_u16(),
            "a message of a bulk send failed"
        );
    }
    let mut problem = error.problem();
    if !problem.errors.is_empty() {
        problem.errors = problem
            .errors
            .into_iter()
            .map(|e| FieldError::new(format!("messages[{index}].{}", e.field), e.message))
            .collect();
        problem.detail = problem
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
    }
    BulkResult::Failed(BulkFailed {
        index,
        status: problem.status,
        problem,
    })
}
