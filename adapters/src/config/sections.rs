//! The process-wide sections besides the database: the worker, the HTTP server, the
//! template limits, the admin UI and outbound TLS, each with its defaults.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The background worker that sends queued messages and retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Whether `clarion-server` runs the worker.
    pub enabled: bool,
    /// The wait between two polls when there was nothing (more) to do.
    pub poll_interval_secs: u64,
    /// The most messages one claim takes (one store statement).
    pub batch_size: u32,
    /// How long a claim on a message lasts before another worker may take it over. The worker
    /// renews it once half has passed while it sends.
    pub lease_secs: u64,
    /// How many claimed messages a worker sends at once. A one-device message holds its slot
    /// for about one provider round trip and a share of the claims and saves around it:
    /// 2,000 at a 50 ms round trip drain about 13,000 queued messages a second on two cores
    /// (1,000 drained 8,000; docs/performance.md). Each slot is also a message a crashed
    /// worker may send twice (docs/scaling.md).
    pub message_concurrency: usize,
    /// How many of those may belong to one application while other applications have
    /// messages due (default: half of `message_concurrency`, rounded up). When no other
    /// application has, one application may use every slot but one.
    pub app_concurrency: Option<usize>,
    /// How many deliveries of one message a worker sends at once. A broadcast sends at most
    /// `delivery_concurrency` deliveries per round trip to the provider, so the default (4,096)
    /// is above what a provider's pool lets through (`max_in_flight`, 4,000 by default, per
    /// application and provider) and the pool is what binds. Each send in flight holds its
    /// payload (up to 4 KiB for APNs and Web Push, a little more for FCM), its delivery and
    /// its device, about 6 KiB at most: 4,096 in flight cost up to about 24 MiB per message
    /// being sent. The provider's pool queues the sends above its own bound, so the memory
    /// is held by the waiting sends as well.
    pub delivery_concurrency: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval_secs: 5,
            batch_size: 500,
            lease_secs: 60,
            message_concurrency: 2000,
            app_concurrency: None,
            delivery_concurrency: 4096,
        }
    }
}

impl WorkerConfig {
    /// How many messages of one application a worker sends at once while other applications
    /// have messages due: `app_concurrency`, or half of `message_concurrency` rounded up.
    #[must_use]
    pub fn app_concurrency(&self) -> usize {
        let slots = self.message_concurrency.max(1);
        self.app_concurrency
            .unwrap_or_else(|| slots.div_ceil(2))
            .clamp(1, slots)
    }
}

/// The smallest `http.max_header_bytes`: below it, ordinary browsers' requests would be refused.
pub const MIN_HEADER_BYTES: usize = 1024;

/// The HTTP API of `clarion-server`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The largest request body accepted; larger ones are answered 413.
    pub body_limit_bytes: usize,
    /// The largest body of a bulk send (`POST /v1/apps/{app}/messages/bulk`, up to 1,000
    /// messages), in place of `body_limit_bytes`; larger ones are answered 413.
    pub bulk_body_limit_bytes: usize,
    /// How long a `dispatch = "now"` send may take before the request is answered 202 and
    /// the send finishes in the background.
    pub send_wait_secs: u64,
    /// The requests per second one credential (API key or client token) may make on
    /// average; above it the answer is 429 with `Retry-After`. 0 turns the limit off.
    pub rate_limit_per_second: u32,
    /// How many requests one credential may make at once above the average rate. 0 turns
    /// the limit off.
    pub rate_limit_burst: u32,
    /// How long, in milliseconds, what the database said about an API key is used before it
    /// is asked again, so that a busy client costs one key look-up a second rather than one
    /// a request. A key revoked by this process is refused at once; one revoked by another
    /// process (the CLI, another server on the same database) after at most this long. 0
    /// asks the database on every request.
    pub key_cache_ms: u64,
    /// How long a stop (SIGTERM, Ctrl-C) waits for the open requests and the worker's
    /// current batch before the process exits anyway.
    pub shutdown_grace_secs: u64,
    /// How long a client has to send a request's headers, from the moment the server waits
    /// for them: on a new connection, and on a kept-alive one after the previous answer. A
    /// connection that takes longer is closed.
    pub header_read_timeout_secs: u64,
    /// How long a connection may move no bytes in either direction before it is closed (a
    /// client that stops reading its answer, an HTTP/2 connection with no request).
    pub idle_timeout_secs: u64,
    /// How long a client has to send a request's whole body once the server reads it; a body
    /// that takes longer is answered 408.
    pub body_read_timeout_secs: u64,
    /// The most connections served at once. Beyond it, new connections wait in the listen
    /// queue until one closes. Keep it well below the process's file-descriptor limit
    /// (`ulimit -n`), which the database pool, the providers' connections and the log also
    /// use.
    pub max_connections: usize,
    /// The largest request line plus headers accepted, in bytes (also: at most 100 header
    /// fields); a larger one is answered 431 (414 when the request line alone is too long).
    pub max_header_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1024 * 1024,
            bulk_body_limit_bytes: 4 * 1024 * 1024,
            send_wait_secs: 10,
            rate_limit_per_second: 50,
            rate_limit_burst: 100,
            key_cache_ms: 1000,
            shutdown_grace_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            body_read_timeout_secs: 30,
            max_connections: 4096,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// The limits of templates: checked when a template is saved and again when it renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesConfig {
    /// The largest source of one template field (body, heading, url), in bytes.
    pub max_source_bytes: usize,
    /// The deepest nesting of blocks, brackets and chained operators, filters, tests and
    /// attributes in a template; deeper templates are refused with 422.
    pub max_nesting: usize,
    /// The largest output of one render, and the longest string a filter may build, in
    /// bytes.
    pub max_output_bytes: usize,
    /// MiniJinja fuel: roughly the instructions one render may execute.
    pub fuel: u64,
    /// How long one render may take.
    pub render_timeout_ms: u64,
    /// The address space of one render worker process, in MiB (`isolation = "process"`).
    pub render_memory_mb: u64,
    /// How many renders run at once; more wait in a bounded queue.
    pub render_workers: usize,
    /// `process` (the default): render in worker processes with a memory limit, killed
    /// after the timeout. `thread`: render on threads of the server, without the memory
    /// bound.
    pub isolation: TemplateIsolation,
}

/// The most `templates.max_nesting` may be: MiniJinja's parser allows about 75 levels of
/// brackets, and the render threads' stacks are sized for a few hundred levels of chains.
pub const MAX_TEMPLATE_NESTING: usize = 500;
/// The least `templates.render_memory_mb` may be: a worker's own image and stacks need
/// about 30 MiB of address space before it renders anything.
pub const MIN_RENDER_MEMORY_MB: u64 = 64;

impl Default for TemplatesConfig {
    fn default() -> Self {
        Self {
            max_source_bytes: 64 * 1024,
            max_nesting: 64,
            max_output_bytes: 64 * 1024,
            fuel: 50_000,
            render_timeout_ms: 1000,
            render_memory_mb: 256,
            render_workers: 2,
            isolation: TemplateIsolation::Process,
        }
    }
}

/// Where templates render (`templates.isolation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateIsolation {
    Process,
    Thread,
}

/// The admin web UI under `/admin`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// How long a sign-in lasts, in seconds, however busy the session is.
    pub session_ttl_secs: u64,
    /// Marks the session cookie `Secure`, so that browsers send it over HTTPS only. Clarion
    /// serves plain HTTP itself: set this to true whenever a TLS proxy serves it, and leave it
    /// false only for plain-HTTP access (localhost), where browsers would drop the cookie.
    pub secure_cookies: bool,
    /// How many sign-in attempts one client address may make per minute (in a burst, refilled
    /// evenly over the minute); more are answered 429. The address is the TCP peer's: behind a
    /// reverse proxy every browser shares the proxy's address. 0 turns the limit off.
    pub sign_in_per_minute: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 8 * 60 * 60,
            secure_cookies: false,
            sign_in_per_minute: 10,
        }
    }
}

/// Outbound TLS.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM files of root certificates trusted in addition to the system's.
    pub extra_ca_certs: Vec<PathBuf>,
}
