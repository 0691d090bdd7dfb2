//! The admin pages and actions. Each handler parses its input, calls the domain services and
//! renders a template; actions end with a 303 to the page that shows their result.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use clarion_adapters::keys::looks_like_secret;
use clarion_domain::auth::{KeyHash, Principal};
use clarion_domain::device::{Device, DeviceFilter, DeviceUpdate};
use clarion_domain::ids::{AppId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{
    Content, Delivery, DeliveryState, Message, MessageState, Priority, PushOptions, Target,
};
use clarion_domain::ports::{ErrorSource, MessageFilter};
use clarion_domain::service::{Dispatch, SendRequest, TemplateError};
use clarion_domain::template::TemplateSpec;
use clarion_domain::token::{DeviceToken, Platform};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::admin::session::{LOGIN_COOKIE, cookie, random_token, same_secret};
use crate::admin::{AdminError, Chrome, Fields, Posted, Signed, render};
use crate::ratelimit::retry_after_secs;
use crate::routes::AppState;

/// Rows per page of the device and message lists.
const PAGE: u32 = 50;
/// The window of the overview's message counts and errors.
const OVERVIEW_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);
/// The tag of the messages the device page sends, so that the log can find them.
const TEST_TAG: &str = "admin-test";
const DEFAULT_TEST_BODY: &str = "Test message from Clarion";

type Page = Result<Html<String>, AdminError>;

fn when(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn opt_when(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(when)
}

/// A 303 to `to` after leaving `notice` for the next page.
fn done(state: &AppState, signed: &Signed, to: &str, notice: String) -> Response {
    state.sessions.flash(&signed.id, notice);
    Redirect::to(to).into_response()
}

// ----- signing in and out -----

/// `/admin`: the overview of the key's application, or the application picker.
pub(crate) async fn index(State(state): State<AppState>, signed: Signed) -> Response {
    match signed.apps(&state).as_slice() {
        [only] => Redirect::to(&format!("/admin/apps/{only}")).into_response(),
        _ => Redirect::to("/admin/apps").into_response(),
    }
}

/// The sign-in form, with a fresh CSRF token in a cookie and in the form (double submit:
/// there is no session yet to hold it).
pub(crate) async fn login_form(State(state): State<AppState>) -> Result<Response, AdminError> {
    login_page(&state, None, StatusCode::OK)
}

fn login_page(
    state: &AppState,
    error: Option<&str>,
    status: StatusCode,
) -> Result<Response, AdminError> {
    let token = random_token().map_err(AdminError::Internal)?;
    let page = render("login.html", page! { csrf => &token, error })?;
    Ok((
        status,
        [(header::SET_COOKIE, state.sessions.login_cookie(&token))],
        page,
    )
        .into_response())
}

/// Signs in with a key from the form. Each attempt counts against the client address's
/// sign-in limit (`admin.sign_in_per_minute`), so that keys cannot be guessed quickly; the
/// address is the TCP peer's, which behind a reverse proxy is the proxy's for every browser.
pub(crate) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, AdminError> {
    if let Some(limiter) = &state.sign_ins
        && let Err(wait) = limiter.check(&peer.ip().to_string())
    {
        let secs = retry_after_secs(wait);
        let text =
            format!("Too many sign-in attempts from your address. Try again in {secs} seconds.");
        let mut page = login_page(&state, Some(&text), StatusCode::TOO_MANY_REQUESTS)?;
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return Ok(page);
    }
    let fields = Fields::parse(&body);
    let expected = cookie(&headers, LOGIN_COOKIE);
    match (expected, fields.get("csrf")) {
        (Some(expected), Some(sent)) if !expected.is_empty() && same_secret(expected, sent) => {}
        _ => {
            return Err(AdminError::Forbidden(
                "the sign-in form's security token is missing or out of date: reload the page"
                    .into(),
            ));
        }
    }
    let key = fields.text("key").unwrap_or_default();
    let refused = "That key is not valid or was revoked.";
    if !looks_like_secret(key) {
        return login_page(&state, Some(refused), StatusCode::UNAUTHORIZED);
    }
    let principal = match state.service.authenticate_key(key).await {
        Ok(Ok(principal)) => principal,
        Ok(Err(_)) => return login_page(&state, Some(refused), StatusCode::UNAUTHORIZED),
        Err(error) => return Err(error.into()),
    };
    if matches!(principal, Principal::Client { .. }) {
        return login_page(&state, Some(refused), StatusCode::UNAUTHORIZED);
    }
    let id = state
        .sessions
        .create(principal, KeyHash::of(key))
        .map_err(AdminError::Internal)?;
    let mut response = Redirect::to("/admin").into_response();
    let cookies = response.headers_mut();
    for value in [
        state.sessions.session_cookie(&id),
        state.sessions.clear_login_cookie(),
    ] {
        if let Ok(value) = value.parse() {
            cookies.append(header::SET_COOKIE, value);
        }
    }
    Ok(response)
}

pub(crate) async fn logout(State(state): State<AppState>, posted: Posted) -> Response {
    state.sessions.remove(&posted.signed.id);
    (
        [(header::SET_COOKIE, state.sessions.clear_session_cookie())],
        Redirect::to("/admin/login"),
    )
        .into_response()
}

// ----- applications and overview -----

pub(crate) async fn apps(State(state): State<AppState>, signed: Signed) -> Page {
    let apps: Vec<Value> = state
        .service
        .applications()
        .iter()
        .filter(|a| signed.session.principal.reaches(&a.id))
        .map(|a| json!({ "id": a.id.as_str(), "sender": a.sender.as_str() }))
        .collect();
    let chrome = Chrome::new(&state, &signed, None, "apps");
    render("apps.html", page! { chrome, apps })
}

pub(crate) async fn overview(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let overview = state
        .service
        .overview(app.as_str(), OVERVIEW_WINDOW)
        .await?;
    let devices: Vec<Value> = Platform::ALL
        .iter()
        .map(|platform| {
            let count = |active: bool| {
                overview
                    .devices
                    .iter()
                    .filter(|c| c.platform == *platform && c.active == active)
                    .map(|c| c.count)
                    .sum::<u64>()
            };
            let (active, inactive) = (count(true), count(false));
            json!({ "platform": platform.as_str(), "active": active, "inactive": inactive,
                    "total": active + inactive })
        })
        .collect();
    let messages: Vec<Value> = MessageState::ALL
        .iter()
        .map(|state| {
            let count: u64 = overview
                .messages
                .iter()
                .filter(|c| c.state == *state)
                .map(|c| c.count)
                .sum();
            json!({ "state": state.as_str(), "count": count })
        })
        .collect();
    let errors: Vec<Value> = overview
        .errors
        .iter()
        .map(|e| {
            json!({
                "source": match e.source { ErrorSource::Delivery => "delivery", ErrorSource::Message => "message" },
                "reason": e.reason, "count": e.count, "last": when(e.last_at), "example": e.example,
            })
        })
        .collect();
    let chrome = Chrome::new(&state, &signed, Some(&app), "overview");
    render(
        "overview.html",
        page! {
            chrome, devices, messages, errors,
            backlog => overview.backlog, since => when(overview.since),
        },
    )
}

// ----- devices -----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceQuery {
    user: Option<String>,
    token: Option<String>,
    platform: Option<String>,
    active: Option<String>,
    after: Option<String>,
}

fn blank(raw: Option<&String>) -> Option<&str> {
    raw.map(|s| s.trim()).filter(|s| !s.is_empty())
}

fn token_text(token: &DeviceToken) -> &str {
    token.key()
}

fn device_view(device: &Device) -> Value {
    json!({
        "id": device.id.0,
        "platform": device.platform().as_str(),
        "token": token_text(&device.token),
        "user": device.user_id.as_ref().map(UserId::as_str),
        "name": device.name,
        "active": device.active,
        "reason": device.deactivation_reason,
        "updated": when(device.updated_at),
    })
}

pub(crate) async fn devices(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
    Query(query): Query<DeviceQuery>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| AdminError::BadRequest(format!("{field}: {e}"));
    let filter = DeviceFilter {
        user_id: blank(query.user.as_ref())
            .map(UserId::parse)
            .transpose()
            .map_err(|e| bad("user", &e))?,
        platform: blank(query.platform.as_ref())
            .map(str::parse::<Platform>)
            .transpose()
            .map_err(|e| bad("platform", &e))?,
        active: match blank(query.active.as_ref()) {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => return Err(bad("active", &format!("{other:?} is not true or false"))),
        },
        token_prefix: blank(query.token.as_ref()).map(str::to_owned),
        after: blank(query.after.as_ref())
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|e| bad("after", &e))?
            .map(DeviceId),
        limit: Some(PAGE + 1),
    };
    let mut found = state.service.list_devices(app.as_str(), &filter).await?;
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    let next = more.then(|| found.last().map(|d| d.id.0)).flatten();
    let filters = json!({
        "user": blank(query.user.as_ref()), "token": blank(query.token.as_ref()),
        "platform": blank(query.platform.as_ref()), "active": blank(query.active.as_ref()),
    });
    let devices: Vec<Value> = found.iter().map(device_view).collect();
    // Actions return to this very page, filters and page included.
    let back = format!(
        "/admin/apps/{app}/devices?{}",
        query_string(
            &filters,
            blank(query.after.as_ref()).map(|after| ("after", after.to_owned()))
        )
    );
    let next_url = next.map(|after| {
        format!(
            "/admin/apps/{app}/devices?{}",
            query_string(&filters, Some(("after", after.to_string())))
        )
    });
    let chrome = Chrome::new(&state, &signed, Some(&app), "devices");
    render(
        "devices.html",
        page! {
            chrome, devices, filters, next_url, back,
            platforms => Platform::ALL.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            paged => query.after.is_some(), test_body => DEFAULT_TEST_BODY,
        },
    )
}

/// The non-empty filters as a query string, plus `extra`.
fn query_string(filters: &Value, extra: Option<(&str, String)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Some(map) = filters.as_object() {
        for (key, value) in map {
            if let Some(text) = value.as_str() {
                out.append_pair(key, text);
            }
        }
    }
    if let Some((key, value)) = extra {
        out.append_pair(key, &value);
    }
    out.finish()
}

/// Where an action returns: the page it came from when that is a page of this application,
/// else the device list.
fn back_to(fields: &Fields, app: &AppId, section: &str) -> String {
    let home = format!("/admin/apps/{app}/{section}");
    match fields.get("back") {
        Some(back) if back.starts_with(&home) && !back.contains("//") => back.to_owned(),
        _ => home,
    }
}

fn test_request(target: Target, body: &str) -> SendRequest {
    SendRequest {
        target,
        content: Content {
            heading: Some("Clarion test".to_owned()),
            body: body.to_owned(),
            url: None,
            extra_data: None,
        },
        tag: Tag::parse(TEST_TAG).ok(),
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

/// Sends in a task of its own, so that a browser that gives up does not cut the send short,
/// and waits for it at most `http.send_wait_secs`; a slower send finishes in the background
/// and its message page shows it under way.
async fn send_now(
    state: &AppState,
    app: &AppId,
    request: SendRequest,
) -> Result<MessageId, AdminError> {
    let (stored_tx, stored_rx) = tokio::sync::oneshot::channel::<MessageId>();
    let stored_tx = std::sync::Mutex::new(Some(stored_tx));
    let service = state.service.clone();
    let app_id = app.to_string();
    let mut task = tokio::spawn(async move {
        service
            .send_reporting(&app_id, request, Dispatch::Now, &move |id| {
                if let Some(tx) = stored_tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send(id);
                }
            })
            .await
    });
    let joined = match tokio::time::timeout(state.send_wait, &mut task).await {
        Ok(joined) => joined,
        Err(_) => match stored_rx.await {
            Ok(id) => return Ok(id),
            Err(_) => task.await,
        },
    };
    let message = joined.map_err(|e| AdminError::Internal(anyhow::Error::new(e)))??;
    Ok(message.id)
}

fn selected(fields: &Fields) -> Result<Vec<DeviceId>, AdminError> {
    fields
        .all("ids")
        .into_iter()
        .map(|raw| {
            raw.parse::<i64>()
                .map(DeviceId)
                .map_err(|_| AdminError::BadRequest(format!("device id {raw:?} is not a number")))
        })
        .collect()
}

pub(crate) async fn device_action(
    State(state): State<AppState>,
    Path(app): Path<String>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let back = back_to(&fields, &app, "devices");
    let ids = selected(&fields)?;
    if ids.is_empty() {
        return Ok(done(
            &state,
            &signed,
            &back,
            "Select at least one device.".into(),
        ));
    }
    let body = fields.text("body").unwrap_or(DEFAULT_TEST_BODY);
    let count = ids.len();
    match fields.get("action") {
        Some("test") => {
            let mut sent = Vec::with_capacity(count);
            for id in ids {
                let target = Target::Devices {
                    device_ids: vec![id],
                };
                sent.push(send_now(&state, &app, test_request(target, body)).await?);
            }
            let list: Vec<String> = sent.iter().map(|id| format!("#{id}")).collect();
            let notice = format!(
                "Sent {count} test message(s), one per device: {}.",
                list.join(", ")
            );
            Ok(done(&state, &signed, &back, notice))
        }
        Some("bulk") => {
            let target = Target::Devices { device_ids: ids };
            let id = send_now(&state, &app, test_request(target, body)).await?;
            let notice = format!("Sent test message #{id} to {count} device(s).");
            let to = format!("/admin/apps/{app}/messages/{id}");
            Ok(done(&state, &signed, &to, notice))
        }
        Some(action @ ("activate" | "deactivate")) => {
            let active = action == "activate";
            let update = DeviceUpdate {
                active: Some(active),
                reason: (!active).then(|| "deactivated in the admin UI".to_owned()),
                ..DeviceUpdate::default()
            };
            for id in ids {
                state
                    .service
                    .update_device(app.as_str(), id, &update)
                    .await?;
            }
            let verb = if active { "Activated" } else { "Deactivated" };
            Ok(done(
                &state,
                &signed,
                &back,
                format!("{verb} {count} device(s)."),
            ))
        }
        other => Err(AdminError::BadRequest(format!(
            "unknown action {:?}",
            other.unwrap_or_default()
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PruneQuery {
    older_than_days: Option<String>,
}

fn prune_age(raw: Option<&str>) -> Result<Option<u64>, AdminError> {
    raw.map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<u64>()
                .ok()
                .filter(|days| (1..=36_500).contains(days))
                .ok_or_else(|| {
                    AdminError::BadRequest(format!(
                        "older_than_days must be a whole number of days from 1 to 36500; got {s:?}"
                    ))
                })
        })
        .transpose()
}

fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 60 * 60)
}

/// What a prune would do, counted first, with the form that confirms it.
pub(crate) async fn prune_preview(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
    Query(query): Query<PruneQuery>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let older_than_days = prune_age(query.older_than_days.as_deref())?;
    let preview = state
        .service
        .prune_preview(app.as_str(), older_than_days.map(days))
        .await?;
    let chrome = Chrome::new(&state, &signed, Some(&app), "devices");
    render(
        "prune.html",
        page! {
            chrome, older_than_days,
            deactivate => preview.deactivated, delete => preview.deleted,
            total => preview.deactivated + preview.deleted,
        },
    )
}

pub(crate) async fn prune(
    State(state): State<AppState>,
    Path(app): Path<String>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let older_than_days = prune_age(fields.get("older_than_days"))?;
    let report = state
        .service
        .prune(app.as_str(), older_than_days.map(days))
        .await?;
    let notice = format!(
        "Pruned: {} device(s) deactivated, {} deleted.",
        report.deactivated, report.deleted
    );
    Ok(done(
        &state,
        &signed,
        &format!("/admin/apps/{app}/devices"),
        notice,
    ))
}

// ----- messages -----

#[derive(Debug, Default, Deserialize)]
pub(crate) struct MessageQuery {
    state: Option<String>,
    tag: Option<String>,
    recipient: Option<String>,
    related: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
}

/// A time from a `datetime-local` field (UTC, as the page says) or RFC 3339.
fn parse_when(field: &str, raw: &str) -> Result<OffsetDateTime, AdminError> {
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(at);
    }
    let minutes = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let seconds = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(raw, &seconds)
        .or_else(|_| PrimitiveDateTime::parse(raw, &minutes))
        .map(PrimitiveDateTime::assume_utc)
        .map_err(|_| {
            AdminError::BadRequest(format!(
                "{field} must be a time such as 2026-01-31T12:00 (UTC); got {raw:?}"
            ))
        })
}

fn target_text(target: &Target) -> String {
    match target {
        Target::User { user_id } => format!("user {user_id}"),
        Target::Devices { device_ids } => {
            let ids: Vec<String> = device_ids.iter().map(|d| format!("#{d}")).collect();
            format!("devices {}", ids.join(", "))
        }
        Target::Broadcast { platform: None } => "every active device".to_owned(),
        Target::Broadcast {
            platform: Some(platform),
        } => format!("every active {platform} device"),
    }
}

fn delivery_summary(deliveries: &[Delivery]) -> String {
    let mut by_state: BTreeMap<&str, usize> = BTreeMap::new();
    for d in deliveries {
        *by_state.entry(d.state.as_str()).or_default() += 1;
    }
    if by_state.is_empty() {
        return "none".to_owned();
    }
    by_state
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn messages(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
    Query(query): Query<MessageQuery>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let bad =
        |field: &str, e: &dyn std::fmt::Display| AdminError::BadRequest(format!("{field}: {e}"));
    let filter = MessageFilter {
        app: Some(app.clone()),
        state: blank(query.state.as_ref())
            .map(str::parse::<MessageState>)
            .transpose()
            .map_err(|e| bad("state", &e))?,
        tag: blank(query.tag.as_ref())
            .map(Tag::parse)
            .transpose()
            .map_err(|e| bad("tag", &e))?,
        recipient: blank(query.recipient.as_ref())
            .map(UserId::parse)
            .transpose()
            .map_err(|e| bad("recipient", &e))?,
        related: blank(query.related.as_ref())
            .map(RelatedObject::parse_pair)
            .transpose()
            .map_err(|e| bad("related", &e))?,
        created_after: blank(query.from.as_ref())
            .map(|raw| parse_when("from", raw))
            .transpose()?,
        created_before: blank(query.to.as_ref())
            .map(|raw| parse_when("to", raw))
            .transpose()?,
        before: blank(query.before.as_ref())
            .map(str::parse::<i64>)
            .transpose()
            .map_err(|e| bad("before", &e))?
            .map(MessageId),
        limit: Some(PAGE + 1),
    };
    let mut found = state.service.list_messages(&filter).await?;
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    let filters = json!({
        "state": blank(query.state.as_ref()), "tag": blank(query.tag.as_ref()),
        "recipient": blank(query.recipient.as_ref()), "related": blank(query.related.as_ref()),
        "from": blank(query.from.as_ref()), "to": blank(query.to.as_ref()),
    });
    let next_url = more
        .then(|| found.last().map(|m| m.id.0))
        .flatten()
        .map(|before| {
            format!(
                "/admin/apps/{app}/messages?{}",
                query_string(&filters, Some(("before", before.to_string())))
            )
        });
    let messages: Vec<Value> = found
        .iter()
        .map(|m| {
            json!({
                "id": m.id.0, "created": when(m.created_at), "state": m.state().as_str(),
                "target": target_text(&m.spec.target), "heading": m.spec.content.heading,
                "body": short(&m.spec.content.body, 80), "tag": m.spec.tag.as_ref().map(Tag::as_str),
                "deliveries": delivery_summary(&m.deliveries),
            })
        })
        .collect();
    let chrome = Chrome::new(&state, &signed, Some(&app), "messages");
    render(
        "messages.html",
        page! {
            chrome, messages, filters, next_url, paged => query.before.is_some(),
            states => MessageState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        },
    )
}

fn pretty(value: Option<&Value>) -> Option<String> {
    value.and_then(|v| serde_json::to_string_pretty(v).ok())
}

fn message_view(message: &Message) -> Value {
    let spec = &message.spec;
    let options = serde_json::to_value(&spec.options).ok();
    let extra = spec
        .content
        .extra_data
        .as_ref()
        .map(|m| Value::Object(m.clone()));
    json!({
        "id": message.id.0,
        "state": message.state().as_str(),
        "error": message.error(),
        "sender": message.sender.as_str(),
        "target": target_text(&spec.target),
        "heading": spec.content.heading,
        "body": spec.content.body,
        "url": spec.content.url,
        "extra_data": pretty(extra.as_ref()),
        "template": spec.template_slug.as_ref().map(Slug::as_str),
        "tag": spec.tag.as_ref().map(Tag::as_str),
        "priority": spec.priority.as_str(),
        "options": pretty(options.as_ref()).filter(|o| o != "{}"),
        "retry_sending": spec.retry_sending,
        "attempts": message.number_of_send_attempts(),
        "next_attempt": opt_when(message.next_attempt_at()),
        "sent": opt_when(message.progress().sent_at),
        "created": when(message.created_at),
        "changed": when(message.changed_at),
        "extra_sender_data": pretty(message.extra_sender_data.as_ref()),
        "related": spec.related_objects.iter()
            .map(|r| json!({
                "kind": r.kind(), "id": r.object_id(),
                "query": url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("related", &r.to_string())
                    .finish(),
            }))
            .collect::<Vec<_>>(),
        "deliveries": message.deliveries.iter().map(|d| json!({
            "id": d.id.0,
            "device": d.device_id.map(|id| id.0),
            "channel": d.channel.as_str(),
            "state": d.state.as_str(),
            "ok": matches!(d.state, DeliveryState::Accepted | DeliveryState::Debug),
            "attempts": d.attempts,
            "provider_id": d.provider_id,
            "error_code": d.error_code,
            "error_text": d.error_text,
            "updated": when(d.updated_at),
        })).collect::<Vec<_>>(),
        "can_retry": message.state() == MessageState::Error,
    })
}

pub(crate) async fn message(
    State(state): State<AppState>,
    signed: Signed,
    Path((app, id)): Path<(String, String)>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let id = id
        .parse::<i64>()
        .map(MessageId)
        .map_err(|_| AdminError::NotFound(format!("no message {id:?}")))?;
    let (message, tally) = state.service.get_message(app.as_str(), id).await?;
    let chrome = Chrome::new(&state, &signed, Some(&app), "messages");
    render(
        "message.html",
        page! { chrome, message => message_view(&message), deliveries_total => tally.total },
    )
}

pub(crate) async fn retry(
    State(state): State<AppState>,
    Path((app, id)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let signed = posted.signed;
    let app = signed.reach(&state, &app)?;
    let id = id
        .parse::<i64>()
        .map(MessageId)
        .map_err(|_| AdminError::NotFound(format!("no message {id:?}")))?;
    state.service.retry_message(app.as_str(), id).await?;
    Ok(done(
        &state,
        &signed,
        &format!("/admin/apps/{app}/messages/{id}"),
        format!("Message #{id} is WAITING again; the worker sends it on its next round."),
    ))
}

// ----- templates -----

pub(crate) async fn templates(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let templates: Vec<Value> = state
        .service
        .list_templates(app.as_str())
        .await?
        .iter()
        .map(|t| {
            json!({
                "slug": t.slug.as_str(), "heading": t.heading, "body": short(&t.body, 80),
                "active": t.is_active, "allow_duplicates": t.allow_duplicates,
                "updated": when(t.updated_at),
            })
        })
        .collect();
    let chrome = Chrome::new(&state, &signed, Some(&app), "templates");
    render("templates.html", page! { chrome, templates })
}

/// The edit form's values.
#[derive(Debug, Clone, serde::Serialize)]
struct Draft {
    slug: String,
    heading: String,
    body: String,
    url: String,
    is_active: bool,
    allow_duplicates: bool,
    context: String,
    /// Whether the template is stored (its slug is then fixed).
    stored: bool,
}

fn edit_page(
    state: &AppState,
    signed: &Signed,
    app: &AppId,
    draft: &Draft,
    outcome: Value,
) -> Page {
    let chrome = Chrome::new(state, signed, Some(app), "templates");
    render(
        "template.html",
        page! { chrome, draft, preview => outcome.get("preview"), error => outcome.get("error") },
    )
}

pub(crate) async fn new_template(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let draft = Draft {
        slug: String::new(),
        heading: String::new(),
        body: String::new(),
        url: String::new(),
        is_active: true,
        allow_duplicates: true,
        context: "{}".to_owned(),
        stored: false,
    };
    edit_page(&state, &signed, &app, &draft, Value::Null)
}

pub(crate) async fn template(
    State(state): State<AppState>,
    signed: Signed,
    Path((app, slug)): Path<(String, String)>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let slug = Slug::parse(&slug).map_err(|e| AdminError::NotFound(e.to_string()))?;
    let stored = state.service.get_template(app.as_str(), &slug).await?;
    let draft = Draft {
        slug: stored.slug.to_string(),
        heading: stored.heading.unwrap_or_default(),
        body: stored.body,
        url: stored.url.unwrap_or_default(),
        is_active: stored.is_active,
        allow_duplicates: stored.allow_duplicates,
        context: "{}".to_owned(),
        stored: true,
    };
    edit_page(&state, &signed, &app, &draft, Value::Null)
}

fn draft_from(fields: &Fields) -> Draft {
    let text = |name: &str| fields.get(name).unwrap_or_default().to_owned();
    Draft {
        slug: text("slug").trim().to_owned(),
        heading: text("heading"),
        body: text("body"),
        url: text("url"),
        is_active: fields.get("is_active").is_some(),
        allow_duplicates: fields.get("allow_duplicates").is_some(),
        context: fields.get("context").unwrap_or("{}").to_owned(),
        stored: fields.get("stored") == Some("true"),
    }
}

fn spec_from(app: &AppId, draft: &Draft) -> Result<TemplateSpec, String> {
    let optional = |s: &str| Some(s.to_owned()).filter(|s| !s.trim().is_empty());
    Ok(TemplateSpec {
        app: app.clone(),
        slug: Slug::parse(&draft.slug).map_err(|e| e.to_string())?,
        body: draft.body.clone(),
        heading: optional(&draft.heading),
        url: optional(&draft.url),
        is_active: draft.is_active,
        allow_duplicates: draft.allow_duplicates,
    })
}

fn context_from(raw: &str) -> Result<Map<String, Value>, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the context must be a JSON object, such as {\"name\": \"Ada\"}".into()),
        Err(e) => Err(format!("the context is not JSON: {e}")),
    }
}

/// Saves a template, or renders a preview of the form's values without saving (the Preview
/// button). Errors are shown in the form.
pub(crate) async fn save_template(
    State(state): State<AppState>,
    Path(app): Path<String>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let draft = draft_from(&fields);
    let invalid = |error: String| -> Result<Response, AdminError> {
        let page = edit_page(&state, &signed, &app, &draft, json!({ "error": error }))?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let spec = match spec_from(&app, &draft) {
        Ok(spec) => spec,
        Err(error) => return invalid(error),
    };
    if fields.get("action") == Some("preview") {
        let context = match context_from(&draft.context) {
            Ok(context) => context,
            Err(error) => return invalid(error),
        };
        return match state.service.render_unsaved(&spec, &context).await {
            Ok(rendered) => Ok(edit_page(
                &state,
                &signed,
                &app,
                &draft,
                json!({ "preview": rendered }),
            )?
            .into_response()),
            Err(error @ (TemplateError::Render(_) | TemplateError::Unstorable(_))) => {
                invalid(error.to_string())
            }
            Err(other) => Err(other.into()),
        };
    }
    match state.service.put_template(spec).await {
        Ok((template, _)) => Ok(done(
            &state,
            &signed,
            &format!("/admin/apps/{app}/templates/{}", template.slug),
            format!("Saved template {}.", template.slug),
        )),
        Err(error @ (TemplateError::Render(_) | TemplateError::Unstorable(_))) => {
            invalid(error.to_string())
        }
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn set_template_active(
    State(state): State<AppState>,
    Path((app, slug)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let slug = Slug::parse(&slug).map_err(|e| AdminError::NotFound(e.to_string()))?;
    let active = match fields.get("active") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(AdminError::BadRequest(
                "active must be true or false".into(),
            ));
        }
    };
    let stored = state.service.get_template(app.as_str(), &slug).await?;
    state
        .service
        .put_template(TemplateSpec {
            app: app.clone(),
            slug: stored.slug,
            body: stored.body,
            heading: stored.heading,
            url: stored.url,
            is_active: active,
            allow_duplicates: stored.allow_duplicates,
        })
        .await?;
    let verb = if active { "Activated" } else { "Deactivated" };
    Ok(done(
        &state,
        &signed,
        &format!("/admin/apps/{app}/templates"),
        format!("{verb} template {slug}."),
    ))
}
