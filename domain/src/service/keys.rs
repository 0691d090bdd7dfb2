//! API keys: creating, listing and revoking them, and authenticating a presented secret, with
//! their error type.

use crate::app::UnknownApplication;
use crate::auth::{
    ApiKey, ApiKeyId, AuthError, CreatedApiKey, KeyHash, KeyScope, NewApiKey, Principal,
};
use crate::ports::StoreError;
use crate::service::PushService;
use crate::text::{UnstorableText, storable};

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The scope names an application that is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// The name is empty or longer than 100 characters.
    #[error("a key name must be 1 to 100 characters")]
    BadName,
    /// The secret is shorter than 32 characters, too short to be a key drawn at random.
    #[error("a key secret must be at least 32 characters")]
    WeakSecret,
    /// The name holds a character no store can keep.
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
    /// No key has this id.
    #[error("API key {0} not found")]
    NotFound(ApiKeyId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushService {
    /// Stores a new key for `secret`, which the caller drew from a secure random source, and
    /// returns it with the secret: the only time the secret is seen.
    ///
    /// # Errors
    /// [`KeyError::BadName`], [`KeyError::Unstorable`] naming `name`, [`KeyError::WeakSecret`],
    /// [`KeyError::UnknownApplication`] for an application scope that is not configured, or
    /// [`KeyError::Store`].
    pub async fn create_api_key(
        &self,
        name: &str,
        scope: KeyScope,
        secret: String,
    ) -> Result<CreatedApiKey, KeyError> {
        let name = storable("name", name.trim())?;
        if name.is_empty() || name.chars().count() > 100 {
            return Err(KeyError::BadName);
        }
        if secret.len() < 32 {
            return Err(KeyError::WeakSecret);
        }
        if let KeyScope::App(app) = &scope {
            self.apps.get(app.as_str())?;
        }
        let new = NewApiKey {
            name: name.to_owned(),
            scope,
            prefix: secret.chars().take(12).collect(),
            hash: KeyHash::of(&secret),
        };
        let key = self.ports.keys.insert_api_key(&new, self.now()).await?;
        Ok(CreatedApiKey { key, secret })
    }

    /// The principal a presented API key secret acts for.
    ///
    /// # Errors
    /// [`AuthError::UnknownKey`] or [`AuthError::Revoked`]; a store failure is reported as
    /// `Err(Err(StoreError))` so that callers can answer 503 rather than 401.
    pub async fn authenticate_key(
        &self,
        secret: &str,
    ) -> Result<Result<Principal, AuthError>, StoreError> {
        self.authenticate_key_hash(&KeyHash::of(secret)).await
    }

    /// The principal the key whose secret hashes to `presented` acts for, asked again for
    /// each request of a session that signed in with it (the admin UI keeps the hash, not
    /// the key), so that revoking the key ends its sessions. The key store may answer from a
    /// cache that forgets a key revoked through it at once and one revoked by another
    /// process after a short age (the adapters' `key_cache`).
    ///
    /// # Errors
    /// As [`PushService::authenticate_key`].
    pub async fn authenticate_key_hash(
        &self,
        presented: &KeyHash,
    ) -> Result<Result<Principal, AuthError>, StoreError> {
        let Some(key) = self.ports.keys.find_api_key(presented).await? else {
            return Ok(Err(AuthError::UnknownKey));
        };
        if !key
            .hash
            .as_ref()
            .is_some_and(|stored| stored.matches(presented))
        {
            return Ok(Err(AuthError::UnknownKey));
        }
        if key.revoked_at.is_some() {
            return Ok(Err(AuthError::Revoked));
        }
        Ok(Ok(match key.scope {
            KeyScope::Admin => Principal::Admin,
            KeyScope::App(app) => Principal::App(app),
        }))
    }

    /// Every key, revoked ones included, oldest first; never their secrets.
    ///
    /// # Errors
    /// [`KeyError::Store`].
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, KeyError> {
        Ok(self.ports.keys.list_api_keys().await?)
    }

    /// Revokes a key: it authenticates nothing from then on. Revoking it again keeps the first
    /// time.
    ///
    /// # Errors
    /// [`KeyError::NotFound`] or [`KeyError::Store`].
    pub async fn revoke_api_key(&self, id: ApiKeyId) -> Result<ApiKey, KeyError> {
        self.ports
            .keys
            .revoke_api_key(id, self.now())
            .await?
            .ok_or(KeyError::NotFound(id))
    }

    /// Whether any key that is not revoked exists (the server creates a first admin key
    /// otherwise).
    ///
    /// # Errors
    /// [`KeyError::Store`].
    pub async fn has_active_api_keys(&self) -> Result<bool, KeyError> {
        Ok(self
            .ports
            .keys
            .list_api_keys()
            .await?
            .iter()
            .any(|k| k.revoked_at.is_none()))
    }
}
