//! [`ApiKeyStore`](clarion_domain::ports::ApiKeyStore) on both databases.

use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
use clarion_domain::ports::StoreError;
use sqlx::{AssertSqlSafe, Encode, Executor, FromRow, Type};
use time::OffsetDateTime;

use crate::faults::db_error;
use crate::rows::{API_KEY_COLUMNS, ApiKeyRow};
use crate::sql::{Dialect, Tables};

impl<DB: Dialect> Tables<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    ApiKeyRow<DB::Time>: for<'r> FromRow<'r, DB::Row>,
{
    pub(crate) async fn insert_api_key(
        &self,
        key: &NewApiKey,
        now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        let sql = format!(
            "INSERT INTO api_keys (name, scope, prefix, hash, created_at) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {API_KEY_COLUMNS}"
        );
        let mut conn = self.writer.get().await?;
        let row: ApiKeyRow<DB::Time> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(key.name.clone())
            .bind(key.scope.to_text())
            .bind(key.prefix.clone())
            .bind(key.hash.as_str().to_owned())
            .bind(DB::time(now))
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("failed to insert an API key"))?;
        conn.done();
        row.into_domain()
    }

    pub(crate) async fn find_api_key(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE hash = $1");
        let mut conn = self.readers.get().await?;
        let row: Option<ApiKeyRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(hash.as_str().to_owned())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to look up an API key"))?;
        conn.done();
        row.map(ApiKeyRow::into_domain).transpose()
    }

    pub(crate) async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let sql = format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY id");
        let mut conn = self.readers.get().await?;
        let rows: Vec<ApiKeyRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to list API keys"))?;
        conn.done();
        rows.into_iter().map(ApiKeyRow::into_domain).collect()
    }

    pub(crate) async fn revoke_api_key(
        &self,
        id: ApiKeyId,
        now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        let sql = format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 \
             RETURNING {API_KEY_COLUMNS}"
        );
        let mut conn = self.writer.get().await?;
        let row: Option<ApiKeyRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(DB::time(now))
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to revoke an API key"))?;
        conn.done();
        row.map(ApiKeyRow::into_domain).transpose()
    }
}
