//! The admin web UI under `/admin`: server-rendered pages (MiniJinja templates embedded in the
//! binary, HTML auto-escaped), one stylesheet, no JavaScript. The pages call the same domain
//! services as the API.
//!
//! Signing in exchanges an API key (admin or application) for a session cookie; the session
//! keeps the principal, not the key. Every POST carries the session's CSRF token in a hidden
//! field and is refused with 403 without it: SameSite=Strict cookies alone would leave older
//! browsers and same-site attackers in. An application key sees its application only; an
//! admin key sees every application and picks one.
//!
//! This module is the frame every page shares: the routes, the security headers, the
//! errors and their pages, the signed-in and CSRF-checked extractors, the chrome around each
//! page and the template environment. The pages themselves are in `pages`, a module per page
//! or resource (login, overview, devices, prune, messages, templates), with the helpers they
//! share in `pages/mod.rs`. The pages use the frame; the frame knows the pages only by the
//! handlers its routes name.

/// `minijinja::context!` whose values are any `Serialize` (MiniJinja 3 takes `Into<Value>`).
macro_rules! page {
    ($($key:ident $(=> $value:expr)?),* $(,)?) => {
        minijinja::context! {
            $($key => minijinja::value::Serde(page!(@value $key $(=> $value)?))),*
        }
    };
    (@value $key:ident) => { $key };
    (@value $key:ident => $value:expr) => { $value };
}

mod pages;
pub(crate) mod session;

use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use clarion_domain::app::UnknownApplication;
use clarion_domain::auth::Principal;
use clarion_domain::ids::AppId;
use clarion_domain::ports::StoreError;
use clarion_domain::service::{DeviceError, MessageError, ReportError, SendError, TemplateError};
use minijinja::Environment;
use serde::Serialize;

use crate::admin::pages::{devices, login, messages, overview, prune, templates};
use crate::admin::session::{SESSION_COOKIE, Session, cookie, same_secret};
use crate::routes::AppState;

/// The stylesheet, served at `/admin/style.css`.
const STYLE: &str = include_str!("style.css");

/// The page templates, parsed once.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in [
        ("base.html", include_str!("templates/base.html")),
        ("login.html", include_str!("templates/login.html")),
        ("apps.html", include_str!("templates/apps.html")),
        ("overview.html", include_str!("templates/overview.html")),
        ("devices.html", include_str!("templates/devices.html")),
        ("prune.html", include_str!("templates/prune.html")),
        ("messages.html", include_str!("templates/messages.html")),
        ("message.html", include_str!("templates/message.html")),
        ("templates.html", include_str!("templates/templates.html")),
        ("template.html", include_str!("templates/template.html")),
        ("error.html", include_str!("templates/error.html")),
    ] {
        // The templates are part of the binary; a syntax error in one is caught by the
        // tests, which render every page, and shows as a 500 page here.
        if let Err(error) = env.add_template(name, source) {
            tracing::error!(template = name, error = %error, "an admin template does not parse");
        }
    }
    env
});

/// The `/admin` routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(login::index))
        .route("/admin/", get(login::index))
        .route("/admin/style.css", get(style))
        .route("/admin/login", get(login::login_form).post(login::login))
        .route("/admin/logout", post(login::logout))
        .route("/admin/apps", get(overview::apps))
        .route("/admin/apps/{app}", get(overview::overview))
        .route("/admin/apps/{app}/devices", get(devices::devices))
        .route(
            "/admin/apps/{app}/devices/actions",
            post(devices::device_action),
        )
        .route(
            "/admin/apps/{app}/devices/prune",
            get(prune::prune_preview).post(prune::prune),
        )
        .route("/admin/apps/{app}/messages", get(messages::messages))
        .route("/admin/apps/{app}/messages/{id}", get(messages::message))
        .route(
            "/admin/apps/{app}/messages/{id}/retry",
            post(messages::retry),
        )
        .route(
            "/admin/apps/{app}/templates",
            get(templates::templates).post(templates::save_template),
        )
        .route(
            "/admin/apps/{app}/templates/new",
            get(templates::new_template),
        )
        .route(
            "/admin/apps/{app}/templates/{slug}",
            get(templates::template),
        )
        .route(
            "/admin/apps/{app}/templates/{slug}/active",
            post(templates::set_template_active),
        )
        .layer(middleware::from_fn(headers))
}

/// Headers of every admin answer: nothing is cached, framed, or loaded from elsewhere.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLE,
    )
        .into_response()
}

/// Why an admin page failed; each is answered with an HTML page, or a redirect to sign in.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdminError {
    /// 303 to `/admin/login`: no session, or an expired one.
    #[error("sign in first")]
    SignIn,
    /// 400: a form or query field is not valid.
    #[error("{0}")]
    BadRequest(String),
    /// 403: a missing or wrong CSRF token, or an application the key does not reach.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: an action the object's state does not allow (retrying a message that is not ERROR).
    #[error("{0}")]
    Conflict(String),
    /// 503: the database does not answer; logged.
    #[error("the database is not available")]
    Unavailable(#[source] anyhow::Error),
    /// 500: logged; the page says nothing more.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl AdminError {
    fn status(&self) -> StatusCode {
        match self {
            AdminError::SignIn => StatusCode::SEE_OTHER,
            AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AdminError::Forbidden(_) => StatusCode::FORBIDDEN,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if matches!(self, AdminError::SignIn) {
            return Redirect::to("/admin/login").into_response();
        }
        match &self {
            AdminError::Unavailable(cause) | AdminError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "admin page failed");
            }
            _ => {}
        }
        let status = self.status();
        let text = self.to_string();
        let page = TEMPLATES
            .get_template("error.html")
            .and_then(|t| {
                t.render(minijinja::context! { status => status.as_u16(), text => text.as_str() })
            })
            .unwrap_or_else(|_| text.clone());
        (status, Html(page)).into_response()
    }
}

impl From<UnknownApplication> for AdminError {
    fn from(error: UnknownApplication) -> Self {
        AdminError::NotFound(error.to_string())
    }
}

impl From<StoreError> for AdminError {
    fn from(error: StoreError) -> Self {
        AdminError::Unavailable(anyhow::Error::new(error))
    }
}

impl From<minijinja::Error> for AdminError {
    fn from(error: minijinja::Error) -> Self {
        AdminError::Internal(anyhow::Error::new(error).context("failed to render a page"))
    }
}

impl From<DeviceError> for AdminError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::UnknownApplication(e) => e.into(),
            DeviceError::NotFound(_) => AdminError::NotFound(error.to_string()),
            DeviceError::InvalidToken(_) | DeviceError::InvalidField(_) => {
                AdminError::BadRequest(error.to_string())
            }
            DeviceError::Store(e) => e.into(),
        }
    }
}

impl From<MessageError> for AdminError {
    fn from(error: MessageError) -> Self {
        match error {
            MessageError::UnknownApplication(e) => e.into(),
            MessageError::NotFound(_) => AdminError::NotFound(error.to_string()),
            MessageError::Illegal(_) | MessageError::Busy(_) => {
                AdminError::Conflict(error.to_string())
            }
            MessageError::Store(e) => e.into(),
        }
    }
}

impl From<TemplateError> for AdminError {
    fn from(error: TemplateError) -> Self {
        match error {
            TemplateError::UnknownApplication(e) => e.into(),
            TemplateError::NotFound(_) => AdminError::NotFound(error.to_string()),
            TemplateError::Render(_) | TemplateError::Unstorable(_) => {
                AdminError::BadRequest(error.to_string())
            }
            TemplateError::Store(e) => e.into(),
        }
    }
}

impl From<ReportError> for AdminError {
    fn from(error: ReportError) -> Self {
        match error {
            ReportError::UnknownApplication(e) => e.into(),
            ReportError::Store(e) => e.into(),
        }
    }
}

impl From<SendError> for AdminError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::UnknownApplication(e) => e.into(),
            SendError::Store(e) => e.into(),
            other => AdminError::BadRequest(other.to_string()),
        }
    }
}

/// A request of a signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Signed {
    pub(crate) id: String,
    pub(crate) session: Session,
}

impl Signed {
    /// Checks that the session reaches `app`, and that `app` is configured.
    pub(crate) fn reach(&self, state: &AppState, app: &str) -> Result<AppId, AdminError> {
        let configured = state.service.applications().get(app)?;
        if !self.session.principal.reaches(&configured.id) {
            return Err(AdminError::Forbidden(format!(
                "this key may not use application {app}"
            )));
        }
        Ok(configured.id.clone())
    }

    /// The applications this session reaches, in id order.
    pub(crate) fn apps(&self, state: &AppState) -> Vec<AppId> {
        state
            .service
            .applications()
            .iter()
            .filter(|a| self.session.principal.reaches(&a.id))
            .map(|a| a.id.clone())
            .collect()
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let id = cookie(&parts.headers, SESSION_COOKIE).ok_or(AdminError::SignIn)?;
        let session = state.sessions.get(id).ok_or(AdminError::SignIn)?;
        // The key is asked for on every request, so that a revocation ends the session: at
        // once through this process, and within the key cache's age (`http.key_cache_ms`)
        // when another process (the CLI, another server) revoked it.
        match state.service.authenticate_key_hash(&session.key).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                state.sessions.remove(id);
                return Err(AdminError::SignIn);
            }
            Err(error) => return Err(error.into()),
        }
        Ok(Signed {
            id: id.to_owned(),
            session,
        })
    }
}

/// The fields of a submitted form, in order; a name may repeat (checkboxes).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields(Vec<(String, String)>);

impl Fields {
    pub(crate) fn parse(body: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, trimmed, or `None` when it is missing or blank.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.get(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// A form posted by a signed-in browser whose CSRF token matched the session's. Every admin
/// POST but the sign-in takes this, so none can skip the check.
#[derive(Debug)]
pub(crate) struct Posted {
    pub(crate) signed: Signed,
    pub(crate) fields: Fields,
}

impl FromRequest<AppState> for Posted {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let body = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|e| AdminError::BadRequest(e.body_text()))?;
        let fields = Fields::parse(&body);
        match fields.get("csrf") {
            Some(token) if same_secret(token, &signed.session.csrf) => {
                Ok(Posted { signed, fields })
            }
            _ => Err(AdminError::Forbidden(
                "the form's security token is missing or out of date: reload the page and \
                 try again"
                    .into(),
            )),
        }
    }
}

/// What every page's frame shows: who is signed in, the applications to pick from, the
/// current one and section, the CSRF token for its forms and a one-time notice.
#[derive(Debug, Serialize)]
pub(crate) struct Chrome {
    who: String,
    apps: Vec<String>,
    app: Option<String>,
    section: &'static str,
    csrf: String,
    flash: Option<String>,
}

impl Chrome {
    pub(crate) fn new(
        state: &AppState,
        signed: &Signed,
        app: Option<&AppId>,
        section: &'static str,
    ) -> Self {
        let who = match &signed.session.principal {
            Principal::Admin => "admin key".to_owned(),
            Principal::App(app) => format!("key of {app}"),
            Principal::Client { app, user } => format!("user {user} of {app}"),
        };
        Self {
            who,
            apps: signed.apps(state).iter().map(ToString::to_string).collect(),
            app: app.map(ToString::to_string),
            section,
            csrf: signed.session.csrf.clone(),
            flash: state.sessions.take_flash(&signed.id),
        }
    }
}

/// Renders page `name` with `context` (which carries the chrome as `chrome`).
pub(crate) fn render(name: &str, context: minijinja::Value) -> Result<Html<String>, AdminError> {
    Ok(Html(TEMPLATES.get_template(name)?.render(context)?))
}
