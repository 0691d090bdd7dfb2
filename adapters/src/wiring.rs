//! Builds Clarion's services from the configuration: the one place where the binaries turn a
//! [`Config`] into a store, a renderer, a clock, providers and a [`PushService`].

use std::sync::Arc;
use std::time::Duration;

use clarion_domain::ports::Clock;
use clarion_domain::service::{Ports, PushService, ServiceSettings};

use crate::client_token::ClientTokens;
use crate::clock::SystemClock;
use crate::config::{Config, DatabaseKind, TemplateIsolation, TemplatesConfig};
use crate::key_cache::{CachedKeys, KeyCacheSettings};
use crate::metrics::InstrumentedMessages;
use crate::postgres::{DEFAULT_MAX_CONNECTIONS, PgSettings, PgStore};
use crate::render::{Isolation, MiniJinjaRenderer, RenderLimits, RenderSettings};
use crate::sqlite::SqliteStore;
use crate::store::Store;
use crate::url_secrets::without_password;

/// Everything a binary needs: the services, the store behind them (for maintenance commands
/// such as table counts and readiness), and the configuration they were built from.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub service: PushService,
    pub store: Arc<dyn Store>,
    /// The verifiers of the applications' client tokens.
    pub client_tokens: ClientTokens,
    pub config: Config,
}

/// Connects (creating and migrating) the database the URL names, SQLite or PostgreSQL, and
/// wires the services. `worker_id` names this process in message leases.
///
/// # Errors
/// When the database URL names neither engine or the database cannot be opened or migrated.
pub async fn build(config: Config, worker_id: &str) -> anyhow::Result<Runtime> {
    // A driver error might quote the URL, or a secret of its query, in its own words.
    let store = connect(&config).await.map_err(|error| {
        anyhow::anyhow!(
            "failed to open the database {}: {}",
            config.database.redacted_url(),
            without_password(&format!("{error:#}"), &config.database.url)
        )
    })?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keys = CachedKeys::new(
        store.clone(),
        clock.clone(),
        KeyCacheSettings {
            max_age: Duration::from_millis(config.http.key_cache_ms),
            ..KeyCacheSettings::default()
        },
    );
    let ports = Ports {
        devices: store.clone(),
        // Counted by state and delivery outcome for `/metrics`.
        messages: Arc::new(InstrumentedMessages::new(store.clone())),
        templates: store.clone(),
        // Every authenticated request asks for its key: answered from memory for a while.
        keys: Arc::new(keys),
        reports: store.clone(),
        renderer: Arc::new(MiniJinjaRenderer::with_settings(render_settings(
            &config.templates,
        ))),
        clock,
    };
    let settings = ServiceSettings {
        worker_id: worker_id.to_owned(),
        lease: Duration::from_secs(config.worker.lease_secs),
        claim_size: config.worker.batch_size,
        message_concurrency: config.worker.message_concurrency.max(1),
        app_concurrency: config.worker.app_concurrency(),
        delivery_concurrency: config.worker.delivery_concurrency.max(1),
        ..ServiceSettings::default()
    };
    let service = PushService::new(
        Arc::new(config.applications()),
        ports,
        crate::providers::build(&config)?,
        settings,
    );
    let client_tokens = ClientTokens::from_config(&config)?;
    Ok(Runtime {
        service,
        store,
        client_tokens,
        config,
    })
}

/// The renderer's settings from `[templates]`.
#[must_use]
pub fn render_settings(templates: &TemplatesConfig) -> RenderSettings {
    RenderSettings {
        limits: RenderLimits {
            max_source_bytes: templates.max_source_bytes,
            max_nesting: templates.max_nesting,
            fuel: templates.fuel,
            max_output_bytes: templates.max_output_bytes,
            timeout: Duration::from_millis(templates.render_timeout_ms),
        },
        isolation: match templates.isolation {
            TemplateIsolation::Process => Isolation::Process {
                memory_mb: templates.render_memory_mb,
            },
            TemplateIsolation::Thread => Isolation::Thread,
        },
        workers: templates.render_workers,
    }
}

/// Opens the store the configuration's database URL selects.
async fn connect(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database.url.as_str();
    let kind = config
        .database
        .kind()
        .map_err(|detail| anyhow::anyhow!("database.url {detail}"))?;
    Ok(match kind {
        DatabaseKind::Sqlite => Arc::new(SqliteStore::connect(url).await?),
        DatabaseKind::Postgres => {
            let settings = PgSettings {
                max_connections: config
                    .database
                    .max_connections
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS),
                schema: None,
            };
            Arc::new(PgStore::connect_with(url, &settings).await?)
        }
    })
}

/// An id for this process in message leases, unique per process: the host name, the process id
/// and a random suffix (a process id alone repeats across hosts and after restarts, and a lease
/// is checked by its owner's id). `role` says which program it is.
#[must_use]
pub fn worker_id(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let mut bytes = [0u8; 4];
    // Without randomness the host and pid still tell processes apart on one machine.
    let _ = getrandom::fill(&mut bytes);
    let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}:{role}:{}:{suffix}", std::process::id())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_postgres_database_fails_without_showing_its_password() {
        let mut config = Config::default();
        // Port 1 refuses connections at once.
        config.database.url = "postgres://clarion:hunter2@127.0.0.1:1/clarion".to_owned();

        let error = format!("{:#}", build(config, "test").await.unwrap_err());

        assert!(error.contains("127.0.0.1:1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn a_password_in_the_query_of_an_unreachable_database_url_is_not_shown() {
        let mut config = Config::default();
        config.database.url =
            "postgres://clarion@127.0.0.1:1/clarion?password=hunter2&sslpassword=swordfish"
                .to_owned();

        let error = format!("{:#}", build(config, "test").await.unwrap_err());

        assert!(error.contains("127.0.0.1:1"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
        assert!(!error.contains("swordfish"), "{error}");
    }

    #[tokio::test]
    async fn the_default_configuration_builds_on_a_fresh_database() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.database.url = format!("sqlite://{}", dir.path().join("clarion.db").display());

        let runtime = build(config, "test").await.unwrap();

        let apps: Vec<String> = runtime
            .service
            .applications()
            .iter()
            .map(|app| app.id.to_string())
            .collect();
        assert_eq!(apps, ["default"]);
        assert_eq!(runtime.service.backlog().await.unwrap(), 0);
    }
}
