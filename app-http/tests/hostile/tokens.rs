//! Client tokens at their edges (`nbf` and `iat` in the future, a lifetime over the
//! application's maximum) and Web Push endpoints that hide a private address behind upper
//! case or a trailing dot.

use reqwest::Method;
use serde_json::{Value, json};

use crate::server::{Auth, Call, SHOP_SECRET};
use crate::suite::{Suite, expect};

/// The default `apps.<id>.client_token_max_lifetime_secs`: 30 days.
const MAX_LIFETIME_SECS: i64 = 30 * 24 * 60 * 60;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A client token of `shop` with `claims`, and an `exp` `expires_in` seconds from now unless
/// the claims have one.
pub fn client_token(claims: &Value, expires_in: i64) -> String {
    let mut claims = claims.clone();
    if claims.get("exp").is_none() {
        claims["exp"] = json!(now() + expires_in);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SHOP_SECRET.as_bytes()),
    )
    .expect("a token")
}

pub async fn run(suite: &mut Suite) {
    suite.area("client tokens");
    let devices = "/v1/apps/shop/devices";
    let hour = 3600;
    let rows: Vec<(&str, Value, Vec<u16>)> = vec![
        (
            "a valid token",
            json!({ "sub": "alice", "iat": now(), "exp": now() + hour }),
            vec![200],
        ),
        (
            "nbf an hour in the future",
            json!({ "sub": "alice", "nbf": now() + hour, "exp": now() + 2 * hour }),
            vec![401],
        ),
        (
            "iat an hour in the future",
            json!({ "sub": "alice", "iat": now() + hour, "exp": now() + 2 * hour }),
            vec![401],
        ),
        (
            "exp - iat of 31 days",
            json!({ "sub": "alice", "iat": now(), "exp": now() + MAX_LIFETIME_SECS + 86_400 }),
            vec![401],
        ),
        (
            "exp a hundred years away without iat",
            json!({ "sub": "alice", "exp": now() + 100 * 365 * 86_400 }),
            vec![401],
        ),
        ("no exp", json!({ "sub": "alice", "exp": null }), vec![401]),
    ];
    for (name, claims, statuses) in rows {
        let token = client_token(&claims, 0);
        let call = Call::get(devices).auth(Auth::Bearer(token));
        suite.row(name, call, &expect(&statuses, &[])).await;
    }

    suite.area("Web Push endpoints");
    // The keys of RFC 8291's example.
    let p256dh =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    let auth = "BTBZMqHH6r4Tts7J_aSIgg";
    for endpoint in [
        "https://LOCALHOST.:443/x",
        "https://Localhost/x",
        "https://127.0.0.1./x",
        "https://localhost./x",
        "https://push.LOCALHOST./x",
        "https://[::1]/x",
    ] {
        let body = json!({ "platform": "webpush", "token": endpoint, "p256dh": p256dh,
                           "auth": auth });
        suite
            .row(
                &format!("endpoint {endpoint}"),
                Call::json(Method::POST, devices, &body),
                &expect(&[422], &["endpoint", "private", "public"]),
            )
            .await;
    }
}
