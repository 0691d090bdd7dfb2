//! [`ReportStore`] on PostgreSQL: counts for the admin overview and the preview of a prune.

use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::ports::{DeviceCount, ErrorReason, ReportStore, StateCount, StoreError};
use time::OffsetDateTime;

use crate::postgres::{PgStore, db_error, ms};
use crate::reports::{device_count, error_reason, state_count};

#[async_trait]
impl ReportStore for PgStore {
    async fn count_devices(&self, app: &AppId) -> Result<Vec<DeviceCount>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT platform, active, COUNT(*) FROM devices WHERE app = $1 \
             GROUP BY platform, active ORDER BY platform, active",
        )
        .bind(app.as_str().to_owned())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to count devices"))?;
        conn.done();
        rows.into_iter().map(device_count).collect()
    }

    async fn count_messages_by_state(
        &self,
        app: &AppId,
        since: OffsetDateTime,
    ) -> Result<Vec<StateCount>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM messages WHERE app = $1 AND created_at >= $2 \
             GROUP BY state ORDER BY state",
        )
        .bind(app.as_str().to_owned())
        .bind(ms(since))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to count messages by state"))?;
        conn.done();
        rows.into_iter().map(state_count).collect()
    }

    async fn count_due_in_app(&self, app: &AppId, now: OffsetDateTime) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE app = $1 AND (state = 'WAITING' \
             OR (state = 'ERROR_RETRY' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)))",
        )
        .bind(app.as_str().to_owned())
        .bind(ms(now))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to count an application's due messages"))?;
        conn.done();
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn error_reasons(
        &self,
        app: &AppId,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ErrorReason>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<(String, String, i64, OffsetDateTime, Option<String>)> = sqlx::query_as(
            "SELECT 'delivery', d.error_code, COUNT(*), MAX(d.updated_at) AS last_at, \
                 MAX(d.error_text) \
             FROM deliveries d JOIN messages m ON m.id = d.message_id \
             WHERE m.app = $1 AND d.error_code IS NOT NULL AND d.updated_at >= $2 \
             GROUP BY d.error_code \
             UNION ALL \
             SELECT 'message', m.error, COUNT(*), MAX(m.changed_at) AS last_at, NULL \
             FROM messages m \
             WHERE m.app = $1 AND m.state = 'ERROR' AND m.error IS NOT NULL \
                 AND m.changed_at >= $2 AND NOT EXISTS (SELECT 1 FROM deliveries d \
                     WHERE d.message_id = m.id AND d.error_code IS NOT NULL) \
             GROUP BY m.error \
             ORDER BY last_at DESC LIMIT $3",
        )
        .bind(app.as_str().to_owned())
        .bind(ms(since))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to group errors by reason"))?;
        conn.done();
        rows.into_iter().map(error_reason).collect()
    }

    async fn count_dead_devices(&self, app: &AppId) -> Result<u64, StoreError> {
        // The condition of `deactivate_dead_devices`.
        let mut conn = self.pool.get().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE app = $1 AND active = TRUE AND EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.id = ( \
                     SELECT MAX(l.id) FROM deliveries l WHERE l.device_id = devices.id) \
                 AND d.state = 'dead_token' AND d.updated_at > devices.updated_at)",
        )
        .bind(app.as_str().to_owned())
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to count dead devices"))?;
        conn.done();
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn count_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE app = $1 AND active = FALSE \
             AND deactivated_at < $2",
        )
        .bind(app.as_str().to_owned())
        .bind(ms(before))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to count inactive devices"))?;
        conn.done();
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
