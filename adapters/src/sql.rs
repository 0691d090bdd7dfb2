//! The store logic that the SQLite and PostgreSQL stores share, written once and generic over
//! the database (ADR 6).
//!
//! Most of the two stores' statements are the same SQL: both take numbered placeholders
//! (`$1`, which sqlx's SQLite driver binds by number, like `?1`), both spell booleans `TRUE`
//! and `FALSE`, and both read a row into the same row types of `rows.rs`. Those statements are
//! written here, on [`Tables`], once for both databases; what really differs is a [`Dialect`]:
//! how a time is stored, the few spellings that differ, and the statements each database makes
//! its own way (a bulk registration). The hot paths with statements of their own
//! (registrations made at the same time, coalesced device reads, in `sqlite/devices.rs` and
//! `postgres/devices.rs`) stay with their store and are reached through [`Tables`] too.
//!
//! The code is generic over the sqlx database type, not over sqlx's `Any` driver: each store
//! gets its own monomorphised copy, with its own types and no conversion on each row. Each
//! store implements the ports with [`shared_ports!`] (`sql/ports.rs`), which hands each method
//! to [`Tables`]; this module knows neither store.

mod devices;
mod keys;
mod ports;
mod reports;
mod templates;

pub(crate) use devices::{subscription_keys, upsert_devices};
pub(crate) use ports::shared_ports;

use clarion_domain::device::{BulkRegistration, NewDevice};
use clarion_domain::ports::StoreError;
use sqlx::{Database, Encode, IntoArguments, QueryBuilder, Type};
use time::OffsetDateTime;

use crate::device_reads::{CoalescedReads, ReadDevices};
use crate::held::Held;
use crate::registrations::GroupedRegistrations;
use crate::rows::StoredTime;

/// What differs between the databases, for the shared store logic: implemented by
/// [`sqlx::Sqlite`] (in `sqlite/mod.rs`) and [`sqlx::Postgres`] (in `postgres/mod.rs`).
pub(crate) trait Dialect: Database<Arguments: IntoArguments<Self> + Default> {
    /// How a time is stored and read back: unix milliseconds on SQLite, `timestamptz` on
    /// PostgreSQL.
    type Time: StoredTime + Send + Sync + Unpin + 'static + for<'q> Encode<'q, Self> + Type<Self>;

    /// The statement that reads devices by application and id for [`CoalescedReads`].
    type DeviceReads: ReadDevices;

    /// `at` as this database stores it: to the millisecond, so that both stores give back the
    /// same instants.
    fn time(at: OffsetDateTime) -> Self::Time;

    /// The rows a statement changed.
    fn rows_affected(done: &Self::QueryResult) -> u64;

    /// Appends the condition that `column` starts with `prefix`, which LIKE cannot say
    /// (a token or an endpoint may hold its wildcards).
    fn push_starts_with(query: &mut QueryBuilder<Self>, column: &str, prefix: &str);

    /// Registers `devices` (distinct tokens, at least one) in one transaction through the
    /// `writer`, counting those it created.
    async fn register_in_bulk(
        writer: &Held<Self>,
        devices: Vec<&NewDevice>,
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError>;
}

/// The connections and grouped statements of one store, on which the shared logic runs. Made
/// by each store's `tables()` for each call; it only borrows.
pub(crate) struct Tables<'a, DB: Dialect> {
    /// Connections for statements that only read (SQLite's read-only connections; the one
    /// pool on PostgreSQL).
    pub(crate) readers: &'a Held<DB>,
    /// Connections for statements that write (SQLite's one writer; the one pool on
    /// PostgreSQL).
    pub(crate) writer: &'a Held<DB>,
    /// Registrations made at the same time, written together.
    pub(crate) registrations: &'a GroupedRegistrations,
    /// Reads of devices by id made at the same time, read together.
    pub(crate) device_reads: &'a CoalescedReads<DB::DeviceReads>,
}
