//! Fuzzes the parsers of what clients send to identify themselves and their devices: APNs and
//! FCM tokens, Web Push subscriptions, device tokens read through serde, the validated ids and
//! labels, key scopes and client tokens (HS256 JWTs).
//!
//! Besides "never panics", it asserts that every parser is idempotent (a parsed value parses
//! again to itself), that serde agrees with the parsers (what deserialises is what `parse`
//! accepts, and a value serialises and deserialises to itself) and that a client token is
//! accepted only with its subject and an expiry in the future.

#![no_main]

use std::sync::LazyLock;

use clarion_adapters::client_token::ClientTokens;
use clarion_adapters::config::{AppConfig, Config, Secret};
use clarion_domain::auth::KeyScope;
use clarion_domain::ids::{AppId, RelatedObject, Slug, Tag, UserId};
use clarion_domain::token::{
    ApnsToken, DeviceToken, EndpointPolicy, FcmToken, Platform, WebPushSubscription,
};
use jsonwebtoken::{EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use time::OffsetDateTime;

/// The client token secret of the application `shop`.
const SECRET: &str = "fuzzing-client-token-secret";

/// The input, one field a line (missing lines are absent fields), so that seeds and the
/// dictionary stay readable:
/// platform, token, p256dh, auth, `private` to allow private endpoints, a text for the id
/// parsers and serde, a client token's claims as JSON (`exp`, `nbf` and `iat` in seconds from
/// now), and an arbitrary text presented as a client token.
#[derive(Debug, Default)]
struct Input<'a> {
    platform: Option<&'a str>,
    token: &'a str,
    p256dh: Option<&'a str>,
    auth: Option<&'a str>,
    allow_private: bool,
    text: &'a str,
    claims: Option<&'a str>,
    raw_token: &'a str,
}

impl<'a> Input<'a> {
    fn read(text: &'a str) -> Self {
        let mut lines = text.split('\n');
        Input {
            platform: lines.next(),
            token: lines.next().unwrap_or_default(),
            p256dh: lines.next(),
            auth: lines.next(),
            allow_private: lines.next() == Some("private"),
            text: lines.next().unwrap_or_default(),
            claims: lines.next(),
            raw_token: lines.next().unwrap_or_default(),
        }
    }
}

static CLIENT_TOKENS: LazyLock<ClientTokens> = LazyLock::new(|| {
    let mut config = Config::default();
    config.apps.insert(
        "shop".to_owned(),
        AppConfig {
            client_token_secret: Some(Secret::Inline(SECRET.to_owned())),
            ..AppConfig::default()
        },
    );
    match ClientTokens::from_config(&config) {
        Ok(tokens) => tokens,
        Err(error) => panic!("the fuzz target's client token configuration is refused: {error:#}"),
    }
});

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let input = Input::read(text);
    let policy = if input.allow_private {
        EndpointPolicy::AllowPrivate
    } else {
        EndpointPolicy::PublicOnly
    };
    apns(input.token);
    fcm(input.token);
    webpush(input.token, input.p256dh, input.auth, policy);
    device_token(&input, policy);
    ids(input.text);
    device_token_from_json(input.text);
    client_token(input.claims, input.raw_token);
});

fn apns(raw: &str) {
    let Ok(token) = ApnsToken::parse(raw) else {
        return;
    };
    assert!(token.as_str().eq_ignore_ascii_case(raw));
    assert!(
        token
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    );
    assert_eq!(ApnsToken::parse(token.as_str()).as_ref(), Ok(&token));
    round_trip(&token);
}

fn fcm(raw: &str) {
    let Ok(token) = FcmToken::parse(raw) else {
        return;
    };
    assert_eq!(token.as_str(), raw);
    round_trip(&token);
}

fn webpush(endpoint: &str, p256dh: Option<&str>, auth: Option<&str>, policy: EndpointPolicy) {
    let (Some(p256dh), Some(auth)) = (p256dh, auth) else {
        return;
    };
    let Ok(subscription) = WebPushSubscription::parse(endpoint, p256dh, auth, policy) else {
        return;
    };
    // The stored form is canonical: parsing it again changes nothing, under the same policy.
    let again = WebPushSubscription::parse(
        subscription.endpoint(),
        subscription.p256dh(),
        subscription.auth(),
        policy,
    );
    assert_eq!(again.as_ref(), Ok(&subscription), "endpoint {endpoint:?}");
    // A private-address check only ever refuses more.
    if policy == EndpointPolicy::PublicOnly {
        let allowed =
            WebPushSubscription::parse(endpoint, p256dh, auth, EndpointPolicy::AllowPrivate);
        assert_eq!(allowed.as_ref(), Ok(&subscription));
    }
    round_trip(&subscription);
}

fn device_token(input: &Input<'_>, policy: EndpointPolicy) {
    let Some(Ok(platform)) = input.platform.map(str::parse::<Platform>) else {
        return;
    };
    let Ok(token) = DeviceToken::parse(platform, input.token, input.p256dh, input.auth, policy)
    else {
        return;
    };
    assert_eq!(token.platform(), platform);
    assert!(!token.key().is_empty());
    round_trip(&token);
}

/// Whatever serde accepts as a device token is a token the parsers accept: a stored or
/// received token cannot bypass their checks.
fn device_token_from_json(text: &str) {
    let Ok(token) = serde_json::from_str::<DeviceToken>(text) else {
        return;
    };
    let (p256dh, auth) = match &token {
        DeviceToken::Webpush { subscription } => {
            (Some(subscription.p256dh()), Some(subscription.auth()))
        }
        DeviceToken::Apns { .. } | DeviceToken::Fcm { .. } => (None, None),
    };
    let parsed = DeviceToken::parse(
        token.platform(),
        token.key(),
        p256dh,
        auth,
        EndpointPolicy::AllowPrivate,
    );
    assert_eq!(parsed.as_ref(), Ok(&token), "deserialised from {text:?}");
}

fn ids(text: &str) {
    if let Ok(id) = AppId::parse(text) {
        assert_eq!(id.as_str(), text);
        assert_eq!(id.to_string(), text);
        round_trip(&id);
        let scope = KeyScope::App(id);
        assert_eq!(scope.to_text().parse::<KeyScope>().as_ref(), Ok(&scope));
    }
    if let Ok(slug) = Slug::parse(text) {
        assert_eq!(slug.as_str(), text);
        round_trip(&slug);
    }
    if let Ok(user) = UserId::parse(text) {
        assert_eq!(user.as_str(), text);
        round_trip(&user);
    }
    if let Ok(tag) = Tag::parse(text) {
        assert_eq!(tag.as_str(), text);
        round_trip(&tag);
    }
    if let Ok(scope) = text.parse::<KeyScope>() {
        assert_eq!(scope.to_text(), text);
        round_trip(&scope);
    }
    if let Ok(related) = RelatedObject::parse_pair(text) {
        assert_eq!(
            RelatedObject::parse_pair(&related.to_string()).as_ref(),
            Ok(&related)
        );
        round_trip(&related);
    }
    if let Ok(platform) = text.parse::<Platform>() {
        assert_eq!(platform.as_str().parse::<Platform>(), Ok(platform));
    }
}

fn client_token(claims: Option<&str>, raw: &str) {
    let app = match AppId::parse("shop") {
        Ok(app) => app,
        Err(error) => panic!("{error}"),
    };
    // Arbitrary text is never a token signed with the secret.
    assert!(CLIENT_TOKENS.verify(&app, raw).is_err());

    let Some(Ok(Value::Object(mut claims))) = claims.map(serde_json::from_str::<Value>) else {
        return;
    };
    // Times are given in seconds from now, so that a seed stays meaningful.
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for name in ["exp", "nbf", "iat"] {
        if let Some(offset) = claims.get(name).and_then(Value::as_i64) {
            claims.insert(name.to_owned(), json!(now.saturating_add(offset)));
        }
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let Ok(token) = jsonwebtoken::encode(&Header::default(), &claims, &key) else {
        return;
    };
    let Ok(user) = CLIENT_TOKENS.verify(&app, &token) else {
        return;
    };
    assert_eq!(
        claims.get("sub"),
        Some(&json!(user.as_str())),
        "a client token acts for its subject"
    );
    // jsonwebtoken reads a numeric `exp` as seconds, also with a fraction.
    let expiry = claims.get("exp").and_then(Value::as_f64);
    assert!(
        expiry.is_some_and(|exp| exp >= now as f64),
        "an accepted client token has an expiry in the future; claims {claims:?}"
    );
}

/// A value serialises to JSON and deserialises to itself.
fn round_trip<T>(value: &T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = match serde_json::to_string(value) {
        Ok(text) => text,
        Err(error) => panic!("{value:?} does not serialise: {error}"),
    };
    match serde_json::from_str::<T>(&text) {
        Ok(back) => assert_eq!(&back, value, "through {text}"),
        Err(error) => panic!("{value:?} does not deserialise from its own {text}: {error}"),
    }
}
