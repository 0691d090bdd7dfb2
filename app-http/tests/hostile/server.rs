//! The real `clarion-server` binary the suite attacks: started on 127.0.0.1 port 0 with a
//! fresh SQLite database and two debug applications, its admin key read from stdout and its
//! port from the JSON log on stderr, and requests to it as table rows (`Call`).

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use clarion_testkit::probe::{self, RawResponse};
use clarion_testkit::{Spawned, Stream};
use reqwest::Method;
use serde_json::{Value, json};
use tempfile::TempDir;

/// The client token secret of `shop`, the application the hostile tenant owns.
pub const SHOP_SECRET: &str = "shop-client-token-secret-of-the-hostile-suite";

/// The address space the server may map, in KiB. A safety net for the test machine: a
/// regression that lets a template grow without bound ends in a failed allocation (and a
/// failed case) instead of taking the machine's memory. Far above the bounds the suite
/// asserts, so that it never decides a case.
const ADDRESS_SPACE_KIB: u64 = 4 * 1024 * 1024;

/// How long one request may take before the suite gives up on it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// `shop` (with client tokens) and `news`, both on the debug sender, which sends nothing.
fn config() -> String {
    format!(
        "[apps.shop]\nsender = \"debug\"\nclient_token_secret = \"{SHOP_SECRET}\"\n\n\
         [apps.news]\nsender = \"debug\"\n"
    )
}

/// A fresh temporary folder with the suite's `clarion.toml`.
pub fn config_dir() -> Result<TempDir, String> {
    let dir = tempfile::tempdir().map_err(|e| format!("no temporary folder: {e}"))?;
    std::fs::write(dir.path().join("clarion.toml"), config())
        .map_err(|e| format!("cannot write the configuration: {e}"))?;
    Ok(dir)
}

/// A running server and the credentials the suite uses on it.
pub struct Clarion {
    pub process: Spawned,
    pub port: u16,
    /// The first admin key, printed once on stdout.
    pub admin_key: String,
    /// An application key of `shop`: the hostile tenant's own.
    pub app_key: String,
    env: Vec<(String, String)>,
    dir: TempDir,
    pub client: reqwest::Client,
}

impl Clarion {
    /// Starts the server with the suite's configuration plus `env` (`CLARION_*` settings),
    /// and makes an application key for `shop`.
    pub async fn start(env: &[(&str, &str)]) -> Result<Clarion, String> {
        let dir = config_dir()?;
        let mut settings: Vec<(String, String)> = [
            ("CLARION_LISTEN", "127.0.0.1:0".to_owned()),
            (
                "CLARION_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("clarion.db").display()),
            ),
            ("CLARION_WORKER__ENABLED", "false".to_owned()),
            // One tenant key sends every request of the suite.
            ("CLARION_HTTP__RATE_LIMIT_PER_SECOND", "0".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v))
        .to_vec();
        // The caller's settings come last, so that they win.
        settings.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let env = settings;
        let (mut process, port) = launch(&dir, &env)?;
        let admin_key = process.wait_for(Stream::Stdout, Duration::from_secs(30), |line| {
            line.split_once("(shown once): ")
                .map(|(_, key)| key.trim().to_owned())
        })?;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| format!("no HTTP client: {e}"))?;
        let mut server = Clarion {
            process,
            port,
            admin_key,
            app_key: String::new(),
            env,
            dir,
            client,
        };
        let (_, secret) = server.create_key("hostile tenant", "app:shop").await?;
        server.app_key = secret;
        Ok(server)
    }

    /// Starts the server again on the same database (after it died); the keys stay valid.
    pub fn restart(&mut self) -> Result<(), String> {
        self.process.kill();
        let (process, port) = launch(&self.dir, &self.env)?;
        self.process = process;
        self.port = port;
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Creates an API key through the API and returns its id and secret.
    pub async fn create_key(&self, name: &str, scope: &str) -> Result<(i64, String), String> {
        let body = json!({ "name": name, "scope": scope });
        let reply = self
            .send(&Call::json(Method::POST, "/v1/keys", &body).auth(Auth::Admin))
            .await?;
        let created: Value = serde_json::from_str(&reply.body)
            .map_err(|e| format!("the key was not created ({e}): {reply:?}"))?;
        match (created["id"].as_i64(), created["secret"].as_str()) {
            (Some(id), Some(secret)) => Ok((id, secret.to_owned())),
            _ => Err(format!("the key was not created: {reply:?}")),
        }
    }

    /// Sends one request.
    pub async fn send(&self, call: &Call) -> Result<Reply, String> {
        let mut request = self
            .client
            .request(call.method.clone(), self.url(&call.path));
        match &call.auth {
            Auth::None => {}
            Auth::Admin => request = request.bearer_auth(&self.admin_key),
            Auth::App => request = request.bearer_auth(&self.app_key),
            Auth::Bearer(credential) => request = request.bearer_auth(credential),
        }
        if let Some(content_type) = &call.content_type {
            request = request.header("content-type", content_type);
        }
        for (name, value) in &call.headers {
            request = request.header(name, value);
        }
        let response = request
            .body(call.body.clone())
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))?;
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .text()
            .await
            .map_err(|e| format!("the answer's body broke off: {e}"))?;
        Ok(Reply::new(status, headers, body))
    }

    /// Sends `bytes` as they are over a new connection, for requests no client library would
    /// send.
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<Reply, String> {
        let addr = self.addr();
        tokio::task::spawn_blocking(move || probe::exchange(addr, &bytes, REQUEST_TIMEOUT))
            .await
            .map_err(|e| format!("the raw exchange failed: {e}"))?
            .map(Reply::from)
            .map_err(|e| format!("no answer: {e}"))
    }

    /// Whether `/healthz` answers 200 from a fresh connection within `within`.
    pub async fn healthy_within(&self, within: Duration) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match self.healthz_once().await {
                Ok(()) => return Ok(()),
                Err(why) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "/healthz did not answer 200 within {within:?} ({why})"
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Asks `/healthz` once from a fresh connection, waiting at most 5 seconds for the answer.
    pub async fn healthz_once(&self) -> Result<(), String> {
        let addr = self.addr();
        let answer = tokio::task::spawn_blocking(move || {
            probe::exchange(
                addr,
                &probe::get_request("/healthz"),
                Duration::from_secs(5),
            )
        })
        .await
        .map_err(|e| e.to_string())?;
        match answer {
            Ok(response) if response.status == 200 => Ok(()),
            Ok(response) => Err(format!("/healthz answered {}", response.status)),
            Err(error) => Err(format!("/healthz: {error}")),
        }
    }

    /// The last stderr lines that say why the process ended (a panic, a stack overflow, a
    /// failed allocation), or its last line.
    pub fn last_words(&self) -> String {
        let lines = self.process.lines(Stream::Stderr);
        let telling = lines.iter().rev().find(|line| {
            [
                "overflow",
                "panicked",
                "memory allocation",
                "error",
                "ERROR",
            ]
            .iter()
            .any(|word| line.contains(word))
        });
        telling
            .or(lines.last())
            .map(|line| excerpt(line, 160))
            .unwrap_or_default()
    }
}

/// Starts the binary (with a cap on its address space) and waits until it listens.
fn launch(dir: &TempDir, env: &[(String, String)]) -> Result<(Spawned, u16), String> {
    let mut process = spawn(dir, env)?;
    let port = process.wait_for(Stream::Stderr, Duration::from_secs(60), listen_port)?;
    Ok((process, port))
}

/// Starts the binary in `dir` with `clarion.toml` there and `env`, with a cap on its address
/// space, without waiting for anything.
pub fn spawn(dir: &TempDir, env: &[(String, String)]) -> Result<Spawned, String> {
    // `ulimit` needs a shell; `exec` keeps the process id, so the id is the server's.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\""))
        .arg(binary())
        .current_dir(dir.path());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CLARION_") {
            command.env_remove(name);
        }
    }
    command.env("CLARION_CONFIG", dir.path().join("clarion.toml"));
    command.envs(env.iter().map(|(k, v)| (k, v)));
    Spawned::spawn(command).map_err(|e| format!("cannot start: {e}"))
}

/// The binary under attack: `$HOSTILE_SERVER_BIN` when set (a release build, or another
/// checkout's), else the debug build of this one.
fn binary() -> std::ffi::OsString {
    std::env::var_os("HOSTILE_SERVER_BIN")
        .filter(|path| !path.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_clarion-server").into())
}

/// The port in the "clarion-server is listening" log line.
pub fn listen_port(line: &str) -> Option<u16> {
    let log: Value = serde_json::from_str(line).ok()?;
    if log["fields"]["message"] != "clarion-server is listening" {
        return None;
    }
    log["fields"]["listen"]
        .as_str()?
        .rsplit(':')
        .next()?
        .parse()
        .ok()
}

/// At most `max` characters of `text`, for reports.
pub fn excerpt(text: &str, max: usize) -> String {
    let mut short: String = text.chars().take(max).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    short.replace('\n', " ")
}

/// Who a request is sent as.
#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Admin,
    /// The tenant's application key of `shop`.
    App,
    Bearer(String),
}

/// One request of a table row.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub auth: Auth,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Call {
    pub fn new(method: Method, path: &str) -> Call {
        Call {
            method,
            path: path.to_owned(),
            auth: Auth::App,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: &str) -> Call {
        Call::new(Method::GET, path)
    }

    /// A JSON body sent as the tenant.
    pub fn json(method: Method, path: &str, body: &Value) -> Call {
        Call::new(method, path).body("application/json", body.to_string().into_bytes())
    }

    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Call {
        self.content_type = Some(content_type.to_owned());
        self.body = body;
        self
    }

    pub fn auth(mut self, auth: Auth) -> Call {
        self.auth = auth;
        self
    }
}

/// An answer, from either client.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    fn new(status: u16, headers: Vec<(String, String)>, body: String) -> Reply {
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl From<RawResponse> for Reply {
    fn from(raw: RawResponse) -> Reply {
        let body = String::from_utf8_lossy(&raw.body).into_owned();
        Reply::new(raw.status, raw.headers, body)
    }
}
