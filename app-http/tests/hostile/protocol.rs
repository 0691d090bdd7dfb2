//! HTTP-level hostility: every 4xx is a problem document (unknown routes and methods, bodies
//! that are not JSON, too large or of the wrong type, too many or too large headers, bad
//! credentials), and bodies, paths and query strings built to hurt a parser.

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Auth, Call};
use crate::suite::{Suite, expect};

/// Words a detail about a refused credential holds.
const CREDENTIAL: &[&str] = &["credential", "authorization", "key", "token"];
/// Words a detail about a size limit holds.
const SIZE: &[&str] = &["limit", "large", "bytes", "size"];
/// The bulk send's route.
const BULK: &str = "/v1/apps/shop/messages/bulk";

pub async fn run(suite: &mut Suite) {
    suite.area("problem+json");
    let devices = "/v1/apps/shop/devices";
    let json_rows: Vec<(&str, Call, Vec<u16>, &[&str])> = vec![
        (
            "unknown route",
            Call::get("/v1/no-such-route"),
            vec![404],
            &["route"],
        ),
        (
            "unknown route outside /v1",
            Call::get("/no-such-page"),
            vec![404],
            &["route"],
        ),
        (
            "wrong method",
            Call::new(Method::DELETE, "/v1/apps/shop/messages"),
            vec![405],
            &["method"],
        ),
        (
            "malformed JSON",
            Call::new(Method::POST, devices).body("application/json", b"{\"platform\": ".to_vec()),
            vec![400, 422],
            &["json"],
        ),
        (
            "wrong content type",
            Call::new(Method::POST, devices).body("text/plain", b"{}".to_vec()),
            vec![400, 415],
            &["content-type", "content type", "json"],
        ),
        (
            "no content type",
            Call::new(Method::POST, devices).body("", Vec::new()),
            vec![400, 415],
            &["content-type", "content type", "json"],
        ),
        (
            "a body over http.body_limit_bytes (2 MiB)",
            Call::new(Method::POST, devices).body("application/json", big_json(2 << 20)),
            vec![413],
            SIZE,
        ),
        (
            "no credential",
            Call::get(devices).auth(Auth::None),
            vec![401],
            CREDENTIAL,
        ),
        (
            "an unknown key",
            Call::get(devices).auth(Auth::Bearer(
                "clk_NoSuchKeyNoSuchKeyNoSuchKeyNoSuchKey0123".to_owned(),
            )),
            vec![401],
            CREDENTIAL,
        ),
        (
            "a credential that is not a key or a token",
            Call::get(devices).auth(Auth::Bearer("\u{1F600}".repeat(300))),
            vec![401],
            CREDENTIAL,
        ),
        (
            "another application's route",
            Call::get("/v1/apps/news/devices"),
            vec![403],
            &["news", "shop", "application"],
        ),
        (
            "the admin-only key routes",
            Call::get("/v1/keys"),
            vec![403],
            &["admin"],
        ),
    ];
    for (name, call, statuses, words) in json_rows {
        suite.row(name, call, &expect(&statuses, words)).await;
    }

    let headers = |count: usize, size: usize| -> Vec<u8> {
        let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for i in 0..count {
            request.push_str(&format!("x-hostile-{i}: {}\r\n", "h".repeat(size)));
        }
        request.push_str("Connection: close\r\n\r\n");
        request.into_bytes()
    };
    suite
        .raw_row("200 headers", headers(200, 8), &expect(&[431], &["header"]))
        .await;
    suite
        .raw_row(
            "a 20 KiB header",
            headers(1, 20 * 1024),
            &expect(&[431], &["header"]),
        )
        .await;
    suite
        .raw_row(
            // Below hyper's own ceiling (four times http.max_header_bytes), which answers an
            // empty 431 (docs/api.md says so).
            "a 48 KiB header",
            headers(1, 48 * 1024),
            &expect(&[431], &["header"]),
        )
        .await;
    suite
        .raw_row(
            "a chunked body over http.body_limit_bytes",
            chunked_post(devices, &suite.server.app_key, 2 << 20),
            &expect(&[413], SIZE),
        )
        .await;
    suite
        .row(
            "a bulk send over http.bulk_body_limit_bytes (5 MiB)",
            Call::new(Method::POST, BULK).body("application/json", big_json(5 << 20)),
            &expect(&[413], &["http.bulk_body_limit_bytes"]),
        )
        .await;
    suite
        .raw_row(
            "a chunked bulk send over http.bulk_body_limit_bytes",
            chunked_post(BULK, &suite.server.app_key, 5 << 20),
            &expect(&[413], &["http.bulk_body_limit_bytes"]),
        )
        .await;

    suite.area("bodies, paths and queries");
    let messages = "/v1/apps/shop/messages";
    let nested = format!(
        "{{\"target\": {{\"user_id\": \"alice\"}}, \"body\": \"b\", \"extra_data\": {{\"k\": {}{}}}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let many_devices: Vec<Value> = (0..5_001)
        .map(|i| json!({ "platform": "fcm", "token": format!("bulk-{i}") }))
        .collect();
    let rows: Vec<(&str, Call, Vec<u16>, &[&str])> = vec![
        (
            "JSON nested 100,000 deep",
            Call::new(Method::POST, messages).body("application/json", nested.into_bytes()),
            vec![400, 422],
            &["recursion", "nest", "depth", "deep"],
        ),
        (
            "5,001 devices in one bulk request",
            Call::json(
                Method::POST,
                "/v1/apps/shop/devices/bulk",
                &json!({ "devices": many_devices }),
            ),
            vec![413, 422],
            &["devices", "5000", "5,000"],
        ),
        (
            "1,001 messages in one bulk send",
            Call::json(
                Method::POST,
                BULK,
                &json!({ "messages": vec![json!({"target": {"user_id": "alice"}, "body": "b"}); 1001] }),
            ),
            vec![422],
            &["messages", "1000"],
        ),
        (
            "a bulk send reaching 20,000 deliveries",
            Call::json(
                Method::POST,
                BULK,
                &json!({ "messages": [
                    {"target": {"device_ids": (1..=20_000).collect::<Vec<i64>>()}, "body": "b"}
                ] }),
            ),
            vec![422],
            &["deliveries", "10000"],
        ),
        (
            "a badge of 1e400",
            Call::new(Method::POST, messages).body(
                "application/json",
                br#"{"target": {"user_id": "alice"}, "body": "b", "options": {"badge": 1e400}}"#
                    .to_vec(),
            ),
            vec![400, 422],
            &["number", "badge"],
        ),
        (
            "a device id of 10^20",
            Call::new(Method::POST, messages).body(
                "application/json",
                br#"{"target": {"device_ids": [100000000000000000000]}, "body": "b"}"#.to_vec(),
            ),
            vec![400, 422],
            &["device_ids"],
        ),
        (
            "a negative time to live",
            Call::json(
                Method::POST,
                messages,
                &json!({ "target": { "user_id": "alice" }, "body": "b",
                         "options": { "time_to_live": -1 } }),
            ),
            vec![400, 422],
            &["time_to_live"],
        ),
        (
            "a message id of 10^23",
            Call::get("/v1/apps/shop/messages/99999999999999999999999"),
            vec![400, 404, 422],
            &[],
        ),
        (
            "an application id with an encoded traversal",
            Call::get("/v1/apps/..%2F..%2Fkeys/devices"),
            vec![400, 403, 404, 422],
            &[],
        ),
        (
            "an application id of ..",
            Call::get("/v1/apps/%2e%2e/devices"),
            vec![400, 403, 404, 422],
            &[],
        ),
        (
            "a template slug with an encoded traversal",
            Call::get("/v1/apps/shop/templates/..%2F..%2Fetc%2Fpasswd"),
            vec![400, 404, 422],
            &[],
        ),
        (
            "a template slug of an encoded NUL",
            Call::get("/v1/apps/shop/templates/%00"),
            vec![400, 404, 422],
            &[],
        ),
        (
            "a device id that is bad percent-encoding",
            Call::get("/v1/apps/shop/devices/%ZZ"),
            vec![400, 404, 422],
            &[],
        ),
        (
            "a lone surrogate in a JSON string",
            Call::new(Method::POST, devices).body(
                "application/json",
                br#"{"platform": "fcm", "token": "\ud800"}"#.to_vec(),
            ),
            vec![400, 422],
            &["json", "token", "unicode", "utf-8"],
        ),
        (
            "a body that is not UTF-8",
            Call::new(Method::POST, devices).body(
                "application/json",
                b"{\"platform\": \"fcm\", \"token\": \"\xc0\xaf\"}".to_vec(),
            ),
            vec![400, 422],
            &["json", "token", "unicode", "utf-8"],
        ),
        (
            "a device name of emoji, a right-to-left override and a zero-width space",
            Call::json(
                Method::POST,
                devices,
                &json!({ "platform": "fcm", "token": "unicode-name",
                         "name": "\u{1F514}\u{202E}\u{200B}\u{540D}\u{524D}" }),
            ),
            vec![200, 201],
            &[],
        ),
    ];
    for (name, call, statuses, words) in rows {
        suite.row(name, call, &expect(&statuses, words)).await;
    }
    let long_query = format!(
        "GET /v1/apps/shop/messages?tag={} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        "q".repeat(32 * 1024)
    );
    suite
        .raw_row(
            "a 32 KiB query string",
            long_query.into_bytes(),
            &expect(
                &[400, 414, 422, 431],
                &["uri", "request line", "query", "header", "long", "large"],
            ),
        )
        .await;
}

/// A JSON device registration padded to about `size` bytes.
fn big_json(size: usize) -> Vec<u8> {
    json!({ "platform": "fcm", "token": "t", "name": "n".repeat(size) })
        .to_string()
        .into_bytes()
}

/// A chunked POST of `size` bytes of JSON with no `Content-Length`, so that only the limit
/// on what is read can stop it.
fn chunked_post(path: &str, key: &str, size: usize) -> Vec<u8> {
    let body = big_json(size);
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(64 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}
