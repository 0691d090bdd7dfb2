//! A mock OneSignal REST API: "Create notification" (`POST /notifications`) with the current
//! `Authorization: Key ...` scheme, aliases targeting and the checks OneSignal applies.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::script::{CannedResponse, IncomingRequest, RecordedRequest, Recorder};
use crate::server::{Respond, Server};

/// The app the mock stands for.
#[derive(Debug, Clone)]
pub struct OneSignalMockConfig {
    /// The OneSignal app id (a UUID).
    pub app_id: String,
    /// The app's REST API key.
    pub api_key: String,
}

/// What the mock made of one request.
#[derive(Debug, Clone, Default)]
pub struct OneSignalView {
    /// The body parsed as JSON, when it is JSON.
    pub body: Option<Value>,
    /// `include_aliases.external_id`.
    pub external_ids: Vec<String>,
    /// The notification id answered on success.
    pub notification_id: Option<String>,
}

/// A running mock OneSignal API. Dropping it stops the server.
#[derive(Debug)]
pub struct MockOneSignal {
    state: Arc<OneSignalState>,
    server: Server,
}

#[derive(Debug)]
struct OneSignalState {
    config: OneSignalMockConfig,
    recorder: Recorder<OneSignalView>,
}

impl MockOneSignal {
    /// Starts the mock on 127.0.0.1 (plain HTTP).
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(config: OneSignalMockConfig) -> anyhow::Result<Self> {
        let state = Arc::new(OneSignalState {
            config,
            recorder: Recorder::default(),
        });
        let server = Server::start(Arc::clone(&state) as Arc<dyn Respond>, None).await?;
        Ok(Self { state, server })
    }

    /// The base URL, such as `http://127.0.0.1:43123`; notifications go to
    /// `<base_url>/notifications`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// `<base_url>/notifications`.
    #[must_use]
    pub fn notifications_url(&self) -> String {
        format!("{}/notifications", self.base_url())
    }

    /// The address the mock listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// How many requests arrived (good or bad).
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.state.recorder.count()
    }

    /// Every request received, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest<OneSignalView>> {
        self.state.recorder.requests()
    }

    /// Queues a canned response for the next valid request.
    pub fn enqueue(&self, response: CannedResponse) {
        self.state.recorder.enqueue(response);
    }

    /// Queues OneSignal's "200 but nobody to send to" answer:
    /// `{"id": "", "errors": {"invalid_aliases": {"external_id": [...]}}}`.
    pub fn enqueue_invalid_aliases(&self, external_ids: &[&str]) {
        self.enqueue(CannedResponse::json(
            200,
            &json!({ "id": "", "errors": { "invalid_aliases": { "external_id": external_ids } } }),
        ));
    }

    /// Queues `400 {"errors": [...]}`.
    pub fn enqueue_bad_request(&self, errors: &[&str]) {
        self.enqueue(CannedResponse::json(400, &json!({ "errors": errors })));
    }

    /// Queues `429` with `Retry-After`.
    pub fn enqueue_rate_limited(&self, retry_after_seconds: u64) {
        self.enqueue(
            CannedResponse::json(429, &json!({ "errors": ["API rate limit exceeded"] }))
                .with_retry_after(retry_after_seconds),
        );
    }

    /// Queues `500`.
    pub fn enqueue_server_error(&self) {
        self.enqueue(CannedResponse::json(
            500,
            &json!({ "errors": ["Internal server error"] }),
        ));
    }

    /// Delays every answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.recorder.set_delay(delay);
    }
}

fn errors(status: u16, messages: &[&str]) -> CannedResponse {
    CannedResponse::json(status, &json!({ "errors": messages }))
}

impl Respond for OneSignalState {
    fn respond(&self, request: IncomingRequest) -> (CannedResponse, Duration) {
        let mut view = OneSignalView::default();
        let mut problems = Vec::new();
        let rejection = self.check(&request, &mut view, &mut problems);
        let response = rejection
            .or_else(|| self.recorder.next_canned())
            .unwrap_or_else(|| {
                let id = uuid::Uuid::new_v4().to_string();
                view.notification_id = Some(id.clone());
                CannedResponse::json(200, &json!({ "id": id, "external_id": null }))
            });
        self.recorder.record(request, view, problems, &response);
        (response, self.recorder.delay())
    }
}

impl OneSignalState {
    /// Checks one request; returns the error OneSignal would answer with, if any.
    fn check(
        &self,
        request: &IncomingRequest,
        view: &mut OneSignalView,
        problems: &mut Vec<String>,
    ) -> Option<CannedResponse> {
        let mut first = None;
        let mut reject = |problems: &mut Vec<String>, response: CannedResponse, problem: String| {
            first.get_or_insert(response);
            problems.push(problem);
        };
        if request.method != "POST" || request.path_only() != "/notifications" {
            reject(
                problems,
                errors(404, &["Not found"]),
                format!(
                    "expected POST /notifications, got {} {}",
                    request.method, request.path
                ),
            );
        }
        let expected = format!("Key {}", self.config.api_key);
        match request.header("authorization") {
            Some(value) if value == expected => {}
            value => reject(
                problems,
                errors(
                    403,
                    &[
                        "Access denied.  Please include an 'Authorization: Key <REST API key>' header with a valid API key.",
                    ],
                ),
                format!(
                    "the authorization header is {value:?}, not `Key <the app's REST API key>`"
                ),
            ),
        }
        let content_type = request.header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/json") {
            reject(
                problems,
                errors(
                    400,
                    &[
                        "app_id not found. You may be missing a Content-Type: application/json header.",
                    ],
                ),
                format!("the content-type is {content_type:?}, not application/json"),
            );
        }
        let body: Value = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => {
                reject(
                    problems,
                    errors(400, &["Invalid JSON"]),
                    format!("the body is not JSON: {e}"),
                );
                return first;
            }
        };
        view.body = Some(body.clone());
        if body.get("app_id").and_then(Value::as_str) != Some(self.config.app_id.as_str()) {
            reject(
                problems,
                errors(
                    400,
                    &[
                        "app_id not found. You may be missing a Content-Type: application/json header.",
                    ],
                ),
                format!(
                    "app_id is {:?}, not {:?}",
                    body.get("app_id"),
                    self.config.app_id
                ),
            );
        }
        if body.get("target_channel").and_then(Value::as_str) != Some("push") {
            reject(
                problems,
                errors(
                    400,
                    &[
                        "target_channel must be one of push, email or sms when include_aliases is used",
                    ],
                ),
                format!(
                    "target_channel is {:?}, not \"push\"",
                    body.get("target_channel")
                ),
            );
        }
        match body
            .pointer("/include_aliases/external_id")
            .and_then(Value::as_array)
        {
            Some(ids)
                if !ids.is_empty() && ids.len() <= 2000 && ids.iter().all(Value::is_string) =>
            {
                view.external_ids = ids
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
            }
            _ => reject(
                problems,
                errors(
                    400,
                    &[
                        "You must include which players, segments, or tags you wish to send this notification to.",
                    ],
                ),
                "include_aliases.external_id must be a list of 1 to 2000 strings".into(),
            ),
        }
        let content_available =
            body.get("content_available").and_then(Value::as_bool) == Some(true);
        match body.get("contents") {
            None if content_available => {}
            Some(contents)
                if contents
                    .as_object()
                    .is_some_and(|c| c.values().all(Value::is_string)) =>
            {
                if contents.get("en").is_none() && !content_available {
                    reject(
                        problems,
                        errors(400, &["Notifications must have English language content"]),
                        "contents has no \"en\" entry".into(),
                    );
                }
            }
            _ => reject(
                problems,
                errors(400, &["Notifications must have English language content"]),
                "contents must be an object of language code to string, with \"en\"".into(),
            ),
        }
        if let Some(headings) = body.get("headings")
            && !headings
                .as_object()
                .is_some_and(|h| h.values().all(Value::is_string))
        {
            reject(
                problems,
                errors(
                    400,
                    &["Headings must be an object of language code to string"],
                ),
                "headings must be an object of language code to string".into(),
            );
        }
        if let Some(url) = body.get("url")
            && !url.is_string()
        {
            reject(
                problems,
                errors(400, &["url must be a string"]),
                "url must be a string".into(),
            );
        }
        if let Some(data) = body.get("data")
            && !data.is_object()
        {
            reject(
                problems,
                errors(400, &["data must be a JSON object"]),
                "data must be a JSON object".into(),
            );
        }
        first
    }
}
