//! Parsers from command-line text into domain values. Each error names what is wrong, so that
//! clap can print it as a usage error.

use std::time::Duration;

use clarion_domain::auth::{KeyScope, ScopeError};
use clarion_domain::ids::{RelatedObject, Slug, Tag, UserId};
use clarion_domain::message::{MessageState, OptionError, Priority, UnknownState};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::CliError;

pub fn user_id(raw: &str) -> Result<UserId, String> {
    UserId::parse(raw).map_err(|e| e.to_string())
}

pub fn tag(raw: &str) -> Result<Tag, String> {
    Tag::parse(raw).map_err(|e| e.to_string())
}

pub fn slug(raw: &str) -> Result<Slug, String> {
    Slug::parse(raw).map_err(|e| e.to_string())
}

pub fn related(raw: &str) -> Result<RelatedObject, String> {
    RelatedObject::parse_pair(raw).map_err(|e| e.to_string())
}

pub fn scope(raw: &str) -> Result<KeyScope, String> {
    raw.parse().map_err(|e: ScopeError| e.to_string())
}

pub fn priority(raw: &str) -> Result<Priority, String> {
    raw.parse().map_err(|e: OptionError| e.to_string())
}

pub fn state(raw: &str) -> Result<MessageState, String> {
    raw.parse().map_err(|e: UnknownState| e.to_string())
}

pub fn timestamp(raw: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(raw, &Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
}

/// Seconds (`3600`) or a number with a unit: `30d`, `12h`, `15m`, `45s`.
pub fn duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (digits, unit) = match raw.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&raw[..at], c),
        _ => (raw, 's'),
    };
    let multiplier: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use seconds, or a number followed by d, h, m or s"
            ));
        }
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| format!("expected seconds or a form such as 30d, 12h or 15m; got {raw:?}"))?;
    count
        .checked_mul(multiplier)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{raw:?} is too long a duration"))
}

/// Parses the JSON object given to `option` (`--extra-data`, `--context`).
///
/// # Errors
/// [`CliError::Input`] naming the option when the text is not JSON or not an object.
pub fn json_object(option: &str, raw: &str) -> Result<Map<String, Value>, CliError> {
    let value: Value = serde_json::from_str(raw)
        .map_err(|e| CliError::Input(format!("invalid JSON for {option}: {e}")))?;
    let got = match value {
        Value::Object(map) => return Ok(map),
        Value::Array(_) => "an array",
        Value::String(_) => "a string",
        Value::Number(_) => "a number",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    };
    Err(CliError::Input(format!(
        "{option} must be a JSON object; got {got}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert!(duration("30w").is_err());
        assert!(duration("d").is_err());
        assert!(duration("-5").is_err());
    }

    #[test]
    fn a_json_option_must_hold_an_object_and_its_error_names_the_option() {
        assert!(json_object("--context", r#"{"a":1}"#).is_ok());
        let bad = json_object("--extra-data", "{nope").map_err(|e| e.to_string());
        assert!(matches!(bad, Err(m) if m.starts_with("invalid JSON for --extra-data: ")));
        let array = json_object("--extra-data", "[1]").map_err(|e| e.to_string());
        assert_eq!(
            array,
            Err("--extra-data must be a JSON object; got an array".to_owned())
        );
    }
}
