//! A mock FCM HTTP v1 server (`projects.messages.send` and its `ErrorCode`s) together with the
//! Google OAuth 2.0 token endpoint of the service-account flow (RFC 7523 JWT bearer grant).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value, json};

use crate::jwt;
use crate::script::{CannedResponse, IncomingRequest, RecordedRequest, Recorder, lock_state};
use crate::server::{ConnectionControl, Respond, Server};

/// The OAuth scope for sending with FCM.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The broad Google Cloud scope, which FCM also accepts.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// The RFC 7523 grant type.
pub const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const TEST_PRIVATE_KEY_PEM: &str =
    include_str!("../fixtures/TEST-ONLY-fcm-service-account-key.pem");
const TEST_PUBLIC_KEY_PEM: &str =
    include_str!("../fixtures/TEST-ONLY-fcm-service-account-key.pub.pem");
const TEST_PRIVATE_KEY_ID: &str = "0e5f0c7a2b1d4e3f9a8b7c6d5e4f3a2b1c0d9e8f";

/// What the mock knows of the service account and project.
#[derive(Debug, Clone)]
pub struct FcmMockConfig {
    /// The Firebase project id in the send URL.
    pub project_id: String,
    /// The service account's e-mail, the assertion's `iss`.
    pub client_email: String,
    /// The service account key's id, the assertion's `kid` when present.
    pub private_key_id: String,
    /// The public half of the service account's RSA key, in PEM.
    pub public_key_pem: String,
}

/// A test service account in Google's JSON format, with its pieces.
#[derive(Debug, Clone)]
pub struct FcmServiceAccount {
    /// The service-account JSON file's text.
    pub json: String,
    /// `project_id`.
    pub project_id: String,
    /// `client_email`.
    pub client_email: String,
    /// `private_key_id`.
    pub private_key_id: String,
    /// `private_key`: a test-only RSA key in PKCS#8 PEM.
    pub private_key_pem: String,
    /// The public half of `private_key`, in PEM.
    pub public_key_pem: String,
    /// `token_uri`.
    pub token_uri: String,
}

impl FcmServiceAccount {
    /// The mock configuration that accepts this account.
    #[must_use]
    pub fn mock_config(&self) -> FcmMockConfig {
        FcmMockConfig {
            project_id: self.project_id.clone(),
            client_email: self.client_email.clone(),
            private_key_id: self.private_key_id.clone(),
            public_key_pem: self.public_key_pem.clone(),
        }
    }
}

/// A service-account JSON like Google's, with the test-only RSA key shipped in
/// `testkit/fixtures/` and the given `token_uri` and `project_id`.
#[must_use]
pub fn fcm_test_service_account(token_uri: &str, project_id: &str) -> FcmServiceAccount {
    let client_email = format!("clarion-test@{project_id}.iam.gserviceaccount.com");
    let json = json!({
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": TEST_PRIVATE_KEY_ID,
        "private_key": TEST_PRIVATE_KEY_PEM,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": format!(
            "https://www.googleapis.com/robot/v1/metadata/x509/clarion-test%40{project_id}.iam.gserviceaccount.com"
        ),
        "universe_domain": "googleapis.com"
    });
    FcmServiceAccount {
        json: serde_json::to_string_pretty(&json).unwrap_or_else(|_| json.to_string()),
        project_id: project_id.to_owned(),
        client_email,
        private_key_id: TEST_PRIVATE_KEY_ID.to_owned(),
        private_key_pem: TEST_PRIVATE_KEY_PEM.to_owned(),
        public_key_pem: TEST_PUBLIC_KEY_PEM.to_owned(),
        token_uri: token_uri.to_owned(),
    }
}

/// What the mock made of one request to the token endpoint.
#[derive(Debug, Clone, Default)]
pub struct FcmTokenView {
    /// `grant_type` from the form.
    pub grant_type: Option<String>,
    /// The assertion JWT from the form.
    pub assertion: Option<String>,
    /// The assertion's claims when its signature verified.
    pub claims: Option<Value>,
    /// The access token issued, if any.
    pub issued_access_token: Option<String>,
}

/// What the mock made of one send request.
#[derive(Debug, Clone, Default)]
pub struct FcmView {
    /// The project id from the path.
    pub project_id: Option<String>,
    /// The bearer access token presented.
    pub access_token: Option<String>,
    /// `message` from the body.
    pub message: Option<Value>,
    /// The target: `token`, `topic` or `condition` with its value.
    pub target: Option<(String, String)>,
    /// The message name answered on success.
    pub name: Option<String>,
    /// The Google error status answered, such as `INVALID_ARGUMENT`.
    pub error_status: Option<String>,
}

/// A running mock FCM server with its OAuth token endpoint. Dropping it stops the server.
#[derive(Debug)]
pub struct MockFcm {
    state: Arc<FcmState>,
    server: Server,
}

#[derive(Debug)]
struct FcmState {
    config: FcmMockConfig,
    key: DecodingKey,
    token_uri: OnceLock<String>,
    tokens: Recorder<FcmTokenView>,
    sends: Recorder<FcmView>,
    /// Issued access tokens, and whether each is still valid.
    access_tokens: Mutex<HashMap<String, bool>>,
    /// Random failures of valid sends, when set.
    chaos: Mutex<Option<Chaos>>,
}

/// Random failures for load tests: a share of the valid sends is answered `500 INTERNAL`,
/// `429 QUOTA_EXCEEDED` with `Retry-After`, or (a timeout) a success held back longer than the
/// client waits, in equal parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chaos {
    /// The share of valid sends that fail, in percent.
    pub failure_percent: u32,
    /// The `Retry-After` of the 429 answers, in seconds.
    pub retry_after_secs: u64,
    /// How long a "timeout" holds its answer back.
    pub hold: Duration,
    /// The seed of the (deterministic) random choices.
    pub seed: u64,
}

impl MockFcm {
    /// Starts the mock for `project_id`, accepting the test service account that
    /// [`MockFcm::service_account`] returns.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(project_id: &str) -> anyhow::Result<Self> {
        Self::start_with_config(fcm_test_service_account("", project_id).mock_config()).await
    }

    /// Starts the mock for any service account.
    ///
    /// # Errors
    /// When the public key is not an RSA PEM key, or the server cannot start.
    pub async fn start_with_config(config: FcmMockConfig) -> anyhow::Result<Self> {
        crate::tls::install_default_crypto_provider();
        let key = DecodingKey::from_rsa_pem(config.public_key_pem.as_bytes())
            .context("the FCM mock's public_key_pem is not an RSA public key in PEM")?;
        let state = Arc::new(FcmState {
            config,
            key,
            token_uri: OnceLock::new(),
            tokens: Recorder::default(),
            sends: Recorder::default(),
            access_tokens: Mutex::new(HashMap::new()),
            chaos: Mutex::new(None),
        });
        let server = Server::start(Arc::clone(&state) as Arc<dyn Respond>, None).await?;
        let _ = state
            .token_uri
            .set(format!("http://{}/token", server.addr()));
        Ok(Self { state, server })
    }

    /// The base URL to configure as the FCM endpoint, such as `http://127.0.0.1:43123`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("http://{}", self.server.addr())
    }

    /// The address the mock listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The OAuth token endpoint, `<base_url>/token`, to use as the account's `token_uri`.
    #[must_use]
    pub fn token_uri(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// The send URL, `<base_url>/v1/projects/<project_id>/messages:send`.
    #[must_use]
    pub fn send_url(&self) -> String {
        format!(
            "{}/v1/projects/{}/messages:send",
            self.base_url(),
            self.state.config.project_id
        )
    }

    /// The test service account whose `token_uri` points at this mock (valid when the mock was
    /// started with [`MockFcm::start`]).
    #[must_use]
    pub fn service_account(&self) -> FcmServiceAccount {
        fcm_test_service_account(&self.token_uri(), &self.state.config.project_id)
    }

    /// How many send requests arrived (good or bad).
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.state.sends.count()
    }

    /// Stops recording send and token requests, for load tests: each is still checked and answered, and
    /// counted in [`MockFcm::request_count`] (and [`MockFcm::faulty_request_count`] when the mock found
    /// a problem), but [`MockFcm::requests`] stays empty, so that memory does not grow with the
    /// number of requests.
    pub fn count_only(&self) {
        self.state.sends.set_counting_only();
        self.state.tokens.set_counting_only();
    }

    /// How many send requests had a problem the mock reported (recorded or not).
    #[must_use]
    pub fn faulty_request_count(&self) -> usize {
        self.state.sends.faulty_count()
    }

    /// Every send request received, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest<FcmView>> {
        self.state.sends.requests()
    }

    /// How many requests the token endpoint received.
    #[must_use]
    pub fn token_request_count(&self) -> usize {
        self.state.tokens.count()
    }

    /// Every token endpoint request, in order.
    #[must_use]
    pub fn token_requests(&self) -> Vec<RecordedRequest<FcmTokenView>> {
        self.state.tokens.requests()
    }

    /// Queues a canned response for the next valid send request. Invalid requests get the
    /// spec's error and leave the queue alone.
    pub fn enqueue(&self, response: CannedResponse) {
        self.state.sends.enqueue(response);
    }

    /// Queues a canned response for the next valid token request.
    pub fn enqueue_token_response(&self, response: CannedResponse) {
        self.state.tokens.enqueue(response);
    }

    /// Queues `404 NOT_FOUND` with error code `UNREGISTERED` (a dead registration token).
    pub fn enqueue_unregistered(&self) {
        self.enqueue(fcm_error(
            404,
            "NOT_FOUND",
            "Requested entity was not found.",
            Some("UNREGISTERED"),
        ));
    }

    /// Queues `400 INVALID_ARGUMENT` with error code `INVALID_ARGUMENT`.
    pub fn enqueue_invalid_argument(&self, message: &str) {
        self.enqueue(fcm_error(
            400,
            "INVALID_ARGUMENT",
            message,
            Some("INVALID_ARGUMENT"),
        ));
    }

    /// Queues `429 RESOURCE_EXHAUSTED` with error code `QUOTA_EXCEEDED` and `Retry-After`.
    pub fn enqueue_quota_exceeded(&self, retry_after_seconds: u64) {
        self.enqueue(
            fcm_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Quota exceeded for quota metric 'Send requests'.",
                Some("QUOTA_EXCEEDED"),
            )
            .with_retry_after(retry_after_seconds),
        );
    }

    /// Queues `503 UNAVAILABLE` with error code `UNAVAILABLE`.
    pub fn enqueue_unavailable(&self) {
        self.enqueue(fcm_error(
            503,
            "UNAVAILABLE",
            "The service is currently unavailable.",
            Some("UNAVAILABLE"),
        ));
    }

    /// Queues `500 INTERNAL` with error code `INTERNAL`.
    pub fn enqueue_internal(&self) {
        self.enqueue(fcm_error(
            500,
            "INTERNAL",
            "Internal error encountered.",
            Some("INTERNAL"),
        ));
    }

    /// Queues one `401 UNAUTHENTICATED` (to check that the client refreshes its token once).
    pub fn enqueue_unauthenticated(&self) {
        self.enqueue(unauthenticated());
    }

    /// Fails a random share of the valid sends from now on (see [`Chaos`]); `None` stops it.
    pub fn set_chaos(&self, chaos: Option<Chaos>) {
        *lock_state(&self.state.chaos) = chaos;
    }

    /// How many valid sends were answered 200, by FCM registration token. A "timeout" of
    /// [`Chaos`] counts too: the mock accepted it even though the client stopped waiting.
    #[must_use]
    pub fn accepted_by_token(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for request in self.state.sends.requests() {
            if request.status == 200
                && let Some((kind, token)) = &request.view.target
                && kind == "token"
            {
                *counts.entry(token.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Delays every send answer by `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.state.sends.set_delay(delay);
    }

    /// Lengthens each answer's delay by a random share of `jitter` (uniform, none to all).
    pub fn set_jitter(&self, jitter: Duration) {
        self.state.sends.set_jitter(jitter);
    }

    /// The mock's connections: the HTTP/2 stream limit they advertise and the `GOAWAY`s they
    /// send (see [`ConnectionControl`]).
    #[must_use]
    pub fn connections(&self) -> &ConnectionControl {
        self.server.control()
    }

    /// Delays every token answer by `delay`.
    pub fn set_token_delay(&self, delay: Duration) {
        self.state.tokens.set_delay(delay);
    }

    /// Every access token issued so far.
    #[must_use]
    pub fn issued_access_tokens(&self) -> Vec<String> {
        lock_state(&self.state.access_tokens)
            .keys()
            .cloned()
            .collect()
    }

    /// Revokes (expires) every access token issued so far: sends with them get 401
    /// `UNAUTHENTICATED`, which is not recorded as a problem.
    pub fn revoke_access_tokens(&self) {
        for valid in lock_state(&self.state.access_tokens).values_mut() {
            *valid = false;
        }
    }
}

/// An error in Google's format; `error_code` adds an `FcmError` detail.
#[must_use]
pub fn fcm_error(
    code: u16,
    status: &str,
    message: &str,
    error_code: Option<&str>,
) -> CannedResponse {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if let Some(error_code) = error_code {
        error["details"] = json!([{
            "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
            "errorCode": error_code
        }]);
    }
    CannedResponse::json(code, &json!({ "error": error }))
        .with_header("content-type", "application/json; charset=UTF-8")
}

fn unauthenticated() -> CannedResponse {
    fcm_error(
        401,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        None,
    )
}

fn oauth_error(error: &str, description: &str) -> CannedResponse {
    CannedResponse::json(
        400,
        &json!({ "error": error, "error_description": description }),
    )
}

impl Respond for FcmState {
    fn respond(&self, request: IncomingRequest) -> (CannedResponse, Duration) {
        if request.path_only() == "/token" {
            let (view, problems, response) = self.token(&request);
            self.tokens.record(request, view, problems, &response);
            (response, self.tokens.delay())
        } else {
            let (view, problems, response) = self.send(&request);
            let (response, delay) = self.unsettle(response);
            self.sends.record(request, view, problems, &response);
            (response, delay)
        }
    }
}

impl FcmState {
    /// Applies [`Chaos`], when set, to a successful answer.
    fn unsettle(&self, response: CannedResponse) -> (CannedResponse, Duration) {
        let delay = self.sends.delay();
        if response.status != 200 {
            return (response, delay);
        }
        let mut chaos = lock_state(&self.chaos);
        let Some(chaos) = chaos.as_mut() else {
            return (response, delay);
        };
        // xorshift64*: deterministic for a seed, and plenty for spreading failures.
        let mut x = chaos.seed.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        chaos.seed = x;
        let roll = x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33;
        if roll % 100 >= u64::from(chaos.failure_percent) {
            return (response, delay);
        }
        match (roll / 100) % 3 {
            0 => (
                fcm_error(
                    500,
                    "INTERNAL",
                    "Internal error encountered.",
                    Some("INTERNAL"),
                ),
                delay,
            ),
            1 => (
                fcm_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "Quota exceeded for quota metric 'Send requests'.",
                    Some("QUOTA_EXCEEDED"),
                )
                .with_retry_after(chaos.retry_after_secs),
                delay,
            ),
            _ => (response, chaos.hold),
        }
    }

    fn token(&self, request: &IncomingRequest) -> (FcmTokenView, Vec<String>, CannedResponse) {
        let mut view = FcmTokenView::default();
        let mut problems = Vec::new();
        let mut first: Option<CannedResponse> = None;
        let mut reject = |problems: &mut Vec<String>, response: CannedResponse, problem: String| {
            if first.is_none() {
                first = Some(response);
            }
            problems.push(problem);
        };

        if request.method != "POST" {
            reject(
                &mut problems,
                oauth_error("invalid_request", "Only POST is supported."),
                format!("the token endpoint takes POST, got {}", request.method),
            );
        }
        let content_type = request.header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/x-www-form-urlencoded") {
            reject(
                &mut problems,
                oauth_error("invalid_request", "Expected a form-encoded body."),
                format!(
                    "the token request's content-type is {content_type:?}, not application/x-www-form-urlencoded"
                ),
            );
        }
        for (name, value) in form_urlencoded::parse(&request.body) {
            match name.as_ref() {
                "grant_type" => view.grant_type = Some(value.into_owned()),
                "assertion" => view.assertion = Some(value.into_owned()),
                _ => {}
            }
        }
        if view.grant_type.as_deref() != Some(JWT_BEARER_GRANT) {
            reject(
                &mut problems,
                oauth_error("unsupported_grant_type", "Invalid grant_type."),
                format!(
                    "grant_type is {:?}, not {JWT_BEARER_GRANT}",
                    view.grant_type
                ),
            );
        }
        match view.assertion.clone() {
            None => reject(
                &mut problems,
                oauth_error("invalid_request", "Missing required parameter: assertion"),
                "the token request has no assertion".into(),
            ),
            Some(assertion) => {
                for problem in self.check_assertion(&assertion, &mut view) {
                    reject(
                        &mut problems,
                        oauth_error("invalid_grant", &problem),
                        problem.clone(),
                    );
                }
            }
        }

        let response = match first {
            Some(response) => response,
            None => match self.tokens.next_canned() {
                Some(canned) => canned,
                None => {
                    let token = format!("ya29.mock-{}", uuid::Uuid::new_v4().simple());
                    lock_state(&self.access_tokens).insert(token.clone(), true);
                    view.issued_access_token = Some(token.clone());
                    CannedResponse::json(
                        200,
                        &json!({ "access_token": token, "expires_in": 3599, "token_type": "Bearer" }),
                    )
                }
            },
        };
        (view, problems, response)
    }

    fn check_assertion(&self, assertion: &str, view: &mut FcmTokenView) -> Vec<String> {
        let mut problems = Vec::new();
        let header = match jwt::header(assertion) {
            Ok(header) => header,
            Err(problem) => return vec![problem],
        };
        if header.alg != Algorithm::RS256 {
            problems.push(format!(
                "the assertion's alg is {:?}, not RS256",
                header.alg
            ));
        }
        if let Some(kid) = header.kid.as_deref()
            && kid != self.config.private_key_id
        {
            problems.push(format!(
                "the assertion's kid {kid:?} is not the private_key_id {:?}",
                self.config.private_key_id
            ));
        }
        let claims = match jwt::verify(assertion, &self.key, Algorithm::RS256) {
            Ok(claims) => claims,
            Err(problem) => {
                problems.push(problem);
                return problems;
            }
        };
        view.claims = Some(Value::Object(claims.clone()));
        if jwt::str_claim(&claims, "iss") != Some(self.config.client_email.as_str()) {
            problems.push(format!(
                "the assertion's iss is {:?}, not the client_email {:?}",
                claims.get("iss"),
                self.config.client_email
            ));
        }
        let scopes: Vec<&str> = jwt::str_claim(&claims, "scope")
            .unwrap_or_default()
            .split(' ')
            .collect();
        if !scopes.contains(&FCM_SCOPE) && !scopes.contains(&CLOUD_PLATFORM_SCOPE) {
            problems.push(format!(
                "the assertion's scope {:?} does not contain {FCM_SCOPE}",
                claims.get("scope")
            ));
        }
        let token_uri = self.token_uri.get().map(String::as_str).unwrap_or_default();
        if jwt::str_claim(&claims, "aud") != Some(token_uri) {
            problems.push(format!(
                "the assertion's aud is {:?}, not the token_uri {token_uri:?}",
                claims.get("aud")
            ));
        }
        let now = jwt::now_unix();
        match (
            jwt::int_claim(&claims, "iat"),
            jwt::int_claim(&claims, "exp"),
        ) {
            (Some(iat), Some(exp)) => {
                if exp - iat > 3600 {
                    problems.push(format!(
                        "the assertion lives {} s (exp - iat), over 3600",
                        exp - iat
                    ));
                }
                if exp <= now {
                    problems.push(format!("the assertion expired at {exp} (now {now})"));
                }
                if iat > now + 5 {
                    problems.push(format!(
                        "the assertion's iat {iat} is in the future (now {now})"
                    ));
                }
            }
            _ => problems.push("the assertion needs integer iat and exp claims".into()),
        }
        problems
    }

    fn send(&self, request: &IncomingRequest) -> (FcmView, Vec<String>, CannedResponse) {
        let mut view = FcmView::default();
        let mut problems = Vec::new();
        let mut first: Option<CannedResponse> = None;
        let mut reject = |problems: &mut Vec<String>, response: CannedResponse, problem: String| {
            if first.is_none() {
                first = Some(response);
            }
            problems.push(problem);
        };

        let path = request.path_only();
        let project = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.strip_suffix("/messages:send"));
        view.project_id = project.map(str::to_owned);
        match project {
            None => reject(
                &mut problems,
                fcm_error(404, "NOT_FOUND", "Requested entity was not found.", None),
                format!("the path {path:?} is not /v1/projects/<project>/messages:send"),
            ),
            Some(project) if project != self.config.project_id => reject(
                &mut problems,
                fcm_error(
                    403,
                    "PERMISSION_DENIED",
                    "Permission 'cloudmessaging.messages.create' denied on resource.",
                    None,
                ),
                format!(
                    "the project id {project:?} is not {:?}",
                    self.config.project_id
                ),
            ),
            Some(_) => {}
        }
        if request.method != "POST" {
            reject(
                &mut problems,
                fcm_error(405, "METHOD_NOT_ALLOWED", "Method not allowed.", None),
                format!("messages:send takes POST, got {}", request.method),
            );
        }

        // Authorization: an issued, unrevoked token. A revoked one is the test's doing: 401 with
        // no problem recorded.
        let mut revoked = false;
        match request
            .header("authorization")
            .and_then(|value| value.split_once(' '))
        {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                let token = token.trim();
                view.access_token = Some(token.to_owned());
                match lock_state(&self.access_tokens).get(token) {
                    Some(true) => {}
                    Some(false) => revoked = true,
                    None => reject(
                        &mut problems,
                        unauthenticated(),
                        "the bearer token was never issued by the token endpoint".into(),
                    ),
                }
            }
            _ => reject(
                &mut problems,
                unauthenticated(),
                "no `Authorization: Bearer <access token>` header".into(),
            ),
        }

        let content_type = request.header("content-type").unwrap_or_default();
        if !content_type.starts_with("application/json") {
            problems.push(format!(
                "the content-type is {content_type:?}, not application/json"
            ));
        }
        for problem in check_send_body(&request.body, &mut view) {
            reject(
                &mut problems,
                fcm_error(400, "INVALID_ARGUMENT", &problem, Some("INVALID_ARGUMENT")),
                problem.clone(),
            );
        }

        let response = match first {
            Some(response) => response,
            None if revoked => unauthenticated(),
            None => match self.sends.next_canned() {
                Some(canned) => canned,
                None => {
                    let name = format!(
                        "projects/{}/messages/0:{}%{}",
                        self.config.project_id,
                        jwt::now_unix_millis(),
                        uuid::Uuid::new_v4().simple()
                    );
                    view.name = Some(name.clone());
                    CannedResponse::json(200, &json!({ "name": name }))
                }
            },
        };
        if response.status >= 400 {
            view.error_status = serde_json::from_slice::<Value>(&response.body)
                .ok()
                .and_then(|b| {
                    b.pointer("/error/status")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                });
        }
        (view, problems, response)
    }
}

/// Checks a send request's body as FCM's proto3 JSON parser and validation would, returning
/// every problem.
fn check_send_body(body: &[u8], view: &mut FcmView) -> Vec<String> {
    let mut problems = Vec::new();
    let request: Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(e) => return vec![format!("Invalid JSON payload received: {e}")],
    };
    let Some(request) = request.as_object() else {
        return vec!["the body is not a JSON object".into()];
    };
    unknown_fields(
        request,
        &["message", "validate_only", "validateOnly"],
        "",
        &mut problems,
    );
    let Some(message) = request.get("message").and_then(Value::as_object) else {
        problems.push("the body has no `message` object".into());
        return problems;
    };
    view.message = Some(Value::Object(message.clone()));
    unknown_fields(
        message,
        &[
            "name",
            "data",
            "notification",
            "android",
            "webpush",
            "apns",
            "fcm_options",
            "fcmOptions",
            "token",
            "topic",
            "condition",
        ],
        "message.",
        &mut problems,
    );

    let targets: Vec<(&str, &Value)> = ["token", "topic", "condition"]
        .iter()
        .filter_map(|key| message.get(*key).map(|v| (*key, v)))
        .collect();
    match targets.as_slice() {
        [(kind, value)] => match value.as_str() {
            Some(value) if !value.is_empty() => {
                if *kind == "topic"
                    && (value.starts_with("/topics/")
                        || !value
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)))
                {
                    problems.push(format!("message.topic {value:?} is not a valid topic name"));
                }
                view.target = Some(((*kind).to_owned(), value.to_owned()));
            }
            _ => problems.push(format!("message.{kind} must be a non-empty string")),
        },
        [] => problems.push("the message has none of token, topic or condition".into()),
        many => problems.push(format!(
            "the message has more than one target: {:?}",
            many.iter().map(|(k, _)| *k).collect::<Vec<_>>()
        )),
    }

    let mut payload_bytes = 0;
    if let Some(data) = message.get("data") {
        payload_bytes += string_map(data, "message.data", &mut problems);
        if let Some(data) = data.as_object() {
            for key in data.keys() {
                let lower = key.to_ascii_lowercase();
                if ["from", "notification", "message_type"].contains(&lower.as_str())
                    || lower.starts_with("google")
                    || lower.starts_with("gcm")
                {
                    problems.push(format!("message.data uses the reserved key {key:?}"));
                }
            }
        }
    }
    if let Some(notification) = message.get("notification") {
        match notification.as_object() {
            Some(notification) => {
                for (key, value) in notification {
                    match (key.as_str(), value.as_str()) {
                        ("title" | "body" | "image", Some(text)) => payload_bytes += text.len(),
                        ("title" | "body" | "image", None) => {
                            problems.push(format!("message.notification.{key} must be a string"));
                        }
                        _ => problems.push(format!(
                            "message.notification has the unknown field {key:?}"
                        )),
                    }
                }
            }
            None => problems.push("message.notification must be an object".into()),
        }
    }
    if payload_bytes > 4096 {
        problems.push(format!(
            "Message is too big: the data and notification payload is {payload_bytes} bytes, over 4096"
        ));
    }
    if let Some(android) = message.get("android") {
        check_android(android, &mut problems);
    }
    if let Some(apns) = message.get("apns") {
        match apns.as_object() {
            Some(apns) => {
                if let Some(headers) = apns.get("headers") {
                    string_map(headers, "message.apns.headers", &mut problems);
                }
                if let Some(payload) = apns.get("payload")
                    && !payload.is_object()
                {
                    problems.push("message.apns.payload must be an object".into());
                }
            }
            None => problems.push("message.apns must be an object".into()),
        }
    }
    if let Some(webpush) = message.get("webpush") {
        match webpush.as_object() {
            Some(webpush) => {
                for field in ["headers", "data"] {
                    if let Some(map) = webpush.get(field) {
                        string_map(map, &format!("message.webpush.{field}"), &mut problems);
                    }
                }
            }
            None => problems.push("message.webpush must be an object".into()),
        }
    }
    problems
}

fn check_android(android: &Value, problems: &mut Vec<String>) {
    let Some(android) = android.as_object() else {
        problems.push("message.android must be an object".into());
        return;
    };
    if let Some(priority) = android.get("priority")
        && !matches!(priority.as_str(), Some("HIGH" | "NORMAL"))
    {
        problems.push(format!(
            "message.android.priority {priority} is not \"HIGH\" or \"NORMAL\""
        ));
    }
    if let Some(ttl) = android.get("ttl")
        && !ttl.as_str().is_some_and(is_duration)
    {
        problems.push(format!(
            "message.android.ttl {ttl} is not a duration in seconds such as \"3600s\""
        ));
    }
    for key in [
        "collapse_key",
        "collapseKey",
        "restricted_package_name",
        "restrictedPackageName",
    ] {
        if let Some(value) = android.get(key)
            && !value.is_string()
        {
            problems.push(format!("message.android.{key} must be a string"));
        }
    }
    if let Some(data) = android.get("data") {
        string_map(data, "message.android.data", problems);
    }
    if let Some(notification) = android.get("notification")
        && !notification.is_object()
    {
        problems.push("message.android.notification must be an object".into());
    }
}

/// Whether `text` is a protobuf JSON duration: digits, up to nine fraction digits, then `s`.
fn is_duration(text: &str) -> bool {
    let Some(number) = text.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() <= 9
        && fraction.bytes().all(|b| b.is_ascii_digit())
        && !(number.contains('.') && fraction.is_empty())
}

/// Checks that `value` is an object of strings; returns the bytes of its keys and values.
fn string_map(value: &Value, field: &str, problems: &mut Vec<String>) -> usize {
    let Some(map) = value.as_object() else {
        problems.push(format!("{field} must be an object of strings"));
        return 0;
    };
    let mut bytes = 0;
    for (key, value) in map {
        match value.as_str() {
            Some(text) => bytes += key.len() + text.len(),
            None => problems.push(format!(
                "{field}.{key} is {value}, but every value must be a string"
            )),
        }
    }
    bytes
}

fn unknown_fields(
    object: &Map<String, Value>,
    known: &[&str],
    prefix: &str,
    problems: &mut Vec<String>,
) {
    for key in object.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(format!(
                "Invalid JSON payload received. Unknown name \"{prefix}{key}\""
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_protobuf_json_form() {
        for good in ["3600s", "0s", "1.5s", "10.000000001s"] {
            assert!(is_duration(good), "{good}");
        }
        for bad in ["3600", "1h", "s", "1.s", "-1s", "1.0000000001s", "3600 s"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn data_values_must_be_strings() {
        let mut view = FcmView::default();
        let problems = check_send_body(
            br#"{"message": {"token": "t", "data": {"n": 1, "ok": "yes"}}}"#,
            &mut view,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("message.data.n"));
    }

    #[test]
    fn exactly_one_target_is_allowed() {
        let mut view = FcmView::default();
        let problems = check_send_body(
            br#"{"message": {"token": "t", "topic": "news"}}"#,
            &mut view,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
