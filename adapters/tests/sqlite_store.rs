//! The storage contract run on the SQLite store, each test on a fresh database file, plus the
//! SQLite-specific behaviour (locations, corrupt rows, table counts).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod contract;

use std::ops::Deref;
use std::time::{Duration, Instant};

use clarion_adapters::sqlite::SqliteStore;
use clarion_domain::device::{DeviceFilter, NewDevice};
use clarion_domain::ids::{AppId, MessageId};
use clarion_domain::ports::{DeviceStore, MessageStore, StoreError};
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
use sqlx::Connection as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use tempfile::TempDir;
use time::OffsetDateTime;

/// A store on a fresh database file in a temporary folder that lives as long as the store.
struct Fixture {
    store: SqliteStore,
    _dir: TempDir,
}

impl Deref for Fixture {
    type Target = SqliteStore;
    fn deref(&self) -> &SqliteStore {
        &self.store
    }
}

async fn fresh_store() -> Fixture {
    let dir = TempDir::new().expect("temporary folder");
    let path = dir.path().join("clarion.db");
    let store = SqliteStore::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    Fixture { store, _dir: dir }
}

contract::store_contract_tests!(fresh_store());

#[tokio::test]
async fn connecting_creates_and_migrates_a_missing_file_and_reconnecting_keeps_the_data() {
    let dir = TempDir::new().expect("temporary folder");
    let path = dir.path().join("nested-name.db");
    let plain = path.to_str().expect("utf-8 path").to_owned();

    let store = SqliteStore::connect(&plain).await.expect("connect by path");
    sqlx::query("INSERT INTO templates (app, slug, body, is_active, allow_duplicates, created_at, updated_at) VALUES ('shop', 'x', 'b', 1, 0, 0, 0)")
        .execute(store.pool())
        .await
        .expect("insert");
    store.pool().close().await;

    assert!(path.exists());
    let again = SqliteStore::connect(&format!("sqlite:{plain}"))
        .await
        .expect("connect by sqlite: URL");
    let counts = again.table_counts().await.expect("counts");
    assert_eq!(counts.get("templates"), Some(&1));
}

#[tokio::test]
async fn table_counts_name_every_table_of_the_schema() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");

    let counts = store.table_counts().await.expect("counts");

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
}

#[tokio::test]
async fn a_row_that_does_not_parse_is_reported_as_corrupt_naming_the_row_and_field() {
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO devices (id, app, platform, token_key, active, created_at, updated_at) \
         VALUES (12, 'shop', 'pager', 'abc', 1, 0, 0)",
    )
    .execute(store.pool())
    .await
    .expect("insert");
    let shop = AppId::parse("shop").expect("app");

    let listed = store.list_devices(&shop, &DeviceFilter::default()).await;

    match listed {
        Err(StoreError::Corrupt(text)) => {
            assert!(text.contains("devices row 12: platform"), "{text}");
        }
        other => panic!("expected a corrupt row, got {other:?}"),
    }
}

#[tokio::test]
async fn a_message_or_delivery_the_state_machine_cannot_reach_is_reported_as_corrupt() {
    // Arrange: rows that parse field by field but contradict each other: a SENT message that
    // made no attempt and has no `sent_at`, and an accepted delivery that was never tried.
    let store = SqliteStore::connect("sqlite::memory:")
        .await
        .expect("connect");
    let message = "INSERT INTO messages (id, app, target_kind, recipient, body, priority, \
         options, retry_sending, sender, state, number_of_send_attempts, queued_at, \
         created_at, changed_at) \
         VALUES (?, 'shop', 'user', 'u1', 'hi', 'high', '{}', 1, 'direct', ?, 0, 0, 0, 0)";
    for (id, state) in [(31, "SENT"), (32, "WAITING")] {
        sqlx::query(message)
            .bind(id)
            .bind(state)
            .execute(store.pool())
            .await
            .expect("insert message");
    }
    sqlx::query(
        "INSERT INTO deliveries (id, message_id, channel, state, attempts, updated_at) \
         VALUES (41, 32, 'apns', 'accepted', 0, 0)",
    )
    .execute(store.pool())
    .await
    .expect("insert delivery");
    let shop = AppId::parse("shop").expect("app");

    // Act.
    let sent = store.get_message(&shop, MessageId(31)).await;
    let accepted = store.get_message(&shop, MessageId(32)).await;

    // Assert.
    match sent {
        Err(StoreError::Corrupt(text)) => {
            assert!(text.contains("messages row 31: state"), "{text}");
            assert!(text.contains("SENT message must have sent_at"), "{text}");
        }
        other => panic!("expected a corrupt message, got {other:?}"),
    }
    match accepted {
        Err(StoreError::Corrupt(text)) => {
            assert!(text.contains("deliveries row 41: state"), "{text}");
        }
        other => panic!("expected a corrupt delivery, got {other:?}"),
    }
}

#[tokio::test]
async fn writes_reach_the_database_file_without_waiting_for_the_writer_to_checkpoint() {
    // The writer checkpoints by itself only past 10,000 pages of log; below that, rows reach
    // the database file (rather than only its write-ahead log) through the checkpointer.
    let fixture = fresh_store().await;
    let shop = AppId::parse("shop").expect("app");
    let device = NewDevice {
        app: shop.clone(),
        token: DeviceToken::parse(
            Platform::Apns,
            &"ab".repeat(32),
            None,
            None,
            EndpointPolicy::PublicOnly,
        )
        .expect("token"),
        name: None,
        user_id: None,
        device_id: None,
    };
    fixture
        .register_device(&device, OffsetDateTime::now_utc())
        .await
        .expect("register");
    let file = fixture._dir.path().join("clarion.db");

    // `immutable` reads the database file alone, ignoring the log.
    let file_only = SqliteConnectOptions::new()
        .filename(&file)
        .read_only(true)
        .immutable(true);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut connection = SqliteConnection::connect_with(&file_only)
            .await
            .expect("open the file");
        // Until the first checkpoint, even the schema is only in the log.
        let count: Result<i64, sqlx::Error> = sqlx::query_scalar("SELECT COUNT(*) FROM devices")
            .fetch_one(&mut connection)
            .await;
        connection.close().await.expect("close");
        if matches!(count, Ok(1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the device never reached the database file: {count:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
