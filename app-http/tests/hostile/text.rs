//! NUL characters in every text field a tenant or a phone can write: refused with a 422 that
//! names the field, as PostgreSQL cannot store them (the other store must agree).

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Auth, Call};
use crate::suite::{Suite, expect};
use crate::tokens::client_token;

pub async fn run(suite: &mut Suite) {
    suite.area("NUL characters");
    let devices = "/v1/apps/shop/devices";
    let messages = "/v1/apps/shop/messages";
    let message = |extra: Value| {
        let mut body = json!({ "target": { "user_id": "alice" }, "body": "b" });
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        body
    };
    let alice = client_token(&json!({ "sub": "alice" }), 3600);
    let rows: Vec<(&str, Call, &'static str)> = vec![
        (
            "a device name",
            Call::json(
                Method::POST,
                devices,
                &json!({ "platform": "fcm", "token": "nul-name", "name": "a\u{0}b" }),
            ),
            "name",
        ),
        (
            "a device name sent with a client token",
            Call::json(
                Method::POST,
                devices,
                &json!({ "platform": "fcm", "token": "nul-name-client", "name": "a\u{0}b" }),
            )
            .auth(Auth::Bearer(alice)),
            "name",
        ),
        (
            "a user id",
            Call::json(
                Method::POST,
                devices,
                &json!({ "platform": "fcm", "token": "nul-user", "user_id": "a\u{0}b" }),
            ),
            "user_id",
        ),
        (
            "a message heading",
            Call::json(
                Method::POST,
                messages,
                &message(json!({ "heading": "a\u{0}" })),
            ),
            "heading",
        ),
        (
            "a message body",
            Call::json(
                Method::POST,
                messages,
                &message(json!({ "body": "a\u{0}" })),
            ),
            "body",
        ),
        (
            "a string in a message's extra data",
            Call::json(
                Method::POST,
                messages,
                &message(json!({ "extra_data": { "k": "a\u{0}" } })),
            ),
            "extra_data",
        ),
        (
            "a key in a message's extra data",
            Call::json(
                Method::POST,
                messages,
                &message(json!({ "extra_data": { "a\u{0}": "v" } })),
            ),
            "extra_data",
        ),
        (
            "a message tag",
            Call::json(Method::POST, messages, &message(json!({ "tag": "a\u{0}" }))),
            "tag",
        ),
        (
            "a template body",
            Call::json(
                Method::PUT,
                "/v1/apps/shop/templates/nul-body",
                &json!({ "body": "a\u{0}b" }),
            ),
            "body",
        ),
        (
            "a template heading",
            Call::json(
                Method::PUT,
                "/v1/apps/shop/templates/nul-heading",
                &json!({ "body": "b", "heading": "a\u{0}" }),
            ),
            "heading",
        ),
        (
            "an API key name",
            Call::json(
                Method::POST,
                "/v1/keys",
                &json!({ "name": "a\u{0}b", "scope": "app:shop" }),
            )
            .auth(Auth::Admin),
            "name",
        ),
    ];
    for (name, call, field) in rows {
        suite.row(name, call, &expect(&[422], &[field])).await;
    }
}
