//! Templates: storing them once they are checked, reading, listing and deleting them, and
//! rendering them (a stored one or an edit being previewed), with their error type.

use serde_json::{Map, Value};

use crate::app::UnknownApplication;
use crate::device::Registration;
use crate::ids::Slug;
use crate::ports::{RenderError, StoreError};
use crate::service::PushService;
use crate::template::{Rendered, Template, TemplateSpec};
use crate::text::UnstorableText;

/// Why a template operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// The application has no template with this slug.
    #[error("template {0} not found")]
    NotFound(Slug),
    /// The renderer refused the template or failed to render it; the error names the field.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// The template's text holds a character no store can keep.
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushService {
    /// Creates or replaces a template after checking that each field is within the
    /// renderer's size and nesting limits and parses.
    ///
    /// # Errors
    /// [`TemplateError::Unstorable`] naming the field, [`TemplateError::Render`] (a syntax
    /// error or a limit, naming the field), [`TemplateError::UnknownApplication`] or
    /// [`TemplateError::Store`].
    pub async fn put_template(
        &self,
        spec: TemplateSpec,
    ) -> Result<(Template, Registration), TemplateError> {
        self.apps.get(spec.app.as_str())?;
        spec.validate()?;
        let renderer = &self.ports.renderer;
        renderer.check("body", &spec.body).await?;
        if let Some(heading) = &spec.heading {
            renderer.check("heading", heading).await?;
        }
        if let Some(url) = &spec.url {
            renderer.check("url", url).await?;
        }
        Ok(self.ports.templates.put_template(&spec, self.now()).await?)
    }

    /// The template of `app` with this slug.
    ///
    /// # Errors
    /// [`TemplateError::UnknownApplication`], [`TemplateError::NotFound`] or
    /// [`TemplateError::Store`].
    pub async fn get_template(&self, app: &str, slug: &Slug) -> Result<Template, TemplateError> {
        let app = self.apps.get(app)?;
        self.ports
            .templates
            .get_template(&app.id, slug)
            .await?
            .ok_or_else(|| TemplateError::NotFound(slug.clone()))
    }

    /// The templates of `app`, in slug order.
    ///
    /// # Errors
    /// [`TemplateError::UnknownApplication`] or [`TemplateError::Store`].
    pub async fn list_templates(&self, app: &str) -> Result<Vec<Template>, TemplateError> {
        let app = self.apps.get(app)?;
        Ok(self.ports.templates.list_templates(&app.id).await?)
    }

    /// Deletes a template; the messages sent from it keep its slug.
    ///
    /// # Errors
    /// [`TemplateError::UnknownApplication`], [`TemplateError::NotFound`] or
    /// [`TemplateError::Store`].
    pub async fn delete_template(&self, app: &str, slug: &Slug) -> Result<(), TemplateError> {
        let app = self.apps.get(app)?;
        if self.ports.templates.delete_template(&app.id, slug).await? {
            Ok(())
        } else {
            Err(TemplateError::NotFound(slug.clone()))
        }
    }

    /// Renders a template that is not stored (an edit being previewed) with a context,
    /// storing and sending nothing.
    ///
    /// # Errors
    /// [`TemplateError::UnknownApplication`], or [`TemplateError::Unstorable`] or
    /// [`TemplateError::Render`] naming the field, as saving it would.
    pub async fn render_unsaved(
        &self,
        spec: &TemplateSpec,
        context: &Map<String, Value>,
    ) -> Result<Rendered, TemplateError> {
        self.apps.get(spec.app.as_str())?;
        spec.validate()?;
        let now = self.now();
        let template = Template {
            app: spec.app.clone(),
            slug: spec.slug.clone(),
            body: spec.body.clone(),
            heading: spec.heading.clone(),
            url: spec.url.clone(),
            is_active: spec.is_active,
            allow_duplicates: spec.allow_duplicates,
            created_at: now,
            updated_at: now,
        };
        Ok(self.render(&template, context).await?)
    }

    /// Renders a stored template with a context and sends nothing (a preview).
    ///
    /// # Errors
    /// [`TemplateError::Render`] and the errors of [`PushService::get_template`].
    pub async fn render_template(
        &self,
        app: &str,
        slug: &Slug,
        context: &Map<String, Value>,
    ) -> Result<Rendered, TemplateError> {
        let template = self.get_template(app, slug).await?;
        Ok(self.render(&template, context).await?)
    }

    pub(super) async fn render(
        &self,
        template: &Template,
        context: &Map<String, Value>,
    ) -> Result<Rendered, RenderError> {
        let renderer = &self.ports.renderer;
        let body = renderer.render("body", &template.body, context).await?;
        let heading = match &template.heading {
            Some(source) => Some(renderer.render("heading", source, context).await?),
            None => None,
        };
        let url = match &template.url {
            Some(source) => Some(renderer.render("url", source, context).await?),
            None => None,
        };
        Ok(Rendered { body, heading, url })
    }
}
