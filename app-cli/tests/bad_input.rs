//! Bad input to every command exits non-zero, says what is wrong on stderr, and leaves the
//! database exactly as it was.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use support::{APNS_TOKEN, AUTH, P256DH, Sandbox, WEBPUSH_ENDPOINT};

/// One bad command: what it is, its arguments, the exit code and a part of the message.
struct Case {
    name: &'static str,
    args: &'static [&'static str],
    exit: i32,
    names: &'static str,
}

const SEND: [&str; 5] = ["send", "--user", "alice", "--body", "Hello"];

const CASES: &[Case] = &[
    Case {
        name: "unknown application",
        args: &["--app", "nope", "send", "--user", "alice", "--body", "Hi"],
        exit: 2,
        names: "unknown application \"nope\"",
    },
    Case {
        name: "unknown application when listing devices",
        args: &["--app", "nope", "devices", "list"],
        exit: 2,
        names: "unknown application \"nope\"",
    },
    Case {
        name: "malformed APNs token",
        args: &["devices", "add", "--platform", "apns", "--token", "not-hex"],
        exit: 2,
        names: "APNs token",
    },
    Case {
        name: "malformed FCM token",
        args: &["devices", "add", "--platform", "fcm", "--token", "abc def"],
        exit: 2,
        names: "FCM token must be printable ASCII without white space",
    },
    Case {
        name: "Web Push endpoint over http",
        args: &[
            "devices",
            "add",
            "--platform",
            "webpush",
            "--token",
            "http://push.example.com/send/1",
            "--p256dh",
            P256DH,
            "--auth",
            AUTH,
        ],
        exit: 2,
        names: "Web Push endpoint must use https",
    },
    Case {
        name: "Web Push p256dh that is not a P-256 point",
        args: &[
            "devices",
            "add",
            "--platform",
            "webpush",
            "--token",
            WEBPUSH_ENDPOINT,
            "--p256dh",
            "BTBZMqHH6r4Tts7J_aSIgg",
            "--auth",
            AUTH,
        ],
        exit: 2,
        names: "p256dh",
    },
    Case {
        name: "Web Push without keys",
        args: &[
            "devices",
            "add",
            "--platform",
            "webpush",
            "--token",
            WEBPUSH_ENDPOINT,
        ],
        exit: 2,
        names: "webpush device needs",
    },
    Case {
        name: "unknown platform",
        args: &["devices", "add", "--platform", "blackberry", "--token", "x"],
        exit: 2,
        names: "unknown platform",
    },
    Case {
        name: "unknown template slug",
        args: &["send-template", "no-such-template", "--user", "alice"],
        exit: 3,
        names: "template no-such-template not found",
    },
    Case {
        name: "invalid JSON for --extra-data",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--extra-data",
            "{not json",
        ],
        exit: 2,
        names: "invalid JSON for --extra-data: ",
    },
    Case {
        name: "--extra-data that is an array",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--extra-data",
            "[1, 2]",
        ],
        exit: 2,
        names: "--extra-data must be a JSON object; got an array",
    },
    Case {
        name: "invalid JSON for --context",
        args: &[
            "send-template",
            "order-shipped",
            "--user",
            "alice",
            "--context",
            "42",
        ],
        exit: 2,
        names: "--context must be a JSON object; got a number",
    },
    Case {
        name: "missing template variable",
        args: &[
            "send-template",
            "order-shipped",
            "--user",
            "alice",
            "--context",
            "{}",
        ],
        exit: 2,
        names: "undefined variable",
    },
    Case {
        name: "missing template variable in a preview",
        args: &["templates", "render", "order-shipped"],
        exit: 2,
        names: "undefined variable",
    },
    Case {
        name: "template with a syntax error",
        args: &["templates", "put", "broken", "--body", "{{ order_id"],
        exit: 2,
        names: "template syntax error in body",
    },
    Case {
        name: "illegal priority",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--priority",
            "urgent",
        ],
        exit: 2,
        names: "priority must be high or normal",
    },
    Case {
        name: "time-to-live over 28 days",
        args: &[
            "send", "--user", "alice", "--body", "Hi", "--ttl", "99999999",
        ],
        exit: 2,
        names: "time_to_live is 99999999 seconds",
    },
    Case {
        name: "collapse key of 70 characters",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--collapse-key",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        ],
        exit: 2,
        names: "collapse_key is 70 bytes long",
    },
    Case {
        name: "negative badge",
        args: &["send", "--user", "alice", "--body", "Hi", "--badge", "-1"],
        exit: 2,
        names: "--badge",
    },
    Case {
        name: "relative URL",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--url",
            "/orders/42",
        ],
        exit: 2,
        names: "url is not a valid absolute URL",
    },
    Case {
        name: "related object without a kind",
        args: &["send", "--user", "alice", "--body", "Hi", "--related", "42"],
        exit: 2,
        names: "related object",
    },
    Case {
        name: "two targets",
        args: &["send", "--user", "alice", "--broadcast", "--body", "Hi"],
        exit: 2,
        names: "cannot be used with",
    },
    Case {
        name: "unknown device id in --devices",
        args: &["send", "--devices", "1,99", "--body", "Hi"],
        exit: 3,
        names: "unknown device ids for this application: 99",
    },
    Case {
        name: "unknown device for show",
        args: &["devices", "show", "99"],
        exit: 3,
        names: "device 99 not found",
    },
    Case {
        name: "unknown device for deactivate",
        args: &["devices", "deactivate", "99"],
        exit: 3,
        names: "device 99 not found",
    },
    Case {
        name: "unknown device for delete",
        args: &["devices", "delete", "99"],
        exit: 3,
        names: "device 99 not found",
    },
    Case {
        name: "prune with a bad age",
        args: &["devices", "prune", "--delete-inactive-older-than", "30w"],
        exit: 2,
        names: "unknown unit 'w'",
    },
    Case {
        name: "unknown message id for show",
        args: &["messages", "show", "999"],
        exit: 3,
        names: "message 999 not found",
    },
    Case {
        name: "unknown message id for retry",
        args: &["messages", "retry", "999"],
        exit: 3,
        names: "message 999 not found",
    },
    Case {
        name: "retry of a message that did not fail",
        args: &["messages", "retry", "1"],
        exit: 2,
        names: "a message in state DEBUG cannot become WAITING",
    },
    Case {
        name: "unknown message state",
        args: &["messages", "list", "--state", "LOST"],
        exit: 2,
        names: "unknown message state",
    },
    Case {
        name: "malformed time",
        args: &["messages", "list", "--after", "yesterday"],
        exit: 2,
        names: "RFC 3339",
    },
    Case {
        name: "unknown template to show",
        args: &["templates", "show", "nope"],
        exit: 3,
        names: "template nope not found",
    },
    Case {
        name: "template slug with capitals",
        args: &["templates", "delete", "Order"],
        exit: 2,
        names: "slug may only hold",
    },
    // A NUL cannot be passed in an argument, but JSON options can spell it `\u0000`.
    Case {
        name: "a NUL in a string of extra data",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--extra-data",
            r#"{"order": {"lines": ["one", "a\u0000b"]}}"#,
        ],
        exit: 2,
        names: "extra_data.order.lines[1]: contains a NUL character (U+0000), which cannot be stored",
    },
    Case {
        name: "a NUL in a key of extra data",
        args: &[
            "send",
            "--user",
            "alice",
            "--body",
            "Hi",
            "--extra-data",
            r#"{"a\u0000b": 1}"#,
        ],
        exit: 2,
        names: r#"extra_data["a\u0000b"]: the key contains a NUL character (U+0000)"#,
    },
    Case {
        name: "a template that renders a NUL from its context",
        args: &[
            "send-template",
            "order-shipped",
            "--user",
            "alice",
            "--context",
            r#"{"order_id": "4\u00002"}"#,
        ],
        exit: 2,
        names: "heading: contains a NUL character (U+0000), which cannot be stored",
    },
    Case {
        name: "missing configuration file",
        args: &["--config", "missing.toml", "devices", "list"],
        exit: 1,
        names: "configuration file missing.toml not found",
    },
];

/// A database with alice's APNs device, one sent message and the `order-shipped` template.
fn seeded() -> Sandbox {
    let sandbox = Sandbox::new();
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
    sandbox.ok(&SEND);
    sandbox.ok(&[
        "templates",
        "put",
        "order-shipped",
        "--heading",
        "Order {{ order_id }}",
        "--body",
        "Your order {{ order_id }} has shipped",
    ]);
    sandbox
}

#[test]
fn bad_input_exits_non_zero_names_the_problem_and_changes_nothing() {
    let sandbox = seeded();
    let before = sandbox.table_counts();
    assert!(before.values().any(|count| *count > 0), "{before:?}");

    let mut failures = Vec::new();
    for case in CASES {
        let output = sandbox.run(case.args);

        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() != Some(case.exit) || !stderr.contains(case.names) {
            failures.push(format!(
                "{}: clarion {:?} exited with {:?} (expected {}), stderr:\n{stderr}",
                case.name,
                case.args,
                output.status.code(),
                case.exit
            ));
        }
        let after = sandbox.table_counts();
        if after != before {
            failures.push(format!(
                "{}: the row counts changed from {before:?} to {after:?}",
                case.name
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn an_error_is_one_line_on_stderr_and_nothing_on_stdout_even_with_json() {
    let sandbox = seeded();

    let output = sandbox.run(&["--json", "messages", "show", "999"]);

    assert_eq!(output.status.code(), Some(3));
    assert!(output.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&output.stderr),
        "error: message 999 not found\n"
    );
}

#[test]
fn hostile_templates_are_refused_naming_the_limit_and_the_cli_survives_them() {
    let sandbox = seeded();
    let deep = format!("{{{{ {}1 }}}}", "not ".repeat(10_000));
    let doubling = "{% set ns = namespace(s='x') %}{% for i in range(40) %}\
                    {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}";
    sandbox.ok(&["templates", "put", "hungry", "--body", doubling]);
    let before = sandbox.table_counts();

    let nested = sandbox.run(&["templates", "put", "deep", "--body", &deep]);
    // The render runs in a worker process of `clarion` itself, limited to 256 MiB.
    let rendered = sandbox.run(&["templates", "render", "hungry"]);

    let nested_err = String::from_utf8_lossy(&nested.stderr);
    assert_eq!(nested.status.code(), Some(2), "{nested_err}");
    assert!(nested_err.contains("templates.max_nesting"), "{nested_err}");
    let rendered_err = String::from_utf8_lossy(&rendered.stderr);
    assert_eq!(rendered.status.code(), Some(2), "{rendered_err}");
    assert!(
        rendered_err.contains("templates.render_memory_mb")
            || rendered_err.contains("templates.render_timeout_ms"),
        "{rendered_err}"
    );
    assert_eq!(sandbox.table_counts(), before);
}
