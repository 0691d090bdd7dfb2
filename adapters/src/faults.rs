//! Driver errors turned into the domain's store errors, shared by both stores: a unique
//! violation is a conflict, an undecodable value is corrupt data, and a database that cannot
//! be reached or cannot write now (a full disk, a read-only or damaged file, a lock held too
//! long, a server that is down) is unavailable, so that callers answer 503 and try again
//! rather than 500.

use clarion_domain::ports::StoreError;
use sqlx::postgres::PgDatabaseError;
use sqlx::sqlite::SqliteError;

/// The write of the readiness and start-up checks, the same in both dialects: one row,
/// rewritten with the time (unix milliseconds), so that it is a real committed write.
pub(crate) const PROBE_WRITE: &str = "INSERT INTO readiness_probe (id, probed_at) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at";

/// The time the probe writes.
pub(crate) fn probe_time() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Turns a driver error into a store error, with `doing` as the context of an unknown one.
pub(crate) fn db_error(doing: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |error| {
        if let Some(db) = error.as_database_error()
            && db.is_unique_violation()
        {
            return StoreError::Conflict(db.message().to_owned());
        }
        if let sqlx::Error::ColumnDecode { index, source } = &error {
            return StoreError::Corrupt(format!("{doing}: column {index}: {source}"));
        }
        if let Some(reason) = unavailability(&error) {
            return StoreError::Unavailable(format!("{reason} ({doing})"));
        }
        StoreError::Unknown(anyhow::Error::new(error).context(doing))
    }
}

/// Why the database cannot be used now, when `error` says it cannot: a short sentence with
/// the driver's own words, which name no password (SQLite's messages name no file either).
/// `None` for an error of the statement itself.
pub(crate) fn unavailability(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(db) => {
            let message = db.message();
            if db.try_downcast_ref::<SqliteError>().is_some() {
                let code: i64 = db.code().and_then(|code| code.parse().ok())?;
                return sqlite_reason(code).map(|reason| format!("{reason}: {message}"));
            }
            if db.try_downcast_ref::<PgDatabaseError>().is_some() {
                let code = db.code()?;
                return postgres_reason(&code).map(|reason| format!("{reason}: {message}"));
            }
            None
        }
        sqlx::Error::Io(e) => Some(format!("the database cannot be reached: {e}")),
        sqlx::Error::Tls(e) => Some(format!("the database cannot be reached: {e}")),
        sqlx::Error::PoolTimedOut => {
            Some("no database connection could be had in time (the server may be down)".into())
        }
        sqlx::Error::PoolClosed => Some("the database connections are closed".into()),
        sqlx::Error::WorkerCrashed => Some("the database connection stopped".into()),
        sqlx::Error::Protocol(e) => Some(format!("the database connection broke: {e}")),
        _ => None,
    }
}

/// The reason for an SQLite result code (extended codes keep the primary code in their low
/// byte) that says the database, not the statement, is at fault.
fn sqlite_reason(code: i64) -> Option<&'static str> {
    Some(match code & 0xff {
        // SQLITE_BUSY, SQLITE_LOCKED: another process held the lock past the busy timeout.
        5 | 6 => "the database is locked by another process",
        // SQLITE_NOMEM
        7 => "SQLite ran out of memory",
        // SQLITE_READONLY
        8 => "the database is read-only",
        // SQLITE_IOERR
        10 => "the database file cannot be read or written",
        // SQLITE_CORRUPT, SQLITE_NOTADB
        11 | 26 => "the database file is damaged or is not an SQLite database",
        // SQLITE_FULL
        13 => "the disk holding the database is full",
        // SQLITE_CANTOPEN
        14 => "the database file cannot be opened",
        // SQLITE_PROTOCOL
        15 => "the database's lock protocol failed",
        _ => return None,
    })
}

/// The reason for a PostgreSQL SQLSTATE that says the server, not the statement, is at fault.
fn postgres_reason(code: &str) -> Option<&'static str> {
    Some(match code {
        "53100" => "the disk holding the database is full",
        "25006" => "the database is read-only (a standby, or a read-only transaction)",
        "57P01" | "57P02" | "57P03" => "the database server is shutting down or starting",
        "55P03" => "the database is locked",
        code if code.starts_with("08") => "the connection to the database failed",
        code if code.starts_with("53") => "the database server is out of resources",
        code if code.starts_with("58") => "the database server has a system error",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_of_the_database_are_unavailable_and_those_of_a_statement_are_not() {
        // Extended codes: SQLITE_IOERR_WRITE (778), SQLITE_READONLY_DBMOVED (1032),
        // SQLITE_BUSY_TIMEOUT (773); SQLITE_CONSTRAINT_UNIQUE (2067) is the statement's.
        for (code, expected) in [
            (13, Some("the disk holding the database is full")),
            (778, Some("the database file cannot be read or written")),
            (1032, Some("the database is read-only")),
            (773, Some("the database is locked by another process")),
            (
                26,
                Some("the database file is damaged or is not an SQLite database"),
            ),
            (2067, None),
            (1, None),
        ] {
            assert_eq!(sqlite_reason(code), expected, "{code}");
        }
    }

    #[test]
    fn postgres_codes_of_the_server_are_unavailable_and_those_of_a_statement_are_not() {
        for (code, unavailable) in [
            ("53100", true),
            ("57P01", true),
            ("08006", true),
            ("08001", true),
            ("53300", true),
            ("25006", true),
            ("23505", false),
            ("22021", false),
            ("42P01", false),
        ] {
            assert_eq!(postgres_reason(code).is_some(), unavailable, "{code}");
        }
    }

    #[test]
    fn a_pool_timeout_is_unavailable() {
        assert!(unavailability(&sqlx::Error::PoolTimedOut).is_some());
        assert!(unavailability(&sqlx::Error::RowNotFound).is_none());
    }
}
