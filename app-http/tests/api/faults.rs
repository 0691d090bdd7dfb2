//! Faults of the database that heal without a restart: a full disk and a stopped PostgreSQL
//! answer 503 with `Retry-After` and turn `/readyz` to 503 while they last, and the next
//! request after they end succeeds; a read-only or damaged SQLite file is refused at start.
//! Each with a real database on a real file system (a tmpfs the test mounts, so these tests
//! need root, as CI has) or a PostgreSQL cluster of the test's own.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clarion_adapters::config::{Config, DatabaseConfig};
use clarion_adapters::sqlite::SqliteStore;
use clarion_adapters::wiring;
use clarion_domain::auth::KeyScope;
use clarion_testkit::{PrivatePostgres, ReadOnlyFile, SmallDisk};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    Reply, SHOP_SECRET, TestApp, client_token, create_key, eventually, runtime_with, shop_and_news,
    spawn,
};

/// A bulk registration of 500 new FCM devices, numbered from `first`.
fn bulk(first: usize) -> Value {
    let devices: Vec<Value> = (first..first + 500)
        .map(|n| json!({"platform": "fcm", "token": format!("fcm-token-{n:012}-{}", "x".repeat(100)), "user_id": "alice"}))
        .collect();
    json!({ "devices": devices })
}

fn send_to_alice() -> Value {
    json!({"target": {"user_id": "alice"}, "heading": "Hello", "body": "Your order has shipped"})
}

/// The server for `shop` and `news` on the database at `url`, with its worker running.
async fn serve(url: String) -> TestApp {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.database.url = url;
        config.worker.enabled = true;
        config.worker.poll_interval_secs = 1;
    })
    .await;
    spawn(runtime, dir).await
}

/// Queues a message for alice and waits until the worker, which kept polling through the
/// fault, has sent it.
async fn assert_the_worker_sends_a_queued_message(app: &TestApp) {
    let mut queued = send_to_alice();
    queued["dispatch"] = json!("queue");
    let accepted = app
        .admin(Method::POST, "/v1/apps/shop/messages", Some(&queued))
        .await
        .expect(202);
    let path = format!("/v1/apps/shop/messages/{}", accepted["id"]);
    eventually(Duration::from_secs(30), || async {
        let message = app.admin(Method::GET, &path, None).await;
        (message.status == 200 && message.json()["state"] == "DEBUG").then_some(())
    })
    .await;
}

/// Asserts that `reply` is a 503 problem document with a `Retry-After`.
fn assert_unavailable(reply: &Reply) {
    assert_eq!(reply.status, 503, "{reply:?}");
    assert_eq!(reply.content_type, "application/problem+json", "{reply:?}");
    let retry_after = reply
        .headers
        .get("retry-after")
        .map(|v| v.to_str().unwrap());
    assert!(
        retry_after.is_some_and(|secs| secs.parse::<u64>().is_ok()),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_503_until_room_is_freed_and_then_writes_succeed_without_a_restart() {
    let disk = SmallDisk::mount(16 << 20).expect("a small disk");
    let url = format!("sqlite://{}", disk.path().join("clarion.db").display());
    let app = serve(url).await;
    let bulk_path = "/v1/apps/shop/devices/bulk";
    app.admin(Method::POST, bulk_path, Some(&bulk(0)))
        .await
        .expect(200);
    assert_eq!(app.get("/readyz").await.status, 200);

    disk.fill().expect("the disk fills");
    // SQLite first reuses the room of its write-ahead log, so the first writes may still fit.
    let mut refused = None;
    for round in 1..=40 {
        let reply = app
            .admin(Method::POST, bulk_path, Some(&bulk(round * 500)))
            .await;
        if reply.status != 200 {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a bulk registration fails on the full disk");
    assert_unavailable(&refused);
    // A send may still fit in the room that the failed write left in SQLite's log; it must
    // never be a 500.
    let sent = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages",
            Some(&send_to_alice()),
        )
        .await;
    if sent.status != 201 {
        assert_unavailable(&sent);
    }
    let not_ready = app.get("/readyz").await;
    assert_unavailable(&not_ready);
    let reason = not_ready.json()["detail"].as_str().unwrap().to_owned();
    assert!(reason.contains("full"), "{reason}");

    disk.free().expect("the filler is deleted");

    app.admin(Method::POST, bulk_path, Some(&bulk(1_000_000)))
        .await
        .expect(200);
    app.admin(
        Method::POST,
        "/v1/apps/shop/messages",
        Some(&send_to_alice()),
    )
    .await
    .expect(201);
    assert_eq!(app.get("/readyz").await.status, 200);
    assert_the_worker_sends_a_queued_message(&app).await;
}

/// Runs `clarion-server` on the database at `path` until it exits, failing after 20 seconds,
/// and returns whether it succeeded and what it wrote to stderr.
fn start_server_on(path: &Path) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion-server"))
        .current_dir(path.parent().unwrap())
        .env_remove("CLARION_CONFIG")
        .env("CLARION_LISTEN", "127.0.0.1:0")
        .env(
            "CLARION_DATABASE_URL",
            format!("sqlite://{}", path.display()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "clarion-server started on {} instead of refusing it",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    (
        status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `clarion-server` on the database at `path` and asserts that it refused to start,
/// naming the file and `problem` on stderr.
fn assert_refused_at_start(path: &Path, problem: &str) {
    let (started, stderr) = start_server_on(path);
    assert!(!started, "{stderr}");
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
    assert!(stderr.contains(problem), "{stderr}");
}

/// The `n`th byte of a deterministic run of garbage.
fn garbage_byte(n: usize) -> u8 {
    (n.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// Creates a migrated database at `path` with an admin key (so that the server has nothing to
/// write at start), and closes it.
async fn create_database(path: &Path) {
    let config = Config {
        database: DatabaseConfig {
            url: format!("sqlite://{}", path.display()),
            ..DatabaseConfig::default()
        },
        ..Config::default()
    };
    let runtime = wiring::build(config, "test").await.expect("a new database");
    create_key(&runtime.service, KeyScope::Admin).await;
    runtime.store.close().await;
    // The last connection to close copies the write-ahead log into the file and deletes it.
    // Which one is last is not always clear: a connection closes on a thread of its own, and
    // on a loaded machine two may close at the same moment and each leave the log to the
    // other. So a connection of the test's own makes sure it is alone (switching the journal
    // out of WAL needs that), switches back, and closes last.
    let url = format!("sqlite://{}", path.display());
    let log = path.with_extension("db-wal");
    eventually(Duration::from_secs(20), || async {
        let mut connection = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("the database opens again");
        let alone = sqlx::query_scalar::<_, String>("PRAGMA journal_mode = DELETE")
            .fetch_one(&mut connection)
            .await
            .is_ok_and(|mode| mode.eq_ignore_ascii_case("delete"));
        if alone {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&mut connection)
                .await
                .expect("the journal goes back to WAL");
        }
        sqlx::Connection::close(connection)
            .await
            .expect("the connection closes");
        alone.then_some(())
    })
    .await;
    assert!(
        !log.exists(),
        "the write-ahead log stays after the last connection closed"
    );
}

#[tokio::test]
async fn a_read_only_database_is_refused_at_start_naming_the_file_and_the_problem() {
    let disk = SmallDisk::mount(16 << 20).expect("a small disk");
    let path = disk.path().join("clarion.db");
    create_database(&path).await;
    disk.remount_read_only().expect("the disk turns read-only");

    assert_refused_at_start(&path, "read-only");
    let in_process = SqliteStore::connect(&path.display().to_string()).await;

    let error = format!("{:#}", in_process.unwrap_err());
    assert!(error.contains("read-only"), "{error}");
}

#[tokio::test]
async fn a_database_file_that_cannot_be_written_is_refused_at_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clarion.db");
    create_database(&path).await;
    // The folder stays writable: SQLite opens the file read-only and every read works.
    let _read_only = ReadOnlyFile::bind(&path).expect("a read-only bind mount");

    assert_refused_at_start(&path, "read-only");
}

#[tokio::test]
async fn a_file_of_garbage_is_refused_at_start_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clarion.db");
    let garbage: Vec<u8> = (0..64 * 1024).map(garbage_byte).collect();
    std::fs::write(&path, garbage).unwrap();

    assert_refused_at_start(&path, "not an SQLite database");
}

#[tokio::test]
async fn a_database_whose_tables_are_damaged_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clarion.db");
    create_database(&path).await;
    // Garbage over every page but the first (the header and the schema), so that the schema
    // reads and the tables do not.
    let mut bytes = std::fs::read(&path).unwrap();
    let page = 4096;
    assert!(bytes.len() > 2 * page, "{} bytes", bytes.len());
    for (n, byte) in bytes.iter_mut().enumerate().skip(page) {
        *byte = garbage_byte(n);
    }
    std::fs::write(&path, bytes).unwrap();

    assert_refused_at_start(&path, "damaged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_postgresql_answers_503_and_everything_works_again_once_it_is_started() {
    let cluster = PrivatePostgres::start().expect("a private PostgreSQL cluster");
    let app = serve(cluster.url()).await;
    let devices = "/v1/apps/shop/devices";
    let device = json!({"platform": "fcm", "token": "fcm-token-before", "user_id": "alice"});
    app.admin(Method::POST, devices, Some(&device))
        .await
        .expect(201);
    assert_eq!(app.get("/readyz").await.status, 200);

    cluster.stop().expect("the cluster stops");

    // A client token is checked without the store, so the registration reaches it.
    let token = client_token(SHOP_SECRET, "alice", 3600);
    let device = json!({"platform": "fcm", "token": "fcm-token-during"});
    assert_unavailable(
        &app.call(Method::POST, devices, Some(&token), Some(&device))
            .await,
    );
    assert_unavailable(&app.admin(Method::POST, devices, Some(&device)).await);
    assert_unavailable(&app.get("/readyz").await);

    cluster.start_again().expect("the cluster starts again");

    eventually(Duration::from_secs(30), || async {
        (app.get("/readyz").await.status == 200).then_some(())
    })
    .await;
    app.admin(Method::POST, devices, Some(&device))
        .await
        .expect(201);
    app.admin(
        Method::POST,
        "/v1/apps/shop/messages",
        Some(&send_to_alice()),
    )
    .await
    .expect(201);
    assert_the_worker_sends_a_queued_message(&app).await;
}
