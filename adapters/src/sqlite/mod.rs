//! The SQLite store: devices, messages with their deliveries and related objects, and
//! templates, in one file (WAL mode) that is created and migrated on connect.

mod devices;
mod messages;

pub(crate) use messages::tally_from;
mod values;

/// The shared rows with SQLite's times: unix milliseconds.
mod rows {
    pub(super) use crate::rows::{
        DELIVERY_COLUMNS, DEVICE_COLUMNS, MESSAGE_COLUMNS, RelatedRow, json_text, millis,
        opt_json_text, opt_millis, target_columns,
    };

    pub(super) type DeviceRow = crate::rows::DeviceRow<i64>;
    pub(super) type RegisteredRow = crate::rows::RegisteredRow<i64>;
    pub(super) type MessageRow = crate::rows::MessageRow<i64>;
    pub(super) type DeliveryRow = crate::rows::DeliveryRow<i64>;
    pub(super) type DueRow = crate::rows::DueRow<i64>;
}

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clarion_domain::device::{BulkRegistration, NewDevice};
use clarion_domain::ports::StoreError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{
    AssertSqlSafe, Connection as _, Database, QueryBuilder, Row as _, Sqlite, SqliteConnection,
};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::device_reads::CoalescedReads;
use crate::faults::{PROBE_WRITE, db_error, probe_time, unavailability};
use crate::grouped::Grouped;
use crate::held::Held;
use crate::registrations::GroupedRegistrations;
use crate::rows::millis;
use crate::sql::{Dialect, Tables, shared_ports};
use devices::{SqliteDeviceReads, SqliteRegistrations};
use messages::{SqliteAttempts, SqliteMessages};
use tokio::time::MissedTickBehavior;

/// How long a statement waits for another connection's write lock before it fails. Writes
/// of this process queue for the writer connection instead; this wait is for other processes
/// (the CLI) writing to the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read-only connections of a file database.
const READER_POOL_SIZE: u32 = 8;
/// How often the checkpointer copies the write-ahead log of a file database back into the
/// database. At a few thousand writes a second this keeps the log at about a thousand pages,
/// SQLite's default point for a checkpoint.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// The log size, in pages, past which the writer checkpoints by itself, should the
/// checkpointer fall behind (SQLite's default is 1,000).
const WRITER_AUTOCHECKPOINT_PAGES: &str = "10000";
/// The room the readiness check asks of the disk holding a file database: enough for a
/// large write (a bulk registration of a thousand devices takes a few hundred kilobytes).
const SPACE_PROBE_BYTES: usize = 1 << 20;

/// The SQLite implementation of the storage ports. Cloning it shares the connection pools.
///
/// SQLite lets one connection write at a time. When two connections of a pool write at once,
/// the loser gets `SQLITE_BUSY` and sleeps in SQLite's busy handler (1, 2, 5, 10, ... ms)
/// before it tries again, which under many concurrent requests turns into tail latency of
/// tens of milliseconds. So every write of this process goes through `pool`, which has one
/// connection, and waits for it in the pool's first-come, first-served queue; reads go
/// through `readers`, read-only connections that in WAL mode never block the writer nor
/// wait for it. An in-memory database has one connection, which both fields share.
///
/// A checkpoint (copying the write-ahead log back into the database, with two `fsync`s) run
/// by the writer stalls every write queued behind it for milliseconds. So a file database has
/// a checkpointer: a task with a connection of its own that checkpoints in the background
/// (`PASSIVE`, which never blocks the writer), while the writer checkpoints only if the log
/// grows large.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The writer: one connection, for every statement or transaction that writes (and for
    /// a transaction that reads what it then writes).
    pool: Held<Sqlite>,
    /// Read-only connections, for statements that only read.
    readers: Held<Sqlite>,
    /// Stops the checkpointer when told to, or when the last clone of the store is dropped.
    checkpointer: Option<Arc<Checkpointer>>,
    /// Registrations made at the same time, written together by the writer.
    registrations: GroupedRegistrations,
    /// Messages sent at the same time, written together by the writer.
    messages: Grouped<SqliteMessages>,
    /// Results of attempts at different messages made at the same time, written together.
    attempts: Grouped<SqliteAttempts>,
    /// Reads of devices by id made at the same time, read together by a reader.
    device_reads: CoalescedReads<SqliteDeviceReads>,
    /// The database file; `None` in memory.
    file: Option<PathBuf>,
}

/// SQLite's side of the store logic both databases share (`sql.rs`).
impl Dialect for Sqlite {
    type Time = i64;
    type DeviceReads = SqliteDeviceReads;

    fn time(at: OffsetDateTime) -> i64 {
        millis(at)
    }

    fn rows_affected(done: &<Sqlite as Database>::QueryResult) -> u64 {
        done.rows_affected()
    }

    fn push_starts_with(query: &mut QueryBuilder<Sqlite>, column: &str, prefix: &str) {
        // SQLite has no `starts_with`; `substr` compares characters as it does.
        query
            .push("substr(")
            .push(column)
            .push(", 1, length(")
            .push_bind(prefix.to_owned())
            .push(")) = ")
            .push_bind(prefix.to_owned());
    }

    async fn register_in_bulk(
        writer: &Held<Sqlite>,
        devices: Vec<&NewDevice>,
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        devices::register_in_bulk(writer, devices, now).await
    }
}

// The device, template, API key and report ports, on the shared store logic.
shared_ports!(SqliteStore);

impl SqliteStore {
    /// The connections and grouped statements the shared store logic runs on: reads on the
    /// read-only connections, writes on the writer.
    pub(crate) fn tables(&self) -> Tables<'_, Sqlite> {
        Tables {
            readers: &self.readers,
            writer: &self.pool,
            registrations: &self.registrations,
            device_reads: &self.device_reads,
        }
    }

    /// Opens (creating it if missing) and migrates the database named by `url_or_path`:
    /// `sqlite://path`, `sqlite:path`, a plain path, or `sqlite::memory:`.
    ///
    /// # Errors
    /// When the URL is malformed, the file cannot be opened, a migration fails, or the file
    /// is damaged or read-only (the error names the file and the problem).
    pub async fn connect(url_or_path: &str) -> anyhow::Result<SqliteStore> {
        let (options, in_memory) = connect_options(url_or_path)?;
        let location = url_or_path.trim();
        let file = (!in_memory).then(|| options.get_filename().to_owned());
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .synchronous(SqliteSynchronous::Normal);
        // An in-memory database lives as long as its connections: one connection that is
        // never closed keeps every query on the same database. A file database gets one
        // writer connection too, kept open like it.
        let writer_options = if in_memory {
            options.clone()
        } else {
            options
                .clone()
                .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES)
        };
        let mut writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
        // Not in memory: closing that connection would lose the database.
        if !in_memory {
            writer = writer
                .after_release(|connection, _| Box::pin(replace_if_in_transaction(connection)));
        }
        let pool = writer
            .connect_with(writer_options.create_if_missing(true))
            .await
            .map_err(|error| refused(location, file.as_deref(), error))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|error| match error {
                sqlx::migrate::MigrateError::Execute(error) => {
                    refused(location, file.as_deref(), error)
                }
                other => anyhow::Error::new(other)
                    .context(format!("failed to migrate the SQLite database {location}")),
            })?;
        let pool = Held::new(pool, 1);
        if in_memory {
            return Ok(SqliteStore {
                readers: pool.clone(),
                device_reads: SqliteDeviceReads::coalesced(pool.clone()),
                registrations: SqliteRegistrations::grouped(pool.clone()),
                messages: SqliteMessages::grouped(pool.clone()),
                attempts: SqliteAttempts::grouped(pool.clone()),
                pool,
                checkpointer: None,
                file: None,
            });
        }
        // Opened after the writer has created the file and put it in WAL mode. Read-only, so
        // that a write sent to them by mistake fails rather than competing with the writer.
        let readers = SqlitePoolOptions::new()
            .max_connections(READER_POOL_SIZE)
            .connect_with(options.clone().read_only(true))
            .await
            .map_err(|error| refused(location, file.as_deref(), error))?;
        let readers = Held::new(readers, READER_POOL_SIZE as usize);
        // A read-only or damaged file is refused here rather than reported by every request:
        // the schema and the first page of every table are read, and one row is written.
        // Reading every page (`PRAGMA integrity_check`) would make a large database slow to
        // start.
        let checked = async {
            read_every_table(&readers).await?;
            probe_write(&pool).await
        };
        if let Err(error) = checked.await {
            pool.close().await;
            readers.close().await;
            let reason = match error {
                StoreError::Unavailable(reason) => reason,
                other => format!("{:#}", anyhow::Error::new(other)),
            };
            return Err(unusable(location, file.as_deref(), &reason));
        }
        let connection = SqliteConnection::connect_with(&options)
            .await
            .map_err(|error| refused(location, file.as_deref(), error))?;
        let (stop, stopped) = watch::channel(false);
        let (closing, closed) = watch::channel(false);
        tokio::spawn(checkpoint(connection, stopped, closing));
        Ok(SqliteStore {
            registrations: SqliteRegistrations::grouped(pool.clone()),
            messages: SqliteMessages::grouped(pool.clone()),
            attempts: SqliteAttempts::grouped(pool.clone()),
            device_reads: SqliteDeviceReads::coalesced(readers.clone()),
            pool,
            readers,
            checkpointer: Some(Arc::new(Checkpointer { stop, closed })),
            file,
        })
    }

    /// Checks that the database can be used now, for readiness probes: its schema and the
    /// first page of every table can be read, a row can be written and committed, and (for a
    /// file) the disk that holds it has room for [`SPACE_PROBE_BYTES`] more. The disk is
    /// tried with a file of its own because SQLite reuses the room of its write-ahead log,
    /// so that a small write can succeed on a full disk while a larger one fails.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with the reason when the database cannot be used now;
    /// [`StoreError::Unknown`] for another failure.
    pub async fn check_ready(&self) -> Result<(), StoreError> {
        read_every_table(&self.readers).await?;
        probe_write(&self.pool).await?;
        if let Some(file) = &self.file {
            probe_space(file).await?;
        }
        Ok(())
    }

    /// The writer's pool (one connection), for tests and maintenance. The connection the
    /// store keeps between its own writes is given back to the pool first, so that a
    /// statement on the pool does not wait for it.
    #[must_use]
    pub fn pool(&self) -> &SqlitePool {
        self.pool.release_kept();
        self.pool.pool()
    }

    /// Stops the checkpointer and closes the writer's and the readers' connections; later
    /// calls fail. Returns once every connection of the store is closed, so that the last
    /// one has copied the write-ahead log into the database and deleted it.
    pub async fn close(&self) {
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop.send_replace(true);
        }
        self.readers.close().await;
        self.pool.close().await;
        if let Some(checkpointer) = &self.checkpointer {
            // An error means that the task is gone, and its connection with it.
            let _ = checkpointer.closed.clone().wait_for(|closed| *closed).await;
        }
    }

    /// The number of rows of every table of Clarion's schema, by table name.
    ///
    /// # Errors
    /// On a database failure.
    pub async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_sqlx_%' ORDER BY name",
        )
        .fetch_all(&mut *self.readers.acquire().await?)
        .await
        .context("failed to list the tables")?;
        let mut counts = BTreeMap::new();
        for name in names {
            // The name comes from sqlite_master, not from a caller; quoting it is enough.
            let sql = format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\""));
            let row = sqlx::query(AssertSqlSafe(sql))
                .fetch_one(&mut *self.readers.acquire().await?)
                .await
                .with_context(|| format!("failed to count the rows of {name}"))?;
            let count: i64 = row
                .try_get(0)
                .with_context(|| format!("failed to count the rows of {name}"))?;
            counts.insert(name, count);
        }
        Ok(counts)
    }
}

/// Checkpoints the log every [`CHECKPOINT_INTERVAL`] until the store is closed or dropped. A
/// checkpoint that fails (the database is busy, say) is tried again at the next tick.
/// The background checkpointer of a file database, seen from the store.
#[derive(Debug)]
struct Checkpointer {
    /// Tells it to stop.
    stop: watch::Sender<bool>,
    /// Turns true once it has closed its connection.
    closed: watch::Receiver<bool>,
}

async fn checkpoint(
    mut connection: SqliteConnection,
    mut stopped: watch::Receiver<bool>,
    closing: watch::Sender<bool>,
) {
    let mut ticks = tokio::time::interval(CHECKPOINT_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            // An error means that every sender, so every clone of the store, is gone.
            changed = stopped.changed() => {
                if changed.is_err() || *stopped.borrow() {
                    break;
                }
            }
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut connection)
            .await
        {
            tracing::debug!(error = %error, "a background checkpoint failed");
        }
    }
    let _ = connection.close().await;
    closing.send_replace(true);
}

/// The error of a database that cannot be opened, naming the file and, when the driver says
/// so, what is wrong with it (damaged, read-only, no room, locked).
fn refused(location: &str, file: Option<&Path>, error: sqlx::Error) -> anyhow::Error {
    match unavailability(&error) {
        Some(reason) => unusable(location, file, &reason),
        None => anyhow::Error::new(error)
            .context(format!("failed to open the SQLite database {location}")),
    }
}

/// The error of a database that cannot be used for `reason`, with why its file cannot be
/// written when that is so: SQLite says only "unable to open database file" of a file on a
/// read-only file system.
fn unusable(location: &str, file: Option<&Path>, reason: &str) -> anyhow::Error {
    let why = file
        .and_then(why_unwritable)
        .map(|why| format!("{why}; "))
        .unwrap_or_default();
    anyhow::anyhow!("the SQLite database {location} cannot be used: {why}{reason}")
}

/// Why the database file, or a file next to it (SQLite keeps its log and its lock there),
/// cannot be written, if it cannot.
fn why_unwritable(file: &Path) -> Option<String> {
    let opened = if file.exists() {
        std::fs::OpenOptions::new().write(true).open(file).map(drop)
    } else {
        Ok(())
    };
    let probe = sibling(file, "-open-probe");
    let attempt = opened.and_then(|()| {
        let created = std::fs::File::create(&probe).map(drop);
        let _ = std::fs::remove_file(&probe);
        created
    });
    attempt.err().map(|error| match error.kind() {
        std::io::ErrorKind::ReadOnlyFilesystem => {
            format!("the file system holding it is read-only ({error})")
        }
        _ => format!("it cannot be written ({error})"),
    })
}

/// The path of `file` with `suffix` added to its name.
fn sibling(file: &Path, suffix: &str) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Closes the writer connection instead of returning it to the pool when it is still inside
/// a transaction, so that the pool opens a fresh one for the next write.
///
/// A transaction whose COMMIT (or a statement) failed on a full or failing disk may have been
/// rolled back by SQLite itself; the rollback sqlx then sends fails ("no transaction is
/// active"), and sqlx would keep counting the connection as inside a transaction, so that
/// every later `BEGIN` failed until a restart. The ping first waits for the rollback that a
/// dropped transaction queued on the connection.
async fn replace_if_in_transaction(connection: &mut SqliteConnection) -> Result<bool, sqlx::Error> {
    connection.ping().await?;
    if connection.is_in_transaction() {
        tracing::warn!(
            "the SQLite writer connection was left inside a failed transaction; replacing it"
        );
        return Ok(false);
    }
    Ok(true)
}

/// Reads the schema and the first row of every table: a file that is not a database, or
/// whose first pages are damaged, fails here. Cheap whatever the size of the database.
async fn read_every_table(readers: &Held<Sqlite>) -> Result<(), StoreError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(&mut *readers.get().await?)
    .await
    .map_err(db_error("failed to read the schema"))?;
    for name in names {
        // The name comes from sqlite_master, not from a caller; quoting it is enough.
        let sql = format!("SELECT * FROM \"{}\" LIMIT 1", name.replace('"', "\"\""));
        sqlx::query(AssertSqlSafe(sql))
            .fetch_optional(&mut *readers.get().await?)
            .await
            .map_err(db_error("failed to read a table"))?;
    }
    Ok(())
}

/// Writes and commits the probe row through the writer.
async fn probe_write(pool: &Held<Sqlite>) -> Result<(), StoreError> {
    sqlx::query(PROBE_WRITE)
        .bind(probe_time())
        .execute(&mut *pool.get().await?)
        .await
        .map_err(db_error("failed to write the readiness probe"))?;
    Ok(())
}

/// Writes [`SPACE_PROBE_BYTES`] to a file next to the database, then removes it.
async fn probe_space(database: &Path) -> Result<(), StoreError> {
    let probe = sibling(database, "-space-probe");
    let written = tokio::task::spawn_blocking(move || {
        let written = std::fs::File::create(&probe)
            .and_then(|mut file| file.write_all(&vec![0_u8; SPACE_PROBE_BYTES]));
        // Removed whether or not the write succeeded; a probe that was never created is fine.
        let _ = std::fs::remove_file(&probe);
        written
    })
    .await
    .map_err(|e| StoreError::Unknown(anyhow::Error::new(e).context("the space probe stopped")))?;
    written.map_err(|error| {
        let reason = match error.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                "the disk holding the database is full"
            }
            std::io::ErrorKind::ReadOnlyFilesystem => "the database's file system is read-only",
            _ => "the database's folder cannot be written",
        };
        StoreError::Unavailable(format!("{reason}: {error}"))
    })
}

/// Parses the accepted spellings of a database location; the flag says whether it is in
/// memory.
fn connect_options(url_or_path: &str) -> anyhow::Result<(SqliteConnectOptions, bool)> {
    let trimmed = url_or_path.trim();
    if trimmed.starts_with("sqlite:") {
        let options = SqliteConnectOptions::from_str(trimmed)
            .with_context(|| format!("invalid SQLite URL {trimmed:?}"))?;
        let in_memory = trimmed == "sqlite::memory:"
            || trimmed.starts_with("sqlite::memory:?")
            || trimmed.contains("mode=memory");
        return Ok((options, in_memory));
    }
    if trimmed == ":memory:" {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .context("invalid SQLite URL sqlite::memory:")?;
        return Ok((options, true));
    }
    Ok((SqliteConnectOptions::new().filename(trimmed), false))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The plan SQLite makes for `sql` with `params` bound, one line per step, as
    /// `EXPLAIN QUERY PLAN` gives it.
    pub(crate) async fn plan_of(store: &SqliteStore, sql: &str, params: &[&str]) -> String {
        let mut query = sqlx::query_as(AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")));
        for param in params {
            query = query.bind(*param);
        }
        let steps: Vec<(i64, i64, i64, String)> =
            query.fetch_all(store.pool()).await.expect("plan");
        steps
            .into_iter()
            .map(|(_, _, _, detail)| detail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn every_spelling_of_a_location_is_accepted() {
        for (raw, memory) in [
            ("sqlite://data/clarion.db", false),
            ("sqlite:clarion.db", false),
            ("clarion.db", false),
            ("/var/lib/clarion/clarion.db", false),
            ("sqlite::memory:", true),
        ] {
            let parsed = connect_options(raw).map(|(_, m)| m);
            assert_eq!(parsed.ok(), Some(memory), "{raw}");
        }
    }

    #[tokio::test]
    async fn an_in_memory_database_is_one_database_for_every_query() {
        let store = SqliteStore::connect("sqlite::memory:")
            .await
            .expect("in-memory database");
        sqlx::query("CREATE TABLE probe (x INTEGER)")
            .execute(store.pool())
            .await
            .expect("create");
        let counts = store.table_counts().await.expect("counts");
        assert_eq!(counts.get("probe"), Some(&0));
        assert_eq!(counts.get("devices"), Some(&0));
    }
}
