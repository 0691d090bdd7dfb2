//! Bad input is a 4xx problem document naming what is wrong, never a 500.

use reqwest::Method;

use crate::helpers::spawn_shop_and_news;

struct Case {
    what: &'static str,
    method: Method,
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
    status: u16,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: Method,
    path: &'static str,
    body: &'static str,
    status: u16,
    field: Option<&'static str>,
) -> Case {
    Case {
        what,
        method,
        path,
        content_type: "application/json",
        body,
        status,
        field,
    }
}

#[tokio::test]
async fn bad_input_is_answered_with_a_problem_and_never_a_500() {
    let app = spawn_shop_and_news().await;
    let devices = "/v1/apps/shop/devices";
    let messages = "/v1/apps/shop/messages";
    let cases = vec![
        case(
            "malformed JSON",
            Method::POST,
            devices,
            "{\"platform\": ",
            400,
            None,
        ),
        Case {
            content_type: "text/plain",
            ..case("not JSON", Method::POST, devices, "{}", 400, None)
        },
        case(
            "trailing garbage",
            Method::POST,
            devices,
            "{} {}",
            400,
            None,
        ),
        case(
            "a body that is not an object",
            Method::POST,
            devices,
            "[1]",
            422,
            Some("body"),
        ),
        case(
            "a wrong type",
            Method::POST,
            devices,
            r#"{"platform": "fcm", "token": 5}"#,
            422,
            Some("token"),
        ),
        case(
            "an unknown platform",
            Method::POST,
            devices,
            r#"{"platform": "symbian", "token": "x"}"#,
            422,
            Some("platform"),
        ),
        case(
            "a bad APNs token",
            Method::POST,
            devices,
            r#"{"platform": "apns", "token": "zz"}"#,
            422,
            Some("token"),
        ),
        case(
            "a Web Push device without keys",
            Method::POST,
            devices,
            r#"{"platform": "webpush", "token": "https://push.example/x"}"#,
            422,
            Some("p256dh"),
        ),
        case(
            "an unknown field",
            Method::POST,
            devices,
            r#"{"platform": "fcm", "token": "t", "colour": 1}"#,
            422,
            Some("colour"),
        ),
        case(
            "a control character in a user id",
            Method::POST,
            devices,
            r#"{"platform": "fcm", "token": "t", "user_id": "a\u0001"}"#,
            422,
            Some("user_id"),
        ),
        case(
            "a bad cursor",
            Method::GET,
            "/v1/apps/shop/devices?after=abc",
            "",
            422,
            Some("after"),
        ),
        case(
            "a zero limit",
            Method::GET,
            "/v1/apps/shop/devices?limit=0",
            "",
            422,
            Some("limit"),
        ),
        case(
            "a huge limit",
            Method::GET,
            "/v1/apps/shop/messages?limit=100000",
            "",
            422,
            Some("limit"),
        ),
        case(
            "a bad active flag",
            Method::GET,
            "/v1/apps/shop/devices?active=maybe",
            "",
            422,
            Some("active"),
        ),
        case(
            "a bad date",
            Method::GET,
            "/v1/apps/shop/messages?created_after=yesterday",
            "",
            422,
            Some("created_after"),
        ),
        case(
            "a bad message cursor",
            Method::GET,
            "/v1/apps/shop/messages?before=-3",
            "",
            422,
            Some("before"),
        ),
        case(
            "a bad state",
            Method::GET,
            "/v1/apps/shop/messages?state=LOST",
            "",
            422,
            Some("state"),
        ),
        case(
            "a bad related object",
            Method::GET,
            "/v1/apps/shop/messages?related=order",
            "",
            422,
            Some("related"),
        ),
        case(
            "a device id that is not a number",
            Method::GET,
            "/v1/apps/shop/devices/abc",
            "",
            400,
            None,
        ),
        case(
            "an id out of range",
            Method::GET,
            "/v1/apps/shop/messages/99999999999999999999",
            "",
            400,
            None,
        ),
        case(
            "an unknown application",
            Method::GET,
            "/v1/apps/nope/devices",
            "",
            404,
            None,
        ),
        case(
            "an unknown message",
            Method::GET,
            "/v1/apps/shop/messages/12345",
            "",
            404,
            None,
        ),
        case(
            "a target of two kinds",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a", "device_ids": [1]}, "body": "x"}"#,
            422,
            Some("target"),
        ),
        case(
            "no device ids",
            Method::POST,
            messages,
            r#"{"target": {"device_ids": []}, "body": "x"}"#,
            422,
            Some("target.device_ids"),
        ),
        case(
            "unknown device ids",
            Method::POST,
            messages,
            r#"{"target": {"device_ids": [424242]}, "body": "x"}"#,
            422,
            Some("target.device_ids"),
        ),
        case(
            "a negative badge",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "options": {"badge": -1}}"#,
            422,
            Some("options.badge"),
        ),
        case(
            "a time to live over 28 days",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "options": {"time_to_live": 99999999}}"#,
            422,
            Some("options.time_to_live"),
        ),
        case(
            "extra data that is not an object",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "extra_data": [1]}"#,
            422,
            Some("extra_data"),
        ),
        case(
            "a relative URL",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "url": "/orders"}"#,
            422,
            Some("url"),
        ),
        case(
            "nothing to send",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": ""}"#,
            422,
            Some("body"),
        ),
        case(
            "a bad priority",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "priority": "urgent"}"#,
            422,
            Some("priority"),
        ),
        case(
            "a bad related object",
            Method::POST,
            messages,
            r#"{"target": {"user_id": "a"}, "body": "x", "related_objects": [{"kind": "", "object_id": "1"}]}"#,
            422,
            Some("related_objects[0]"),
        ),
        case(
            "a bad template slug",
            Method::POST,
            "/v1/apps/shop/templates",
            r#"{"slug": "Bad Slug", "body": "x"}"#,
            422,
            Some("slug"),
        ),
        case(
            "an unknown template",
            Method::POST,
            "/v1/apps/shop/messages/template",
            r#"{"slug": "nope", "target": {"user_id": "a"}}"#,
            404,
            None,
        ),
        case(
            "an unknown route",
            Method::GET,
            "/v1/nothing",
            "",
            404,
            None,
        ),
        case(
            "a method a route does not take",
            Method::PUT,
            "/v1/keys",
            "{}",
            405,
            None,
        ),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let reply = app
            .raw(
                c.method.clone(),
                c.path,
                c.content_type,
                c.body.as_bytes().to_vec(),
            )
            .await;
        let field = (reply.status == 422)
            .then(|| {
                reply.json()["errors"][0]["field"]
                    .as_str()
                    .map(str::to_owned)
            })
            .flatten();
        let problem = reply.content_type == "application/problem+json";
        if reply.status != c.status || field.as_deref() != c.field || !problem {
            failures.push(format!(
                "{}: got {} {:?}: {}",
                c.what, reply.status, field, reply.body
            ));
        }
    }

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_shop_and_news().await;
    let huge = format!(
        r#"{{"platform": "fcm", "token": "{}"}}"#,
        "a".repeat(2 * 1024 * 1024)
    );

    let reply = app
        .raw(
            Method::POST,
            "/v1/apps/shop/devices",
            "application/json",
            huge.into_bytes(),
        )
        .await;

    reply.expect(413);
}
