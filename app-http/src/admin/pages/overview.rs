//! The application picker and an application's overview: devices by platform, messages by
//! state, the backlog and the recent errors.

use std::time::Duration;

use axum::extract::{Path, State};
use clarion_domain::message::MessageState;
use clarion_domain::ports::ErrorSource;
use clarion_domain::token::Platform;
use serde_json::{Value, json};

use crate::admin::pages::{Page, when};
use crate::admin::{Chrome, Signed, render};
use crate::routes::AppState;

/// The window of the overview's message counts and errors.
const OVERVIEW_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

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
