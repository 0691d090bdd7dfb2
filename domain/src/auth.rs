//! API keys and who a request acts for. A key is shown once at creation and stored only as its
//! SHA-256 hash; an `admin` key reaches everything, an application key one application, and a
//! client token (verified by the adapters) one user's devices of one application.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use crate::ids::{AppId, IdError, UserId};

/// A database id of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKeyId(pub i64);

impl fmt::Display for ApiKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a key may reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyScope {
    /// Everything, every application and the keys themselves.
    Admin,
    /// One application.
    App(AppId),
}

impl KeyScope {
    /// `admin` or `app:<id>`, as stored and shown.
    #[must_use]
    pub fn to_text(&self) -> String {
        match self {
            KeyScope::Admin => "admin".to_owned(),
            KeyScope::App(app) => format!("app:{app}"),
        }
    }
}

impl fmt::Display for KeyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A scope that is neither `admin` nor `app:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// The text is neither `admin` nor `app:<id>`; it holds the text given.
    #[error("key scope must be admin or app:<application id>; got {0:?}")]
    Shape(String),
    /// The text after `app:` is not a valid application id.
    #[error("key scope: {0}")]
    App(#[from] IdError),
}

impl FromStr for KeyScope {
    type Err = ScopeError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        if raw == "admin" {
            return Ok(KeyScope::Admin);
        }
        match raw.strip_prefix("app:") {
            Some(app) => Ok(KeyScope::App(AppId::parse(app)?)),
            None => Err(ScopeError::Shape(raw.to_owned())),
        }
    }
}

impl Serialize for KeyScope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_text())
    }
}

impl<'de> Deserialize<'de> for KeyScope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// The SHA-256 of a key's secret, in lower-case hex: what the store keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    /// Hashes a presented secret.
    #[must_use]
    pub fn of(secret: &str) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(secret.as_bytes());
        // Every authenticated request hashes its credential (twice with the rate limit on):
        // one string written in place, not a formatted string per byte.
        let mut hex = String::with_capacity(digest.len() * 2);
        for byte in digest {
            hex.push(char::from(HEX[usize::from(byte >> 4)]));
            hex.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self(hex)
    }

    /// A hash read back from the store.
    #[must_use]
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    /// The hash as 64 lower-case hexadecimal characters, as the store keeps it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares two hashes in time that does not depend on where they differ.
    #[must_use]
    pub fn matches(&self, other: &KeyHash) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    /// The store's id of the key, by which an operator revokes it.
    pub id: ApiKeyId,
    /// The operator's label for the key (1 to 100 characters), such as `ci` or `shop backend`.
    pub name: String,
    /// What requests made with the key may reach.
    pub scope: KeyScope,
    /// The first characters of the secret, to tell keys apart in lists.
    pub prefix: String,
    /// When the key was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the key was revoked; `None` while it is valid. A revoked key authenticates nothing.
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
    /// The hash of the secret: filled in by
    /// [`ApiKeyStore::find_api_key`](crate::ports::ApiKeyStore::find_api_key) so that the caller
    /// can compare it, and never serialised.
    #[serde(skip)]
    pub hash: Option<KeyHash>,
}

/// A key to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The operator's label for the key (1 to 100 characters).
    pub name: String,
    /// What requests made with the key may reach.
    pub scope: KeyScope,
    /// The first 12 characters of the secret, kept in clear to tell keys apart in lists.
    pub prefix: String,
    /// The SHA-256 of the secret; the secret itself is never stored.
    pub hash: KeyHash,
}

/// A key just created, with its secret: the only time the secret is seen.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct CreatedApiKey {
    /// The key as it was stored.
    #[serde(flatten)]
    pub key: ApiKey,
    /// The secret a client presents as `Authorization: Bearer <secret>`; it cannot be shown again.
    pub secret: String,
}

impl fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedApiKey")
            .field("key", &self.key)
            .field("secret", &"[redacted]")
            .finish()
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An `admin` key: every application, and the API keys themselves.
    Admin,
    /// A key scoped to one application: everything of that application and nothing else.
    App(AppId),
    /// A client token: one user of one application, for that user's own devices only.
    Client {
        /// The application whose `client_token_secret` signed the token.
        app: AppId,
        /// The user the token's `sub` names, whose own devices the client may manage.
        user: UserId,
    },
}

impl Principal {
    /// Whether the principal may act on `app` at all.
    #[must_use]
    pub fn reaches(&self, app: &AppId) -> bool {
        match self {
            Principal::Admin => true,
            Principal::App(own) | Principal::Client { app: own, .. } => own == app,
        }
    }

    /// Whether the principal may manage API keys (and reach every application).
    #[must_use]
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }
}

/// Why a presented credential was refused. The text never includes the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The request carried no `Authorization: Bearer` credential.
    #[error("missing credentials: send Authorization: Bearer <key>")]
    Missing,
    /// No stored key has the hash of the presented secret.
    #[error("the API key is not valid")]
    UnknownKey,
    /// The key exists but was revoked.
    #[error("the API key was revoked")]
    Revoked,
    /// A client token whose signature, expiry or claims did not verify; the text says which,
    /// without the token.
    #[error("the client token is not valid: {0}")]
    BadClientToken(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_is_the_hex_sha256_of_the_secret() {
        assert_eq!(
            KeyHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_match_only_when_equal() {
        assert!(KeyHash::of("k1").matches(&KeyHash::of("k1")));
        assert!(!KeyHash::of("k1").matches(&KeyHash::of("k2")));
        assert!(!KeyHash::of("k1").matches(&KeyHash::from_stored("ab".into())));
    }

    #[test]
    fn scopes_round_trip_through_text() {
        for raw in ["admin", "app:shop"] {
            assert_eq!(
                raw.parse::<KeyScope>().map(|s| s.to_text()),
                Ok(raw.to_owned())
            );
        }
        assert!(matches!(
            "root".parse::<KeyScope>(),
            Err(ScopeError::Shape(_))
        ));
        assert!(matches!(
            "app:Bad".parse::<KeyScope>(),
            Err(ScopeError::App(_))
        ));
    }

    #[test]
    fn an_app_key_reaches_only_its_application() {
        let shop = AppId::parse("shop").unwrap();
        let other = AppId::parse("other").unwrap();
        assert!(Principal::App(shop.clone()).reaches(&shop));
        assert!(!Principal::App(shop).reaches(&other));
        assert!(Principal::Admin.reaches(&other));
    }

    #[test]
    fn a_created_key_does_not_debug_print_its_secret() {
        let created = CreatedApiKey {
            key: ApiKey {
                id: ApiKeyId(1),
                name: "ci".into(),
                scope: KeyScope::Admin,
                prefix: "clk_abcd".into(),
                created_at: OffsetDateTime::UNIX_EPOCH,
                revoked_at: None,
                hash: None,
            },
            secret: "clk_abcdef-very-secret".into(),
        };
        assert!(!format!("{created:?}").contains("very-secret"));
    }
}
