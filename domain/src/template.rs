//! Message templates (pymess's PushNotificationTemplate) and the rule that decides whether a
//! template may send.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AppId, Slug};
use crate::text::{UnstorableText, storable, storable_opt};

/// A stored template. `body`, `heading` and `url` are MiniJinja source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The application the template belongs to.
    pub app: AppId,
    /// The name messages are sent from it by, unique within the application.
    pub slug: Slug,
    /// The source of the message's body (pymess `content`).
    pub body: String,
    /// The source of the message's heading (the notification's title), if it has one.
    pub heading: Option<String>,
    /// The source of the message's URL, if it has one; it must render to an absolute URL.
    pub url: Option<String>,
    /// Whether the template may send at all; an inactive one is kept but sends nothing.
    pub is_active: bool,
    /// Whether it may send again for related objects it already sent a message for; when it may
    /// not, the second send is refused as a duplicate.
    pub allow_duplicates: bool,
    /// When the template was first stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the template was last replaced.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A template as a caller writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The application the template belongs to.
    pub app: AppId,
    /// The name messages are sent from it by; storing a slug again replaces that template.
    pub slug: Slug,
    /// The source of the message's body (MiniJinja).
    pub body: String,
    /// The source of the message's heading, if it has one.
    pub heading: Option<String>,
    /// The source of the message's URL, if it has one.
    pub url: Option<String>,
    /// Whether the template may send at all.
    pub is_active: bool,
    /// Whether it may send again for related objects it already sent a message for.
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
    /// The template's `is_active` is off.
    #[error("template {slug} is not active")]
    Inactive {
        /// The template's slug.
        slug: String,
    },
    /// The template does not allow duplicates and already sent a message linked to every one of
    /// the given related objects.
    #[error(
        "template {slug} does not allow duplicates and message {message_id} was already sent for the same related objects"
    )]
    Duplicate {
        /// The template's slug.
        slug: String,
        /// The id of the newest message it already sent for those related objects.
        message_id: i64,
    },
}

/// The rendered text of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    /// The message's body.
    pub body: String,
    /// The message's heading, when the template has one.
    pub heading: Option<String>,
    /// The message's URL, when the template has one.
    pub url: Option<String>,
}
