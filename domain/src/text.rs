//! Text every store can keep: the one rule free text and JSON obey before they are stored.
//!
//! PostgreSQL's `text` cannot hold the NUL character (U+0000), and its `jsonb` refuses the
//! `\u0000` escape in strings and in object keys; SQLite keeps both. Every other character a
//! Rust string can hold is stored by both (PostgreSQL databases are UTF8, and a `str` is valid
//! UTF-8 with no lone surrogates). So that both stores take and refuse the same input, text is
//! checked here, where it enters the domain, and a NUL is refused with an error naming the
//! field instead of failing in one store only. Text Clarion records rather than accepts from
//! someone (what a push service answered) is made storable with [`lossy`] instead.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// The one character no store can keep.
const NUL: char = '\0';

/// Text holding a character that cannot be stored; [`UnstorableText::field`] names where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {}", self.reason())]
pub struct UnstorableText {
    field: String,
    in_key: bool,
}

impl UnstorableText {
    /// The field, as a path in the request: `heading`, `options.sound`,
    /// `extra_data.order.lines[1]`, or `extra_data["a\u0000b"]` for an object key that holds
    /// the character (the key is written as a JSON string).
    #[must_use]
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What is wrong with the field, without its name.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        if self.in_key {
            "the key contains a NUL character (U+0000), which cannot be stored"
        } else {
            "contains a NUL character (U+0000), which cannot be stored"
        }
    }
}

/// `text` when every store can keep it.
///
/// # Errors
/// [`UnstorableText`] naming `field` when the text holds a NUL character.
pub fn storable<'a>(field: &str, text: &'a str) -> Result<&'a str, UnstorableText> {
    if text.contains(NUL) {
        return Err(UnstorableText {
            field: field.to_owned(),
            in_key: false,
        });
    }
    Ok(text)
}

/// `text` with each NUL character replaced by U+FFFD, for text Clarion records but cannot
/// refuse: a push service's answer (a Web Push endpoint is any server a client chose) must not
/// make the outcome of a send impossible to store.
#[must_use]
pub fn lossy(text: &str) -> Cow<'_, str> {
    if text.contains(NUL) {
        Cow::Owned(text.replace(NUL, "\u{fffd}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Checks an optional text as [`storable`] does.
///
/// # Errors
/// As [`storable`].
pub fn storable_opt(field: &str, text: Option<&str>) -> Result<(), UnstorableText> {
    text.map_or(Ok(()), |text| storable(field, text).map(drop))
}

/// Checks every string and every object key of a JSON value, at any depth.
///
/// # Errors
/// [`UnstorableText`] naming the path of the first string or key, from `field`, that holds
/// a NUL character.
pub fn storable_json(field: &str, value: &Value) -> Result<(), UnstorableText> {
    match value {
        Value::String(text) => storable(field, text).map(drop),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| storable_json(&format!("{field}[{i}]"), item)),
        Value::Object(map) => storable_object(field, map),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// Checks every key and value of a JSON object as [`storable_json`] does.
///
/// # Errors
/// As [`storable_json`].
pub fn storable_object(field: &str, map: &Map<String, Value>) -> Result<(), UnstorableText> {
    map.iter().try_for_each(|(key, value)| {
        let path = member_path(field, key);
        if key.contains(NUL) {
            return Err(UnstorableText {
                field: path,
                in_key: true,
            });
        }
        storable_json(&path, value)
    })
}

/// `field.key` for a plain key, else `field["key"]` with the key as a JSON string, so that
/// any key, a NUL included, is named readably.
fn member_path(field: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{field}.{key}")
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("{key:?}"));
        format!("{field}[{quoted}]")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    proptest! {
        #[test]
        fn any_text_with_a_nul_is_refused_naming_the_field(
            before in any::<String>(),
            after in any::<String>(),
        ) {
            let text = format!("{before}\0{after}");

            let refused = storable("heading", &text);

            prop_assert_eq!(
                refused.map_err(|e| e.to_string()),
                Err("heading: contains a NUL character (U+0000), which cannot be stored".to_owned())
            );
        }

        #[test]
        fn any_text_without_a_nul_is_accepted_as_it_is(text in "[^\u{0}]*") {
            prop_assert_eq!(storable("body", &text), Ok(text.as_str()));
        }

        #[test]
        fn any_json_string_or_key_with_a_nul_is_refused_at_any_depth(
            depth in 0usize..6,
            in_key in any::<bool>(),
        ) {
            let mut value = if in_key { json!({"a\u{0}": 1}) } else { json!("a\u{0}") };
            for level in 0..depth {
                value = if level % 2 == 0 { json!({"k": value}) } else { json!([1, value]) };
            }

            prop_assert!(storable_json("extra_data", &value).is_err());
        }

        #[test]
        fn any_json_without_a_nul_is_accepted(text in "[^\u{0}]*", number in any::<i64>()) {
            let value = json!({ text.clone(): [text, number, null, true, {"x": 1.5}] });
            prop_assert_eq!(storable_json("extra_data", &value), Ok(()));
        }
    }

    /// The field a NUL was put in, and the field the error names, for each type that takes
    /// free text.
    fn refused_field(field: usize, text: &str) -> (&'static str, Option<String>) {
        use crate::device::{DeviceFieldError, DeviceUpdate, NewDevice};
        use crate::ids::{AppId, Slug};
        use crate::message::{Content, OptionError, PushOptions};
        use crate::template::TemplateSpec;
        use crate::token::{DeviceToken, EndpointPolicy, Platform};

        let app = AppId::parse("shop").expect("an app id");
        let some = Some(text.to_owned());
        let content = |content: Content| content_field(&content);
        let options = |options: PushOptions| match options.validate() {
            Err(OptionError::Unstorable(e)) => Some(e.field().to_owned()),
            _ => None,
        };
        let device = |name, device_id| {
            let token =
                DeviceToken::parse(Platform::Fcm, "t", None, None, EndpointPolicy::default());
            let device = NewDevice {
                app: app.clone(),
                token: token.expect("a token"),
                name,
                user_id: None,
                device_id,
            };
            match device.validate() {
                Err(DeviceFieldError::Unstorable(e)) => Some(e.field().to_owned()),
                _ => None,
            }
        };
        let template = |body: &str, heading| {
            let spec = TemplateSpec {
                app: app.clone(),
                slug: Slug::parse("t").expect("a slug"),
                body: body.to_owned(),
                heading,
                url: None,
                is_active: true,
                allow_duplicates: false,
            };
            spec.validate().err().map(|e| e.field().to_owned())
        };
        match field {
            0 => (
                "heading",
                content(Content {
                    heading: some,
                    body: "x".into(),
                    ..Content::default()
                }),
            ),
            1 => (
                "body",
                content(Content {
                    body: text.to_owned(),
                    ..Content::default()
                }),
            ),
            2 => (
                "url",
                content(Content {
                    url: some,
                    body: "x".into(),
                    ..Content::default()
                }),
            ),
            3 => {
                let extra_data = Map::from_iter([("k".to_owned(), Value::String(text.to_owned()))]);
                let content = Content {
                    extra_data: Some(extra_data),
                    body: "x".into(),
                    ..Content::default()
                };
                ("extra_data.k", content_field(&content))
            }
            4 => (
                "options.sound",
                options(PushOptions {
                    sound: some,
                    ..PushOptions::default()
                }),
            ),
            5 => (
                "options.thread_id",
                options(PushOptions {
                    thread_id: some,
                    ..PushOptions::default()
                }),
            ),
            6 => (
                "options.category",
                options(PushOptions {
                    category: some,
                    ..PushOptions::default()
                }),
            ),
            7 => ("name", device(some, None)),
            8 => ("device_id", device(None, some)),
            9 => {
                let update = DeviceUpdate {
                    name: Some(some),
                    ..DeviceUpdate::default()
                };
                let refused = match update.validate() {
                    Err(DeviceFieldError::Unstorable(e)) => Some(e.field().to_owned()),
                    _ => None,
                };
                ("name", refused)
            }
            10 => ("body", template(text, None)),
            11 => ("heading", template("x", some)),
            _ => {
                let token =
                    DeviceToken::parse(Platform::Fcm, text, None, None, EndpointPolicy::default());
                let refused = match token {
                    Err(crate::token::TokenError::Unstorable(e)) => Some(e.field().to_owned()),
                    _ => None,
                };
                ("token", refused)
            }
        }
    }

    /// The field a content's error names, when the content cannot be stored.
    fn content_field(content: &crate::message::Content) -> Option<String> {
        use crate::message::{OptionError, PushOptions};

        match content.validate(&PushOptions::default()) {
            Err(OptionError::Unstorable(e)) => Some(e.field().to_owned()),
            _ => None,
        }
    }

    proptest! {
        #[test]
        fn every_type_that_takes_free_text_refuses_a_nul_naming_its_field(
            field in 0usize..13,
            before in "[a-z]{0,8}",
            after in any::<String>(),
        ) {
            let (expected, refused) = refused_field(field, &format!("{before}\0{after}"));

            prop_assert_eq!(refused.as_deref(), Some(expected));
        }

        #[test]
        fn every_type_that_takes_free_text_accepts_it_without_a_nul(
            field in 0usize..13,
            text in "[a-z]{1,8}",
        ) {
            let (_, refused) = refused_field(field, &text);

            prop_assert_eq!(refused, None);
        }
    }

    #[test]
    fn recorded_text_has_its_nul_characters_replaced() {
        assert_eq!(lossy("bad\0request\0"), "bad\u{fffd}request\u{fffd}");
        assert!(matches!(lossy("fine"), Cow::Borrowed("fine")));
    }

    #[test]
    fn a_nul_in_json_is_named_by_its_path() {
        let nested = json!({"order": {"lines": ["one", "t\u{0}wo"]}});
        let key = json!({"order": {"a\u{0}b": 1}});
        let odd_key = json!({"a b": ["\u{0}"]});

        assert_eq!(
            storable_json("extra_data", &nested).map_err(|e| e.field().to_owned()),
            Err("extra_data.order.lines[1]".to_owned())
        );
        assert_eq!(
            storable_json("extra_data", &key).map_err(|e| e.to_string()),
            Err(
                "extra_data.order[\"a\\u0000b\"]: the key contains a NUL character (U+0000), \
                 which cannot be stored"
                    .to_owned()
            )
        );
        assert_eq!(
            storable_json("extra_data", &odd_key).map_err(|e| e.field().to_owned()),
            Err("extra_data[\"a b\"][0]".to_owned())
        );
    }

    #[test]
    fn control_characters_other_than_nul_and_noncharacters_are_storable() {
        let text = "tab\t, bell\u{7}, delete\u{7f}, \u{fffe}\u{ffff}\u{10ffff}";

        assert_eq!(storable("body", text), Ok(text));
        assert_eq!(storable_json("extra_data", &json!({ text: text })), Ok(()));
    }
}
