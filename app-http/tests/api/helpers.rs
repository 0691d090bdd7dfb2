//! `spawn_app`: the server on a random port with a fresh database, and a minimal HTTP client.

use std::future::Future;
use std::time::{Duration, Instant};

use clarion_adapters::config::{Config, DatabaseConfig};
use clarion_adapters::wiring::{self, Runtime};
use clarion_domain::service::PushService;
use clarion_http::Application;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server. Dropping it stops the server task with the test's runtime.
pub struct TestApp {
    pub port: u16,
    pub service: PushService,
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
    customise(&mut config);
    let runtime = wiring::build(config, "test-worker")
        .await
        .expect("the runtime builds");
    (runtime, dir)
}

/// Starts the server built from `runtime`.
pub async fn spawn(runtime: Runtime, dir: TempDir) -> TestApp {
    let service = runtime.service.clone();
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

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

impl TestApp {
    /// Sends `GET path` over HTTP/1.1 and reads the whole response.
    pub async fn get(&self, path: &str) -> Response {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .await
            .expect("the server accepts connections");
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the request is sent");
        let mut raw = String::new();
        stream
            .read_to_string(&mut raw)
            .await
            .expect("the response is read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status line");
        Response {
            status,
            body: body.to_owned(),
        }
    }

    /// Stops the server as a signal would and waits until it has stopped.
    pub async fn shut_down(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server).await.expect("the server task ends")
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
