//! Authentication and coarse authorization of every `/v1` route, as a middleware that runs
//! before any handler reads the request: a caller without valid credentials gets 401 and a
//! caller who may not use the route gets 403, whatever the body holds.
//!
//! - An `admin` key reaches every route.
//! - An application key reaches the routes of its application, and not `/v1/keys`.
//! - A client token reaches the device routes of its application only; the handlers then
//!   restrict it to its user's devices.
//!
//! Each credential that authenticates is then held to the rate limit.

use axum::extract::{FromRequestParts as _, MatchedPath, RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use clarion_adapters::keys::looks_like_secret;
use clarion_domain::auth::{AuthError, Principal};
use clarion_domain::ids::{AppId, UserId};

use crate::error::ApiError;
use crate::ratelimit::retry_after_secs;
use crate::routes::AppState;

/// What part of the API a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Area {
    Keys,
    Devices,
    App,
}

fn area(matched: &str) -> Area {
    if matched.starts_with("/v1/keys") {
        Area::Keys
    } else if matched == "/v1/apps/{app}/devices/bulk" {
        // Bulk registration is for operators' imports, not for apps in the field.
        Area::App
    } else if matched.starts_with("/v1/apps/{app}/devices") {
        Area::Devices
    } else {
        Area::App
    }
}

/// Authenticates the caller, checks that it may use the route, and leaves its
/// [`Principal`] in the request's extensions for the handler.
pub(crate) async fn authorize(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned())
        .unwrap_or_default();
    let route_app: Option<String> = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|params| {
            params
                .iter()
                .find(|(name, _)| *name == "app")
                .map(|(_, value)| value.to_owned())
        });
    let credential = bearer(&parts.headers)?;
    let principal = authenticate(&state, &credential, route_app.as_deref()).await?;
    // Limited after authentication, so that only credentials that exist get a bucket.
    if let Some(limiter) = &state.limiter {
        limiter
            .check(&credential)
            .map_err(|wait| ApiError::TooManyRequests {
                retry_after_secs: retry_after_secs(wait),
            })?;
    }
    permit(area(&matched), &principal, route_app.as_deref())?;
    parts.extensions.insert(principal);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

fn bearer(headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(AuthError::Missing.into());
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let (scheme, credential) = value.trim().split_once(' ').unwrap_or((value, ""));
    let credential = credential.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || credential.is_empty() {
        return Err(ApiError::Unauthorized(
            "the Authorization header must be Bearer <API key or client token>".into(),
        ));
    }
    Ok(credential.to_owned())
}

async fn authenticate(
    state: &AppState,
    credential: &str,
    route_app: Option<&str>,
) -> Result<Principal, ApiError> {
    if looks_like_secret(credential) {
        return match state.service.authenticate_key(credential).await {
            Ok(Ok(principal)) => Ok(principal),
            Ok(Err(error)) => Err(error.into()),
            Err(store) => Err(ApiError::Unavailable(anyhow::Error::new(store))),
        };
    }
    if credential.split('.').count() != 3 {
        return Err(ApiError::Unauthorized(
            "the credential is neither an API key nor a client token".into(),
        ));
    }
    // A client token is verified with the secret of the route's application; on a route
    // without one (`/v1/keys`) any application's secret identifies it, and the route then
    // refuses it with 403 like any other route a client token may not use.
    let tokens = &state.client_tokens;
    let candidates: Vec<AppId> = match route_app {
        Some(raw) => AppId::parse(raw).into_iter().collect(),
        None => tokens.apps().cloned().collect(),
    };
    let mut refusal = AuthError::BadClientToken("no application accepts it".into());
    for app in candidates {
        match tokens.verify(&app, credential) {
            Ok(user) => return Ok(Principal::Client { app, user }),
            Err(error) => refusal = error,
        }
    }
    Err(refusal.into())
}

fn permit(area: Area, principal: &Principal, route_app: Option<&str>) -> Result<(), ApiError> {
    let on_route_app = |app: &AppId| route_app == Some(app.as_str());
    match principal {
        Principal::Admin => Ok(()),
        _ if area == Area::Keys => Err(ApiError::Forbidden(
            "only an admin key may manage API keys".into(),
        )),
        Principal::App(app) if on_route_app(app) => Ok(()),
        Principal::App(app) => Err(ApiError::Forbidden(format!(
            "this key may only use application {app}"
        ))),
        Principal::Client { app, .. } if area == Area::Devices && on_route_app(app) => Ok(()),
        Principal::Client { .. } => Err(ApiError::Forbidden(
            "a client token may only manage its user's own devices".into(),
        )),
    }
}

/// The user a client token acts for, or `None` for an API key, which sees every device of
/// the application.
pub(crate) fn device_owner(principal: &Principal) -> Option<&UserId> {
    match principal {
        Principal::Client { user, .. } => Some(user),
        Principal::Admin | Principal::App(_) => None,
    }
}
