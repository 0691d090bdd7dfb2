//! The admin UI under attack: a deep template in its preview and its save, a revoked key's
//! session, and a sign-in form guessed at. Runs last: the sign-in rate limit it trips holds
//! for the suite's whole client address.

use reqwest::Method;

use crate::server::{Auth, Call, Clarion, Reply};
use crate::suite::{Suite, describe};

/// The default `admin.sign_in_per_minute`.
const SIGN_IN_PER_MINUTE: usize = 10;

/// A browser in miniature: keeps the cookies it is given and the page's CSRF token.
struct Browser {
    session: Option<String>,
    csrf: Option<String>,
}

/// The value of `<input ... name="csrf" value="...">` in a page.
fn csrf_in(page: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// The value of the cookie `name` that `reply` sets.
fn cookie_set(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
        .find_map(|(_, v)| v.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in fields {
        out.append_pair(name, value);
    }
    out.finish().into_bytes()
}

impl Browser {
    /// Posts the sign-in form with `key` and keeps the session it opens, if any.
    async fn sign_in(server: &Clarion, key: &str) -> Result<(Browser, Reply), String> {
        let page = server
            .send(&Call::get("/admin/login").auth(Auth::None))
            .await?;
        let login = cookie_set(&page, "clarion_login")
            .ok_or_else(|| format!("the sign-in form set no cookie: {}", describe(&page)))?;
        let csrf = csrf_in(&page.body).ok_or("the sign-in form holds no CSRF token")?;
        let mut call = Call::new(Method::POST, "/admin/login")
            .auth(Auth::None)
            .body(
                "application/x-www-form-urlencoded",
                form(&[("csrf", &csrf), ("key", key)]),
            );
        call.headers
            .push(("cookie".to_owned(), format!("clarion_login={login}")));
        let reply = server.send(&call).await?;
        let browser = Browser {
            session: cookie_set(&reply, "clarion_session"),
            csrf: None,
        };
        Ok((browser, reply))
    }

    fn with_cookie(&self, mut call: Call) -> Call {
        if let Some(session) = &self.session {
            call.headers
                .push(("cookie".to_owned(), format!("clarion_session={session}")));
        }
        call.auth(Auth::None)
    }

    /// Gets a page, keeping its CSRF token.
    async fn get(&mut self, server: &Clarion, path: &str) -> Result<Reply, String> {
        let reply = server.send(&self.with_cookie(Call::get(path))).await?;
        if let Some(csrf) = csrf_in(&reply.body) {
            self.csrf = Some(csrf);
        }
        Ok(reply)
    }

    /// Posts a form with the session's CSRF token.
    async fn post(
        &self,
        server: &Clarion,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let call =
            Call::new(Method::POST, path).body("application/x-www-form-urlencoded", form(&all));
        server.send(&self.with_cookie(call)).await
    }
}

pub async fn run(suite: &mut Suite) {
    suite.area("admin UI");
    let deep = format!("{{{{ {}1 }}}}", "not ".repeat(10_000));
    for action in ["preview", "save"] {
        let result = deep_template(&suite.server, &deep, action).await;
        suite
            .record(&format!("{action} of a `not` nested 10,000 deep"), result)
            .await;
    }
    let result = revoked_session(&suite.server).await;
    suite
        .record("a revoked key's session is refused, GET and POST", result)
        .await;
    let result = sign_in_limit(&suite.server).await;
    suite
        .record(
            "the 11th failed sign-in within a minute is answered 429",
            result,
        )
        .await;
}

/// Signs in with the admin key and sends `body` through the template form's `action`: the
/// answer must be the form again with an error (422, or 413 for the size), not a crash.
async fn deep_template(server: &Clarion, body: &str, action: &str) -> Result<String, String> {
    let (mut browser, reply) = Browser::sign_in(server, &server.admin_key).await?;
    if browser.session.is_none() {
        return Err(format!(
            "the admin key could not sign in: {}",
            describe(&reply)
        ));
    }
    browser
        .get(server, "/admin/apps/shop/templates/new")
        .await?;
    let reply = browser
        .post(
            server,
            "/admin/apps/shop/templates",
            &[
                ("slug", &format!("admin-deep-{action}")),
                ("body", body),
                ("context", "{}"),
                ("action", action),
            ],
        )
        .await?;
    let page = reply.body.to_lowercase();
    let explained = ["nest", "depth", "deep", "recursion", "limit", "size"]
        .iter()
        .any(|word| page.contains(word));
    match reply.status {
        413 | 422 if explained => Ok(format!("{} with the reason in the form", reply.status)),
        status => Err(format!(
            "expected the form again with the reason (422 or 413), got {status}"
        )),
    }
}

/// Signs in with an application key, revokes the key through the API, and tries a page and a
/// form with the session.
async fn revoked_session(server: &Clarion) -> Result<String, String> {
    let (id, secret) = server.create_key("revoked in session", "app:shop").await?;
    let (mut browser, reply) = Browser::sign_in(server, &secret).await?;
    if browser.session.is_none() {
        return Err(format!("the key could not sign in: {}", describe(&reply)));
    }
    let before = browser
        .get(server, "/admin/apps/shop/templates/new")
        .await?;
    if before.status != 200 || browser.csrf.is_none() {
        return Err(format!(
            "the fresh session saw no form: {}",
            describe(&before)
        ));
    }
    let revoked = server
        .send(&Call::new(Method::DELETE, &format!("/v1/keys/{id}")).auth(Auth::Admin))
        .await?;
    if !(200..300).contains(&revoked.status) {
        return Err(format!("the key was not revoked: {}", describe(&revoked)));
    }
    let page = browser.get(server, "/admin/apps/shop").await?;
    let posted = browser
        .post(
            server,
            "/admin/apps/shop/templates",
            &[
                ("slug", "revoked-session-post"),
                ("body", "x"),
                ("context", "{}"),
                ("action", "save"),
            ],
        )
        .await?;
    let stored = server
        .send(&Call::get("/v1/apps/shop/templates/revoked-session-post").auth(Auth::Admin))
        .await?;
    let refused = |reply: &Reply| {
        let to_sign_in = reply
            .header("location")
            .is_some_and(|l| l.starts_with("/admin/login"));
        matches!(reply.status, 401 | 403) || (reply.status == 303 && to_sign_in)
    };
    let seen = format!(
        "GET {}, POST {} (to {:?}), template stored: {}",
        page.status,
        posted.status,
        posted.header("location").unwrap_or_default(),
        stored.status == 200
    );
    if refused(&page) && refused(&posted) && stored.status == 404 {
        Ok(seen)
    } else {
        Err(format!("the revoked key's session still works: {seen}"))
    }
}

/// Fails to sign in until refused: the attempt after `SIGN_IN_PER_MINUTE` failures must be
/// answered 429, and the first not.
async fn sign_in_limit(server: &Clarion) -> Result<String, String> {
    let mut statuses = Vec::new();
    for attempt in 0..=SIGN_IN_PER_MINUTE {
        let wrong = format!("clk_WrongWrongWrongWrongWrongWrongWrongWrong{attempt:03}");
        let (_, reply) = Browser::sign_in(server, &wrong).await?;
        statuses.push(reply.status);
    }
    let seen = format!("attempts answered {statuses:?}");
    match (statuses.first(), statuses.last()) {
        (Some(first), Some(429)) if *first != 429 => Ok(seen),
        _ => Err(seen),
    }
}
