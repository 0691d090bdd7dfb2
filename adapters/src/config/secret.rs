//! [`Secret`]: a credential given inline, in a file or in an environment variable, read only
//! when needed and never printed.

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::url_secrets::REDACTED;

/// A secret value: inline, in a file, or in an environment variable. Its `Debug` and
/// `Serialize` show where it comes from, never the value.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl Secret {
    /// Reads the secret. A file's trailing line break is dropped.
    ///
    /// # Errors
    /// When the file cannot be read or the variable is not set; the message names the file
    /// or variable and never holds the value.
    pub fn expose(&self) -> anyhow::Result<String> {
        match self {
            Secret::Inline(value) => Ok(value.clone()),
            Secret::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read secret file {}", path.display()))?;
                Ok(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            Secret::Env(name) => std::env::var(name).map_err(|error| match error {
                std::env::VarError::NotPresent => {
                    anyhow::anyhow!("environment variable {name} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    anyhow::anyhow!("environment variable {name} is not valid UTF-8")
                }
            }),
        }
    }

    /// Where the secret comes from, for messages: `inline value`, `file PATH`,
    /// `environment variable NAME`.
    #[must_use]
    pub fn origin(&self) -> String {
        match self {
            Secret::Inline(_) => "inline value".to_owned(),
            Secret::File(path) => format!("file {}", path.display()),
            Secret::Env(name) => format!("environment variable {name}"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str(&format!("{REDACTED:?}")),
            Secret::File(path) => write!(f, "{{file = {:?}}}", path.display().to_string()),
            Secret::Env(name) => write!(f, "{{env = {name:?}}}"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Secret::Inline(_) => serializer.serialize_str(REDACTED),
            Secret::File(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
            Secret::Env(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { file = "path" } or { env = "VARIABLE" }"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret::Inline(value))
    }

    // Environment variables holding only digits reach here as numbers; a secret is text.
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let mut found: Option<Secret> = None;
        while let Some(key) = map.next_key::<String>()? {
            let secret = match key.as_str() {
                "file" => Secret::File(map.next_value()?),
                "env" => Secret::Env(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["file", "env"])),
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes exactly one of `file` and `env`",
                ));
            }
            found = Some(secret);
        }
        found.ok_or_else(|| de::Error::custom("a secret needs `file` or `env`"))
    }
}
