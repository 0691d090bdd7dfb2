//! The operations routes, open to any caller: `/healthz` (liveness), `/readyz` (the
//! database can read and write now) and `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use clarion_adapters::store::Store;
use clarion_domain::ports::StoreError;
use serde::Serialize;

use crate::error::ApiError;
use crate::routes::AppState;
use crate::telemetry::DUE_MESSAGES;

/// The store `/readyz` asks. The only use of the store outside the domain's ports.
pub(crate) type Database = Arc<dyn Store>;

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    status: &'static str,
}

/// Liveness: the process serves requests. It asks nothing else, so that a slow database
/// does not get the process restarted.
pub(crate) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database can be used now, a committed write included (and, for SQLite,
/// its disk has room), so that a full disk, a read-only or damaged file or a stopped
/// database server turns the server unready until it is fixed, without a restart. The store
/// migrates the schema when it connects and the server only starts once it has, so a
/// database that answers has its migrations applied.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    match tokio::time::timeout(READY_TIMEOUT, state.database.check_ready()).await {
        Ok(Ok(())) => Ok(Json(Status { status: "ready" })),
        // The reason is the driver's short sentence (a full disk, a read-only file, a server
        // that refuses connections), which names no secret.
        Ok(Err(StoreError::Unavailable(reason))) => {
            tracing::warn!(reason, "not ready: the database is unavailable");
            Err(ApiError::NotReady(format!(
                "the database is unavailable: {reason}"
            )))
        }
        Ok(Err(error)) => {
            // The cause may name files or hosts: it goes to the log, not to the caller.
            tracing::warn!(
                error = format!("{error:#}"),
                "not ready: the database fails"
            );
            Err(ApiError::NotReady("the database does not answer".into()))
        }
        Err(_) => {
            tracing::warn!(
                timeout_secs = READY_TIMEOUT.as_secs(),
                "not ready: the database is slow"
            );
            Err(ApiError::NotReady(format!(
                "the database did not answer within {} s",
                READY_TIMEOUT.as_secs()
            )))
        }
    }
}

/// The metrics in Prometheus' text format. The backlog is counted now, for this scrape.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match state.service.backlog().await {
        Ok(due) => metrics::gauge!(DUE_MESSAGES).set(due as f64),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot count the due messages"
            );
        }
    }
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
