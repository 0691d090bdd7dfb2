use reqwest::Method;
use serde_json::json;

use crate::helpers::spawn_shop_and_news;

#[tokio::test]
async fn a_template_is_created_once_read_replaced_previewed_and_deleted() {
    let app = spawn_shop_and_news().await;
    let create = json!({"slug": "welcome", "body": "Hi {{ name }}", "url": "https://shop.example/{{ name }}"});

    let created = app
        .admin(Method::POST, "/v1/apps/shop/templates", Some(&create))
        .await;
    let again = app
        .admin(Method::POST, "/v1/apps/shop/templates", Some(&create))
        .await;
    let read = app
        .admin(Method::GET, "/v1/apps/shop/templates/welcome", None)
        .await;
    let replaced = app
        .admin(
            Method::PUT,
            "/v1/apps/shop/templates/welcome",
            Some(&json!({"body": "Welcome, {{ name }}", "heading": "Hello"})),
        )
        .await;
    let put_new = app
        .admin(
            Method::PUT,
            "/v1/apps/shop/templates/other",
            Some(&json!({"body": "x"})),
        )
        .await;
    let preview = app
        .admin(
            Method::POST,
            "/v1/apps/shop/templates/welcome/preview",
            Some(&json!({"context": {"name": "Ann"}})),
        )
        .await;
    let listed = app
        .admin(Method::GET, "/v1/apps/shop/templates", None)
        .await;
    let deleted = app
        .admin(Method::DELETE, "/v1/apps/shop/templates/welcome", None)
        .await;
    let gone = app
        .admin(Method::GET, "/v1/apps/shop/templates/welcome", None)
        .await;

    assert_eq!(created.expect(201)["is_active"], true);
    again.expect(409);
    assert_eq!(read.expect(200)["body"], "Hi {{ name }}");
    assert_eq!(replaced.expect(200)["heading"], "Hello");
    put_new.expect(201);
    assert_eq!(
        preview.expect(200),
        json!({"body": "Welcome, Ann", "heading": "Hello", "url": null})
    );
    assert_eq!(listed.expect(200)["items"].as_array().unwrap().len(), 2);
    assert_eq!(deleted.status, 204);
    gone.expect(404);
}

#[tokio::test]
async fn a_template_syntax_error_or_a_failed_preview_is_a_422_naming_the_field() {
    let app = spawn_shop_and_news().await;
    app.admin(
        Method::PUT,
        "/v1/apps/shop/templates/hello",
        Some(&json!({"body": "Hi {{ name }}", "heading": "ok"})),
    )
    .await
    .expect(201);

    let syntax = app
        .admin(
            Method::POST,
            "/v1/apps/shop/templates",
            Some(&json!({"slug": "broken", "body": "fine", "heading": "{{ oops"})),
        )
        .await;
    let preview = app
        .admin(
            Method::POST,
            "/v1/apps/shop/templates/hello/preview",
            Some(&json!({"context": {}})),
        )
        .await;

    assert_eq!(syntax.expect(422)["errors"][0]["field"], "heading");
    assert_eq!(preview.expect(422)["errors"][0]["field"], "body");
}
