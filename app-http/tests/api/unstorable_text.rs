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
            let fields: Vec<String> = serde_json::from_str::<Value>(&reply.body)
                .ok()
                .and_then(|problem| problem["errors"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect();
            if reply.status != 422
                || reply.content_type != "application/problem+json"
                || fields != [case.field]
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
