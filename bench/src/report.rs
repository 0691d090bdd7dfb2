//! The table on stdout, the targets of issue 6 with pass or miss, and the machine's description.

use serde::Serialize;

use crate::{Db, DbResults, Results};

/// The machine the figures come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_mb: f64,
    pub kernel: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v)
            })
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let memory_kb = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model,
            memory_mb: memory_kb / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// One target and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: String,
    /// `pass`, `miss`, or `n/a` when the run could not measure it (too few devices, no run
    /// on that store).
    pub verdict: &'static str,
}

fn target(name: &str, goal: &str, measured: Option<(String, bool)>) -> Target {
    let (measured, verdict) = match measured {
        Some((text, true)) => (text, "pass"),
        Some((text, false)) => (text, "miss"),
        None => ("not measured".to_owned(), "n/a"),
    };
    Target {
        name: name.to_owned(),
        goal: goal.to_owned(),
        measured,
        verdict,
    }
}

/// The targets of issue 6, checked against the run.
pub fn targets(runs: &[DbResults], devices: usize) -> Vec<Target> {
    let sqlite = runs.iter().find(|r| r.db == Db::Sqlite);
    let worst = |f: fn(&DbResults) -> f64| runs.iter().map(f).reduce(f64::max);
    vec![
        target(
            "fan-out / ceiling (SQLite)",
            ">= 50%",
            sqlite.map(|r| {
                (
                    format!("{:.0}%", r.fanout_to_ceiling * 100.0),
                    r.fanout_to_ceiling >= 0.5,
                )
            }),
        ),
        target(
            "fan-out deliveries/s (SQLite)",
            ">= 20000",
            sqlite.map(|r| {
                (
                    format!("{:.0}", r.fanout.deliveries_per_sec),
                    r.fanout.deliveries_per_sec >= 20_000.0,
                )
            }),
        ),
        target(
            "peak RSS at 1,000,000 devices",
            "<= 200 MB",
            worst(|r| r.fanout.peak_rss_mb)
                .filter(|_| devices >= 1_000_000)
                .map(|mb| (format!("{mb:.0} MB"), mb <= 200.0)),
        ),
        target(
            "registration p99 at 64 clients",
            "<= 20 ms",
            worst(|r| r.registration.p99_ms).map(|ms| (format!("{ms:.1} ms"), ms <= 20.0)),
        ),
        target(
            "idle RSS",
            "<= 30 MB",
            worst(|r| r.startup.idle_rss_mb).map(|mb| (format!("{mb:.1} MB"), mb <= 30.0)),
        ),
        target(
            "startup",
            "<= 200 ms",
            worst(|r| r.startup.startup_ms).map(|ms| (format!("{ms:.0} ms"), ms <= 200.0)),
        ),
    ]
}

pub fn print(results: &Results) {
    let m = &results.machine;
    println!(
        "\nClarion benchmark: {} APNs devices; {} CPUs ({}), {:.0} MB memory\n",
        results.devices, m.cpus, m.cpu_model, m.memory_mb
    );
    let mut rows: Vec<(String, Vec<String>)> = vec![
        ("startup (ms)".into(), vec![]),
        ("idle RSS (MB)".into(), vec![]),
        ("registration req/s".into(), vec![]),
        ("registration p50 / p99 (ms)".into(), vec![]),
        ("single send req/s".into(), vec![]),
        ("single send p50 / p99 (ms)".into(), vec![]),
        ("bulk load (devices/s)".into(), vec![]),
        ("fan-out time (s)".into(), vec![]),
        ("fan-out deliveries/s".into(), vec![]),
        ("fan-out final state".into(), vec![]),
        ("fan-out faulty requests".into(), vec![]),
        ("peak RSS (MB)".into(), vec![]),
        ("ceiling req/s (bare client)".into(), vec![]),
        ("fan-out / ceiling".into(), vec![]),
    ];
    for r in &results.runs {
        let cells = [
            format!("{:.0}", r.startup.startup_ms),
            format!("{:.1}", r.startup.idle_rss_mb),
            format!("{:.0}", r.registration.requests_per_sec),
            format!(
                "{:.1} / {:.1}",
                r.registration.p50_ms, r.registration.p99_ms
            ),
            format!("{:.0}", r.single_send.requests_per_sec),
            format!("{:.1} / {:.1}", r.single_send.p50_ms, r.single_send.p99_ms),
            format!("{:.0}", r.fanout.load_devices_per_sec),
            format!("{:.2}", r.fanout.seconds),
            format!("{:.0}", r.fanout.deliveries_per_sec),
            r.fanout.state.clone(),
            r.fanout.faulty_requests.to_string(),
            format!("{:.1}", r.fanout.peak_rss_mb),
            format!("{:.0}", r.ceiling.requests_per_sec),
            format!("{:.0}%", r.fanout_to_ceiling * 100.0),
        ];
        for (row, cell) in rows.iter_mut().zip(cells) {
            row.1.push(cell);
        }
    }
    let header: Vec<String> = results
        .runs
        .iter()
        .map(|r| format!("{:?}", r.db).to_lowercase())
        .collect();
    println!(
        "{:<30} {}",
        "",
        header
            .iter()
            .map(|h| format!("{h:>16}"))
            .collect::<String>()
    );
    for (name, cells) in &rows {
        println!(
            "{name:<30} {}",
            cells.iter().map(|c| format!("{c:>16}")).collect::<String>()
        );
    }
    for failure in &results.failures {
        println!("\n{:?} run FAILED: {}", failure.db, failure.error);
    }
    println!("\nTargets:");
    for t in &results.targets {
        println!(
            "  [{:<4}] {:<32} goal {:<10} measured {}",
            t.verdict, t.name, t.goal, t.measured
        );
    }
}
