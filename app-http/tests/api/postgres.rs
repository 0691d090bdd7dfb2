//! The server on PostgreSQL: a fresh schema of the test database per test, dropped when the
//! test ends, for the tests that must hold on both stores.
//!
//! The server is `CLARION_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it cannot be reached the test fails with a
//! message saying so (`.ci/run` starts the local cluster).

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clarion_adapters::postgres::PgStore;
use sqlx::{ConnectOptions as _, Connection as _};

use crate::helpers::{TestApp, runtime_with, shop_and_news, spawn};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn server_url() -> String {
    std::env::var("CLARION_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

pub const STORES: [Store; 2] = [Store::Sqlite, Store::Postgres];

/// A schema of its own, dropped with this value. Its name starts with `t_` and the test
/// process's id, as the adapters' PostgreSQL tests name theirs, so that their sweep removes
/// it should this process be killed before it drops it.
pub struct Schema {
    name: String,
}

impl Schema {
    pub async fn new() -> Schema {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("t_{}_{n}_{nanos}_http", std::process::id());
        // Connecting once creates the schema and migrates it.
        let store = PgStore::connect_with_schema(&server_url(), &name)
            .await
            .unwrap_or_else(|error| {
                panic!(
                    "PostgreSQL is not reachable at {} ({error:#}); start it (.ci/run does) or \
                     set CLARION_TEST_POSTGRES_URL",
                    server_url()
                )
            });
        store.pool().close().await;
        Schema { name }
    }

    /// The database URL that puts this schema first on the search path.
    pub fn url(&self) -> String {
        let url = server_url();
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}options[search_path]={}", self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on: a thread with a
        // runtime of its own drops the schema and is waited for.
        let sql = format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            self.name.replace('"', "\"\"")
        );
        let done = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(options) = server_url().parse::<sqlx::postgres::PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = options.connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    conn.close().await.ok();
                }
            });
        });
        let _ = done.join();
    }
}

/// The server with `shop` and `news` (see [`shop_and_news`]) on `store`, and the schema to
/// keep while it runs (none on SQLite).
pub async fn spawn_shop_and_news_on(store: Store) -> (TestApp, Option<Schema>) {
    let schema = match store {
        Store::Sqlite => None,
        Store::Postgres => Some(Schema::new().await),
    };
    let url = schema.as_ref().map(Schema::url);
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        if let Some(url) = url {
            config.database.url = url;
            config.database.max_connections = Some(4);
        }
    })
    .await;
    (spawn(runtime, dir).await, schema)
}
