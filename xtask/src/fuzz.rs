//! `cargo xtask fuzz`: builds the cargo-fuzz targets in `fuzz/` and runs each for a while,
//! then says what libFuzzer found.
//!
//! cargo-fuzz passes `-Z` flags to rustc, which a stable toolchain takes only with
//! `RUSTC_BOOTSTRAP=1`; the task sets it for its own cargo-fuzz commands and nowhere else. The
//! fuzz build has a target folder of its own (`<target>/fuzz`), so that its instrumented,
//! optimised artefacts never replace the main build's (`<target>/fuzz-address` with
//! AddressSanitizer).

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use crate::{cargo, target_dir, workspace_root};

/// The fuzz targets, in the order they run.
const TARGETS: [&str; 5] = [
    "tokens",
    "payloads",
    "templates",
    "config",
    "request_bodies",
];

/// The cargo-fuzz release `.ci/run` installs; named in the advice when it is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// libFuzzer's limits on one input: a slower input or a larger process is a crash.
const INPUT_TIMEOUT_SECS: u64 = 20;
const RSS_LIMIT_MB: u64 = 2048;

/// How many lines of libFuzzer's output a failure shows.
const FAILURE_LINES: usize = 60;

#[derive(Debug)]
struct Options {
    secs: u64,
    sanitizer: String,
    verbose: bool,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        secs: 60,
        sanitizer: "none".to_owned(),
        verbose: false,
        targets: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => {
                let value = args.next().ok_or("--secs needs a number of seconds")?;
                options.secs =
                    value.parse().ok().filter(|secs| *secs > 0).ok_or_else(|| {
                        format!("--secs must be a positive number; got {value:?}")
                    })?;
            }
            "--sanitizer" => {
                let value = args.next().ok_or("--sanitizer needs address or none")?;
                if !matches!(value.as_str(), "address" | "none") {
                    return Err(format!(
                        "--sanitizer must be address or none; got {value:?}"
                    ));
                }
                value.clone_into(&mut options.sanitizer);
            }
            "--verbose" => options.verbose = true,
            target if TARGETS.contains(&target) => options.targets.push(target.to_owned()),
            other => {
                return Err(format!(
                    "unknown option or target {other:?}; the targets are {}",
                    TARGETS.join(", ")
                ));
            }
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|t| (*t).to_owned()).collect();
    }
    Ok(options)
}

/// What one target's run found.
#[derive(Debug)]
struct Outcome {
    target: String,
    passed: bool,
    summary: String,
    artifact: Option<String>,
}

pub fn run(args: &[String]) -> ExitCode {
    let options = match parse(args) {
        Ok(options) => options,
        Err(problem) => {
            eprintln!("xtask: fuzz: {problem}");
            return ExitCode::from(2);
        }
    };
    if !cargo_fuzz_available() {
        eprintln!(
            "xtask: fuzz: cargo-fuzz is not installed; install it with \
             `cargo install cargo-fuzz --locked --version {CARGO_FUZZ_VERSION}`"
        );
        return ExitCode::FAILURE;
    }
    let fuzz_dir = workspace_root().join("fuzz");
    // Each sanitizer builds everything differently: one folder each, so that switching does
    // not rebuild the other's artefacts.
    let target = match options.sanitizer.as_str() {
        "none" => target_dir().join("fuzz"),
        other => target_dir().join(format!("fuzz-{other}")),
    };
    let started = Instant::now();

    // One build of every target shares the dependencies; a single named target builds alone.
    let mut build = cargo_fuzz(&fuzz_dir, &target, &options.sanitizer, "build");
    if options.targets.len() == 1 {
        build.arg(&options.targets[0]);
    }
    eprintln!("xtask: fuzz: building the targets in {}", target.display());
    match build.status() {
        Ok(status) if status.success() => {}
        Ok(_) => {
            eprintln!("xtask: fuzz: the fuzz targets did not build");
            return ExitCode::FAILURE;
        }
        Err(error) => {
            eprintln!("xtask: fuzz: could not start cargo fuzz: {error}");
            return ExitCode::FAILURE;
        }
    }
    eprintln!(
        "xtask: fuzz: built in {:.0} s; running each target for {} s",
        started.elapsed().as_secs_f64(),
        options.secs
    );

    let outcomes: Vec<Outcome> = options
        .targets
        .iter()
        .map(|name| run_target(&fuzz_dir, &target, name, &options))
        .collect();
    for outcome in &outcomes {
        let verdict = if outcome.passed { "ok" } else { "FAILED" };
        eprintln!(
            "xtask: fuzz: {:<15} {verdict:<6} {}",
            outcome.target, outcome.summary
        );
    }
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| !o.passed).collect();
    if failed.is_empty() {
        eprintln!(
            "xtask: fuzz: passed in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        return ExitCode::SUCCESS;
    }
    for outcome in failed {
        match &outcome.artifact {
            Some(artifact) => eprintln!(
                "xtask: fuzz: {} failed on the input in {artifact}; reproduce it with \
                 `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --target-dir {} -s {} {} {artifact}`, \
                 then make it a regression test (docs/fuzzing.md)",
                outcome.target,
                target.display(),
                options.sanitizer,
                outcome.target
            ),
            None => eprintln!(
                "xtask: fuzz: {} failed without saving an input; its output is above",
                outcome.target
            ),
        }
    }
    ExitCode::FAILURE
}

/// `cargo fuzz <command>` with the fuzz folder, target folder and sanitizer set.
fn cargo_fuzz(fuzz_dir: &Path, target: &Path, sanitizer: &str, command: &str) -> Command {
    let mut cargo_fuzz = Command::new(cargo());
    cargo_fuzz
        .arg("fuzz")
        .arg(command)
        .arg("--fuzz-dir")
        .arg(fuzz_dir)
        .arg("--target-dir")
        .arg(target)
        .args(["--sanitizer", sanitizer])
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(workspace_root());
    cargo_fuzz
}

/// Runs one target for the given time, starting from its committed seeds and the corpus
/// earlier runs grew (kept under the target folder, not in the repository).
fn run_target(fuzz_dir: &Path, target: &Path, name: &str, options: &Options) -> Outcome {
    let grown = target.join("corpus").join(name);
    if let Err(error) = std::fs::create_dir_all(&grown) {
        return Outcome {
            target: name.to_owned(),
            passed: false,
            summary: format!("cannot create {}: {error}", grown.display()),
            artifact: None,
        };
    }
    let mut command = cargo_fuzz(fuzz_dir, target, &options.sanitizer, "run");
    command.arg(name).arg(&grown);
    let seeds = fuzz_dir.join("corpus").join(name);
    if seeds.is_dir() {
        command.arg(&seeds);
    }
    command.arg("--").args([
        format!("-max_total_time={}", options.secs),
        format!("-timeout={INPUT_TIMEOUT_SECS}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        "-print_final_stats=1".to_owned(),
    ]);
    let dictionary = fuzz_dir.join("dicts").join(format!("{name}.dict"));
    if dictionary.is_file() {
        command.arg(format!("-dict={}", dictionary.display()));
    }
    eprintln!("xtask: fuzz: {name}: {} s", options.secs);
    let lines = match output_lines(command, options.verbose) {
        Ok(lines) => lines,
        Err((problem, lines)) => {
            if !options.verbose {
                print_tail(&lines);
            }
            let artifact = artifact(&lines);
            return Outcome {
                target: name.to_owned(),
                passed: false,
                summary: problem,
                artifact,
            };
        }
    };
    Outcome {
        target: name.to_owned(),
        passed: true,
        summary: summary(&lines),
        artifact: None,
    }
}

/// Runs the command and collects its stderr (libFuzzer's output) line by line, echoing it
/// when verbose. `Err` carries the lines too, when the command failed.
fn output_lines(mut command: Command, verbose: bool) -> Result<Vec<String>, (String, Vec<String>)> {
    let mut child = match command.stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(error) => return Err((format!("could not start cargo fuzz: {error}"), Vec::new())),
    };
    let mut lines = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if verbose {
                eprintln!("{text}");
            }
            lines.push(text);
            line.clear();
        }
    }
    match child.wait() {
        Ok(status) if status.success() => Ok(lines),
        Ok(status) => Err((
            format!("{}; {}", describe_exit(status), summary(&lines)),
            lines,
        )),
        Err(error) => Err((format!("could not wait for cargo fuzz: {error}"), lines)),
    }
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("libFuzzer exited with {code}"),
        None => "libFuzzer was killed by a signal".to_owned(),
    }
}

/// Prints what explains a failure: the panic message or libFuzzer's error report, then the
/// end of the output (cut to a line's first 300 characters: cargo-fuzz prints the input too).
fn print_tail(lines: &[String]) {
    let cause = lines.iter().position(|line| {
        line.contains("panicked at")
            || line.contains("==ERROR")
            || line.contains("ERROR: libFuzzer")
    });
    let tail = lines.len().saturating_sub(FAILURE_LINES);
    if let Some(cause) = cause.filter(|cause| *cause < tail) {
        for line in lines.iter().skip(cause).take(8) {
            eprintln!("{}", cut(line));
        }
        eprintln!("[…]");
    }
    for line in &lines[tail..] {
        eprintln!("{}", cut(line));
    }
}

fn cut(line: &str) -> &str {
    line.char_indices()
        .nth(300)
        .map_or(line, |(at, _)| &line[..at])
}

/// The input libFuzzer saved for a failure, from its "Test unit written to PATH" line.
fn artifact(lines: &[String]) -> Option<String> {
    lines.iter().rev().find_map(|line| {
        line.split_once("Test unit written to ")
            .map(|(_, path)| path.trim().to_owned())
    })
}

/// One line about a run: executions, their rate, coverage and corpus, from libFuzzer's last
/// status line and final statistics.
fn summary(lines: &[String]) -> String {
    let stat = |name: &str| {
        lines.iter().rev().find_map(|line| {
            line.strip_prefix(name)
                .map(|value| value.trim_start_matches(':').trim().to_owned())
        })
    };
    let status = lines
        .iter()
        .rev()
        .find(|line| line.starts_with('#') && line.contains("cov:"))
        .map(|line| field_pairs(line, &["cov:", "ft:", "corp:"]))
        .unwrap_or_default();
    format!(
        "{} runs, {} exec/s, {status}, peak RSS {} MB",
        stat("stat::number_of_executed_units").unwrap_or_else(|| "?".to_owned()),
        stat("stat::average_exec_per_sec").unwrap_or_else(|| "?".to_owned()),
        stat("stat::peak_rss_mb").unwrap_or_else(|| "?".to_owned()),
    )
}

/// `cov: 123 ft: 456 corp: 7/89b` from a libFuzzer status line.
fn field_pairs(line: &str, names: &[&str]) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    names
        .iter()
        .filter_map(|name| {
            let at = words.iter().position(|word| word == name)?;
            Some(format!("{name} {}", words.get(at + 1)?))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn cargo_fuzz_available() -> bool {
    Command::new(cargo())
        .args(["fuzz", "--version"])
        .current_dir(workspace_root())
        .output()
        .is_ok_and(|output| output.status.success())
}
