//! Extractors whose every rejection is an [`ApiError`] (problem+json, never plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body. A body that is not JSON (or not sent as `application/json`) is a 400; JSON of
/// the wrong shape is a 422 naming the field; a body over the limit is a 413.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = is_json(request.headers());
        let bytes = Bytes::from_request(request, state).await?;
        if !is_json {
            return Err(ApiError::BadRequest(
                "the request body must be JSON, sent with Content-Type: application/json".into(),
            ));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
}

/// Parses a JSON body: text that is not JSON is a 400, JSON of the wrong shape a 422 naming
/// the field's path.
///
/// A body that is a JSON object of the right shape, the usual case, is read once, straight
/// into `T`. Anything else is read again the careful way, first as JSON text and then for its
/// shape, so that bad text is told apart from a bad shape wherever each occurs in the body.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let is_object = bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_object && let Ok(parsed) = serde_json::from_slice(bytes) {
        return Ok(parsed);
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|error| {
        ApiError::BadRequest(format!("the request body is not valid JSON: {error}"))
    })?;
    if !value.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." { "body".to_owned() } else { path };
        ApiError::invalid(field, error.into_inner())
    })
}

/// Path parameters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// A query string.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        name: String,
        count: Option<u32>,
    }

    fn status(result: Result<Body, ApiError>) -> u16 {
        match result {
            Ok(body) => unreachable!("parsed {body:?}"),
            Err(error) => error.status().as_u16(),
        }
    }

    #[test]
    fn an_object_of_the_right_shape_is_parsed() {
        let body: Body = parse_json(br#" {"name": "a", "count": 2}"#).unwrap();
        assert_eq!(
            body,
            Body {
                name: "a".into(),
                count: Some(2)
            }
        );
    }

    #[test]
    fn a_repeated_field_keeps_its_last_value_as_before() {
        let body: Body = parse_json(br#"{"name": "a", "name": "b"}"#).unwrap();
        assert_eq!(body.name, "b");
    }

    #[test]
    fn an_array_is_not_an_object_even_when_it_would_fill_the_fields() {
        let result = parse_json::<Body>(br#"["a", 2]"#);
        let Err(ApiError::Validation { detail, .. }) = result else {
            unreachable!("{result:?}");
        };
        assert_eq!(detail, "body: must be a JSON object");
    }

    #[test]
    fn bad_text_is_a_400_even_after_a_bad_shape() {
        // The wrong type comes first, the broken text after it: the text decides.
        assert_eq!(status(parse_json(br#"{"name": 5, "count": }"#)), 400);
        assert_eq!(status(parse_json(br#"{"name": "a"} trailing"#)), 400);
    }

    #[test]
    fn a_bad_shape_is_a_422_naming_the_field() {
        let result = parse_json::<Body>(br#"{"name": "a", "count": "two"}"#);
        let Err(ApiError::Validation { errors, .. }) = result else {
            unreachable!("{result:?}");
        };
        assert_eq!(errors[0].field, "count");
        assert_eq!(status(parse_json(br#"{"name": "a", "other": 1}"#)), 422);
    }
}
