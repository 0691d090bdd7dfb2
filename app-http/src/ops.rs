//! The operations routes, open to any caller: `/healthz` (liveness), `/readyz` (the
//! database can read and write now) and `/metrics` (Prometheus text).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use clarion_adapters::store::Store;
use clarion_domain::ports::StoreError;
use serde::Serialize;

use crate::error::ApiError;
use crate::routes::AppState;
use crate::telemetry::DUE_MESSAGES;

/// The store `/readyz` asks (the only use of the store outside the domain's ports), and the
/// outcome of its last check.
///
/// A check commits a probe row on the writer and, for SQLite, writes a 1 MiB file; `/readyz`
/// is open to anybody. So one check runs at a time, and every caller that asked while it ran
/// takes its outcome instead of starting another: however many callers, the database sees at
/// most one probe in flight.
#[derive(Debug)]
pub(crate) struct Readiness {
    store: Arc<dyn Store>,
    /// When the last check ended, and what it found.
    last: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Readiness {
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Ready, or the reason why not that a caller may see.
    async fn check(&self) -> Result<(), String> {
        self.check_with(probe(self.store.as_ref())).await
    }

    /// Runs `probe` unless a check that ended after this call began can answer for it.
    async fn check_with(
        &self,
        probe: impl Future<Output = Result<(), String>>,
    ) -> Result<(), String> {
        let asked = Instant::now();
        let mut last = self.last.lock().await;
        if let Some((ended, outcome)) = last.as_ref()
            && *ended >= asked
        {
            return outcome.clone();
        }
        let outcome = probe.await;
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }
}

/// How long `/readyz` waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Serialize)]
pub(crate) struct Status {
    status: &'static str,
}

/// Liveness: the process serves requests. It asks nothing else, so that a slow database
/// does not get the process restarted.
pub(crate) async fn healthz() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// Readiness: the database can be used now, a committed write included (and, for SQLite,
/// its disk has room), so that a full disk, a read-only or damaged file or a stopped
/// database server turns the server unready until it is fixed, without a restart. The store
/// migrates the schema when it connects and the server only starts once it has, so a
/// database that answers has its migrations applied.
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<Status>, ApiError> {
    state
        .readiness
        .check()
        .await
        .map(|()| Json(Status { status: "ready" }))
        .map_err(ApiError::NotReady)
}

/// Asks the store whether it can read and write now, within [`READY_TIMEOUT`].
async fn probe(store: &dyn Store) -> Result<(), String> {
    match tokio::time::timeout(READY_TIMEOUT, store.check_ready()).await {
        Ok(Ok(())) => Ok(()),
        // The reason is the driver's short sentence (a full disk, a read-only file, a server
        // that refuses connections), which names no secret.
        Ok(Err(StoreError::Unavailable(reason))) => {
            tracing::warn!(reason, "not ready: the database is unavailable");
            Err(format!("the database is unavailable: {reason}"))
        }
        Ok(Err(error)) => {
            // The cause may name files or hosts: it goes to the log, not to the caller.
            tracing::warn!(
                error = format!("{error:#}"),
                "not ready: the database fails"
            );
            Err("the database does not answer".into())
        }
        Err(_) => {
            tracing::warn!(
                timeout_secs = READY_TIMEOUT.as_secs(),
                "not ready: the database is slow"
            );
            Err(format!(
                "the database did not answer within {} s",
                READY_TIMEOUT.as_secs()
            ))
        }
    }
}

/// The metrics in Prometheus' text format. The backlog is counted now, for this scrape.
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    match state.service.backlog().await {
        Ok(due) => metrics::gauge!(DUE_MESSAGES).set(due as f64),
        Err(error) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "cannot count the due messages"
            );
        }
    }
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use clarion_adapters::sqlite::SqliteStore;
    use tokio::sync::Notify;

    use super::*;

    #[tokio::test]
    async fn callers_that_ask_while_a_check_runs_share_it_and_a_later_caller_checks_again() {
        let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
        let readiness = Arc::new(Readiness::new(Arc::new(store)));
        let probes = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        // A probe that counts itself and answers at once, and one that waits to be released.
        let probe = |outcome: Result<(), String>| {
            let probes = Arc::clone(&probes);
            async move {
                probes.fetch_add(1, Ordering::SeqCst);
                outcome
            }
        };
        let held = {
            let (probes, release) = (Arc::clone(&probes), Arc::clone(&release));
            async move {
                probes.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
                Err("full".to_owned())
            }
        };

        // The first caller's probe holds until released; twenty more ask meanwhile.
        let first = {
            let readiness = Arc::clone(&readiness);
            tokio::spawn(async move { readiness.check_with(held).await })
        };
        while probes.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let waiting: Vec<_> = (0..20)
            .map(|_| {
                let (readiness, probe) = (Arc::clone(&readiness), probe(Ok(())));
                tokio::spawn(async move { readiness.check_with(probe).await })
            })
            .collect();
        tokio::task::yield_now().await;
        release.notify_one();

        assert_eq!(first.await.unwrap(), Err("full".to_owned()));
        for waiter in waiting {
            assert_eq!(waiter.await.unwrap(), Err("full".to_owned()));
        }
        assert_eq!(probes.load(Ordering::SeqCst), 1);

        let later = readiness.check_with(probe(Ok(()))).await;
        assert_eq!(later, Ok(()));
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }
}
