//! `clarion-bench`: Clarion's benchmark, run by `cargo xtask bench` with release binaries.
//!
//! It starts `clarion-mocks` (the mock providers, in their own process) and, for each database,
//! a fresh `clarion-server`, and measures: startup time and idle memory; device registration
//! and single sends by 64 concurrent clients; the fan-out of one broadcast to N APNs devices
//! loaded through the bulk route, with the server's peak memory; and the ceiling, the same
//! APNs mock driven by a bare HTTP/2 client at the same concurrency. It prints a table, checks
//! the targets of issue 6 and writes every figure to a JSON file.

mod api;
mod fanout;
mod report;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::Value;

use crate::server::{Mocks, ServerSettings};

const USAGE: &str = "\
Usage: clarion-bench --bin-dir DIR [--devices N] [--db sqlite|postgres|both] [--out FILE]
                     [--api-requests N] [--postgres-url URL] [--work-dir DIR]
                     [--delivery-concurrency N]

  --bin-dir       the folder holding release builds of clarion-server and clarion-mocks
  --devices       devices loaded for the broadcast (default 100000)
  --db            which stores to measure (default both)
  --out           the JSON file of results (default results.json in the work folder)
  --api-requests  requests of each API measurement (default 10000)
  --postgres-url  the PostgreSQL server (default $CLARION_TEST_POSTGRES_URL or
                  postgres://postgres@127.0.0.1:5432/test); each run makes a schema of its own
  --work-dir      where databases, configuration and logs go (default a fresh folder under
                  the system's temporary folder)
  --delivery-concurrency
                  the server's worker.delivery_concurrency, and the ceiling's requests in
                  flight (default the server's default, 100)
";

/// Which stores to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Db {
    Sqlite,
    Postgres,
}

#[derive(Debug)]
struct Args {
    bin_dir: PathBuf,
    devices: usize,
    dbs: Vec<Db>,
    out: Option<PathBuf>,
    api_requests: usize,
    postgres_url: String,
    work_dir: Option<PathBuf>,
    delivery_concurrency: Option<usize>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bin_dir: PathBuf::new(),
        devices: 100_000,
        dbs: vec![Db::Sqlite, Db::Postgres],
        out: None,
        api_requests: 10_000,
        postgres_url: std::env::var("CLARION_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        work_dir: None,
        delivery_concurrency: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        if flag == "-h" || flag == "--help" {
            print!("{USAGE}");
            std::process::exit(0);
        }
        let value = given
            .next()
            .with_context(|| format!("{flag} needs a value\n\n{USAGE}"))?;
        match flag.as_str() {
            "--bin-dir" => args.bin_dir = PathBuf::from(value),
            "--devices" => args.devices = value.replace('_', "").parse().context("--devices")?,
            "--db" => {
                args.dbs = match value.as_str() {
                    "sqlite" => vec![Db::Sqlite],
                    "postgres" => vec![Db::Postgres],
                    "both" => vec![Db::Sqlite, Db::Postgres],
                    other => bail!("--db takes sqlite, postgres or both, not {other:?}"),
                }
            }
            "--out" => args.out = Some(PathBuf::from(value)),
            "--api-requests" => args.api_requests = value.parse().context("--api-requests")?,
            "--postgres-url" => args.postgres_url = value,
            "--work-dir" => args.work_dir = Some(PathBuf::from(value)),
            "--delivery-concurrency" => {
                let n: usize = value.parse().context("--delivery-concurrency")?;
                if n == 0 {
                    bail!("--delivery-concurrency must be at least 1");
                }
                args.delivery_concurrency = Some(n);
            }
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    if args.bin_dir.as_os_str().is_empty() {
        bail!("--bin-dir is required\n\n{USAGE}");
    }
    Ok(args)
}

/// Every figure of one store.
#[derive(Debug, Serialize)]
pub struct DbResults {
    pub db: Db,
    pub startup: server::Startup,
    pub registration: api::LatencyStats,
    pub single_send: api::LatencyStats,
    pub fanout: fanout::FanoutResult,
    pub ceiling: fanout::CeilingResult,
    /// Fan-out deliveries per second over the ceiling's requests per second.
    pub fanout_to_ceiling: f64,
}

/// A store whose run failed.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub db: Db,
    pub error: String,
}

/// Everything the run measured, as written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Results {
    pub started_at_unix: u64,
    pub machine: report::Machine,
    pub devices: usize,
    pub platform: &'static str,
    pub settings: ServerSettings,
    pub api_clients: usize,
    pub api_requests: usize,
    pub runs: Vec<DbResults>,
    /// Stores whose run failed, with the reason.
    pub failures: Vec<Failure>,
    pub targets: Vec<report::Target>,
}

#[tokio::main]
async fn main() -> ExitCode {
    clarion_testkit::install_default_crypto_provider();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("clarion-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let work = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("clarion-bench-{}", std::process::id())),
    };
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("failed to empty {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)
        .with_context(|| format!("failed to create {}", work.display()))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| work.join("results.json"));
    eprintln!("clarion-bench: working in {}", work.display());

    let mocks = Mocks::start(&args.bin_dir, &work).await?;
    let mut settings = ServerSettings::default();
    if let Some(n) = args.delivery_concurrency {
        settings.worker_delivery_concurrency = n;
    }
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &db in &args.dbs {
        eprintln!("clarion-bench: --- {db:?} ---");
        // A store whose run fails is reported as such; the other store's figures still count.
        match run_one(&args, &mocks, &settings, &work, db).await {
            Ok(result) => runs.push(result),
            Err(error) => {
                eprintln!("clarion-bench: the {db:?} run failed: {error:#}");
                failures.push(Failure {
                    db,
                    error: format!("{error:#}"),
                });
            }
        }
    }
    mocks.stop().await;

    let targets = report::targets(&runs, args.devices);
    let results = Results {
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: report::Machine::read(),
        devices: args.devices,
        platform: "apns",
        settings,
        api_clients: api::CLIENTS,
        api_requests: args.api_requests,
        runs,
        failures,
        targets,
    };
    report::print(&results);
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).ok();
    }
    std::fs::write(&out, serde_json::to_vec_pretty(&results)?)
        .with_context(|| format!("failed to write {}", out.display()))?;
    println!("\nresults: {}", out.display());
    if let Some(failure) = results.failures.first() {
        bail!("the {:?} run failed: {}", failure.db, failure.error);
    }
    Ok(())
}

async fn run_one(
    args: &Args,
    mocks: &Mocks,
    settings: &ServerSettings,
    work: &std::path::Path,
    db: Db,
) -> anyhow::Result<DbResults> {
    let database = server::Database::create(db, work, &args.postgres_url).await?;
    let server = server::Server::start(&args.bin_dir, work, mocks, settings, &database).await?;
    let outcome = async {
        let startup = server.startup.clone();
        eprintln!(
            "clarion-bench: started in {:.0} ms, idle RSS {:.1} MB",
            startup.startup_ms, startup.idle_rss_mb
        );
        let (registration, single_send) = api::measure(&server, args.api_requests).await?;
        eprintln!(
            "clarion-bench: registration p99 {:.1} ms, send p99 {:.1} ms",
            registration.p99_ms, single_send.p99_ms
        );
        let fanout = fanout::fan_out(&server, mocks, &database, args.devices).await?;
        eprintln!(
            "clarion-bench: fan-out {:.0} deliveries/s, peak RSS {:.1} MB",
            fanout.deliveries_per_sec, fanout.peak_rss_mb
        );
        let ceiling =
            fanout::ceiling(mocks, args.devices, settings.effective_concurrency()).await?;
        eprintln!(
            "clarion-bench: ceiling {:.0} requests/s",
            ceiling.requests_per_sec
        );
        let ratio = if ceiling.requests_per_sec > 0.0 {
            fanout.deliveries_per_sec / ceiling.requests_per_sec
        } else {
            0.0
        };
        anyhow::Ok(DbResults {
            db,
            startup,
            registration,
            single_send,
            fanout,
            ceiling,
            fanout_to_ceiling: ratio,
        })
    }
    .await;
    server.stop().await;
    database.drop_schema().await;
    outcome
}

/// Waits until `check` returns `Some`, polling every `every`, for at most `deadline`.
pub async fn poll<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= until {
            bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Reads a `kB` line such as `VmHWM` from `/proc/<pid>/status`, in megabytes (10^6 bytes).
pub fn proc_status_mb(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0 / 1_000_000.0)
}

/// A JSON value's field as a string, for messages.
pub fn field<'a>(value: &'a Value, name: &str) -> &'a str {
    value.get(name).and_then(Value::as_str).unwrap_or_default()
}
