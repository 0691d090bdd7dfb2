//! JSON Web Token helpers shared by the mocks: split, verify and read claims, with errors as
//! sentences for the problem lists.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde_json::{Map, Value};

/// Seconds since the Unix epoch.
pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_unix_millis() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Reads a JWT's header without checking anything else.
pub(crate) fn header(token: &str) -> Result<Header, String> {
    jsonwebtoken::decode_header(token).map_err(|e| format!("the JWT header is malformed: {e}"))
}

/// Checks the signature with `key` and `algorithm` and returns the claims; no claim is checked
/// here, the callers check each one themselves to report precise problems.
pub(crate) fn verify(
    token: &str,
    key: &DecodingKey,
    algorithm: Algorithm,
) -> Result<Map<String, Value>, String> {
    let mut validation = Validation::new(algorithm);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation)
        .map(|data| data.claims)
        .map_err(|e| format!("the JWT signature does not verify: {e}"))
}

/// An integer claim such as `iat` or `exp`.
pub(crate) fn int_claim(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name).and_then(Value::as_i64)
}

/// A string claim such as `iss`.
pub(crate) fn str_claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name).and_then(Value::as_str)
}
