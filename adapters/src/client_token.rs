//! Client tokens: the HS256 JWTs that an application's apps in the field present to manage
//! their user's own devices. Each application signs them with its `client_token_secret`; the
//! token's `sub` is the user id and its `exp` is required.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::Context as _;
use clarion_domain::auth::AuthError;
use clarion_domain::ids::{AppId, UserId};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;

/// The verifiers of every application that has a `client_token_secret`.
#[derive(Clone, Default)]
pub struct ClientTokens {
    keys: BTreeMap<AppId, DecodingKey>,
}

// The keys are secrets.
impl fmt::Debug for ClientTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
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
            keys.insert(app_id, DecodingKey::from_secret(value.as_bytes()));
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
    /// has expired, or its `sub` is not a valid user id. The text never holds the token.
    pub fn verify(&self, app: &AppId, token: &str) -> Result<UserId, AuthError> {
        let Some(key) = self.keys.get(app) else {
            return Err(AuthError::BadClientToken(format!(
                "application {app} does not accept client tokens"
            )));
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|error| AuthError::BadClientToken(describe(error.kind())))?;
        UserId::parse(&data.claims.sub)
            .map_err(|error| AuthError::BadClientToken(format!("sub: {error}")))
    }
}

fn describe(kind: &jsonwebtoken::errors::ErrorKind) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "it has expired".to_owned(),
        ErrorKind::InvalidSignature => "its signature does not match".to_owned(),
        ErrorKind::InvalidAlgorithm => "it must be signed with HS256".to_owned(),
        ErrorKind::MissingRequiredClaim(claim) => format!("it has no {claim} claim"),
        ErrorKind::ImmatureSignature => "it is not valid yet".to_owned(),
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

        assert_eq!(error, AuthError::BadClientToken("it has expired".into()));
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
