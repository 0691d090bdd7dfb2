//! Signing in with an API key and out again, and `/admin`, which sends a signed-in browser
//! to its page.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use clarion_adapters::keys::looks_like_secret;
use clarion_domain::auth::{KeyHash, Principal};

use crate::admin::session::{LOGIN_COOKIE, cookie, random_token, same_secret};
use crate::admin::{AdminError, Fields, Posted, Signed, render};
use crate::ratelimit::retry_after_secs;
use crate::routes::AppState;

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
