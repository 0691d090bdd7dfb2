//! Hostile templates against the real `clarion-server` binary, which renders in memory-limited
//! worker processes: deep nesting at any depth, templates that eat memory or time, and
//! filters that build huge strings are each a 422 naming the limit, the server keeps
//! answering `/healthz`, its own memory stays small, and no worker is left a zombie.

use std::time::{Duration, Instant};

use clarion_domain::auth::KeyScope;
use clarion_domain::ids::{AppId, Slug};
use clarion_domain::template::TemplateSpec;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helpers::{create_key, runtime_with};
use crate::process::Server;

/// The most the server's peak resident memory may reach in these tests. An idle debug
/// build peaks near 35 MiB; before the limits, one `join` preview took it to 1.9 GiB.
const SERVER_PEAK_LIMIT_KB: u64 = 150 * 1024;

/// A folder with a migrated database holding an admin key, and the key's secret.
async fn prepared(stored: &[(&str, &str)]) -> (TempDir, String) {
    let (runtime, dir) = runtime_with(|_| {}).await;
    let key = create_key(&runtime.service, KeyScope::Admin).await;
    // Templates stored as an older version would have: straight into the store, unchecked.
    for (slug, body) in stored {
        let spec = TemplateSpec {
            app: AppId::parse("default").unwrap(),
            slug: Slug::parse(slug).unwrap(),
            body: (*body).to_owned(),
            heading: None,
            url: None,
            is_active: true,
            allow_duplicates: true,
        };
        runtime
            .store
            .put_template(&spec, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
    }
    (dir, key)
}

/// An HTTP client for the server with the admin key.
struct Client {
    http: reqwest::Client,
    key: String,
}

impl Client {
    async fn send(
        &self,
        server: &Server,
        method: reqwest::Method,
        path: &str,
        body: &Value,
    ) -> (u16, Value) {
        let response = self
            .http
            .request(method, server.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn save(&self, server: &Server, slug: &str, body: &str) -> (u16, Value) {
        let path = format!("/v1/apps/default/templates/{slug}");
        self.send(
            server,
            reqwest::Method::PUT,
            &path,
            &json!({ "body": body }),
        )
        .await
    }

    async fn preview(&self, server: &Server, slug: &str) -> (u16, Value) {
        let path = format!("/v1/apps/default/templates/{slug}/preview");
        self.send(
            server,
            reqwest::Method::POST,
            &path,
            &json!({ "context": {} }),
        )
        .await
    }
}

/// Asserts a 422 whose detail names `setting`.
#[track_caller]
fn assert_refused(answer: &(u16, Value), setting: &str, what: &str) {
    let (status, body) = answer;
    let detail = body["detail"].as_str().unwrap_or_default();
    assert_eq!(*status, 422, "{what}: {body}");
    assert!(detail.contains(setting), "{what}: {detail}");
}

async fn assert_healthy(server: &Server) {
    let health = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A line of `/proc/<pid>/status`, in kB.
fn status_kb(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The state letters (`S`, `R`, `Z`) of the server's child processes.
fn children_states(pid: u32) -> Vec<char> {
    let mut states = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace() {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            if let Some(state) = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
            {
                states.push(state);
            }
        }
    }
    states
}

/// Each construct MiniJinja nests without a recursion guard, `n` deep.
fn nested(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("not", format!("{{{{ {}1 }}}}", "not ".repeat(n))),
        ("minus", format!("{{{{ {}1 }}}}", "- ".repeat(n))),
        (
            "parentheses",
            format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "lists",
            format!("{{{{ {}1{} }}}}", "[".repeat(n), "]".repeat(n)),
        ),
        ("filters", format!("{{{{ 1{} }}}}", "|abs".repeat(n))),
        (
            "if blocks",
            format!("{}x{}", "{% if 1 %}".repeat(n), "{% endif %}".repeat(n)),
        ),
        (
            "for blocks",
            format!(
                "{}x{}",
                "{% for i in [1] %}".repeat(n),
                "{% endfor %}".repeat(n)
            ),
        ),
    ]
}

#[tokio::test]
async fn nesting_at_any_depth_is_saved_when_shallow_and_a_422_naming_the_limit_when_deep() {
    let (dir, key) = prepared(&[]).await;
    // Sources of 100,000 levels are megabytes: let them reach the nesting check.
    let server = Server::start_in(
        dir,
        &[
            ("CLARION_HTTP__BODY_LIMIT_BYTES", "8000000"),
            ("CLARION_TEMPLATES__MAX_SOURCE_BYTES", "8000000"),
        ],
    );
    let client = Client {
        http: reqwest::Client::new(),
        key,
    };

    for (name, source) in nested(10) {
        let (status, body) = client.save(&server, "shallow", &source).await;
        assert!(status == 200 || status == 201, "{name} x10: {body}");
        let (status, body) = client.preview(&server, "shallow").await;
        assert_eq!(status, 200, "{name} x10: {body}");
    }
    for n in [1_000, 100_000] {
        for (name, source) in nested(n) {
            let answer = client.save(&server, "deep", &source).await;

            assert_refused(&answer, "templates.max_nesting", &format!("{name} x{n}"));
            assert_healthy(&server).await;
        }
    }
    assert!(status_kb(server.child.id(), "VmHWM:") < SERVER_PEAK_LIMIT_KB);
}

#[tokio::test]
async fn a_template_stored_before_the_limits_is_refused_when_it_renders() {
    let deep = format!("{{{{ {}1 }}}}", "not ".repeat(10_000));
    let (dir, key) = prepared(&[("old-deep", deep.as_str())]).await;
    let server = Server::start_in(dir, &[]);
    let client = Client {
        http: reqwest::Client::new(),
        key,
    };

    let preview = client.preview(&server, "old-deep").await;
    let send = client
        .send(
            &server,
            reqwest::Method::POST,
            "/v1/apps/default/messages/template",
            &json!({ "slug": "old-deep", "context": {}, "target": { "user_id": "alice" } }),
        )
        .await;

    assert_refused(&preview, "templates.max_nesting", "preview");
    assert_refused(&send, "templates.max_nesting", "send");
    assert_healthy(&server).await;
}

#[tokio::test]
async fn templates_that_eat_memory_time_or_output_are_a_422_and_the_server_stays_small() {
    let (dir, key) = prepared(&[]).await;
    // A generous time budget, so that the memory budget is what stops the doubling loop
    // even on a slow machine; the time test below has far more work than any budget.
    let server = Server::start_in(dir, &[("CLARION_TEMPLATES__RENDER_TIMEOUT_MS", "20000")]);
    let client = Client {
        http: reqwest::Client::new(),
        key,
    };
    let doubling = "{% set ns = namespace(s='x') %}{% for i in range(40) %}\
                    {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
    // MiniJinja folds constant expressions while it compiles, so this one is built when it
    // is saved: the check runs in a worker too.
    let folded = format!("{{{{ {} }}}}", ["('x' * 100000000)"; 8].join(" ~ "));
    let cases = [
        (
            "doubling",
            doubling.to_owned(),
            "templates.render_memory_mb",
        ),
        (
            "indent",
            "{{ ('x\n' * 200)|indent(1000000) }}".to_owned(),
            "templates.max_output_bytes",
        ),
        (
            "repeat and replace",
            "{{ (('x' * 10000000)|replace('x', 'yyyyyyyyyy'))|length }}".to_owned(),
            "templates.max_output_bytes",
        ),
        (
            "join",
            "{{ range(100000)|join('x' * 10000)|length }}".to_owned(),
            "templates.max_output_bytes",
        ),
    ];

    let saved = client.save(&server, "folded", &folded).await;
    assert_refused(
        &saved,
        "templates.render_memory_mb",
        "constant folding at save",
    );
    for (name, source, setting) in &cases {
        let (status, body) = client.save(&server, "hungry", source).await;
        assert!(status == 200 || status == 201, "{name}: {body}");

        let answer = client.preview(&server, "hungry").await;

        assert_refused(&answer, setting, name);
        assert_healthy(&server).await;
    }
    assert!(status_kb(server.child.id(), "VmHWM:") < SERVER_PEAK_LIMIT_KB);
    let deadline = Instant::now() + Duration::from_secs(10);
    while children_states(server.child.id()).contains(&'Z') {
        assert!(Instant::now() < deadline, "a render worker stayed a zombie");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_render_that_outlives_its_time_budget_is_a_422_and_its_worker_is_replaced() {
    let (dir, key) = prepared(&[]).await;
    let server = Server::start_in(dir, &[]);
    let client = Client {
        http: reqwest::Client::new(),
        key,
    };
    // Each step builds and drops 50 MB (from `i`, so that it is not folded into a constant
    // when compiled); the fuel allows thousands of steps, minutes of work.
    let slow = "{% for i in range(10000) %}{% if ('x' * (50000000 + i)) %}{% endif %}{% endfor %}";
    client.save(&server, "slow", slow).await;
    client.save(&server, "quick", "Hello {{ 1 + 1 }}").await;

    let answer = client.preview(&server, "slow").await;
    let after = client.preview(&server, "quick").await;

    assert_refused(&answer, "templates.render_timeout_ms", "slow");
    assert_eq!(after.0, 200, "{}", after.1);
    assert_eq!(after.1["body"], "Hello 2");
    assert_healthy(&server).await;
}
