//! Admin sessions, kept in this process's memory and keyed by a random id that travels in a
//! cookie. A session holds the principal a key signed in as and the key's hash (as the store
//! keeps it, never the key), and a CSRF token that every form of the session carries.
//! Sessions end at sign-out, after a fixed time (`admin.session_ttl_secs`) however busy, or
//! at the first request after their key is revoked (after at most `http.key_cache_ms` when
//! another process revoked it); a restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::http::HeaderMap;
use axum::http::header;
use clarion_domain::auth::{KeyHash, Principal};

/// The cookie that holds the session id.
pub(crate) const SESSION_COOKIE: &str = "clarion_session";
/// The cookie that holds the sign-in form's CSRF token, before there is a session.
pub(crate) const LOGIN_COOKIE: &str = "clarion_login";
/// How long a sign-in form stays usable.
const LOGIN_FORM_SECS: u64 = 60 * 60;
/// The most sessions kept at once; the oldest is dropped beyond it, so that sign-ins cannot
/// fill the memory.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub(crate) principal: Principal,
    /// The hash of the key that signed in, checked on every request so that a revoked key's
    /// sessions end.
    pub(crate) key: KeyHash,
    /// Carried by every form of the session and checked on every POST.
    pub(crate) csrf: String,
    expires: Instant,
    /// A one-time notice shown on the next page (the result of an action).
    flash: Option<String>,
}

/// How the cookies are set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionSettings {
    pub(crate) ttl: Duration,
    /// Adds `Secure` to the cookies (`admin.secure_cookies`).
    pub(crate) secure: bool,
}

/// The sessions of this process.
#[derive(Debug)]
pub(crate) struct Sessions {
    settings: SessionSettings,
    by_id: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes in hex.
pub(crate) fn random_token() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|error| anyhow::anyhow!("{error}"))
        .context("failed to draw random bytes for a session")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of the cookie `name` in the request's headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

impl Sessions {
    pub(crate) fn new(settings: SessionSettings) -> Self {
        Self {
            settings,
            by_id: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while the lock was held leaves the map usable: every update is one insert
        // or remove.
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `principal`, signed in with the key whose hash is `key`, and
    /// returns its id.
    pub(crate) fn create(&self, principal: Principal, key: KeyHash) -> anyhow::Result<String> {
        let id = random_token()?;
        let session = Session {
            principal,
            key,
            csrf: random_token()?,
            expires: Instant::now() + self.settings.ttl,
            flash: None,
        };
        let mut sessions = self.lock();
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(id.clone(), session);
        Ok(id)
    }

    /// The live session with this id; an expired one is removed.
    pub(crate) fn get(&self, id: &str) -> Option<Session> {
        let mut sessions = self.lock();
        match sessions.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                sessions.remove(id);
                None
            }
            None => None,
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Leaves a notice for the session's next page.
    pub(crate) fn flash(&self, id: &str, text: String) {
        if let Some(session) = self.lock().get_mut(id) {
            session.flash = Some(text);
        }
    }

    /// Takes the session's notice, if any.
    pub(crate) fn take_flash(&self, id: &str) -> Option<String> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    fn attributes(&self, path: &str, max_age: u64) -> String {
        let secure = if self.settings.secure { "; Secure" } else { "" };
        format!("Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
    }

    /// The `Set-Cookie` value that hands the session id to the browser.
    pub(crate) fn session_cookie(&self, id: &str) -> String {
        format!(
            "{SESSION_COOKIE}={id}; {}",
            self.attributes("/admin", self.settings.ttl.as_secs())
        )
    }

    /// The `Set-Cookie` value that removes the session cookie.
    pub(crate) fn clear_session_cookie(&self) -> String {
        format!("{SESSION_COOKIE}=; {}", self.attributes("/admin", 0))
    }

    /// The `Set-Cookie` value of the sign-in form's CSRF token.
    pub(crate) fn login_cookie(&self, token: &str) -> String {
        format!(
            "{LOGIN_COOKIE}={token}; {}",
            self.attributes("/admin/login", LOGIN_FORM_SECS)
        )
    }

    /// The `Set-Cookie` value that removes the sign-in form's token.
    pub(crate) fn clear_login_cookie(&self) -> String {
        format!("{LOGIN_COOKIE}=; {}", self.attributes("/admin/login", 0))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sessions(ttl: Duration) -> Sessions {
        Sessions::new(SessionSettings { ttl, secure: true })
    }

    #[test]
    fn a_session_holds_its_principal_until_it_expires() {
        let live = sessions(Duration::from_secs(60));
        let id = live.create(Principal::Admin, KeyHash::of("k")).unwrap();
        assert_eq!(live.get(&id).map(|s| s.principal), Some(Principal::Admin));

        let expired = sessions(Duration::ZERO);
        let id = expired.create(Principal::Admin, KeyHash::of("k")).unwrap();
        assert!(expired.get(&id).is_none());
    }

    #[test]
    fn ids_and_csrf_tokens_are_distinct_and_long() {
        let live = sessions(Duration::from_secs(60));
        let (a, b) = (
            live.create(Principal::Admin, KeyHash::of("k")).unwrap(),
            live.create(Principal::Admin, KeyHash::of("k")).unwrap(),
        );
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_ne!(live.get(&a).unwrap().csrf, a);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_when_asked() {
        let live = sessions(Duration::from_secs(60));
        let cookie = live.session_cookie("abc");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Strict"), "{cookie}");
        assert!(cookie.contains("Secure"), "{cookie}");
        assert!(cookie.contains("Max-Age=60"), "{cookie}");
    }

    #[test]
    fn a_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; clarion_session=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn secrets_compare_equal_only_when_equal() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
