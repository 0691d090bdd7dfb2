use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{SHOP_SECRET, client_token, spawn_shop_and_news};

fn apns(n: u8) -> String {
    format!("{:02x}", n).repeat(32)
}

fn apns_device(n: u8, user: &str) -> Value {
    json!({"platform": "apns", "token": apns(n), "user_id": user, "name": "phone"})
}

#[tokio::test]
async fn registering_a_new_token_answers_201_and_the_same_token_again_200() {
    let app = spawn_shop_and_news().await;
    let path = "/v1/apps/shop/devices";

    let first = app
        .admin(Method::POST, path, Some(&apns_device(1, "alice")))
        .await;
    let again = app
        .admin(Method::POST, path, Some(&apns_device(1, "bob")))
        .await;

    let first = first.expect(201);
    let again = again.expect(200);
    assert_eq!(first["id"], again["id"]);
    assert_eq!(first["platform"], "apns");
    assert_eq!(again["user_id"], "bob");
    assert_eq!(again["active"], true);
}

#[tokio::test]
async fn devices_are_listed_by_filter_in_pages_with_a_cursor() {
    let app = spawn_shop_and_news().await;
    for n in 1..=3 {
        app.admin(
            Method::POST,
            "/v1/apps/shop/devices",
            Some(&apns_device(n, "alice")),
        )
        .await
        .expect(201);
    }
    app.admin(
        Method::POST,
        "/v1/apps/shop/devices",
        Some(&apns_device(9, "bob")),
    )
    .await
    .expect(201);

    let page = app
        .admin(
            Method::GET,
            "/v1/apps/shop/devices?user_id=alice&limit=2",
            None,
        )
        .await
        .expect(200);
    let cursor = page["next_cursor"].as_i64().expect("a cursor");
    let rest = app
        .admin(
            Method::GET,
            &format!("/v1/apps/shop/devices?user_id=alice&limit=2&after={cursor}"),
            None,
        )
        .await
        .expect(200);

    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_eq!(rest["next_cursor"], Value::Null);
    let everyone = app
        .admin(
            Method::GET,
            "/v1/apps/shop/devices?platform=apns&active=true",
            None,
        )
        .await
        .expect(200);
    assert_eq!(everyone["items"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn a_device_can_be_read_renamed_deactivated_and_deleted() {
    let app = spawn_shop_and_news().await;
    let created = app
        .admin(
            Method::POST,
            "/v1/apps/shop/devices",
            Some(&apns_device(1, "alice")),
        )
        .await
        .expect(201);
    let path = format!("/v1/apps/shop/devices/{}", created["id"]);

    let read = app.admin(Method::GET, &path, None).await.expect(200);
    let patched = app
        .admin(
            Method::PATCH,
            &path,
            Some(&json!({"name": "tablet", "active": false})),
        )
        .await
        .expect(200);
    let cleared = app
        .admin(Method::PATCH, &path, Some(&json!({"name": null})))
        .await
        .expect(200);
    let deleted = app.admin(Method::DELETE, &path, None).await;
    let gone = app.admin(Method::GET, &path, None).await;

    assert_eq!(read["name"], "phone");
    assert_eq!(patched["name"], "tablet");
    assert_eq!(patched["active"], false);
    assert!(patched["deactivated_at"].is_string());
    assert_eq!(cleared["name"], Value::Null);
    assert_eq!(cleared["active"], false, "an absent field stays as it is");
    assert_eq!(deleted.status, 204);
    gone.expect(404);
}

#[tokio::test]
async fn a_client_token_registers_for_its_own_user_and_sees_only_its_devices() {
    let app = spawn_shop_and_news().await;
    let alice = client_token(SHOP_SECRET, "alice", 600);
    app.admin(
        Method::POST,
        "/v1/apps/shop/devices",
        Some(&apns_device(9, "bob")),
    )
    .await
    .expect(201);

    let mine = app
        .call(
            Method::POST,
            "/v1/apps/shop/devices",
            Some(&alice),
            Some(&json!({"platform": "fcm", "token": "fcm-token-of-alice"})),
        )
        .await
        .expect(201);
    let for_bob = app
        .call(
            Method::POST,
            "/v1/apps/shop/devices",
            Some(&alice),
            Some(&json!({"platform": "fcm", "token": "another", "user_id": "bob"})),
        )
        .await;
    let listed = app
        .call(
            Method::GET,
            "/v1/apps/shop/devices?user_id=bob",
            Some(&alice),
            None,
        )
        .await
        .expect(200);
    let give_away = app
        .call(
            Method::PATCH,
            &format!("/v1/apps/shop/devices/{}", mine["id"]),
            Some(&alice),
            Some(&json!({"user_id": "bob"})),
        )
        .await;

    assert_eq!(mine["user_id"], "alice");
    for_bob.expect(403);
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["user_id"], "alice");
    give_away.expect(403);
}

#[tokio::test]
async fn a_web_push_device_keeps_its_keys() {
    let app = spawn_shop_and_news().await;
    let p256dh = format!("BA{}", "A".repeat(85));
    let body = json!({
        "platform": "webpush",
        "token": "https://push.example.com/send/abc",
        "p256dh": p256dh,
        "auth": "AAAAAAAAAAAAAAAAAAAAAA",
        "user_id": "alice",
    });

    let reply = app
        .admin(Method::POST, "/v1/apps/shop/devices", Some(&body))
        .await;

    // The example's host does not resolve to a public address here, or it does; either way
    // the answer is a device or a validation problem naming the token, never a 500.
    match reply.status {
        201 => assert_eq!(reply.json()["p256dh"], body["p256dh"]),
        _ => assert_eq!(reply.expect(422)["errors"][0]["field"], "token"),
    }
}

#[tokio::test]
async fn devices_registered_in_bulk_are_counted_as_created_or_updated() {
    let app = spawn_shop_and_news().await;
    app.admin(
        Method::POST,
        "/v1/apps/shop/devices",
        Some(&apns_device(1, "alice")),
    )
    .await
    .expect(201);
    let devices: Vec<Value> = (1..=3).map(|n| apns_device(n, "bob")).collect();

    let done = app
        .admin(
            Method::POST,
            "/v1/apps/shop/devices/bulk",
            Some(&json!({ "devices": devices })),
        )
        .await
        .expect(200);

    assert_eq!(done, json!({"created": 2, "updated": 1}));
    let page = app
        .admin(Method::GET, "/v1/apps/shop/devices?user_id=bob", None)
        .await
        .expect(200);
    assert_eq!(page["items"].as_array().map(Vec::len), Some(3));
}

#[tokio::test]
async fn a_bulk_registration_with_one_bad_device_names_it_and_registers_none() {
    let app = spawn_shop_and_news().await;
    let devices = json!({"devices": [
        apns_device(1, "alice"),
        {"platform": "apns", "token": "not-hex"},
    ]});

    let refused = app
        .admin(Method::POST, "/v1/apps/shop/devices/bulk", Some(&devices))
        .await
        .expect(422);
    let client = app
        .call(
            Method::POST,
            "/v1/apps/shop/devices/bulk",
            Some(&client_token(SHOP_SECRET, "alice", 600)),
            Some(&json!({"devices": [apns_device(2, "alice")]})),
        )
        .await;

    assert_eq!(
        refused["errors"][0]["field"], "devices[1].token",
        "{refused}"
    );
    client.expect(403);
    let page = app
        .admin(Method::GET, "/v1/apps/shop/devices", None)
        .await
        .expect(200);
    assert_eq!(page["items"], json!([]));
}

#[tokio::test]
async fn a_client_token_not_valid_yet_issued_in_the_future_or_living_too_long_is_401_naming_why() {
    let app = spawn_shop_and_news().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let year = 365 * 24 * 3600;
    let cases = [
        (
            json!({"sub": "alice", "exp": now + 3600, "nbf": now + 600}),
            "nbf",
        ),
        (
            json!({"sub": "alice", "exp": now + 3600, "iat": now + 600}),
            "iat",
        ),
        (
            json!({"sub": "alice", "exp": now + 100 * year, "iat": now}),
            "exp - iat",
        ),
        (json!({"sub": "alice", "exp": now + 100 * year}), "exp"),
    ];

    for (claims, reason) in cases {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SHOP_SECRET.as_bytes()),
        )
        .unwrap();
        let reply = app
            .call(Method::GET, "/v1/apps/shop/devices", Some(&token), None)
            .await;

        let problem = reply.expect(401);
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(reason), "{claims}: {detail}");
    }
}
