//! The `[database]` section: which database holds the data, and how to show its URL
//! without the password.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::url_secrets::redact_url;

/// Where the data lives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created on first start) or `postgres://...`.
    pub url: String,
    /// The PostgreSQL connections of each process in all (default 18): up to 9 for the
    /// grouped writes of messages, attempt results and registrations, and at most half; the
    /// rest for everything else (docs/scaling.md sizes it for many processes). SQLite keeps
    /// its own (writers are serialised there anyway) and ignores this.
    pub max_connections: Option<u32>,
}

// A PostgreSQL URL may hold a password.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://clarion.db".to_owned(),
            max_connections: None,
        }
    }
}

/// The database engines a URL can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    /// The engine the URL selects, from its scheme: `sqlite:` or a plain file path selects
    /// SQLite, `postgres://` or `postgresql://` PostgreSQL.
    ///
    /// # Errors
    /// A message (to follow the key's name) naming the scheme when it is another one.
    pub fn kind(&self) -> Result<DatabaseKind, String> {
        let url = self.url.trim();
        if url.starts_with("sqlite:") {
            return Ok(DatabaseKind::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseKind::Postgres);
        }
        // A URL scheme is a letter then letters, digits, `+`, `-` or `.`; one letter before
        // the colon is a Windows drive, part of a path.
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
            s.len() > 1
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        match scheme {
            None if !url.is_empty() => Ok(DatabaseKind::Sqlite),
            None => Err("must not be empty: give a sqlite:// or postgres:// URL".to_owned()),
            Some(scheme) => Err(format!(
                "must start with sqlite:// or postgres://, or be a file path; got scheme \
                 {scheme:?}"
            )),
        }
    }

    /// The URL with its password and secret query parameters replaced, for logs and output.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}
