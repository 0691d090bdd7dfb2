//! The template list, the edit form with its preview, saving, and switching a template on
//! or off.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use clarion_domain::ids::{AppId, Slug};
use clarion_domain::service::TemplateError;
use clarion_domain::template::TemplateSpec;
use serde_json::{Map, Value, json};

use crate::admin::pages::{Page, done, short, when};
use crate::admin::{AdminError, Chrome, Fields, Posted, Signed, render};
use crate::routes::AppState;

pub(crate) async fn templates(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let templates: Vec<Value> = state
        .service
        .list_templates(app.as_str())
        .await?
        .iter()
        .map(|t| {
            json!({
                "slug": t.slug.as_str(), "heading": t.heading, "body": short(&t.body, 80),
                "active": t.is_active, "allow_duplicates": t.allow_duplicates,
                "updated": when(t.updated_at),
            })
        })
        .collect();
    let chrome = Chrome::new(&state, &signed, Some(&app), "templates");
    render("templates.html", page! { chrome, templates })
}

/// The edit form's values.
#[derive(Debug, Clone, serde::Serialize)]
struct Draft {
    slug: String,
    heading: String,
    body: String,
    url: String,
    is_active: bool,
    allow_duplicates: bool,
    context: String,
    /// Whether the template is stored (its slug is then fixed).
    stored: bool,
}

fn edit_page(
    state: &AppState,
    signed: &Signed,
    app: &AppId,
    draft: &Draft,
    outcome: Value,
) -> Page {
    let chrome = Chrome::new(state, signed, Some(app), "templates");
    render(
        "template.html",
        page! { chrome, draft, preview => outcome.get("preview"), error => outcome.get("error") },
    )
}

pub(crate) async fn new_template(
    State(state): State<AppState>,
    signed: Signed,
    Path(app): Path<String>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let draft = Draft {
        slug: String::new(),
        heading: String::new(),
        body: String::new(),
        url: String::new(),
        is_active: true,
        allow_duplicates: true,
        context: "{}".to_owned(),
        stored: false,
    };
    edit_page(&state, &signed, &app, &draft, Value::Null)
}

pub(crate) async fn template(
    State(state): State<AppState>,
    signed: Signed,
    Path((app, slug)): Path<(String, String)>,
) -> Page {
    let app = signed.reach(&state, &app)?;
    let slug = Slug::parse(&slug).map_err(|e| AdminError::NotFound(e.to_string()))?;
    let stored = state.service.get_template(app.as_str(), &slug).await?;
    let draft = Draft {
        slug: stored.slug.to_string(),
        heading: stored.heading.unwrap_or_default(),
        body: stored.body,
        url: stored.url.unwrap_or_default(),
        is_active: stored.is_active,
        allow_duplicates: stored.allow_duplicates,
        context: "{}".to_owned(),
        stored: true,
    };
    edit_page(&state, &signed, &app, &draft, Value::Null)
}

fn draft_from(fields: &Fields) -> Draft {
    let text = |name: &str| fields.get(name).unwrap_or_default().to_owned();
    Draft {
        slug: text("slug").trim().to_owned(),
        heading: text("heading"),
        body: text("body"),
        url: text("url"),
        is_active: fields.get("is_active").is_some(),
        allow_duplicates: fields.get("allow_duplicates").is_some(),
        context: fields.get("context").unwrap_or("{}").to_owned(),
        stored: fields.get("stored") == Some("true"),
    }
}

fn spec_from(app: &AppId, draft: &Draft) -> Result<TemplateSpec, String> {
    let optional = |s: &str| Some(s.to_owned()).filter(|s| !s.trim().is_empty());
    Ok(TemplateSpec {
        app: app.clone(),
        slug: Slug::parse(&draft.slug).map_err(|e| e.to_string())?,
        body: draft.body.clone(),
        heading: optional(&draft.heading),
        url: optional(&draft.url),
        is_active: draft.is_active,
        allow_duplicates: draft.allow_duplicates,
    })
}

fn context_from(raw: &str) -> Result<Map<String, Value>, String> {
    let raw = if raw.trim().is_empty() { "{}" } else { raw };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the context must be a JSON object, such as {\"name\": \"Ada\"}".into()),
        Err(e) => Err(format!("the context is not JSON: {e}")),
    }
}

/// Saves a template, or renders a preview of the form's values without saving (the Preview
/// button). Errors are shown in the form.
pub(crate) async fn save_template(
    State(state): State<AppState>,
    Path(app): Path<String>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let draft = draft_from(&fields);
    let invalid = |error: String| -> Result<Response, AdminError> {
        let page = edit_page(&state, &signed, &app, &draft, json!({ "error": error }))?;
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let spec = match spec_from(&app, &draft) {
        Ok(spec) => spec,
        Err(error) => return invalid(error),
    };
    if fields.get("action") == Some("preview") {
        let context = match context_from(&draft.context) {
            Ok(context) => context,
            Err(error) => return invalid(error),
        };
        return match state.service.render_unsaved(&spec, &context).await {
            Ok(rendered) => Ok(edit_page(
                &state,
                &signed,
                &app,
                &draft,
                json!({ "preview": rendered }),
            )?
            .into_response()),
            Err(error @ (TemplateError::Render(_) | TemplateError::Unstorable(_))) => {
                invalid(error.to_string())
            }
            Err(other) => Err(other.into()),
        };
    }
    match state.service.put_template(spec).await {
        Ok((template, _)) => Ok(done(
            &state,
            &signed,
            &format!("/admin/apps/{app}/templates/{}", template.slug),
            format!("Saved template {}.", template.slug),
        )),
        Err(error @ (TemplateError::Render(_) | TemplateError::Unstorable(_))) => {
            invalid(error.to_string())
        }
        Err(other) => Err(other.into()),
    }
}

pub(crate) async fn set_template_active(
    State(state): State<AppState>,
    Path((app, slug)): Path<(String, String)>,
    posted: Posted,
) -> Result<Response, AdminError> {
    let Posted { signed, fields } = posted;
    let app = signed.reach(&state, &app)?;
    let slug = Slug::parse(&slug).map_err(|e| AdminError::NotFound(e.to_string()))?;
    let active = match fields.get("active") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(AdminError::BadRequest(
                "active must be true or false".into(),
            ));
        }
    };
    let stored = state.service.get_template(app.as_str(), &slug).await?;
    state
        .service
        .put_template(TemplateSpec {
            app: app.clone(),
            slug: stored.slug,
            body: stored.body,
            heading: stored.heading,
            url: stored.url,
            is_active: active,
            allow_duplicates: stored.allow_duplicates,
        })
        .await?;
    let verb = if active { "Activated" } else { "Deactivated" };
    Ok(done(
        &state,
        &signed,
        &format!("/admin/apps/{app}/templates"),
        format!("{verb} template {slug}."),
    ))
}
