//! Message templates (pymess's PushNotificationTemplate) and the rule that decides whether a
//! template may send.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AppId, Slug};
use crate::text::{UnstorableText, storable, storable_opt};

/// A stored template. `body`, `heading` and `url` are MiniJinja source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    pub app: AppId,
    pub slug: Slug,
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

/// A template as a caller writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    pub app: AppId,
    pub slug: Slug,
    pub body: String,
    pub heading: Option<String>,
    pub url: Option<String>,
    pub is_active: bool,
    pub allow_duplicates: bool,
}

impl TemplateSpec {
    /// Checks that every store can keep the template's text. Whether the text parses is the
    /// renderer's to say.
    ///
    /// # Errors
    /// [`UnstorableText`] naming `body`, `heading` or `url`.
    pub fn validate(&self) -> Result<(), UnstorableText> {
        storable("body", &self.body)?;
        storable_opt("heading", self.heading.as_deref())?;
        storable_opt("url", self.url.as_deref())
    }
}

/// Why a template may not send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum CannotSend {
    #[error("template {slug} is not active")]
    Inactive { slug: String },
    #[error(
        "template {slug} does not allow duplicates and message {message_id} was already sent for the same related objects"
    )]
    Duplicate { slug: String, message_id: i64 },
}

/// The rendered text of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub body: String,
    pub heading: Option<String>,
    pub url: Option<String>,
}
