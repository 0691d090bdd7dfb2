//! The processes under measurement: the mocks process, the database, and `clarion-server`
//! started with a configuration written for the run.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Connection as _;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

use crate::{Db, Platform, poll, proc_status_mb};

/// The `clarion-mocks` process and what it wrote about itself.
pub struct Mocks {
    child: Child,
    pub description: MocksDescription,
    pub ca_file: PathBuf,
    pub apns_key_file: PathBuf,
    pub fcm_account_file: PathBuf,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct MocksDescription {
    pub ca_pem: String,
    pub stats_url: String,
    pub control_url: String,
    pub apns: ApnsMock,
    pub fcm: FcmMock,
    pub webpush: WebPushMock,
}

#[derive(Debug, Deserialize)]
pub struct ApnsMock {
    pub url: String,
    pub team_id: String,
    pub key_id: String,
    pub topic: String,
    pub key_pem: String,
}

#[derive(Debug, Deserialize)]
pub struct FcmMock {
    pub url: String,
    pub token_uri: String,
    pub project_id: String,
    pub client_email: String,
    pub private_key_id: String,
    pub private_key_pem: String,
    pub service_account_json: String,
}

#[derive(Debug, Deserialize)]
pub struct WebPushMock {
    /// One per push service, `https://127.0.0.1:<port>`.
    pub origins: Vec<String>,
    pub vapid_private_key_pem: String,
    pub vapid_private_key_b64url: String,
    pub vapid_public_key_b64url: String,
    /// Round the origins: subscription `n` belongs to origin `n % origins`.
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Deserialize)]
pub struct Subscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// A mock's request counts.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub faulty: u64,
}

/// How `clarion-mocks` is started.
#[derive(Debug, Clone, Copy)]
pub struct MocksOptions {
    /// Web Push subscriptions to make, spread round the origins.
    pub subscriptions: usize,
    pub webpush_origins: usize,
    /// The stream limit the mocks advertise.
    pub streams: u32,
}

impl Mocks {
    pub async fn start(bin_dir: &Path, work: &Path, options: MocksOptions) -> anyhow::Result<Self> {
        let out = work.join("mocks.json");
        let child = Command::new(bin_dir.join("clarion-mocks"))
            .arg("--out")
            .arg(&out)
            .arg("--subscriptions")
            .arg(options.subscriptions.to_string())
            .arg("--webpush-origins")
            .arg(options.webpush_origins.to_string())
            .arg("--streams")
            .arg(options.streams.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start clarion-mocks")?;
        let text = poll(
            "clarion-mocks to describe itself",
            Duration::from_secs(120),
            Duration::from_millis(20),
            || async { Ok(std::fs::read_to_string(&out).ok()) },
        )
        .await?;
        let description: MocksDescription =
            serde_json::from_str(&text).context("clarion-mocks wrote an unreadable file")?;
        let ca_file = work.join("mocks-ca.pem");
        std::fs::write(&ca_file, &description.ca_pem).context("failed to write the CA")?;
        let apns_key_file = work.join("apns.p8");
        std::fs::write(&apns_key_file, &description.apns.key_pem)
            .context("failed to write the APNs key")?;
        let fcm_account_file = work.join("fcm-service-account.json");
        std::fs::write(&fcm_account_file, &description.fcm.service_account_json)
            .context("failed to write the FCM service account")?;
        Ok(Self {
            child,
            description,
            ca_file,
            apns_key_file,
            fcm_account_file,
            http: reqwest::Client::new(),
        })
    }

    /// One platform's counts.
    pub async fn counts(&self, platform: Platform) -> anyhow::Result<Counts> {
        let stats: Value = self
            .http
            .get(&self.description.stats_url)
            .send()
            .await
            .context("failed to read the mocks' counts")?
            .json()
            .await
            .context("the mocks' counts are not JSON")?;
        serde_json::from_value(stats[platform.as_str()].clone())
            .with_context(|| format!("the mocks' counts have no {}: {stats}", platform.as_str()))
    }

    /// Sets every mock's answer delay for the requests that arrive from now on.
    pub async fn set_delay(&self, delay_ms: u64, jitter_ms: u64) -> anyhow::Result<()> {
        let url = format!(
            "{}/delay?ms={delay_ms}&jitter_ms={jitter_ms}",
            self.description.control_url
        );
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .context("failed to set the mocks' delay")?;
        if !reply.status().is_success() {
            bail!(
                "the mocks refused the delay: {}",
                reply.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Which names the server's configuration gives the provider pool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKeys {
    /// `connections` and `max_in_flight` in each provider's section (issue 13).
    ConnectionsAndMaxInFlight,
    /// A server that does not know them: `apns.concurrency = max_in_flight` only, the other
    /// providers with their defaults.
    ApnsConcurrencyOnly,
}

/// The server settings the benchmark runs with; the server's defaults except where noted.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    /// `worker.enabled`: off while the backlog for the drain measurement is queued.
    pub worker_enabled: bool,
    /// `worker.delivery_concurrency`, written only when `--delivery-concurrency` is given
    /// (`None`: the server's default).
    pub worker_delivery_concurrency: Option<usize>,
    /// Short, so that a queued message waits little for the worker's next poll.
    pub worker_poll_interval_secs: u64,
    /// `connections` in each provider section: HTTP/2 connections per application and
    /// provider (per origin for Web Push).
    pub connections: usize,
    /// `max_in_flight` in each provider section: requests in flight per application and
    /// provider.
    pub max_in_flight: usize,
    /// How the pool settings were written (found out when the server starts).
    pub pool_keys: PoolKeys,
    /// Off, so that 64 clients on one key are measured rather than refused.
    pub rate_limit: &'static str,
    /// Raised from 1 MiB so that a bulk request of 2,000 devices or 1,000 messages fits.
    pub body_limit_bytes: usize,
    /// The default. A broadcast is sent with `dispatch = "now"`; past this the request is
    /// answered 202 and the send goes on in the background (it is timed to its last delivery
    /// either way).
    pub send_wait_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            worker_enabled: true,
            worker_delivery_concurrency: None,
            worker_poll_interval_secs: 1,
            connections: 4,
            max_in_flight: 4000,
            pool_keys: PoolKeys::ConnectionsAndMaxInFlight,
            rate_limit: "off",
            body_limit_bytes: 8 * 1024 * 1024,
            send_wait_secs: 10,
        }
    }
}

/// The database of one run: a fresh SQLite file, or a fresh PostgreSQL schema.
pub struct Database {
    pub db: Db,
    /// The URL the server and the benchmark's own queries use.
    pub url: String,
    postgres: Option<(String, String)>,
}

impl Database {
    pub async fn create(db: Db, work: &Path, postgres_url: &str) -> anyhow::Result<Self> {
        match db {
            Db::Sqlite => {
                let file = work.join("bench.db");
                let _ = std::fs::remove_file(&file);
                Ok(Self {
                    db,
                    url: format!("sqlite://{}", file.display()),
                    postgres: None,
                })
            }
            Db::Postgres => {
                let schema = format!("clarion_bench_{}", std::process::id());
                let mut connection = sqlx::PgConnection::connect(postgres_url)
                    .await
                    .with_context(|| format!("failed to connect to {postgres_url}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                )))
                .execute(&mut connection)
                .await
                .context("failed to create the benchmark's schema")?;
                let separator = if postgres_url.contains('?') { '&' } else { '?' };
                Ok(Self {
                    db,
                    url: format!("{postgres_url}{separator}options[search_path]={schema}"),
                    postgres: Some((postgres_url.to_owned(), schema)),
                })
            }
        }
    }

    /// How many deliveries of `message` are still pending, and the message's state.
    pub async fn progress(&self, message: i64) -> anyhow::Result<(i64, String)> {
        let pending_sql =
            "SELECT COUNT(*) FROM deliveries WHERE message_id = $1 AND state = 'pending'";
        let state_sql = "SELECT state FROM messages WHERE id = $1";
        match self.db {
            Db::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .context("failed to open the SQLite database")?;
                let (pending,): (i64,) = sqlx::query_as(pending_sql)
                    .bind(message)
                    .fetch_one(&mut c)
                    .await?;
                let (state,): (String,) = sqlx::query_as(state_sql)
                    .bind(message)
                    .fetch_one(&mut c)
                    .await?;
                Ok((pending, state))
            }
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url)
                    .await
                    .context("failed to connect to PostgreSQL")?;
                let (pending,): (i64,) = sqlx::query_as(pending_sql)
                    .bind(message)
                    .fetch_one(&mut c)
                    .await?;
                let (state,): (String,) = sqlx::query_as(state_sql)
                    .bind(message)
                    .fetch_one(&mut c)
                    .await?;
                Ok((pending, state))
            }
        }
    }

    /// Empties the database: removes the SQLite file, or makes the schema again.
    pub async fn reset(&self) -> anyhow::Result<()> {
        match &self.postgres {
            None => {
                if let Some(file) = self.url.strip_prefix("sqlite://") {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{file}{suffix}"));
                    }
                }
            }
            Some((url, schema)) => {
                let mut connection = sqlx::PgConnection::connect(url)
                    .await
                    .with_context(|| format!("failed to connect to {url}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
                )))
                .execute(&mut connection)
                .await
                .context("failed to make the benchmark's schema again")?;
            }
        }
        Ok(())
    }

    /// How many messages of `app` are still `WAITING` (due, or being sent).
    pub async fn waiting(&self, app: &str) -> anyhow::Result<i64> {
        self.scalar(
            "SELECT COUNT(*) FROM messages WHERE app = $1 AND state = 'WAITING'",
            app,
        )
        .await
    }

    /// Whether any message of `app` is still `WAITING`: what a drain polls for. It stops at
    /// the first such message, where counting them read every one: polled every 20 ms
    /// during a drain of 100,000 messages, the count cost the bench 4.4 s of CPU in a 16 s
    /// drain, taken from the two cores the server and the mocks share with it.
    pub async fn any_waiting(&self, app: &str) -> anyhow::Result<bool> {
        let sql = "SELECT COUNT(*) FROM (SELECT 1 FROM messages \
                   WHERE app = $1 AND state = 'WAITING' LIMIT 1) AS waiting";
        Ok(self.scalar(sql, app).await? != 0)
    }

    /// The one number `sql` answers, with `app` bound to `$1`, on a connection of its own.
    async fn scalar(&self, sql: &'static str, app: &str) -> anyhow::Result<i64> {
        let (count,): (i64,) = match self.db {
            Db::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .context("failed to open the SQLite database")?;
                sqlx::query_as(sql).bind(app).fetch_one(&mut c).await?
            }
            Db::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url)
                    .await
                    .context("failed to connect to PostgreSQL")?;
                sqlx::query_as(sql).bind(app).fetch_one(&mut c).await?
            }
        };
        Ok(count)
    }

    pub async fn drop_schema(&self) {
        if let Some((url, schema)) = &self.postgres
            && let Ok(mut connection) = sqlx::PgConnection::connect(url).await
        {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE"
            )))
            .execute(&mut connection)
            .await;
        }
    }
}

/// How fast the server started and how much memory it holds idle.
#[derive(Debug, Clone, Serialize)]
pub struct Startup {
    /// From spawning the process to the first `/healthz` answered 200, on a fresh database
    /// (migrations included).
    pub startup_ms: f64,
    /// Resident memory 500 ms after start, with nothing to do.
    pub idle_rss_mb: f64,
}

/// A running `clarion-server`.
pub struct Server {
    child: Child,
    pub pid: u32,
    pub base: String,
    pub admin_key: String,
    pub startup: Startup,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts a server on a fresh database, which prints the admin key it creates.
    pub async fn start(
        bin_dir: &Path,
        work: &Path,
        mocks: &Mocks,
        settings: &ServerSettings,
        database: &Database,
    ) -> anyhow::Result<Self> {
        Self::launch(bin_dir, work, mocks, settings, database, None).await
    }

    /// Starts a server again on a database an earlier one created, with that one's admin key
    /// (a server prints a key only when the database has none).
    pub async fn restart(
        bin_dir: &Path,
        work: &Path,
        mocks: &Mocks,
        settings: &ServerSettings,
        database: &Database,
        admin_key: &str,
    ) -> anyhow::Result<Self> {
        Self::launch(bin_dir, work, mocks, settings, database, Some(admin_key)).await
    }

    async fn launch(
        bin_dir: &Path,
        work: &Path,
        mocks: &Mocks,
        settings: &ServerSettings,
        database: &Database,
        known_admin_key: Option<&str>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("failed to find a free port")?
            .port();
        let config = work.join(format!("clarion-{port}.toml"));
        std::fs::write(&config, config_toml(port, mocks, settings, database))
            .context("failed to write the server's configuration")?;
        let log_path = work.join(format!("server-{port}.log"));
        let log = std::fs::File::create(&log_path).context("failed to create the server's log")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .context("failed to build the HTTP client")?;

        let started = Instant::now();
        let mut child = Command::new(bin_dir.join("clarion-server"))
            .env("CLARION_CONFIG", &config)
            // `CLARION_BENCH_SERVER_LOG` sets the server's log filter, e.g.
            // `warn,sqlx::query=debug` to see every statement (default `warn`).
            .env(
                "RUST_LOG",
                std::env::var("CLARION_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .current_dir(work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("failed to start clarion-server")?;
        let pid = child.id().context("clarion-server has no pid")?;
        let healthz = format!("{base}/healthz");
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let answered = http
                .get(&healthz)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                break;
            }
            // A server that exits at once (a refused configuration) is reported with its log.
            if let Ok(Some(status)) = child.try_wait() {
                let said = std::fs::read_to_string(&log_path).unwrap_or_default();
                bail!("clarion-server exited at start ({status}): {}", said.trim());
            }
            if Instant::now() >= until {
                let _ = child.kill().await;
                bail!("timed out after 60 s waiting for clarion-server to answer /healthz");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let startup_ms = started.elapsed().as_secs_f64() * 1000.0;

        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let admin_key = tokio::time::timeout(Duration::from_secs(10), async {
            if let Some(known) = known_admin_key {
                return Some(known.to_owned());
            }
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((_, key)) = line.split_once("(shown once): ") {
                    return Some(key.trim().to_owned());
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        // Whatever else the server prints is drained, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let Some(admin_key) = admin_key else {
            let _ = child.kill().await;
            bail!("clarion-server printed no admin key");
        };

        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle_rss_mb = proc_status_mb(pid, "VmRSS");
        Ok(Self {
            child,
            pid,
            base,
            admin_key,
            startup: Startup {
                startup_ms,
                idle_rss_mb,
            },
            http,
        })
    }

    /// Starts the server with the pool settings under their issue-13 names; when the server
    /// refuses them as unknown keys (a server from before the provider pool), starts it again
    /// with `apns.concurrency` alone and records that in `settings`.
    pub async fn start_with_pool_fallback(
        bin_dir: &Path,
        work: &Path,
        mocks: &Mocks,
        settings: &mut ServerSettings,
        database: &Database,
    ) -> anyhow::Result<Self> {
        match Self::start(bin_dir, work, mocks, settings, database).await {
            Err(error)
                if settings.pool_keys == PoolKeys::ConnectionsAndMaxInFlight
                    && refuses_pool_keys(&format!("{error:#}")) =>
            {
                eprintln!(
                    "clarion-bench: this server does not know `connections` / `max_in_flight`; \
                     writing apns.concurrency = {} instead (FCM and Web Push at their defaults)",
                    settings.max_in_flight
                );
                settings.pool_keys = PoolKeys::ApnsConcurrencyOnly;
                // The refused start left a database behind; a fresh one keeps startup honest.
                database.reset().await?;
                Self::start(bin_dir, work, mocks, settings, database).await
            }
            other => other,
        }
    }

    /// An authenticated request with a JSON body, answered with its status and JSON.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(u16, Value)> {
        let reply = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin_key)
            .json(body)
            .send()
            .await
            .with_context(|| format!("POST {path} failed"))?;
        let status = reply.status().as_u16();
        let json = reply.json().await.unwrap_or(Value::Null);
        Ok((status, json))
    }

    pub async fn stop(mut self) {
        // SIGTERM first, so that the server shuts down as in production; then make sure.
        let _ = std::process::Command::new("kill")
            .arg(self.pid.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// The applications the benchmark uses, each with its own provider pool.
pub mod apps {
    /// APNs: the fan-out's devices.
    pub const APNS: &str = "bench";
    /// FCM: the fan-out's devices.
    pub const FCM: &str = "fcm";
    /// Web Push: the fan-out's subscriptions, over every origin.
    pub const WEBPUSH: &str = "webpush";
    /// APNs: single sends, queued messages and their drain.
    pub const SINGLE: &str = "single";
    /// The debug sender: registration, single sends with no provider, the bulk endpoint.
    pub const DEBUG: &str = "debug";
}

fn config_toml(port: u16, mocks: &Mocks, s: &ServerSettings, database: &Database) -> String {
    let quote = |value: &str| toml_string(value);
    let apns = &mocks.description.apns;
    let pool = match s.pool_keys {
        PoolKeys::ConnectionsAndMaxInFlight => format!(
            "connections = {}\nmax_in_flight = {}\n",
            s.connections, s.max_in_flight
        ),
        PoolKeys::ApnsConcurrencyOnly => String::new(),
    };
    let apns_pool = match s.pool_keys {
        PoolKeys::ConnectionsAndMaxInFlight => pool.clone(),
        PoolKeys::ApnsConcurrencyOnly => format!("concurrency = {}\n", s.max_in_flight),
    };
    let apns_section = |app: &str| {
        format!(
            "\n[apps.{app}]\nsender = \"direct\"\n\
             \n[apps.{app}.apns]\nteam_id = {team}\nkey_id = {key_id}\nkey = {{ file = {key} }}\n\
             topic = {topic}\nendpoint = {endpoint}\n{apns_pool}",
            team = quote(&apns.team_id),
            key_id = quote(&apns.key_id),
            key = quote(&mocks.apns_key_file.display().to_string()),
            topic = quote(&apns.topic),
            endpoint = quote(&apns.url),
        )
    };
    let delivery_concurrency = s
        .worker_delivery_concurrency
        .map(|n| format!("delivery_concurrency = {n}\n"))
        .unwrap_or_default();
    format!(
        "listen = {listen}\n\
         \n[database]\nurl = {url}\n\
         \n[worker]\nenabled = {worker_enabled}\npoll_interval_secs = {poll}\n{delivery_concurrency}\
         \n[http]\nrate_limit_per_second = 0\nrate_limit_burst = 0\n\
         body_limit_bytes = {body}\nsend_wait_secs = {wait}\n\
         \n[tls]\nextra_ca_certs = [{ca}]\n\
         {bench}{single}\
         \n[apps.{fcm}]\nsender = \"direct\"\n\
         \n[apps.{fcm}.fcm]\nservice_account = {{ file = {account} }}\nendpoint = {fcm_url}\n{pool}\
         \n[apps.{webpush}]\nsender = \"direct\"\n\
         \n[apps.{webpush}.webpush]\nvapid_private_key = {vapid}\n\
         subject = \"mailto:bench@example.com\"\nallow_private_endpoints = true\n{pool}\
         \n[apps.{debug}]\nsender = \"debug\"\n",
        listen = quote(&format!("127.0.0.1:{port}")),
        url = quote(&database.url),
        worker_enabled = s.worker_enabled,
        poll = s.worker_poll_interval_secs,
        body = s.body_limit_bytes,
        wait = s.send_wait_secs,
        ca = quote(&mocks.ca_file.display().to_string()),
        bench = apns_section(apps::APNS),
        single = apns_section(apps::SINGLE),
        fcm = apps::FCM,
        account = quote(&mocks.fcm_account_file.display().to_string()),
        fcm_url = quote(&mocks.description.fcm.url),
        webpush = apps::WEBPUSH,
        vapid = quote(&mocks.description.webpush.vapid_private_key_b64url),
        debug = apps::DEBUG,
    )
}

/// Whether a refused start's log says the pool settings are unknown keys (the log may be JSON,
/// with the key's quotes escaped).
fn refuses_pool_keys(said: &str) -> bool {
    ["connections", "max_in_flight"].iter().any(|key| {
        said.contains(&format!("unknown key \"{key}\""))
            || said.contains(&format!("unknown key \\\"{key}\\\""))
    })
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_refusing_the_pool_keys_is_recognised_in_text_and_in_json() {
        assert!(refuses_pool_keys(
            r#"apps.bench.apns.connections: unknown key "connections"; expected one of"#
        ));
        assert!(refuses_pool_keys(
            r#"{"error":"apps.bench.apns.connections: unknown key \"max_in_flight\"; expected"}"#
        ));
        assert!(!refuses_pool_keys(
            r#"apps.bench.apns.topic: unknown key "topik""#
        ));
        assert!(!refuses_pool_keys("failed to connect to the database"));
    }
}
