//! FCM HTTP v1 answers turned into send outcomes.
//!
//! Errors come in Google's format, `{"error": {"code", "message", "status", "details": [...]}}`,
//! where a detail of type `google.firebase.fcm.v1.FcmError` carries FCM's own `errorCode`. The
//! `errorCode` decides when there is one, then the `status`, then the HTTP status:
//!
//! | FCM                                   | outcome                                     |
//! |---------------------------------------|---------------------------------------------|
//! | 200                                   | accepted, with the message `name`           |
//! | `UNREGISTERED` (404)                  | dead token: the device is deactivated       |
//! | `INVALID_ARGUMENT` (400)              | permanent failure, the device stays active  |
//! | `SENDER_ID_MISMATCH` (403)            | permanent failure, the device stays active  |
//! | `QUOTA_EXCEEDED` (429), `UNAVAILABLE` (503), `INTERNAL` (500), any 5xx | transient, honouring `Retry-After` |
//! | `THIRD_PARTY_AUTH_ERROR` (401)        | misconfigured (APNs or Web Push credentials in Firebase) |
//! | `PERMISSION_DENIED` (403), `UNAUTHENTICATED` (401), 404 without `UNREGISTERED` | misconfigured |
//! | any other 4xx                         | permanent failure                           |
//!
//! `INVALID_ARGUMENT` is also FCM's answer to a malformed registration token; it stays a
//! failure of the message, as the device registry validated the token's form already.
//!
//! `SENDER_ID_MISMATCH` means the token belongs to another Firebase project than the service
//! account's. Some servers prune such tokens; we do not, because the same answer comes back for
//! every device when an application is configured with the wrong project's service account, and
//! pruning then would deactivate every device of the application. Firebase's Admin SDK, too,
//! reports it as a credential mismatch (`messaging/mismatched-credential`).

use std::time::Duration;

use clarion_domain::message::SendOutcome;
use serde_json::{Value, json};

use crate::providers::fcm::auth::quote;

/// The type of the detail that carries FCM's `errorCode`.
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// What FCM said about one failed send.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FcmError {
    /// The HTTP status.
    pub http_status: u16,
    /// The Google status, such as `INVALID_ARGUMENT`.
    pub status: Option<String>,
    /// FCM's `errorCode`, such as `UNREGISTERED`.
    pub error_code: Option<String>,
    /// Google's message, or the start of a body that is not Google's JSON.
    pub message: String,
    /// The `error` object as received, when the body was Google's JSON.
    pub json: Option<Value>,
}

impl FcmError {
    /// Reads an error body. A body that is not Google's JSON (a proxy's error page) still
    /// yields the HTTP status and the start of the body.
    #[must_use]
    pub fn parse(http_status: u16, body: &[u8]) -> Self {
        let error = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").cloned())
            .filter(Value::is_object);
        let Some(error) = error else {
            return Self {
                http_status,
                message: quote(&String::from_utf8_lossy(body)),
                ..Self::default()
            };
        };
        let text = |name: &str| error.get(name).and_then(Value::as_str).map(str::to_owned);
        let error_code = error
            .get("details")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|d| d.get("@type").and_then(Value::as_str) == Some(FCM_ERROR_TYPE))
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            .filter(|code| *code != "UNSPECIFIED_ERROR")
            .map(str::to_owned);
        Self {
            http_status,
            status: text("status"),
            error_code,
            message: quote(&text("message").unwrap_or_default()),
            json: Some(error),
        }
    }

    /// Whether FCM refused the access token itself (and a fresh one may succeed), as opposed
    /// to a 401 about the credentials Firebase holds for APNs or Web Push.
    #[must_use]
    pub fn is_expired_access_token(&self) -> bool {
        self.http_status == 401 && self.error_code.as_deref() != Some("THIRD_PARTY_AUTH_ERROR")
    }

    /// The code recorded on the delivery: FCM's `errorCode`, else the Google status, else
    /// `http_<status>`.
    #[must_use]
    pub fn code(&self) -> String {
        self.error_code
            .clone()
            .or_else(|| self.status.clone())
            .unwrap_or_else(|| format!("http_{}", self.http_status))
    }

    fn describe(&self, what: &str) -> String {
        let mut label = self.http_status.to_string();
        for part in [&self.status, &self.error_code].into_iter().flatten() {
            if !label.contains(part.as_str()) {
                label.push(' ');
                label.push_str(part);
            }
        }
        if self.message.is_empty() {
            format!("FCM {what} ({label})")
        } else {
            format!("FCM {what} ({label}): {}", self.message)
        }
    }

    fn details(&self) -> Value {
        match &self.json {
            Some(error) => json!({ "error": error }),
            None => json!({ "http_status": self.http_status, "body": self.message }),
        }
    }

    /// The outcome of this error; `retry_after` is the response's `Retry-After`.
    #[must_use]
    pub fn outcome(&self, retry_after: Option<Duration>) -> SendOutcome {
        let code = self.code();
        let status = self.http_status;
        let transient = |what: &str| SendOutcome::Transient {
            code: code.clone(),
            reason: self.describe(what),
            retry_after,
        };
        let misconfigured = |hint: &str| SendOutcome::Misconfigured {
            code: code.clone(),
            reason: format!("{}; {hint}", self.describe("refused the request")),
        };
        let permanent = |what: &str| SendOutcome::Permanent {
            code: code.clone(),
            reason: self.describe(what),
            details: Some(self.details()),
        };
        match (self.error_code.as_deref(), self.status.as_deref()) {
            (Some("UNREGISTERED"), _) => SendOutcome::DeadToken {
                code: code.clone(),
                reason: self.describe("says the registration token is no longer valid"),
            },
            (Some("INVALID_ARGUMENT"), _) | (None, Some("INVALID_ARGUMENT")) => {
                permanent("rejected the message")
            }
            (Some("SENDER_ID_MISMATCH"), _) => permanent(
                "rejected the token: it belongs to another Firebase project than the service account's",
            ),
            (Some("QUOTA_EXCEEDED"), _) | (None, Some("RESOURCE_EXHAUSTED")) => {
                transient("is over its sending quota")
            }
            (Some("UNAVAILABLE" | "INTERNAL"), _) | (None, Some("UNAVAILABLE" | "INTERNAL")) => {
                transient("is unavailable")
            }
            (Some("THIRD_PARTY_AUTH_ERROR"), _) => misconfigured(
                "the APNs certificate or key, or the Web Push key, uploaded to the Firebase project is missing or invalid",
            ),
            (_, Some("PERMISSION_DENIED")) => misconfigured(
                "check that the service account may send with FCM (role Firebase Cloud Messaging API Admin) and that the project id is right",
            ),
            _ if status == 401 => misconfigured(
                "Google does not accept the service account's access token, even freshly issued",
            ),
            _ if status == 404 => misconfigured(
                "without UNREGISTERED this means the endpoint or the project id is wrong",
            ),
            _ if status == 429 || status == 408 || status >= 500 => transient("is unavailable"),
            _ => permanent("rejected the message"),
        }
    }
}

/// The message name of a successful answer, such as `projects/p/messages/0:123`.
#[must_use]
pub fn message_name(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn google(status: u16, google_status: &str, error_code: Option<&str>) -> Vec<u8> {
        let mut error =
            json!({ "code": status, "message": "said Google", "status": google_status });
        if let Some(code) = error_code {
            error["details"] = json!([
                { "@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [] },
                { "@type": FCM_ERROR_TYPE, "errorCode": code },
            ]);
        }
        json!({ "error": error }).to_string().into_bytes()
    }

    /// The outcome's kind and code.
    fn kind(outcome: &SendOutcome) -> (&'static str, String) {
        match outcome {
            SendOutcome::Accepted { .. } => ("accepted", String::new()),
            SendOutcome::Debug => ("debug", String::new()),
            SendOutcome::DeadToken { code, .. } => ("dead", code.clone()),
            SendOutcome::Permanent { code, .. } => ("permanent", code.clone()),
            SendOutcome::Misconfigured { code, .. } => ("misconfigured", code.clone()),
            SendOutcome::Transient { code, .. } => ("transient", code.clone()),
        }
    }

    #[test]
    fn each_fcm_error_maps_to_its_outcome() {
        let cases: [(u16, &[u8], &str, &str); 16] = [
            (
                404,
                &google(404, "NOT_FOUND", Some("UNREGISTERED")),
                "dead",
                "UNREGISTERED",
            ),
            (
                400,
                &google(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT")),
                "permanent",
                "INVALID_ARGUMENT",
            ),
            (
                400,
                &google(400, "INVALID_ARGUMENT", None),
                "permanent",
                "INVALID_ARGUMENT",
            ),
            (
                403,
                &google(403, "PERMISSION_DENIED", Some("SENDER_ID_MISMATCH")),
                "permanent",
                "SENDER_ID_MISMATCH",
            ),
            (
                429,
                &google(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
                "transient",
                "QUOTA_EXCEEDED",
            ),
            (
                503,
                &google(503, "UNAVAILABLE", Some("UNAVAILABLE")),
                "transient",
                "UNAVAILABLE",
            ),
            (
                500,
                &google(500, "INTERNAL", Some("INTERNAL")),
                "transient",
                "INTERNAL",
            ),
            (
                500,
                &google(500, "INTERNAL", Some("UNSPECIFIED_ERROR")),
                "transient",
                "INTERNAL",
            ),
            (502, b"<html>Bad Gateway</html>", "transient", "http_502"),
            (
                401,
                &google(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
                "misconfigured",
                "THIRD_PARTY_AUTH_ERROR",
            ),
            (
                401,
                &google(401, "UNAUTHENTICATED", None),
                "misconfigured",
                "UNAUTHENTICATED",
            ),
            (
                403,
                &google(403, "PERMISSION_DENIED", None),
                "misconfigured",
                "PERMISSION_DENIED",
            ),
            (
                404,
                &google(404, "NOT_FOUND", None),
                "misconfigured",
                "NOT_FOUND",
            ),
            (429, b"", "transient", "http_429"),
            (413, b"too big", "permanent", "http_413"),
            (
                400,
                &google(400, "FAILED_PRECONDITION", Some("SOMETHING_NEW")),
                "permanent",
                "SOMETHING_NEW",
            ),
        ];
        for (status, body, expected_kind, expected_code) in cases {
            let outcome = FcmError::parse(status, body).outcome(None);

            assert_eq!(
                kind(&outcome),
                (expected_kind, expected_code.to_owned()),
                "{status} {}: {outcome:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn transient_errors_carry_the_retry_after() {
        let wait = Some(Duration::from_secs(120));

        let outcome = FcmError::parse(
            429,
            &google(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
        )
        .outcome(wait);

        assert!(
            matches!(outcome, SendOutcome::Transient { retry_after, .. } if retry_after == wait),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_permanent_failure_records_googles_message_and_error() {
        let body = google(400, "INVALID_ARGUMENT", Some("INVALID_ARGUMENT"));

        let outcome = FcmError::parse(400, &body).outcome(None);

        let SendOutcome::Permanent {
            reason, details, ..
        } = outcome
        else {
            panic!("not permanent: {outcome:?}");
        };
        assert_eq!(
            reason,
            "FCM rejected the message (400 INVALID_ARGUMENT): said Google"
        );
        assert_eq!(
            details.and_then(|d| d.pointer("/error/status").cloned()),
            Some(json!("INVALID_ARGUMENT"))
        );
    }

    #[test]
    fn only_a_401_that_is_not_about_third_party_credentials_asks_for_a_new_token() {
        let expired = FcmError::parse(401, &google(401, "UNAUTHENTICATED", None));
        let third_party = FcmError::parse(
            401,
            &google(401, "UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR")),
        );
        let bad_request = FcmError::parse(400, &google(400, "INVALID_ARGUMENT", None));

        assert!(expired.is_expired_access_token());
        assert!(!third_party.is_expired_access_token());
        assert!(!bad_request.is_expired_access_token());
    }

    #[test]
    fn the_message_name_is_read_from_a_success() {
        assert_eq!(
            message_name(br#"{"name": "projects/p/messages/0:123"}"#),
            Some("projects/p/messages/0:123".to_owned())
        );
        assert_eq!(message_name(b"{}"), None);
    }
}
