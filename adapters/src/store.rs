//! [`Store`]: every storage port plus the maintenance calls the binaries need, so that they
//! hold one `Arc<dyn Store>` whichever database the configuration names.

use std::collections::BTreeMap;
use std::fmt::Debug;

use async_trait::async_trait;
use clarion_domain::ports::{
    ApiKeyStore, DeviceStore, MessageStore, ReportStore, StoreError, TemplateStore,
};

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
