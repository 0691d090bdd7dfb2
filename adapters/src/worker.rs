//! The batch worker loop shared by `clarion-server` and `clarion batch --watch`: claims due
//! messages in batches through the domain service and sends them, polling the store when there
//! is nothing to do, and releases its leases when it stops.

use std::time::Duration;

use crate::config::WorkerConfig;
use clarion_domain::service::PushService;
use std::future::Future;
use std::pin::Pin;

use tokio::sync::watch;

/// Gauge: 1 while this process's worker runs a batch, 0 otherwise (a no-op without a metrics
/// recorder, as in the CLI).
pub const BUSY_WORKERS: &str = "clarion_busy_workers";

/// How the worker polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    /// The wait after a batch that found less than a full batch of work.
    pub poll_interval: Duration,
    /// The most messages one claim takes (shown in the start-up log; the service's
    /// `claim_size` is what bounds a claim).
    pub batch_size: u32,
}

impl WorkerSettings {
    #[must_use]
    pub fn from_config(config: &WorkerConfig) -> Self {
        Self {
            poll_interval: Duration::from_secs(config.poll_interval_secs),
            batch_size: config.batch_size.max(1),
        }
    }
}

/// Runs batches until `stop` turns true or its sender is dropped. A batch is a pipeline (see
/// [`PushService::process_due`]): it claims due messages as sending slots free up and looks
/// again every poll interval while any slot is free, so a message that comes due while a
/// slow provider holds other slots leaves within a poll interval; it ends once nothing is
/// being sent and nothing more is due, and the worker then waits a poll interval. A stop lets
/// the messages under way finish first; a failed batch (the database is down, say) is logged
/// and tried again after the poll interval. On the way out it releases the leases it still
/// holds, so that other workers take those messages at once rather than after the lease
/// expires.
pub async fn run(service: PushService, settings: WorkerSettings, mut stop: watch::Receiver<bool>) {
    tracing::info!(
        poll_interval_secs = settings.poll_interval.as_secs_f64(),
        batch_size = settings.batch_size,
        "worker started"
    );
    let poll_again = {
        let stop = stop.clone();
        let interval = settings.poll_interval;
        move || -> Pin<Box<dyn Future<Output = bool> + Send>> {
            let mut stop = stop.clone();
            Box::pin(async move {
                if stopping(&stop) {
                    return false;
                }
                tokio::select! {
                    _ = stop.changed() => !stopping(&stop),
                    () = tokio::time::sleep(interval) => true,
                }
            })
        }
    };
    loop {
        if stopping(&stop) {
            break;
        }
        metrics::gauge!(BUSY_WORKERS).set(1.0);
        let batch = service.process_due(u64::MAX, &poll_again, &|_| {}).await;
        metrics::gauge!(BUSY_WORKERS).set(0.0);
        match batch {
            Ok(report) if report.processed > 0 => tracing::info!(
                processed = report.processed,
                lost = report.lost,
                sent = report.sent,
                debug = report.debug,
                retrying = report.retrying,
                failed = report.failed,
                "worker processed a batch"
            ),
            Ok(_) => {}
            Err(error) => tracing::error!(error = format!("{error:#}"), "worker batch failed"),
        }
        if stopping(&stop) {
            break;
        }
        tokio::select! {
            // Woken by a stop (or a dropped sender); the check above decides.
            _ = stop.changed() => {}
            () = tokio::time::sleep(settings.poll_interval) => {}
        }
    }
    match service.release_leases().await {
        Ok(released) => tracing::info!(released, "worker stopped and released its leases"),
        Err(error) => tracing::error!(
            error = format!("{error:#}"),
            "worker stopped but could not release its leases; they expire by themselves"
        ),
    }
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}
