//! Validated identifiers and labels: application ids, slugs, user ids, tags and related objects.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an identifier or label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is empty (for a label: empty or only white space).
    #[error("{field} must not be empty")]
    Empty {
        /// The field, as the error message names it (`application id`, `slug`, `tag`, ...).
        field: &'static str,
    },
    /// The text has more characters (not bytes) than the field allows.
    #[error("{field} is {len} characters long; at most {max} are allowed")]
    TooLong {
        /// The field, as the error message names it.
        field: &'static str,
        /// How many characters the text has.
        len: usize,
        /// How many characters the field allows: 64 for an application id, 128 for a slug, 255
        /// for a user id or a tag.
        max: usize,
    },
    /// The text holds a character the field does not allow: slugs and application ids take
    /// lower-case ASCII letters, digits, `-` and `_`; labels take any character but a control
    /// character.
    #[error("{field} may only hold {allowed}; found {found:?}")]
    BadCharacter {
        /// The field, as the error message names it.
        field: &'static str,
        /// What the field allows, in words.
        allowed: &'static str,
        /// The first character that is not allowed.
        found: char,
    },
}

const SLUG_ALLOWED: &str = "lower-case letters, digits, '-' and '_'";

fn parse_slug_like(field: &'static str, raw: &str, max: usize) -> Result<String, IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty { field });
    }
    let len = raw.chars().count();
    if len > max {
        return Err(IdError::TooLong { field, len, max });
    }
    if let Some(found) = raw
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(IdError::BadCharacter {
            field,
            allowed: SLUG_ALLOWED,
            found,
        });
    }
    Ok(raw.to_owned())
}

fn parse_label(field: &'static str, raw: &str, max: usize) -> Result<String, IdError> {
    if raw.trim().is_empty() {
        return Err(IdError::Empty { field });
    }
    let len = raw.chars().count();
    if len > max {
        return Err(IdError::TooLong { field, len, max });
    }
    if let Some(found) = raw.chars().find(|c| c.is_control()) {
        return Err(IdError::BadCharacter {
            field,
            allowed: "printable characters",
            found,
        });
    }
    Ok(raw.to_owned())
}

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $parser:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses the raw text.
            ///
            /// # Errors
            /// An [`IdError`] naming the field when the text is empty, too long or holds a
            /// character that is not allowed.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                $parser($field, raw, $max).map(Self)
            }

            /// The validated text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

string_newtype!(
    /// An application (tenant) id: a slug such as `default` or `shop-ios`.
    AppId,
    "application id",
    64,
    parse_slug_like
);
string_newtype!(
    /// A template slug, unique within an application.
    Slug,
    "slug",
    128,
    parse_slug_like
);
string_newtype!(
    /// The opaque id of the user who owns devices and receives messages.
    UserId,
    "user id",
    255,
    parse_label
);
string_newtype!(
    /// A free-form tag that groups messages (for instance a campaign name).
    Tag,
    "tag",
    255,
    parse_label
);

/// A database id of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceId(pub i64);

/// A database id of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub i64);

/// A database id of a delivery (one targeted device of one message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(pub i64);

macro_rules! display_id {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
display_id!(DeviceId, MessageId, DeliveryId);

/// An object of the calling application that a message is about (pymess's related objects),
/// such as `order` / `42`. Messages can be looked up by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "RawRelatedObject")]
pub struct RelatedObject {
    kind: String,
    object_id: String,
}

#[derive(Deserialize)]
struct RawRelatedObject {
    kind: String,
    object_id: String,
}

impl TryFrom<RawRelatedObject> for RelatedObject {
    type Error = IdError;
    fn try_from(raw: RawRelatedObject) -> Result<Self, Self::Error> {
        Self::new(&raw.kind, &raw.object_id)
    }
}

impl RelatedObject {
    /// Builds a related object from its kind and id.
    ///
    /// # Errors
    /// An [`IdError`] naming `related object kind` or `related object id` when either is empty,
    /// too long or holds a control character.
    pub fn new(kind: &str, object_id: &str) -> Result<Self, IdError> {
        Ok(Self {
            kind: parse_label("related object kind", kind, 128)?,
            object_id: parse_label("related object id", object_id, 255)?,
        })
    }

    /// Parses the `kind:object_id` form used on the command line.
    ///
    /// # Errors
    /// [`IdError::Empty`] when there is no `:` separating the two halves, or the errors of
    /// [`RelatedObject::new`].
    pub fn parse_pair(raw: &str) -> Result<Self, IdError> {
        let Some((kind, id)) = raw.split_once(':') else {
            return Err(IdError::Empty {
                field: "related object id (expected kind:object_id)",
            });
        };
        Self::new(kind, id)
    }

    /// What sort of object it is, such as `order` (up to 128 characters).
    #[must_use]
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The object's id within its kind, such as `42` (up to 255 characters).
    #[must_use]
    pub fn object_id(&self) -> &str {
        &self.object_id
    }
}

impl fmt::Display for RelatedObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.object_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_lower_case_slugs() {
        assert!(AppId::parse("shop-ios_2").is_ok());
        assert_eq!(
            AppId::parse("Shop"),
            Err(IdError::BadCharacter {
                field: "application id",
                allowed: SLUG_ALLOWED,
                found: 'S'
            })
        );
        assert_eq!(
            AppId::parse(""),
            Err(IdError::Empty {
                field: "application id"
            })
        );
    }

    #[test]
    fn a_related_object_pair_needs_a_colon() {
        let obj = RelatedObject::parse_pair("order:42").expect("valid pair");
        assert_eq!((obj.kind(), obj.object_id()), ("order", "42"));
        assert!(RelatedObject::parse_pair("order42").is_err());
        assert!(RelatedObject::parse_pair(":42").is_err());
    }

    #[test]
    fn a_user_id_may_not_hold_control_characters() {
        assert!(UserId::parse("alice@example.com").is_ok());
        assert!(UserId::parse("al\nice").is_err());
        assert!(UserId::parse("   ").is_err());
    }
}
