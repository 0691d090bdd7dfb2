//! Runs the real `clarion` binary in a fresh working folder with no configuration, as a new
//! user would: the database is `./clarion.db` there and the only application is `default`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};

use clarion_adapters::sqlite::SqliteStore;
use serde_json::Value;
use tempfile::TempDir;

/// An APNs device token: 64 hexadecimal characters.
pub const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
/// A Web Push subscription (the keys of RFC 8291's example).
pub const WEBPUSH_ENDPOINT: &str = "https://push.example.com/send/alice-laptop";
pub const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
pub const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// A working folder of its own for one test.
pub struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary folder"),
        }
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("clarion.db")
    }

    /// Runs `clarion` with `args` in the sandbox, with no `CLARION_*` variable set.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_clarion"));
        command.args(args).current_dir(self.dir.path());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("CLARION_") {
                command.env_remove(name);
            }
        }
        command.env_remove("RUST_LOG");
        command.output().expect("clarion runs")
    }

    /// Runs `clarion` and returns its stdout, failing the test when it exits non-zero.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "clarion {args:?} failed with {}:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    }

    /// Runs `clarion --json ...` and parses its one JSON document.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut with_json = vec!["--json"];
        with_json.extend_from_slice(args);
        let stdout = self.ok(&with_json);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("clarion {args:?} printed invalid JSON ({e}):\n{stdout}"))
    }

    /// The number of rows of every table.
    pub fn table_counts(&self) -> BTreeMap<String, i64> {
        let path = self.database();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async {
            let store = SqliteStore::connect(path.to_str().expect("a UTF-8 path"))
                .await
                .expect("the database opens");
            store.table_counts().await.expect("the rows can be counted")
        })
    }
}
