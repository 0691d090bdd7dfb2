//! `clarion-bench`: Clarion's benchmark, run by `cargo xtask bench` with release binaries.
//!
//! It starts `clarion-mocks` (the mock providers, in their own process) and, for each database,
//! a fresh `clarion-server`, and measures: startup time and idle memory; device registration
//! and single sends by 64 concurrent clients; the bulk message endpoint; then, at each provider
//! round trip asked for (the mocks' answer delay, set per run): the fan-out of one broadcast
//! to N APNs, FCM and Web Push devices, each against its ceiling (the same mock driven by a
//! bare HTTP/2 client with Clarion's pool shape); single sends through the APNs mock; and
//! queued one-device messages, their acceptance and their drain by the worker. It prints a
//! table, checks the targets of issues 6 and 13 and writes every figure to a JSON file.

mod api;
mod bare;
mod fanout;
mod report;
mod server;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::server::{Mocks, MocksOptions, ServerSettings};

const USAGE: &str = "\
Usage: clarion-bench --bin-dir DIR [options]

  --bin-dir             the folder holding release builds of clarion-server and clarion-mocks
  --devices N           APNs and FCM devices loaded for the broadcasts (default 100000)
  --webpush-devices N   Web Push subscriptions loaded for the broadcast, spread over the
                        push-service origins (default --devices, at most 20000)
  --webpush-origins N   push services (MockWebPush instances) in clarion-mocks (default 10)
  --platforms LIST      which fan-outs to measure, of apns,fcm,webpush (default all three)
  --db sqlite|postgres|both
                        which stores to measure (default both)
  --provider-rtt-ms N   the mocks' answer delay in ms; repeat it or give a list (0,50) to
                        measure at each (default 0 and 50)
  --provider-jitter-ms J
                        lengthens each answer by a random share of J ms (default 0)
  --provider-streams N  the HTTP/2 stream limit the mocks advertise (default 1000, as APNs)
  --connections N       the pool's HTTP/2 connections per application and provider (per
                        origin for Web Push), for the server and the ceiling (default 4)
  --max-in-flight N     the pool's requests in flight per application and provider, for
                        the server and the ceiling (default 4000)
  --delivery-concurrency N
                        the server's worker.delivery_concurrency (default: the server's)
  --poll-interval-secs N
                        the server's worker.poll_interval_secs (default 1)
  --api-requests N      requests of each API latency measurement (default 10000)
  --queued N            one-device messages queued and drained at each round trip
                        (default 100000)
  --bulk-messages N     messages sent through the bulk endpoint, 1,000 a request (default
                        100000)
  --out FILE            the JSON file of results (default results.json in the work folder)
  --postgres-url URL    the PostgreSQL server (default $CLARION_TEST_POSTGRES_URL or
                        postgres://postgres@127.0.0.1:5432/test); each run makes a schema of
                        its own
  --work-dir DIR        where databases, configuration and logs go (default a fresh folder
                        under the system's temporary folder)
";

/// Which stores to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Db {
    Sqlite,
    Postgres,
}

/// A push provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Apns,
    Fcm,
    Webpush,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Apns => "apns",
            Platform::Fcm => "fcm",
            Platform::Webpush => "webpush",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Platform::Apns => "APNs",
            Platform::Fcm => "FCM",
            Platform::Webpush => "Web Push",
        }
    }
}

#[derive(Debug)]
struct Args {
    bin_dir: PathBuf,
    devices: usize,
    webpush_devices: Option<usize>,
    webpush_origins: usize,
    platforms: Vec<Platform>,
    dbs: Vec<Db>,
    provider_rtt_ms: Vec<u64>,
    provider_jitter_ms: u64,
    provider_streams: u32,
    connections: usize,
    max_in_flight: usize,
    delivery_concurrency: Option<usize>,
    poll_interval_secs: u64,
    api_requests: usize,
    queued: usize,
    bulk_messages: usize,
    out: Option<PathBuf>,
    postgres_url: String,
    work_dir: Option<PathBuf>,
}

/// A count from the command line: digits, `_` allowed as a separator.
fn number<T: std::str::FromStr>(flag: &str, value: &str) -> anyhow::Result<T> {
    value
        .replace('_', "")
        .parse()
        .map_err(|_| anyhow::anyhow!("{flag} takes a whole number, not {value:?}"))
}

fn at_least_one(flag: &str, value: &str) -> anyhow::Result<usize> {
    let n: usize = number(flag, value)?;
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(n)
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        bin_dir: PathBuf::new(),
        devices: 100_000,
        webpush_devices: None,
        webpush_origins: 10,
        platforms: vec![Platform::Apns, Platform::Fcm, Platform::Webpush],
        dbs: vec![Db::Sqlite, Db::Postgres],
        provider_rtt_ms: Vec::new(),
        provider_jitter_ms: 0,
        provider_streams: 1000,
        connections: 4,
        max_in_flight: 4000,
        delivery_concurrency: None,
        poll_interval_secs: 1,
        api_requests: 10_000,
        queued: 100_000,
        bulk_messages: 100_000,
        out: None,
        postgres_url: std::env::var("CLARION_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
        work_dir: None,
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
        let v = value.as_str();
        match flag.as_str() {
            "--bin-dir" => args.bin_dir = PathBuf::from(v),
            "--devices" => args.devices = number(&flag, v)?,
            "--webpush-devices" => args.webpush_devices = Some(number(&flag, v)?),
            "--webpush-origins" => args.webpush_origins = at_least_one(&flag, v)?,
            "--platforms" => {
                args.platforms = v
                    .split(',')
                    .map(|p| match p.trim() {
                        "apns" => Ok(Platform::Apns),
                        "fcm" => Ok(Platform::Fcm),
                        "webpush" => Ok(Platform::Webpush),
                        other => bail!("--platforms takes apns, fcm and webpush, not {other:?}"),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--db" => {
                args.dbs = match v {
                    "sqlite" => vec![Db::Sqlite],
                    "postgres" => vec![Db::Postgres],
                    "both" => vec![Db::Sqlite, Db::Postgres],
                    other => bail!("--db takes sqlite, postgres or both, not {other:?}"),
                }
            }
            "--provider-rtt-ms" => {
                for part in v.split(',') {
                    let ms: u64 = number(&flag, part.trim())?;
                    if !args.provider_rtt_ms.contains(&ms) {
                        args.provider_rtt_ms.push(ms);
                    }
                }
            }
            "--provider-jitter-ms" => args.provider_jitter_ms = number(&flag, v)?,
            "--provider-streams" => {
                args.provider_streams = u32::try_from(at_least_one(&flag, v)?)
                    .context("--provider-streams is too large")?;
            }
            "--connections" => args.connections = at_least_one(&flag, v)?,
            "--max-in-flight" => args.max_in_flight = at_least_one(&flag, v)?,
            "--delivery-concurrency" => {
                args.delivery_concurrency = Some(at_least_one(&flag, v)?);
            }
            "--poll-interval-secs" => args.poll_interval_secs = number(&flag, v)?,
            "--api-requests" => args.api_requests = at_least_one(&flag, v)?,
            "--queued" => args.queued = number(&flag, v)?,
            "--bulk-messages" => args.bulk_messages = number(&flag, v)?,
            "--out" => args.out = Some(PathBuf::from(v)),
            "--postgres-url" => args.postgres_url = value,
            "--work-dir" => args.work_dir = Some(PathBuf::from(v)),
            other => bail!("unknown option {other}\n\n{USAGE}"),
        }
    }
    if args.bin_dir.as_os_str().is_empty() {
        bail!("--bin-dir is required\n\n{USAGE}");
    }
    if args.provider_rtt_ms.is_empty() {
        args.provider_rtt_ms = vec![0, 50];
    }
    Ok(args)
}

/// Fan-out as a share of the ceiling at the same round trip.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub platform: Platform,
    pub deliveries_per_sec: f64,
    pub ceiling_requests_per_sec: f64,
    pub fanout_to_ceiling: f64,
}

/// Everything measured at one provider round trip.
#[derive(Debug, Default, Serialize)]
pub struct AtDelay {
    pub provider_rtt_ms: u64,
    pub provider_jitter_ms: u64,
    pub fanouts: Vec<fanout::FanoutResult>,
    pub ceilings: Vec<bare::CeilingResult>,
    pub shares: Vec<Share>,
    /// `dispatch: now` through the APNs mock.
    pub provider_send: Option<api::ProviderSend>,
    /// `dispatch: queue`, and the worker's drain of those messages.
    pub queue: Option<api::QueueResult>,
}

impl AtDelay {
    pub fn share(&self, platform: Platform) -> Option<&Share> {
        self.shares.iter().find(|s| s.platform == platform)
    }

    pub fn fanout(&self, platform: Platform) -> Option<&fanout::FanoutResult> {
        self.fanouts.iter().find(|f| f.platform == platform)
    }
}

/// Every figure of one store.
#[derive(Debug, Serialize)]
pub struct DbResults {
    pub db: Db,
    pub startup: server::Startup,
    pub registration: Option<api::LatencyStats>,
    /// `dispatch: now` through the debug sender.
    pub single_send: Option<api::LatencyStats>,
    pub bulk: Option<api::BulkResult>,
    pub loads: Vec<fanout::LoadResult>,
    pub at_delay: Vec<AtDelay>,
    /// At each round trip, the drain of a backlog of `--queued` messages queued with the
    /// worker off, by a server started again with it on.
    pub backlogs: Vec<api::BacklogResult>,
    /// The server's peak resident memory (`VmHWM`) over its whole run.
    pub peak_rss_mb: f64,
    /// Measurements that failed, with the reason; the others still count.
    pub problems: Vec<String>,
}

impl DbResults {
    pub fn at(&self, provider_rtt_ms: u64) -> Option<&AtDelay> {
        self.at_delay
            .iter()
            .find(|d| d.provider_rtt_ms == provider_rtt_ms)
    }

    pub fn backlog(&self, provider_rtt_ms: u64) -> Option<&api::BacklogResult> {
        self.backlogs
            .iter()
            .find(|b| b.provider_rtt_ms == provider_rtt_ms)
    }
}

/// A store whose run failed.
#[derive(Debug, Serialize)]
pub struct Failure {
    pub db: Db,
    pub error: String,
}

/// The sizes of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Sizes {
    pub devices: usize,
    pub webpush_devices: usize,
    pub webpush_origins: usize,
    pub platforms: Vec<Platform>,
    pub provider_rtt_ms: Vec<u64>,
    pub provider_jitter_ms: u64,
    pub provider_streams: u32,
    pub api_clients: usize,
    pub api_requests: usize,
    pub queued: usize,
    pub single_send_devices: usize,
    pub bulk_messages: usize,
}

/// Everything the run measured, as written to the JSON file.
#[derive(Debug, Serialize)]
pub struct Results {
    pub started_at_unix: u64,
    pub machine: report::Machine,
    pub sizes: Sizes,
    pub settings: ServerSettings,
    pub runs: Vec<DbResults>,
    /// Stores whose run failed, with the reason.
    pub failures: Vec<Failure>,
    pub targets: Vec<report::Target>,
}

/// Web Push subscriptions at most, unless `--webpush-devices` asks for more: each is a key pair
/// in the mocks and an encryption per send.
const DEFAULT_WEBPUSH_DEVICES: usize = 20_000;

/// APNs devices that single and queued sends go round.
const SINGLE_SEND_DEVICES: usize = 1000;

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

    let webpush_devices = if args.platforms.contains(&Platform::Webpush) {
        args.webpush_devices
            .unwrap_or_else(|| args.devices.min(DEFAULT_WEBPUSH_DEVICES))
    } else {
        0
    };
    let mocks = Mocks::start(
        &args.bin_dir,
        &work,
        MocksOptions {
            subscriptions: webpush_devices,
            webpush_origins: args.webpush_origins,
            streams: args.provider_streams,
        },
    )
    .await?;
    let mut settings = ServerSettings {
        worker_delivery_concurrency: args.delivery_concurrency,
        worker_poll_interval_secs: args.poll_interval_secs,
        connections: args.connections,
        max_in_flight: args.max_in_flight,
        ..ServerSettings::default()
    };
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for &db in &args.dbs {
        eprintln!("clarion-bench: --- {db:?} ---");
        // A store whose run fails is reported as such; the other store's figures still count.
        match run_one(&args, &mocks, &mut settings, &work, db).await {
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

    let sizes = Sizes {
        devices: args.devices,
        webpush_devices,
        webpush_origins: args.webpush_origins,
        platforms: args.platforms.clone(),
        provider_rtt_ms: args.provider_rtt_ms.clone(),
        provider_jitter_ms: args.provider_jitter_ms,
        provider_streams: args.provider_streams,
        api_clients: api::CLIENTS,
        api_requests: args.api_requests,
        queued: args.queued,
        single_send_devices: SINGLE_SEND_DEVICES,
        bulk_messages: args.bulk_messages,
    };
    let targets = report::targets(&runs, &sizes);
    let results = Results {
        started_at_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: report::Machine::read(),
        sizes,
        settings,
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
    if let Some(run) = results.runs.iter().find(|r| !r.problems.is_empty()) {
        bail!(
            "{} measurement(s) of the {:?} run failed, the first: {}",
            run.problems.len(),
            run.db,
            run.problems.first().map_or("", String::as_str)
        );
    }
    Ok(())
}

/// Runs one measurement; a failure is logged and kept in `problems` instead of ending the run.
async fn measure<T>(
    problems: &mut Vec<String>,
    what: &str,
    step: impl std::future::Future<Output = anyhow::Result<T>>,
) -> Option<T> {
    match step.await {
        Ok(value) => Some(value),
        Err(error) => {
            let problem = format!("{what}: {error:#}");
            eprintln!("clarion-bench: FAILED {problem}");
            problems.push(problem);
            None
        }
    }
}

async fn run_one(
    args: &Args,
    mocks: &Mocks,
    settings: &mut ServerSettings,
    work: &std::path::Path,
    db: Db,
) -> anyhow::Result<DbResults> {
    let database = server::Database::create(db, work, &args.postgres_url).await?;
    mocks.set_delay(0, 0).await?;
    let server = match server::Server::start_with_pool_fallback(
        &args.bin_dir,
        work,
        mocks,
        settings,
        &database,
    )
    .await
    {
        Ok(server) => server,
        Err(error) => {
            database.drop_schema().await;
            return Err(error);
        }
    };
    let outcome = measure_server(args, mocks, settings, &server, &database, db).await;
    let admin_key = server.admin_key.clone();
    server.stop().await;
    let outcome = match outcome {
        Ok((mut results, Some(devices))) if args.queued > 0 => {
            for &rtt in &args.provider_rtt_ms {
                let what = format!("backlog drain at {rtt} ms");
                let backlog = backlog(
                    args, mocks, settings, work, &database, &admin_key, &devices, rtt,
                );
                if let Some(backlog) = measure(&mut results.problems, &what, backlog).await {
                    eprintln!(
                        "clarion-bench: backlog of {} queued at {:.0}/s with the worker off, \
                         drained in {:.1} s ({:.0}/s)",
                        backlog.messages,
                        backlog.queued.requests_per_sec,
                        backlog.drain_seconds,
                        backlog.drained_per_sec
                    );
                    results.backlogs.push(backlog);
                }
            }
            Ok(results)
        }
        other => other.map(|(results, _)| results),
    };
    mocks.set_delay(0, 0).await?;
    database.drop_schema().await;
    outcome
}

/// Queues `--queued` one-device messages with a server whose worker is off, then starts a
/// server with its worker on and times the drain of that backlog through the APNs mock at
/// `rtt` ms.
#[allow(clippy::too_many_arguments)]
async fn backlog(
    args: &Args,
    mocks: &Mocks,
    settings: &ServerSettings,
    work: &std::path::Path,
    database: &server::Database,
    admin_key: &str,
    devices: &[i64],
    rtt: u64,
) -> anyhow::Result<api::BacklogResult> {
    mocks.set_delay(rtt, args.provider_jitter_ms).await?;
    let idle_settings = ServerSettings {
        worker_enabled: false,
        ..settings.clone()
    };
    let idle = server::Server::restart(
        &args.bin_dir,
        work,
        mocks,
        &idle_settings,
        database,
        admin_key,
    )
    .await?;
    let queued = api::queue_backlog(&idle, devices, args.queued).await;
    idle.stop().await;
    let queued = queued?;
    let before = mocks.counts(Platform::Apns).await?;
    let started = std::time::Instant::now();
    let draining =
        server::Server::restart(&args.bin_dir, work, mocks, settings, database, admin_key).await?;
    let drained =
        api::drain_backlog(started, &draining, mocks, database, queued, rtt, before).await;
    draining.stop().await;
    drained
}

async fn measure_server(
    args: &Args,
    mocks: &Mocks,
    settings: &ServerSettings,
    server: &server::Server,
    database: &server::Database,
    db: Db,
) -> anyhow::Result<(DbResults, Option<Vec<i64>>)> {
    let mut problems = Vec::new();
    let startup = server.startup.clone();
    eprintln!(
        "clarion-bench: started in {:.0} ms, idle RSS {:.1} MB",
        startup.startup_ms, startup.idle_rss_mb
    );
    let (registration, single_send) = match measure(
        &mut problems,
        "registration and single send",
        api::measure(server, args.api_requests),
    )
    .await
    {
        Some((registration, send)) => {
            eprintln!(
                "clarion-bench: registration p99 {:.1} ms, send (debug) {:.0}/s p99 {:.1} ms",
                registration.p99_ms, send.requests_per_sec, send.p99_ms
            );
            (Some(registration), Some(send))
        }
        None => (None, None),
    };

    let bulk = if args.bulk_messages > 0 {
        let bulk = measure(
            &mut problems,
            "bulk messages",
            api::bulk(server, args.bulk_messages),
        )
        .await;
        match bulk.as_ref().and_then(|b| b.skipped.as_ref()) {
            Some(note) => eprintln!("clarion-bench: bulk messages skipped: {note}"),
            None => {
                if let Some(b) = &bulk {
                    eprintln!(
                        "clarion-bench: bulk {:.0} messages/s accepted ({} refused)",
                        b.accepted_per_sec, b.refused
                    );
                }
                // The worker sends them (debug sender) before the next measurement starts.
                measure(
                    &mut problems,
                    "waiting for the bulk messages to be sent",
                    api::settle(database, server::apps::DEBUG, Duration::from_secs(600)),
                )
                .await;
            }
        }
        bulk
    } else {
        None
    };

    let mut loads = Vec::new();
    let mut loaded = Vec::new();
    for &platform in &args.platforms {
        let count = match platform {
            Platform::Webpush => mocks.description.webpush.subscriptions.len(),
            Platform::Apns | Platform::Fcm => args.devices,
        };
        if count == 0 {
            continue;
        }
        let what = format!("loading {count} {} devices", platform.title());
        if let Some(load) = measure(
            &mut problems,
            &what,
            fanout::load(server, mocks, platform, count),
        )
        .await
        {
            eprintln!(
                "clarion-bench: loaded {count} {} devices in {:.1} s",
                platform.title(),
                load.seconds
            );
            loads.push(load);
            loaded.push((platform, count));
        }
    }
    let single_devices = measure(
        &mut problems,
        "registering the single-send devices",
        api::single_devices(server, SINGLE_SEND_DEVICES),
    )
    .await;

    let shape = bare::Shape {
        connections: settings.connections,
        max_in_flight: settings.max_in_flight,
    };
    let mut at_delay = Vec::new();
    for &rtt in &args.provider_rtt_ms {
        eprintln!(
            "clarion-bench: provider round trip {rtt} ms (jitter {} ms)",
            args.provider_jitter_ms
        );
        mocks.set_delay(rtt, args.provider_jitter_ms).await?;
        let mut here = AtDelay {
            provider_rtt_ms: rtt,
            provider_jitter_ms: args.provider_jitter_ms,
            ..AtDelay::default()
        };
        for &(platform, count) in &loaded {
            let what = format!("{} fan-out at {rtt} ms", platform.title());
            let Some(fanout) = measure(
                &mut problems,
                &what,
                fanout::broadcast(server, mocks, database, platform, count, rtt),
            )
            .await
            else {
                continue;
            };
            let what = format!("{} ceiling at {rtt} ms", platform.title());
            let ceiling = match platform {
                Platform::Apns => {
                    measure(&mut problems, &what, bare::apns(mocks, shape, count)).await
                }
                Platform::Fcm => {
                    measure(&mut problems, &what, bare::fcm(mocks, shape, count)).await
                }
                Platform::Webpush => {
                    measure(&mut problems, &what, bare::webpush(mocks, shape, count)).await
                }
            };
            let share = ceiling.as_ref().map(|c| Share {
                platform,
                deliveries_per_sec: fanout.deliveries_per_sec,
                ceiling_requests_per_sec: c.requests_per_sec,
                fanout_to_ceiling: fanout.deliveries_per_sec / c.requests_per_sec.max(f64::EPSILON),
            });
            eprintln!(
                "clarion-bench: {} fan-out {:.0} deliveries/s, ceiling {}, peak RSS {:.1} MB",
                platform.title(),
                fanout.deliveries_per_sec,
                share.as_ref().map_or("failed".to_owned(), |s| format!(
                    "{:.0}/s ({:.0}%)",
                    s.ceiling_requests_per_sec,
                    s.fanout_to_ceiling * 100.0
                )),
                fanout.peak_rss_mb
            );
            here.fanouts.push(fanout);
            here.ceilings.extend(ceiling);
            here.shares.extend(share);
        }
        if let Some(devices) = &single_devices {
            let what = format!("single send through APNs at {rtt} ms");
            here.provider_send = measure(
                &mut problems,
                &what,
                api::provider_send(server, devices, args.api_requests, rtt),
            )
            .await;
            if let Some(send) = &here.provider_send {
                eprintln!(
                    "clarion-bench: send (APNs) {:.0}/s, p50 {:.1} ms ({:+.1} ms over the delay)",
                    send.stats.requests_per_sec, send.stats.p50_ms, send.added_latency_p50_ms
                );
            }
            if args.queued > 0 {
                let what = format!("queue and drain at {rtt} ms");
                here.queue = measure(
                    &mut problems,
                    &what,
                    api::queue_and_drain(server, mocks, database, devices, args.queued, rtt),
                )
                .await;
                if let Some(queue) = &here.queue {
                    eprintln!(
                        "clarion-bench: queued {:.0}/s, {} drained in {:.1} s ({:.0}/s)",
                        queue.accepted_per_sec,
                        queue.messages,
                        queue.drain_seconds,
                        queue.drained_per_sec
                    );
                }
            }
        }
        at_delay.push(here);
    }
    mocks.set_delay(0, 0).await?;
    let results = DbResults {
        db,
        startup,
        registration,
        single_send,
        bulk,
        loads,
        at_delay,
        backlogs: Vec::new(),
        peak_rss_mb: proc_status_mb(server.pid, "VmHWM"),
        problems,
    };
    Ok((results, single_devices))
}

/// `count` events in `seconds`, per second.
pub fn per_sec(count: usize, seconds: f64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let count = count as f64;
    count / seconds.max(f64::EPSILON)
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
