//! API key secrets, drawn from the operating system's random source.

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What every key secret starts with, so that a leaked one is easy to recognise.
pub const KEY_PREFIX: &str = "clk_";

/// A new secret: `clk_` and 32 random bytes in base64url (43 characters).
///
/// # Errors
/// When the operating system's random source fails.
pub fn generate_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("failed to draw random bytes for an API key")?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// Whether `raw` has the shape of a key secret (it may still be unknown).
#[must_use]
pub fn looks_like_secret(raw: &str) -> bool {
    raw.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_documented_shape_and_differ() {
        let (a, b) = (generate_secret().unwrap(), generate_secret().unwrap());

        assert!(looks_like_secret(&a), "{a}");
        assert_eq!(a.len(), 47);
        assert_ne!(a, b);
    }

    #[test]
    fn other_text_does_not_look_like_a_secret() {
        assert!(!looks_like_secret("clk_short"));
        assert!(!looks_like_secret("Bearer something"));
        assert!(!looks_like_secret(&format!("clk_{}", "!".repeat(43))));
    }
}
