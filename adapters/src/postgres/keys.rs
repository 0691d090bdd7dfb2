//! [`ApiKeyStore`] on PostgreSQL.

use async_trait::async_trait;
use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
use clarion_domain::ports::{ApiKeyStore, StoreError};
use sqlx::AssertSqlSafe;
use time::OffsetDateTime;

use crate::postgres::rows::{API_KEY_COLUMNS, ApiKeyRow};
use crate::postgres::{PgStore, db_error, ms};

#[async_trait]
impl ApiKeyStore for PgStore {
    async fn insert_api_key(
        &self,
        key: &NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys (name, scope, prefix, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {API_KEY_COLUMNS}"
        );
        sqlx::query_as::<_, ApiKeyRow>(AssertSqlSafe(sql))
            .bind(key.name.clone())
            .bind(key.scope.to_text())
            .bind(key.prefix.clone())
            .bind(key.hash.as_str().to_owned())
            .bind(ms(now))
            .fetch_one(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to insert an API key"))?
            .into_domain()
    }

    async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1");
        sqlx::query_as::<_, ApiKeyRow>(AssertSqlSafe(sql))
            .bind(hash.as_str().to_owned())
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to look up an API key"))?
            .map(ApiKeyRow::into_domain)
            .transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id");
        sqlx::query_as::<_, ApiKeyRow>(AssertSqlSafe(sql))
            .fetch_all(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to list API keys"))?
            .into_iter()
            .map(ApiKeyRow::into_domain)
            .collect()
    }

    async fn revoke_api_key(
        &self,
        id: ApiKeyId,
        now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {API_KEY_COLUMNS}"
        );
        sqlx::query_as::<_, ApiKeyRow>(AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(id.0)
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to revoke an API key"))?
            .map(ApiKeyRow::into_domain)
            .transpose()
    }
}
