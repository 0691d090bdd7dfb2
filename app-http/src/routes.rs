//! The HTTP routes. The REST API under `/v1` arrives with its own issue; for now the server
//! answers health checks.

use axum::routing::get;
use axum::{Json, Router};
use clarion_domain::service::PushService;
use serde::Serialize;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    // Read by the REST API's handlers once they exist.
    #[allow(dead_code)]
    pub(crate) service: PushService,
}

pub(crate) fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
}

/// Liveness: the process serves requests.
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}
