//! `/v1/apps/{app}/templates`: create, replace, read, list, delete and preview templates.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use clarion_domain::device::Registration;
use clarion_domain::ids::Slug;
use clarion_domain::service::TemplateError;
use clarion_domain::template::{Rendered, Template, TemplateSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{ApiError, Problem, id_error};
use crate::extract::{ApiJson, ApiPath};
use crate::routes::AppState;

/// A new template.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTemplateBody {
    /// Lower-case letters, digits, `-` and `_`; unique in the application.
    pub slug: String,
    /// The body (MiniJinja).
    pub body: String,
    #[serde(default)]
    pub heading: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// True by default; an inactive template sends nothing.
    #[serde(default)]
    pub is_active: Option<bool>,
    /// False by default: a second send for the same related objects is refused.
    #[serde(default)]
    pub allow_duplicates: Option<bool>,
}

/// A template's content, for create-or-replace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutTemplateBody {
    pub body: String,
    #[serde(default)]
    pub heading: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub is_active: Option<bool>,
    #[serde(default)]
    pub allow_duplicates: Option<bool>,
}

/// The variables to render a template with.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewBody {
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<Map<String, Value>>,
}

/// A stored template.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateResponse {
    pub app: String,
    pub slug: String,
    pub body: String,
    pub heading: Option<String>,
    pub url: Option<String>,
    pub is_active: bool,
    pub allow_duplicates: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<Template> for TemplateResponse {
    fn from(t: Template) -> Self {
        Self {
            app: t.app.to_string(),
            slug: t.slug.to_string(),
            body: t.body,
            heading: t.heading,
            url: t.url,
            is_active: t.is_active,
            allow_duplicates: t.allow_duplicates,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// The templates of an application.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateList {
    pub items: Vec<TemplateResponse>,
}

/// A rendered template.
#[derive(Debug, Serialize, ToSchema)]
pub struct RenderedResponse {
    pub body: String,
    pub heading: Option<String>,
    pub url: Option<String>,
}

impl From<Rendered> for RenderedResponse {
    fn from(r: Rendered) -> Self {
        Self {
            body: r.body,
            heading: r.heading,
            url: r.url,
        }
    }
}

pub(crate) fn slug(raw: &str) -> Result<Slug, ApiError> {
    Slug::parse(raw).map_err(|e| id_error("slug", &e))
}

/// The slug in a path: one that cannot exist is simply not found.
fn path_slug(raw: &str) -> Result<Slug, ApiError> {
    Slug::parse(raw).map_err(|_| ApiError::NotFound(format!("template {raw:?} not found")))
}

/// List the templates.
#[utoipa::path(
    get, path = "/v1/apps/{app}/templates", tag = "templates",
    params(("app" = String, Path, description = "The application id")),
    responses(
        (status = 200, body = TemplateList),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_templates(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
) -> Result<Json<TemplateList>, ApiError> {
    let templates = state.service.list_templates(&app).await?;
    Ok(Json(TemplateList {
        items: templates.into_iter().map(Into::into).collect(),
    }))
}

/// Create a template.
#[utoipa::path(
    post, path = "/v1/apps/{app}/templates", tag = "templates",
    params(("app" = String, Path, description = "The application id")),
    request_body = CreateTemplateBody,
    responses(
        (status = 201, body = TemplateResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
        (status = 409, description = "A template with this slug exists", body = Problem),
        (status = 413, body = Problem),
        (status = 422, description = "Invalid fields, or a template syntax error naming the field", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_template(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiJson(body): ApiJson<CreateTemplateBody>,
) -> Result<(StatusCode, Json<TemplateResponse>), ApiError> {
    let app_id = state.service.applications().get(&app)?.id.clone();
    let slug = slug(&body.slug)?;
    match state.service.get_template(&app, &slug).await {
        Ok(_) => {
            return Err(ApiError::Conflict(format!(
                "template {slug} exists; PUT /v1/apps/{app}/templates/{slug} replaces it"
            )));
        }
        Err(TemplateError::NotFound(_)) => {}
        Err(other) => return Err(other.into()),
    }
    let spec = TemplateSpec {
        app: app_id,
        slug,
        body: body.body,
        heading: body.heading,
        url: body.url,
        is_active: body.is_active.unwrap_or(true),
        allow_duplicates: body.allow_duplicates.unwrap_or(false),
    };
    let (template, _) = state.service.put_template(spec).await?;
    Ok((StatusCode::CREATED, Json(template.into())))
}

/// Read one template.
#[utoipa::path(
    get, path = "/v1/apps/{app}/templates/{slug}", tag = "templates",
    params(("app" = String, Path, description = "The application id"), ("slug" = String, Path, description = "The template's slug")),
    responses(
        (status = 200, body = TemplateResponse),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_template(
    State(state): State<AppState>,
    ApiPath((app, raw_slug)): ApiPath<(String, String)>,
) -> Result<Json<TemplateResponse>, ApiError> {
    state.service.applications().get(&app)?;
    let template = state
        .service
        .get_template(&app, &path_slug(&raw_slug)?)
        .await?;
    Ok(Json(template.into()))
}

/// Create or replace a template.
#[utoipa::path(
    put, path = "/v1/apps/{app}/templates/{slug}", tag = "templates",
    params(("app" = String, Path, description = "The application id"), ("slug" = String, Path, description = "The template's slug")),
    request_body = PutTemplateBody,
    responses(
        (status = 201, description = "Created", body = TemplateResponse),
        (status = 200, description = "Replaced", body = TemplateResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn put_template(
    State(state): State<AppState>,
    ApiPath((app, raw_slug)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PutTemplateBody>,
) -> Result<(StatusCode, Json<TemplateResponse>), ApiError> {
    let app_id = state.service.applications().get(&app)?.id.clone();
    let spec = TemplateSpec {
        app: app_id,
        slug: slug(&raw_slug)?,
        body: body.body,
        heading: body.heading,
        url: body.url,
        is_active: body.is_active.unwrap_or(true),
        allow_duplicates: body.allow_duplicates.unwrap_or(false),
    };
    let (template, registration) = state.service.put_template(spec).await?;
    let status = match registration {
        Registration::Created => StatusCode::CREATED,
        Registration::Updated => StatusCode::OK,
    };
    Ok((status, Json(template.into())))
}

/// Delete a template; messages sent from it keep its slug.
#[utoipa::path(
    delete, path = "/v1/apps/{app}/templates/{slug}", tag = "templates",
    params(("app" = String, Path, description = "The application id"), ("slug" = String, Path, description = "The template's slug")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_template(
    State(state): State<AppState>,
    ApiPath((app, raw_slug)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    state.service.applications().get(&app)?;
    state
        .service
        .delete_template(&app, &path_slug(&raw_slug)?)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Render a template with a context; nothing is sent or stored.
#[utoipa::path(
    post, path = "/v1/apps/{app}/templates/{slug}/preview", tag = "templates",
    params(("app" = String, Path, description = "The application id"), ("slug" = String, Path, description = "The template's slug")),
    request_body = PreviewBody,
    responses(
        (status = 200, body = RenderedResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem),
        (status = 422, description = "Rendering failed; the problem names the field and the variable", body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn preview_template(
    State(state): State<AppState>,
    ApiPath((app, raw_slug)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PreviewBody>,
) -> Result<Json<RenderedResponse>, ApiError> {
    state.service.applications().get(&app)?;
    let rendered = state
        .service
        .render_template(
            &app,
            &path_slug(&raw_slug)?,
            &body.context.unwrap_or_default(),
        )
        .await?;
    Ok(Json(rendered.into()))
}
