//! Client tokens: the HS256 JWTs that an application's apps in the field present to manage
//! their user's own devices. Each application signs them with its `client_token_secret`; the
//! token's `sub` is the user id and its `exp` is required. `nbf` and `iat` are honoured when
//! present, and a token may live at most the application's `client_token_max_lifetime_secs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::Context as _;
use clarion_domain::auth::AuthError;
use clarion_domain::ids::{AppId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::config::Config;

/// How far the clock of the backend that mints tokens may be ahead of Clarion's: an `iat` or
/// `nbf` up to this far in the future is accepted.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(60);

/// The verifiers of every application that has a `client_token_secret`.
#[derive(Clone, Default)]
pub struct ClientTokens {
    keys: BTreeMap<AppId, Verifier>,
}

/// One application's secret and the longest lifetime it allows a token.
#[derive(Clone)]
struct Verifier {
    key: DecodingKey,
    max_lifetime: Duration,
}

// The keys are secrets.
impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

/// The claims Clarion reads. The times are JWT NumericDates (seconds since the epoch, which
/// may carry a fraction).
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: f64,
    iat: Option<f64>,
    nbf: Option<f64>,
}

impl ClientTokens {
    /// Reads every application's `client_token_secret`.
    ///
    /// # Errors
    /// When a secret's file or environment variable cannot be read, or a secret is empty.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mut keys = BTreeMap::new();
        for (id, app) in &config.apps {
            let Some(secret) = &app.client_token_secret else {
                continue;
            };
            let Ok(app_id) = AppId::parse(id) else {
                continue;
            };
            let value = secret
                .expose()
                .with_context(|| format!("apps.{id}.client_token_secret"))?;
            anyhow::ensure!(
                !value.is_empty(),
                "apps.{id}.client_token_secret must not be empty"
            );
            keys.insert(
                app_id,
                Verifier {
                    key: DecodingKey::from_secret(value.as_bytes()),
                    max_lifetime: Duration::from_secs(app.client_token_max_lifetime_secs),
                },
            );
        }
        Ok(Self { keys })
    }

    /// Whether `app` accepts client tokens at all.
    #[must_use]
    pub fn accepts(&self, app: &AppId) -> bool {
        self.keys.contains_key(app)
    }

    /// The applications that accept client tokens.
    pub fn apps(&self) -> impl Iterator<Item = &AppId> {
        self.keys.keys()
    }

    /// The user a token of `app` acts for.
    ///
    /// # Errors
    /// [`AuthError::BadClientToken`] when the application takes no client tokens, or the
    /// token is malformed, not signed with the application's secret, has no `exp` or `sub`,
    /// has expired, is not valid yet (`nbf`), was issued in the future (`iat`), lives longer
    /// than the application allows, or its `sub` is not a valid user id. The text never holds
    /// the token.
    pub fn verify(&self, app: &AppId, token: &str) -> Result<UserId, AuthError> {
        self.verify_at(app, token, OffsetDateTime::now_utc())
    }

    /// [`ClientTokens::verify`] at the time `now`.
    ///
    /// # Errors
    /// As [`ClientTokens::verify`].
    pub fn verify_at(
        &self,
        app: &AppId,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<UserId, AuthError> {
        let Some(verifier) = self.keys.get(app) else {
            return Err(AuthError::BadClientToken(format!(
                "application {app} does not accept client tokens"
            )));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // The times are checked below, against `now`, with messages that name the claim.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &verifier.key, &validation)
            .map_err(|error| AuthError::BadClientToken(describe(error.kind())))?;
        check_times(&data.claims, now, verifier.max_lifetime).map_err(AuthError::BadClientToken)?;
        UserId::parse(&data.claims.sub)
            .map_err(|error| AuthError::BadClientToken(format!("sub: {error}")))
    }
}

/// Checks `exp`, `nbf`, `iat` and the lifetime against `now`; the error names the claim.
fn check_times(claims: &Claims, now: OffsetDateTime, max_lifetime: Duration) -> Result<(), String> {
    // Seconds as f64 are exact far beyond any real date, and a hostile huge or negative value
    // only fails a comparison.
    let now = now.unix_timestamp() as f64 + f64::from(now.millisecond()) / 1000.0;
    let leeway = CLOCK_LEEWAY.as_secs_f64();
    let max = max_lifetime.as_secs_f64();
    if claims.exp <= now {
        return Err("it has expired (exp)".to_owned());
    }
    if let Some(nbf) = claims.nbf
        && nbf > now + leeway
    {
        return Err("it is not valid yet (nbf is in the future)".to_owned());
    }
    match claims.iat {
        Some(iat) if iat > now + leeway => {
            Err("it was issued in the future (iat is after the current time)".to_owned())
        }
        Some(iat) if claims.exp - iat > max => Err(format!(
            "it lives longer than the {} s this application allows (exp - iat)",
            max_lifetime.as_secs()
        )),
        None if claims.exp - now > max => Err(format!(
            "it expires more than the {} s this application allows from now (exp)",
            max_lifetime.as_secs()
        )),
        _ => Ok(()),
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "it has expired (exp)".to_owned(),
        ErrorKind::InvalidSignature => "its signature does not match".to_owned(),
        ErrorKind::InvalidAlgorithm => "it must be signed with HS256".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf is in the future)".to_owned(),
        _ => "it is not a well-formed JWT".to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::config::{AppConfig, Secret};

    const SECRET: &str = "a-client-token-secret-for-tests";

    fn tokens() -> ClientTokens {
        let mut config = Config::default();
        config.apps.insert(
            "shop".to_owned(),
            AppConfig {
                client_token_secret: Some(Secret::Inline(SECRET.to_owned())),
                ..AppConfig::default()
            },
        );
        ClientTokens::from_config(&config).unwrap()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn mint(claims: &serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::default(),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn shop() -> AppId {
        AppId::parse("shop").unwrap()
    }

    #[test]
    fn a_valid_token_gives_its_subject() {
        let token = mint(&json!({"sub": "alice", "exp": now() + 60}), SECRET);

        assert_eq!(tokens().verify(&shop(), &token).unwrap().as_str(), "alice");
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = mint(&json!({"sub": "alice", "exp": now() - 60}), SECRET);

        let error = tokens().verify(&shop(), &token).unwrap_err();

        assert_eq!(
            error,
            AuthError::BadClientToken("it has expired (exp)".into())
        );
    }

    #[test]
    fn the_time_claims_decide_whether_a_token_is_valid_now() {
        const DAY: i64 = 24 * 3600;
        let t = now();
        let cases = [
            (json!({"exp": t + 60}), None),
            (json!({"exp": t + 60, "iat": t, "nbf": t}), None),
            (json!({"exp": t + 30 * DAY, "iat": t}), None),
            (json!({"exp": t + 60, "iat": t + 30, "nbf": t + 30}), None),
            (json!({"exp": t as f64 + 60.5, "iat": t as f64 - 0.5}), None),
            (json!({"exp": t + 29 * DAY}), None),
            (json!({"exp": t - 1}), Some("it has expired (exp)")),
            (json!({"exp": t + 3600, "nbf": t + 600}), Some("nbf")),
            (json!({"exp": t + 3600, "iat": t + 600}), Some("iat")),
            (
                json!({"exp": t + 30 * DAY + 1, "iat": t}),
                Some("exp - iat"),
            ),
            (
                json!({"exp": t + 100 * 365 * DAY, "iat": t}),
                Some("exp - iat"),
            ),
            (json!({"exp": t + 31 * DAY}), Some("from now (exp)")),
            (json!({"exp": 1e300, "iat": -1e300}), Some("exp")),
        ];
        for (times, refusal) in cases {
            let mut claims = times.clone();
            claims["sub"] = json!("alice");
            let token = mint(&claims, SECRET);

            let verdict = tokens().verify(&shop(), &token);

            match (refusal, verdict) {
                (None, Ok(user)) => assert_eq!(user.as_str(), "alice"),
                (Some(reason), Err(AuthError::BadClientToken(text))) => {
                    assert!(text.contains(reason), "{times}: {text}");
                }
                (expected, verdict) => panic!("{times}: expected {expected:?}, got {verdict:?}"),
            }
        }
    }

    #[test]
    fn the_maximum_lifetime_is_a_setting_of_each_application() {
        let mut config = Config::default();
        config.apps.insert(
            "shop".to_owned(),
            AppConfig {
                client_token_secret: Some(Secret::Inline(SECRET.to_owned())),
                client_token_max_lifetime_secs: 3600,
                ..AppConfig::default()
            },
        );
        let tokens = ClientTokens::from_config(&config).unwrap();
        let hour = mint(
            &json!({"sub": "alice", "iat": now(), "exp": now() + 3600}),
            SECRET,
        );
        let longer = mint(
            &json!({"sub": "alice", "iat": now(), "exp": now() + 3601}),
            SECRET,
        );

        assert!(tokens.verify(&shop(), &hour).is_ok());
        assert!(tokens.verify(&shop(), &longer).is_err());
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        let token = mint(&json!({"sub": "alice"}), SECRET);

        assert!(tokens().verify(&shop(), &token).is_err());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = mint(
            &json!({"sub": "alice", "exp": now() + 60}),
            "another-secret",
        );

        assert!(tokens().verify(&shop(), &token).is_err());
    }

    #[test]
    fn an_application_without_a_secret_takes_no_tokens() {
        let token = mint(&json!({"sub": "alice", "exp": now() + 60}), SECRET);

        assert!(
            tokens()
                .verify(&AppId::parse("default").unwrap(), &token)
                .is_err()
        );
    }
}
