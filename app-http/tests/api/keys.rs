use std::time::Duration;

use clarion_adapters::wiring::Runtime;
use clarion_domain::auth::KeyScope;
use clarion_domain::ids::AppId;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    create_key, eventually, runtime_with, shop_and_news, spawn, spawn_shop_and_news,
};

#[tokio::test]
async fn an_admin_creates_lists_and_revokes_keys_and_a_revoked_key_stops_working() {
    let app = spawn_shop_and_news().await;

    let created = app
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "shop backend", "scope": "app:shop"})),
        )
        .await
        .expect(201);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let works = app
        .call(Method::GET, "/v1/apps/shop/templates", Some(&secret), None)
        .await;
    let listed = app.admin(Method::GET, "/v1/keys", None).await.expect(200);
    let revoked = app
        .admin(Method::DELETE, &format!("/v1/keys/{}", created["id"]), None)
        .await
        .expect(200);
    let refused = app
        .call(Method::GET, "/v1/apps/shop/templates", Some(&secret), None)
        .await;
    let unknown = app.admin(Method::DELETE, "/v1/keys/999999", None).await;

    assert!(secret.starts_with("clk_") && secret.len() == 47, "{secret}");
    assert_eq!(created["scope"], "app:shop");
    works.expect(200);
    assert!(
        !listed.to_string().contains(&secret),
        "a list never shows secrets"
    );
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k.get("secret").is_none())
    );
    assert!(revoked["revoked_at"].is_string());
    refused.expect(401);
    unknown.expect(404);
}

#[tokio::test]
async fn a_key_for_an_unknown_application_or_with_a_bad_scope_is_refused() {
    let app = spawn_shop_and_news().await;

    let unknown = app
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "x", "scope": "app:nope"})),
        )
        .await;
    let bad = app
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": "x", "scope": "root"})),
        )
        .await;
    let unnamed = app
        .admin(
            Method::POST,
            "/v1/keys",
            Some(&json!({"name": " ", "scope": "admin"})),
        )
        .await;

    assert_eq!(unknown.expect(422)["errors"][0]["field"], "scope");
    assert_eq!(bad.expect(422)["errors"][0]["field"], "scope");
    assert_eq!(unnamed.expect(422)["errors"][0]["field"], "name");
}

#[tokio::test]
async fn the_first_start_creates_an_admin_key_and_a_later_start_does_not() {
    let (runtime, _dir) = runtime_with(|_| {}).await;
    let Runtime { service, .. } = runtime.clone();
    assert!(!service.has_active_api_keys().await.unwrap());

    let first = clarion_http::Application::build(runtime.clone())
        .await
        .unwrap();
    drop(first);
    let second = clarion_http::Application::build(runtime).await.unwrap();
    drop(second);

    let keys = service.list_api_keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].scope.to_text(), "admin");
}

/// Revokes the key `secret` in the database itself, as the CLI (another process) does, after
/// a request with it succeeded; returns the server and the key.
async fn revoked_behind_the_servers_back(key_cache_ms: u64) -> (crate::helpers::TestApp, String) {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.http.key_cache_ms = key_cache_ms;
    })
    .await;
    let store = runtime.store.clone();
    let app = spawn(runtime, dir).await;
    let secret = create_key(&app.service, KeyScope::App(AppId::parse("shop").unwrap())).await;
    app.call(Method::GET, "/v1/apps/shop/templates", Some(&secret), None)
        .await
        .expect(200);
    let id = store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|key| secret.starts_with(&key.prefix))
        .unwrap()
        .id;
    store
        .revoke_api_key(id, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    (app, secret)
}

#[tokio::test]
async fn a_key_revoked_by_another_process_is_refused_within_the_key_cache_age() {
    let (app, secret) = revoked_behind_the_servers_back(200).await;

    // Well past the age of 200 ms, as a loaded machine may answer the polls slowly.
    eventually(Duration::from_secs(5), || async {
        let reply = app
            .call(Method::GET, "/v1/apps/shop/templates", Some(&secret), None)
            .await;
        (reply.status == 401).then_some(())
    })
    .await;
}

#[tokio::test]
async fn with_the_key_cache_off_a_key_revoked_by_another_process_is_refused_at_once() {
    let (app, secret) = revoked_behind_the_servers_back(0).await;

    let reply = app
        .call(Method::GET, "/v1/apps/shop/templates", Some(&secret), None)
        .await;

    reply.expect(401);
}
