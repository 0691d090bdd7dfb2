//! The admin pages and actions, a module per page or resource, and what they share: the
//! list size, dates as the pages show them, filters as query strings and the redirect that
//! ends every action. Each handler parses its input, calls the domain services and renders a
//! template; actions end with a 303 to the page that shows their result.
//!
//! The frame around them (routes, errors, the signed-in extractors, the chrome and the
//! template environment) is the parent module, `admin`.

pub(crate) mod devices;
pub(crate) mod login;
pub(crate) mod messages;
pub(crate) mod overview;
pub(crate) mod prune;
pub(crate) mod templates;

use std::fmt::Display;

use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::format_description;

use crate::admin::{AdminError, Signed};
use crate::routes::AppState;

/// Rows per page of the device and message lists.
const PAGE: u32 = 50;

type Page = Result<Html<String>, AdminError>;

fn when(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| at.to_string())
}

/// At most `max` characters of `text`, with an ellipsis when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max).collect();
    cut.push('…');
    cut
}

fn opt_when(at: Option<OffsetDateTime>) -> Option<String> {
    at.map(when)
}

/// A 303 to `to` after leaving `notice` for the next page.
fn done(state: &AppState, signed: &Signed, to: &str, notice: String) -> Response {
    state.sessions.flash(&signed.id, notice);
    Redirect::to(to).into_response()
}

/// An empty or blank query field is no filter.
fn blank(raw: Option<&String>) -> Option<&str> {
    raw.map(|s| s.trim()).filter(|s| !s.is_empty())
}

/// A query field that does not parse: 400 naming the field.
fn bad(field: &str, error: &dyn Display) -> AdminError {
    AdminError::BadRequest(format!("{field}: {error}"))
}

/// Keeps the first [`PAGE`] rows of a list read with `limit: PAGE + 1`, and says whether
/// there were more.
fn one_page<T>(found: &mut Vec<T>) -> bool {
    let more = found.len() > PAGE as usize;
    found.truncate(PAGE as usize);
    more
}

/// The non-empty filters as a query string, plus `extra`.
fn query_string(filters: &Value, extra: Option<(&str, String)>) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    if let Some(map) = filters.as_object() {
        for (key, value) in map {
            if let Some(text) = value.as_str() {
                out.append_pair(key, text);
            }
        }
    }
    if let Some((key, value)) = extra {
        out.append_pair(key, &value);
    }
    out.finish()
}
