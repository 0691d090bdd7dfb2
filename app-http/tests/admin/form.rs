//! A browser in miniature for the handler tests: keeps the session cookie, reads each page's
//! CSRF token and posts forms with it, and never follows redirects, so that tests see them.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::helpers::{Reply, TestApp};

pub struct Browser<'a> {
    pub app: &'a TestApp,
    client: reqwest::Client,
    pub session: Option<String>,
    pub csrf: Option<String>,
}

/// The value of `<input ... name="csrf" value="...">` in a page.
pub fn csrf_in(page: &str) -> Option<String> {
    let start = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let end = page[start..].find('"')?;
    Some(page[start..start + end].to_owned())
}

/// The value of cookie `name` set by a reply, with its attributes.
pub fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap_or_default();
    pair.split_once('=')
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

pub fn location(reply: &Reply) -> Option<&str> {
    reply.headers.get(LOCATION).and_then(|v| v.to_str().ok())
}

pub fn encode(fields: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        out.append_pair(k, v);
    }
    out.finish()
}

impl<'a> Browser<'a> {
    pub fn new(app: &'a TestApp) -> Self {
        Self::from_address(app, std::net::Ipv4Addr::LOCALHOST.into())
    }

    /// A browser whose connections leave from `address` (any of 127.0.0.0/8 works on Linux),
    /// so that the server sees another client address.
    pub fn from_address(app: &'a TestApp, address: std::net::IpAddr) -> Self {
        Self {
            app,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(address)
                .build()
                .unwrap(),
            session: None,
            csrf: None,
        }
    }

    /// Signs in with `key` through the sign-in form and returns the reply to the form.
    pub async fn try_sign_in(&mut self, key: &str) -> Reply {
        let form = self.get("/admin/login").await;
        assert_eq!(form.status, 200, "{form:?}");
        let login = set_cookie(&form, "clarion_login").expect("the form sets its cookie");
        let token = csrf_in(&form.body).expect("the form holds its token");
        let reply = self
            .send_form(
                "/admin/login",
                &format!("clarion_login={}", cookie_value(&login)),
                &encode(&[("csrf", &token), ("key", key)]),
            )
            .await;
        if let Some(cookie) = set_cookie(&reply, "clarion_session") {
            self.session = Some(cookie_value(&cookie)).filter(|v| !v.is_empty());
        }
        reply
    }

    /// Signs in and reads the session's CSRF token from a page.
    pub async fn sign_in(app: &'a TestApp, key: &str) -> Browser<'a> {
        let mut browser = Browser::new(app);
        let reply = browser.try_sign_in(key).await;
        assert_eq!(reply.status, 303, "{reply:?}");
        assert_eq!(location(&reply), Some("/admin"));
        let page = browser.get("/admin/apps").await;
        browser.csrf = csrf_in(&page.body);
        assert!(browser.csrf.is_some(), "{page:?}");
        browser
    }

    fn cookie(&self) -> String {
        self.session
            .as_ref()
            .map(|s| format!("clarion_session={s}"))
            .unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> Reply {
        let response = self
            .client
            .get(self.app.url(path))
            .header(COOKIE, self.cookie())
            .send()
            .await
            .expect("the server answers");
        read(response).await
    }

    async fn send_form(&self, path: &str, cookie: &str, body: &str) -> Reply {
        let response = self
            .client
            .post(self.app.url(path))
            .header(COOKIE, cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .expect("the server answers");
        read(response).await
    }

    /// Posts a form with the session's CSRF token added.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let csrf = self.csrf.clone().unwrap_or_default();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &encode(&all)).await
    }

    /// Posts a body as it is (no token added).
    pub async fn post_raw(&self, path: &str, body: &str) -> Reply {
        self.send_form(path, &self.cookie(), body).await
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let body = response.text().await.expect("a body");
    Reply {
        status,
        content_type,
        www_authenticate,
        headers,
        body,
    }
}
