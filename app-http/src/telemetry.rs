//! Observability of the HTTP server: the process's Prometheus recorder, the per-request
//! metrics, and the request span (request id, method, matched route, status, latency) that
//! every log line of a request carries. Only route templates are used, never raw paths, so
//! ids and tokens in paths reach neither the metrics nor the logs; headers and bodies are
//! never logged.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Span;

/// Counter: answered requests, by `method`, `route` (the matched template) and `status`.
pub(crate) const HTTP_REQUESTS_TOTAL: &str = "clarion_http_requests_total";
/// Histogram: the time to answer a request, by `method` and `route`.
pub(crate) const HTTP_REQUEST_DURATION: &str = "clarion_http_request_duration_seconds";
/// Gauge: messages due now (WAITING, or ERROR_RETRY whose time has come), read at scrape time.
pub(crate) const DUE_MESSAGES: &str = "clarion_due_messages";
pub(crate) use clarion_adapters::worker::BUSY_WORKERS;
/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The handle of the process's Prometheus recorder, installed on first use. A process has
/// one global recorder, and tests start several servers in one process: they share it.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = install().unwrap_or_else(|error| {
                // Another recorder is installed (an embedding program's): `/metrics` then
                // serves an empty recorder rather than failing.
                tracing::warn!(error = %error, "cannot install the Prometheus recorder");
                PrometheusBuilder::new().build_recorder().handle()
            });
            describe();
            spawn_upkeep(handle.clone());
            handle
        })
        .clone()
}

/// How often the recorder's histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Folds histogram samples into their buckets every [`UPKEEP_EVERY`]. The recorder keeps
/// every sample until then: without it, memory would grow with every provider request
/// between two scrapes of `/metrics` (or forever, with nobody scraping). A thread rather
/// than a task, because the recorder outlives any one runtime.
fn spawn_upkeep(handle: PrometheusHandle) {
    let started = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
            }
        });
    if let Err(error) = started {
        tracing::warn!(error = %error, "cannot start the metrics upkeep thread");
    }
}

fn install() -> Result<PrometheusHandle, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(clarion_adapters::metrics::PROVIDER_REQUEST_DURATION.to_owned()),
            clarion_adapters::metrics::PROVIDER_DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(HTTP_REQUEST_DURATION.to_owned()),
            HTTP_DURATION_BUCKETS,
        )?
        .install_recorder()
}

fn describe() {
    clarion_adapters::metrics::describe();
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by method, route template and status"
    );
    metrics::describe_histogram!(
        HTTP_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time to answer an HTTP request, by method and route template"
    );
    metrics::describe_gauge!(DUE_MESSAGES, "Messages due for sending now (the backlog)");
    metrics::describe_gauge!(
        BUSY_WORKERS,
        "Workers of this process that are running a batch"
    );
}

/// The matched route template of a request, `unmatched` when none matched.
fn route(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned())
}

/// The method as a label; methods outside the standard set are `other`, so that a client
/// cannot grow the label's values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Counts and times every request by method, route template and status.
pub(crate) async fn track(request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = route(&request);
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!(
        HTTP_REQUESTS_TOTAL,
        "method" => method,
        "route" => route.clone(),
        "status" => response.status().as_u16().to_string(),
    )
    .increment(1);
    metrics::histogram!(HTTP_REQUEST_DURATION, "method" => method, "route" => route)
        .record(elapsed);
    response
}

/// The span of one request. The request id is the `x-request-id` header, which
/// `SetRequestIdLayer` fills in (a new UUID) when the client sent none.
pub(crate) fn request_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        method = method_label(request.method()),
        route = %route(request),
        request_id = %request_id,
        status = tracing::field::Empty,
        latency_ms = tracing::field::Empty,
    )
}

/// Logs the end of a request: its status and latency, in the request's span.
pub(crate) fn log_response(response: &Response, latency: Duration, span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = latency.as_secs_f64() * 1000.0;
    span.record("status", status);
    span.record("latency_ms", latency_ms);
    tracing::info!(status, latency_ms, "request answered");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        let odd = Method::from_bytes(b"BREW").unwrap_or(Method::TRACE);

        assert_eq!(method_label(&odd), "other");
        assert_eq!(method_label(&Method::GET), "GET");
    }
}
