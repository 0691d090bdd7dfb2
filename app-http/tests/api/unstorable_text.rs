//! Text PostgreSQL cannot store (a NUL character, also as `\u0000` in JSON strings and object
//! keys) is refused in every field with a 422 naming the field, the same on SQLite and on
//! PostgreSQL, and nothing is stored or changed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::TestApp;
use crate::postgres::{STORES, spawn_shop_and_news_on};

const DEVICES: &str = "/v1/apps/shop/devices";
const MESSAGES: &str = "/v1/apps/shop/messages";
const TEMPLATES: &str = "/v1/apps/shop/templates";

/// One request with a NUL in one field, and the field the 422 must name.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    field: &'static str,
}

fn post(path: &str, body: Value, field: &'static str) -> Case {
    Case {
        method: Method::POST,
        path: path.to_owned(),
        body: Some(body),
        field,
    }
}

fn get(path: &str, field: &'static str) -> Case {
    Case {
        method: Method::GET,
        path: path.to_owned(),
        body: None,
        field,
    }
}

/// A registration of a new FCM token with `extra` merged in.
fn device(extra: &Value) -> Value {
    let mut body = json!({"platform": "fcm", "token": "fcm-token-new"});
    merge(&mut body, extra);
    body
}

/// A message to alice with `extra` merged in.
fn message(extra: &Value) -> Value {
    let mut body = json!({"target": {"user_id": "alice"}, "body": "Hello", "dispatch": "now"});
    merge(&mut body, extra);
    body
}

/// A send of the stored template `greet` to alice with `extra` merged in.
fn from_template(extra: &Value) -> Value {
    let mut body =
        json!({"slug": "greet", "context": {"name": "Ann"}, "target": {"user_id": "alice"}});
    merge(&mut body, extra);
    body
}

fn template(extra: &Value) -> Value {
    let mut body = json!({"slug": "other", "body": "Hi {{ name }}"});
    merge(&mut body, extra);
    body
}

fn merge(body: &mut Value, extra: &Value) {
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            body.insert(key.clone(), value.clone());
        }
    }
}

fn cases(device_id: i64) -> Vec<Case> {
    let nul = "a\u{0}b";
    let fcm = |token: &str| json!({"platform": "fcm", "token": token});
    vec![
        // Devices.
        post(DEVICES, device(&json!({"name": nul})), "name"),
        post(DEVICES, device(&json!({"device_id": nul})), "device_id"),
        post(DEVICES, device(&json!({"user_id": nul})), "user_id"),
        post(DEVICES, fcm(nul), "token"),
        post(
            DEVICES,
            json!({"platform": "webpush", "token": "https://push.example.com/send/a\u{0}b",
                   "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
                   "auth": "BTBZMqHH6r4Tts7J_aSIgg"}),
            "token",
        ),
        post(
            &format!("{DEVICES}/bulk"),
            json!({"devices": [fcm("fcm-token-a"), device(&json!({"name": nul}))]}),
            "devices[1].name",
        ),
        post(
            &format!("{DEVICES}/bulk"),
            json!({"devices": [device(&json!({"device_id": nul}))]}),
            "devices[0].device_id",
        ),
        Case {
            method: Method::PATCH,
            path: format!("{DEVICES}/{device_id}"),
            body: Some(json!({"name": nul})),
            field: "name",
        },
        get(&format!("{DEVICES}?user_id=a%00b"), "user_id"),
        // Messages.
        post(MESSAGES, message(&json!({"heading": nul})), "heading"),
        post(MESSAGES, message(&json!({"body": nul})), "body"),
        post(
            MESSAGES,
            message(&json!({"url": "https://shop.example/a\u{0}b"})),
            "url",
        ),
        post(
            MESSAGES,
            message(&json!({"extra_data": {"note": nul}})),
            "extra_data.note",
        ),
        post(
            MESSAGES,
            message(&json!({"extra_data": {"order": {"lines": ["one", nul]}}})),
            "extra_data.order.lines[1]",
        ),
        post(
            MESSAGES,
            message(&json!({"extra_data": {"order": {nul: 1}}})),
            "extra_data.order[\"a\\u0000b\"]",
        ),
        post(MESSAGES, message(&json!({"tag": nul})), "tag"),
        post(
            MESSAGES,
            message(&json!({"related_objects": [{"kind": "order", "object_id": nul}]})),
            "related_objects[0]",
        ),
        post(
            MESSAGES,
            message(&json!({"target": {"user_id": nul}})),
            "target.user_id",
        ),
        post(
            MESSAGES,
            message(&json!({"options": {"sound": nul}})),
            "options.sound",
        ),
        post(
            MESSAGES,
            message(&json!({"options": {"thread_id": nul}})),
            "options.thread_id",
        ),
        post(
            MESSAGES,
            message(&json!({"options": {"category": nul}})),
            "options.category",
        ),
        post(
            MESSAGES,
            message(&json!({"options": {"collapse_key": nul}})),
            "options.collapse_key",
        ),
        get(&format!("{MESSAGES}?tag=a%00b"), "tag"),
        // Template sends: a NUL-free template renders a context value with a NUL.
        post(
            &format!("{MESSAGES}/template"),
            from_template(&json!({"context": {"name": nul}})),
            "body",
        ),
        post(
            &format!("{MESSAGES}/template"),
            from_template(&json!({"extra_data": {nul: "x"}})),
            "extra_data[\"a\\u0000b\"]",
        ),
        // Templates.
        post(TEMPLATES, template(&json!({"body": nul})), "body"),
        post(TEMPLATES, template(&json!({"heading": nul})), "heading"),
        post(
            TEMPLATES,
            template(&json!({"url": "https://shop.example/a\u{0}b"})),
            "url",
        ),
        post(TEMPLATES, template(&json!({"slug": nul})), "slug"),
        Case {
            method: Method::PUT,
            path: format!("{TEMPLATES}/greet"),
            body: Some(json!({"body": nul})),
            field: "body",
        },
        // Keys.
        post(
            "/v1/keys",
            json!({"name": nul, "scope": "app:shop"}),
            "name",
        ),
    ]
}

/// Everything the API shows of what is stored.
async fn snapshot(app: &TestApp) -> Vec<Value> {
    let mut seen = Vec::new();
    for path in [DEVICES, MESSAGES, TEMPLATES, "/v1/keys"] {
        seen.push(app.admin(Method::GET, path, None).await.expect(200));
    }
    seen
}

#[tokio::test]
async fn a_nul_in_any_text_field_is_a_422_naming_the_field_on_both_stores_and_stores_nothing() {
    let mut failures = Vec::new();
    for store in STORES {
        let (app, _schema) = spawn_shop_and_news_on(store).await;
        let registered = app
            .admin(
                Method::POST,
                DEVICES,
                Some(&json!({"platform": "fcm", "token": "fcm-token-1", "user_id": "alice", "name": "phone"})),
            )
            .await
            .expect(201);
        app.admin(
            Method::POST,
            TEMPLATES,
            Some(&json!({"slug": "greet", "body": "Hi {{ name }}", "allow_duplicates": true})),
        )
        .await
        .expect(201);
        let device_id = registered["id"].as_i64().expect("a device id");

        for case in cases(device_id) {
            let before = snapshot(&app).await;
            let reply = app
                .admin(case.method.clone(), &case.path, case.body.as_ref())
                .await;
            let after = snapshot(&app).await;

            let what = format!("{store:?} {} {}", case.method, case.path);
            let problem = serde_json::from_str::<Value>(&reply.body).unwrap_or_default();
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .map(|errors| errors.iter().filter_map(|e| e["field"].as_str()).collect())
                .unwrap_or_default();
            let detail = problem["detail"].as_str().unwrap_or_default();
            if reply.status != 422
                || reply.content_type != "application/problem+json"
                || fields != [case.field]
                || !detail.starts_with(&format!("{}: ", case.field))
            {
                failures.push(format!(
                    "{what}: want 422 naming {:?}, got {}: {}",
                    case.field, reply.status, reply.body
                ));
            }
            if after != before {
                failures.push(format!("{what}: the stored data changed"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Writes a NUL into text an older version stored on SQLite, behind the service's back.
async fn store_nul_behind_the_service(database: &std::path::Path) {
    use sqlx::Connection as _;

    let url = format!("sqlite://{}", database.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("the database opens");
    for sql in [
        "UPDATE devices SET name = ?1, device_id = ?1",
        "UPDATE messages SET heading = ?1, body = ?1, url = ?1, \
         extra_data = '{\"a\\u0000b\": \"c\\u0000d\"}'",
        "UPDATE templates SET body = ?1 || '{{ name }}'",
        "UPDATE api_keys SET name = ?1",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind("a\u{0}b")
            .execute(&mut conn)
            .await
            .expect("the old row is written");
    }
    conn.close().await.ok();
}

#[tokio::test]
async fn text_with_a_nul_stored_on_sqlite_by_an_older_version_still_reads_and_is_refused_only_when_sent()
 {
    let (runtime, dir) = crate::helpers::runtime_with(crate::helpers::shop_and_news).await;
    let database = dir.path().join("clarion.db");
    let app = crate::helpers::spawn(runtime, dir).await;
    let device = app
        .admin(
            Method::POST,
            DEVICES,
            Some(&json!({"platform": "fcm", "token": "fcm-token-1", "user_id": "alice"})),
        )
        .await
        .expect(201)["id"]
        .clone();
    let message = app
        .admin(Method::POST, MESSAGES, Some(&message(&json!({}))))
        .await
        .expect(201)["id"]
        .clone();
    app.admin(
        Method::POST,
        TEMPLATES,
        Some(&json!({"slug": "greet", "body": "Hi {{ name }}"})),
    )
    .await
    .expect(201);
    store_nul_behind_the_service(&database).await;

    let read_device = app
        .admin(Method::GET, &format!("{DEVICES}/{device}"), None)
        .await
        .expect(200);
    let read_message = app
        .admin(Method::GET, &format!("{MESSAGES}/{message}"), None)
        .await
        .expect(200);
    let read_template = app
        .admin(Method::GET, &format!("{TEMPLATES}/greet"), None)
        .await
        .expect(200);
    let keys = app.admin(Method::GET, "/v1/keys", None).await.expect(200);
    for list in [DEVICES, MESSAGES, TEMPLATES] {
        app.admin(Method::GET, list, None).await.expect(200);
    }
    let renamed = app
        .admin(
            Method::PATCH,
            &format!("{DEVICES}/{device}"),
            Some(&json!({"name": "phone"})),
        )
        .await
        .expect(200);
    let sent = app
        .admin(
            Method::POST,
            &format!("{MESSAGES}/template"),
            Some(&from_template(&json!({}))),
        )
        .await
        .expect(422);

    assert_eq!(read_device["name"], "a\u{0}b");
    assert_eq!(read_device["device_id"], "a\u{0}b");
    assert_eq!(read_message["heading"], "a\u{0}b");
    assert_eq!(read_message["extra_data"], json!({"a\u{0}b": "c\u{0}d"}));
    assert_eq!(read_template["body"], "a\u{0}b{{ name }}");
    assert!(keys.to_string().contains(r#""name":"a\u0000b""#), "{keys}");
    assert_eq!(renamed["name"], "phone");
    assert_eq!(sent["errors"][0]["field"], "body", "{sent}");
}
