//! The message log with its filters, one message with its deliveries, and retrying a
//! message that ended in ERROR.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use clarion_domain::ids::{MessageId, RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{Delivery, DeliveryState, Message, MessageState, Target};
use clarion_domain::ports::MessageFilter;
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::admin::pages::{
    PAGE, Page, bad, blank, done, one_page, opt_when, query_string, short, when,
};
use crate::admin::{AdminError, Chrome, Posted, Signed, render};
use crate::routes::AppState;

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
        *by_state.entry(d.state().as_str()).or_default() += 1;
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
    let more = one_page(&mut found);
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
            "state": d.state().as_str(),
            "ok": matches!(d.state(), DeliveryState::Accepted | DeliveryState::Debug),
            "attempts": d.attempts(),
            "provider_id": d.provider_id(),
            "error_code": d.error_code(),
            "error_text": d.error_text(),
            "updated": when(d.updated_at()),
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
