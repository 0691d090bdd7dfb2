//! The APNs provider token: an ES256 JWT (`kid` = key id, `iss` = team id, `iat`), signed
//! once and reused until it is 50 minutes old. Apple refuses renewals more often than every
//! 20 minutes and tokens older than 60, so a token per request would be refused.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The age at which a token is replaced: past Apple's 20-minute minimum, well before its
/// 60-minute maximum.
pub const RENEW_AFTER: Duration = Duration::from_secs(50 * 60);

/// Signs and caches one application's provider tokens.
pub struct ProviderTokens {
    team_id: String,
    key_id: String,
    key: EncodingKey,
    current: Mutex<Option<Issued>>,
}

#[derive(Clone)]
struct Issued {
    jwt: Arc<str>,
    at: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

// The key and the tokens are secrets.
impl fmt::Debug for ProviderTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderTokens")
            .field("team_id", &self.team_id)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl ProviderTokens {
    #[must_use]
    pub fn new(team_id: String, key_id: String, key: EncodingKey) -> Self {
        Self {
            team_id,
            key_id,
            key,
            current: Mutex::new(None),
        }
    }

    /// The token to send now: the cached one, or a new one when there is none or it is
    /// [`RENEW_AFTER`] old.
    ///
    /// # Errors
    /// When signing fails (the key does not suit ES256).
    pub fn current(&self) -> Result<Arc<str>, jsonwebtoken::errors::Error> {
        self.current_at(Instant::now())
    }

    fn current_at(&self, now: Instant) -> Result<Arc<str>, jsonwebtoken::errors::Error> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(issued) = current.as_ref()
            && now.saturating_duration_since(issued.at) < RENEW_AFTER
        {
            return Ok(issued.jwt.clone());
        }
        let issued = self.sign(now)?;
        *current = Some(issued.clone());
        Ok(issued.jwt)
    }

    /// A new token after APNs answered `ExpiredProviderToken` to `rejected`. When several
    /// requests were rejected with the same token, only the first renews it; the others get
    /// that renewed token, so that APNs sees one renewal.
    ///
    /// # Errors
    /// When signing fails.
    pub fn renew_after_rejection(
        &self,
        rejected: &str,
    ) -> Result<Arc<str>, jsonwebtoken::errors::Error> {
        let now = Instant::now();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(issued) = current.as_ref()
            && &*issued.jwt != rejected
        {
            return Ok(issued.jwt.clone());
        }
        let issued = self.sign(now)?;
        *current = Some(issued.clone());
        Ok(issued.jwt)
    }

    fn sign(&self, now: Instant) -> Result<Issued, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        // Apple's example header is exactly `{"alg": "ES256", "kid": ...}`.
        header.typ = None;
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.team_id,
            iat,
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)?;
        tracing::debug!(key_id = %self.key_id, "signed a new APNs provider token");
        Ok(Issued {
            jwt: jwt.into(),
            at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A throwaway P-256 key in PKCS#8, as Apple's .p8 files hold it.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgdzc7YRhvN+kVa1ZG
r4DSJjoUBy6lCzJQl09PK1l1wMWhRANCAASPIlazjl4XpQPSrbQO/GenEOe4Jwig
Q5n4YyY4JX6xoEFt926/Q+WJbWM4WEs0ibLRAr7Pzd+eNnbp8b3WOMan
-----END PRIVATE KEY-----
";

    fn tokens() -> ProviderTokens {
        ProviderTokens::new(
            "TEAM123456".to_owned(),
            "KEY1234567".to_owned(),
            EncodingKey::from_ec_pem(TEST_KEY.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn a_token_is_reused_until_it_is_fifty_minutes_old() {
        let tokens = tokens();
        let start = Instant::now();

        let first = tokens.current_at(start).unwrap();
        let later = tokens
            .current_at(start + RENEW_AFTER - Duration::from_secs(1))
            .unwrap();
        let renewed = tokens.current_at(start + RENEW_AFTER).unwrap();

        assert_eq!(first, later);
        assert_ne!(first, renewed);
    }

    #[test]
    fn a_rejected_token_is_renewed_once_for_all_requests_that_used_it() {
        let tokens = tokens();
        let rejected = tokens.current().unwrap();

        let first = tokens.renew_after_rejection(&rejected).unwrap();
        let second = tokens.renew_after_rejection(&rejected).unwrap();

        assert_ne!(first, rejected);
        assert_eq!(first, second);
        assert_eq!(tokens.current().unwrap(), first);
    }

    #[test]
    fn the_token_header_names_the_key_and_the_claims_the_team() {
        let jwt = tokens().current().unwrap();

        let header = jsonwebtoken::decode_header(&*jwt).unwrap();

        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
        let claims = jwt.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["iss"], "TEAM123456");
        assert!(claims["iat"].as_u64().unwrap() > 1_700_000_000);
    }
}
