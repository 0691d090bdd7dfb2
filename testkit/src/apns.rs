//! A mock APNs server built from Apple's "Sending notification requests to APNs", "Handling
//! notification responses from APNs" and the two ways of "Establishing a ... connection to
//! APNs": TLS, HTTP/2, ES256 provider tokens or TLS client certificates, and every header and
//! payload rule those documents state.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Value, json};

use crate::jwt;
use crate::script::{CannedResponse, IncomingRequest, RecordedRequest, Recorder, lock_state};
use crate::server::{ConnectionControl, Peer, Respond, Server};
use crate::tls::{PUSH_CERTIFICATE_CN_PREFIX, TestCa, TestClientCa, subject_common_name};

/// What the mock expects of the provider: the values a real APNs knows from the developer
/// account.
#[derive(Debug, Clone)]
pub struct ApnsMockConfig {
    /// The 10-character team id, the JWT's `iss`.
    pub team_id: String,
    /// The key id, the JWT header's `kid`.
    pub key_id: String,
    /// The ES256 (P-256) public key in PEM matching the `.p8` key given to the client.
    pub public_key_pem: String,
    /// The app's bundle id; `apns-topic` must equal it (with Apple's suffix for VoIP,
    /// complication, file provider, Live Activity, push-to-talk and widgets pushes). On a
    /// connection authenticated by a client certificate, the certificate's topic takes its
    /// place.
    pub topic: String,
}

/// What the APNs mock made of one request.
#[derive(Debug, Clone, Default)]
pub struct ApnsView {
    /// The device token from the path.
    pub device_token: Option<String>,
    /// The provider token (JWT) from `authorization: bearer`.
    pub jwt: Option<String>,
    /// The JWT's claims when its signature verified.
    pub jwt_claims: Option<Value>,
    /// The subject CN of the client certificate the connection was authenticated with (one the
    /// mock's client CA signed), such as `Apple Push Services: com.example.shop`; `None` when
    /// the client presented no certificate.
    pub client_certificate_cn: Option<String>,
    /// `apns-topic`.
    pub topic: Option<String>,
    /// `apns-push-type`.
    pub push_type: Option<String>,
    /// `apns-priority`.
    pub priority: Option<String>,
    /// `apns-expiration`.
    pub expiration: Option<String>,
    /// `apns-collapse-id`.
    pub collapse_id: Option<String>,
    /// The request's `apns-id`, when given.
    pub request_apns_id: Option<String>,
    /// The `apns-id` the mock answered with.
    pub response_apns_id: String,
    /// The body parsed as JSON, when it is JSON.
    pub payload: Option<Value>,
    /// The error reason the mock answered with, if any.
    pub reason: Option<String>,
}

/// The largest payload APNs accepts, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// The largest VoIP payload APNs accepts, in bytes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;

const PUSH_TYPES: [&str; 10] = [
    "alert",
    "background",
    "location",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "pushtotalk",
    "widgets",
];

/// A running mock APNs server. Dropping it stops the server.
#[derive(Debug)]
pub struct MockApns {
    state: Arc<ApnsState>,
    server: Server,
    ca: TestCa,
}

#[derive(Debug)]
struct ApnsState {
    config: ApnsMockConfig,
    key: DecodingKey,
    recorder: Recorder<ApnsView>,
    jwts: Mutex<BTreeSet<String>>,
    /// Provider tokens whose signature and claims checked out, with when they were issued; in
    /// counting-only mode a token seen here is not verified again (ES256 verification would
    /// otherwise cost the mock more than the client under test spends on a request).
    verified_jwts: Mutex<BTreeMap<String, i64>>,
    handshake_failures: Mutex<Vec<String>>,
}

impl MockApns {
    /// Starts the mock on 127.0.0.1 with a fresh test CA (see [`MockApns::ca_pem`]).
    ///
    /// # Errors
    /// When the public key is not a P-256 PEM key, or the server cannot start.
    pub async fn start(config: ApnsMockConfig) -> anyhow::Result<Self> {
        let ca = TestCa::new()?;
        Self::start_with_ca(config, &ca).await
    }

    /// Starts the mock serving a certificate from `ca`, so that one CA can serve several mocks.
    ///
    /// # Errors
    /// When the public key is not a P-256 PEM key, or the server cannot start.
    pub async fn start_with_ca(config: ApnsMockConfig, ca: &TestCa) -> anyhow::Result<Self> {
        Self::start_serving(config, ca, ca.server_config()?).await
    }

    /// Starts the mock, with a fresh test CA, so that it also accepts certificate-based
    /// connections: it asks every client for a certificate and verifies it against
    /// `client_ca`, as APNs does against Apple's CA. A request on a connection with a verified
    /// certificate needs no `authorization` header (a provider token sent anyway is still
    /// checked) and may omit `apns-topic`; the certificate's subject CN must read
    /// `Apple Push Services: <topic>` (else 403 `BadCertificate`), and another `apns-topic` is
    /// 400 `TopicDisallowed`. A client that presents no certificate must use a provider token,
    /// as with [`MockApns::start`]; one whose certificate `client_ca` did not sign fails the
    /// TLS handshake (see [`MockApns::handshake_failures`]).
    ///
    /// # Errors
    /// When the public key is not a P-256 PEM key, or the server cannot start.
    pub async fn start_with_client_ca(
        config: ApnsMockConfig,
        client_ca: &TestClientCa,
    ) -> anyhow::Result<Self> {
        let ca = TestCa::new()?;
        let tls = ca.server_config_with_client_auth(client_ca)?;
        Self::start_serving(config, &ca, tls).await
    }

    async fn start_serving(
        config: ApnsMockConfig,
        ca: &TestCa,
        tls: Arc<rustls::ServerConfig>,
    ) -> anyhow::Result<Self> {
        crate::tls::install_default_crypto_provider();
        let key = DecodingKey::from_ec_pem(config.public_key_pem.as_bytes())
            .context("the APNs mock's public_key_pem is not an EC public key in PEM")?;
        let state = Arc::new(ApnsState {
            config,
            key,
            recorder: Recorder::default(),
            jwts: Mutex::new(BTreeSet::new()),
            verified_jwts: Mutex::new(BTreeMap::new()),
            handshake_failures: Mutex::new(Vec::new()),
        });
        let server = Server::start(Arc::clone(&state) as Arc<dyn Respond>, Some(tls)).await?;
        Ok(Self {
            state,
            server,
            ca: ca.clone(),
        })
    }

    /// The base URL to configure as the APNs endpoint, such as `https://127.0.0.1:43123`.
    #[must_use]
    pub fn base_url(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// The address the mock listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The PEM of the CA that signed the mock's certificate, for the client's trusted roots.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca.ca_pem
    }

    /// The CA the mock's certificate comes from.
    #[must_use]
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// How many requests arrived (good or bad).
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.state.recorder.count()
    }

    /// Stops recording requests, for load tests: each is still checked and answered, and
    /// counted in [`MockApns::request_count`] (and [`MockApns::faulty_request_count`] when the mock found
    /// a problem), but [`MockApns::requests`] stays empty, so that memory does not grow with the
    /// number of requests.
    pub fn count_only(&self) {
        self.state.recorder.set_counting_only();
    }

    /// How many requests had a problem the mock reported (recorded or not).
    #[must_use]
    pub fn faulty_request_count(&self) -> usize {
        self.state.recorder.faulty_count()
    }

    /// Every request received, in order.
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest<ApnsView>> {
        self.state.recorder.requests()
    }

    /// Queues a canned response for the next valid request (an `apns-id` header is added when
    /// missing). Requests that break the spec get the spec's error and leave the queue alone.
    pub fn enqueue(&self, response: CannedResponse) {
        self.state.recorder.enqueue(response);
    }

    /// Queues an APNs error such as `(410, "Unregistered")`, `(400, "BadDeviceToken")`,
    /// `(400, "DeviceTokenNotForTopic")`, `(429, "TooManyRequests")`,
    /// `(500, "InternalServerError")`, `(503, "ServiceUnavailable")`, `(503, "Shutdown")` or
    /// `(403, "ExpiredProviderToken")`. A 410 carries a `timestamp` in milliseconds, as APNs's
    /// does.
    pub fn enqueue_error(&self, status: u16, reason: &str) {
        self.enqueue(apns_error(status, reason));
    }

    /// Delays every answer by `delay` (to provoke client timeouts).
    pub fn set_delay(&self, delay: Duration) {
        self.state.recorder.set_delay(delay);
    }

    /// Lengthens each answer's delay by a random share of `jitter` (uniform, none to all).
    pub fn set_jitter(&self, jitter: Duration) {
        self.state.recorder.set_jitter(jitter);
    }

    /// The mock's connections: the HTTP/2 stream limit they advertise and the `GOAWAY`s they
    /// send (see [`ConnectionControl`]).
    #[must_use]
    pub fn connections(&self) -> &ConnectionControl {
        self.server.control()
    }

    /// How many distinct provider tokens (JWTs) the mock has seen, to check token caching.
    #[must_use]
    pub fn distinct_jwt_count(&self) -> usize {
        lock_state(&self.state.jwts).len()
    }

    /// Every distinct provider token seen.
    #[must_use]
    pub fn jwts_seen(&self) -> Vec<String> {
        lock_state(&self.state.jwts).iter().cloned().collect()
    }

    /// Why each failed TLS handshake failed, in order, such as a client certificate the client
    /// CA did not sign (`invalid peer certificate: UnknownIssuer`). These connections never
    /// carried a request, so they are not in [`MockApns::requests`].
    #[must_use]
    pub fn handshake_failures(&self) -> Vec<String> {
        lock_state(&self.state.handshake_failures).clone()
    }
}

/// An APNs error response: `{"reason": ...}`, plus `timestamp` (ms) for 410.
#[must_use]
pub fn apns_error(status: u16, reason: &str) -> CannedResponse {
    let body = if status == 410 {
        json!({ "reason": reason, "timestamp": u64::try_from(jwt::now_unix_millis()).unwrap_or(u64::MAX) })
    } else {
        json!({ "reason": reason })
    };
    CannedResponse::json(status, &body)
}

/// A violation: the status and reason APNs would answer with, and the problem sentence.
struct Violation {
    status: u16,
    reason: &'static str,
}

#[derive(Default)]
struct Findings {
    first: Option<Violation>,
    problems: Vec<String>,
}

impl Findings {
    fn reject(&mut self, status: u16, reason: &'static str, problem: String) {
        if self.first.is_none() {
            self.first = Some(Violation { status, reason });
        }
        self.problems.push(problem);
    }

    /// A problem that a real APNs accepts but that makes the notification misbehave.
    fn note(&mut self, problem: String) {
        self.problems.push(problem);
    }
}

impl Respond for ApnsState {
    fn respond(&self, request: IncomingRequest) -> (CannedResponse, Duration) {
        self.respond_to_peer(request, &Peer::default())
    }

    fn respond_to_peer(&self, request: IncomingRequest, peer: &Peer) -> (CannedResponse, Duration) {
        let mut view = ApnsView::default();
        let mut findings = Findings::default();
        self.check(&request, peer, &mut view, &mut findings);

        view.response_apns_id = view
            .request_apns_id
            .clone()
            .filter(|id| is_canonical_uuid(id))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut response = match findings.first.take() {
            Some(violation) => {
                view.reason = Some(violation.reason.to_owned());
                apns_error(violation.status, violation.reason)
            }
            None => match self.recorder.next_canned() {
                Some(canned) => {
                    view.reason = serde_json::from_slice::<Value>(&canned.body)
                        .ok()
                        .and_then(|b| b.get("reason").and_then(Value::as_str).map(str::to_owned));
                    canned
                }
                None => CannedResponse::empty(200),
            },
        };
        if !response.has_header("apns-id") {
            response = response.with_header("apns-id", &view.response_apns_id);
        }
        self.recorder
            .record(request, view, findings.problems, &response);
        (response, self.recorder.delay())
    }

    fn handshake_failed(&self, reason: &str) {
        lock_state(&self.handshake_failures).push(reason.to_owned());
    }
}

impl ApnsState {
    fn check(
        &self,
        request: &IncomingRequest,
        peer: &Peer,
        view: &mut ApnsView,
        findings: &mut Findings,
    ) {
        if request.version != "HTTP/2.0" {
            findings.reject(
                400,
                "HTTP2Required",
                format!(
                    "APNs requires HTTP/2 but the request used {}",
                    request.version
                ),
            );
        }
        if request.method != "POST" {
            findings.reject(
                405,
                "MethodNotAllowed",
                format!("APNs accepts only POST, got {}", request.method),
            );
        }
        match request.path_only().strip_prefix("/3/device/") {
            Some(token) => {
                view.device_token = Some(token.to_owned());
                if token.is_empty() {
                    findings.reject(
                        400,
                        "MissingDeviceToken",
                        "the device token is missing".into(),
                    );
                } else if !(64..=200).contains(&token.len())
                    || token.len() % 2 != 0
                    || !token.bytes().all(|b| b.is_ascii_hexdigit())
                {
                    findings.reject(
                        400,
                        "BadDeviceToken",
                        format!(
                            "the device token {token:?} is not 64 to 200 hexadecimal characters of even length"
                        ),
                    );
                }
            }
            None => findings.reject(
                404,
                "BadPath",
                format!("the path {:?} is not /3/device/<token>", request.path),
            ),
        }
        for (name, _) in &request.headers {
            if name.starts_with("apns-") && request.header_count(name) > 1 {
                findings.reject(
                    400,
                    "DuplicateHeaders",
                    format!("the header {name} is repeated"),
                );
                break;
            }
        }
        let certificate_topic = check_certificate(peer, view, findings);
        // A verified client certificate authenticates the connection, so the request needs no
        // provider token; one sent anyway must still be valid.
        if peer.certificates.is_empty() || request.header("authorization").is_some() {
            self.check_token(request, view, findings);
        }
        self.check_headers(request, certificate_topic.as_deref(), view, findings);
        check_payload(request, view, findings);
    }

    fn check_token(&self, request: &IncomingRequest, view: &mut ApnsView, findings: &mut Findings) {
        let Some(authorization) = request.header("authorization") else {
            findings.reject(
                403,
                "MissingProviderToken",
                "no authorization header with a provider token".into(),
            );
            return;
        };
        let token = match authorization.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                findings.reject(
                    403,
                    "InvalidProviderToken",
                    format!("the authorization header is not `bearer <JWT>`: {authorization:?}"),
                );
                return;
            }
        };
        view.jwt = Some(token.to_owned());
        lock_state(&self.jwts).insert(token.to_owned());
        if self.recorder.counting_only() {
            let verified = lock_state(&self.verified_jwts).get(token).copied();
            if let Some(iat) = verified {
                let age = jwt::now_unix() - iat;
                if age > 3600 {
                    findings.reject(
                        403,
                        "ExpiredProviderToken",
                        format!("the provider token is {age} s old, over one hour"),
                    );
                }
                return;
            }
        }

        let invalid = |findings: &mut Findings, problem: String| {
            findings.reject(403, "InvalidProviderToken", problem);
        };
        let header = match jwt::header(token) {
            Ok(header) => header,
            Err(problem) => return invalid(findings, problem),
        };
        if header.alg != Algorithm::ES256 {
            invalid(
                findings,
                format!("the provider token's alg is {:?}, not ES256", header.alg),
            );
        }
        if header.kid.as_deref() != Some(self.config.key_id.as_str()) {
            invalid(
                findings,
                format!(
                    "the provider token's kid is {:?}, not the key id {:?}",
                    header.kid, self.config.key_id
                ),
            );
        }
        let claims = match jwt::verify(token, &self.key, Algorithm::ES256) {
            Ok(claims) => claims,
            Err(problem) => return invalid(findings, problem),
        };
        view.jwt_claims = Some(Value::Object(claims.clone()));
        if jwt::str_claim(&claims, "iss") != Some(self.config.team_id.as_str()) {
            invalid(
                findings,
                format!(
                    "the provider token's iss is {:?}, not the team id {:?}",
                    claims.get("iss"),
                    self.config.team_id
                ),
            );
        }
        let now = jwt::now_unix();
        match jwt::int_claim(&claims, "iat") {
            None => invalid(
                findings,
                "the provider token has no integer iat claim".into(),
            ),
            Some(iat) if iat > now + 5 => invalid(
                findings,
                format!("the provider token's iat {iat} is in the future (now {now})"),
            ),
            Some(iat) if now - iat > 3600 => findings.reject(
                403,
                "ExpiredProviderToken",
                format!("the provider token is {} s old, over one hour", now - iat),
            ),
            Some(iat) => {
                if self.recorder.counting_only() && findings.first.is_none() {
                    lock_state(&self.verified_jwts).insert(token.to_owned(), iat);
                }
            }
        }
    }

    /// Checks the `apns-*` headers; `certificate_topic` is the topic of the connection's client
    /// certificate, which replaces the configured topic and makes `apns-topic` optional.
    fn check_headers(
        &self,
        request: &IncomingRequest,
        certificate_topic: Option<&str>,
        view: &mut ApnsView,
        findings: &mut Findings,
    ) {
        view.topic = request.header("apns-topic").map(str::to_owned);
        view.push_type = request.header("apns-push-type").map(str::to_owned);
        view.priority = request.header("apns-priority").map(str::to_owned);
        view.expiration = request.header("apns-expiration").map(str::to_owned);
        view.collapse_id = request.header("apns-collapse-id").map(str::to_owned);
        view.request_apns_id = request.header("apns-id").map(str::to_owned);

        let push_type = view.push_type.as_deref();
        let bundle_id = certificate_topic.unwrap_or(&self.config.topic);
        let expected_topic = match push_type {
            Some("voip") => format!("{bundle_id}.voip"),
            Some("complication") => format!("{bundle_id}.complication"),
            Some("fileprovider") => format!("{bundle_id}.pushkit.fileprovider"),
            Some("liveactivity") => format!("{bundle_id}.push-type.liveactivity"),
            Some("pushtotalk") => format!("{bundle_id}.voip-ptt"),
            Some("widgets") => format!("{bundle_id}.push-type.widgets"),
            _ => bundle_id.to_owned(),
        };
        match (view.topic.as_deref(), certificate_topic) {
            // APNs uses the certificate's topic.
            (None, Some(_)) => {}
            (None, None) => findings.reject(
                400,
                "MissingTopic",
                "apns-topic is required with token authentication".into(),
            ),
            (Some(topic), Some(_)) if topic != expected_topic => findings.reject(
                400,
                "TopicDisallowed",
                format!(
                    "apns-topic is {topic:?}, but the client certificate allows {expected_topic:?}"
                ),
            ),
            (Some(topic), None) if topic != expected_topic => findings.reject(
                400,
                "BadTopic",
                format!("apns-topic is {topic:?}, expected {expected_topic:?}"),
            ),
            (Some(_), _) => {}
        }
        match push_type {
            None => findings.reject(400, "InvalidPushType", "apns-push-type is missing".into()),
            Some(kind) if !PUSH_TYPES.contains(&kind) => findings.reject(
                400,
                "InvalidPushType",
                format!("apns-push-type {kind:?} is not one of {PUSH_TYPES:?}"),
            ),
            Some(_) => {}
        }
        match view.priority.as_deref() {
            Some(p) if !matches!(p, "10" | "5" | "1") => findings.reject(
                400,
                "BadPriority",
                format!("apns-priority {p:?} is not 10, 5 or 1"),
            ),
            priority => {
                if push_type == Some("background") && priority.unwrap_or("10") == "10" {
                    findings.reject(
                        400,
                        "BadPriority",
                        "a background notification must have apns-priority 5 or 1, not 10 (the default)"
                            .into(),
                    );
                }
            }
        }
        if let Some(expiration) = view.expiration.as_deref()
            && expiration.parse::<u64>().is_err()
        {
            findings.reject(
                400,
                "BadExpirationDate",
                format!("apns-expiration {expiration:?} is not a non-negative integer"),
            );
        }
        if let Some(collapse_id) = view.collapse_id.as_deref()
            && collapse_id.len() > 64
        {
            findings.reject(
                400,
                "BadCollapseId",
                format!("apns-collapse-id is {} bytes, over 64", collapse_id.len()),
            );
        }
        if let Some(id) = view.request_apns_id.as_deref()
            && !is_canonical_uuid(id)
        {
            findings.reject(
                400,
                "BadMessageId",
                format!("apns-id {id:?} is not a canonical 8-4-4-4-12 UUID"),
            );
        }
    }
}

/// Reads the connection's verified client certificate, if any, into the view, and returns the
/// topic its subject CN names (`Apple Push Services: <topic>`).
fn check_certificate(peer: &Peer, view: &mut ApnsView, findings: &mut Findings) -> Option<String> {
    let certificate = peer.certificates.first()?;
    let common_name = subject_common_name(certificate);
    view.client_certificate_cn.clone_from(&common_name);
    let topic = common_name
        .as_deref()
        .and_then(|cn| cn.strip_prefix(PUSH_CERTIFICATE_CN_PREFIX))
        .filter(|topic| !topic.is_empty());
    if topic.is_none() {
        findings.reject(
            403,
            "BadCertificate",
            format!(
                "the client certificate's subject CN {common_name:?} names no topic \
                 (Apple's read `{PUSH_CERTIFICATE_CN_PREFIX}<bundle id>`)"
            ),
        );
    }
    topic.map(str::to_owned)
}

fn check_payload(request: &IncomingRequest, view: &mut ApnsView, findings: &mut Findings) {
    let body = &request.body;
    if body.is_empty() {
        findings.reject(400, "PayloadEmpty", "the body is empty".into());
        return;
    }
    let limit = if view.push_type.as_deref() == Some("voip") {
        MAX_VOIP_PAYLOAD
    } else {
        MAX_PAYLOAD
    };
    if body.len() > limit {
        findings.reject(
            413,
            "PayloadTooLarge",
            format!(
                "the payload is {} bytes, over the limit of {limit}",
                body.len()
            ),
        );
    }
    let payload = match serde_json::from_slice::<Value>(body) {
        Ok(payload) => payload,
        Err(e) => {
            findings.reject(400, "BadPayload", format!("the body is not JSON: {e}"));
            return;
        }
    };
    view.payload = Some(payload.clone());
    let Some(aps) = payload.get("aps") else {
        findings.reject(
            400,
            "BadPayload",
            "the payload is not a JSON object with an `aps` dictionary".into(),
        );
        return;
    };
    let Some(aps) = aps.as_object() else {
        findings.reject(400, "BadPayload", "`aps` is not a dictionary".into());
        return;
    };
    match view.push_type.as_deref() {
        Some("background") => {
            if aps.get("content-available").and_then(Value::as_i64) != Some(1) {
                findings.note("a background notification needs aps.content-available = 1".into());
            }
            for key in ["alert", "badge", "sound"] {
                if aps.contains_key(key) {
                    findings.note(format!(
                        "a background notification must not carry aps.{key}"
                    ));
                }
            }
        }
        Some("alert")
            if !["alert", "badge", "sound"]
                .iter()
                .any(|k| aps.contains_key(*k)) =>
        {
            findings.note("an alert notification carries no aps.alert, badge or sound".into());
        }
        _ => {}
    }
}

/// Whether `id` is a UUID in the canonical 8-4-4-4-12 hexadecimal form.
fn is_canonical_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh P-256 key as Apple's `.p8` files hold it: `(private key in PKCS#8 PEM, public key
/// in SPKI PEM)`.
///
/// # Errors
/// When key generation fails.
pub fn apns_test_key() -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("failed to generate a P-256 key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_uuids_are_recognised() {
        assert!(is_canonical_uuid("123e4567-e89b-12d3-a456-42665544000A"));
        assert!(!is_canonical_uuid("123e4567e89b12d3a45642665544000a"));
        assert!(!is_canonical_uuid("123e4567-e89b-12d3-a456-4266554400"));
    }

    #[test]
    fn test_keys_are_pkcs8_pem() {
        let (private, public) = apns_test_key().unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}
