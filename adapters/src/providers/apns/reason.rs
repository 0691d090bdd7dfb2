//! What an APNs error response means for the delivery: every `reason` in Apple's "Handling
//! notification responses from APNs" mapped to a dead token, a permanent failure of this
//! message, a transient failure, or a configuration error an operator must fix.

use std::time::Duration;

use clarion_domain::message::SendOutcome;
use serde_json::{Value, json};

/// How long to wait after `TooManyProviderTokenUpdates`: Apple accepts a new provider token
/// at most once every 20 minutes.
const TOKEN_UPDATE_INTERVAL: Duration = Duration::from_secs(20 * 60);

/// What kind of failure a reason is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The device token is dead: deactivate the device.
    Dead,
    /// This notification can never be delivered as it is.
    Permanent,
    /// Try again later.
    Transient,
    /// The application's APNs settings are wrong.
    Misconfigured,
}

/// Apple's reasons, their kind and a sentence an operator can act on.
const REASONS: &[(&str, Kind, &str)] = &[
    // 400
    (
        "BadCollapseId",
        Kind::Permanent,
        "the collapse identifier is over 64 bytes",
    ),
    (
        "BadDeviceToken",
        Kind::Dead,
        "the device token is invalid, or is for the other APNs environment (check apns.environment)",
    ),
    (
        "BadExpirationDate",
        Kind::Permanent,
        "the apns-expiration value is invalid",
    ),
    (
        "BadMessageId",
        Kind::Permanent,
        "the apns-id value is invalid",
    ),
    (
        "BadPriority",
        Kind::Permanent,
        "the apns-priority value is invalid for this push type",
    ),
    (
        "BadTopic",
        Kind::Misconfigured,
        "the topic is invalid: set apns.topic to the app's bundle id",
    ),
    (
        "DeviceTokenNotForTopic",
        Kind::Dead,
        "the device token does not belong to the topic (apns.topic)",
    ),
    (
        "DuplicateHeaders",
        Kind::Permanent,
        "one or more headers were repeated",
    ),
    (
        "IdleTimeout",
        Kind::Transient,
        "APNs closed the idle connection",
    ),
    (
        "InvalidPushType",
        Kind::Permanent,
        "the apns-push-type value is invalid",
    ),
    (
        "MissingDeviceToken",
        Kind::Permanent,
        "the request has no device token",
    ),
    (
        "MissingTopic",
        Kind::Misconfigured,
        "APNs needs a topic: set apns.topic to the app's bundle id",
    ),
    ("PayloadEmpty", Kind::Permanent, "the payload is empty"),
    (
        "TopicDisallowed",
        Kind::Misconfigured,
        "APNs does not allow pushes to this topic (apns.topic)",
    ),
    // 403
    (
        "BadCertificate",
        Kind::Misconfigured,
        "APNs refused the client certificate (apns.certificate)",
    ),
    (
        "BadCertificateEnvironment",
        Kind::Misconfigured,
        "the client certificate is for the other APNs environment (check apns.environment)",
    ),
    (
        "ExpiredProviderToken",
        Kind::Misconfigured,
        "APNs says the provider token is over an hour old even after a renewal: check this host's clock",
    ),
    (
        "Forbidden",
        Kind::Misconfigured,
        "APNs refused the request: check the key or certificate and apns.topic",
    ),
    (
        "InvalidProviderToken",
        Kind::Misconfigured,
        "APNs refused the provider token: check apns.team_id, apns.key_id and apns.key (the key may be revoked)",
    ),
    (
        "MissingProviderToken",
        Kind::Misconfigured,
        "APNs wants a provider token or a client certificate: configure apns.key or apns.certificate",
    ),
    (
        "UnrelatedKeyIdInToken",
        Kind::Misconfigured,
        "the key (apns.key_id) does not belong to the team (apns.team_id)",
    ),
    (
        "BadEnvironmentKeyIdInToken",
        Kind::Misconfigured,
        "the key (apns.key_id) is not enabled for this APNs environment (check apns.environment)",
    ),
    // 404 and 405: the request did not reach APNs's device endpoint, which means a wrong
    // `apns.endpoint` (a proxy or another server) rather than a bad message.
    (
        "BadPath",
        Kind::Misconfigured,
        "the request path is wrong: check apns.endpoint",
    ),
    (
        "MethodNotAllowed",
        Kind::Misconfigured,
        "the server does not accept POST here: check apns.endpoint",
    ),
    // 410
    ("ExpiredToken", Kind::Dead, "the device token has expired"),
    (
        "Unregistered",
        Kind::Dead,
        "the device token is no longer active for the topic",
    ),
    // 413
    (
        "PayloadTooLarge",
        Kind::Permanent,
        "the payload is over the APNs limit",
    ),
    // 429: Apple limits provider token renewals to one every 20 minutes. Clarion renews after
    // 50 minutes, so this means another sender renews tokens of the same key too often; the
    // notification itself is fine, so it waits and is tried again.
    (
        "TooManyProviderTokenUpdates",
        Kind::Transient,
        "the provider token was renewed too often (another sender using the same key?)",
    ),
    (
        "TooManyRequests",
        Kind::Transient,
        "too many requests to the same device token",
    ),
    // 500 and 503
    (
        "InternalServerError",
        Kind::Transient,
        "APNs had an internal error",
    ),
    ("ServiceUnavailable", Kind::Transient, "APNs is unavailable"),
    (
        "Shutdown",
        Kind::Transient,
        "the APNs server is shutting down",
    ),
];

/// The outcome of a response that was not 200.
///
/// `reason` and `timestamp` come from the JSON body, `retry_after` from the `Retry-After`
/// header. A reason Apple does not list is judged by the status: 403 and 3xx are
/// configuration errors, 429 and 5xx transient, the rest permanent.
#[must_use]
pub fn outcome(
    status: u16,
    reason: Option<&str>,
    timestamp: Option<&Value>,
    retry_after: Option<Duration>,
) -> SendOutcome {
    let known = reason.and_then(|r| REASONS.iter().find(|(name, _, _)| *name == r));
    let (kind, explanation) = match known {
        Some((_, kind, explanation)) => (*kind, *explanation),
        None => by_status(status),
    };
    let code = reason.map_or_else(|| format!("http_{status}"), str::to_owned);
    let text = match reason {
        Some(reason) => format!("APNs {status} {reason}: {explanation}"),
        None => format!("APNs {status}: {explanation}"),
    };
    match kind {
        Kind::Dead => SendOutcome::DeadToken {
            code,
            reason: match timestamp {
                Some(at) => format!("{text} (invalid since {at} ms after the UNIX epoch)"),
                None => text,
            },
        },
        Kind::Permanent => {
            let mut details = json!({ "status": status });
            if let Some(reason) = reason {
                details["reason"] = json!(reason);
            }
            if let Some(at) = timestamp {
                details["timestamp"] = at.clone();
            }
            SendOutcome::Permanent {
                code,
                reason: text,
                details: Some(details),
            }
        }
        Kind::Transient => {
            let retry_after = if reason == Some("TooManyProviderTokenUpdates") {
                Some(retry_after.map_or(TOKEN_UPDATE_INTERVAL, |d| d.max(TOKEN_UPDATE_INTERVAL)))
            } else {
                retry_after
            };
            SendOutcome::Transient {
                code,
                reason: text,
                retry_after,
            }
        }
        Kind::Misconfigured => SendOutcome::Misconfigured { code, reason: text },
    }
}

fn by_status(status: u16) -> (Kind, &'static str) {
    match status {
        300..=399 => (
            Kind::Misconfigured,
            "the server answered with a redirect, which APNs never does: check apns.endpoint",
        ),
        403 => (Kind::Misconfigured, "APNs refused the credentials"),
        429 => (Kind::Transient, "too many requests"),
        500..=599 => (Kind::Transient, "APNs server error"),
        _ => (Kind::Permanent, "APNs refused the notification"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(outcome: &SendOutcome) -> &'static str {
        match outcome {
            SendOutcome::Accepted { .. } => "accepted",
            SendOutcome::Debug => "debug",
            SendOutcome::DeadToken { .. } => "dead",
            SendOutcome::Permanent { .. } => "permanent",
            SendOutcome::Misconfigured { .. } => "misconfigured",
            SendOutcome::Transient { .. } => "transient",
        }
    }

    #[test]
    fn every_reason_in_apples_table_maps_to_its_kind() {
        let cases = [
            (400, "BadCollapseId", "permanent"),
            (400, "BadDeviceToken", "dead"),
            (400, "BadExpirationDate", "permanent"),
            (400, "BadMessageId", "permanent"),
            (400, "BadPriority", "permanent"),
            (400, "BadTopic", "misconfigured"),
            (400, "DeviceTokenNotForTopic", "dead"),
            (400, "DuplicateHeaders", "permanent"),
            (400, "IdleTimeout", "transient"),
            (400, "InvalidPushType", "permanent"),
            (400, "MissingDeviceToken", "permanent"),
            (400, "MissingTopic", "misconfigured"),
            (400, "PayloadEmpty", "permanent"),
            (400, "TopicDisallowed", "misconfigured"),
            (403, "BadCertificate", "misconfigured"),
            (403, "BadCertificateEnvironment", "misconfigured"),
            (403, "ExpiredProviderToken", "misconfigured"),
            (403, "Forbidden", "misconfigured"),
            (403, "InvalidProviderToken", "misconfigured"),
            (403, "MissingProviderToken", "misconfigured"),
            (403, "UnrelatedKeyIdInToken", "misconfigured"),
            (403, "BadEnvironmentKeyIdInToken", "misconfigured"),
            (404, "BadPath", "misconfigured"),
            (405, "MethodNotAllowed", "misconfigured"),
            (410, "ExpiredToken", "dead"),
            (410, "Unregistered", "dead"),
            (413, "PayloadTooLarge", "permanent"),
            (429, "TooManyProviderTokenUpdates", "transient"),
            (429, "TooManyRequests", "transient"),
            (500, "InternalServerError", "transient"),
            (503, "ServiceUnavailable", "transient"),
            (503, "Shutdown", "transient"),
        ];
        for (status, reason, expected) in cases {
            let outcome = outcome(status, Some(reason), None, None);

            assert_eq!(kind_of(&outcome), expected, "{status} {reason}");
            let (SendOutcome::DeadToken { code, reason: text }
            | SendOutcome::Permanent {
                code, reason: text, ..
            }
            | SendOutcome::Misconfigured { code, reason: text }
            | SendOutcome::Transient {
                code, reason: text, ..
            }) = &outcome
            else {
                unreachable!()
            };
            assert_eq!(code, reason);
            assert!(text.contains(reason) && text.contains("APNs"), "{text}");
        }
        assert_eq!(cases.len(), REASONS.len(), "a reason is missing a case");
    }

    #[test]
    fn an_unknown_reason_is_judged_by_its_status() {
        let cases = [
            (400, "permanent"),
            (404, "permanent"),
            (403, "misconfigured"),
            (301, "misconfigured"),
            (429, "transient"),
            (500, "transient"),
            (502, "transient"),
        ];
        for (status, expected) in cases {
            assert_eq!(
                kind_of(&outcome(status, Some("SomethingNew"), None, None)),
                expected,
                "{status}"
            );
            assert_eq!(kind_of(&outcome(status, None, None, None)), expected);
        }
        let SendOutcome::Permanent { code, .. } = outcome(400, None, None, None) else {
            panic!("a 400 without a reason is permanent");
        };
        assert_eq!(code, "http_400");
    }

    #[test]
    fn transient_failures_keep_retry_after_and_token_updates_wait_twenty_minutes() {
        let wait = Duration::from_secs(1800);
        let SendOutcome::Transient { retry_after, .. } =
            outcome(503, Some("ServiceUnavailable"), None, Some(wait))
        else {
            panic!("503 is transient");
        };
        assert_eq!(retry_after, Some(wait));

        let SendOutcome::Transient { retry_after, .. } =
            outcome(429, Some("TooManyProviderTokenUpdates"), None, None)
        else {
            panic!("429 is transient");
        };
        assert_eq!(retry_after, Some(TOKEN_UPDATE_INTERVAL));
    }

    #[test]
    fn permanent_failures_carry_the_reason_and_timestamp_as_details() {
        let at = json!(1_700_000_000_000_u64);

        let SendOutcome::Permanent { details, .. } =
            outcome(413, Some("PayloadTooLarge"), Some(&at), None)
        else {
            panic!("413 is permanent");
        };

        assert_eq!(
            details,
            Some(json!({"status": 413, "reason": "PayloadTooLarge", "timestamp": at}))
        );
    }
}
