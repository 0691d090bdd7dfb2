//! What SQLite does its own way for devices: registrations made at the same time, reads of
//! devices by id made at the same time, and a bulk registration. The rest of
//! [`DeviceStore`](clarion_domain::ports::DeviceStore) is shared (`sql/devices.rs`).

use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use clarion_domain::device::{BulkRegistration, Device, NewDevice, Registration};
use clarion_domain::ids::{AppId, DeviceId, UserId};
use clarion_domain::ports::StoreError;
use sqlx::{AssertSqlSafe, Connection as _, Sqlite};
use time::OffsetDateTime;

use crate::device_reads::{CoalescedReads, ReadDevices, coalesced};
use crate::held::Held;
use crate::registrations::{GroupedRegistrations, Pending, RegisterMany};
use crate::sql::{subscription_keys, upsert_devices};
use crate::sqlite::db_error;
use crate::sqlite::rows::{DEVICE_COLUMNS, DeviceRow, RegisteredRow, millis};

/// The most devices one `INSERT` of a bulk registration writes: 10 parameters each, well
/// under SQLite's limit of 32,766 parameters per statement.
const BULK_ROWS_PER_STATEMENT: usize = 1000;

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
                let (p256dh, auth) = subscription_keys(&device.token);
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
        rows.into_iter().map(RegisteredRow::into_domain).collect()
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

/// A bulk registration on SQLite: one transaction that takes the write lock first, upserts the
/// devices [`BULK_ROWS_PER_STATEMENT`] at a time, and counts as created the
/// rows whose id is above the largest one before it.
pub(super) async fn register_in_bulk(
    writer: &Held<Sqlite>,
    devices: Vec<&NewDevice>,
    now: OffsetDateTime,
) -> Result<BulkRegistration, StoreError> {
    // `IMMEDIATE` takes the write lock before the first read, so that no other writer (of
    // another process) commits between that read and the inserts.
    let mut conn = writer.get().await?;
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
        let mut query = upsert_devices(chunk.iter().map(|device| (*device, now)), "id");
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
