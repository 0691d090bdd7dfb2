//! A database file that is damaged or cannot be written is refused by every command with exit
//! code 1 and an error that names the file and the problem.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

#[allow(dead_code, reason = "each test crate uses part of the support module")]
mod support;

use clarion_testkit::ReadOnlyFile;
use support::Sandbox;

/// Runs `args` and returns the exit code and stderr.
fn refused(sandbox: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let output = sandbox.run(args);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_database_file_that_cannot_be_written_is_refused_naming_the_file() {
    let sandbox = Sandbox::new();
    sandbox.ok(&["migrate"]);
    let _read_only = ReadOnlyFile::bind(&sandbox.database()).expect("a read-only bind mount");

    let (code, stderr) = refused(&sandbox, &["devices", "list"]);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("clarion.db"), "{stderr}");
    assert!(stderr.contains("read-only"), "{stderr}");
}

#[test]
fn a_file_of_garbage_is_refused_naming_the_file() {
    let sandbox = Sandbox::new();
    let garbage: Vec<u8> = (0..64 * 1024_u32)
        .map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(sandbox.database(), garbage).unwrap();

    let (code, stderr) = refused(&sandbox, &["devices", "list"]);

    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("clarion.db"), "{stderr}");
    assert!(stderr.contains("not an SQLite database"), "{stderr}");
}
