//! Finds the secrets a database URL may carry (the userinfo password and secret-looking query
//! parameters such as `?password=` or `?sslpassword=`) so that the URL and the driver errors
//! that quote it can be shown without them.

use std::ops::Range;

/// What a redacted value prints as.
pub(crate) const REDACTED: &str = "[redacted]";

/// Replaces every secret of a URL (the userinfo password and the values of secret query
/// parameters, see [`is_secret_key`]) with `[redacted]`.
#[must_use]
pub fn redact_url(raw: &str) -> String {
    let mut shown = raw.to_owned();
    // From the end, so that the earlier ranges stay valid.
    for span in secret_spans(raw).into_iter().rev() {
        shown.replace_range(span, REDACTED);
    }
    shown
}

/// `text` with every secret of `url` replaced by `[redacted]`, as written in the URL and
/// percent-decoded, for driver errors that might quote either.
#[must_use]
pub fn without_password(text: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    for span in secret_spans(url) {
        let written = &url[span];
        secrets.push(written.to_owned());
        secrets.push(percent_decoded(written));
    }
    // The longest first, so that a secret holding a shorter one is replaced whole.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    secrets.dedup();
    let mut shown = text.to_owned();
    for secret in secrets.iter().filter(|secret| !secret.is_empty()) {
        shown = shown.replace(secret.as_str(), REDACTED);
    }
    shown
}

/// The byte ranges of `raw` that hold secrets, in order and without overlap.
fn secret_spans(raw: &str) -> Vec<Range<usize>> {
    let Some(start) = raw.find("://").map(|i| i + 3) else {
        return Vec::new();
    };
    let rest = &raw[start..];
    let mut spans = Vec::new();
    let userinfo_end = userinfo_end(rest);
    let mut query_from = 0;
    if let Some(at) = userinfo_end {
        if let Some(colon) = rest[..at].find(':') {
            spans.push(start + colon + 1..start + at);
        }
        query_from = at + 1;
    }
    if let Some(question) = rest[query_from..].find('?') {
        let query_start = start + query_from + question + 1;
        let query_end = raw[query_start..]
            .find('#')
            .map_or(raw.len(), |hash| query_start + hash);
        let mut offset = query_start;
        for pair in raw[query_start..query_end].split('&') {
            if let Some((key, _value)) = pair.split_once('=')
                && is_secret_key(&percent_decoded(key))
            {
                spans.push(offset + key.len() + 1..offset + pair.len());
            }
            offset += pair.len() + 1;
        }
    }
    spans.retain(|span| !span.is_empty());
    spans
}

/// Where the user information of `rest` (a URL after its `scheme://`) ends: at its `@`, if it
/// has one. A password that was not percent-encoded may itself hold `@`, `/` or `?`, so this
/// errs on the side of taking more: the last `@` before the query, or, when there is none,
/// an `@` inside what looks like the query's first key (a password holding `?`).
fn userinfo_end(rest: &str) -> Option<usize> {
    let question = rest.find('?').unwrap_or(rest.len());
    if let Some(at) = rest[..question].rfind('@') {
        return Some(at);
    }
    let query = rest.get(question + 1..)?;
    let first_key_end = query.find(['=', '&', '#']).unwrap_or(query.len());
    query[..first_key_end]
        .rfind('@')
        .map(|at| question + 1 + at)
}

/// Whether a query parameter named `key` (percent-decoded) holds a secret: a password
/// (`password`, `sslpassword`, `passwd`, `pwd`), a token, a secret or a key (`api_key`,
/// `apikey`). `passfile` and `sslkey` name files and are shown, but redacting them would be
/// harmless too.
fn is_secret_key(key: &str) -> bool {
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if key == "passfile" || key == "sslkey" {
        return false;
    }
    ["password", "passwd", "pwd", "token", "secret", "credential"]
        .iter()
        .any(|word| key.contains(word))
        || key.ends_with("key")
}

/// `text` with its `%XX` escapes decoded (and `+` left alone, as in a URL's userinfo); an
/// invalid escape or a non-UTF-8 result is kept as written.
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_password_and_token_in_a_database_url_is_redacted() {
        let cases = [
            (
                "postgres://clarion:p@ss/word@db:5432/clarion",
                "postgres://clarion:[redacted]@db:5432/clarion",
            ),
            ("sqlite://clarion.db", "sqlite://clarion.db"),
            ("postgres://clarion@db/x", "postgres://clarion@db/x"),
            (
                "postgres://u@h/db?password=secret",
                "postgres://u@h/db?password=[redacted]",
            ),
            (
                "postgres://u@h/db?sslmode=require&PASSWORD=secret&application_name=a@b",
                "postgres://u@h/db?sslmode=require&PASSWORD=[redacted]&application_name=a@b",
            ),
            (
                "postgres://u:pw@h/db?sslpassword=s3&passfile=/etc/pgpass",
                "postgres://u:[redacted]@h/db?sslpassword=[redacted]&passfile=/etc/pgpass",
            ),
            (
                "postgresql://h/db?pass%77ord=secret",
                "postgresql://h/db?pass%77ord=[redacted]",
            ),
            (
                "postgres://h/db?auth_token=t&api_key=k&client-secret=c#frag",
                "postgres://h/db?auth_token=[redacted]&api_key=[redacted]&client-secret=[redacted]#frag",
            ),
            (
                "postgres://u:pa%40ss%3Fword@h/db",
                "postgres://u:[redacted]@h/db",
            ),
            // A password holding an unencoded `?` is still taken whole.
            ("postgres://u:pa?ss@h/db", "postgres://u:[redacted]@h/db"),
            (
                "postgres://u:pw@h/db?options=-c%20x@y&password=z",
                "postgres://u:[redacted]@h/db?options=-c%20x@y&password=[redacted]",
            ),
        ];
        for (raw, shown) in cases {
            assert_eq!(redact_url(raw), shown, "{raw}");
        }
    }

    #[test]
    fn driver_errors_lose_every_secret_of_the_url_written_or_decoded() {
        let url = "postgres://u:pa%40ss@h/db?password=qu%20ery&sslpassword=ssl";
        let text = "failed: pa@ss pa%40ss qu ery qu%20ery ssl, user u at h";

        let shown = without_password(text, url);

        assert_eq!(
            shown,
            "failed: [redacted] [redacted] [redacted] [redacted] [redacted], user u at h"
        );
    }

    #[test]
    fn query_keys_that_name_files_or_options_are_not_secrets() {
        for key in [
            "sslmode",
            "passfile",
            "sslkey",
            "application_name",
            "options",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
        for key in [
            "password",
            "sslpassword",
            "Token",
            "api-key",
            "apikey",
            "secret",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
    }
}
