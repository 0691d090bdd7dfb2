//! [`Store`]: every storage port plus the maintenance calls the binaries need, so that they
//! hold one `Arc<dyn Store>` whichever database the configuration names.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use clarion_domain::ports::{
    ApiKeyStore, DeviceStore, MessageStore, ReportStore, StoreError, TemplateStore,
};

use crate::config::{CheckItem, DatabaseConfig, DatabaseKind};
use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;
use crate::url_secrets::without_password;

/// A database behind every storage port.
#[async_trait]
pub trait Store:
    DeviceStore + MessageStore + TemplateStore + ApiKeyStore + ReportStore + Debug
{
    /// The number of rows of every table of Clarion's schema, by table name.
    ///
    /// # Errors
    /// On a database failure.
    async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>>;

    /// Checks that the database can be used now, a write included (for readiness probes).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] with the reason when it cannot; [`StoreError::Unknown`]
    /// for another failure.
    async fn check_ready(&self) -> Result<(), StoreError>;

    /// Closes every connection; later calls fail. For shutdown.
    async fn close(&self);
}

#[async_trait]
impl Store for SqliteStore {
    async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        SqliteStore::table_counts(self).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        SqliteStore::check_ready(self).await
    }

    async fn close(&self) {
        SqliteStore::close(self).await;
    }
}

#[async_trait]
impl Store for PgStore {
    async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        PgStore::table_counts(self).await
    }

    async fn check_ready(&self) -> Result<(), StoreError> {
        PgStore::check_ready(self).await
    }

    async fn close(&self) {
        self.pool().close().await;
    }
}

/// Checks the database the configuration names, for `clarion config check`: a PostgreSQL
/// server is connected to (nothing is migrated), a SQLite file is only named. The detail never
/// holds the database password.
pub async fn check_database(database: &DatabaseConfig) -> CheckItem {
    let subject = "database.url".to_owned();
    let shown = database.redacted_url();
    match database.kind() {
        Ok(DatabaseKind::Sqlite) => CheckItem::ok(subject, format!("SQLite at {shown}")),
        Ok(DatabaseKind::Postgres) => match crate::postgres::probe(&database.url).await {
            Ok(()) => CheckItem::ok(subject, format!("PostgreSQL at {shown} answers")),
            Err(error) => CheckItem::failed(
                subject,
                without_password(&format!("{error:#}"), &database.url),
            ),
        },
        Err(detail) => CheckItem::failed(subject, detail),
    }
}
