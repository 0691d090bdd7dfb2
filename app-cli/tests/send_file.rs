//! `clarion send --file`: a file of messages, one JSON object a line, streamed through the
//! service, with a summary that names each failed line.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use std::io::Write as _;
use std::process::{Command, Stdio};

use serde_json::json;
use support::{APNS_TOKEN, Sandbox};

fn with_alice(sandbox: &Sandbox) {
    sandbox.ok(&[
        "devices",
        "add",
        "--platform",
        "apns",
        "--token",
        APNS_TOKEN,
        "--user",
        "alice",
    ]);
}

#[test]
fn a_file_of_5000_messages_is_sent_and_the_bad_line_is_reported_by_its_number() {
    let sandbox = Sandbox::new();
    with_alice(&sandbox);
    let mut text = String::new();
    for n in 1..=5001 {
        let line = match n {
            // A blank line is skipped, and still counted as a line.
            17 => String::new(),
            1234 => json!({"target": {"user_id": ""}, "body": "to nobody"}).to_string(),
            n if n % 10 == 0 => json!({"target": {"user_id": "alice"}, "body": format!("now {n}")})
                .to_string(),
            n => json!({"target": {"user_id": "alice"}, "body": format!("queued {n}"), "dispatch": "queue"})
                .to_string(),
        };
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(sandbox.database().with_file_name("messages.jsonl"), text).unwrap();

    let output = sandbox.run(&["--json", "send", "--file", "messages.jsonl"]);

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["messages"], 5000, "{summary}");
    assert_eq!(summary["stored"], 4999, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(summary["failures"][0]["line"], 1234, "{summary}");
    let error = summary["failures"][0]["error"].as_str().unwrap();
    assert!(error.contains("target.user_id"), "{error}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 of 5000 messages were not stored"),
        "{stderr}"
    );
    assert_eq!(sandbox.table_counts()["messages"], 4999);
}

#[test]
fn standard_input_is_read_for_a_dash_and_a_clean_file_exits_0_with_a_summary() {
    let sandbox = Sandbox::new();
    with_alice(&sandbox);
    sandbox.ok(&["templates", "put", "welcome", "--body", "Hello {{ name }}"]);
    let lines = [
        json!({"target": {"user_id": "alice"}, "body": "one"}),
        json!({"slug": "welcome", "context": {"name": "Ann"}, "target": {"user_id": "alice"}}),
        json!({"target": {"device_ids": [1]}, "body": "three", "dispatch": "queue"}),
    ]
    .map(|line| line.to_string())
    .join("\n");
    let mut child = Command::new(env!("CARGO_BIN_EXE_clarion"))
        .args(["send", "--file", "-"])
        .current_dir(sandbox.database().parent().unwrap())
        .env_remove("CLARION_CONFIG")
        .env_remove("CLARION_APP")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();

    let output = child.wait_with_output().unwrap();

    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("stored 3 of 3 messages; 0 failed"),
        "{stdout}"
    );
    assert_eq!(sandbox.table_counts()["messages"], 3);
}

#[test]
fn lines_the_service_refuses_and_lines_that_are_not_messages_are_each_named() {
    let sandbox = Sandbox::new();
    with_alice(&sandbox);
    let text = [
        "not json".to_owned(),
        json!({"target": {"broadcast": {}}, "body": "sale"}).to_string(),
        json!({"slug": "missing", "target": {"user_id": "alice"}}).to_string(),
        json!({"target": {"device_ids": [99]}, "body": "x"}).to_string(),
        json!({"target": {"user_id": "alice"}, "body": "fine"}).to_string(),
    ]
    .join("\n");
    std::fs::write(sandbox.database().with_file_name("m.jsonl"), text).unwrap();

    let output = sandbox.run(&["send", "--file", "m.jsonl"]);
    let missing = sandbox.run(&["send", "--file", "nowhere.jsonl"]);
    let both = sandbox.run(&["send", "--file", "m.jsonl", "--body", "x"]);

    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "line 1: not valid JSON",
        "line 2: target: a broadcast",
        "line 3: template missing not found",
        "line 4: ",
        "stored 1 of 5 messages; 4 failed",
    ] {
        assert!(stdout.contains(expected), "{expected}:\n{stdout}");
    }
    assert_eq!(missing.status.code(), Some(2), "{missing:?}");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nowhere.jsonl"));
    assert_eq!(both.status.code(), Some(2), "{both:?}");
    assert_eq!(sandbox.table_counts()["messages"], 1);
}
