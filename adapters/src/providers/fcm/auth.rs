//! Google service-account credentials and the OAuth 2.0 access tokens they buy: the JWT bearer
//! grant of RFC 7523, as Google's token endpoint implements it.
//!
//! We sign the assertion ourselves rather than use `gcp_auth`, which cannot trust extra root
//! certificates and adds retries and sleeps of its own under our retry policy.

use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clarion_domain::message::SendOutcome;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::FcmConfig;
use crate::providers::http;

/// The token endpoint used when the service-account file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The OAuth scope that allows sending with FCM.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The RFC 7523 grant type.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long an assertion is valid; Google accepts at most one hour.
const ASSERTION_LIFETIME_SECS: u64 = 3600;
/// How long before its expiry a cached access token is replaced, so that a token never
/// expires between the check and its use at FCM.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// The lifetime assumed when the token response omits `expires_in`.
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// The most of an error response quoted in an outcome.
const QUOTE_LIMIT: usize = 300;

/// A parsed service account: what the token exchange and the send URL need. Its `Debug` never
/// shows the private key.
#[derive(Clone)]
pub struct ServiceAccount {
    project_id: String,
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    key: EncodingKey,
}

impl ServiceAccount {
    /// The Firebase project the messages are sent through.
    #[must_use]
    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// The account's e-mail, the assertion's issuer.
    #[must_use]
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id, sent as the assertion's `kid` when the file has one.
    #[must_use]
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// The OAuth token endpoint.
    #[must_use]
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// Signs the RS256 assertion exchanged for an access token.
    fn assertion(&self, now: SystemTime) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs());
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: FCM_SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + ASSERTION_LIFETIME_SECS,
        };
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.private_key_id);
        jsonwebtoken::encode(&header, &claims, &self.key)
    }
}

impl fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// Reads and checks the service account of application `app`: the JSON, its fields, and that
/// the private key is an RSA key that signs.
///
/// The file's `type`, when present, must be `service_account` (user credentials and workload
/// identity files do not work here). `token_uri` defaults to Google's.
///
/// # Errors
/// When the secret cannot be read, is not JSON, lacks a field or holds a key that does not
/// parse; the message names the application and the field and never holds key material.
pub fn load_credentials(app: &str, cfg: &FcmConfig) -> anyhow::Result<ServiceAccount> {
    let setting = format!("apps.{app}.fcm.service_account");
    let text = cfg
        .service_account
        .expose()
        .with_context(|| format!("{setting}: failed to read the service-account JSON"))?;
    parse_service_account(&setting, &text)
}

fn parse_service_account(setting: &str, text: &str) -> anyhow::Result<ServiceAccount> {
    // Parsed as a `Value` first: serde_json's syntax errors give a position, never the text,
    // whereas a typed parse could quote a value (the key) in a type error.
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        anyhow::bail!("{setting} is not valid JSON (expected a Google service-account key file)");
    };
    anyhow::ensure!(
        json.is_object(),
        "{setting} is not a JSON object (expected a Google service-account key file)"
    );
    let field = |name: &str| -> anyhow::Result<Option<String>> {
        match json.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) if text.trim().is_empty() => {
                anyhow::bail!("{setting}: field {name} is empty")
            }
            Some(Value::String(text)) => Ok(Some(text.trim().to_owned())),
            Some(_) => anyhow::bail!("{setting}: field {name} is not a string"),
        }
    };
    let required = |name: &str| -> anyhow::Result<String> {
        field(name)?.with_context(|| format!("{setting}: field {name} is missing"))
    };

    if let Some(kind) = field("type")?
        && kind != "service_account"
    {
        anyhow::bail!(
            "{setting}: field type is {kind:?}, but FCM needs a \"service_account\" key file"
        );
    }
    let project_id = required("project_id")?;
    anyhow::ensure!(
        project_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
        "{setting}: field project_id {project_id:?} is not a Google Cloud project id"
    );
    let client_email = required("client_email")?;
    let private_key_id = field("private_key_id")?;
    let token_uri = field("token_uri")?.unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned());
    match url::Url::parse(&token_uri) {
        Ok(url) if matches!(url.scheme(), "https" | "http") => {}
        _ => anyhow::bail!("{setting}: field token_uri {token_uri:?} is not an http(s) URL"),
    }
    let pem = required("private_key")?;
    let key = EncodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
        anyhow::anyhow!("{setting}: field private_key is not an RSA private key in PEM")
    })?;
    let account = ServiceAccount {
        project_id,
        client_email,
        private_key_id,
        token_uri,
        key,
    };
    // `from_rsa_pem` only unwraps the PEM; the key itself is parsed when it first signs.
    account.assertion(SystemTime::now()).map_err(|_| {
        anyhow::anyhow!("{setting}: field private_key does not hold a usable RSA private key")
    })?;
    Ok(account)
}

/// An OAuth access token. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// The value for `Authorization: Bearer ...`.
    #[must_use]
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken([redacted])")
    }
}

#[derive(Debug)]
struct Cached {
    token: AccessToken,
    refresh_at: Instant,
}

/// Access tokens for one service account: cached until shortly before they expire, with one
/// refresh at a time however many sends are waiting.
#[derive(Debug)]
pub struct TokenSource {
    account: ServiceAccount,
    client: reqwest::Client,
    cached: Mutex<Option<Cached>>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl TokenSource {
    #[must_use]
    pub fn new(account: ServiceAccount, client: reqwest::Client) -> Self {
        Self {
            account,
            client,
            cached: Mutex::new(None),
        }
    }

    #[must_use]
    pub fn account(&self) -> &ServiceAccount {
        &self.account
    }

    /// A valid access token: the cached one, or a new one from the token endpoint. Sends that
    /// arrive during a refresh wait for it and share its token.
    ///
    /// # Errors
    /// The outcome to report for the send when no token could be had: transient for network
    /// failures, 429 and 5xx; misconfigured when Google refuses the account.
    pub async fn token(&self) -> Result<AccessToken, SendOutcome> {
        let mut cached = self.cached.lock().await;
        if let Some(current) = cached.as_ref()
            && Instant::now() < current.refresh_at
        {
            return Ok(current.token.clone());
        }
        *cached = None;
        let (token, lifetime) = self.fetch().await?;
        let refresh_in = lifetime.saturating_sub(REFRESH_MARGIN);
        if !refresh_in.is_zero() {
            *cached = Some(Cached {
                token: token.clone(),
                refresh_at: Instant::now() + refresh_in,
            });
        }
        Ok(token)
    }

    /// Forgets `rejected` (FCM answered 401 to it), so that the next [`TokenSource::token`]
    /// fetches a new one. A token that another send has already replaced is left alone.
    pub async fn invalidate(&self, rejected: &AccessToken) {
        let mut cached = self.cached.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == rejected) {
            *cached = None;
        }
    }

    async fn fetch(&self) -> Result<(AccessToken, Duration), SendOutcome> {
        let assertion =
            self.account
                .assertion(SystemTime::now())
                .map_err(|_| SendOutcome::Misconfigured {
                    code: "oauth_assertion".to_owned(),
                    reason: "could not sign the FCM service-account assertion with its private key"
                        .to_owned(),
                })?;
        let response = self
            .client
            .post(&self.account.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|e| http::transport_failure("FCM OAuth token", &e))?;
        let status = response.status();
        let retry_after = http::retry_after(response.headers(), SystemTime::now());
        let body = http::read_body(response)
            .await
            .map_err(|e| http::transport_failure("FCM OAuth token", &e))?;
        if status.is_success() {
            let parsed: TokenResponse =
                serde_json::from_slice(&body).map_err(|_| SendOutcome::Misconfigured {
                    code: "oauth_response".to_owned(),
                    reason: format!(
                        "the FCM OAuth token endpoint {} answered {status} without an access_token; check the service account's token_uri",
                        self.account.token_uri
                    ),
                })?;
            tracing::debug!(
                project_id = %self.account.project_id,
                "fetched an FCM access token"
            );
            let lifetime = parsed
                .expires_in
                .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
            return Ok((AccessToken(parsed.access_token), lifetime));
        }
        Err(token_failure(
            status.as_u16(),
            &body,
            retry_after,
            &self.account.client_email,
        ))
    }
}

/// The outcome of a refused token request: Google answers RFC 6749 errors such as
/// `invalid_grant` (a deleted or disabled key, a wrong `client_email`, a clock far off).
fn token_failure(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    client_email: &str,
) -> SendOutcome {
    let error: Option<Value> = serde_json::from_slice(body).ok();
    let text = |name: &str| {
        error
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .map(quote)
    };
    let code = text("error");
    let description = text("error_description");
    let said = match (&code, &description) {
        (Some(code), Some(description)) => format!("{code}: {description}"),
        (Some(code), None) => code.clone(),
        (None, _) => quote(&String::from_utf8_lossy(body)),
    };
    if status == 429 || status >= 500 || status == 408 {
        return SendOutcome::Transient {
            code: "oauth_unavailable".to_owned(),
            reason: format!("the FCM OAuth token endpoint answered {status}: {said}"),
            retry_after,
        };
    }
    SendOutcome::Misconfigured {
        code: format!(
            "oauth_{}",
            code.as_deref()
                .filter(|c| c.len() <= 40 && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'))
                .unwrap_or("rejected")
        ),
        reason: format!(
            "Google refused the service account {client_email} an access token ({status} {said}); check that its key is current and enabled, and that the service account file is the one for this project"
        ),
    }
}

/// `text` cut to a length fit for an error message.
pub(crate) fn quote(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(QUOTE_LIMIT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTING: &str = "apps.shop.fcm.service_account";

    fn account_json(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> String {
        let account = clarion_testkit::fcm_test_service_account("http://127.0.0.1:9/token", "p");
        let mut json: Value = serde_json::from_str(&account.json).unwrap();
        if let Some(object) = json.as_object_mut() {
            edit(object);
        }
        json.to_string()
    }

    fn error_of(text: &str) -> String {
        clarion_testkit::install_default_crypto_provider();
        match parse_service_account(SETTING, text) {
            Ok(account) => format!("unexpectedly parsed {account:?}"),
            Err(error) => format!("{error:#}"),
        }
    }

    fn parse(text: &str) -> ServiceAccount {
        clarion_testkit::install_default_crypto_provider();
        parse_service_account(SETTING, text).unwrap()
    }

    #[test]
    fn a_test_service_account_parses_with_its_fields() {
        let account = parse(&account_json(|_| {}));

        assert_eq!(account.project_id(), "p");
        assert_eq!(account.token_uri(), "http://127.0.0.1:9/token");
        assert_eq!(
            account.client_email(),
            "clarion-test@p.iam.gserviceaccount.com"
        );
        assert!(account.private_key_id().is_some());
    }

    #[test]
    fn a_missing_token_uri_means_googles() {
        let account = parse(&account_json(|a| {
            a.remove("token_uri");
        }));

        assert_eq!(account.token_uri(), DEFAULT_TOKEN_URI);
    }

    #[test]
    fn errors_name_the_setting_and_field_and_never_the_key() {
        let cases: Vec<(String, &str)> = vec![
            ("not json".to_owned(), "is not valid JSON"),
            ("[1]".to_owned(), "is not a JSON object"),
            (
                account_json(|a| {
                    a.remove("project_id");
                }),
                "field project_id is missing",
            ),
            (
                account_json(|a| {
                    a.remove("client_email");
                }),
                "field client_email is missing",
            ),
            (
                account_json(|a| {
                    a.insert("type".into(), Value::from("authorized_user"));
                }),
                "field type is \"authorized_user\"",
            ),
            (
                account_json(|a| {
                    a.insert("private_key".into(), Value::from(7));
                }),
                "field private_key is not a string",
            ),
            (
                account_json(|a| {
                    a.insert(
                        "private_key".into(),
                        Value::from("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1ieXRlcw==\n-----END PRIVATE KEY-----\n"),
                    );
                }),
                "field private_key",
            ),
            (
                account_json(|a| {
                    a.insert("token_uri".into(), Value::from("ftp://x"));
                }),
                "field token_uri",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(&text);

            assert!(error.contains(SETTING), "{error}");
            assert!(error.contains(expected), "{expected}: {error}");
            assert!(!error.contains("PRIVATE KEY"), "{error}");
            assert!(!error.contains("c2VjcmV0"), "{error}");
        }
    }

    #[test]
    fn a_service_accounts_debug_hides_the_key() {
        let account = parse(&account_json(|_| {}));

        let shown = format!("{account:?}");

        assert!(shown.contains("[redacted]"), "{shown}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn token_endpoint_refusals_are_configuration_errors_and_outages_are_transient() {
        let refused = token_failure(
            400,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
            None,
            "a@p.iam.gserviceaccount.com",
        );
        let outage = token_failure(503, b"<html>down</html>", Some(Duration::from_secs(7)), "a");

        assert!(
            matches!(&refused, SendOutcome::Misconfigured { code, reason }
                if code == "oauth_invalid_grant" && reason.contains("Invalid JWT Signature")),
            "{refused:?}"
        );
        assert!(
            matches!(&outage, SendOutcome::Transient { code, retry_after, .. }
                if code == "oauth_unavailable" && *retry_after == Some(Duration::from_secs(7))),
            "{outage:?}"
        );
    }

    #[test]
    fn an_access_tokens_debug_hides_it() {
        assert_eq!(
            format!("{:?}", AccessToken("ya29.secret".to_owned())),
            "AccessToken([redacted])"
        );
    }
}
