//! The PostgreSQL store: the same ports, schema and behaviour as the SQLite store, for many
//! processes on many machines sharing one database. Due messages are claimed with
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers never wait on each other's rows.

mod devices;
mod messages;
pub use messages::ANALYZE_AFTER_DELIVERIES;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use clarion_domain::device::{BulkRegistration, NewDevice};
use clarion_domain::ports::StoreError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{
    AssertSqlSafe, ConnectOptions as _, Connection as _, Database, Postgres, QueryBuilder, Row as _,
};
use time::OffsetDateTime;

use crate::config::redact_url;
use crate::device_reads::CoalescedReads;
use crate::faults::{PROBE_WRITE, db_error, probe_time};
use crate::grouped::{Grouped, WriteMany as _};
use crate::held::Held;
use crate::registrations::GroupedRegistrations;
use crate::sql::{Dialect, Tables, shared_ports};
use devices::{PgDeviceReads, PgRegistrations};
use messages::{PgAttempts, PgMessages};

/// Connections per process when the configuration does not say: up to
/// [`GROUPED_WRITER_CONNECTIONS`] for the grouped writes, the others for everything else.
/// Five processes at this size fit PostgreSQL's default `max_connections` of 100 with room
/// for administration (docs/scaling.md).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 18;
/// The most connections the grouped writes hold at once: each batch of messages or of attempt
/// results holds one while it is written, up to [`WriteMany::WRITERS`] batches of each kind,
/// and registrations are written one batch at a time.
pub const GROUPED_WRITER_CONNECTIONS: u32 = {
    let writers = PgMessages::WRITERS + PgAttempts::WRITERS + 1;
    assert!(writers < 64, "a handful of writers");
    // The assertion above makes the conversion exact.
    #[allow(clippy::cast_possible_truncation, reason = "checked just above")]
    let writers = writers as u32;
    writers
};
/// How long getting a connection from the pool may take before a query fails, so that an
/// unreachable database is reported instead of waited for.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit idle in the pool and still be handed out without a check.
///
/// sqlx checks every connection it hands out with a round trip of its own (a `Sync` message)
/// unless told otherwise, and again when the connection comes back: a statement on the pool
/// paid three round trips where it needs one, and on a busy machine a round trip is a wait for
/// both processes to be scheduled. A connection in steady use was checked when it came back a
/// moment ago; one idle for longer (the server may have restarted meanwhile) is still checked.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(1);

/// How to connect, beyond the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSettings {
    /// The connections of the process in all, split by [`pool_sizes`] between the grouped
    /// writes and everything else.
    pub max_connections: u32,
    /// A schema to create if missing and to put first on every connection's `search_path`
    /// (tests give each store its own); `None` keeps the URL's or the server's default.
    pub schema: Option<String>,
}

impl Default for PgSettings {
    fn default() -> Self {
        Self {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            schema: None,
        }
    }
}

/// The PostgreSQL implementation of the storage ports. Cloning it shares the connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// The pool of everything but the grouped writes: reads, claims, leases, broadcasts,
    /// every use of which goes through the [`Held`], which keeps connections between uses.
    pool: Held<Postgres>,
    /// Registrations made at the same time, written together.
    registrations: GroupedRegistrations,
    /// Messages sent at the same time, written together.
    messages: Grouped<PgMessages>,
    /// Results of attempts at different messages made at the same time, written together.
    attempts: Grouped<PgAttempts>,
    /// Reads of devices by id made at the same time, read together.
    device_reads: CoalescedReads<PgDeviceReads>,
}

/// PostgreSQL's side of the store logic both databases share (`sql.rs`).
impl Dialect for Postgres {
    type Time = OffsetDateTime;
    type DeviceReads = PgDeviceReads;

    fn time(at: OffsetDateTime) -> OffsetDateTime {
        ms(at)
    }

    fn rows_affected(done: &<Postgres as Database>::QueryResult) -> u64 {
        done.rows_affected()
    }

    fn push_starts_with(query: &mut QueryBuilder<Postgres>, column: &str, prefix: &str) {
        query
            .push("starts_with(")
            .push(column)
            .push(", ")
            .push_bind(prefix.to_owned())
            .push(")");
    }

    async fn register_in_bulk(
        writer: &Held<Postgres>,
        devices: Vec<&NewDevice>,
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        devices::register_in_bulk(writer, devices, now).await
    }
}

// The device, template, API key and report ports, on the shared store logic.
shared_ports!(PgStore);

impl PgStore {
    /// The connections and grouped statements the shared store logic runs on: the one pool
    /// for reads and writes alike.
    pub(crate) fn tables(&self) -> Tables<'_, Postgres> {
        Tables {
            readers: &self.pool,
            writer: &self.pool,
            registrations: &self.registrations,
            device_reads: &self.device_reads,
        }
    }

    /// Connects to the database at `url` with a pool of [`DEFAULT_MAX_CONNECTIONS`] and
    /// migrates it.
    ///
    /// # Errors
    /// When the URL is malformed, the server cannot be reached or a migration fails.
    pub async fn connect(url: &str) -> anyhow::Result<PgStore> {
        PgStore::connect_with(url, &PgSettings::default()).await
    }

    /// Connects with the store's data in `schema` (created if missing), for tests that each
    /// want an empty database.
    ///
    /// # Errors
    /// As [`PgStore::connect`], or when the schema cannot be created.
    pub async fn connect_with_schema(url: &str, schema: &str) -> anyhow::Result<PgStore> {
        let settings = PgSettings {
            schema: Some(schema.to_owned()),
            ..PgSettings::default()
        };
        PgStore::connect_with(url, &settings).await
    }

    /// Connects and migrates. Migrations hold sqlx's advisory lock, so processes that start
    /// together migrate one after the other.
    ///
    /// # Errors
    /// As [`PgStore::connect_with_schema`].
    pub async fn connect_with(url: &str, settings: &PgSettings) -> anyhow::Result<PgStore> {
        let shown = redact_url(url);
        let mut options = PgConnectOptions::from_str(url)
            .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
        // One plain connection first: an unreachable server fails at once here, where the
        // pool would retry until its acquire timeout.
        let mut first = connect_once(&options, &shown).await?;
        if let Some(schema) = &settings.schema {
            create_schema(&mut first, schema)
                .await
                .with_context(|| format!("failed to create the schema {schema} at {shown}"))?;
            options = options.options([("search_path", schema.as_str())]);
        }
        first.close().await.ok();
        let (others, writers) = pool_sizes(settings.max_connections);
        let pool = pool_options(others)
            .connect_with(options.clone())
            .await
            .with_context(|| format!("failed to connect to PostgreSQL at {shown}"))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .context("failed to migrate the PostgreSQL database")?;
        // The grouped writes have connections of their own, so that a read never waits for
        // a batch's commit (a disk flush) to free a connection, and the batches never wait
        // behind reads; the pool opens its connections when they are first needed.
        // Both pools keep their connections between uses (`held.rs`); when the pool is too
        // small to split, the grouped writes share the one pool's.
        let pool = Held::new(pool, others as usize);
        let writing = match writers {
            Some(size) => Held::new(pool_options(size).connect_lazy_with(options), size as usize),
            None => pool.clone(),
        };
        Ok(PgStore {
            registrations: PgRegistrations::grouped(writing.clone()),
            messages: PgMessages::grouped(writing.clone()),
            attempts: PgAttempts::grouped(writing),
            device_reads: PgDeviceReads::coalesced(pool.clone()),
            pool,
        })
    }

    /// The connection pool, for tests and maintenance. The connections the store keeps
    /// between its own uses are given back to it first, so that a statement on the pool does
    /// not wait for them and closing it does not wait for ever.
    #[must_use]
    pub fn pool(&self) -> &PgPool {
        self.pool.release_kept();
        self.pool.pool()
    }

    /// The number of rows of every table of Clarion's schema, by table name.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
             AND table_name NOT LIKE '\\_sqlx\\_%' ORDER BY table_name",
        )
        .fetch_all(&mut *self.pool.acquire().await?)
        .await
        .context("failed to list the tables")?;
        let mut counts = BTreeMap::new();
        for name in names {
            // The name comes from the catalogue, not from a caller; quoting it is enough.
            let sql = format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\""));
            let mut conn = self.pool.get().await?;
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut *conn)
                .await
                .with_context(|| format!("failed to count the rows of {name}"))?;
            conn.done();
            let count: i64 = row
                .try_get(0)
                .with_context(|| format!("failed to count the rows of {name}"))?;
            counts.insert(name, count);
        }
        Ok(counts)
    }

    /// Checks that the database can write now, for readiness probes: one row is written
    /// and committed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with the reason when the server cannot be reached or
    /// cannot write (stopped, restarting, a full disk, a read-only standby);
    /// [`StoreError::Unknown`] for another failure.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.get().await?;
        sqlx::query(PROBE_WRITE)
            .bind(probe_time())
            .execute(&mut *conn)
            .await
            .map_err(db_error("failed to write the readiness probe"))?;
        conn.done();
        Ok(())
    }
}

/// Connects once, without a pool or migrations, and runs `SELECT 1`: what `config check`
/// does to a PostgreSQL URL.
///
/// # Errors
/// When the URL is malformed or the server cannot be reached; the text holds no password.
pub async fn probe(url: &str) -> anyhow::Result<()> {
    let shown = redact_url(url);
    let options = PgConnectOptions::from_str(url)
        .with_context(|| format!("invalid PostgreSQL URL {shown}"))?;
    let mut conn = connect_once(&options, &shown).await?;
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .with_context(|| format!("{shown} does not answer queries"))?;
    conn.close().await.ok();
    Ok(())
}

/// Splits `total` connections between everything else and the grouped writes: the writes
/// get up to [`GROUPED_WRITER_CONNECTIONS`] and at most half, everything else the rest.
/// `None` for the writes when `total` is too small to split: one pool serves both.
fn pool_sizes(total: u32) -> (u32, Option<u32>) {
    if total < 2 {
        return (1, None);
    }
    let writers = GROUPED_WRITER_CONNECTIONS.min(total / 2);
    (total - writers, Some(writers))
}

/// A pool of at most `size` connections that checks a connection before handing it out only
/// when it has been idle for [`CHECK_AFTER_IDLE`].
fn pool_options(size: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(size.max(1))
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_AFTER_IDLE {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}

/// One connection, or an error naming the server (`shown`, redacted) within
/// [`ACQUIRE_TIMEOUT`].
async fn connect_once(options: &PgConnectOptions, shown: &str) -> anyhow::Result<PgConnection> {
    tokio::time::timeout(ACQUIRE_TIMEOUT, options.connect())
        .await
        .map_err(|_| {
            anyhow::anyhow!("no answer from PostgreSQL at {shown} within {ACQUIRE_TIMEOUT:?}")
        })?
        .with_context(|| format!("failed to connect to PostgreSQL at {shown}"))
}

/// Creates `schema` unless it exists.
async fn create_schema(conn: &mut PgConnection, schema: &str) -> anyhow::Result<()> {
    let sql = format!(
        "CREATE SCHEMA IF NOT EXISTS \"{}\"",
        schema.replace('"', "\"\"")
    );
    sqlx::query(AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

/// A time as written: truncated to the millisecond (PostgreSQL keeps microseconds), so that
/// both stores give back the same instants.
pub(crate) fn ms(at: OffsetDateTime) -> OffsetDateTime {
    let truncated = at.nanosecond() / 1_000_000 * 1_000_000;
    // The value is below one second's nanoseconds, which replace_nanosecond accepts.
    at.replace_nanosecond(truncated).unwrap_or(at)
}

pub(crate) fn opt_ms(at: Option<OffsetDateTime>) -> Option<OffsetDateTime> {
    at.map(ms)
}

/// The shared rows with PostgreSQL's times, and the column lists that read JSON as text.
mod rows {
    use time::OffsetDateTime;

    pub(super) use crate::rows::{
        DEVICE_COLUMNS, RelatedRow, json_text, opt_json_text, target_columns,
    };

    pub(super) type DeviceRow = crate::rows::DeviceRow<OffsetDateTime>;
    pub(super) type RegisteredRow = crate::rows::RegisteredRow<OffsetDateTime>;
    pub(super) type MessageRow = crate::rows::MessageRow<OffsetDateTime>;
    pub(super) type DeliveryRow = crate::rows::DeliveryRow<OffsetDateTime>;
    pub(super) type DueRow = crate::rows::DueRow<OffsetDateTime>;

    /// [`crate::rows::MESSAGE_COLUMNS`] with the jsonb columns read as text.
    pub(super) const MESSAGE_COLUMNS: &str = "id, app, target_kind, recipient, \
        target_json::text AS target_json, heading, body, url, extra_data::text AS extra_data, \
        template_slug, tag, priority, options::text AS options, retry_sending, sender, state, \
        error, number_of_send_attempts, next_attempt_at, sent_at, queued_at, \
        extra_sender_data::text AS extra_sender_data, created_at, changed_at";

    /// [`crate::rows::DELIVERY_COLUMNS`] with the jsonb column read as text.
    pub(super) const DELIVERY_COLUMNS: &str = "id, message_id, device_id, channel, state, \
        attempts, provider_id, error_code, error_text, details::text AS details, updated_at";
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn the_grouped_writes_get_their_connections_and_at_most_half_of_the_pool() {
        let writers = GROUPED_WRITER_CONNECTIONS;
        for (total, expected) in [
            (0, (1, None)),
            (1, (1, None)),
            (2, (1, Some(1))),
            (4, (2, Some(2))),
            (10, (5, Some(5))),
            (2 * writers, (writers, Some(writers))),
            (
                DEFAULT_MAX_CONNECTIONS,
                (DEFAULT_MAX_CONNECTIONS - writers, Some(writers)),
            ),
            (100, (100 - writers, Some(writers))),
        ] {
            assert_eq!(pool_sizes(total), expected, "{total} connections");
        }
    }

    #[test]
    fn times_are_written_to_the_millisecond_rounding_down() {
        assert_eq!(
            ms(datetime!(2024-05-06 07:08:09.123999 UTC)),
            datetime!(2024-05-06 07:08:09.123 UTC)
        );
        assert_eq!(
            ms(datetime!(1969-12-31 23:59:59.9995 UTC)),
            datetime!(1969-12-31 23:59:59.999 UTC)
        );
    }
}
