//! `POST /v1/apps/{app}/messages/bulk`: each message answered on its own, and the limits of
//! the whole request.

use std::time::{Duration, Instant};

use clarion_adapters::config::FcmConfig;
use clarion_domain::app::SenderKind;
use clarion_testkit::MockFcm;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    TestApp, eventually, runtime_with, shop_and_news, spawn, spawn_shop_and_news,
};

const BULK: &str = "/v1/apps/shop/messages/bulk";

async fn device_for(app: &TestApp, user: &str, n: u32) -> i64 {
    let body =
        json!({"platform": "fcm", "token": format!("fcm-token-{user}-{n}"), "user_id": user});
    app.admin(Method::POST, "/v1/apps/shop/devices", Some(&body))
        .await
        .expect(201)["id"]
        .as_i64()
        .unwrap()
}

fn to_user(user: &str, body: &str) -> Value {
    json!({"target": {"user_id": user}, "body": body})
}

#[tokio::test]
async fn a_bulk_of_three_good_messages_and_one_bad_answers_each_in_order_and_stores_the_good_ones()
{
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    let bob = device_for(&app, "bob", 1).await;
    app.admin(
        Method::POST,
        "/v1/apps/shop/templates",
        Some(&json!({"slug": "welcome", "body": "Hello {{ name }}"})),
    )
    .await
    .expect(201);
    let messages = json!([
        to_user("alice", "Your order has shipped"),
        {"target": {"device_ids": [bob]}, "body": "Queued", "dispatch": "queue"},
        {"target": {"user_id": ""}, "body": "nobody"},
        {"slug": "welcome", "context": {"name": "Ann"}, "target": {"user_id": "alice"}},
    ]);

    let reply = app
        .admin(Method::POST, BULK, Some(&json!({"messages": messages})))
        .await
        .expect(200);

    assert_eq!(reply["stored"], 3, "{reply}");
    assert_eq!(reply["failed"], 1, "{reply}");
    let results = reply["results"].as_array().unwrap();
    let indexes: Vec<i64> = results
        .iter()
        .map(|r| r["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [201, 202, 422, 201]);
    let problem = &results[2]["problem"];
    assert_eq!(problem["status"], 422);
    assert_eq!(problem["type"], "urn:clarion:problem:validation");
    assert_eq!(problem["errors"][0]["field"], "messages[2].target.user_id");
    assert!(results[2].get("message").is_none(), "{reply}");
    assert_eq!(results[0]["message"]["state"], "DEBUG");
    assert_eq!(results[1]["message"]["state"], "WAITING");
    assert_eq!(results[3]["message"]["body"], "Hello Ann");
    assert_eq!(results[3]["message"]["template_slug"], "welcome");
    for index in [0, 1, 3] {
        let id = &results[index]["message"]["id"];
        let stored = app
            .admin(Method::GET, &format!("/v1/apps/shop/messages/{id}"), None)
            .await
            .expect(200);
        assert_eq!(stored["body"], results[index]["message"]["body"]);
    }
    let all = app
        .admin(Method::GET, "/v1/apps/shop/messages", None)
        .await
        .expect(200);
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn a_broadcast_an_unknown_template_and_an_unknown_device_fail_alone_with_their_problems() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    let messages = json!([
        {"target": {"broadcast": {}}, "body": "Sale!"},
        {"slug": "missing", "target": {"user_id": "alice"}},
        {"target": {"device_ids": [987654]}, "body": "hi"},
        {"target": {"user_id": "alice"}, "body": "hi", "colour": "red"},
        to_user("alice", "fine"),
    ]);

    let reply = app
        .admin(Method::POST, BULK, Some(&json!({"messages": messages})))
        .await
        .expect(200);

    let results = reply["results"].as_array().unwrap();
    let statuses: Vec<i64> = results
        .iter()
        .map(|r| r["status"].as_i64().unwrap())
        .collect();
    assert_eq!(statuses, [422, 404, 422, 422, 201], "{reply}");
    assert_eq!(
        results[0]["problem"]["errors"][0]["field"],
        "messages[0].target"
    );
    assert!(
        results[0]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("broadcast"),
        "{reply}"
    );
    assert!(
        results[1]["problem"]["detail"]
            .as_str()
            .unwrap()
            .contains("missing"),
        "{reply}"
    );
    assert_eq!(
        results[2]["problem"]["errors"][0]["field"],
        "messages[2].target.device_ids"
    );
    assert_eq!(
        results[3]["problem"]["errors"][0]["field"],
        "messages[3].colour"
    );
    assert_eq!(reply["stored"], 1);
}

#[tokio::test]
async fn more_than_1000_messages_or_none_are_refused_and_nothing_is_stored() {
    let app = spawn_shop_and_news().await;
    device_for(&app, "alice", 1).await;
    let many: Vec<Value> = (0..1001)
        .map(|n| to_user("alice", &format!("n{n}")))
        .collect();

    let too_many = app
        .admin(Method::POST, BULK, Some(&json!({"messages": many})))
        .await
        .expect(422);
    let none = app
        .admin(Method::POST, BULK, Some(&json!({"messages": []})))
        .await
        .expect(422);

    assert_eq!(too_many["errors"][0]["field"], "messages");
    let detail = too_many["detail"].as_str().unwrap();
    assert!(
        detail.contains("1001 messages given") && detail.contains("1000"),
        "{detail}"
    );
    assert_eq!(none["errors"][0]["field"], "messages");
    let listed = app
        .admin(Method::GET, "/v1/apps/shop/messages", None)
        .await
        .expect(200);
    assert_eq!(listed["items"], json!([]));
}

#[tokio::test]
async fn messages_reaching_more_than_10000_deliveries_are_refused_counting_device_ids_and_users_devices()
 {
    let app = spawn_shop_and_news().await;
    for n in 0..11 {
        device_for(&app, "alice", n).await;
    }
    let ids: Vec<i64> = (1..=5001).collect();
    let by_ids = json!({"messages": [
        {"target": {"device_ids": ids}, "body": "a", "dispatch": "queue"},
        {"target": {"device_ids": ids}, "body": "b", "dispatch": "queue"},
    ]});
    // 11 devices for each of 1,000 messages: 11,000.
    let by_user: Vec<Value> = (0..1000)
        .map(|n| to_user("alice", &format!("n{n}")))
        .collect();
    // 11 devices for each of 900 messages: 9,900, within the limit.
    let within: Vec<Value> = (0..900)
        .map(|n| json!({"target": {"user_id": "alice"}, "body": format!("n{n}"), "dispatch": "queue"}))
        .collect();

    let by_ids = app
        .admin(Method::POST, BULK, Some(&by_ids))
        .await
        .expect(422);
    let by_user = app
        .admin(Method::POST, BULK, Some(&json!({"messages": by_user})))
        .await
        .expect(422);
    let within = app
        .admin(Method::POST, BULK, Some(&json!({"messages": within})))
        .await
        .expect(200);

    for refused in [&by_ids, &by_user] {
        assert_eq!(refused["errors"][0]["field"], "messages");
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains("more than 10000 deliveries"), "{detail}");
    }
    assert_eq!(within["stored"], 900);
    assert_eq!(within["failed"], 0);
}

#[tokio::test]
async fn a_bulk_body_is_bounded_by_its_own_setting_not_by_the_single_send_limit() {
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        config.http.body_limit_bytes = 4 * 1024;
        config.http.bulk_body_limit_bytes = 64 * 1024;
    })
    .await;
    let app = spawn(runtime, dir).await;
    device_for(&app, "alice", 1).await;
    let text = "x".repeat(1000);
    // About 40 KiB: over the single send's limit, within the bulk one.
    let fits: Vec<Value> = (0..40)
        .map(|_| json!({"target": {"user_id": "alice"}, "body": text, "dispatch": "queue"}))
        .collect();
    // About 80 KiB: over the bulk limit.
    let over: Vec<Value> = (0..80)
        .map(|_| json!({"target": {"user_id": "alice"}, "body": text, "dispatch": "queue"}))
        .collect();

    let fits = app
        .admin(Method::POST, BULK, Some(&json!({"messages": fits})))
        .await
        .expect(200);
    let over = app
        .admin(Method::POST, BULK, Some(&json!({"messages": over})))
        .await
        .expect(413);
    let chunked = app
        .raw(
            Method::POST,
            BULK,
            "application/json",
            serde_json::to_vec(&json!({"messages": [{"target": {"user_id": "alice"}, "body": "x".repeat(70_000)}]})).unwrap(),
        )
        .await
        .expect(413);

    assert_eq!(fits["stored"], 40);
    for refused in [&over, &chunked] {
        let detail = refused["detail"].as_str().unwrap();
        assert!(detail.contains("http.bulk_body_limit_bytes"), "{detail}");
    }
}

#[tokio::test]
async fn a_bulk_body_that_is_not_json_or_not_a_list_of_messages_is_refused_as_a_whole() {
    let app = spawn_shop_and_news().await;

    let not_json = app
        .raw(
            Method::POST,
            BULK,
            "application/json",
            b"{\"messages\": [".to_vec(),
        )
        .await
        .expect(400);
    let not_sent_as_json = app
        .raw(
            Method::POST,
            BULK,
            "text/plain",
            b"{\"messages\": []}".to_vec(),
        )
        .await
        .expect(400);
    let not_a_list = app
        .admin(
            Method::POST,
            BULK,
            Some(&json!({"messages": {"body": "x"}})),
        )
        .await
        .expect(422);
    let unknown_field = app
        .admin(
            Method::POST,
            BULK,
            Some(&json!({"messages": [], "extra": 1})),
        )
        .await
        .expect(422);
    let unknown_app = app
        .admin(
            Method::POST,
            "/v1/apps/nope/messages/bulk",
            Some(&json!({"messages": [to_user("alice", "x")]})),
        )
        .await;

    assert!(
        not_json["detail"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert!(
        not_sent_as_json["detail"]
            .as_str()
            .unwrap()
            .contains("JSON")
    );
    assert_eq!(not_a_list["errors"][0]["field"], "messages");
    assert_eq!(unknown_field["errors"][0]["field"], "messages");
    assert!(
        unknown_app.status == 403 || unknown_app.status == 404,
        "{unknown_app:?}"
    );
}

#[tokio::test]
async fn the_document_describes_the_bulk_body_and_each_result_as_stored_or_failed() {
    let app = spawn_shop_and_news().await;

    let document = app.get("/openapi.json").await.expect(200);

    let operation = &document["paths"]["/v1/apps/{app}/messages/bulk"]["post"];
    let schemas = &document["components"]["schemas"];
    let body = &schemas["BulkSendBody"];
    let result = &schemas["BulkResult"]["oneOf"];
    let stored = &schemas["BulkStored"];
    let failed = &schemas["BulkFailed"];

    assert_eq!(
        operation["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BulkSendBody"
    );
    assert_eq!(
        operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/BulkSendResponse"
    );
    for status in ["400", "413", "422"] {
        assert!(operation["responses"][status].is_object(), "{status}");
    }
    assert_eq!(body["properties"]["messages"]["maxItems"], 1000);
    assert_eq!(body["properties"]["messages"]["minItems"], 1);
    assert_eq!(body["additionalProperties"], false);
    assert_eq!(
        schemas["BulkMessage"]["oneOf"],
        json!([
            {"$ref": "#/components/schemas/SendBody"},
            {"$ref": "#/components/schemas/TemplateSendBody"}
        ])
    );
    assert_eq!(
        *result,
        json!([
            {"$ref": "#/components/schemas/BulkStored"},
            {"$ref": "#/components/schemas/BulkFailed"}
        ])
    );
    assert_eq!(stored["required"], json!(["index", "status", "message"]));
    assert_eq!(failed["required"], json!(["index", "status", "problem"]));
    assert_eq!(
        stored["properties"]["message"]["$ref"],
        "#/components/schemas/MessageResponse"
    );
    assert_eq!(
        failed["properties"]["problem"]["$ref"],
        "#/components/schemas/Problem"
    );
}

#[tokio::test]
async fn now_sends_slower_than_the_wait_are_answered_202_as_stored_and_finish_in_the_background() {
    let fcm = MockFcm::start("bulk-project").await.unwrap();
    fcm.set_delay(Duration::from_secs(3));
    let fcm_config: FcmConfig = serde_json::from_value(json!({
        "service_account": fcm.service_account().json,
        "endpoint": fcm.base_url(),
        "timeout_secs": 30,
    }))
    .unwrap();
    let (runtime, dir) = runtime_with(|config| {
        shop_and_news(config);
        let shop = config.apps.get_mut("shop").unwrap();
        shop.sender = SenderKind::Direct;
        shop.fcm = Some(fcm_config);
        config.http.send_wait_secs = 1;
    })
    .await;
    let app = spawn(runtime, dir).await;
    device_for(&app, "alice", 1).await;
    let messages: Vec<Value> = (0..3).map(|n| to_user("alice", &format!("n{n}"))).collect();
    let started = Instant::now();

    let reply = app
        .admin(Method::POST, BULK, Some(&json!({"messages": messages})))
        .await
        .expect(200);

    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2800), "{waited:?}");
    assert_eq!(reply["stored"], 3, "{reply}");
    for result in reply["results"].as_array().unwrap() {
        assert_eq!(result["status"], 202, "{reply}");
        assert_eq!(result["message"]["state"], "WAITING", "{reply}");
        let path = format!("/v1/apps/shop/messages/{}", result["message"]["id"]);
        eventually(Duration::from_secs(20), || async {
            let message = app.admin(Method::GET, &path, None).await.expect(200);
            (message["state"] == "SENT").then_some(())
        })
        .await;
    }
    assert_eq!(fcm.request_count(), 3);
}
