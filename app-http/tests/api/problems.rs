//! Every error answer is a problem document, also those that no handler makes: unknown
//! routes and methods, extractor rejections, the body limit, and requests whose line or
//! headers are too large.

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::helpers::{runtime_with, spawn};

struct Case {
    what: &'static str,
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    status: u16,
    title: &'static str,
}

fn case(what: &'static str, method: Method, path: &str, status: u16, title: &'static str) -> Case {
    Case {
        what,
        method,
        path: path.to_owned(),
        headers: HeaderMap::new(),
        body: Vec::new(),
        status,
        title,
    }
}

fn with_header(mut case: Case, name: &str, value: &str) -> Case {
    case.headers.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    case
}

fn with_body(mut case: Case, body: impl Into<Vec<u8>>) -> Case {
    case.body = body.into();
    case
}

#[tokio::test]
async fn every_error_answer_is_a_problem_document_with_title_status_and_detail() {
    let (runtime, dir) = runtime_with(|config| config.http.body_limit_bytes = 1024).await;
    let app = spawn(runtime, dir).await;
    let devices = "/v1/apps/default/devices";
    let admin = format!("Bearer {}", app.admin_key);
    let as_admin = |case: Case| with_header(case, "authorization", &admin);
    let json = |case: Case| with_header(case, "content-type", "application/json");
    let mut too_many = case(
        "too many header fields",
        Method::GET,
        "/healthz",
        431,
        "Request Header Fields Too Large",
    );
    for n in 0..150 {
        too_many = with_header(too_many, &format!("x-field-{n}"), "1");
    }
    let cases = vec![
        case(
            "an unknown route",
            Method::GET,
            "/nothing-here",
            404,
            "Not Found",
        ),
        case(
            "a method the route does not take",
            Method::DELETE,
            "/healthz",
            405,
            "Method Not Allowed",
        ),
        case("no credentials", Method::GET, devices, 401, "Unauthorized"),
        as_admin(json(with_body(
            case(
                "JSON with a syntax error",
                Method::POST,
                devices,
                400,
                "Bad Request",
            ),
            "{\"platform\": ",
        ))),
        as_admin(with_body(
            case(
                "a body without a content type",
                Method::POST,
                devices,
                400,
                "Bad Request",
            ),
            "{}",
        )),
        as_admin(case(
            "a path parameter that does not parse",
            Method::GET,
            "/v1/apps/default/devices/abc",
            400,
            "Bad Request",
        )),
        as_admin(json(with_body(
            case(
                "a body over the limit",
                Method::POST,
                devices,
                413,
                "Payload Too Large",
            ),
            vec![b' '; 4096],
        ))),
        with_body(
            case(
                "a sign-in form over the body limit",
                Method::POST,
                "/admin/login",
                413,
                "Payload Too Large",
            ),
            vec![b'a'; 4096],
        ),
        with_header(
            case(
                "a header over the size limit",
                Method::GET,
                "/healthz",
                431,
                "Request Header Fields Too Large",
            ),
            "x-big",
            &"a".repeat(20 * 1024),
        ),
        too_many,
        case(
            "a request line over the size limit",
            Method::GET,
            &format!("/healthz?{}", "a".repeat(20 * 1024)),
            414,
            "URI Too Long",
        ),
    ];
    for case in cases {
        let response = app
            .client
            .request(case.method.clone(), app.url(&case.path))
            .headers(case.headers)
            .body(case.body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: the server answers: {e}", case.what));

        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.text().await.unwrap();
        assert_eq!(status, case.status, "{}: {body}", case.what);
        assert_eq!(
            content_type, "application/problem+json",
            "{}: {body}",
            case.what
        );
        let problem: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{}: a JSON body ({e}): {body:?}", case.what));
        assert_eq!(problem["status"], case.status, "{}: {body}", case.what);
        assert_eq!(problem["title"], case.title, "{}: {body}", case.what);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}: {body}",
            case.what
        );
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.starts_with("urn:clarion:problem:")),
            "{}: {body}",
            case.what
        );
    }
}
