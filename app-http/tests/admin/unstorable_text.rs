//! A NUL in an admin form is a form error naming the field, never a 500, on both stores, and
//! nothing is saved.

use reqwest::Method;
use serde_json::{Value, json};

use crate::form::Browser;
use crate::helpers::TestApp;
use crate::postgres::{STORES, spawn_shop_and_news_on};

const NUL_REASON: &str = "contains a NUL character (U+0000), which cannot be stored";

fn template_form<'a>(action: &'a str, field: &'a str, value: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("slug", "shipped"),
        ("heading", "Hi {{ name }}"),
        ("body", "Order {{ order }} shipped"),
        ("url", ""),
        ("context", r#"{"name": "Ada", "order": 42}"#),
        ("action", action),
    ];
    for pair in &mut form {
        if pair.0 == field {
            pair.1 = value;
        }
    }
    form
}

/// What the API shows of the stored devices, messages and templates.
async fn stored(app: &TestApp) -> Vec<Value> {
    let mut seen = Vec::new();
    for what in ["devices", "messages", "templates"] {
        let path = format!("/v1/apps/shop/{what}");
        seen.push(app.admin(Method::GET, &path, None).await.expect(200));
    }
    seen
}

#[tokio::test]
async fn a_nul_in_an_admin_form_is_a_form_error_naming_the_field_on_both_stores() {
    for store in STORES {
        let (app, _schema) = spawn_shop_and_news_on(store).await;
        let device = app
            .admin(
                Method::POST,
                "/v1/apps/shop/devices",
                Some(&json!({"platform": "fcm", "token": "fcm-token-alice", "user_id": "alice"})),
            )
            .await
            .expect(201)["id"]
            .to_string();
        let browser = Browser::sign_in(&app, &app.admin_key.clone()).await;
        let before = stored(&app).await;

        for (action, field) in [
            ("save", "body"),
            ("save", "heading"),
            ("save", "url"),
            ("preview", "body"),
        ] {
            let reply = browser
                .post(
                    "/admin/apps/shop/templates",
                    &template_form(action, field, "a\u{0}b"),
                )
                .await;

            assert_eq!(reply.status, 422, "{store:?} {action} {field}: {reply:?}");
            assert!(
                reply.body.contains("id=\"template-error\"")
                    && reply.body.contains(&format!("{field}: {NUL_REASON}")),
                "{store:?} {action} {field}: {}",
                reply.body
            );
        }
        let search = browser
            .get("/admin/apps/shop/devices?token=fcm%00token")
            .await;
        let test_message = browser
            .post(
                "/admin/apps/shop/devices/actions",
                &[("action", "test"), ("ids", &device), ("body", "a\u{0}b")],
            )
            .await;

        assert_eq!(search.status, 400, "{store:?}: {search:?}");
        assert!(search.body.contains(&format!("token: {NUL_REASON}")));
        assert_eq!(test_message.status, 400, "{store:?}: {test_message:?}");
        assert!(test_message.body.contains(&format!("body: {NUL_REASON}")));
        assert_eq!(stored(&app).await, before, "{store:?}: nothing is saved");
    }
}
