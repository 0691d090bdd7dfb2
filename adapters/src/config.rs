//! Clarion's one typed configuration: read from a TOML file, overridden by `CLARION_*`
//! environment variables, validated once, and turned into the domain's applications.
//!
//! Sources, later ones winning:
//! 1. the defaults below;
//! 2. the file given to [`Config::load`], else the one named by `CLARION_CONFIG`, else
//!    `./clarion.toml` when it exists;
//! 3. `CLARION_LISTEN`, `CLARION_DEBUG`, `CLARION_DATABASE_URL` (for `database.url`), and
//!    `CLARION_<SECTION>__<KEY>` for any nested key, such as
//!    `CLARION_WORKER__POLL_INTERVAL_SECS` or `CLARION_APPS__SHOP__SENDER`. Other
//!    `CLARION_*` variables with no `__` (`CLARION_CONFIG`, the CLI's own variables) are not
//!    configuration keys and are ignored.
//!
//! Secrets are [`Secret`]s: given inline, as `{ file = "path" }` or as `{ env = "NAME" }`,
//! and never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clarion_domain::app::{ApnsSettings, Application, Applications, OneSignalSettings, SenderKind};
use clarion_domain::ids::AppId;
use clarion_domain::retry::RetryPolicy;
use clarion_domain::token::EndpointPolicy;
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use figment::value::{Uncased, UncasedStr};
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "CLARION_CONFIG";
/// The prefix of every configuration environment variable.
const ENV_PREFIX: &str = "CLARION_";
/// The file read when no other is named and it exists.
const DEFAULT_FILE: &str = "clarion.toml";
/// The application that exists when none is configured.
pub const DEFAULT_APP: &str = "default";
pub use crate::url_secrets::redact_url;
use crate::url_secrets::{REDACTED, without_password};

/// The whole configuration of a Clarion process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Turns every application's sender into `debug`: nothing leaves the process.
    pub debug: bool,
    /// The HTTP server's address, such as `127.0.0.1:8080`.
    pub listen: String,
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub templates: TemplatesConfig,
    /// The applications (tenants), by id.
    pub apps: BTreeMap<String, AppConfig>,
    /// The file this configuration was read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut config = Self {
            debug: false,
            listen: "127.0.0.1:8080".to_owned(),
            database: DatabaseConfig::default(),
            worker: WorkerConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            tls: TlsConfig::default(),
            templates: TemplatesConfig::default(),
            apps: BTreeMap::new(),
            file: None,
        };
        config.add_default_app();
        config
    }
}

/// Where the data lives.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://path` (created on first start) or `postgres://...`.
    pub url: String,
    /// The PostgreSQL connections of each process in all (default 18): up to 9 for the
    /// grouped writes of messages, attempt results and registrations, and at most half; the
    /// rest for everything else (docs/scaling.md sizes it for many processes). SQLite keeps
    /// its own (writers are serialised there anyway) and ignores this.
    pub max_connections: Option<u32>,
}

// A PostgreSQL URL may hold a password.
impl fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &self.redacted_url())
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://clarion.db".to_owned(),
            max_connections: None,
        }
    }
}

/// The database engines a URL can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseConfig {
    /// The engine the URL selects, from its scheme: `sqlite:` or a plain file path selects
    /// SQLite, `postgres://` or `postgresql://` PostgreSQL.
    ///
    /// # Errors
    /// A message (to follow the key's name) naming the scheme when it is another one.
    pub fn kind(&self) -> Result<DatabaseKind, String> {
        let url = self.url.trim();
        if url.starts_with("sqlite:") {
            return Ok(DatabaseKind::Sqlite);
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseKind::Postgres);
        }
        // A URL scheme is a letter then letters, digits, `+`, `-` or `.`; one letter before
        // the colon is a Windows drive, part of a path.
        let scheme = url.split_once(':').map(|(scheme, _)| scheme).filter(|s| {
            s.len() > 1
                && s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        });
        match scheme {
            None if !url.is_empty() => Ok(DatabaseKind::Sqlite),
            None => Err("must not be empty: give a sqlite:// or postgres:// URL".to_owned()),
            Some(scheme) => Err(format!(
                "must start with sqlite:// or postgres://, or be a file path; got scheme \
                 {scheme:?}"
            )),
        }
    }

    /// The URL with its password and secret query parameters replaced, for logs and output.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

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

/// One application (tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub sender: SenderKind,
    pub retry: RetryPolicy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apns: Option<ApnsConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fcm: Option<FcmConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webpush: Option<WebPushConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onesignal: Option<OneSignalConfig>,
    /// The HS256 secret of the client tokens (JWT) of this application's apps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token_secret: Option<Secret>,
    /// The longest a client token may live: `exp - iat`, or `exp` minus the time it is
    /// presented when it has no `iat`.
    pub client_token_max_lifetime_secs: u64,
}

/// The default of `client_token_max_lifetime_secs`: 30 days.
pub const CLIENT_TOKEN_MAX_LIFETIME_SECS: u64 = 30 * 24 * 3600;

impl Default for AppConfig {
    fn default() -> Self {
        Self {
            sender: SenderKind::Direct,
            retry: RetryPolicy::default(),
            apns: None,
            fcm: None,
            webpush: None,
            onesignal: None,
            client_token_secret: None,
            client_token_max_lifetime_secs: CLIENT_TOKEN_MAX_LIFETIME_SECS,
        }
    }
}

/// Apple Push Notification service credentials: token auth (`team_id`, `key_id`, `key`) or
/// certificate auth (`certificate`, `certificate_key`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApnsConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The `.p8` signing key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Secret>,
    /// The client certificate, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Secret>,
    /// The client certificate's private key, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_key: Option<Secret>,
    /// The bundle id.
    pub topic: String,
    #[serde(default)]
    pub environment: ApnsEnvironment,
    /// Overrides the APNs host (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections to APNs for this application; 4 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all its connections
    /// (the memory bound); 4000 when unset. `concurrency` is the old name.
    #[serde(
        default,
        alias = "concurrency",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_in_flight: Option<usize>,
}

/// Which APNs host serves an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApnsEnvironment {
    #[default]
    Production,
    Sandbox,
}

/// Firebase Cloud Messaging (HTTP v1) credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The service-account JSON (its `project_id`, `client_email`, `private_key` and
    /// `token_uri` are used).
    pub service_account: Secret,
    /// Overrides the FCM endpoint (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections for this application; 16 when unset (FCM allows 100 requests at once
    /// on a connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all its connections (the memory bound);
    /// 4000 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// Web Push (VAPID) credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebPushConfig {
    pub vapid_private_key: Secret,
    /// `mailto:` or `https:` contact of the sender.
    pub subject: String,
    /// Accepts subscription endpoints on private addresses (tests only).
    #[serde(default)]
    pub allow_private_endpoints: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// HTTP/2 connections for this application per push-service origin; 4 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    /// The most requests in flight at once for this application, over all push services (the memory bound);
    /// 4000 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<usize>,
}

/// OneSignal credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OneSignalConfig {
    pub app_id: String,
    /// The REST API key.
    pub api_key: Secret,
    /// The language key of `contents` and `headings`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Overrides the OneSignal endpoint (tests, proxies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

fn default_language() -> String {
    "en".to_owned()
}

// ----- secrets -----

/// A secret value: inline, in a file, or in an environment variable. Its `Debug` and
/// `Serialize` show where it comes from, never the value.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl Secret {
    /// Reads the secret. A file's trailing line break is dropped.
    ///
    /// # Errors
    /// When the file cannot be read or the variable is not set; the message names the file
    /// or variable and never holds the value.
    pub fn expose(&self) -> anyhow::Result<String> {
        match self {
            Secret::Inline(value) => Ok(value.clone()),
            Secret::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("failed to read secret file {}", path.display()))?;
                Ok(text.trim_end_matches(['\n', '\r']).to_owned())
            }
            Secret::Env(name) => std::env::var(name).map_err(|error| match error {
                std::env::VarError::NotPresent => {
                    anyhow::anyhow!("environment variable {name} is not set")
                }
                std::env::VarError::NotUnicode(_) => {
                    anyhow::anyhow!("environment variable {name} is not valid UTF-8")
                }
            }),
        }
    }

    /// Where the secret comes from, for messages: `inline value`, `file PATH`,
    /// `environment variable NAME`.
    #[must_use]
    pub fn origin(&self) -> String {
        match self {
            Secret::Inline(_) => "inline value".to_owned(),
            Secret::File(path) => format!("file {}", path.display()),
            Secret::Env(name) => format!("environment variable {name}"),
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str(&format!("{REDACTED:?}")),
            Secret::File(path) => write!(f, "{{file = {:?}}}", path.display().to_string()),
            Secret::Env(name) => write!(f, "{{env = {name:?}}}"),
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Secret::Inline(_) => serializer.serialize_str(REDACTED),
            Secret::File(path) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("file", path)?;
                map.end()
            }
            Secret::Env(name) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("env", name)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = Secret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"a string, { file = "path" } or { env = "VARIABLE" }"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Secret, E> {
        Ok(Secret::Inline(value))
    }

    // Environment variables holding only digits reach here as numbers; a secret is text.
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_string()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Secret, E> {
        Ok(Secret::Inline(value.to_string()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Secret, A::Error> {
        let mut found: Option<Secret> = None;
        while let Some(key) = map.next_key::<String>()? {
            let secret = match key.as_str() {
                "file" => Secret::File(map.next_value()?),
                "env" => Secret::Env(map.next_value()?),
                other => return Err(de::Error::unknown_field(other, &["file", "env"])),
            };
            if found.is_some() {
                return Err(de::Error::custom(
                    "a secret takes exactly one of `file` and `env`",
                ));
            }
            found = Some(secret);
        }
        found.ok_or_else(|| de::Error::custom("a secret needs `file` or `env`"))
    }
}

// ----- loading -----

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The named configuration file does not exist.
    #[error("configuration file {} not found", .0.display())]
    FileNotFound(PathBuf),
    /// A value is malformed, unknown or refused; `origin` is the file or environment variable
    /// it came from, `key` its dotted path.
    #[error("{origin}: {key}: {detail}")]
    Invalid {
        origin: String,
        key: String,
        detail: String,
    },
    /// A source could not be read at all, such as a file with a TOML syntax error.
    #[error("{origin}: {detail}")]
    Unreadable { origin: String, detail: String },
}

impl Config {
    /// Loads the configuration: defaults, then the file (`path`, else `$CLARION_CONFIG`, else
    /// `./clarion.toml` if it exists), then `CLARION_*` environment variables; then validates
    /// it.
    ///
    /// # Errors
    /// [`ConfigError::FileNotFound`] when the named file is missing, and
    /// [`ConfigError::Invalid`] naming the source and key of the first bad value, and
    /// [`ConfigError::Unreadable`] for a file that is not TOML.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match path {
            Some(path) => Some(path.to_path_buf()),
            None => match std::env::var_os(CONFIG_ENV) {
                Some(named) if !named.is_empty() => Some(PathBuf::from(named)),
                _ => {
                    let default = PathBuf::from(DEFAULT_FILE);
                    default.is_file().then_some(default)
                }
            },
        };
        let mut figment = Figment::new();
        if let Some(file) = &file {
            if !file.is_file() {
                return Err(ConfigError::FileNotFound(file.clone()));
            }
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(env_provider());
        let mut config: Config = figment.extract().map_err(|error| from_figment(&error))?;
        config.file = file;
        config.add_default_app();
        config.validate_with(&figment)?;
        Ok(config)
    }

    fn add_default_app(&mut self) {
        if self.apps.is_empty() {
            self.apps.insert(
                DEFAULT_APP.to_owned(),
                AppConfig {
                    sender: SenderKind::Debug,
                    ..AppConfig::default()
                },
            );
        }
    }

    /// Checks the values serde cannot: application ids, retry policies, the listen address,
    /// the database scheme, worker numbers and sender sections.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(&Figment::new())
    }

    fn validate_with(&self, figment: &Figment) -> Result<(), ConfigError> {
        let invalid = |key: &str, detail: String| ConfigError::Invalid {
            origin: origin_of(figment, key, self.file.as_deref()),
            key: key.to_owned(),
            detail,
        };
        self.listen.parse::<SocketAddr>().map_err(|error| {
            invalid(
                "listen",
                format!("{error}: expected an address such as 127.0.0.1:8080"),
            )
        })?;
        self.database
            .kind()
            .map_err(|detail| invalid("database.url", detail))?;
        if self.database.max_connections == Some(0) {
            return Err(invalid(
                "database.max_connections",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.poll_interval_secs == 0 {
            return Err(invalid(
                "worker.poll_interval_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.batch_size == 0 {
            return Err(invalid(
                "worker.batch_size",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.message_concurrency == 0 {
            return Err(invalid(
                "worker.message_concurrency",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.app_concurrency == Some(0) {
            return Err(invalid(
                "worker.app_concurrency",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.delivery_concurrency == 0 {
            return Err(invalid(
                "worker.delivery_concurrency",
                "must be at least 1".to_owned(),
            ));
        }
        if self.worker.lease_secs == 0 {
            return Err(invalid(
                "worker.lease_secs",
                "must be at least 1".to_owned(),
            ));
        }
        if self.http.body_limit_bytes == 0 {
            return Err(invalid(
                "http.body_limit_bytes",
                "must be at least 1".to_owned(),
            ));
        }
        if self.http.bulk_body_limit_bytes == 0 {
            return Err(invalid(
                "http.bulk_body_limit_bytes",
                "must be at least 1".to_owned(),
            ));
        }
        for (key, value) in [
            ("http.send_wait_secs", self.http.send_wait_secs),
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("http.idle_timeout_secs", self.http.idle_timeout_secs),
            (
                "http.body_read_timeout_secs",
                self.http.body_read_timeout_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        if self.http.max_connections == 0 {
            return Err(invalid(
                "http.max_connections",
                "must be at least 1".to_owned(),
            ));
        }
        if self.http.max_header_bytes < MIN_HEADER_BYTES {
            return Err(invalid(
                "http.max_header_bytes",
                format!("must be at least {MIN_HEADER_BYTES}"),
            ));
        }
        self.validate_templates(&invalid)?;
        for (id, app) in &self.apps {
            let key = format!("apps.{id}");
            AppId::parse(id)
                .map_err(|error| invalid(&key, format!("invalid application id: {error}")))?;
            app.retry
                .validate()
                .map_err(|error| invalid(&format!("{key}.retry"), error.to_string()))?;
            if app.client_token_max_lifetime_secs == 0 {
                return Err(invalid(
                    &format!("{key}.client_token_max_lifetime_secs"),
                    "must be at least 1".to_owned(),
                ));
            }
            if app.sender == SenderKind::Onesignal && app.onesignal.is_none() {
                return Err(invalid(
                    &format!("{key}.sender"),
                    "sender \"onesignal\" needs an [apps.<id>.onesignal] section".to_owned(),
                ));
            }
        }
        Ok(())
    }

    fn validate_templates(
        &self,
        invalid: &impl Fn(&str, String) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let templates = &self.templates;
        let at_least_one = [
            (
                "templates.max_source_bytes",
                templates.max_source_bytes == 0,
            ),
            (
                "templates.max_output_bytes",
                templates.max_output_bytes == 0,
            ),
            ("templates.fuel", templates.fuel == 0),
            (
                "templates.render_timeout_ms",
                templates.render_timeout_ms == 0,
            ),
            ("templates.render_workers", templates.render_workers == 0),
        ];
        for (key, zero) in at_least_one {
            if zero {
                return Err(invalid(key, "must be at least 1".to_owned()));
            }
        }
        if !(1..=MAX_TEMPLATE_NESTING).contains(&templates.max_nesting) {
            return Err(invalid(
                "templates.max_nesting",
                format!("must be between 1 and {MAX_TEMPLATE_NESTING}"),
            ));
        }
        if templates.render_memory_mb < MIN_RENDER_MEMORY_MB {
            return Err(invalid(
                "templates.render_memory_mb",
                format!("must be at least {MIN_RENDER_MEMORY_MB}"),
            ));
        }
        Ok(())
    }

    /// The applications as the domain sees them. With `debug = true` every sender is
    /// `debug`. Applications whose id does not parse are left out ([`Config::load`] refuses
    /// them).
    #[must_use]
    pub fn applications(&self) -> Applications {
        Applications::new(self.apps.iter().filter_map(|(id, app)| {
            let id = AppId::parse(id).ok()?;
            let sender = if self.debug {
                SenderKind::Debug
            } else {
                app.sender
            };
            let endpoint_policy = match &app.webpush {
                Some(webpush) if webpush.allow_private_endpoints => EndpointPolicy::AllowPrivate,
                _ => EndpointPolicy::PublicOnly,
            };
            Some(Application {
                id,
                sender,
                endpoint_policy,
                retry: app.retry,
                apns: app.apns.as_ref().map(|apns| ApnsSettings {
                    topic: apns.topic.clone(),
                }),
                onesignal: app.onesignal.as_ref().map(|onesignal| OneSignalSettings {
                    app_id: onesignal.app_id.clone(),
                    language: onesignal.language.clone(),
                }),
            })
        }))
    }

    /// The configuration as TOML, with every secret and the database password redacted.
    #[must_use]
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = self.database.redacted_url();
        match toml::to_string_pretty(&shown) {
            Ok(text) => text,
            // Every type here serialises to TOML; say so rather than panic if one stops.
            Err(error) => format!("# the configuration cannot be shown as TOML: {error}\n"),
        }
    }

    /// Checks the database (a PostgreSQL server is connected to; nothing is migrated), that
    /// every secret and extra CA certificate can be read, and that service-account files look
    /// like one. No detail holds a secret's value or the database password.
    pub async fn check(&self) -> Vec<CheckItem> {
        let mut items = Vec::new();
        items.push(CheckItem {
            subject: "config file".to_owned(),
            ok: true,
            detail: match &self.file {
                Some(file) => format!("read {}", file.display()),
                None => "none: defaults and environment variables".to_owned(),
            },
        });
        items.push(self.check_database().await);
        for (id, app) in &self.apps {
            items.push(self.check_sender(id, app));
            for (subject, secret) in app.secrets(id) {
                items.push(check_secret(subject, secret));
            }
            items.extend(crate::providers::check_credentials(id, app));
        }
        for (index, path) in self.tls.extra_ca_certs.iter().enumerate() {
            let subject = format!("tls.extra_ca_certs[{index}]");
            items.push(match crate::providers::http::read_roots(path) {
                Ok(certs) => CheckItem::ok(
                    subject,
                    format!("{} holds {} certificate(s)", path.display(), certs.len()),
                ),
                Err(error) => CheckItem::failed(subject, format!("{error:#}")),
            });
        }
        items
    }

    async fn check_database(&self) -> CheckItem {
        let subject = "database.url".to_owned();
        let shown = self.database.redacted_url();
        match self.database.kind() {
            Ok(DatabaseKind::Sqlite) => CheckItem::ok(subject, format!("SQLite at {shown}")),
            Ok(DatabaseKind::Postgres) => match crate::postgres::probe(&self.database.url).await {
                Ok(()) => CheckItem::ok(subject, format!("PostgreSQL at {shown} answers")),
                Err(error) => CheckItem::failed(
                    subject,
                    without_password(&format!("{error:#}"), &self.database.url),
                ),
            },
            Err(detail) => CheckItem::failed(subject, detail),
        }
    }

    fn check_sender(&self, id: &str, app: &AppConfig) -> CheckItem {
        let subject = format!("apps.{id}");
        if self.debug {
            return CheckItem::ok(subject, "sender debug (debug = true)".to_owned());
        }
        match app.sender {
            SenderKind::Debug => CheckItem::ok(subject, "sender debug".to_owned()),
            SenderKind::Onesignal if app.onesignal.is_some() => {
                CheckItem::ok(subject, "sender onesignal".to_owned())
            }
            SenderKind::Onesignal => CheckItem::failed(
                subject,
                "sender onesignal without an onesignal section".to_owned(),
            ),
            SenderKind::Direct => {
                let providers: Vec<&str> = [
                    app.apns.as_ref().map(|_| "apns"),
                    app.fcm.as_ref().map(|_| "fcm"),
                    app.webpush.as_ref().map(|_| "webpush"),
                ]
                .into_iter()
                .flatten()
                .collect();
                if providers.is_empty() {
                    CheckItem::failed(
                        subject,
                        "sender direct but no apns, fcm or webpush section".to_owned(),
                    )
                } else {
                    CheckItem::ok(
                        subject,
                        format!("sender direct via {}", providers.join(", ")),
                    )
                }
            }
        }
    }
}

impl AppConfig {
    /// Every secret of this application with its dotted key.
    fn secrets(&self, id: &str) -> Vec<(String, &Secret)> {
        let apns = self.apns.as_ref();
        let candidates: [(&str, Option<&Secret>); 7] = [
            ("apns.key", apns.and_then(|apns| apns.key.as_ref())),
            (
                "apns.certificate",
                apns.and_then(|apns| apns.certificate.as_ref()),
            ),
            (
                "apns.certificate_key",
                apns.and_then(|apns| apns.certificate_key.as_ref()),
            ),
            (
                "fcm.service_account",
                self.fcm.as_ref().map(|fcm| &fcm.service_account),
            ),
            (
                "webpush.vapid_private_key",
                self.webpush
                    .as_ref()
                    .map(|webpush| &webpush.vapid_private_key),
            ),
            (
                "onesignal.api_key",
                self.onesignal.as_ref().map(|onesignal| &onesignal.api_key),
            ),
            ("client_token_secret", self.client_token_secret.as_ref()),
        ];
        candidates
            .into_iter()
            .filter_map(|(key, secret)| Some((format!("apps.{id}.{key}"), secret?)))
            .collect()
    }
}

/// One line of `clarion config check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// The key or thing checked, such as `apps.shop.fcm.service_account`.
    pub subject: String,
    pub ok: bool,
    /// What was found; never a secret's value.
    pub detail: String,
}

impl CheckItem {
    pub(crate) fn ok(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: true,
            detail,
        }
    }

    pub(crate) fn failed(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: false,
            detail,
        }
    }
}

fn check_secret(subject: String, secret: &Secret) -> CheckItem {
    match secret.expose() {
        Ok(value) if value.trim().is_empty() => {
            CheckItem::failed(subject, format!("{} is empty", secret.origin()))
        }
        Ok(_) => CheckItem::ok(subject, format!("{} is readable", secret.origin())),
        Err(error) => CheckItem::failed(subject, format!("{error:#}")),
    }
}

/// The environment provider: the explicit top-level variables, and `__` as the nesting
/// separator for the rest.
fn env_provider() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter_map(|key: &UncasedStr| env_key(key.as_str()).map(Uncased::from))
}

/// The configuration key of an environment variable without its prefix, if it is one.
fn env_key(raw: &str) -> Option<String> {
    let key = raw.to_ascii_lowercase();
    match key.as_str() {
        "listen" | "debug" => Some(key),
        "database_url" => Some("database.url".to_owned()),
        _ if key.contains("__") => Some(key.replace("__", ".")),
        _ => None,
    }
}

/// The environment variable that sets `key`.
fn env_name(key: &str) -> String {
    if key == "database.url" {
        return "CLARION_DATABASE_URL".to_owned();
    }
    format!(
        "{ENV_PREFIX}{}",
        key.replace('.', "__").to_ascii_uppercase()
    )
}

/// Where the value of `key` came from: the environment variable, the file, or the defaults.
fn origin_of(figment: &Figment, key: &str, file: Option<&Path>) -> String {
    let metadata = figment.find_metadata(key);
    describe_origin(metadata, key, file)
}

fn describe_origin(metadata: Option<&figment::Metadata>, key: &str, file: Option<&Path>) -> String {
    if let Some(metadata) = metadata {
        if let Some(figment::Source::File(path)) = &metadata.source {
            return path.display().to_string();
        }
        if metadata.name.contains("environment") {
            return format!("environment variable {}", env_name(key));
        }
    }
    match file {
        Some(file) => file.display().to_string(),
        None => "configuration".to_owned(),
    }
}

/// The first figment error as a [`ConfigError::Invalid`] naming its source and key.
fn from_figment(error: &figment::Error) -> ConfigError {
    use figment::error::Kind;

    let mut path = error.path.clone();
    let detail = match &error.kind {
        // Figment's path already ends with an unknown field, but not with a missing one.
        Kind::UnknownField(field, expected) => {
            if expected.is_empty() {
                format!("unknown key {field:?}")
            } else {
                format!(
                    "unknown key {field:?}; expected one of {}",
                    expected.join(", ")
                )
            }
        }
        Kind::MissingField(field) => {
            path.push(field.to_string());
            format!("missing key {field:?}")
        }
        // A file's syntax error quotes the offending line, which may hold a secret: keep the
        // position and the message only.
        Kind::Message(message) => strip_snippets(message),
        other => other.to_string(),
    };
    let key = path.join(".");
    let origin = describe_origin(error.metadata.as_ref(), &key, None);
    if key.is_empty() {
        return ConfigError::Unreadable { origin, detail };
    }
    ConfigError::Invalid {
        origin,
        key,
        detail,
    }
}

/// Drops the source lines that TOML parse errors quote (`12 | key = "..."`).
fn strip_snippets(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with('|')
                && !line
                    .split_once('|')
                    .is_some_and(|(before, _)| before.trim().chars().all(|c| c.is_ascii_digit()))
        })
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use figment::Jail;

    use super::*;

    /// Runs a future to completion on a runtime of its own (the jailed tests are synchronous).
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Runs `test` in a jail (its own working folder and environment), turning our errors
    /// into figment's so that `?` works.
    // The size of figment's error is figment's choice; `Jail` requires it.
    #[allow(clippy::result_large_err)]
    fn jailed(test: impl FnOnce(&mut Jail) -> Result<(), String>) {
        Jail::expect_with(|jail| test(jail).map_err(figment::Error::from));
    }

    fn load(path: Option<&Path>) -> Result<Config, String> {
        Config::load(path).map_err(|error| error.to_string())
    }

    #[test]
    fn with_no_file_there_is_one_debug_application_on_a_local_sqlite_file() {
        jailed(|_| {
            let config = load(None)?;

            assert_eq!(config, Config::default());
            assert_eq!(config.listen, "127.0.0.1:8080");
            assert_eq!(config.database.url, "sqlite://clarion.db");
            assert_eq!(config.worker, WorkerConfig::default());
            assert_eq!(config.file, None);
            let apps: Vec<(String, SenderKind)> = config
                .applications()
                .iter()
                .map(|app| (app.id.to_string(), app.sender))
                .collect();
            assert_eq!(apps, [("default".to_owned(), SenderKind::Debug)]);
            Ok(())
        });
    }

    #[test]
    fn a_toml_file_sets_every_section() {
        jailed(|jail| {
            jail.create_file(
                "clarion.toml",
                r#"
                listen = "0.0.0.0:9000"
                [database]
                url = "sqlite:///var/lib/clarion/clarion.db"
                [worker]
                enabled = false
                poll_interval_secs = 2
                batch_size = 10
                lease_secs = 30
                [tls]
                extra_ca_certs = ["ca.pem"]
                [apps.shop]
                sender = "direct"
                retry = { max_attempts = 2, base_delay = 10 }
                [apps.shop.apns]
                team_id = "TEAM123456"
                key_id = "KEY1234567"
                key = { file = "apns.p8" }
                topic = "com.example.shop"
                environment = "sandbox"
                [apps.shop.webpush]
                vapid_private_key = { env = "SHOP_VAPID" }
                subject = "mailto:ops@example.com"
                allow_private_endpoints = true
                [apps.news]
                sender = "onesignal"
                [apps.news.onesignal]
                app_id = "b2f7f966-d8cc-11e4-bed1-df8f05be55ba"
                api_key = "inline-api-key"
                "#,
            )
            .map_err(|e| e.to_string())?;

            let config = load(None)?;

            assert_eq!(config.file, Some(PathBuf::from("clarion.toml")));
            assert_eq!(config.listen, "0.0.0.0:9000");
            assert!(!config.worker.enabled);
            assert_eq!(config.worker.batch_size, 10);
            assert_eq!(config.tls.extra_ca_certs, [PathBuf::from("ca.pem")]);
            let shop = &config.apps["shop"];
            assert_eq!(shop.retry.max_attempts, 2);
            let apns = shop.apns.as_ref().unwrap();
            assert_eq!(apns.environment, ApnsEnvironment::Sandbox);
            assert_eq!(apns.key, Some(Secret::File("apns.p8".into())));
            let news = &config.apps["news"];
            assert_eq!(news.onesignal.as_ref().unwrap().language, "en");
            let apps = config.applications();
            let shop = apps.get("shop").unwrap();
            assert_eq!(shop.endpoint_policy, EndpointPolicy::AllowPrivate);
            assert_eq!(shop.apns.as_ref().unwrap().topic, "com.example.shop");
            let news = apps.get("news").unwrap();
            assert_eq!(news.sender, SenderKind::Onesignal);
            assert_eq!(news.onesignal.as_ref().unwrap().language, "en");
            assert!(apps.get("default").is_err());
            Ok(())
        });
    }

    #[test]
    fn environment_variables_override_the_file() {
        jailed(|jail| {
            jail.create_file(
                "custom.toml",
                "listen = \"127.0.0.1:1\"\n[apps.shop]\nsender = \"direct\"\n",
            )
            .map_err(|e| e.to_string())?;
            jail.set_env("CLARION_CONFIG", "custom.toml");
            jail.set_env("CLARION_LISTEN", "127.0.0.1:2");
            jail.set_env("CLARION_DEBUG", "true");
            jail.set_env("CLARION_WORKER__POLL_INTERVAL_SECS", "7");
            jail.set_env("CLARION_APPS__SHOP__SENDER", "debug");
            jail.set_env("CLARION_APPS__SHOP__RETRY__MAX_ATTEMPTS", "9");
            // Not configuration keys: the CLI's own variables must not be refused.
            jail.set_env("CLARION_API_KEY", "not-a-config-key");

            let config = load(None)?;

            assert_eq!(config.file, Some(PathBuf::from("custom.toml")));
            assert_eq!(config.listen, "127.0.0.1:2");
            assert!(config.debug);
            assert_eq!(config.worker.poll_interval_secs, 7);
            assert_eq!(config.apps["shop"].sender, SenderKind::Debug);
            assert_eq!(config.apps["shop"].retry.max_attempts, 9);
            Ok(())
        });
    }

    #[test]
    fn clarion_database_url_sets_the_database_url() {
        jailed(|jail| {
            jail.set_env("CLARION_DATABASE_URL", "sqlite:///tmp/other.db");

            let config = load(None)?;

            assert_eq!(config.database.url, "sqlite:///tmp/other.db");
            Ok(())
        });
    }

    #[test]
    fn a_named_file_that_does_not_exist_is_an_error() {
        jailed(|_| {
            let error = load(Some(Path::new("missing.toml"))).unwrap_err();

            assert_eq!(error, "configuration file missing.toml not found");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_the_file_and_the_key() {
        jailed(|jail| {
            jail.create_file("clarion.toml", "[worker]\npoll_interval = 3\n")
                .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert!(error.contains("clarion.toml"), "{error}");
            assert!(error.contains("worker.poll_interval"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn an_unknown_environment_key_names_the_variable() {
        jailed(|jail| {
            jail.set_env("CLARION_WORKER__SPEED", "3");

            let error = load(None).unwrap_err();

            assert!(error.contains("worker.speed"), "{error}");
            assert!(error.contains("environment variable"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn invalid_values_are_refused_by_key() {
        let cases = [
            ("listen = \"localhost\"\n", "listen"),
            ("[database]\nurl = \"mysql://db\"\n", "database.url"),
            (
                "[worker]\npoll_interval_secs = 0\n",
                "worker.poll_interval_secs",
            ),
            ("[apps.Shop]\nsender = \"debug\"\n", "apps.Shop"),
            (
                "[http]\nheader_read_timeout_secs = 0\n",
                "http.header_read_timeout_secs",
            ),
            ("[http]\nmax_connections = 0\n", "http.max_connections"),
            ("[http]\nmax_header_bytes = 10\n", "http.max_header_bytes"),
            (
                "[apps.shop.retry]\nmax_attempts = 0\n",
                "retry.max_attempts must be at least 1",
            ),
            ("[apps.shop]\nsender = \"onesignal\"\n", "apps.shop.sender"),
            (
                "[apps.shop]\nsender = \"carrier-pigeon\"\n",
                "apps.shop.sender",
            ),
            (
                "[apps.shop.apns]\nteam_id = \"T\"\n",
                "apps.shop.apns.topic",
            ),
        ];
        for (file, expected) in cases {
            jailed(|jail| {
                jail.create_file("clarion.toml", file)
                    .map_err(|e| e.to_string())?;

                let error = load(None).unwrap_err();

                assert!(error.contains(expected), "{file}: {error}");
                assert!(error.contains("clarion.toml"), "{file}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn template_limits_out_of_range_are_refused_by_key() {
        let cases = [
            ("[templates]\nmax_nesting = 0\n", "templates.max_nesting"),
            ("[templates]\nmax_nesting = 501\n", "templates.max_nesting"),
            (
                "[templates]\nmax_source_bytes = 0\n",
                "templates.max_source_bytes",
            ),
            (
                "[templates]\nmax_output_bytes = 0\n",
                "templates.max_output_bytes",
            ),
            ("[templates]\nfuel = 0\n", "templates.fuel"),
            (
                "[templates]\nrender_timeout_ms = 0\n",
                "templates.render_timeout_ms",
            ),
            (
                "[templates]\nrender_workers = 0\n",
                "templates.render_workers",
            ),
            (
                "[templates]\nrender_memory_mb = 16\n",
                "templates.render_memory_mb",
            ),
            ("[templates]\nisolation = \"fork\"\n", "templates.isolation"),
        ];
        for (file, expected) in cases {
            jailed(|jail| {
                jail.create_file("clarion.toml", file)
                    .map_err(|e| e.to_string())?;

                let error = load(None).unwrap_err();

                assert!(error.contains(expected), "{file}: {error}");
                Ok(())
            });
        }
    }

    #[test]
    fn template_limits_default_to_the_documented_values_and_follow_the_environment() {
        jailed(|jail| {
            jail.set_env("CLARION_TEMPLATES__MAX_NESTING", "40");
            jail.set_env("CLARION_TEMPLATES__ISOLATION", "thread");

            let config = load(None)?;

            assert_eq!(
                config.templates,
                TemplatesConfig {
                    max_nesting: 40,
                    isolation: TemplateIsolation::Thread,
                    ..TemplatesConfig::default()
                }
            );
            assert_eq!(
                TemplatesConfig::default(),
                TemplatesConfig {
                    max_source_bytes: 65_536,
                    max_nesting: 64,
                    max_output_bytes: 65_536,
                    fuel: 50_000,
                    render_timeout_ms: 1000,
                    render_memory_mb: 256,
                    render_workers: 2,
                    isolation: TemplateIsolation::Process,
                }
            );
            Ok(())
        });
    }

    #[test]
    fn a_syntax_error_does_not_quote_the_line() {
        jailed(|jail| {
            jail.create_file(
                "clarion.toml",
                "[apps.shop.onesignal]\napi_key = \"top-secret-key\" oops\n",
            )
            .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert!(error.contains("line 2"), "{error}");
            assert!(!error.contains("top-secret-key"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn debug_true_turns_every_sender_into_debug() {
        jailed(|jail| {
            jail.create_file(
                "clarion.toml",
                r#"
                debug = true
                [apps.shop]
                sender = "direct"
                [apps.news]
                sender = "onesignal"
                onesignal = { app_id = "x", api_key = "k" }
                "#,
            )
            .map_err(|e| e.to_string())?;

            let config = load(None)?;

            let senders: Vec<SenderKind> =
                config.applications().iter().map(|app| app.sender).collect();
            assert_eq!(senders, [SenderKind::Debug, SenderKind::Debug]);
            Ok(())
        });
    }

    #[test]
    fn secrets_come_inline_from_a_file_or_from_the_environment() {
        jailed(|jail| {
            jail.create_file("key.txt", "from-file\n")
                .map_err(|e| e.to_string())?;
            jail.set_env("SHOP_KEY", "from-env");

            let inline = Secret::Inline("inline".to_owned());
            let file = Secret::File("key.txt".into());
            let env = Secret::Env("SHOP_KEY".to_owned());

            assert_eq!(inline.expose().unwrap(), "inline");
            assert_eq!(file.expose().unwrap(), "from-file");
            assert_eq!(env.expose().unwrap(), "from-env");
            let missing = Secret::Env("CLARION_TEST_UNSET".to_owned())
                .expose()
                .unwrap_err()
                .to_string();
            assert_eq!(
                missing,
                "environment variable CLARION_TEST_UNSET is not set"
            );
            Ok(())
        });
    }

    #[test]
    fn a_secret_takes_exactly_one_source() {
        jailed(|jail| {
            jail.create_file(
                "clarion.toml",
                "[apps.shop]\nclient_token_secret = { file = \"a\", env = \"B\" }\n",
            )
            .map_err(|e| e.to_string())?;

            let error = load(None).unwrap_err();

            assert!(error.contains("exactly one"), "{error}");
            assert!(error.contains("apps.shop.client_token_secret"), "{error}");
            Ok(())
        });
    }

    fn config_with_secrets() -> Config {
        let mut config = Config::default();
        // Port 1 refuses connections at once, so `check` fails fast and offline.
        config.database.url =
            "postgres://clarion:db-password@127.0.0.1:1/clarion?sslpassword=query-password"
                .to_owned();
        config.apps.insert(
            "shop".to_owned(),
            AppConfig {
                onesignal: Some(OneSignalConfig {
                    app_id: "app".to_owned(),
                    api_key: Secret::Inline("inline-api-key".to_owned()),
                    language: "en".to_owned(),
                    endpoint: None,
                    timeout_secs: None,
                }),
                fcm: Some(FcmConfig {
                    service_account: Secret::File("sa.json".into()),
                    endpoint: None,
                    timeout_secs: Some(5),
                    connections: None,
                    max_in_flight: None,
                }),
                client_token_secret: Some(Secret::Env("SHOP_JWT".to_owned())),
                ..AppConfig::default()
            },
        );
        config
    }

    #[test]
    fn secrets_are_never_printed_by_debug_or_redacted_toml() {
        let config = config_with_secrets();

        let debug = format!("{config:?}");
        let toml = config.redacted_toml();

        for shown in [&debug, &toml] {
            assert!(!shown.contains("inline-api-key"), "{shown}");
            assert!(!shown.contains("db-password"), "{shown}");
            assert!(!shown.contains("query-password"), "{shown}");
            assert!(shown.contains("[redacted]"), "{shown}");
            assert!(shown.contains("sa.json"), "{shown}");
            assert!(shown.contains("SHOP_JWT"), "{shown}");
        }
    }

    #[test]
    fn redacted_toml_reads_back_as_the_same_configuration_but_for_secrets() {
        let config = Config::default();

        let toml = config.redacted_toml();
        let back: Config = toml::from_str(&toml).unwrap();

        assert_eq!(back, config, "{toml}");
    }

    #[test]
    fn check_reports_each_secret_without_its_value() {
        jailed(|jail| {
            jail.create_file(
                "sa.json",
                r#"{"project_id": "p", "client_email": "e@p.iam.gserviceaccount.com", "private_key": "pk-secret"}"#,
            )
            .map_err(|e| e.to_string())?;
            let mut config = config_with_secrets();
            config.tls.extra_ca_certs = vec!["missing-ca.pem".into()];

            let items = block_on(config.check());

            let find = |subject: &str| {
                items
                    .iter()
                    .find(|item| item.subject == subject)
                    .unwrap_or_else(|| panic!("no {subject} in {items:?}"))
                    .clone()
            };
            let database = find("database.url");
            assert!(!database.ok);
            assert!(
                database.detail.contains("127.0.0.1:1")
                    && !database.detail.contains("db-password")
                    && !database.detail.contains("query-password"),
                "{database:?}"
            );
            assert!(find("apps.shop.onesignal.api_key").ok);
            assert!(find("apps.shop.fcm.service_account").ok);
            let credentials = find("apps.shop.fcm (credentials)");
            assert!(!credentials.ok);
            assert!(
                credentials
                    .detail
                    .contains("private_key is not an RSA private key"),
                "{credentials:?}"
            );
            let jwt = find("apps.shop.client_token_secret");
            assert!(!jwt.ok);
            assert!(jwt.detail.contains("SHOP_JWT"));
            assert!(!find("tls.extra_ca_certs[0]").ok);
            let all = format!("{items:?}");
            assert!(
                !all.contains("inline-api-key") && !all.contains("pk-secret"),
                "{all}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_database_url_selects_the_engine_and_a_plain_path_is_sqlite() {
        for (url, kind) in [
            ("sqlite://clarion.db", Some(DatabaseKind::Sqlite)),
            ("sqlite::memory:", Some(DatabaseKind::Sqlite)),
            ("/var/lib/clarion/clarion.db", Some(DatabaseKind::Sqlite)),
            ("data/clarion.db", Some(DatabaseKind::Sqlite)),
            (
                "postgres://clarion@db/clarion",
                Some(DatabaseKind::Postgres),
            ),
            (
                "postgresql://clarion@db/clarion",
                Some(DatabaseKind::Postgres),
            ),
            ("mysql://clarion@db/clarion", None),
            ("", None),
        ] {
            let config = DatabaseConfig {
                url: url.to_owned(),
                ..DatabaseConfig::default()
            };
            assert_eq!(config.kind().ok(), kind, "{url}");
        }
    }

    #[test]
    fn check_refuses_a_service_account_without_its_fields() {
        jailed(|jail| {
            jail.create_file("sa.json", r#"{"type": "service_account"}"#)
                .map_err(|e| e.to_string())?;

            let items = block_on(config_with_secrets().check());

            let content = items
                .iter()
                .find(|item| item.subject == "apps.shop.fcm (credentials)")
                .unwrap();
            assert!(!content.ok);
            assert!(content.detail.contains("project_id"), "{content:?}");
            Ok(())
        });
    }

    #[test]
    fn a_password_in_a_database_url_is_redacted() {
        assert_eq!(
            redact_url("postgres://clarion:p@ss/word@db:5432/clarion"),
            "postgres://clarion:[redacted]@db:5432/clarion"
        );
        assert_eq!(redact_url("sqlite://clarion.db"), "sqlite://clarion.db");
        assert_eq!(
            redact_url("postgres://clarion@db/x"),
            "postgres://clarion@db/x"
        );
    }

    #[test]
    fn apns_concurrency_is_still_read_as_max_in_flight() {
        let old: ApnsConfig = toml::from_str("topic = \"t\"\nconcurrency = 7").unwrap();
        let new: ApnsConfig =
            toml::from_str("topic = \"t\"\nconnections = 2\nmax_in_flight = 9").unwrap();

        assert_eq!(old.max_in_flight, Some(7));
        assert_eq!((new.connections, new.max_in_flight), (Some(2), Some(9)));
    }
}
