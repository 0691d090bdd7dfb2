//! `spawn_app`: the server on a random port with a fresh database, an admin key, and typed
//! request helpers over reqwest.

use std::future::Future;
use std::time::{Duration, Instant};

use clarion_adapters::config::{AppConfig, Config, DatabaseConfig, Secret, TemplateIsolation};
use clarion_adapters::wiring::{self, Runtime};
use clarion_domain::app::SenderKind;
use clarion_domain::auth::KeyScope;
use clarion_domain::service::PushService;
use clarion_http::Application;
use reqwest::Method;
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SHOP_SECRET: &str = "shop-client-token-secret-for-tests";
pub const NEWS_SECRET: &str = "news-client-token-secret-for-tests";

/// A running server. Dropping it stops the server task with the test's runtime.
pub struct TestApp {
    pub port: u16,
    pub service: PushService,
    pub client: reqwest::Client,
    /// An admin key's secret.
    pub admin_key: String,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<anyhow::Result<()>>,
    // Kept so that the database outlives the server.
    _dir: TempDir,
}

/// The default configuration on port 0 and a fresh database, changed by `customise`.
pub async fn runtime_with(customise: impl FnOnce(&mut Config)) -> (Runtime, TempDir) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut config = Config {
        listen: "127.0.0.1:0".to_owned(),
        database: DatabaseConfig {
            url: format!("sqlite://{}", dir.path().join("clarion.db").display()),
            ..DatabaseConfig::default()
        },
        ..Config::default()
    };
    // Tests send bursts with one key; the rate limit's own tests turn it back on.
    config.http.rate_limit_per_second = 0;
    // A test harness cannot serve as a render worker process (only the real binaries do,
    // and the tests of those run them); in process, templates render on threads.
    config.templates.isolation = TemplateIsolation::Thread;
    customise(&mut config);
    let runtime = wiring::build(config, "test-worker")
        .await
        .expect("the runtime builds");
    (runtime, dir)
}

/// Two applications, `shop` and `news`, both with the debug sender and a client token
/// secret, and no worker (so that queued messages stay WAITING).
pub fn shop_and_news(config: &mut Config) {
    config.apps.clear();
    for (id, secret) in [("shop", SHOP_SECRET), ("news", NEWS_SECRET)] {
        config.apps.insert(
            id.to_owned(),
            AppConfig {
                sender: SenderKind::Debug,
                client_token_secret: Some(Secret::Inline(secret.to_owned())),
                ..AppConfig::default()
            },
        );
    }
    config.worker.enabled = false;
}

/// A key's secret, created through the service.
pub async fn create_key(service: &PushService, scope: KeyScope) -> String {
    let secret = clarion_adapters::keys::generate_secret().expect("a secret");
    service
        .create_api_key("test key", scope, secret)
        .await
        .expect("the key is created")
        .secret
}

/// A client token for `sub`, signed with `secret`, expiring `expires_in` seconds from now
/// (negative: already expired).
pub fn client_token(secret: &str, sub: &str, expires_in: i64) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + expires_in;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": sub, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("a token")
}

/// Starts the server built from `runtime`, with an admin key made beforehand.
pub async fn spawn(runtime: Runtime, dir: TempDir) -> TestApp {
    let service = runtime.service.clone();
    let admin_key = create_key(&service, KeyScope::Admin).await;
    let application = Application::build(runtime)
        .await
        .expect("the application binds");
    let port = application.port();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(application.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        port,
        service,
        client: reqwest::Client::new(),
        admin_key,
        stop: Some(stop),
        server,
        _dir: dir,
    }
}

/// The server with the default configuration and a fresh database.
pub async fn spawn_app() -> TestApp {
    let (runtime, dir) = runtime_with(|_| {}).await;
    spawn(runtime, dir).await
}

/// The server with `shop` and `news`.
pub async fn spawn_shop_and_news() -> TestApp {
    let (runtime, dir) = runtime_with(shop_and_news).await;
    spawn(runtime, dir).await
}

/// A response: status, the headers the tests look at, and the body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub www_authenticate: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("a JSON body ({e}): {}", self.body))
    }

    /// Asserts the status and, for errors, that the body is a problem document.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        if status >= 400 {
            assert_eq!(self.content_type, "application/problem+json", "{self:?}");
        }
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a request with an optional bearer credential and JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        credential: Option<&str>,
        body: Option<&Value>,
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(credential) = credential {
            request = request.bearer_auth(credential);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        read(request.send().await.expect("the server answers")).await
    }

    /// Sends raw bytes with a content type, as the admin.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_key)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the server answers");
        read(response).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call(Method::GET, path, None, None).await
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<&Value>) -> Reply {
        self.call(method, path, Some(&self.admin_key.clone()), body)
            .await
    }

    /// Stops the server as a signal would and waits until it has stopped.
    pub async fn shut_down(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.expect("the server task ends")
    }
}

async fn read(response: reqwest::Response) -> Reply {
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let headers = response.headers().clone();
    let body = response.text().await.expect("a body");
    Reply {
        status,
        content_type,
        www_authenticate,
        headers,
        body,
    }
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "the condition did not hold within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
