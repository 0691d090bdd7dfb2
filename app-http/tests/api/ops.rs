//! The operations routes and layers: `/readyz`, `/metrics`, the request id and the rate
//! limit.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{runtime_with, shop_and_news, spawn, spawn_app};

#[tokio::test]
async fn readyz_is_ready_when_the_database_answers() {
    let app = spawn_app().await;

    let response = app.get("/readyz").await;

    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.json(), json!({"status": "ready"}));
}

#[tokio::test]
async fn readyz_is_503_with_a_reason_when_the_database_is_gone_while_healthz_stays_ok() {
    let (runtime, dir) = runtime_with(|_| {}).await;
    let store = runtime.store.clone();
    let app = spawn(runtime, dir).await;

    store.close().await;
    let ready = app.get("/readyz").await;
    let healthy = app.get("/healthz").await;

    let problem = ready.expect(503);
    assert_eq!(problem["type"], "urn:clarion:problem:not-ready");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("the database is unavailable: "),
        "{detail}"
    );
    assert_eq!(ready.headers["retry-after"], "5");
    assert!(!ready.body.contains("clarion.db"), "{ready:?}");
    assert_eq!(healthy.status, 200);
}

/// The value of the series whose line starts with `series` (name and labels, as rendered).
fn value_of(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_messages_deliveries_provider_latency_http_requests_and_the_backlog() {
    // An application of its own, so that other tests' messages do not change its counts.
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        let shop = config.apps.remove("shop").unwrap();
        config.apps.insert("metered".to_owned(), shop);
    })
    .await;
    let app = spawn(runtime, dir).await;
    for token in ["fcm-token-m1", "fcm-token-m2"] {
        let device = json!({"platform": "fcm", "token": token, "user_id": "meg"});
        app.admin(Method::POST, "/v1/apps/metered/devices", Some(&device))
            .await
            .expect(201);
    }
    let now = json!({"target": {"user_id": "meg"}, "body": "Shipped"});
    let queued = json!({"target": {"user_id": "meg"}, "body": "Later", "dispatch": "queue"});

    app.admin(Method::POST, "/v1/apps/metered/messages", Some(&now))
        .await
        .expect(201);
    app.admin(Method::POST, "/v1/apps/metered/messages", Some(&queued))
        .await
        .expect(202);
    let scrape = app.get("/metrics").await;

    assert_eq!(scrape.status, 200, "{scrape:?}");
    assert!(scrape.content_type.starts_with("text/plain"), "{scrape:?}");
    let text = &scrape.body;
    let series = |s: &str| value_of(text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        series(r#"clarion_messages_total{app="metered",sender="debug",state="WAITING"}"#),
        2.0
    );
    assert_eq!(
        series(r#"clarion_messages_total{app="metered",sender="debug",state="DEBUG"}"#),
        1.0
    );
    assert!(
        series(r#"clarion_deliveries_total{provider="debug",outcome="debug",reason="none"}"#)
            >= 2.0
    );
    assert!(series(r#"clarion_provider_request_duration_seconds_count{provider="debug"}"#) >= 2.0);
    assert!(
        text.contains(
            r#"clarion_provider_request_duration_seconds_bucket{provider="debug",le="0.005"}"#
        ),
        "{text}"
    );
    assert!(
        series(
            r#"clarion_http_requests_total{method="POST",route="/v1/apps/{app}/messages",status="201"}"#
        ) >= 1.0
    );
    assert!(
        series(
            r#"clarion_http_requests_total{method="POST",route="/v1/apps/{app}/devices",status="201"}"#
        ) >= 2.0
    );
    assert!(
        text.contains(
            r#"clarion_http_request_duration_seconds_count{method="POST",route="/v1/apps/{app}/messages"}"#
        ),
        "{text}"
    );
    assert!(
        !text.contains("route=\"/v1/apps/metered"),
        "raw paths leak: {text}"
    );
    assert_eq!(series("clarion_due_messages"), 1.0);
    assert!(value_of(text, "clarion_busy_workers").is_some(), "{text}");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_a_given_one_is_kept() {
    let app = spawn_app().await;

    let generated = app.get("/healthz").await;
    let given = app
        .client
        .get(app.url("/v1/keys"))
        .header("x-request-id", "req-from-the-client-42")
        .send()
        .await
        .unwrap();

    let id = generated.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    assert_eq!(given.status(), 401);
    assert_eq!(given.headers()["x-request-id"], "req-from-the-client-42");
}

#[tokio::test]
async fn a_credential_over_its_rate_limit_gets_429_with_retry_after_and_others_go_on() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.http.rate_limit_per_second = 1;
        config.http.rate_limit_burst = 2;
    })
    .await;
    let app = spawn(runtime, dir).await;
    let other = crate::helpers::create_key(
        &app.service,
        clarion_domain::auth::KeyScope::App(clarion_domain::ids::AppId::parse("shop").unwrap()),
    )
    .await;

    let first = app.admin(Method::GET, "/v1/apps/shop/devices", None).await;
    let second = app.admin(Method::GET, "/v1/apps/shop/devices", None).await;
    let third = app.admin(Method::GET, "/v1/apps/shop/devices", None).await;
    let another_key = app
        .call(Method::GET, "/v1/apps/shop/devices", Some(&other), None)
        .await;

    assert_eq!((first.status, second.status), (200, 200));
    let problem = third.expect(429);
    assert_eq!(problem["type"], "urn:clarion:problem:too-many-requests");
    let retry_after: u64 = third.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{third:?}");
    assert_eq!(another_key.status, 200, "{another_key:?}");
}

#[tokio::test]
async fn the_rate_limit_does_not_apply_to_failed_authentication_or_open_routes() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.http.rate_limit_per_second = 1;
        config.http.rate_limit_burst = 1;
    })
    .await;
    let app = spawn(runtime, dir).await;

    for _ in 0..3 {
        app.call(Method::GET, "/v1/keys", Some("clk_not-a-real-key"), None)
            .await
            .expect(401);
        assert_eq!(app.get("/healthz").await.status, 200);
    }
}
