//! The README's tour, run as a new user would run it: no configuration, a fresh folder, the
//! `default` application with the debug sender.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use serde_json::{Value, json};

use support::{APNS_TOKEN, AUTH, P256DH, Sandbox, WEBPUSH_ENDPOINT};

/// Adds the two devices of the tour, sends to alice and from a template.
fn follow_the_tour(sandbox: &Sandbox) {
    let apns = sandbox.ok(&[
        "devices",
        "add",
        "--platform",
        "apns",
        "--token",
        APNS_TOKEN,
        "--user",
        "alice",
        "--name",
        "Alice's iPhone",
    ]);
    assert!(apns.contains("created device 1"), "{apns}");
    let webpush = sandbox.ok(&[
        "devices",
        "add",
        "--platform",
        "webpush",
        "--token",
        WEBPUSH_ENDPOINT,
        "--p256dh",
        P256DH,
        "--auth",
        AUTH,
        "--user",
        "alice",
        "--name",
        "Alice's laptop",
    ]);
    assert!(webpush.contains("created device 2"), "{webpush}");

    let sent = sandbox.ok(&[
        "send",
        "--user",
        "alice",
        "--heading",
        "Hi",
        "--body",
        "Hello",
        "--tag",
        "welcome",
    ]);
    assert!(sent.contains("DEBUG"), "{sent}");

    let put = sandbox.ok(&[
        "templates",
        "put",
        "order-shipped",
        "--heading",
        "Order {{ order_id }}",
        "--body",
        "Your order {{ order_id }} has shipped",
    ]);
    assert!(put.contains("created template order-shipped"), "{put}");

    let from_template = sandbox.ok(&[
        "send-template",
        "order-shipped",
        "--user",
        "alice",
        "--context",
        r#"{"order_id":"42"}"#,
        "--related",
        "order:42",
    ]);
    assert!(
        from_template.contains("Your order 42 has shipped"),
        "{from_template}"
    );
}

#[test]
fn the_tour_shows_both_messages_in_state_debug_with_their_deliveries() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);

    let listed = sandbox.json(&["messages", "list"]);

    let messages = listed.as_array().expect("a JSON array");
    assert_eq!(messages.len(), 2, "{listed:#}");
    // Newest first: the template message, then the direct one.
    let (templated, direct) = (&messages[0], &messages[1]);
    for message in messages {
        assert_eq!(message["state"], "DEBUG", "{message:#}");
        assert_eq!(message["sender"], "debug");
        let deliveries = message["deliveries"].as_array().expect("deliveries");
        assert_eq!(deliveries.len(), 2, "{message:#}");
        assert!(deliveries.iter().all(|d| d["state"] == "debug"));
        let devices: Vec<&Value> = deliveries.iter().map(|d| &d["device_id"]).collect();
        assert!(devices.contains(&&json!(1)) && devices.contains(&&json!(2)));
    }
    assert_eq!(direct["tag"], "welcome");
    assert_eq!(direct["content"]["heading"], "Hi");
    assert_eq!(direct["content"]["body"], "Hello");
    assert_eq!(direct["related_objects"], json!([]));
    assert_eq!(templated["template_slug"], "order-shipped");
    assert_eq!(templated["content"]["heading"], "Order 42");
    assert_eq!(templated["content"]["body"], "Your order 42 has shipped");
    assert_eq!(
        templated["related_objects"],
        json!([{ "kind": "order", "object_id": "42" }])
    );
}

#[test]
fn messages_show_lists_the_deliveries_and_the_related_objects() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);

    let shown = sandbox.ok(&["messages", "show", "2"]);

    assert!(shown.contains("DEBUG"), "{shown}");
    assert!(shown.contains("order:42"), "{shown}");
    assert!(shown.contains("Your order 42 has shipped"), "{shown}");
    let debug_deliveries = shown
        .lines()
        .filter(|line| {
            line.split('┆')
                .filter(|cell| cell.trim() == "debug")
                .count()
                == 2
        })
        .count();
    assert_eq!(debug_deliveries, 2, "{shown}");
    let as_json = sandbox.json(&["messages", "show", "2"]);
    assert_eq!(as_json["id"], 2);
    assert_eq!(as_json["deliveries"].as_array().map(Vec::len), Some(2));
}

#[test]
fn messages_can_be_found_by_their_related_object() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);

    let found = sandbox.json(&["messages", "list", "--related", "order:42"]);

    let ids: Vec<&Value> = found
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(ids, [&json!(2)]);
}

#[test]
fn a_template_without_duplicates_refuses_a_second_send_for_the_same_object_and_stores_nothing() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);
    let before = sandbox.table_counts();

    let again = sandbox.run(&[
        "send-template",
        "order-shipped",
        "--user",
        "alice",
        "--context",
        r#"{"order_id":"42"}"#,
        "--related",
        "order:42",
    ]);

    assert_eq!(again.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.starts_with("not sent: "), "{stderr}");
    assert!(stderr.contains("does not allow duplicates"), "{stderr}");
    assert_eq!(sandbox.table_counts(), before);
}

#[test]
fn registering_the_same_token_again_updates_the_device() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);

    let again = sandbox.json(&[
        "devices",
        "add",
        "--platform",
        "apns",
        "--token",
        &APNS_TOKEN.to_uppercase(),
        "--user",
        "bob",
    ]);

    assert_eq!(again["registration"], "updated");
    assert_eq!(again["device"]["id"], 1);
    assert_eq!(again["device"]["user_id"], "bob");
    let listed = sandbox.json(&["devices", "list", "--user", "bob"]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
}

#[test]
fn a_queued_message_is_sent_by_the_batch_command_with_a_summary() {
    let sandbox = Sandbox::new();
    follow_the_tour(&sandbox);
    let queued = sandbox.json(&["send", "--user", "alice", "--body", "Later", "--queue"]);
    assert_eq!(queued["state"], "WAITING");

    let summary = sandbox.ok(&["batch"]);

    assert_eq!(
        summary.trim(),
        "processed 1: sent 0, debug 1, retrying 0, failed 0"
    );
    let id = queued["id"].as_i64().expect("an id").to_string();
    assert_eq!(sandbox.json(&["messages", "show", &id])["state"], "DEBUG");
    let report = sandbox.json(&["batch"]);
    assert_eq!(report["processed"], 0);
}

#[test]
fn migrate_and_config_work_with_no_configuration_at_all() {
    let sandbox = Sandbox::new();

    let migrated = sandbox.ok(&["migrate"]);
    let shown = sandbox.ok(&["config", "show"]);
    let checked = sandbox.run(&["config", "check"]);

    assert!(migrated.contains("sqlite://clarion.db"), "{migrated}");
    assert!(sandbox.database().is_file());
    assert!(shown.contains("[apps.default]"), "{shown}");
    assert!(shown.contains("debug"), "{shown}");
    assert!(checked.status.success(), "{checked:?}");
}
