//! The storage contract run on the PostgreSQL store, each test in a fresh schema of the one
//! test database, plus the PostgreSQL-specific behaviour: many claimers on separate pools,
//! lease take-over, concurrent migrations, table counts, corrupt rows and the wiring.
//!
//! The server is `CLARION_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); when it cannot be reached every test fails
//! with a message saying so (`.ci/run` starts the local cluster).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod contract;

use std::collections::BTreeSet;
use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use clarion_adapters::config::Config;
use clarion_adapters::postgres::{ANALYZE_AFTER_DELIVERIES, PgSettings, PgStore};
use clarion_adapters::wiring;
use clarion_domain::app::SenderKind;
use clarion_domain::device::{DeviceFilter, NewDevice};
use clarion_domain::ids::{AppId, MessageId, UserId};
use clarion_domain::message::{Content, Message, MessageSpec, Priority, PushOptions, Target};
use clarion_domain::ports::{
    DeviceStore, Lease, MessageStore, NewDeliveries, NewMessage, StoreError,
};
use clarion_domain::service::RegisterDevice;
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
use sqlx::{ConnectOptions as _, Connection as _, PgConnection};
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::OnceCell;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Connections per test store: dozens of tests run at once against one server.
const TEST_POOL_SIZE: u32 = 4;
/// Every test schema's name starts with this, followed by the test process's id.
const SCHEMA_PREFIX: &str = "t_";

fn server_url() -> String {
    std::env::var("CLARION_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// One connection without a pool, failing the test with a clear message when the server
/// does not answer.
async fn admin_connection() -> PgConnection {
    let url = server_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "PostgreSQL is not reachable at {url} ({error}); start it (.ci/run does) or set \
             CLARION_TEST_POSTGRES_URL"
        ),
    }
}

/// Drops the test schemas that processes which are no longer running left behind (a test
/// process that was killed never ran its fixtures' drops). Runs once per test process.
async fn sweep_stale_schemas() {
    static SWEPT: OnceCell<()> = OnceCell::const_new();
    SWEPT
        .get_or_init(|| async {
            let mut conn = admin_connection().await;
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 't\\_%'",
            )
            .fetch_all(&mut conn)
            .await
            .expect("list test schemas");
            for name in names {
                let pid = name
                    .strip_prefix(SCHEMA_PREFIX)
                    .and_then(|rest| rest.split('_').next())
                    .and_then(|pid| pid.parse::<u32>().ok());
                let Some(pid) = pid else { continue };
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    continue;
                }
                // Another process may sweep the same schema; losing that race is fine.
                let _ = drop_schema(&mut conn, &name).await;
            }
            conn.close().await.ok();
        })
        .await;
}

async fn drop_schema(conn: &mut PgConnection, name: &str) -> Result<(), sqlx::Error> {
    let sql = format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        name.replace('"', "\"\"")
    );
    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await?;
    Ok(())
}

/// A schema name no other test, in this process or another, uses.
fn unique_schema() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{SCHEMA_PREFIX}{}_{n}_{nanos}", std::process::id())
}

/// A fresh, empty schema, dropped when the fixture is.
struct Schema {
    name: String,
}

impl Schema {
    async fn new() -> Schema {
        sweep_stale_schemas().await;
        admin_connection().await.close().await.ok();
        Schema {
            name: unique_schema(),
        }
    }

    /// A store on this schema with its own pool.
    async fn store(&self) -> PgStore {
        let settings = PgSettings {
            max_connections: TEST_POOL_SIZE,
            schema: Some(self.name.clone()),
        };
        PgStore::connect_with(&server_url(), &settings)
            .await
            .unwrap_or_else(|error| panic!("connect to PostgreSQL at {}: {error:#}", server_url()))
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime, which cannot be blocked on; a thread of its own
        // with a runtime of its own drops the schema and is waited for.
        let name = self.name.clone();
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let url = server_url();
                let Ok(options) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
                    return;
                };
                if let Ok(mut conn) = options.connect().await {
                    let _ = drop_schema(&mut conn, &name).await;
                    conn.close().await.ok();
                }
            });
        });
        let _ = done.join();
    }
}

/// A store on a fresh schema; the schema goes when the fixture does.
struct Fixture {
    store: PgStore,
    _schema: Schema,
}

impl Deref for Fixture {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        &self.store
    }
}

async fn fresh_store() -> Fixture {
    let schema = Schema::new().await;
    let store = schema.store().await;
    Fixture {
        store,
        _schema: schema,
    }
}

contract::store_contract_tests!(fresh_store());

// ---------------------------------------------------------------------------------------------
// PostgreSQL only.

const T0: OffsetDateTime = datetime!(2025-03-04 05:06:07.089 UTC);

fn at(seconds: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(seconds)
}

fn to_alice(now: OffsetDateTime) -> NewMessage {
    NewMessage {
        spec: MessageSpec {
            app: AppId::parse("shop").unwrap(),
            target: Target::User {
                user_id: UserId::parse("alice").unwrap(),
            },
            content: Content {
                heading: None,
                body: "hello".to_owned(),
                url: None,
                extra_data: None,
            },
            template_slug: None,
            tag: None,
            priority: Priority::High,
            options: PushOptions::default(),
            related_objects: Vec::new(),
            retry_sending: true,
        },
        sender: SenderKind::Direct,
        progress: Message::initial_progress(now),
        deliveries: NewDeliveries::Listed(Vec::new()),
        lease: None,
        now,
    }
}

fn lease(owner: &str, until: OffsetDateTime) -> Lease {
    Lease {
        owner: owner.to_owned(),
        until,
    }
}

async fn lease_owner(store: &PgStore, id: MessageId) -> Option<String> {
    sqlx::query_scalar("SELECT lease_owner FROM messages WHERE id = $1")
        .bind(id.0)
        .fetch_one(store.pool())
        .await
        .expect("read the lease")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_claimers_on_separate_pools_claim_each_of_500_messages_exactly_once() {
    let schema = Schema::new().await;
    let seed = schema.store().await;
    let mut all = BTreeSet::new();
    for n in 0..500 {
        let message = seed.insert_message(&to_alice(at(n))).await.expect("insert");
        all.insert(message.id);
    }
    let mut claimers = Vec::new();
    for worker in 0..4 {
        // Each claimer is a process of its own as far as PostgreSQL can tell: its own pool.
        let store = schema.store().await;
        claimers.push(tokio::spawn(async move {
            let owner = format!("worker-{worker}");
            let mut mine = Vec::new();
            // 500 messages in batches of 25 run dry in 20 claims between the four; a store
            // that hands out leased messages again never would.
            for _ in 0..100 {
                let batch = store
                    .claim_due(at(1000), 25, &lease(&owner, at(2000)))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                assert!(batch.len() <= 25, "{} in one batch", batch.len());
                mine.extend(batch.iter().map(|m| m.id));
            }
            panic!("{owner} kept claiming: leased messages were handed out again");
        }));
    }

    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.expect("claimer"));
    }

    let distinct: BTreeSet<MessageId> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), 500, "every message claimed exactly once");
    assert_eq!(distinct, all);
    assert_eq!(seed.count_due(at(1000)).await.expect("count"), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_that_expired_is_taken_over_by_another_worker() {
    let fixture = fresh_store().await;
    let message = fixture
        .insert_message(&to_alice(at(0)))
        .await
        .expect("insert");
    let first = fixture
        .claim_due(at(1), 10, &lease("crashed-worker", at(31)))
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);

    let while_held = fixture
        .claim_due(at(30), 10, &lease("worker-2", at(60)))
        .await
        .expect("claim");
    let after_expiry = fixture
        .claim_due(at(31), 10, &lease("worker-2", at(61)))
        .await
        .expect("claim");

    assert!(while_held.is_empty(), "claimed while the lease was held");
    assert_eq!(
        after_expiry.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![message.id]
    );
    assert_eq!(
        lease_owner(&fixture, message.id).await.as_deref(),
        Some("worker-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_that_start_together_on_one_schema_migrate_it_once() {
    let schema = Schema::new().await;
    schema.store().await;
    // The schema exists now; more processes start at once and find it migrated or wait for
    // the migration lock.
    let (a, b, c) = tokio::join!(schema.store(), schema.store(), schema.store());

    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("the migrations folder")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
        })
        .count();
    assert!(migrations >= 2, "{migrations}");
    for store in [&a, &b, &c] {
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .expect("read the migrations");
        assert_eq!(applied, i64::try_from(migrations).expect("count"));
    }
}

#[tokio::test]
async fn table_counts_name_every_table_of_the_schema() {
    let fixture = fresh_store().await;

    let counts = fixture.table_counts().await.expect("counts");

    let names: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        vec![
            "api_keys",
            "deliveries",
            "devices",
            "message_related_objects",
            "messages",
            "readiness_probe",
            "templates"
        ]
    );
    assert!(counts.values().all(|n| *n == 0));
    fixture.check_ready().await.expect("ready");
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_reported_as_corrupt_naming_the_row_and_field() {
    let fixture = fresh_store().await;
    sqlx::query(
        "INSERT INTO devices (id, app, platform, token_key, active, created_at, updated_at) \
         VALUES (12, 'shop', 'pager', 'abc', TRUE, now(), now())",
    )
    .execute(fixture.pool())
    .await
    .expect("insert");
    let shop = AppId::parse("shop").expect("app");

    let listed = fixture.list_devices(&shop, &DeviceFilter::default()).await;

    match listed {
        Err(StoreError::Corrupt(text)) => {
            assert!(text.contains("devices row 12: platform"), "{text}");
        }
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_that_names_it_without_the_password() {
    let error = PgStore::connect("postgres://clarion:hunter2@127.0.0.1:1/clarion")
        .await
        .expect_err("nothing listens on port 1");

    let text = format!("{error:#}");
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wiring_builds_a_working_runtime_on_a_postgres_url() {
    let schema = Schema::new().await;
    // The schema must exist before a URL can select it; connecting once creates it.
    schema.store().await;
    let mut config = Config::default();
    let separator = if server_url().contains('?') { '&' } else { '?' };
    config.database.url = format!(
        "{}{separator}options[search_path]={}",
        server_url(),
        schema.name
    );
    config.database.max_connections = Some(2);

    let runtime = wiring::build(config, "test-worker")
        .await
        .expect("the runtime builds");
    let (device, _) = runtime
        .service
        .register_device(
            "default",
            RegisterDevice {
                platform: Platform::Fcm,
                token: "fcm-token-1".to_owned(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .expect("register");

    let counts = runtime.store.table_counts().await.expect("counts");
    assert_eq!(counts.get("devices"), Some(&1));
    runtime.store.check_ready().await.expect("ready");
    let in_schema: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE id = $1")
        .bind(device.id.0)
        .fetch_one(schema.store().await.pool())
        .await
        .expect("count");
    assert_eq!(in_schema, 1);
}

/// The planner's estimate of the rows of `table`, which `ANALYZE` sets (-1 or 0 before).
async fn estimated_rows(store: &PgStore, table: &str) -> f32 {
    sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = $1::regclass")
        .bind(table)
        .fetch_one(store.pool())
        .await
        .expect("read pg_class")
}

#[tokio::test]
async fn a_large_broadcast_leaves_the_deliveries_table_analysed_for_the_planner() {
    let fixture = fresh_store().await;
    let count = usize::try_from(ANALYZE_AFTER_DELIVERIES).unwrap();
    let devices: Vec<NewDevice> = (0..count)
        .map(|n| NewDevice {
            app: AppId::parse("shop").unwrap(),
            token: DeviceToken::parse(
                Platform::Apns,
                &format!("{n:064x}"),
                None,
                None,
                EndpointPolicy::PublicOnly,
            )
            .unwrap(),
            name: None,
            user_id: None,
            device_id: None,
        })
        .collect();
    fixture.register_devices(&devices, at(0)).await.unwrap();
    let broadcast = |n: i64| {
        let mut message = to_alice(at(n));
        message.spec.target = Target::Broadcast { platform: None };
        message.deliveries = NewDeliveries::Broadcast {
            platform: None,
            channel: None,
        };
        message
    };
    assert!(estimated_rows(&fixture, "deliveries").await <= 0.0);

    fixture.insert_message(&broadcast(1)).await.unwrap();

    let estimate = estimated_rows(&fixture, "deliveries").await;
    assert!(
        (estimate - count as f32).abs() < 1.0,
        "estimate {estimate} after a broadcast to {count} devices"
    );
}

/// A TCP proxy in front of the test server that counts the `Sync` messages clients send: one
/// per round trip that waits for the server to be ready again.
struct SyncCounter {
    port: u16,
    syncs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SyncCounter {
    async fn start() -> SyncCounter {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr as _;

        let upstream = PgConnectOptions::from_str(&server_url()).expect("the test server's URL");
        let upstream = format!("{}:{}", upstream.get_host(), upstream.get_port());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let syncs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = std::sync::Arc::clone(&syncs);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(&upstream).await.unwrap();
                tokio::spawn(forward(client, server, std::sync::Arc::clone(&counted)));
            }
        });
        SyncCounter { port, syncs }
    }

    fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
}

/// Forwards one connection, counting the client's `Sync` messages: after the untyped start-up
/// packets (an SSL or GSS request, then the start-up message), each message is a type byte
/// and a length that counts itself.
async fn forward(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    syncs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const ENCRYPTION_REQUESTS: [u32; 2] = [80_877_103, 80_877_104];
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
    });
    let mut started = false;
    loop {
        let mut message = Vec::new();
        if started {
            let mut kind = [0_u8; 1];
            if client_read.read_exact(&mut kind).await.is_err() {
                return;
            }
            if kind[0] == b'S' {
                syncs.fetch_add(1, Ordering::SeqCst);
            }
            message.push(kind[0]);
        }
        let mut length = [0_u8; 4];
        if client_read.read_exact(&mut length).await.is_err() {
            return;
        }
        message.extend_from_slice(&length);
        let mut body = vec![0_u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
        if client_read.read_exact(&mut body).await.is_err() {
            return;
        }
        if !started {
            let code = body
                .get(..4)
                .map(|c| u32::from_be_bytes(c.try_into().unwrap()));
            started = !code.is_some_and(|code| ENCRYPTION_REQUESTS.contains(&code));
        }
        message.extend_from_slice(&body);
        if server_write.write_all(&message).await.is_err() {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_on_a_busy_pool_costs_its_own_round_trip_and_no_check_before_it() {
    // Arrange: a store whose connections go through a proxy counting the round trips, with
    // every connection of its pool used once.
    let schema = Schema::new().await;
    let proxy = SyncCounter::start().await;
    let url = {
        use sqlx::postgres::PgConnectOptions;
        use std::str::FromStr as _;
        PgConnectOptions::from_str(&server_url())
            .unwrap()
            .host("127.0.0.1")
            .port(proxy.port)
            .ssl_mode(sqlx::postgres::PgSslMode::Disable)
            .to_url_lossy()
            .to_string()
    };
    let settings = PgSettings {
        max_connections: TEST_POOL_SIZE,
        schema: Some(schema.name.clone()),
    };
    let store = PgStore::connect_with(&url, &settings).await.unwrap();
    for _ in 0..20 {
        sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
    }

    // Act: statements one after the other, as a request's reads are.
    let statements = 100;
    let before = proxy.syncs();
    for _ in 0..statements {
        sqlx::query("SELECT 1").execute(store.pool()).await.unwrap();
    }
    // The pool checks each connection as it comes back, in a task of its own.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while store.pool().num_idle() < store.pool().size() as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "the connections came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let syncs = proxy.syncs() - before;

    // Assert: the statement's own round trip and sqlx's check as the connection comes back
    // (a connection can be prepared anew once in a while), not a third check before it.
    assert!(
        syncs <= statements * 2 + statements / 5,
        "{syncs} round trips for {statements} statements"
    );
}
