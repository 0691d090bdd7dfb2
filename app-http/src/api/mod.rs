//! The `/v1` REST API: request and response bodies (with their OpenAPI schemas), their
//! conversion into domain values, and the handlers.

pub(crate) mod bulk;
pub(crate) mod devices;
pub(crate) mod keys;
pub(crate) mod messages;
pub(crate) mod templates;

use serde::{Deserialize, Deserializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;

/// The page size when a list request names none.
pub(crate) const DEFAULT_LIMIT: u32 = 50;
/// The largest page a list request may ask for.
pub(crate) const MAX_LIMIT: u32 = 500;

/// Reads `limit` from a query: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
pub(crate) fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(DEFAULT_LIMIT);
    };
    match raw.parse::<u32>() {
        Ok(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid(
            "limit",
            format!("must be a whole number from 1 to {MAX_LIMIT}; got {raw:?}"),
        )),
    }
}

/// Reads a positive id (a cursor) from a query.
pub(crate) fn parse_cursor(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| match raw.parse::<i64>() {
        Ok(id) if id >= 0 => Ok(id),
        _ => Err(ApiError::invalid(
            field,
            format!("must be an id returned as next_cursor; got {raw:?}"),
        )),
    })
    .transpose()
}

/// Reads an RFC 3339 time from a query.
pub(crate) fn parse_time(
    field: &str,
    raw: Option<&str>,
) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|raw| {
        OffsetDateTime::parse(raw, &Rfc3339).map_err(|error| {
            ApiError::invalid(
                field,
                format!("must be an RFC 3339 time such as 2026-01-31T12:00:00Z: {error}"),
            )
        })
    })
    .transpose()
}

/// Tells an absent field (`None`) from an explicit `null` (`Some(None)`), for updates.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// The next cursor of a page fetched with one extra item: the last id kept when there was
/// more.
pub(crate) fn paginate<T>(
    mut items: Vec<T>,
    limit: u32,
    id: impl Fn(&T) -> i64,
) -> (Vec<T>, Option<i64>) {
    let limit = limit as usize;
    if items.len() <= limit {
        return (items, None);
    }
    items.truncate(limit);
    let next = items.last().map(id);
    (items, next)
}
