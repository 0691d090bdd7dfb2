//! The device list with its filters, and the actions on the selected devices: a test
//! message to each or to all of them, activating and deactivating.

use axum::extract::{Path, Query, State};
use axum::response::Response;
use clarion_domain::device::{Device, DeviceFilter, DeviceUpdate};
use clarion_domain::ids::{AppId, DeviceId, MessageId, Tag, UserId};
use clarion_domain::message::{Content, Priority, PushOptions, Target};
use clarion_domain::service::{Dispatch, SendRequest};
use clarion_domain::token::{DeviceToken, Platform};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::admin::pages::{PAGE, Page, bad, blank, done, one_page, query_string, when};
use crate::admin::{AdminError, Chrome, Fields, Posted, Signed, render};
use crate::routes::AppState;

/// The tag of the messages the device page sends, so that the log can find them.
const TEST_TAG: &str = "admin-test";
const DEFAULT_TEST_BODY: &str = "Test message from Clarion";

#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeviceQuery {
    user: Option<String>,
    token: Option<String>,
    platform: Option<String>,
    active: Option<String>,
    after: Option<String>,
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
    let more = one_page(&mut found);
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
