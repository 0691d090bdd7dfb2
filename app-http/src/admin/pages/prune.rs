//! Pruning an application's devices: what a prune would do, counted first, then the prune.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::admin::pages::{Page, done};
use crate::admin::{AdminError, Chrome, Posted, Signed, render};
use crate::routes::AppState;

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
