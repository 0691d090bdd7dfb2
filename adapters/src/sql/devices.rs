//! [`DeviceStore`](clarion_domain::ports::DeviceStore) on both databases. Registrations and
//! reads by id go through the grouped statements of each store (`sqlite/devices.rs`,
//! `postgres/devices.rs`), and a bulk registration through its [`Dialect`]; the rest is here.

use clarion_domain::device::{
    BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Registration,
    last_registration_of_each_token,
};
use clarion_domain::ids::{AppId, DeviceId};
use clarion_domain::ports::StoreError;
use clarion_domain::token::DeviceToken;
use sqlx::{AssertSqlSafe, Encode, Executor, FromRow, QueryBuilder, Type};
use time::OffsetDateTime;

use crate::faults::db_error;
use crate::rows::{DEVICE_COLUMNS, DeviceRow};
use crate::sql::{Dialect, Tables};

/// The default and the largest page of `list_devices`.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The keys of a Web Push subscription, which have columns of their own; `None` for the other
/// platforms.
pub(crate) fn subscription_keys(token: &DeviceToken) -> (Option<&str>, Option<&str>) {
    match token {
        DeviceToken::Webpush { subscription } => {
            (Some(subscription.p256dh()), Some(subscription.auth()))
        }
        DeviceToken::Apns { .. } | DeviceToken::Fcm { .. } => (None, None),
    }
}

/// An `INSERT` of `devices` that updates the device with the same application, platform and
/// token instead where there is one, returning `returning`: the statement of a PostgreSQL
/// registration batch and of a bulk registration on either database.
pub(crate) fn upsert_devices<'a, DB: Dialect>(
    devices: impl IntoIterator<Item = (&'a NewDevice, OffsetDateTime)>,
    returning: &str,
) -> QueryBuilder<DB>
where
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
{
    let mut query = QueryBuilder::<DB>::new(
        "INSERT INTO devices (app, platform, token_key, p256dh, auth, name, active, \
         user_id, device_id, created_at, updated_at) ",
    );
    query.push_values(devices, |mut row, (device, now)| {
        let now = DB::time(now);
        let (p256dh, auth) = subscription_keys(&device.token);
        row.push_bind(device.app.as_str().to_owned())
            .push_bind(device.token.platform().as_str())
            .push_bind(device.token.key().to_owned())
            .push_bind(p256dh.map(str::to_owned))
            .push_bind(auth.map(str::to_owned))
            .push_bind(device.name.clone())
            .push("TRUE")
            .push_bind(device.user_id.as_ref().map(|u| u.as_str().to_owned()))
            .push_bind(device.device_id.clone())
            .push_bind(now)
            .push_bind(now);
    });
    query.push(
        " ON CONFLICT (app, platform, token_key) DO UPDATE SET \
         user_id = EXCLUDED.user_id, name = EXCLUDED.name, \
         device_id = EXCLUDED.device_id, p256dh = EXCLUDED.p256dh, \
         auth = EXCLUDED.auth, active = TRUE, deactivated_at = NULL, \
         deactivation_reason = NULL, updated_at = EXCLUDED.updated_at RETURNING ",
    );
    query.push(returning);
    query
}

impl<DB: Dialect> Tables<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> bool: Encode<'q, DB> + Type<DB>,
    DeviceRow<DB::Time>: for<'r> FromRow<'r, DB::Row>,
{
    pub(crate) async fn register_device(
        &self,
        device: &NewDevice,
        now: OffsetDateTime,
    ) -> Result<(Device, Registration), StoreError> {
        // Registrations made at the same time are written together, as one statement.
        self.registrations.register(device.clone(), now).await
    }

    pub(crate) async fn register_devices(
        &self,
        devices: &[NewDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        let devices = last_registration_of_each_token(devices);
        if devices.is_empty() {
            return Ok(BulkRegistration::default());
        }
        DB::register_in_bulk(self.writer, devices, now).await
    }

    pub(crate) async fn get_device(
        &self,
        app: &AppId,
        id: DeviceId,
    ) -> Result<Option<Device>, StoreError> {
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE app = $1 AND id = $2");
        let mut conn = self.readers.get().await?;
        let row: Option<DeviceRow<DB::Time>> = sqlx::query_as(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .bind(id.0)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to read a device"))?;
        conn.done();
        row.map(DeviceRow::into_domain).transpose()
    }

    pub(crate) async fn get_devices(
        &self,
        app: &AppId,
        ids: &[DeviceId],
    ) -> Result<Vec<Device>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Reads of other sends made at the same time go in the same statement.
        self.device_reads.write((app.clone(), ids.to_vec())).await
    }

    pub(crate) async fn list_devices(
        &self,
        app: &AppId,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, StoreError> {
        let mut query =
            QueryBuilder::<DB>::new(format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE app = "));
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
            query.push(" AND ");
            DB::push_starts_with(&mut query, "token_key", prefix);
        }
        if let Some(after) = filter.after {
            query.push(" AND id > ").push_bind(after.0);
        }
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT);
        query
            .push(" ORDER BY id LIMIT ")
            .push_bind(i64::from(limit));
        let mut conn = self.readers.get().await?;
        let rows: Vec<DeviceRow<DB::Time>> = query
            .build_query_as()
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to list devices"))?;
        conn.done();
        rows.into_iter().map(DeviceRow::into_domain).collect()
    }

    pub(crate) async fn deactivate_device(
        &self,
        app: &AppId,
        id: DeviceId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = FALSE, deactivated_at = $1, deactivation_reason = $2, \
             updated_at = $1 WHERE app = $3 AND id = $4",
        )
        .bind(DB::time(now))
        .bind(reason.to_owned())
        .bind(app.as_str().to_owned())
        .bind(id.0)
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to deactivate a device"))?;
        conn.done();
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn update_device(
        &self,
        app: &AppId,
        id: DeviceId,
        update: &DeviceUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<Device>, StoreError> {
        let now = DB::time(now);
        let mut query = QueryBuilder::<DB>::new("UPDATE devices SET updated_at = ");
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
                query.push(", active = TRUE, deactivated_at = NULL, deactivation_reason = NULL");
            }
            Some(false) => {
                let reason = update
                    .reason
                    .clone()
                    .unwrap_or_else(|| "deactivated".to_owned());
                query
                    .push(", active = FALSE, deactivated_at = ")
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
        let mut conn = self.writer.get().await?;
        let row: Option<DeviceRow<DB::Time>> = query
            .build_query_as()
            .fetch_optional(&mut *conn)
            .await
            .map_err(db_error("failed to update a device"))?;
        conn.done();
        row.map(DeviceRow::into_domain).transpose()
    }

    pub(crate) async fn delete_device(
        &self,
        app: &AppId,
        id: DeviceId,
    ) -> Result<bool, StoreError> {
        let mut conn = self.writer.get().await?;
        let done = sqlx::query("DELETE FROM devices WHERE app = $1 AND id = $2")
            .bind(app.as_str().to_owned())
            .bind(id.0)
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to delete a device"))?;
        conn.done();
        Ok(DB::rows_affected(&done) > 0)
    }

    pub(crate) async fn deactivate_dead_devices(
        &self,
        app: &AppId,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        // The latest delivery must also be newer than the device's last update, so that a
        // device registered again after its token was reported dead stays active.
        let mut conn = self.writer.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = FALSE, deactivated_at = $1, \
             deactivation_reason = 'dead token', updated_at = $1 \
             WHERE app = $2 AND active = TRUE AND EXISTS ( \
                 SELECT 1 FROM deliveries d WHERE d.id = ( \
                     SELECT MAX(l.id) FROM deliveries l WHERE l.device_id = devices.id) \
                 AND d.state = 'dead_token' AND d.updated_at > devices.updated_at)",
        )
        .bind(DB::time(now))
        .bind(app.as_str().to_owned())
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to deactivate dead devices"))?;
        conn.done();
        Ok(DB::rows_affected(&done))
    }

    pub(crate) async fn delete_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut conn = self.writer.get().await?;
        let done = sqlx::query(
            "DELETE FROM devices WHERE app = $1 AND active = FALSE AND deactivated_at < $2",
        )
        .bind(app.as_str().to_owned())
        .bind(DB::time(before))
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to delete inactive devices"))?;
        conn.done();
        Ok(DB::rows_affected(&done))
    }
}
