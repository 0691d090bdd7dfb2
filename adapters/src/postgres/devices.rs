//! [`DeviceStore`] on PostgreSQL.

use std::sync::Arc;

use async_trait::async_trait;
use clarion_domain::device::{
    BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Registration,
    last_registration_of_each_token,
};
use clarion_domain::ids::{AppId, DeviceId};
use clarion_domain::ports::{DeviceStore, StoreError};
use clarion_domain::token::DeviceToken;
use sqlx::{AssertSqlSafe, Connection as _, Postgres, QueryBuilder};
use time::OffsetDateTime;

use crate::device_reads::{CoalescedReads, ReadDevices, coalesced};
use crate::held::Held;
use crate::postgres::rows::{DEVICE_COLUMNS, DeviceRow};
use crate::postgres::{PgStore, db_error, ms};
use crate::registrations::{GroupedRegistrations, Pending, RegisterMany, key_of_new, registered};

/// The default and the largest page of `list_devices`.
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The most devices one `INSERT` of a bulk registration writes: 10 parameters each, well
/// under PostgreSQL's limit of 65,535 parameters per statement.
const BULK_ROWS_PER_STATEMENT: usize = 1000;

fn keys(token: &DeviceToken) -> (Option<&str>, Option<&str>) {
    match token {
        DeviceToken::Webpush { subscription } => {
            (Some(subscription.p256dh()), Some(subscription.auth()))
        }
        DeviceToken::Apns { .. } | DeviceToken::Fcm { .. } => (None, None),
    }
}

/// An `INSERT` of `devices` that updates the device with the same application, platform
/// and token instead where there is one, returning `returning`. A row the statement inserted
/// has no deleting or locking transaction yet (`xmax = 0`); a row it updated has this one's.
fn upsert<'a>(
    devices: impl IntoIterator<Item = (&'a NewDevice, OffsetDateTime)>,
    returning: &str,
) -> QueryBuilder<Postgres> {
    let mut query = QueryBuilder::<Postgres>::new(
        "INSERT INTO devices (app, platform, token_key, p256dh, auth, name, active, \
         user_id, device_id, created_at, updated_at) ",
    );
    query.push_values(devices, |mut row, (device, now)| {
        let now = ms(now);
        let (p256dh, auth) = keys(&device.token);
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

/// A device as a registration left it, and whether the registration created it.
#[derive(sqlx::FromRow)]
struct RegisteredRow {
    #[sqlx(flatten)]
    device: DeviceRow,
    created: bool,
}

/// The statement of [`GroupedRegistrations`] on PostgreSQL: one atomic upsert of every
/// device of the batch, whoever registers the same tokens at the same time.
pub(crate) struct PgRegistrations {
    pub(crate) pool: Held<Postgres>,
}

impl PgRegistrations {
    pub(crate) fn grouped(pool: Held<Postgres>) -> GroupedRegistrations {
        GroupedRegistrations::new(Arc::new(PgRegistrations { pool }))
    }
}

#[async_trait]
impl RegisterMany for PgRegistrations {
    async fn register_many(
        &self,
        devices: &[&Pending],
    ) -> Result<Vec<(Device, Registration)>, StoreError> {
        let mut conn = self.pool.get().await?;
        let rows: Vec<RegisteredRow> = upsert(
            devices.iter().map(|(device, now)| (device, *now)),
            &format!("{DEVICE_COLUMNS}, (xmax = 0) AS created"),
        )
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to register devices"))?;
        conn.done();
        rows.into_iter()
            .map(|row| Ok(registered(row.device.into_domain()?, row.created)))
            .collect()
    }
}

/// The statement of [`CoalescedReads`] on PostgreSQL: the devices of the `(application, id)`
/// pairs given as two arrays.
pub(crate) struct PgDeviceReads {
    pub(crate) pool: Held<Postgres>,
}

impl PgDeviceReads {
    pub(crate) fn coalesced(pool: Held<Postgres>) -> CoalescedReads<PgDeviceReads> {
        coalesced(PgDeviceReads { pool })
    }
}

#[async_trait]
impl ReadDevices for PgDeviceReads {
    async fn read_devices(&self, wanted: &[(AppId, DeviceId)]) -> Result<Vec<Device>, StoreError> {
        let apps: Vec<String> = wanted
            .iter()
            .map(|(app, _)| app.as_str().to_owned())
            .collect();
        let ids: Vec<i64> = wanted.iter().map(|(_, id)| id.0).collect();
        // One primary-key look-up per id, whatever the statistics say. As `app = $1 AND id =
        // ANY($2)`, PostgreSQL planned with the statistics from before a bulk load (the
        // application looked empty) and read every device of the application through the
        // (app, active) index: 160 ms for each page of 500 of a broadcast to 100,000
        // devices. `OFFSET 0` keeps the look-up from being merged into the outer query.
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM UNNEST($1::TEXT[], $2::BIGINT[]) \
             AS wanted (wanted_app, wanted_device) \
             CROSS JOIN LATERAL (SELECT {DEVICE_COLUMNS} FROM devices \
             WHERE id = wanted.wanted_device OFFSET 0) AS d WHERE d.app = wanted.wanted_app"
        );
        let mut conn = self.pool.get().await?;
        let rows = sqlx::query_as::<_, DeviceRow>(AssertSqlSafe(sql))
            .bind(apps)
            .bind(ids)
            .fetch_all(&mut *conn)
            .await
            .map_err(db_error("failed to read devices"))?;
        conn.done();
        rows.into_iter().map(DeviceRow::into_domain).collect()
    }
}

#[async_trait]
impl DeviceStore for PgStore {
    async fn register_device(
        &self,
        device: &NewDevice,
        now: OffsetDateTime,
    ) -> Result<(Device, Registration), StoreError> {
        // Registrations made at the same time are written together, as one upsert.
        self.registrations.register(device.clone(), now).await
    }

    async fn register_devices(
        &self,
        devices: &[NewDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        let mut devices = last_registration_of_each_token(devices);
        if devices.is_empty() {
            return Ok(BulkRegistration::default());
        }
        // In key order, as registrations in batches: writers that overlap lock the rows in
        // the same order and cannot deadlock.
        devices.sort_by(|a, b| key_of_new(a).cmp(&key_of_new(b)));
        let mut conn = self.pool.get().await?;
        let mut tx = conn
            .begin()
            .await
            .map_err(db_error("failed to begin a bulk registration"))?;
        let mut created = 0_u64;
        for chunk in devices.chunks(BULK_ROWS_PER_STATEMENT) {
            let mut query = upsert(
                chunk.iter().map(|device| (*device, now)),
                "(xmax = 0) AS inserted",
            );
            let inserted: Vec<(bool,)> = query
                .build_query_as()
                .fetch_all(&mut *tx)
                .await
                .map_err(db_error("failed to register devices in bulk"))?;
            created += inserted.iter().filter(|(new,)| *new).count() as u64;
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
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE app = $1 AND id = $2");
        sqlx::query_as::<_, DeviceRow>(AssertSqlSafe(sql))
            .bind(app.as_str().to_owned())
            .bind(id.0)
            .fetch_optional(&mut *self.pool.get().await?)
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
        let mut query = QueryBuilder::<Postgres>::new(format!(
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
            // starts_with rather than LIKE, whose wildcards a token or endpoint may hold.
            query
                .push(" AND starts_with(token_key, ")
                .push_bind(prefix.clone())
                .push(")");
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
            .fetch_all(&mut *self.pool.get().await?)
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
        let now = ms(now);
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = FALSE, deactivated_at = $1, deactivation_reason = $2, \
             updated_at = $3 WHERE app = $4 AND id = $5",
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
        let now = ms(now);
        let mut query = QueryBuilder::<Postgres>::new("UPDATE devices SET updated_at = ");
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
        let done = sqlx::query("DELETE FROM devices WHERE app = $1 AND id = $2")
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
        let now = ms(now);
        // The latest delivery must also be newer than the device's last update, so that a
        // device registered again after its token was reported dead stays active.
        let mut conn = self.pool.get().await?;
        let done = sqlx::query(
            "UPDATE devices SET active = FALSE, deactivated_at = $1, \
             deactivation_reason = 'dead token', updated_at = $2 \
             WHERE app = $3 AND active = TRUE AND EXISTS ( \
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
        let done = sqlx::query(
            "DELETE FROM devices WHERE app = $1 AND active = FALSE AND deactivated_at < $2",
        )
        .bind(app.as_str().to_owned())
        .bind(ms(before))
        .execute(&mut *conn)
        .await
        .map_err(db_error("failed to delete inactive devices"))?;
        conn.done();
        Ok(done.rows_affected())
    }
}
