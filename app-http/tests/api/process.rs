//! The real `clarion-server` binary: its JSON logs carry request ids and never credentials,
//! SIGTERM stops it gracefully with exit status 0, and running out of file descriptors
//! neither stops nor wedges it.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A started binary: its process, the port it listens on, and its stderr lines as they come.
pub(crate) struct Server {
    pub(crate) child: Child,
    port: u16,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    _dir: TempDir,
}

impl Server {
    /// Starts the binary on a free port with a fresh database and the given grace period,
    /// and waits until it logs that it listens.
    fn start(grace_secs: u64) -> Server {
        Server::start_with(grace_secs, None, &[])
    }

    /// Starts the binary as [`Server::start`] does, with at most `fd_limit` open files
    /// (`ulimit -n`, through `sh`) and more environment variables.
    fn start_with(grace_secs: u64, fd_limit: Option<u32>, env: &[(&str, &str)]) -> Server {
        let grace = grace_secs.to_string();
        let mut env = env.to_vec();
        env.push(("CLARION_HTTP__SHUTDOWN_GRACE_SECS", grace.as_str()));
        Server::launch(tempfile::tempdir().unwrap(), fd_limit, &env)
    }

    /// Starts the binary in `dir`, on the database `clarion.db` there (created if missing),
    /// with these extra environment variables.
    pub(crate) fn start_in(dir: TempDir, env: &[(&str, &str)]) -> Server {
        Server::launch(dir, None, env)
    }

    fn launch(dir: TempDir, fd_limit: Option<u32>, env: &[(&str, &str)]) -> Server {
        let binary = env!("CARGO_BIN_EXE_clarion-server");
        let mut command = match fd_limit {
            Some(limit) => {
                let mut shell = Command::new("sh");
                shell.args(["-c", &format!("ulimit -n {limit} && exec \"$0\""), binary]);
                shell
            }
            None => Command::new(binary),
        };
        let mut child = command
            .current_dir(dir.path())
            .env_remove("CLARION_CONFIG")
            .env("CLARION_LISTEN", "127.0.0.1:0")
            .env(
                "CLARION_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("clarion.db").display()),
            )
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child,
            port: 0,
            lines,
            seen: Vec::new(),
            _dir: dir,
        };
        let listening = server.wait_for_line("clarion-server is listening");
        let log: serde_json::Value = serde_json::from_str(&listening).unwrap();
        let listen = log["fields"]["listen"].as_str().unwrap();
        server.port = listen.rsplit(':').next().unwrap().parse().unwrap();
        server
    }

    /// Reads stderr until a line contains `needle`, failing after 20 seconds.
    fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit, failing after `within`.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "clarion-server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every stderr line, once the process has exited.
    fn all_lines(mut self) -> String {
        self.seen.extend(self.lines.iter());
        self.seen.join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn logs_carry_the_request_id_and_route_but_never_the_credential() {
    let mut server = Server::start(5);
    let credential = "clk_ThisSecretMustNeverBeLogged0123456789abcdef";
    let client = reqwest::Client::new();

    let response = client
        .get(server.url("/v1/apps/default/messages?tag=x"))
        .bearer_auth(credential)
        .header("x-request-id", "log-test-request-17")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answered = server.wait_for_line("log-test-request-17");
    server.terminate();
    assert!(server.wait_exit(Duration::from_secs(10)).success());
    let logs = server.all_lines();

    let line: serde_json::Value = serde_json::from_str(&answered).unwrap();
    let span = &line["span"];
    assert_eq!(span["request_id"], "log-test-request-17", "{answered}");
    assert_eq!(span["route"], "/v1/apps/{app}/messages", "{answered}");
    assert_eq!(span["method"], "GET", "{answered}");
    assert_eq!(line["fields"]["status"], 401, "{answered}");
    assert!(line["fields"]["latency_ms"].is_number(), "{answered}");
    assert!(!logs.contains("ThisSecretMustNeverBeLogged"), "{logs}");
    assert!(
        !logs.to_ascii_lowercase().contains("authorization"),
        "{logs}"
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_gracefully_with_exit_status_0() {
    let mut server = Server::start(5);
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let started = Instant::now();

    server.terminate();
    let status = server.wait_exit(Duration::from_secs(5));

    assert!(status.success(), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let logs = server.all_lines();
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(logs.contains("worker stopped"), "{logs}");
    assert!(logs.contains("clarion-server stopped"), "{logs}");
}

#[tokio::test]
async fn out_of_file_descriptors_the_server_keeps_going_and_answers_once_they_free() {
    // Fewer descriptors than connections, and a maximum above them, so that `accept` fails.
    let mut server = Server::start_with(
        5,
        Some(96),
        &[
            ("CLARION_HTTP__MAX_CONNECTIONS", "1000"),
            ("CLARION_HTTP__HEADER_READ_TIMEOUT_SECS", "1"),
        ],
    );
    let mut silent = Vec::new();
    for _ in 0..150 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", server.port))
                .await
                .unwrap(),
        );
    }

    server.wait_for_line("failed to accept a connection");
    for stream in &mut silent {
        let mut byte = [0u8; 1];
        let closed = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::AsyncReadExt::read(stream, &mut byte),
        )
        .await;
        assert!(
            closed.is_ok(),
            "a silent connection was never closed by the server"
        );
    }
    let health = reqwest::get(server.url("/healthz")).await.unwrap();

    assert_eq!(health.status(), 200);
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server exited"
    );
}
