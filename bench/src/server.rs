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

use crate::{Db, poll, proc_status_mb};

/// The `clarion-mocks` process and what it wrote about itself.
pub struct Mocks {
    child: Child,
    pub description: MocksDescription,
    pub ca_file: PathBuf,
    pub apns_key_file: PathBuf,
    http: reqwest::Client,
}

#[derive(Debug, Deserialize)]
pub struct MocksDescription {
    pub ca_pem: String,
    pub stats_url: String,
    pub apns: ApnsMock,
}

#[derive(Debug, Deserialize)]
pub struct ApnsMock {
    pub url: String,
    pub team_id: String,
    pub key_id: String,
    pub topic: String,
    pub key_pem: String,
}

/// A mock's request counts.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub faulty: u64,
}

impl Mocks {
    pub async fn start(bin_dir: &Path, work: &Path) -> anyhow::Result<Self> {
        let out = work.join("mocks.json");
        let child = Command::new(bin_dir.join("clarion-mocks"))
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("failed to start clarion-mocks")?;
        let text = poll(
            "clarion-mocks to describe itself",
            Duration::from_secs(30),
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
        Ok(Self {
            child,
            description,
            ca_file,
            apns_key_file,
            http: reqwest::Client::new(),
        })
    }

    /// The APNs mock's counts.
    pub async fn apns_counts(&self) -> anyhow::Result<Counts> {
        let stats: Value = self
            .http
            .get(&self.description.stats_url)
            .send()
            .await
            .context("failed to read the mocks' counts")?
            .json()
            .await
            .context("the mocks' counts are not JSON")?;
        Ok(serde_json::from_value(stats["apns"].clone()).unwrap_or_default())
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The server settings the benchmark runs with; the defaults except where noted.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSettings {
    pub worker_batch_size: u32,
    pub worker_message_concurrency: usize,
    pub worker_delivery_concurrency: usize,
    pub worker_poll_interval_secs: u64,
    /// APNs streams in flight per application.
    pub apns_concurrency: usize,
    /// Off, so that 64 clients on one key are measured rather than refused.
    pub rate_limit: &'static str,
    /// Raised from 1 MiB so that a bulk request of 2,000 devices fits.
    pub body_limit_bytes: usize,
    /// The default. The broadcast is sent with `dispatch = "now"`; past this the request is
    /// answered 202 and the send goes on in the background (it is timed to its last delivery
    /// either way).
    pub send_wait_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            worker_batch_size: 100,
            worker_message_concurrency: 8,
            worker_delivery_concurrency: 100,
            worker_poll_interval_secs: 1,
            apns_concurrency: 100,
            rate_limit: "off",
            body_limit_bytes: 8 * 1024 * 1024,
            send_wait_secs: 10,
        }
    }
}

impl ServerSettings {
    /// How many APNs requests of one broadcast are in flight at once.
    pub fn effective_concurrency(&self) -> usize {
        self.worker_delivery_concurrency.min(self.apns_concurrency)
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
    pub async fn start(
        bin_dir: &Path,
        work: &Path,
        mocks: &Mocks,
        settings: &ServerSettings,
        database: &Database,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("failed to find a free port")?
            .port();
        let config = work.join(format!("clarion-{port}.toml"));
        std::fs::write(&config, config_toml(port, mocks, settings, database))
            .context("failed to write the server's configuration")?;
        let log = std::fs::File::create(work.join(format!("server-{port}.log")))
            .context("failed to create the server's log")?;
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
        let ready = poll(
            "clarion-server to answer /healthz",
            Duration::from_secs(60),
            Duration::from_millis(2),
            || async {
                Ok(http
                    .get(&healthz)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ()))
            },
        )
        .await;
        let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
        if let Err(error) = ready {
            let _ = child.kill().await;
            return Err(error);
        }

        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let admin_key = tokio::time::timeout(Duration::from_secs(10), async {
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

fn config_toml(port: u16, mocks: &Mocks, s: &ServerSettings, database: &Database) -> String {
    let apns = &mocks.description.apns;
    let quote = |value: &str| toml_string(value);
    format!(
        "listen = {listen}\n\
         \n[database]\nurl = {url}\n\
         \n[worker]\nbatch_size = {batch}\nmessage_concurrency = {messages}\n\
         delivery_concurrency = {deliveries}\npoll_interval_secs = {poll}\n\
         \n[http]\nrate_limit_per_second = 0\nrate_limit_burst = 0\n\
         body_limit_bytes = {body}\nsend_wait_secs = {wait}\n\
         \n[tls]\nextra_ca_certs = [{ca}]\n\
         \n[apps.bench]\nsender = \"direct\"\n\
         \n[apps.bench.apns]\nteam_id = {team}\nkey_id = {key_id}\nkey = {{ file = {key} }}\n\
         topic = {topic}\nendpoint = {endpoint}\nconcurrency = {apns_concurrency}\n\
         \n[apps.debug]\nsender = \"debug\"\n",
        listen = quote(&format!("127.0.0.1:{port}")),
        url = quote(&database.url),
        batch = s.worker_batch_size,
        messages = s.worker_message_concurrency,
        deliveries = s.worker_delivery_concurrency,
        poll = s.worker_poll_interval_secs,
        body = s.body_limit_bytes,
        wait = s.send_wait_secs,
        ca = quote(&mocks.ca_file.display().to_string()),
        team = quote(&apns.team_id),
        key_id = quote(&apns.key_id),
        key = quote(&mocks.apns_key_file.display().to_string()),
        topic = quote(&apns.topic),
        endpoint = quote(&apns.url),
        apns_concurrency = s.apns_concurrency,
    )
}

/// A TOML basic string.
fn toml_string(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}
