//! Multi-row statements whose rows are bound parameters: inserts (`INSERT … SELECT … FROM
//! (VALUES (?, …), …) … RETURNING id`) and updates (`WITH rows (…) AS (VALUES (?, …), …)
//! UPDATE … FROM rows … RETURNING id`).
//!
//! The grouped writes insert and update many rows in one statement, since each statement is
//! a round trip to the connection's thread. Their rows used to travel as one JSON array bound to a
//! single parameter, taken apart by `json_each` and `->>`: SQLite then printed each row's
//! array back to text for every one of its columns and parsed it again, and on the other side
//! each row was built as a `serde_json::Value` and printed. Binding each value costs less
//! than either (docs/performance.md, "Issue 13, fourth round").
//!
//! The first value of each inserted row is its index in the batch: the rows are inserted in that
//! order, so that the ids `AUTOINCREMENT` gives them, sorted, follow the rows. A batch of n
//! rows runs the statement made for the next power of two, its rows beyond n all NULL and
//! left out by the `WHERE`: a few statements serve every batch size, each prepared once per
//! connection. A batch larger than the largest statement runs several, in order. An update's
//! rows beyond the batch are all NULL too, and its join on the row's id (`= NULL`) matches
//! none of them.

use std::sync::OnceLock;

use clarion_domain::ports::StoreError;
use sqlx::query::QueryScalar;
use sqlx::sqlite::SqliteArguments;
use sqlx::{Sqlite, SqliteConnection};

use crate::sqlite::db_error;

/// The most parameters SQLite takes in one statement (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// in the bundled SQLite).
const MAX_PARAMETERS: usize = 32_766;

/// The most rows of one statement, whatever its width: larger statements are long texts to
/// prepare for little gain.
const MAX_ROWS: usize = 1024;

/// How many statement sizes a [`ValuesInsert`] may make: 1, 2, 4, … [`MAX_ROWS`] rows.
const SIZES: usize = MAX_ROWS.trailing_zeros() as usize + 1;

/// A statement that binds a value to its next parameter.
pub(super) type Bound<'q> = QueryScalar<'q, Sqlite, i64, SqliteArguments>;

/// An `INSERT` of rows given as parameters (see the module's documentation).
pub(super) struct ValuesInsert {
    /// `INSERT INTO table (columns)`.
    head: &'static str,
    /// The select list, naming the values as SQLite names the columns of `VALUES`: the
    /// row's index is `column1`, its first value `column2`, and so on.
    select: &'static str,
    /// The values of a row, its index not counted.
    width: usize,
    /// The statements made so far, by the base-2 logarithm of their rows.
    statements: [OnceLock<String>; SIZES],
}

/// The most rows of one statement whose rows have `parameters` parameters each.
fn max_rows(parameters: usize) -> usize {
    let fits = MAX_PARAMETERS / parameters.max(1);
    let mut rows = MAX_ROWS;
    while rows > fits {
        rows /= 2;
    }
    rows.max(1)
}

/// `size` rows of `parameters` parameters each, for a `VALUES`: `(?, ?), (?, ?)`.
fn values(size: usize, parameters: usize) -> String {
    let row = format!("(?{})", ", ?".repeat(parameters.saturating_sub(1)));
    let mut rows = Vec::with_capacity(size);
    rows.resize(size, row.as_str());
    rows.join(", ")
}

/// The statement of `statements` for `rows` rows (at most `max_rows`), made by `make` from
/// the number of rows the first time, and that number: the next power of two.
fn statement(
    statements: &'static [OnceLock<String>; SIZES],
    rows: usize,
    max_rows: usize,
    make: impl FnOnce(usize) -> String,
) -> (&'static str, usize) {
    let size = rows.clamp(1, max_rows).next_power_of_two();
    let slot = size.trailing_zeros() as usize;
    (statements[slot].get_or_init(|| make(size)), size)
}

/// Runs `query` after binding NULL to its `missing` last parameters (the rows of the
/// statement beyond the batch), and returns the ids it gives.
async fn fetch_padded(
    conn: &mut SqliteConnection,
    mut query: Bound<'_>,
    missing: usize,
) -> Result<Vec<i64>, sqlx::Error> {
    for _ in 0..missing {
        query = query.bind(None::<i64>);
    }
    query.fetch_all(&mut *conn).await
}

impl ValuesInsert {
    pub(super) const fn new(head: &'static str, select: &'static str, width: usize) -> Self {
        ValuesInsert {
            head,
            select,
            width,
            statements: [const { OnceLock::new() }; SIZES],
        }
    }

    /// The most rows of one statement.
    fn max_rows(&self) -> usize {
        max_rows(self.width + 1)
    }

    /// The statement for a batch of `rows` rows (at most [`ValuesInsert::max_rows`]), and how
    /// many rows it takes.
    fn statement(&'static self, rows: usize) -> (&'static str, usize) {
        statement(&self.statements, rows, self.max_rows(), |size| {
            format!(
                "{} SELECT {} FROM (VALUES {}) WHERE column1 IS NOT NULL ORDER BY column1 \
                 RETURNING id",
                self.head,
                self.select,
                values(size, self.width + 1)
            )
        })
    }

    /// Inserts `rows`, `bind` giving each row's values (after its index, which is bound
    /// here), and returns the new ids in the rows' order. `what` names the rows and the
    /// action in errors; a count of new rows that differs from the rows' is one.
    pub(super) async fn insert<'r, R>(
        &'static self,
        conn: &mut SqliteConnection,
        rows: &'r [R],
        bind: impl Fn(Bound<'r>, &'r R) -> Bound<'r>,
        (what, doing): (&str, &'static str),
    ) -> Result<Vec<i64>, StoreError> {
        let mut ids = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.max_rows()) {
            let (sql, size) = self.statement(chunk.len());
            let mut query = sqlx::query_scalar(sql);
            for (index, row) in chunk.iter().enumerate() {
                query = bind(query.bind(i64::try_from(index).unwrap_or(i64::MAX)), row);
            }
            let mut inserted = fetch_padded(conn, query, (size - chunk.len()) * (self.width + 1))
                .await
                .map_err(db_error(doing))?;
            if inserted.len() != chunk.len() {
                return Err(StoreError::Unknown(anyhow::anyhow!(
                    "{} {what} were inserted for {} given",
                    inserted.len(),
                    chunk.len()
                )));
            }
            inserted.sort_unstable();
            ids.append(&mut inserted);
        }
        Ok(ids)
    }
}

/// An `UPDATE` of rows given as parameters (see the module's documentation):
/// `{head} (VALUES (?, …), …) {tail}`, where `head` names the rows' columns in a `WITH` and
/// `tail` is the update, which joins the rows on their first column (an id) and returns
/// the ids of the rows it changed.
pub(super) struct ValuesUpdate {
    /// `WITH rows (column, …) AS`.
    head: &'static str,
    /// `UPDATE table SET … FROM rows WHERE table.id = rows.id … RETURNING id`.
    tail: &'static str,
    /// The values of a row.
    width: usize,
    /// The statements made so far, by the base-2 logarithm of their rows.
    statements: [OnceLock<String>; SIZES],
}

impl ValuesUpdate {
    pub(super) const fn new(head: &'static str, tail: &'static str, width: usize) -> Self {
        ValuesUpdate {
            head,
            tail,
            width,
            statements: [const { OnceLock::new() }; SIZES],
        }
    }

    /// The statement for a batch of `rows` rows, and how many rows it takes.
    pub(super) fn statement(&'static self, rows: usize) -> (&'static str, usize) {
        statement(&self.statements, rows, max_rows(self.width), |size| {
            format!(
                "{} (VALUES {}) {}",
                self.head,
                values(size, self.width),
                self.tail
            )
        })
    }

    /// Updates from `rows`, `bind` giving each row's values, and returns the ids of the rows
    /// the update changed. `doing` names the action in errors.
    pub(super) async fn update<'r, R>(
        &'static self,
        conn: &mut SqliteConnection,
        rows: &'r [R],
        bind: impl Fn(Bound<'r>, &'r R) -> Bound<'r>,
        doing: &'static str,
    ) -> Result<Vec<i64>, StoreError> {
        let mut changed = Vec::new();
        for chunk in rows.chunks(max_rows(self.width)) {
            let (sql, size) = self.statement(chunk.len());
            let mut query = sqlx::query_scalar(sql);
            for row in chunk {
                query = bind(query, row);
            }
            let mut ids = fetch_padded(conn, query, (size - chunk.len()) * self.width)
                .await
                .map_err(db_error(doing))?;
            changed.append(&mut ids);
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static THREE: ValuesInsert = ValuesInsert::new("INSERT INTO t (a, b, c)", "column2", 3);

    #[test]
    fn a_batch_runs_the_statement_of_the_next_power_of_two() {
        let (sql, size) = THREE.statement(3);
        assert_eq!(size, 4);
        assert_eq!(sql.matches("(?, ?, ?, ?)").count(), 4);
        assert!(sql.ends_with("WHERE column1 IS NOT NULL ORDER BY column1 RETURNING id"));
        assert_eq!(THREE.statement(1).1, 1);
        assert_eq!(THREE.statement(0).1, 1);
    }

    #[test]
    fn no_statement_has_more_parameters_than_sqlite_takes() {
        static WIDE: ValuesInsert = ValuesInsert::new("INSERT INTO t (a)", "column2", 40);
        let rows = WIDE.max_rows();
        assert!(rows * 41 <= MAX_PARAMETERS, "{rows} rows");
        assert!(
            rows * 2 * 41 > MAX_PARAMETERS,
            "{rows} rows could be twice as many"
        );
        assert_eq!(THREE.max_rows(), MAX_ROWS);
        let (sql, size) = WIDE.statement(10_000);
        assert_eq!(size, rows);
        assert_eq!(sql.matches('?').count(), rows * 41);
    }

    #[test]
    fn an_update_binds_its_rows_between_its_head_and_its_tail() {
        static TWO: ValuesUpdate = ValuesUpdate::new(
            "WITH u (id, a) AS",
            "UPDATE t SET a = u.a FROM u WHERE t.id = u.id RETURNING id",
            2,
        );
        let (sql, size) = TWO.statement(3);
        assert_eq!(size, 4);
        assert_eq!(
            sql,
            "WITH u (id, a) AS (VALUES (?, ?), (?, ?), (?, ?), (?, ?)) \
             UPDATE t SET a = u.a FROM u WHERE t.id = u.id RETURNING id"
        );
        assert_eq!(max_rows(2), MAX_ROWS);
    }
}
