//! `clarion keys`: the secret is printed once at creation, lists never show it, and a revoked
//! key is marked as such.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use support::Sandbox;

#[test]
fn a_key_is_created_with_its_secret_shown_once_listed_without_it_and_revoked() {
    let sandbox = Sandbox::new();

    let created = sandbox.json(&["keys", "create", "--name", "ci", "--scope", "app:default"]);
    let secret = created["secret"].as_str().unwrap().to_owned();
    let table = sandbox.ok(&["keys", "list"]);
    let listed = sandbox.json(&["keys", "list"]);
    let revoked = sandbox.ok(&["keys", "revoke", &created["id"].to_string()]);
    let after = sandbox.json(&["keys", "list"]);

    assert!(secret.starts_with("clk_") && secret.len() == 47, "{secret}");
    assert_eq!(created["scope"], "app:default");
    assert!(table.contains("ci") && !table.contains(&secret), "{table}");
    assert!(!listed.to_string().contains(&secret), "{listed}");
    assert!(revoked.contains("revoked API key"), "{revoked}");
    assert!(after[0]["revoked_at"].is_string(), "{after}");
}

#[test]
fn a_human_create_prints_the_secret_and_bad_scopes_are_usage_errors() {
    let sandbox = Sandbox::new();

    let created = sandbox.ok(&["keys", "create", "--name", "ops", "--scope", "admin"]);
    let bad_scope = sandbox.run(&["keys", "create", "--name", "x", "--scope", "root"]);
    let unknown_app = sandbox.run(&["keys", "create", "--name", "x", "--scope", "app:nope"]);
    let unknown_key = sandbox.run(&["keys", "revoke", "999"]);

    assert!(created.contains("secret (shown once): clk_"), "{created}");
    assert_eq!(bad_scope.status.code(), Some(2));
    assert_eq!(unknown_app.status.code(), Some(2));
    assert_eq!(unknown_key.status.code(), Some(3));
}
