//! [`Store`]: every storage port plus the maintenance calls the binaries need, so that they
//! hold one `Arc<dyn Store>` whichever database the configuration names.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use clarion_domain::ports::{ApiKeyStore, DeviceStore, MessageStore, ReportStore, TemplateStore};

use crate::postgres::PgStore;
use crate::sqlite::SqliteStore;

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

    /// Checks that the database answers (for readiness probes).
    ///
    /// # Errors
    /// When it does not.
    async fn ping(&self) -> anyhow::Result<()>;

    /// Closes every connection; later calls fail. For shutdown.
    async fn close(&self);
}

#[async_trait]
impl Store for SqliteStore {
    async fn table_counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        SqliteStore::table_counts(self).await
    }

    async fn ping(&self) -> anyhow::Result<()> {
        SqliteStore::ping(self).await
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

    async fn ping(&self) -> anyhow::Result<()> {
        PgStore::ping(self).await
    }

    async fn close(&self) {
        self.pool().close().await;
    }
}
