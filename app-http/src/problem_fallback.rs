//! The last resort of the problem+json rule: an error answer that some layer made without a
//! problem document (an extractor's plain-text rejection, a 413 from the body limit) is
//! rewritten into one, so that every 4xx and 5xx the API gives has the same shape.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::Problem;

/// The most of a plain-text error body kept as the problem's `detail`.
const DETAIL_BYTES: usize = 1024;

/// Rewrites an error answer without a problem document into one. HTML error pages (the admin
/// UI's, for browsers) are kept.
pub(crate) async fn ensure_problem(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let essence = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(|value| value.trim().to_ascii_lowercase())
        .unwrap_or_default();
    if essence == "application/problem+json" || essence == "text/html" {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = if essence == "text/plain" && status.is_client_error() {
        axum::body::to_bytes(body, DETAIL_BYTES)
            .await
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let problem = problem(status, text);
    let json = serde_json::to_vec(&problem).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, Body::from(json))
}

/// The problem document of a bare status; `detail` is the layer's own text when it gave one.
fn problem(status: StatusCode, detail: String) -> Problem {
    let title = status.canonical_reason().unwrap_or("Error");
    let detail = if detail.is_empty() {
        if status.is_server_error() {
            "an internal error occurred".to_owned()
        } else {
            format!("the request was refused: {}", title.to_ascii_lowercase())
        }
    } else {
        detail
    };
    Problem {
        kind: format!(
            "urn:clarion:problem:{}",
            title.to_ascii_lowercase().replace(' ', "-")
        ),
        title: title.to_owned(),
        status: status.as_u16(),
        detail,
        errors: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_status_gets_its_title_and_a_kind_in_the_apis_style() {
        let problem = problem(StatusCode::PAYLOAD_TOO_LARGE, String::new());

        assert_eq!(problem.kind, "urn:clarion:problem:payload-too-large");
        assert_eq!(problem.title, "Payload Too Large");
        assert_eq!(problem.status, 413);
        assert!(!problem.detail.is_empty());
    }

    #[test]
    fn a_server_error_says_nothing_of_its_cause() {
        let problem = problem(StatusCode::INTERNAL_SERVER_ERROR, String::new());

        assert_eq!(problem.detail, "an internal error occurred");
    }
}
