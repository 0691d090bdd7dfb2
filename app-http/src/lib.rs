//! clarion-server: the HTTP server and the background worker, started from a wired
//! [`Runtime`]. `main` wires; this crate serves.

mod admin;
mod api;
mod auth;
pub mod bulk;
mod error;
mod extract;
#[doc(hidden)]
pub mod fuzzing;
mod limits;
mod ops;
mod problem_fallback;
mod ratelimit;
mod routes;
mod serve;
mod telemetry;

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use clarion_adapters::keys::generate_secret;
use clarion_adapters::wiring::Runtime;
use clarion_domain::auth::KeyScope;
use clarion_domain::service::PushService;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::limits::RequestLimits;
use crate::ratelimit::RateLimiter;
use crate::serve::ServeSettings;

pub use crate::routes::openapi;
pub use clarion_adapters::worker::WorkerSettings;

/// The server, bound to its port and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    address: SocketAddr,
    router: Router,
    worker: Option<(clarion_domain::service::PushService, WorkerSettings)>,
    /// The service whose worker id this process's leases carry (the worker's and `now` sends').
    leases: PushService,
    /// How long a stop waits for the open requests and the worker's batch.
    grace: Duration,
    /// How connections are accepted and timed out.
    serving: ServeSettings,
}

impl Application {
    /// Binds the listener on `config.listen` (port 0 picks a free port) and builds the
    /// routes and the worker. When no API key is active (a first start), it creates an admin
    /// key and prints its secret once on stdout.
    ///
    /// # Errors
    /// When the listen address does not parse or cannot be bound, or the first key cannot be
    /// created.
    pub async fn build(runtime: Runtime) -> anyhow::Result<Application> {
        let Runtime {
            service,
            store,
            config,
            client_tokens,
        } = runtime;
        ensure_an_admin_key(&service).await?;
        let metrics = telemetry::prometheus();
        // Exported from the start, also when the worker is off.
        metrics::gauge!(telemetry::BUSY_WORKERS).set(0.0);
        let wanted: SocketAddr = config
            .listen
            .parse()
            .with_context(|| format!("listen address {:?} is not an address", config.listen))?;
        let listener = TcpListener::bind(wanted)
            .await
            .with_context(|| format!("failed to listen on {wanted}"))?;
        let address = listener
            .local_addr()
            .context("failed to read the bound address")?;
        let worker = config
            .worker
            .enabled
            .then(|| (service.clone(), WorkerSettings::from_config(&config.worker)));
        let apps: Vec<String> = service
            .applications()
            .iter()
            .map(|app| format!("{}:{}", app.id, app.sender))
            .collect();
        tracing::info!(
            listen = %address,
            database = %config.database.redacted_url(),
            apps = %apps.join(", "),
            config_file = %config
                .file
                .as_ref()
                .map_or_else(|| "none".to_owned(), |file| file.display().to_string()),
            debug = config.debug,
            worker = config.worker.enabled,
            "clarion-server is listening"
        );
        Ok(Application {
            listener,
            address,
            leases: service.clone(),
            router: routes::router(
                routes::AppState::new(routes::AppShared {
                    service: Arc::new(service),
                    client_tokens: Arc::new(client_tokens),
                    send_wait: Duration::from_secs(config.http.send_wait_secs),
                    bulk_body_limit: config.http.bulk_body_limit_bytes,
                    limiter: RateLimiter::new(
                        config.http.rate_limit_per_second,
                        config.http.rate_limit_burst,
                    )
                    .map(Arc::new),
                    readiness: Arc::new(ops::Readiness::new(store)),
                    metrics,
                    sessions: Arc::new(admin::session::Sessions::new(
                        admin::session::SessionSettings {
                            ttl: Duration::from_secs(config.admin.session_ttl_secs),
                            secure: config.admin.secure_cookies,
                        },
                    )),
                    sign_ins: RateLimiter::per_minute(config.admin.sign_in_per_minute)
                        .map(Arc::new),
                }),
                routes::HttpSettings {
                    body_limit_bytes: config.http.body_limit_bytes,
                    limits: RequestLimits {
                        header_bytes: config.http.max_header_bytes,
                        body_read_timeout: Duration::from_secs(config.http.body_read_timeout_secs),
                    },
                },
            ),
            worker,
            grace: Duration::from_secs(config.http.shutdown_grace_secs),
            serving: ServeSettings {
                header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs),
                idle_timeout: Duration::from_secs(config.http.idle_timeout_secs),
                max_connections: config.http.max_connections,
                max_header_bytes: config.http.max_header_bytes,
            },
        })
    }

    /// The bound port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The bound address.
    #[must_use]
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets the
    /// open requests and the worker's current batch finish, waiting at most the grace period
    /// (`http.shutdown_grace_secs`); after it, returns anyway.
    ///
    /// # Errors
    /// When the server fails.
    pub async fn run_until<F>(self, shutdown: F) -> anyhow::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let grace = self.grace;
        let leases = self.leases;
        let (stop, stopped) = watch::channel(false);
        let (signalled, on_signal) = oneshot::channel::<()>();
        let mut worker = self.worker.map(|(service, settings)| {
            tokio::spawn(clarion_adapters::worker::run(service, settings, stopped))
        });
        let serve = serve::serve(self.listener, self.router, self.serving, async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: no new connections; the open requests and the worker's batch \
                 finish"
            );
            // The worker may stop now, while the open requests finish.
            let _ = stop.send(true);
            let _ = signalled.send(());
        });
        let mut server = tokio::spawn(serve);
        // Wait for the stop, or for the server to end by itself (it failed).
        let ended = tokio::select! {
            served = &mut server => Some(served),
            // A dropped sender (the shutdown future is gone) counts as a stop too.
            _ = on_signal => None,
        };
        let drain = async {
            let served = match ended {
                Some(served) => served,
                None => (&mut server).await,
            };
            // The stop sender is gone with the server, so the worker stops after its batch.
            if let Some(worker) = worker.as_mut()
                && let Err(error) = worker.await
            {
                tracing::error!(error = %error, "the worker task failed");
            }
            served
        };
        let Ok(served) = tokio::time::timeout(grace, drain).await else {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "the grace period is over: stopping with requests or a batch unfinished"
            );
            server.abort();
            if let Some(worker) = &worker {
                worker.abort();
            }
            // Release the leases this process still holds (the aborted batch, unfinished
            // `now` sends), so that another worker takes those messages at once instead of
            // when the leases expire.
            match leases.release_leases().await {
                Ok(released) => tracing::info!(released, "released this process's leases"),
                Err(error) => tracing::error!(
                    error = format!("{error:#}"),
                    "could not release this process's leases; they expire by themselves"
                ),
            }
            tracing::info!("clarion-server stopped");
            return Ok(());
        };
        tracing::info!("clarion-server stopped");
        served.context("the HTTP server task failed")
    }
}

/// Creates an admin key when no key is active, so that a fresh installation can be
/// administered, and prints its secret on stdout: never in the logs, which may be shipped
/// elsewhere.
async fn ensure_an_admin_key(service: &PushService) -> anyhow::Result<()> {
    if service
        .has_active_api_keys()
        .await
        .context("failed to read the API keys")?
    {
        return Ok(());
    }
    let secret = generate_secret()?;
    let created = service
        .create_api_key("first admin key", KeyScope::Admin, secret)
        .await
        .context("failed to create the first admin key")?;
    tracing::info!(key = created.key.id.0, prefix = %created.key.prefix, "created the first admin API key; its secret is on stdout");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "Created the first admin API key (shown once): {}",
        created.secret
    );
    let _ = out.flush();
    Ok(())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
