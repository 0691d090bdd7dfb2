//! What PostgreSQL does its own way for devices: the upsert of registrations made at the
//! same time and of a bulk registration, and reads of devices by id made at the same time.
//! The rest of [`DeviceStore`](clarion_domain::ports::DeviceStore) is shared
//! (`sql/devices.rs`).

use std::sync::Arc;

use async_trait::async_trait;
use clarion_domain::device::{BulkRegistration, Device, NewDevice, Registration};
use clarion_domain::ids::{AppId, DeviceId};
use clarion_domain::ports::StoreError;
use sqlx::{AssertSqlSafe, Connection as _, Postgres};
use time::OffsetDateTime;

use crate::device_reads::{CoalescedReads, ReadDevices, coalesced};
use crate::held::Held;
use crate::postgres::db_error;
use crate::postgres::rows::{DEVICE_COLUMNS, DeviceRow, RegisteredRow};
use crate::registrations::{GroupedRegistrations, Pending, RegisterMany, key_of_new};
use crate::sql::upsert_devices;

/// The most devices one `INSERT` of a bulk registration writes: 10 parameters each, well
/// under PostgreSQL's limit of 65,535 parameters per statement.
const BULK_ROWS_PER_STATEMENT: usize = 1000;

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
        // A row the statement inserted has no deleting or locking transaction yet
        // (`xmax = 0`); a row it updated has this one's.
        let rows: Vec<RegisteredRow> = upsert_devices(
            devices.iter().map(|(device, now)| (device, *now)),
            &format!("{DEVICE_COLUMNS}, (xmax = 0) AS created"),
        )
        .build_query_as()
        .fetch_all(&mut *conn)
        .await
        .map_err(db_error("failed to register devices"))?;
        conn.done();
        rows.into_iter().map(RegisteredRow::into_domain).collect()
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

/// A bulk registration on PostgreSQL: one transaction of upserts of
/// [`BULK_ROWS_PER_STATEMENT`] devices each, in key order, counting the rows they inserted.
pub(super) async fn register_in_bulk(
    writer: &Held<Postgres>,
    mut devices: Vec<&NewDevice>,
    now: OffsetDateTime,
) -> Result<BulkRegistration, StoreError> {
    // In key order, as registrations in batches: writers that overlap lock the rows in
    // the same order and cannot deadlock.
    devices.sort_by(|a, b| key_of_new(a).cmp(&key_of_new(b)));
    let mut conn = writer.get().await?;
    let mut tx = conn
        .begin()
        .await
        .map_err(db_error("failed to begin a bulk registration"))?;
    let mut created = 0_u64;
    for chunk in devices.chunks(BULK_ROWS_PER_STATEMENT) {
        let mut query = upsert_devices(
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
