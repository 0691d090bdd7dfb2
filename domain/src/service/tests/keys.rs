//! Tests of API keys and authentication.

use std::sync::{Arc, Mutex};

use crate::app::SenderKind;
use crate::auth::{ApiKey, ApiKeyId, AuthError, KeyHash, KeyScope, NewApiKey, Principal};
use crate::ids::AppId;
use crate::service::KeyError;
use crate::service::tests::helpers::{Mocks, NOW};
fn stored_key(new: &NewApiKey, revoked: bool) -> ApiKey {
    ApiKey {
        id: ApiKeyId(1),
        name: new.name.clone(),
        scope: new.scope.clone(),
        prefix: new.prefix.clone(),
        created_at: NOW,
        revoked_at: revoked.then_some(NOW),
        hash: Some(new.hash.clone()),
    }
}

const SECRET: &str = "clk_0123456789abcdefghijklmnopqrstuvwxyz";

#[tokio::test]
async fn a_created_key_is_stored_as_a_hash_and_authenticates_to_its_scope() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    let stored: Arc<Mutex<Option<ApiKey>>> = Arc::default();
    let sink = stored.clone();
    mocks
        .keys
        .expect_insert_api_key()
        .withf(|new, _| new.hash == KeyHash::of(SECRET) && new.prefix == "clk_01234567")
        .returning(move |new, _| {
            let key = stored_key(new, false);
            *sink.lock().unwrap() = Some(key.clone());
            Ok(key)
        });
    let source = stored.clone();
    mocks.keys.expect_find_api_key().returning(move |hash| {
        Ok(source
            .lock()
            .unwrap()
            .clone()
            .filter(|k| k.hash.as_ref() == Some(hash)))
    });
    let service = mocks.service();

    let created = service
        .create_api_key(
            "ci",
            KeyScope::App(AppId::parse("shop").unwrap()),
            SECRET.into(),
        )
        .await
        .unwrap();
    let principal = service.authenticate_key(SECRET).await.unwrap();
    let wrong = service.authenticate_key("clk_not-the-key").await.unwrap();

    assert_eq!(created.secret, SECRET);
    assert_eq!(principal, Ok(Principal::App(AppId::parse("shop").unwrap())));
    assert_eq!(wrong, Err(AuthError::UnknownKey));
}

#[tokio::test]
async fn a_revoked_key_is_refused() {
    let mut mocks = Mocks::new(SenderKind::Debug);
    mocks.keys.expect_find_api_key().returning(|hash| {
        Ok(Some(stored_key(
            &NewApiKey {
                name: "old".into(),
                scope: KeyScope::Admin,
                prefix: "clk_".into(),
                hash: hash.clone(),
            },
            true,
        )))
    });
    let service = mocks.service();
    assert_eq!(
        service.authenticate_key(SECRET).await.unwrap(),
        Err(AuthError::Revoked)
    );
}

#[tokio::test]
async fn a_key_for_an_unknown_application_or_with_a_short_secret_is_refused() {
    let service = Mocks::new(SenderKind::Debug).service();
    let unknown = service
        .create_api_key(
            "x",
            KeyScope::App(AppId::parse("nope").unwrap()),
            SECRET.into(),
        )
        .await;
    let short = service
        .create_api_key("x", KeyScope::Admin, "short".into())
        .await;
    assert!(matches!(unknown, Err(KeyError::UnknownApplication(_))));
    assert!(matches!(short, Err(KeyError::WeakSecret)));
}
