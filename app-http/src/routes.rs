//! The router: the `/v1` API behind authentication, its OpenAPI document at `/openapi.json`
//! and Swagger UI at `/docs` (both open), the admin UI under `/admin` (behind its own
//! sign-in), `/healthz`, `/readyz` and `/metrics`, and around
//! every route the request id, the request span and the HTTP metrics.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::get;
use clarion_adapters::client_token::ClientTokens;
use clarion_domain::service::PushService;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::admin;
use crate::admin::session::Sessions;
use crate::api::{bulk, devices, keys, messages, templates};
use crate::auth::authorize;
use crate::error::ApiError;
use crate::limits::{self, RequestLimits};
use crate::ops;
use crate::problem_fallback::ensure_problem;
use crate::ratelimit::RateLimiter;
use crate::telemetry;

/// What every handler can reach. It is cloned for every request (by the authentication
/// middleware, by each handler's `State` and with every layer's service), so it is one `Arc`:
/// a clone is one reference count, not one per part.
#[derive(Debug, Clone)]
pub(crate) struct AppState(Arc<AppShared>);

impl AppState {
    pub(crate) fn new(shared: AppShared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppShared;

    fn deref(&self) -> &AppShared {
        &self.0
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub(crate) struct AppShared {
    pub(crate) service: Arc<PushService>,
    pub(crate) client_tokens: Arc<ClientTokens>,
    /// How long a `now` send may take before the request is answered 202.
    pub(crate) send_wait: Duration,
    /// `http.bulk_body_limit_bytes`: the largest body of a bulk send.
    pub(crate) bulk_body_limit: usize,
    /// The per-credential rate limit; `None` when it is off.
    pub(crate) limiter: Option<Arc<RateLimiter>>,
    /// Asked by `/readyz`.
    pub(crate) readiness: Arc<ops::Readiness>,
    pub(crate) metrics: PrometheusHandle,
    /// The admin UI's signed-in browsers.
    pub(crate) sessions: Arc<Sessions>,
    /// The admin sign-in's limit per client address; `None` when it is off.
    pub(crate) sign_ins: Option<Arc<RateLimiter>>,
}

/// Settings of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpSettings {
    pub(crate) body_limit_bytes: usize,
    pub(crate) limits: RequestLimits,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Clarion",
        description = "Self-hosted push notifications: devices, messages with per-device \
                       deliveries, templates and API keys. Every /v1 route needs \
                       `Authorization: Bearer <API key or client token>`; errors are RFC 9457 \
                       problem documents."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "devices", description = "Devices of an application"),
        (name = "messages", description = "Sending and the message log"),
        (name = "templates", description = "Message templates"),
        (name = "keys", description = "API keys (admin only)"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key (clk_...) or, for the device routes, a client token (JWT)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The `/v1` routes with their OpenAPI document, built from the same list.
fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(devices::register_device, devices::list_devices))
        .routes(routes!(devices::register_devices))
        .routes(routes!(
            devices::get_device,
            devices::update_device,
            devices::delete_device
        ))
        .routes(routes!(messages::send_message, messages::list_messages))
        .routes(routes!(messages::send_template))
        .routes(routes!(bulk::send_bulk))
        .routes(routes!(messages::get_message))
        .routes(routes!(messages::retry_message))
        .routes(routes!(messages::cancel_message))
        .routes(routes!(
            templates::list_templates,
            templates::create_template
        ))
        .routes(routes!(
            templates::get_template,
            templates::put_template,
            templates::delete_template
        ))
        .routes(routes!(templates::preview_template))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .split_for_parts()
}

/// The OpenAPI document, as served at `/openapi.json`.
#[must_use]
pub fn openapi() -> utoipa::openapi::OpenApi {
    api().1
}

pub(crate) fn router(state: AppState, settings: HttpSettings) -> Router {
    let (v1, document) = api();
    let v1 = v1.route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    // The request id is set first, then the span that carries it opens, and the metrics see
    // the matched route. The request limits run before any handler, and every error answer
    // from inside passes the problem fallback. One `layer` call for the whole stack: each
    // call wraps every route in a boxed service of its own, and axum clones a route's boxed
    // services, each with all those inside it, for every request (with seven calls, 45
    // allocations a request).
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(telemetry::request_span)
                .on_request(())
                .on_response(telemetry::log_response)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(middleware::from_fn(telemetry::track))
        .layer(middleware::from_fn(ensure_problem))
        .layer(middleware::from_fn_with_state(
            settings.limits,
            limits::enforce,
        ))
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes));
    Router::new()
        .merge(v1)
        .merge(admin::router())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .merge(SwaggerUi::new("/docs").url("/openapi.json", document))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(layers)
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this route does not take this method".into())
}
