use std::time::Duration;

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn an_unknown_path_is_not_found() {
    let app = spawn_app().await;

    let response = app.get("/nothing-here").await;

    response.expect(404);
}

#[tokio::test]
async fn stopping_the_server_also_wakes_and_stops_the_sleeping_worker() {
    // The default worker polls every 5 seconds; a stop must not wait for the next poll.
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz").await.status, 200);

    let result = tokio::time::timeout(Duration::from_secs(3), app.shut_down()).await;

    let stopped = result.expect("the server stops before the worker's next poll");
    assert!(stopped.is_ok(), "{stopped:?}");
}
