//! Limits on what one request may hold: the size of its request line and headers, checked
//! before any route runs, and the time its body may take to arrive. Both answer with
//! problem documents; hyper's own parse limits sit above these (see [`crate::serve`]) so that
//! ordinary oversized requests reach them.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

use crate::error::ApiError;

/// The most header fields a request may carry.
pub(crate) const MAX_HEADER_FIELDS: usize = 100;

/// What the request limits are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestLimits {
    /// `http.max_header_bytes`: the request line and the headers together.
    pub(crate) header_bytes: usize,
    /// `http.body_read_timeout_secs`.
    pub(crate) body_read_timeout: Duration,
}

/// Answers 414 or 431 to a request whose request line or headers are over the limits, and
/// gives every other request's body its read deadline.
pub(crate) async fn enforce(
    State(limits): State<RequestLimits>,
    request: Request,
    next: Next,
) -> Response {
    if let Err(error) = check_headers(&request, limits.header_bytes) {
        return error.into_response();
    }
    let timeout = limits.body_read_timeout;
    next.run(request.map(|body| Body::new(DeadlineBody::new(body, timeout))))
        .await
}

/// The request line and headers measured as HTTP/1.1 sends them.
fn check_headers(request: &Request, limit: usize) -> Result<(), ApiError> {
    let target = request
        .uri()
        .path_and_query()
        .map_or(request.uri().path().len(), |target| target.as_str().len());
    // "METHOD target HTTP/1.1\r\n"
    let line = request.method().as_str().len() + target + 11;
    if line > limit {
        return Err(ApiError::UriTooLong(format!(
            "the request line is {line} bytes; at most {limit} are accepted \
             (http.max_header_bytes)"
        )));
    }
    let headers = request.headers();
    if headers.len() > MAX_HEADER_FIELDS {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request has {} header fields; at most {MAX_HEADER_FIELDS} are accepted",
            headers.len()
        )));
    }
    // "name: value\r\n" for each field, then the empty line.
    let total = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
        + 2;
    if total > limit {
        return Err(ApiError::HeadersTooLarge(format!(
            "the request line and headers are {total} bytes; at most {limit} are accepted \
             (http.max_header_bytes)"
        )));
    }
    Ok(())
}

/// The error a body that missed its deadline fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0:?}")]
pub(crate) struct BodyTimedOut(Duration);

/// Whether `error`, or an error it wraps, is a missed body deadline.
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<BodyTimedOut>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// A request body that must arrive whole within a time counted from its first read, so that
/// a client sending it a byte at a time cannot hold a request open.
struct DeadlineBody {
    body: Body,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(body: Body, timeout: Duration) -> Self {
        Self {
            body,
            timeout,
            deadline: None,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut(timeout)))));
        }
        Pin::new(&mut this.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(target: &str, headers: &[(&str, String)]) -> Request {
        let mut builder = Request::builder().uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn a_request_within_the_limits_passes() {
        let ok = request("/healthz", &[("accept", "*/*".to_owned())]);
        assert!(check_headers(&ok, 1024).is_ok());
    }

    #[test]
    fn too_many_fields_too_many_bytes_and_a_long_target_are_refused() {
        let many: Vec<(&str, String)> = (0..=MAX_HEADER_FIELDS)
            .map(|_| ("x-a", "1".to_owned()))
            .collect();
        let many = request("/", &many);
        let big = request("/", &[("x-big", "a".repeat(2000))]);
        let long = request(&format!("/{}", "a".repeat(2000)), &[]);

        assert!(matches!(
            check_headers(&many, 100_000),
            Err(ApiError::HeadersTooLarge(_))
        ));
        assert!(matches!(
            check_headers(&big, 1024),
            Err(ApiError::HeadersTooLarge(_))
        ));
        assert!(matches!(
            check_headers(&long, 1024),
            Err(ApiError::UriTooLong(_))
        ));
    }

    #[test]
    fn a_body_timeout_is_found_inside_the_errors_that_wrap_it() {
        let wrapped = axum::Error::new(BodyTimedOut(Duration::from_secs(1)));
        let other = axum::Error::new(std::io::Error::other("reset"));

        assert!(is_body_timeout(&wrapped));
        assert!(!is_body_timeout(&other));
    }
}
