//! Scale-out with real processes: `clarion batch --watch` workers on one PostgreSQL schema,
//! sending to a local mock FCM that counts what it receives per registration token.
//!
//! - four workers send 20,000 queued messages exactly once each;
//! - a worker killed with SIGKILL mid-run: its messages are taken over once its lease expires,
//!   and the only duplicates are its sends in flight at the kill;
//! - a mock failing 30% of sends (500, 429 with Retry-After, timeouts): every message ends SENT
//!   or ERROR as the retry policy says;
//! - PostgreSQL stopped and started mid-run: the workers reconnect and finish.
//!
//! The tests run one at a time (a lock here, `threads-required` in `.config/nextest.toml`):
//! one of them stops the machine's PostgreSQL cluster.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clarion_adapters::config::Config;
use clarion_adapters::wiring::{self, Runtime};
use clarion_domain::ids::DeviceId;
use clarion_domain::message::{Content, Priority, PushOptions, Target};
use clarion_domain::service::{Dispatch, RegisterDevice, SendRequest};
use clarion_domain::token::Platform;
use clarion_testkit::MockFcm;
use clarion_testkit::fcm::Chaos;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};
use tempfile::TempDir;

const SERVER: &str = "postgres://postgres@127.0.0.1:5432/test";
/// In-flight bound per worker process: messages at once × deliveries of one message at once.
const MESSAGE_CONCURRENCY: usize = 16;
const DELIVERY_CONCURRENCY: usize = 4;

/// One scale test at a time in this binary.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Settings {
    lease_secs: u64,
    /// The FCM client's timeout.
    timeout_secs: u64,
}

/// A schema of its own, a mock FCM, a configuration file and the worker processes.
struct Cluster {
    schema: String,
    dir: TempDir,
    config: PathBuf,
    fcm: MockFcm,
    pool: PgPool,
    workers: Vec<Option<Child>>,
}

impl Cluster {
    async fn start(name: &str, settings: &Settings) -> Cluster {
        let schema = format!("scale_{name}_{}", std::process::id());
        let mut admin = match PgConnection::connect(SERVER).await {
            Ok(conn) => conn,
            Err(error) => panic!("PostgreSQL is not reachable at {SERVER} ({error})"),
        };
        for sql in [
            format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
            format!("CREATE SCHEMA {schema}"),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("a fresh schema");
        }
        let url = format!(
            "{SERVER}?options[search_path]={schema}{}",
            std::env::var("SCALE_OPTS").unwrap_or_default()
        );
        let fcm = MockFcm::start("scale-test").await.expect("mock FCM");
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("sa.json"), fcm.service_account().json).unwrap();
        let config = dir.path().join("clarion.toml");
        std::fs::write(
            &config,
            format!(
                r#"
[database]
url = "{url}"
max_connections = 24
[worker]
poll_interval_secs = 1
batch_size = 50
lease_secs = {lease}
message_concurrency = {MESSAGE_CONCURRENCY}
delivery_concurrency = {DELIVERY_CONCURRENCY}
[apps.shop]
sender = "direct"
[apps.shop.retry]
max_attempts = 4
base_delay = 1
max_delay = 2
max_age = 3600
[apps.shop.fcm]
service_account = {{ file = "{sa}" }}
endpoint = "{endpoint}"
timeout_secs = {timeout}
"#,
                lease = settings.lease_secs,
                sa = dir.path().join("sa.json").display(),
                endpoint = fcm.base_url(),
                timeout = settings.timeout_secs,
            ),
        )
        .unwrap();
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&url)
            .await
            .expect("a pool on the schema");
        Cluster {
            schema,
            dir,
            config,
            fcm,
            pool,
            workers: Vec::new(),
        }
    }

    async fn runtime(&self) -> Runtime {
        let config = Config::load(Some(&self.config)).expect("the configuration");
        wiring::build(config, &wiring::worker_id("seeder"))
            .await
            .expect("the runtime")
    }

    /// Registers `n` FCM devices (tokens `tok-0` ...) and queues one message to each. The first
    /// device and message go through the domain service; the rest are bulk copies of their rows
    /// made in SQL (what the service would write, with the device and body changed), since
    /// queueing 20,000 messages one by one would take longer than sending them.
    async fn seed(&self, n: usize) -> Duration {
        let started = Instant::now();
        let runtime = self.runtime().await;
        let (device, _) = runtime
            .service
            .register_device(
                "shop",
                RegisterDevice {
                    platform: Platform::Fcm,
                    token: "tok-0".to_owned(),
                    p256dh: None,
                    auth: None,
                    name: None,
                    user_id: None,
                    device_id: None,
                },
            )
            .await
            .expect("register");
        let first = runtime
            .service
            .send("shop", message_to(device.id, 0), Dispatch::Queue)
            .await
            .expect("queue");
        let more = i64::try_from(n).unwrap() - 1;
        let statements = [
            "INSERT INTO devices (app, platform, token_key, name, active, user_id, device_id, \
             created_at, updated_at) \
             SELECT d.app, d.platform, 'tok-' || g, d.name, d.active, d.user_id, d.device_id, \
                 d.created_at, d.updated_at \
             FROM devices d, generate_series(1, $1) g WHERE d.id = $2 ORDER BY g",
            "INSERT INTO messages (app, target_kind, recipient, target_json, heading, body, url, \
             extra_data, template_slug, tag, priority, options, retry_sending, sender, state, \
             number_of_send_attempts, queued_at, created_at, changed_at) \
             SELECT m.app, m.target_kind, m.recipient, jsonb_build_array(d.id), m.heading, \
                 'message ' || substr(d.token_key, 5), m.url, m.extra_data, m.template_slug, \
                 m.tag, m.priority, m.options, m.retry_sending, m.sender, m.state, \
                 m.number_of_send_attempts, m.queued_at, m.created_at, m.changed_at \
             FROM messages m, devices d WHERE m.id = $3 AND d.id <> $2 \
                 AND $1 >= 0 ORDER BY d.id",
            "INSERT INTO deliveries (message_id, device_id, channel, state, attempts, updated_at) \
             SELECT m.id, (m.target_json ->> 0)::bigint, o.channel, o.state, 0, o.updated_at \
             FROM messages m, deliveries o WHERE o.message_id = $3 AND m.id <> $3 \
                 AND $1 >= 0 AND $2 > 0 ORDER BY m.id",
        ];
        for sql in statements {
            sqlx::query(sql)
                .bind(more)
                .bind(device.id.0)
                .bind(first.id.0)
                .execute(&self.pool)
                .await
                .expect("bulk seeding");
        }
        started.elapsed()
    }

    fn spawn_worker(&mut self) -> usize {
        let index = self.workers.len();
        let log = std::fs::File::create(self.dir.path().join(format!("worker-{index}.log")))
            .expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_clarion"))
            .arg("--config")
            .arg(&self.config)
            .args(["batch", "--watch"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("clarion batch --watch starts");
        self.workers.push(Some(child));
        index
    }

    fn kill(&mut self, index: usize, signal: &str) {
        let child = self.workers[index].as_mut().expect("a running worker");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Stops every worker with SIGTERM and waits for it.
    fn stop_all(&mut self) {
        for index in 0..self.workers.len() {
            if self.workers[index].is_some() {
                self.kill(index, "-TERM");
                let mut child = self.workers[index].take().unwrap();
                child.wait().expect("the worker exits");
            }
        }
    }

    async fn states(&self) -> BTreeMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT state, COUNT(*) FROM messages GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .map(|rows| rows.into_iter().collect())
            .unwrap_or_default()
    }

    /// Polls until no message is WAITING or ERROR_RETRY, failing after `limit`.
    async fn wait_until_settled(&self, total: i64, limit: Duration) -> BTreeMap<String, i64> {
        let deadline = Instant::now() + limit;
        loop {
            let states = self.states().await;
            let done: i64 = ["SENT", "ERROR", "DEBUG"]
                .iter()
                .map(|s| states.get(*s).copied().unwrap_or(0))
                .sum();
            if done == total {
                return states;
            }
            assert!(
                Instant::now() < deadline,
                "not settled after {limit:?}: {states:?}; worker logs in {}",
                self.dir.path().display()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_for_sent(&self, at_least: i64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.states().await.get("SENT").copied().unwrap_or(0) < at_least {
            assert!(Instant::now() < deadline, "fewer than {at_least} sent");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A clarion-server on this configuration with its worker off, serving in this process.
    async fn server(&self) -> Server {
        let mut config = Config::load(Some(&self.config)).expect("the configuration");
        config.worker.enabled = false;
        "127.0.0.1:0".clone_into(&mut config.listen);
        let runtime = wiring::build(config, &wiring::worker_id("server"))
            .await
            .expect("the runtime");
        let application = clarion_http::Application::build(runtime)
            .await
            .expect("the server");
        let url = format!("http://127.0.0.1:{}/readyz", application.port());
        let task = tokio::spawn(application.run_until(std::future::pending()));
        Server {
            url,
            client: reqwest::Client::new(),
            task,
        }
    }

    async fn leases_held(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM messages WHERE lease_owner IS NOT NULL")
            .fetch_one(&self.pool)
            .await
            .expect("count leases")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in self.workers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Best effort: a later run drops the schema anyway before it starts.
        let schema = self.schema.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect(SERVER).await {
                        let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                        let _ = sqlx::query(sqlx::AssertSqlSafe(sql))
                            .execute(&mut conn)
                            .await;
                    }
                });
            }
        })
        .join();
    }
}

fn message_to(device: DeviceId, i: usize) -> SendRequest {
    SendRequest {
        target: Target::Devices {
            device_ids: vec![device],
        },
        content: Content {
            heading: Some("Scale".to_owned()),
            body: format!("message {i}"),
            url: None,
            extra_data: None,
        },
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

/// Deliveries the mock accepted more than once, in all.
fn duplicates(accepted: &std::collections::HashMap<String, usize>) -> usize {
    accepted.values().map(|n| n.saturating_sub(1)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_workers_send_twenty_thousand_messages_exactly_once() {
    let _serial = SERIAL.lock().await;
    let total = 20_000;
    let mut cluster = Cluster::start(
        "exactly_once",
        &Settings {
            lease_secs: 30,
            timeout_secs: 10,
        },
    )
    .await;
    let seeding = cluster.seed(total).await;

    let started = Instant::now();
    for _ in 0..4 {
        cluster.spawn_worker();
    }
    let states = cluster
        .wait_until_settled(i64::try_from(total).unwrap(), Duration::from_secs(150))
        .await;
    let sending = started.elapsed();
    cluster.stop_all();

    let errors: Vec<(Option<String>,)> =
        sqlx::query_as("SELECT error FROM messages WHERE state <> 'SENT' LIMIT 3")
            .fetch_all(&cluster.pool)
            .await
            .expect("errors");
    assert_eq!(
        states.get("SENT").copied(),
        Some(i64::try_from(total).unwrap()),
        "{states:?} {errors:?}"
    );
    let accepted = cluster.fcm.accepted_by_token();
    assert_eq!(accepted.len(), total, "every device got its message");
    assert_eq!(duplicates(&accepted), 0, "no delivery was made twice");
    assert_eq!(cluster.leases_held().await, 0);
    println!("scale: {total} messages queued in {seeding:.1?}, sent by 4 workers in {sending:.1?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_s_messages_are_taken_over_with_duplicates_only_from_its_sends_in_flight() {
    let _serial = SERIAL.lock().await;
    let total = 20_000;
    let mut cluster = Cluster::start(
        "kill",
        &Settings {
            lease_secs: 3,
            timeout_secs: 10,
        },
    )
    .await;
    cluster.seed(total).await;
    // Every answer takes a little while, so that the victim has sends in flight.
    cluster.fcm.set_delay(Duration::from_millis(5));

    let started = Instant::now();
    for _ in 0..4 {
        cluster.spawn_worker();
    }
    cluster
        .wait_for_sent(i64::try_from(total / 4).unwrap(), Duration::from_secs(120))
        .await;
    cluster.kill(0, "-KILL");
    let killed_at = started.elapsed();
    let states = cluster
        .wait_until_settled(i64::try_from(total).unwrap(), Duration::from_secs(150))
        .await;
    let sending = started.elapsed();
    cluster.stop_all();

    assert_eq!(
        states.get("SENT").copied(),
        Some(i64::try_from(total).unwrap())
    );
    let accepted = cluster.fcm.accepted_by_token();
    assert_eq!(accepted.len(), total, "no delivery was lost");
    let duplicated = duplicates(&accepted);
    let bound = MESSAGE_CONCURRENCY * DELIVERY_CONCURRENCY;
    println!(
        "scale: worker 0 killed with SIGKILL at {killed_at:.1?}; all {total} messages sent after \
         {sending:.1?}; duplicate deliveries: {duplicated} (in-flight bound {bound})"
    );
    assert!(
        duplicated <= bound,
        "{duplicated} duplicates, more than the killed worker's {bound} sends in flight"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_thirty_percent_of_sends_failing_every_message_ends_as_the_retry_policy_says() {
    let _serial = SERIAL.lock().await;
    let total = 2_000;
    let mut cluster = Cluster::start(
        "chaos",
        &Settings {
            lease_secs: 10,
            timeout_secs: 1,
        },
    )
    .await;
    cluster.seed(total).await;
    cluster.fcm.set_chaos(Some(Chaos {
        failure_percent: 30,
        retry_after_secs: 1,
        hold: Duration::from_millis(1500),
        seed: 20_260_301,
    }));

    let started = Instant::now();
    for _ in 0..4 {
        cluster.spawn_worker();
    }
    // Four attempts 1 to 2 s apart (Retry-After 1 s), well within a minute.
    let states = cluster
        .wait_until_settled(i64::try_from(total).unwrap(), Duration::from_secs(60))
        .await;
    let settling = started.elapsed();
    cluster.stop_all();

    // SENT: the one delivery was accepted within 4 attempts. ERROR: 4 attempts all failed,
    // and the delivery says so.
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT m.state, m.number_of_send_attempts, d.state, d.error_code \
         FROM messages m JOIN deliveries d ON d.message_id = m.id",
    )
    .fetch_all(&cluster.pool)
    .await
    .expect("the outcomes");
    for (state, attempts, delivery, code) in &rows {
        match state.as_str() {
            "SENT" => {
                assert_eq!(delivery, "accepted");
                assert!((1..=4).contains(attempts), "{attempts} attempts");
            }
            "ERROR" => {
                assert_eq!(*attempts, 4);
                assert_eq!(delivery, "failed");
                assert_eq!(code.as_deref(), Some("retries_exhausted"));
            }
            other => panic!("a message ended {other}"),
        }
    }
    let retried = rows.iter().filter(|r| r.1 > 1).count();
    println!(
        "scale: {total} messages with 30% failing sends settled in {settling:.1?}: {states:?}, \
         {retried} needed a retry"
    );
    assert!(retried > total / 10, "the chaos did fail sends");
}

struct Server {
    url: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    /// The status of `/readyz`, or `None` when the server does not answer.
    async fn readyz(&self) -> Option<u16> {
        let response = self
            .client
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        response.ok().map(|r| r.status().as_u16())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the cluster again when dropped, so that a failed test leaves PostgreSQL running.
struct RestartGuard;

fn pg_ctl(action: &str) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .max()
        .expect("a PostgreSQL version");
    Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &version, "main", action])
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        // `start` fails harmlessly when it is running already.
        let _ = pg_ctl("start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_reconnect_and_finish_after_postgresql_restarts() {
    let _serial = SERIAL.lock().await;
    let total = 5_000;
    let mut cluster = Cluster::start(
        "restart",
        &Settings {
            lease_secs: 3,
            timeout_secs: 10,
        },
    )
    .await;
    cluster.seed(total).await;
    cluster.fcm.set_delay(Duration::from_millis(5));
    let server = cluster.server().await;
    assert_eq!(server.readyz().await, Some(200));

    let started = Instant::now();
    for _ in 0..4 {
        cluster.spawn_worker();
    }
    cluster
        .wait_for_sent(i64::try_from(total / 5).unwrap(), Duration::from_secs(120))
        .await;
    let guard = RestartGuard;
    assert!(pg_ctl("stop"), "pg_ctlcluster stop");
    // A running clarion-server reports the outage on /readyz while it lasts...
    assert_eq!(server.readyz().await, Some(503));
    assert!(pg_ctl("start"), "pg_ctlcluster start");
    drop(guard);
    // ...and readiness once the database is back.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.readyz().await != Some(200) {
        assert!(Instant::now() < deadline, "/readyz did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outage = started.elapsed();
    let states = cluster
        .wait_until_settled(i64::try_from(total).unwrap(), Duration::from_secs(120))
        .await;
    let sending = started.elapsed();
    cluster.stop_all();

    assert_eq!(
        states.get("SENT").copied(),
        Some(i64::try_from(total).unwrap())
    );
    let accepted = cluster.fcm.accepted_by_token();
    assert_eq!(accepted.len(), total, "no delivery was lost");
    println!(
        "scale: PostgreSQL stopped and started at {outage:.1?}; all {total} messages sent after \
         {sending:.1?}; duplicate deliveries: {}",
        duplicates(&accepted)
    );
}
