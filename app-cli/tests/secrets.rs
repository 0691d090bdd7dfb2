//! A PostgreSQL password given in the database URL, in its query (`?password=`) or in its
//! userinfo, never reaches `clarion`'s output: not in `config show`, not in `config check`,
//! not in the error of a command that cannot connect.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use support::Sandbox;

const QUERY_SECRET: &str = "hunter2-query-secret";
const USERINFO_SECRET: &str = "hunter2-userinfo-secret";

#[test]
fn a_database_password_in_the_url_query_or_userinfo_is_never_printed() {
    let sandbox = Sandbox::new();
    // A database that does not exist on the machine's PostgreSQL: every command that connects
    // fails, and its error must not quote the password either.
    let url = format!(
        "postgres://postgres:{USERINFO_SECRET}@127.0.0.1:5432/clarion_cli_no_such_database\
         ?password={QUERY_SECRET}&sslmode=disable"
    );
    std::fs::write(
        sandbox.database().with_file_name("clarion.toml"),
        format!("[database]\nurl = \"{url}\"\n"),
    )
    .unwrap();

    let mut leaks = Vec::new();
    for args in [
        &["config", "show"][..],
        &["--json", "config", "show"],
        &["config", "check"],
        &["devices", "list"],
    ] {
        let output = sandbox.run(args);
        let printed = format!(
            "{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in [QUERY_SECRET, USERINFO_SECRET] {
            if printed.contains(secret) {
                leaks.push(format!("clarion {args:?} printed {secret}:\n{printed}"));
            }
        }
    }

    assert!(leaks.is_empty(), "{}", leaks.join("\n\n"));
}
