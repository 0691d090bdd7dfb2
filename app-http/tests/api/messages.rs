use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_shop_and_news};

async fn device_for(app: &TestApp, user: &str, n: u8) -> i64 {
    let body =
        json!({"platform": "fcm", "token": format!("fcm-token-{user}-{n}"), "user_id": user});
    app.admin(Method::POST, "/v1/apps/shop/devices", Some(&body))
        .await
        .expect(201)["id"]
        .as_i64()
        .unwrap()
}

fn to_user(user: &str) -> Value {
    json!({"target": {"user_id": user}, "heading": "Hello", "body": "Your order has shipped", "tag": "orders"})
}

#[tokio::test]
async fn sending_now_answers_201_with_a_debug_message_and_its_deliveries() {
    let app = spawn_shop_and_news().await;
    let first = device_for(&app, "alice", 1).await;
    let second = device_for(&app, "alice", 2).await;

    let message = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages",
            Some(&to_user("alice")),
        )
        .await
        .expect(201);

    assert_eq!(message["state"], "DEBUG");
    assert_eq!(message["sender"], "debug");
    assert_eq!(message["target"], json!({"user_id": "alice"}));
    let deliveries = message["deliveries"].as_array().unwrap();
    let devices: Vec<i64> = deliveries
        .iter()
        .map(|d| d["device_id"].as_i64().unwrap())
        .collect();
    assert_eq!(devices, [first, second]);
    assert!(deliveries.iter().all(|d| d["state"] == "debug"));
    let read = app
        .admin(
            Method::GET,
            &format!("/v1/apps/shop/messages/{}", message["id"]),
            None,
        )
        .await
        .expect(200);
    assert_eq!(read["deliveries"], message["deliveries"]);
    assert_eq!(read["deliveries_total"], 2);
}

#[tokio::test]
async fn a_queued_send_answers_202_and_a_broadcast_is_queued_by_default() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    let mut queued = to_user("alice");
    queued["dispatch"] = json!("queue");

    let queued = app
        .admin(Method::POST, "/v1/apps/shop/messages", Some(&queued))
        .await;
    let broadcast = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages",
            Some(&json!({"target": {"broadcast": {"platform": null}}, "body": "Sale!"})),
        )
        .await;

    assert_eq!(queued.expect(202)["state"], "WAITING");
    let broadcast = broadcast.expect(202);
    assert_eq!(broadcast["state"], "WAITING");
    assert_eq!(
        broadcast["target"],
        json!({"broadcast": {"platform": null}})
    );
}

#[tokio::test]
async fn messages_are_listed_newest_first_by_tag_recipient_and_related_object() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    for n in 0..3 {
        let mut body = to_user("alice");
        body["related_objects"] = json!([{"kind": "order", "object_id": n.to_string()}]);
        app.admin(Method::POST, "/v1/apps/shop/messages", Some(&body))
            .await
            .expect(201);
    }
    app.admin(
        Method::POST,
        "/v1/apps/shop/messages",
        Some(&json!({"target": {"user_id": "bob"}, "body": "hi"})),
    )
    .await
    .expect(201);

    let tagged = app
        .admin(
            Method::GET,
            "/v1/apps/shop/messages?tag=orders&limit=2",
            None,
        )
        .await
        .expect(200);
    let cursor = tagged["next_cursor"].as_i64().unwrap();
    let older = app
        .admin(
            Method::GET,
            &format!("/v1/apps/shop/messages?tag=orders&limit=2&before={cursor}"),
            None,
        )
        .await
        .expect(200);
    let about = app
        .admin(Method::GET, "/v1/apps/shop/messages?related=order:1", None)
        .await
        .expect(200);
    let to_bob = app
        .admin(
            Method::GET,
            "/v1/apps/shop/messages?recipient=bob&state=ERROR&created_after=2000-01-01T00:00:00Z",
            None,
        )
        .await
        .expect(200);

    let ids: Vec<i64> = tagged["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_i64().unwrap())
        .collect();
    assert!(ids[0] > ids[1], "newest first: {ids:?}");
    assert_eq!(older["items"].as_array().unwrap().len(), 1);
    assert_eq!(older["next_cursor"], Value::Null);
    assert_eq!(about["items"].as_array().unwrap().len(), 1);
    assert_eq!(about["items"][0]["related_objects"][0]["object_id"], "1");
    assert_eq!(to_bob["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        to_bob["items"][0]["error"],
        "recipient bob has no active device"
    );
}

#[tokio::test]
async fn only_an_error_message_can_be_retried_and_only_a_waiting_one_cancelled() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    let failed = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages",
            Some(&to_user("nobody")),
        )
        .await
        .expect(201);
    let mut queued = to_user("alice");
    queued["dispatch"] = json!("queue");
    let waiting = app
        .admin(Method::POST, "/v1/apps/shop/messages", Some(&queued))
        .await
        .expect(202);
    let path = |m: &Value, action: &str| format!("/v1/apps/shop/messages/{}/{action}", m["id"]);

    let cancel_failed = app
        .admin(Method::POST, &path(&failed, "cancel"), None)
        .await;
    let retry_waiting = app
        .admin(Method::POST, &path(&waiting, "retry"), None)
        .await;
    let retried = app.admin(Method::POST, &path(&failed, "retry"), None).await;
    let cancelled = app
        .admin(Method::POST, &path(&waiting, "cancel"), None)
        .await;

    assert_eq!(failed["state"], "ERROR");
    cancel_failed.expect(409);
    retry_waiting.expect(409);
    assert_eq!(retried.expect(200)["state"], "WAITING");
    let cancelled = cancelled.expect(200);
    assert_eq!(cancelled["state"], "ERROR");
    assert_eq!(cancelled["error"], "cancelled");
}

#[tokio::test]
async fn a_template_send_renders_refuses_a_duplicate_and_names_an_undefined_variable() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    app.admin(
        Method::POST,
        "/v1/apps/shop/templates",
        Some(&json!({"slug": "shipped", "heading": "Order {{ order }}", "body": "Hi {{ name }}, it shipped"})),
    )
    .await
    .expect(201);
    let send = json!({
        "slug": "shipped",
        "context": {"order": 42, "name": "Alice"},
        "target": {"user_id": "alice"},
        "related_objects": [{"kind": "order", "object_id": "42"}],
    });

    let sent = app
        .admin(Method::POST, "/v1/apps/shop/messages/template", Some(&send))
        .await;
    let duplicate = app
        .admin(Method::POST, "/v1/apps/shop/messages/template", Some(&send))
        .await;
    let mut unknown = send.clone();
    unknown["slug"] = json!("nope");
    let unknown = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages/template",
            Some(&unknown),
        )
        .await;
    let mut undefined = send.clone();
    undefined["context"] = json!({"order": 43});
    undefined["related_objects"] = json!([{"kind": "order", "object_id": "43"}]);
    let undefined = app
        .admin(
            Method::POST,
            "/v1/apps/shop/messages/template",
            Some(&undefined),
        )
        .await;

    let sent = sent.expect(201);
    assert_eq!(sent["heading"], "Order 42");
    assert_eq!(sent["body"], "Hi Alice, it shipped");
    assert_eq!(sent["template_slug"], "shipped");
    let duplicate = duplicate.expect(409);
    assert!(
        duplicate["detail"].as_str().unwrap().contains("duplicates"),
        "{duplicate}"
    );
    unknown.expect(404);
    let undefined = undefined.expect(422);
    assert_eq!(undefined["errors"][0]["field"], "body");
    assert!(
        undefined["detail"].as_str().unwrap().contains("name"),
        "{undefined}"
    );
}
