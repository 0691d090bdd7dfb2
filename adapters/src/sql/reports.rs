//! [`ReportStore`](clarion_domain::ports::ReportStore) on both databases: counts for the admin
//! overview and the preview of a prune, and their rows read back into the domain.

use clarion_domain::ids::AppId;
use clarion_domain::message::MessageState;
use clarion_domain::ports::{DeviceCount, ErrorReason, ErrorSource, StateCount, StoreError};
use clarion_domain::token::Platform;
use sqlx::{ColumnIndex, Decode, Encode, Executor, FromRow, Type};
use time::OffsetDateTime;

use crate::faults::db_error;
use crate::rows::StoredTime;
use crate::sql::{Dialect, Tables};

/// A `(source, reason, count, last time, example)` row, the time as the store keeps it.
type ErrorReasonRow<T> = (String, String, i64, T, Option<String>);

impl<DB: Dialect> Tables<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'r> i64: Decode<'r, DB>,
    usize: ColumnIndex<DB::Row>,
    (String, bool, i64): for<'r> FromRow<'r, DB::Row>,
    (String, i64): for<'r> FromRow<'r, DB::Row>,
    ErrorReasonRow<DB::Time>: for<'r> FromRow<'r, DB::Row>,
{
    pub(crate) async fn count_devices(&self, app: &AppId) -> Result<Vec<DeviceCount>, StoreError> {
        let mut conn = self.readers.get().await?;
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

    pub(crate) async fn count_messages_by_state(
        &self,
        app: &AppId,
        since: OffsetDateTime,
    ) -> Result<Vec<StateCount>, StoreError> {
        let mut conn = self.readers.get().await?;
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT state, COUNT(*) FROM messages WHERE app = $1 AND created_at >= $2 \
             GROUP BY state ORDER BY state",
        )
        .bind(app.as_str().to_owned())
        .bind(DB::time(since))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to count messages by state"))?;
        conn.done();
        rows.into_iter().map(state_count).collect()
    }

    pub(crate) async fn count_due_in_app(
        &self,
        app: &AppId,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.readers.get().await?;
        let due: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM messages WHERE app = $1 AND (state = 'WAITING' \
             OR (state = 'ERROR_RETRY' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)))",
        )
        .bind(app.as_str().to_owned())
        .bind(DB::time(now))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to count an application's due messages"))?;
        conn.done();
        Ok(count(due))
    }

    pub(crate) async fn error_reasons(
        &self,
        app: &AppId,
        since: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<ErrorReason>, StoreError> {
        let mut conn = self.readers.get().await?;
        let rows: Vec<ErrorReasonRow<DB::Time>> = sqlx::query_as(
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
        .bind(DB::time(since))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to group errors by reason"))?;
        conn.done();
        rows.into_iter().map(error_reason).collect()
    }

    pub(crate) async fn count_dead_devices(&self, app: &AppId) -> Result<u64, StoreError> {
        // The condition of `deactivate_dead_devices`.
        let mut conn = self.readers.get().await?;
        let dead: i64 = sqlx::query_scalar(
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
        Ok(count(dead))
    }

    pub(crate) async fn count_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.readers.get().await?;
        let inactive: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM devices WHERE app = $1 AND active = FALSE \
             AND deactivated_at < $2",
        )
        .bind(app.as_str().to_owned())
        .bind(DB::time(before))
        .fetch_one(&mut *conn)
        .await
        .map_err(db_error("failed to count inactive devices"))?;
        conn.done();
        Ok(count(inactive))
    }
}

fn count(raw: i64) -> u64 {
    u64::try_from(raw).unwrap_or(0)
}

/// A `(platform, active, count)` row.
fn device_count((platform, active, n): (String, bool, i64)) -> Result<DeviceCount, StoreError> {
    let platform: Platform = platform
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("devices: unknown platform {platform:?}")))?;
    Ok(DeviceCount {
        platform,
        active,
        count: count(n),
    })
}

/// A `(state, count)` row.
fn state_count((state, n): (String, i64)) -> Result<StateCount, StoreError> {
    let state: MessageState = state
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("messages: unknown state {state:?}")))?;
    Ok(StateCount {
        state,
        count: count(n),
    })
}

/// An [`ErrorReasonRow`].
fn error_reason<T: StoredTime>(
    (source, reason, n, last_at, example): ErrorReasonRow<T>,
) -> Result<ErrorReason, StoreError> {
    let source = match source.as_str() {
        "delivery" => ErrorSource::Delivery,
        _ => ErrorSource::Message,
    };
    let last_at = last_at
        .to_time()
        .map_err(|e| StoreError::Corrupt(format!("error reasons: last time: {e}")))?;
    Ok(ErrorReason {
        source,
        reason,
        count: count(n),
        last_at,
        example,
    })
}
