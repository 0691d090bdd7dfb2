//! THE MATRIX: every route × every kind of credential, with the status each must get.

use std::fmt::Write as _;

use clarion_domain::auth::KeyScope;
use clarion_domain::ids::{AppId, Slug, UserId};
use clarion_domain::message::{Content, Priority, PushOptions, Target};
use clarion_domain::service::{Dispatch, PushService, RegisterDevice, SendRequest};
use clarion_domain::template::TemplateSpec;
use clarion_domain::token::Platform;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{
    NEWS_SECRET, SHOP_SECRET, TestApp, client_token, create_key, spawn_shop_and_news,
};

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// `/v1/keys`: admin keys only.
    Keys,
    /// An application's route that client tokens may not use.
    App,
    /// Device registration: a client token registers for its own user only.
    Register,
    /// The device list: a client token sees its own user's devices.
    List,
    /// One device: another user's device is not found for a client token.
    Owned,
}

/// One route of the API: its method, its path as the OpenAPI document writes it, who may use
/// it, and its status on success.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub area: Area,
    pub success: u16,
}

const fn route(method: &'static str, path: &'static str, area: Area, success: u16) -> Route {
    Route {
        method,
        path,
        area,
        success,
    }
}

/// Every `/v1` route.
pub const ROUTES: &[Route] = &[
    route("post", "/v1/apps/{app}/devices", Area::Register, 201),
    route("get", "/v1/apps/{app}/devices", Area::List, 200),
    route("post", "/v1/apps/{app}/devices/bulk", Area::App, 200),
    route("get", "/v1/apps/{app}/devices/{id}", Area::Owned, 200),
    route("patch", "/v1/apps/{app}/devices/{id}", Area::Owned, 200),
    route("delete", "/v1/apps/{app}/devices/{id}", Area::Owned, 204),
    route("post", "/v1/apps/{app}/messages", Area::App, 201),
    route("get", "/v1/apps/{app}/messages", Area::App, 200),
    route("get", "/v1/apps/{app}/messages/{id}", Area::App, 200),
    route("post", "/v1/apps/{app}/messages/{id}/retry", Area::App, 200),
    route(
        "post",
        "/v1/apps/{app}/messages/{id}/cancel",
        Area::App,
        200,
    ),
    route("post", "/v1/apps/{app}/messages/template", Area::App, 201),
    route("post", "/v1/apps/{app}/messages/bulk", Area::App, 200),
    route("get", "/v1/apps/{app}/templates", Area::App, 200),
    route("post", "/v1/apps/{app}/templates", Area::App, 201),
    route("get", "/v1/apps/{app}/templates/{slug}", Area::App, 200),
    route("put", "/v1/apps/{app}/templates/{slug}", Area::App, 200),
    route("delete", "/v1/apps/{app}/templates/{slug}", Area::App, 204),
    route(
        "post",
        "/v1/apps/{app}/templates/{slug}/preview",
        Area::App,
        200,
    ),
    route("get", "/v1/keys", Area::Keys, 200),
    route("post", "/v1/keys", Area::Keys, 201),
    route("delete", "/v1/keys/{id}", Area::Keys, 200),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    NoKey,
    MalformedKey,
    RevokedKey,
    OtherAppKey,
    AppKey,
    AdminKey,
    OwnerToken,
    OtherUserToken,
    ExpiredToken,
}

const CREDENTIALS: [Credential; 9] = [
    Credential::NoKey,
    Credential::MalformedKey,
    Credential::RevokedKey,
    Credential::OtherAppKey,
    Credential::AppKey,
    Credential::AdminKey,
    Credential::OwnerToken,
    Credential::OtherUserToken,
    Credential::ExpiredToken,
];

fn expected(route: &Route, credential: Credential) -> u16 {
    use Credential::*;
    match credential {
        NoKey | MalformedKey | RevokedKey | ExpiredToken => 401,
        AdminKey => route.success,
        AppKey if route.area == Area::Keys => 403,
        AppKey => route.success,
        OtherAppKey => 403,
        OwnerToken => match route.area {
            Area::Register | Area::List | Area::Owned => route.success,
            Area::App | Area::Keys => 403,
        },
        OtherUserToken => match route.area {
            Area::Register => 403,
            Area::List => 200,
            Area::Owned => 404,
            Area::App | Area::Keys => 403,
        },
    }
}

struct Secrets {
    revoked: String,
    news: String,
    shop: String,
    owner: String,
    other_user: String,
    expired: String,
}

impl Secrets {
    async fn new(service: &PushService) -> Self {
        let revoked = create_key(service, KeyScope::Admin).await;
        let id = service
            .list_api_keys()
            .await
            .unwrap()
            .into_iter()
            .find(|k| revoked.starts_with(&k.prefix))
            .unwrap()
            .id;
        service.revoke_api_key(id).await.unwrap();
        Self {
            revoked,
            news: create_key(service, KeyScope::App(AppId::parse("news").unwrap())).await,
            shop: create_key(service, KeyScope::App(AppId::parse("shop").unwrap())).await,
            owner: client_token(SHOP_SECRET, "alice", 600),
            other_user: client_token(SHOP_SECRET, "bob", 600),
            expired: client_token(SHOP_SECRET, "alice", -600),
        }
    }

    fn of(&self, app: &TestApp, credential: Credential) -> Option<String> {
        Some(match credential {
            Credential::NoKey => return None,
            Credential::MalformedKey => "not-a-key".to_owned(),
            Credential::RevokedKey => self.revoked.clone(),
            Credential::OtherAppKey => self.news.clone(),
            Credential::AppKey => self.shop.clone(),
            Credential::AdminKey => app.admin_key.clone(),
            Credential::OwnerToken => self.owner.clone(),
            Credential::OtherUserToken => self.other_user.clone(),
            Credential::ExpiredToken => self.expired.clone(),
        })
    }
}

/// Fresh things for one case to act on, so that one case's delete does not change another's.
struct Fixture {
    device: i64,
    error_message: i64,
    waiting_message: i64,
    template: String,
    key: i64,
    n: usize,
}

fn message_to(user: &str) -> SendRequest {
    SendRequest {
        target: Target::User {
            user_id: UserId::parse(user).unwrap(),
        },
        content: Content {
            body: "hello".to_owned(),
            ..Content::default()
        },
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

async fn fixture(service: &PushService, n: usize) -> Fixture {
    let (device, _) = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Fcm,
                token: format!("fcm-matrix-{n}"),
                p256dh: None,
                auth: None,
                name: None,
                user_id: Some(UserId::parse("alice").unwrap()),
                device_id: None,
            },
        )
        .await
        .unwrap();
    let error_message = service
        .send("shop", message_to("nobody"), Dispatch::Now)
        .await
        .unwrap();
    let waiting_message = service
        .send("shop", message_to("alice"), Dispatch::Queue)
        .await
        .unwrap();
    let template = format!("t{n}");
    service
        .put_template(TemplateSpec {
            app: AppId::parse("shop").unwrap(),
            slug: Slug::parse(&template).unwrap(),
            body: "Hi {{ name }}".to_owned(),
            heading: None,
            url: None,
            is_active: true,
            allow_duplicates: true,
        })
        .await
        .unwrap();
    let secret = create_key(service, KeyScope::Admin).await;
    let key = service
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| secret.starts_with(&k.prefix))
        .unwrap()
        .id
        .0;
    Fixture {
        device: device.id.0,
        error_message: error_message.id.0,
        waiting_message: waiting_message.id.0,
        template,
        key,
        n,
    }
}

fn concrete(route: &Route, f: &Fixture) -> (String, Option<Value>) {
    let id = if route.path.starts_with("/v1/keys") {
        f.key
    } else if route.path.contains("/devices") {
        f.device
    } else if route.path.ends_with("/cancel") {
        f.waiting_message
    } else {
        f.error_message
    };
    let path = route
        .path
        .replace("{app}", "shop")
        .replace("{id}", &id.to_string())
        .replace("{slug}", &f.template);
    let n = f.n;
    let body = match (route.method, route.path) {
        ("post", "/v1/apps/{app}/devices") => Some(json!({
            "platform": "apns", "token": format!("{:064x}", n + 1), "user_id": "alice"
        })),
        ("post", "/v1/apps/{app}/devices/bulk") => Some(json!({
            "devices": [{"platform": "apns", "token": format!("{:064x}", n + 1_000_000)}]
        })),
        ("patch", _) => Some(json!({"name": "renamed"})),
        ("post", "/v1/apps/{app}/messages") => {
            Some(json!({"target": {"user_id": "alice"}, "body": "hi"}))
        }
        ("post", "/v1/apps/{app}/messages/bulk") => Some(json!({
            "messages": [{"target": {"user_id": "alice"}, "body": "hi"}]
        })),
        ("post", "/v1/apps/{app}/messages/template") => Some(json!({
            "slug": f.template, "context": {"name": "Ann"}, "target": {"user_id": "alice"}
        })),
        ("post", "/v1/apps/{app}/templates") => {
            Some(json!({"slug": format!("new{n}"), "body": "x"}))
        }
        ("put", _) => Some(json!({"body": "Hello {{ name }}", "allow_duplicates": true})),
        ("post", "/v1/apps/{app}/templates/{slug}/preview") => {
            Some(json!({"context": {"name": "Ann"}}))
        }
        ("post", "/v1/keys") => Some(json!({"name": "made in the matrix", "scope": "app:shop"})),
        _ => None,
    };
    (path, body)
}

#[tokio::test]
async fn every_route_answers_every_kind_of_credential_with_the_right_status() {
    let app = spawn_shop_and_news().await;
    let secrets = Secrets::new(&app.service).await;
    let mut failures = String::new();
    let mut n = 0;

    for route in ROUTES {
        for credential in CREDENTIALS {
            n += 1;
            let fixture = fixture(&app.service, n).await;
            let (path, body) = concrete(route, &fixture);
            let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
            let reply = app
                .call(
                    method,
                    &path,
                    secrets.of(&app, credential).as_deref(),
                    body.as_ref(),
                )
                .await;
            let want = expected(route, credential);
            if reply.status != want {
                let _ = writeln!(
                    failures,
                    "{} {} with {credential:?}: got {}, want {want}: {}",
                    route.method, path, reply.status, reply.body
                );
            }
            if reply.status == 401 && reply.www_authenticate.as_deref() != Some("Bearer") {
                let _ = writeln!(
                    failures,
                    "{} {} with {credential:?}: 401 without WWW-Authenticate",
                    route.method, path
                );
            }
            if reply.status >= 400 && reply.content_type != "application/problem+json" {
                let _ = writeln!(
                    failures,
                    "{} {} with {credential:?}: {} is not problem+json",
                    route.method, path, reply.status
                );
            }
        }
    }

    assert!(failures.is_empty(), "mismatches:\n{failures}");
}

#[tokio::test]
async fn a_client_token_of_another_application_is_refused_on_this_one() {
    let app = spawn_shop_and_news().await;
    let news_token = client_token(NEWS_SECRET, "alice", 600);

    let reply = app
        .call(
            Method::GET,
            "/v1/apps/shop/devices",
            Some(&news_token),
            None,
        )
        .await;

    reply.expect(401);
}
