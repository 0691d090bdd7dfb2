//! A mock Web Push service: RFC 8030 (push), RFC 8291 (message encryption), RFC 8188
//! (`aes128gcm` content coding) and RFC 8292 (VAPID). It makes subscriptions, keeps their
//! private keys and decrypts every pushed message itself.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use aes_gcm::aead::{Aead as _, KeyInit as _};
use aes_gcm::{Aes128Gcm, Nonce};
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hkdf::Hkdf;
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::{EncodePrivateKey as _, LineEnding};
use p256::{PublicKey, SecretKey};
use serde_json::Value;
use sha2::Sha256;

use crate::jwt;
use crate::script::{CannedResponse, IncomingRequest, RecordedRequest, Recorder, lock_state};
use crate::server::{ConnectionControl, Respond, Server};
use crate::tls::TestCa;

/// The largest body a push service must accept (RFC 8291 §4), in bytes.
pub const MAX_BODY: usize = 4096;

/// What the mock expects beyond the RFCs.
#[derive(Debug, Clone, Default)]
pub struct WebPushMockConfig {
    /// When set, the VAPID `k` must equal this base64url public key (403 otherwise).
    pub expected_vapid_public_key: Option<String>,
}

/// A subscription as a browser hands it to the application server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestSubscription {
    /// The mock's id for it.
    pub id: String,
    /// `https://127.0.0.1:<port>/push/<id>`.
    pub endpoint: String,
    /// The user agent's public key: base64url of the 65-byte uncompressed P-256 point.
    pub p256dh: String,
    /// The authentication secret: base64url of 16 bytes.
    pub auth: String,
}

/// What the mock made of one push.
#[derive(Debug, Clone, Default)]
pub struct WebPushView {
    /// The subscription id from the path.
    pub subscription_id: Option<String>,
    /// `TTL`.
    pub ttl: Option<String>,
    /// `Urgency`.
    pub urgency: Option<String>,
    /// `Topic`.
    pub topic: Option<String>,
    /// `Content-Encoding`.
    pub content_encoding: Option<String>,
    /// The VAPID JWT (`t`).
    pub vapid_jwt: Option<String>,
    /// The VAPID public key (`k`).
    pub vapid_key: Option<String>,
    /// The VAPID claims when the signature verified.
    pub vapid_claims: Option<Value>,
    /// The decrypted message.
    pub plaintext: Option<Vec<u8>>,
}

impl WebPushView {
    /// The decrypted message as UTF-8, when it is.
    #[must_use]
    pub fn plaintext_str(&self) -> Option<&str> {
        self.plaintext
            .as_deref()
            .and_then(|p| std::str::from_utf8(p).ok())
    }
}

/// A VAPID (application server) key pair for tests.
#[derive(Clone)]
pub struct VapidTestKey {
    /// The private key in PKCS#8 PEM.
    pub private_key_pem: String,
    /// The raw 32-byte private scalar, base64url.
    pub private_key_b64url: String,
    /// The 65-byte uncompressed public point, base64url (the VAPID `k`).
    pub public_key_b64url: String,
}

impl std::fmt::Debug for VapidTestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VapidTestKey")
            .field("public_key_b64url", &self.public_key_b64url)
            .finish_non_exhaustive()
    }
}

impl VapidTestKey {
    /// A fresh P-256 key pair.
    ///
    /// # Errors
    /// When the key cannot be encoded.
    pub fn generate() -> anyhow::Result<Self> {
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let pem = secret
            .to_pkcs8_pem(LineEnding::LF)
            .context("failed to encode a VAPID key as PKCS#8")?;
        Ok(Self {
            private_key_pem: pem.to_string(),
            private_key_b64url: URL_SAFE_NO_PAD.encode(secret.to_bytes()),
            public_key_b64url: URL_SAFE_NO_PAD
                .encode(secret.public_key().to_encoded_point(false).as_bytes()),
        })
    }

    /// The `Authorization` header value `vapid t=<JWT>, k=<key>` for these claims, signed with
    /// ES256 (for tests that play the application server).
    ///
    /// # Errors
    /// When signing fails.
    pub fn authorization(&self, aud: &str, sub: &str, exp: i64) -> anyhow::Result<String> {
        crate::tls::install_default_crypto_provider();
        let key = jsonwebtoken::EncodingKey::from_ec_pem(self.private_key_pem.as_bytes())
            .context("failed to load the VAPID key")?;
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.typ = Some("JWT".to_owned());
        let claims = serde_json::json!({ "aud": aud, "sub": sub, "exp": exp });
        let token = jsonwebtoken::encode(&header, &claims, &key).context("failed to sign")?;
        Ok(format!("vapid t={token}, k={}", self.public_key_b64url))
    }
}

struct Subscription {
    secret: SecretKey,
    public: Vec<u8>,
    auth: Vec<u8>,
    active: bool,
}

/// A running mock push service over TLS. Dropping it stops the server.
#[derive(Debug)]
pub struct MockWebPush {
    state: Arc<WebPushState>,
    server: Server,
    ca: TestCa,
}

struct WebPushState {
    config: WebPushMockConfig,
    origin: OnceLock<String>,
    subscriptions: Mutex<HashMap<String, Subscription>>,
    recorder: Recorder<WebPushView>,
}

impl std::fmt::Debug for WebPushState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebPushState")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl MockWebPush {
    /// Starts the mock with a fresh test CA.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start(config: WebPushMockConfig) -> anyhow::Result<Self> {
        let ca = TestCa::new()?;
        Self::start_with_ca(config, &ca).await
    }

    /// Starts the mock serving a certificate from `ca`.
    ///
    /// # Errors
    /// When the server cannot start.
    pub async fn start_with_ca(config: WebPushMockConfig, ca: &TestCa) -> anyhow::Result<Self> {
        crate::tls::install_default_crypto_provider();
        let state = Arc::new(WebPushState {
            config,
            origin: OnceLock::new(),
            subscriptions: Mutex::new(HashMap::new()),
            recorder: Recorder::default(),
        });
        let server = Server::start(
            Arc::clone(&state) as Arc<dyn Respond>,
            Some(ca.server_config()?),
        )
        .await?;
        let _ = state.origin.set(format!("https://{}", server.addr()));
        Ok(Self {
            state,
            server,
            ca: ca.clone(),
        })
    }

    /// The origin, `https://127.0.0.1:<port>`: what a VAPID `aud` must be.
    #[must_use]
    pub fn origin(&self) -> String {
        format!("https://{}", self.server.addr())
    }

    /// The address the mock listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The PEM of the CA that signed the mock's certificate.
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca.ca_pem
    }

    /// The CA the mock's certificate comes from.
    #[must_use]
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// Makes a subscription with a fresh key pair and authentication secret.
    #[must_use]
    pub fn new_subscription(&self) -> TestSubscription {
        let secret = SecretKey::random(&mut rand_core::OsRng);
        let public = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let mut auth = [0_u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut auth);
        let id = uuid::Uuid::new_v4().simple().to_string();
        let subscription = TestSubscription {
            id: id.clone(),
            endpoint: format!("{}/push/{id}", self.origin()),
            p256dh: URL_SAFE_NO_PAD.encode(&public),
            auth: URL_SAFE_NO_PAD.encode(auth),
        };
        lock_state(&self.state.subscriptions).insert(
            id,
            Subscription {
                secret,
                public,
                auth: auth.to_vec(),
                active: true,
            },
        );
        subscription
    }

    /// Ends a subscription: later pushes to it get 410 Gone (not a problem of the sender).
    pub fn unsubscribe(&self, subscription: &TestSubscription) {
        if let Some(found) = lock_state(&self.state.subscriptions).get_mut(&subscription.id) {
            found.active = false;
        }
    }

    /// How many requests arrived (good or bad).
    #[must_use]
    pub fn request_count(&self) -> usize {
        self.state.recorder.count()
    }

    /// Stops recording requests, for load tests: each is still checked and answered, and
    /// counted in [`MockWebPush::request_count`] (and [`MockWebPush::faulty_request_count`] when the mock found
    /// a problem), but [`MockWebPush::requests`] stays empty, so that memory does not grow with the
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
    pub fn requests(&self) -> Vec<RecordedRequest<WebPushView>> {
        self.state.recorder.requests()
    }

    /// Queues a canned response for the next valid push (such as 404, 410, 413, 429 with
    /// Retry-After, 500, 503).
    pub fn enqueue(&self, response: CannedResponse) {
        self.state.recorder.enqueue(response);
    }

    /// Queues a response with this status and an empty body.
    pub fn enqueue_status(&self, status: u16) {
        self.enqueue(CannedResponse::empty(status));
    }

    /// Delays every answer by `delay`.
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
}

struct Findings {
    first: Option<u16>,
    problems: Vec<String>,
}

impl Findings {
    fn reject(&mut self, status: u16, problem: String) {
        self.first.get_or_insert(status);
        self.problems.push(problem);
    }
}

impl Respond for WebPushState {
    fn respond(&self, request: IncomingRequest) -> (CannedResponse, Duration) {
        let mut view = WebPushView::default();
        let mut findings = Findings {
            first: None,
            problems: Vec::new(),
        };
        let gone = self.check(&request, &mut view, &mut findings);
        let response = match (findings.first, gone) {
            (Some(status), _) => CannedResponse::empty(status),
            (None, true) => CannedResponse::empty(410),
            (None, false) => self.recorder.next_canned().unwrap_or_else(|| {
                let origin = self.origin.get().map(String::as_str).unwrap_or_default();
                CannedResponse::empty(201).with_header(
                    "location",
                    &format!("{origin}/message/{}", uuid::Uuid::new_v4().simple()),
                )
            }),
        };
        self.recorder
            .record(request, view, findings.problems, &response);
        (response, self.recorder.delay())
    }
}

impl WebPushState {
    /// Checks one push; returns whether it went to an ended subscription.
    fn check(
        &self,
        request: &IncomingRequest,
        view: &mut WebPushView,
        findings: &mut Findings,
    ) -> bool {
        if request.method != "POST" {
            findings.reject(405, format!("a push is a POST, got {}", request.method));
        }
        let Some(id) = request.path_only().strip_prefix("/push/") else {
            findings.reject(
                404,
                format!("the path {:?} is not /push/<id>", request.path),
            );
            return false;
        };
        view.subscription_id = Some(id.to_owned());

        view.ttl = request.header("ttl").map(str::to_owned);
        match view.ttl.as_deref() {
            None => findings.reject(400, "the TTL header is missing (RFC 8030 §5.2)".into()),
            Some(ttl) if ttl.trim().parse::<u64>().is_err() => {
                findings.reject(400, format!("TTL {ttl:?} is not a non-negative integer"));
            }
            Some(_) => {}
        }
        view.urgency = request.header("urgency").map(str::to_owned);
        if let Some(urgency) = view.urgency.as_deref()
            && !matches!(urgency, "very-low" | "low" | "normal" | "high")
        {
            findings.reject(
                400,
                format!("Urgency {urgency:?} is not very-low, low, normal or high"),
            );
        }
        view.topic = request.header("topic").map(str::to_owned);
        if let Some(topic) = view.topic.as_deref()
            && (topic.is_empty()
                || topic.len() > 32
                || !topic
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            findings.reject(
                400,
                format!("Topic {topic:?} is not 1 to 32 characters of the base64url alphabet"),
            );
        }
        self.check_vapid(request, view, findings);

        let subscriptions = lock_state(&self.subscriptions);
        let Some(subscription) = subscriptions.get(id) else {
            findings.reject(
                404,
                format!("no subscription {id:?} exists on this push service"),
            );
            return false;
        };
        if request.body.len() > MAX_BODY {
            findings.reject(
                413,
                format!("the body is {} bytes, over {MAX_BODY}", request.body.len()),
            );
            return !subscription.active;
        }
        view.content_encoding = request.header("content-encoding").map(str::to_owned);
        if request.body.is_empty() && view.content_encoding.is_none() {
            // A push without payload is allowed (RFC 8030 §5).
            return !subscription.active;
        }
        if view.content_encoding.as_deref() != Some("aes128gcm") {
            findings.reject(
                400,
                format!(
                    "Content-Encoding is {:?}, not aes128gcm",
                    view.content_encoding
                ),
            );
        }
        match decrypt_aes128gcm(
            &request.body,
            &subscription.secret,
            &subscription.public,
            &subscription.auth,
        ) {
            Ok(plaintext) => view.plaintext = Some(plaintext),
            Err(problem) => findings.reject(400, format!("the body does not decrypt: {problem}")),
        }
        !subscription.active
    }

    fn check_vapid(
        &self,
        request: &IncomingRequest,
        view: &mut WebPushView,
        findings: &mut Findings,
    ) {
        let Some(authorization) = request.header("authorization") else {
            findings.reject(401, "no VAPID Authorization header (RFC 8292)".into());
            return;
        };
        let Some((scheme, params)) = authorization.split_once(' ') else {
            findings.reject(
                401,
                format!("the Authorization header {authorization:?} is not `vapid t=..., k=...`"),
            );
            return;
        };
        if !scheme.eq_ignore_ascii_case("vapid") {
            findings.reject(
                401,
                format!("the Authorization scheme is {scheme:?}, not vapid (RFC 8292 §3)"),
            );
            return;
        }
        for param in params.split(',') {
            if let Some((name, value)) = param.trim().split_once('=') {
                let value = value.trim().trim_matches('"').to_owned();
                match name.trim() {
                    "t" => view.vapid_jwt = Some(value),
                    "k" => view.vapid_key = Some(value),
                    _ => {}
                }
            }
        }
        let (Some(token), Some(k)) = (view.vapid_jwt.clone(), view.vapid_key.clone()) else {
            findings.reject(401, "the VAPID header needs both t and k parameters".into());
            return;
        };
        if let Some(expected) = self.config.expected_vapid_public_key.as_deref()
            && expected != k
        {
            findings.reject(
                403,
                format!("the VAPID key {k:?} is not the expected {expected:?}"),
            );
        }
        let point = match URL_SAFE_NO_PAD.decode(&k) {
            Ok(point) if point.len() == 65 && point[0] == 4 => point,
            _ => {
                findings.reject(
                    401,
                    format!("k {k:?} is not base64url of a 65-byte uncompressed P-256 point"),
                );
                return;
            }
        };
        let key = match DecodingKey::from_ec_components(
            &URL_SAFE_NO_PAD.encode(&point[1..33]),
            &URL_SAFE_NO_PAD.encode(&point[33..65]),
        ) {
            Ok(key) => key,
            Err(e) => {
                findings.reject(401, format!("k is not a usable P-256 key: {e}"));
                return;
            }
        };
        match jwt::header(&token) {
            Ok(header) if header.alg != Algorithm::ES256 => {
                findings.reject(
                    401,
                    format!("the VAPID JWT's alg is {:?}, not ES256", header.alg),
                );
            }
            Ok(_) => {}
            Err(problem) => {
                findings.reject(401, problem);
                return;
            }
        }
        let claims = match jwt::verify(&token, &key, Algorithm::ES256) {
            Ok(claims) => claims,
            Err(problem) => {
                findings.reject(401, problem);
                return;
            }
        };
        view.vapid_claims = Some(Value::Object(claims.clone()));
        let origin = self.origin.get().map(String::as_str).unwrap_or_default();
        if jwt::str_claim(&claims, "aud") != Some(origin) {
            findings.reject(
                401,
                format!(
                    "the VAPID aud is {:?}, not the push resource's origin {origin:?} (with its port)",
                    claims.get("aud")
                ),
            );
        }
        let now = jwt::now_unix();
        match jwt::int_claim(&claims, "exp") {
            None => findings.reject(401, "the VAPID JWT has no integer exp".into()),
            Some(exp) if exp <= now => {
                findings.reject(401, format!("the VAPID JWT expired at {exp} (now {now})"));
            }
            Some(exp) if exp > now + 24 * 3600 => findings.reject(
                401,
                format!("the VAPID exp is {} s ahead, over 24 hours", exp - now),
            ),
            Some(_) => {}
        }
        match jwt::str_claim(&claims, "sub") {
            Some(sub) if sub.starts_with("mailto:") || sub.starts_with("https:") => {}
            sub => findings.reject(
                401,
                format!("the VAPID sub {sub:?} is not a mailto: or https: URI"),
            ),
        }
    }
}

/// The RFC 8291 key derivation: the content-encryption key and nonce for one message.
fn derive_key_and_nonce(
    ecdh_secret: &[u8],
    auth: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8],
) -> Result<([u8; 16], [u8; 12]), String> {
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let mut ikm = [0_u8; 32];
    Hkdf::<Sha256>::new(Some(auth), ecdh_secret)
        .expand(&key_info, &mut ikm)
        .map_err(|e| format!("HKDF failed: {e}"))?;
    let hkdf = Hkdf::<Sha256>::new(Some(salt), &ikm);
    let mut cek = [0_u8; 16];
    let mut nonce = [0_u8; 12];
    hkdf.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|e| format!("HKDF failed: {e}"))?;
    hkdf.expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|e| format!("HKDF failed: {e}"))?;
    Ok((cek, nonce))
}

/// Decrypts an RFC 8291 `aes128gcm` body with the subscription's private key, public key and
/// authentication secret, returning the plaintext without padding.
///
/// # Errors
/// A sentence saying what is wrong with the body.
pub fn decrypt_aes128gcm(
    body: &[u8],
    ua_secret: &SecretKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Result<Vec<u8>, String> {
    if body.len() < 21 {
        return Err(format!(
            "the body is {} bytes, shorter than the RFC 8188 header",
            body.len()
        ));
    }
    let salt = &body[..16];
    let rs = u32::from_be_bytes([body[16], body[17], body[18], body[19]]);
    let idlen = usize::from(body[20]);
    if idlen != 65 {
        return Err(format!(
            "the keyid is {idlen} bytes; RFC 8291 requires the sender's 65-byte public key"
        ));
    }
    if body.len() < 21 + idlen {
        return Err("the body ends inside the keyid".into());
    }
    let as_public = &body[21..21 + idlen];
    let ciphertext = &body[21 + idlen..];
    if rs < 18 {
        return Err(format!("the record size {rs} is below 18"));
    }
    if ciphertext.len() > rs as usize {
        return Err(format!(
            "the ciphertext is {} bytes, more than one record of {rs} (RFC 8291 §4 allows one)",
            ciphertext.len()
        ));
    }
    let sender = PublicKey::from_sec1_bytes(as_public)
        .map_err(|_| "the keyid is not a valid P-256 point".to_owned())?;
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), sender.as_affine());
    let (cek, nonce) = derive_key_and_nonce(
        &shared.raw_secret_bytes()[..],
        auth,
        ua_public,
        as_public,
        salt,
    )?;
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|e| format!("bad key: {e}"))?;
    let mut plaintext = cipher
        .decrypt(&Nonce::from(nonce), ciphertext)
        .map_err(|_| {
            "AES-128-GCM authentication failed (wrong keys, salt or ciphertext)".to_owned()
        })?;
    let Some(delimiter) = plaintext.iter().rposition(|&b| b != 0) else {
        return Err("the record has no padding delimiter".into());
    };
    if plaintext[delimiter] != 2 {
        return Err(format!(
            "the padding delimiter is {:#04x}, not 0x02 (the last and only record)",
            plaintext[delimiter]
        ));
    }
    plaintext.truncate(delimiter);
    Ok(plaintext)
}

/// Encrypts `plaintext` as one RFC 8291 `aes128gcm` record from the application server key
/// `as_private` (32-byte scalar) to the subscription (`ua_public`, `auth`): what a sender does.
/// For tests that play the application server.
///
/// # Errors
/// When a key is invalid or the plaintext does not fit `record_size`.
pub fn encrypt_aes128gcm(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    as_private: &[u8],
    salt: [u8; 16],
    record_size: u32,
) -> anyhow::Result<Vec<u8>> {
    let secret = SecretKey::from_slice(as_private).context("invalid sender private key")?;
    let as_public = secret.public_key().to_encoded_point(false);
    let receiver = PublicKey::from_sec1_bytes(ua_public).context("invalid p256dh")?;
    let shared = p256::ecdh::diffie_hellman(secret.to_nonzero_scalar(), receiver.as_affine());
    let (cek, nonce) = derive_key_and_nonce(
        &shared.raw_secret_bytes()[..],
        auth,
        ua_public,
        as_public.as_bytes(),
        &salt,
    )
    .map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        plaintext.len() + 17 <= record_size as usize,
        "the plaintext does not fit one record"
    );
    let mut record = plaintext.to_vec();
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|e| anyhow::anyhow!("bad key: {e}"))?;
    let ciphertext = cipher
        .encrypt(&Nonce::from(nonce), record.as_slice())
        .map_err(|_| anyhow::anyhow!("AES-128-GCM encryption failed"))?;
    let mut body = salt.to_vec();
    body.extend_from_slice(&record_size.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&ciphertext);
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    // RFC 8291 §5 and Appendix A.
    const PLAINTEXT: &[u8] = b"When I grow up, I want to be a watermelon";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const BODY: &str = concat!(
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml",
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT",
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    );

    #[test]
    fn encrypting_the_rfc_8291_example_gives_the_rfc_ciphertext() {
        let salt: [u8; 16] = b64(SALT).try_into().unwrap();
        let body = encrypt_aes128gcm(
            PLAINTEXT,
            &b64(UA_PUBLIC),
            &b64(AUTH),
            &b64(AS_PRIVATE),
            salt,
            4096,
        )
        .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
    }

    #[test]
    fn the_rfc_8291_example_decrypts_to_its_plaintext() {
        let ua_secret = SecretKey::from_slice(&b64(UA_PRIVATE)).unwrap();
        let plaintext =
            decrypt_aes128gcm(&b64(BODY), &ua_secret, &b64(UA_PUBLIC), &b64(AUTH)).unwrap();
        assert_eq!(plaintext, PLAINTEXT);
    }

    #[test]
    fn a_wrong_auth_secret_does_not_decrypt() {
        let ua_secret = SecretKey::from_slice(&b64(UA_PRIVATE)).unwrap();
        let error =
            decrypt_aes128gcm(&b64(BODY), &ua_secret, &b64(UA_PUBLIC), &[0; 16]).unwrap_err();
        assert!(error.contains("authentication failed"), "{error}");
    }
}
