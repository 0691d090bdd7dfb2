//! [`DeviceStore`] on SQLite.

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use clarion_domain::device::{
    BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Registration,
    last_registration_of_each_token,
};
use clarion_domain::ids::{AppId, DeviceId, UserId};
use clarion_domain::ports::{DeviceStore, StoreError};
use clarion_domain::token::DeviceToken;
use sqlx::{AssertSqlSafe, Connection as _, QueryBuilder, Sqlite};
use time::OffsetDateTime;

use crate::device_reads::{CoalescedReads, ReadDevices, coalesced};
use crate::held::Held;
use crate::registrations::{GroupedRegistrations, Pending, RegisterMany, registered};
use crate::sqlite::rows::{DEVICE_COLUMNS, DeviceRow, millis};
use crate::sqlite::{SqliteStore, db_error};

/// The default and the largest page of `list_devices`.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The most devices one `INSERT` of a bulk registration writes: 10 parameters each, well
/// under SQLite's limit of 32,766 parameters per statement.
const BULK_ROWS_PER_STATEMENT: usize = 1000;

fn keys(token: &DeviceToken) -> (Option<&str>, Option<&str>) {
    match token {
        DeviceToken::Webpush { subscription } => {
            (Some(subscription.p256dh()), Some(subscription.auth()))
        }
        DeviceToken::Apns { .. } | DeviceToken::Fcm { .. } => (None, None),
    }
}

/// A device as a registration left it, and whether the registration created it.
#[derive(sqlx::FromRow)]
struct RegisteredRow {
    #[sqlx(flatten)]
    device: DeviceRow,
    created: bool,
}

/// Registers devices with distinct tokens in one command of two statements, which the writer
/// connection runs back to back over the same rows (one JSON array bound once as `?1`, each
/// row `[app, platform, token_key, p256dh, auth, name, user_id, device_id, now]`): an update
/// of the devices that exist, then an insert of those that do not. The insert checks for the
/// row itself rather than relying on `ON CONFLICT`, so that an update does not use up an id
/// (SQLite draws the id before it finds the conflict). Each statement is atomic, and each
/// finds a device through the unique index of its application, platform and token.
fn register_statements() -> [String; 2] {
    let rows = "WITH r (r_app, r_platform, r_token, r_p256dh, r_auth, r_name, r_user, \
                r_device, r_now) AS (SELECT value ->> 0, value ->> 1, value ->> 2, \
                value ->> 3, value ->> 4, value ->> 5, value ->> 6, value ->> 7, value ->> 8 \
                FROM json_each(?1))";
    [
        format!(
            "{rows} UPDATE devices SET user_id = r_user, name = r_name, device_id = r_device, \
             p256dh = r_p256dh, auth = r_auth, active = 1, deactivated_at = NULL, \
             deactivation_reason = NULL, updated_at = r_now FROM r \
             WHERE app = r_app AND platform = r_platform AND token_key = r_token \
             RETURNING {DEVICE_COLUMNS}, 0 AS created"
        ),
        format!(
            "{rows} INSERT INTO devices (app, platform, token_key, p256dh, auth, name, active, \
             user_id, device_id, created_at, updated_at) \
             SELECT r_app, r_platform, r_token, r_p256dh, r_auth, r_name, 1, r_user, \
             r_device, r_now, r_now FROM r WHERE NOT EXISTS (SELECT 1 FROM devices \
             WHERE app = r_app AND platform = r_platform AND token_key = r_token) \
             RETURNING {DEVICE_COLUMNS}, 1 AS created"
        ),
    ]
}

/// The statement of [`GroupedRegistrations`] on SQLite: [`register_statements`] on the writer.
pub(crate) struct SqliteRegistrations {
    pub(crate) writer: Held<Sqlite>,
    pub(crate) sql: String,
}

#[async_trait]
impl RegisterMany for SqliteRegistrations {
    async fn register_many(
        &self,
        devices: &[&Pending],
    ) -> Result<Vec<(Device, Registration)>, StoreError> {
        let rows: Vec<_> = devices
            .iter()
            .map(|(device, now)| {
                let (p256dh, auth) = keys(&device.token);
                serde_json::json!([
                    device.app.as_str(),
                    device.token.platform().as_str(),
                    device.token.key(),
                    p256dh,
                    auth,
                    device.name,
                    device.user_id.as_ref().map(UserId::as_str),
                    device.device_id,
                    millis(*now),
                ])
            })
            .collect();
        let mut conn = self.writer.get().await?;
        let rows: Vec<RegisteredRow> = sqlx::query_as(AssertSqlSafe(self.sql.as_str()))
            .bind(serde_json::Value::Array(rows).to_string())
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to register devices"))?;
        conn.done();
        rows.into_iter()
            .map(|row| Ok(registered(row.device.into_domain()?, row.created)))
            .collect()
    }
}

impl SqliteRegistrations {
    pub(crate) fn grouped(writer: Held<Sqlite>) -> GroupedRegistrations {
        GroupedRegistrations::new(Arc::new(SqliteRegistrations {
            writer,
            sql: register_statements().join("; "),
        }))
    }
}

/// Reads the devices of a JSON array (`?1`) of `[application, id]` pairs, as one JSON array
/// of [`DeviceRow`]s in no particular order (`active` a JSON boolean): one row, since sqlx
/// hands each row of a statement over from the connection's thread and copies each of its
/// values, which cost more than the look-ups (a read serves a claim's messages or the sends
/// of many requests at once).
///
/// `CROSS JOIN` makes SQLite walk the pairs and look each device up by its primary key.
/// Written as `app = ? AND id IN (SELECT value FROM json_each(?))`, the planner (with no
/// statistics) chose the `(app, active)` index instead and read every device of the
/// application for each call: a broadcast's page of 500 ids read all 1,000,000 devices,
/// and a single send read them all as well.
fn get_devices_sql() -> &'static str {
    // Made once: the statement runs on a hot path.
    static SQL: LazyLock<String> = LazyLock::new(|| {
        let columns = DEVICE_COLUMNS.replace(
            "active",
            "json(CASE WHEN active THEN 'true' ELSE 'false' END)",
        );
        format!(
            "SELECT json_group_array(json_array({columns})) FROM (SELECT value ->> 0 AS \
             wanted_app, value ->> 1 AS wanted FROM json_each(?1)) CROSS JOIN devices \
             ON devices.id = wanted WHERE app = wanted_app"
        )
    });
    &SQL
}

/// The statement of [`CoalescedReads`] on SQLite: [`get_devices_sql`] on a reader.
pub(crate) struct SqliteDeviceReads {
    pub(crate) readers: Held<Sqlite>,
}

impl SqliteDeviceReads {
    pub(crate) fn coalesced(readers: Held<Sqlite>) -> CoalescedReads<SqliteDeviceReads> {
        coalesced(SqliteDeviceReads { readers })
    }
}

#[async_trait]
impl ReadDevices for SqliteDeviceReads {
    async fn read_devices(&self, wanted: &[(AppId, DeviceId)]) -> Result<Vec<Device>, StoreError> {
        // The pairs travel as one JSON array: one parameter whatever their number (SQLite
        // allows 32,766 a statement), and one statement text, which SQLite prepares once per
        // connection rather than once for every number of ids.
        let wanted: Vec<serde_json::Value> = wanted
            .iter()
            .map(|(app, id)| serde_json::json!([app.as_str(), id.0]))
            .collect();
        let mut conn = self.readers.get().await?;
        let rows: String = sqlx::query_scalar(AssertSqlSafe(get_devices_sql()))
            .bind(serde_json::Value::Array(wanted).to_string())
            .fetch_one(&mut *conn)
            .await
            .map_err(db_error("failed to read devices"))?;
        conn.done();
        let rows: Vec<DeviceRow> = serde_json::from_str(&rows)
            .map_err(|e| StoreError::Corrupt(format!("devices read by id: {e}")))?;
        rows.into_iter().map(DeviceRow::into_domain).collect()
    }
}

#[async_trait]
impl DeviceStore for SqliteStore {
    async fn register_device(
        &self,
        device: &NewDevice,
        now: OffsetDateTime,
    ) -> Result<(Device, Registration), StoreError> {
        // Writes of this process go through the one writer connection; registrations made
        // at the same time are written together, as one command.
        self.registrations.register(device.clone(), now).await
    }

    async fn register_devices(
        &self,
        devices: &[NewDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        let devices = last_registration_of_each_token(devices);
        if devices.is_empty() {
            return Ok(BulkRegistration::default());
        }
        let now = millis(now);
        // `IMMEDIATE` takes the write lock before the first read, so that no other writer (of
        // another process) commits between that read and the inserts.
        let mut conn = self.pool.get().await?;
        let mut tx = conn
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("failed to begin a bulk registration"))?;
        // Ids only grow (AUTOINCREMENT), and writers are serialised, so the rows this
        // transaction creates are exactly those with an id above the largest one before it.
        let (before,): (i64,) = sqlx::query_as("SELECT COALESCE(MAX(id), 0) FROM devices")
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error("failed to read the largest device id"))?;
        let mut created = 0_u64;
        for chunk in devices.chunks(BULK_ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO devices (app, platform, token_key, p256dh, auth, name, active, \
                 user_id, device_id, created_at, updated_at) ",
            );
            query.push_values(chunk, |mut row, device| {
                let (p256dh, auth) = keys(&device.token);
                row.push_bind(device.app.as_str().to_owned())
                    .push_bind(device.token.platform().as_str())
                    .push_bind(device.token.key().to_owned())
                    .push_bind(p256dh.map(str::to_owned))
                    .push_bind(auth.map(str::to_owned))
                    .push_bind(device.name.clone())
                    .push("1")
                    .push_bind(device.user_id.as_ref().map(|u| u.as_str().to_owned()))
                    .push_bind(device.device_id.clone())
                    .push_bind(now)
                    .push_bind(now);
            });
            query.push(
                " ON CONFLICT (app, platform, token_key) DO UPDATE SET \
                 user_id = excluded.user_id, name = excluded.name, \
                 device_id = excluded.device_id, p256dh = excluded.p256dh, \
                 auth = excluded.auth, active = 1, deactivated_at = NULL, \
                 deactivation_reason = NULL, updated_at = excluded.updated_at \
                 RETURNING id",
            );
            let ids: Vec<(i64,)> = query
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error("failed to register devices in bulk"))?;
            created += ids.iter().filter(|(id,)| *id > before).count() as u64;
        }
        tx.commit()
            .await
            .map_err(db_error("failed to commit a bulk registration"))?;
        Ok(BulkRegistration {
            created,
            updated: devices.len() as u64 - created,
        })
    }

    async fn get_device(&self, app: &AppId, id: DeviceId) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE app = ? AND id = ?");
        sqlx::query_as::<_, DeviceRow>(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .bind(id.0)
            .fetch_optional(&mut *self.readers.get().await?)
            .await
            .map_err(db_error("failed to read a device"))?
            .map(DeviceRow::into_domain)
            .transpose()
    }

    async fn get_devices(&self, app: &AppId, ids: &[DeviceId]) -> Result<Vec<Device>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Reads of other sends made at the same time go in the same statement.
        self.device_reads.write((app.clone(), ids.to_vec())).await
    }

    async fn list_devices(
        &self,
        app: &AppId,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE app = "
        ));
        query.push_bind(app.as_str().to_owned());
        if let Some(user) = &filter.user_id {
            query
                .push(" AND user_id = ")
                .push_bind(user.as_str().to_owned());
        }
        if let Some(platform) = filter.platform {
            query.push(" AND platform = ").push_bind(platform.as_str());
        }
        if let Some(active) = filter.active {
            query.push(" AND active = ").push_bind(active);
        }
        if let Some(prefix) = &filter.token_prefix {
            // substr rather than LIKE, whose wildcards a token or endpoint may hold.
            query
                .push(" AND substr(token_key, 1, length(")
                .push_bind(prefix.clone())
                .push(")) = ")
                .push_bind(prefix.clone());
        }
        if let Some(after) = filter.after {
            query.push(" AND id > ").push_bind(after.0);
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        query
            .push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(limit));
        query
            .build_query_as::<DeviceRow>()
            .fetch_all(&mut *self.readers.get().await?)
            .await
            .map_err(db_error("failed to list devices"))?
            .into_iter()
            .map(DeviceRow::into_domain)
            .collect()
    }

    async fn deactivate_device(
        &self,
        app: &AppId,
        id: DeviceId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let now = millis(now);
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = 0, deactivated_at = ?, deactivation_reason = ?, \
             updated_at = ? WHERE app = ? AND id = ?",
        )
        .bind(now)
        .bind(reason.to_owned())
        .bind(now)
        .bind(app.as_str().to_owned())
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to deactivate a device"))?;
        conn.done();
        Ok(done.rows_affected() > 0)
    }

    async fn update_device(
        &self,
        app: &AppId,
        id: DeviceId,
        update: &DeviceUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<Device>, StoreError> {
        let now = millis(now);
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE devices SET updated_at = ");
        query.push_bind(now);
        if let Some(name) = &update.name {
            query.push(", name = ").push_bind(name.clone());
        }
        if let Some(user) = &update.user_id {
            query
                .push(", user_id = ")
                .push_bind(user.as_ref().map(|u| u.as_str().to_owned()));
        }
        match update.active {
            Some(true) => {
                query.push(", active = 1, deactivated_at = NULL, deactivation_reason = NULL");
            }
            Some(false) => {
                let reason = update
                    .reason
                    .clone()
                    .unwrap_or_else(|| "deactivated".to_owned());
                query
                    .push(", active = 0, deactivated_at = ")
                    .push_bind(now)
                    .push(", deactivation_reason = ")
                    .push_bind(reason);
            }
            None => {}
        }
        query
            .push(" WHERE app = ")
            .push_bind(app.as_str().to_owned())
            .push(" AND id = ")
            .push_bind(id.0)
            .push(" RETURNING ")
            .push(DEVICE_COLUMNS);
        query
            .build_query_as::<DeviceRow>()
            .fetch_optional(&mut *self.pool.get().await?)
            .await
            .map_err(db_error("failed to update a device"))?
            .map(DeviceRow::into_domain)
            .transpose()
    }

    async fn delete_device(&self, app: &AppId, id: DeviceId) -> Result<bool, StoreError> {
        let mut conn = self.pool.get().await?;
        let done = sqlx::query("DELETE FROM devices WHERE app = ? AND id = ?")
            .bind(app.as_str().to_owned())
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to delete a device"))?;
        conn.done();
        Ok(done.rows_affected() > 0)
    }

    async fn deactivate_dead_devices(
        &self,
        app: &AppId,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let now = millis(now);
        // The latest delivery must also be newer than the device's last update, so that a
        // device registered again after its token was reported dead stays active.
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = 0, deactivated_at = ?, \
             deactivation_reason = 'dead token', updated_at = ? \
             WHERE app = ? AND active = 1 AND EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.id = ( \
                     SELECT MAX(l.id) FROM deliveries l WHERE l.device_id = devices.id) \
                 AND d.state = 'dead_token' AND d.updated_at > devices.updated_at)",
        )
        .bind(now)
        .bind(now)
        .bind(app.as_str().to_owned())
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to deactivate dead devices"))?;
        conn.done();
        Ok(done.rows_affected())
    }

    async fn delete_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.pool.get().await?;
        let done =
            sqlx::query("DELETE FROM devices WHERE app = ? AND active = 0 AND deactivated_at < ?")
                .bind(app.as_str().to_owned())
                .bind(millis(before))
                .execute(&mut *conn)
                .await
                .map_err(db_error("failed to delete inactive devices"))?;
        conn.done();
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::SqliteStore;
    use crate::sqlite::tests::plan_of;

    #[tokio::test]
    async fn devices_read_by_id_are_looked_up_by_primary_key() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        let plan = plan_of(&store, get_devices_sql(), &["[1, 2, 3]", "app"]).await;
        assert!(
            plan.contains("SEARCH devices USING INTEGER PRIMARY KEY"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN devices"), "{plan}");
        assert!(!plan.contains("INDEX devices_app"), "{plan}");
    }

    #[test]
    fn devices_read_by_id_write_the_flag_as_a_json_boolean() {
        let sql = get_devices_sql();
        assert_eq!(sql.matches("active").count(), 1, "{sql}");
        assert!(sql.contains("WHEN active THEN 'true'"), "{sql}");
    }

    #[tokio::test]
    async fn registrations_find_their_devices_by_the_unique_token_index() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        for statement in register_statements() {
            let plan = plan_of(&store, &statement, &["[]"]).await;
            assert!(
                plan.contains(
                    "SEARCH devices USING COVERING INDEX sqlite_autoindex_devices_1 \
                     (app=? AND platform=? AND token_key=?)"
                ),
                "{plan}"
            );
            assert!(!plan.contains("SCAN devices"), "{plan}");
        }
    }
}
