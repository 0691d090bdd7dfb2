use std::time::Duration;

use sqlx::sqlite::SqlitePoolOptions;
use sqlx::{Connection as _, Sqlite};

use super::Held;

/// A pool of one in-memory connection: what is kept is what the pool cannot hand out.
async fn one_connection() -> Held<Sqlite> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .expect("an in-memory database");
    Held::new(pool, 1)
}

fn kept(held: &Held<Sqlite>) -> usize {
    held.shared.kept().len()
}

#[tokio::test]
async fn a_connection_used_well_is_kept_and_handed_out_again() {
    let held = one_connection().await;
    let mut conn = held.acquire().await.expect("a connection");
    sqlx::query("CREATE TEMP TABLE marker (x)")
        .execute(&mut *conn)
        .await
        .expect("created");
    conn.done();
    assert_eq!(kept(&held), 1, "kept after done");

    let mut again = held.acquire().await.expect("a connection");
    assert_eq!(kept(&held), 0, "handed out");
    // A temporary table lives on its connection only.
    let marked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sqlite_temp_master WHERE name = 'marker'")
            .fetch_one(&mut *again)
            .await
            .expect("a count");
    assert_eq!(marked, 1, "the same connection comes back");
    again.done();
}

#[tokio::test]
async fn a_connection_not_marked_done_goes_back_to_the_pool_which_hands_it_out_again() {
    let held = one_connection().await;
    {
        let mut conn = held.acquire().await.expect("a connection");
        sqlx::query("SELECT 1")
            .execute(&mut *conn)
            .await
            .expect("ran");
        // Dropped without `done`: back to sqlx's pool and its check.
    }
    assert_eq!(kept(&held), 0, "nothing kept");
    let conn = tokio::time::timeout(Duration::from_secs(5), held.acquire())
        .await
        .expect("the pool hands the connection out again")
        .expect("a connection");
    conn.done();
    assert_eq!(kept(&held), 1);
}

#[tokio::test]
async fn the_pool_can_be_used_directly_once_the_kept_connections_are_released() {
    let held = one_connection().await;
    held.acquire().await.expect("a connection").done();
    held.release_kept();
    let one: i64 = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query_scalar("SELECT 1").fetch_one(held.pool()),
    )
    .await
    .expect("the pool is not waiting for a kept connection")
    .expect("a row");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn closing_does_not_wait_for_kept_connections() {
    let held = one_connection().await;
    held.acquire().await.expect("a connection").done();
    tokio::time::timeout(Duration::from_secs(5), held.close())
        .await
        .expect("closed without waiting");
    assert!(
        held.acquire().await.is_err(),
        "a closed pool hands out nothing"
    );
}

#[tokio::test]
async fn a_committed_transaction_keeps_its_connection() {
    let held = one_connection().await;
    let mut conn = held.acquire().await.expect("a connection");
    let tx = conn.begin().await.expect("begun");
    tx.commit().await.expect("committed");
    conn.done();
    assert_eq!(kept(&held), 1);
}

#[tokio::test]
async fn a_connection_inside_a_transaction_is_not_kept_even_if_marked_done() {
    let held = one_connection().await;
    let mut conn = held.acquire().await.expect("a connection");
    let tx = conn.begin().await.expect("begun");
    // The transaction is neither committed nor rolled back (as if its owner had forgotten
    // it), so the connection is still inside it when the connection is dropped.
    std::mem::forget(tx);
    conn.done();
    assert_eq!(kept(&held), 0, "not kept");
    let mut next = tokio::time::timeout(Duration::from_secs(5), held.acquire())
        .await
        .expect("the pool hands out a connection")
        .expect("a connection");
    sqlx::query("SELECT 1")
        .execute(&mut *next)
        .await
        .expect("the connection answers");
}

#[tokio::test]
async fn at_most_the_given_number_of_connections_are_handed_out_at_once() {
    let held = one_connection().await;
    let first = held.acquire().await.expect("a connection");
    let second = tokio::time::timeout(Duration::from_millis(200), held.acquire()).await;
    assert!(second.is_err(), "the second waits while the first is out");
    first.done();
    let second = tokio::time::timeout(Duration::from_secs(5), held.acquire())
        .await
        .expect("handed out once the first is back")
        .expect("a connection");
    second.done();
}
