//! Clarion's project tasks, run as `cargo xtask <task>`. Standard library only, so that it
//! compiles in a moment.

use std::env;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

mod fuzz;

const USAGE: &str = "\
Usage: cargo xtask <task>

Tasks:
  ci      check formatting, run clippy with warnings as errors, then run every test
          (cargo nextest, or cargo test when nextest is not installed) and the doctests
          of clarion-domain, whose crate page teaches its use
  bench   build release binaries and run the benchmark (docs/performance.md):
          [--devices N (100000)] [--webpush-devices N (up to 20000)] [--webpush-origins N (10)]
          [--platforms apns,fcm,webpush] [--db sqlite|postgres|both (both)]
          [--provider-rtt-ms N (0 and 50; repeat or list)] [--provider-jitter-ms J (0)]
          [--provider-streams N (1000)] [--connections N (4)] [--max-in-flight N (4000)]
          [--delivery-concurrency N] [--poll-interval-secs N (1)]
          [--api-requests N (10000)] [--queued N (100000)] [--bulk-messages N (100000)]
          [--out FILE] [--postgres-url URL]; results go to <target>/bench/results.json
          unless --out says otherwise (clarion-bench --help for each option)
  fuzz    build the fuzz targets (fuzz/, cargo-fuzz) and run each for a while
          (docs/fuzzing.md): [--secs N (60)] [--sanitizer address|none (none)]
          [--verbose] [TARGET...] (every target when none is named); a crash fails
          the task and names the input libFuzzer saved under fuzz/artifacts/
  help    print this message
";

fn main() -> ExitCode {
    let task = env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("bench") => bench(env::args().skip(2).collect()),
        Some("fuzz") => fuzz::run(&env::args().skip(2).collect::<Vec<_>>()),
        Some("help" | "-h" | "--help") => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        None => {
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
        Some(other) => {
            eprintln!("xtask: unknown task `{other}`\n");
            eprint!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// The checks CI runs, in order, stopping at the first failure.
fn ci() -> ExitCode {
    let nextest = nextest_available();
    let test: &[&str] = if nextest {
        &["nextest", "run", "--workspace", "--no-fail-fast"]
    } else {
        eprintln!("xtask: cargo nextest is not installed; running cargo test instead");
        &["test", "--workspace"]
    };
    // nextest does not run doctests, and clarion-domain's are the examples its crate page
    // teaches with: run them on their own (cargo test runs them with the rest). Only the
    // domain's, so the step stays a few seconds.
    let doctests: &[&str] = if nextest {
        &["test", "--package", "clarion-domain", "--doc"]
    } else {
        &[]
    };
    let steps: [(&str, &[&str]); 4] = [
        ("formatting", &["fmt", "--all", "--", "--check"]),
        (
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        ("tests", test),
        ("doctests", doctests),
    ];
    for (name, args) in steps.into_iter().filter(|(_, args)| !args.is_empty()) {
        eprintln!("xtask: {name}: cargo {}", args.join(" "));
        if let Err(failure) = run_cargo(args) {
            eprintln!("xtask: ci failed at step `{name}`: {failure}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!("xtask: ci passed");
    ExitCode::SUCCESS
}

/// Builds `clarion-server`, `clarion-mocks` and `clarion-bench` in release, then runs the
/// benchmark with the given options. Not part of `ci`: it takes minutes and wants a quiet
/// machine.
fn bench(mut args: Vec<String>) -> ExitCode {
    let build = [
        "build",
        "--release",
        "--package",
        "clarion-http",
        "--bin",
        "clarion-server",
        "--package",
        "clarion-bench",
        "--bin",
        "clarion-bench",
        "--bin",
        "clarion-mocks",
    ];
    eprintln!("xtask: bench: cargo {}", build.join(" "));
    if let Err(failure) = run_cargo(&build) {
        eprintln!("xtask: bench: the release build failed: {failure}");
        return ExitCode::FAILURE;
    }
    let target = target_dir();
    let bin_dir = target.join("release");
    if !args.iter().any(|a| a == "--out") {
        args.push("--out".to_owned());
        args.push(
            target
                .join("bench")
                .join("results.json")
                .display()
                .to_string(),
        );
    }
    let status = Command::new(bin_dir.join("clarion-bench"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(&args)
        .current_dir(workspace_root())
        .status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("xtask: bench: could not start clarion-bench: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The target folder: `$CARGO_TARGET_DIR`, else `target/` in the workspace.
fn target_dir() -> PathBuf {
    let target = env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    if target.is_relative() {
        workspace_root().join(target)
    } else {
        target
    }
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// The workspace root, so that the tasks work from any folder.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), PathBuf::from)
}

fn nextest_available() -> bool {
    Command::new(cargo())
        .args(["nextest", "--version"])
        .current_dir(workspace_root())
        .output()
        .is_ok_and(|output| output.status.success())
}

fn run_cargo(args: &[&str]) -> Result<(), String> {
    let status = Command::new(cargo())
        .args(args)
        .current_dir(workspace_root())
        .status()
        .map_err(|err| format!("could not start cargo: {err}"))?;
    if status.success() {
        return Ok(());
    }
    match status.code() {
        Some(code) => Err(format!("`cargo {}` exited with {code}", args.join(" "))),
        None => Err(format!("`cargo {}` was killed by a signal", args.join(" "))),
    }
}
