//! The table on stdout, the targets of issues 6 and 13 with pass or miss, and the machine's
//! description.

use serde::Serialize;

use crate::{AtDelay, Db, DbResults, Platform, Results, Sizes};

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

/// A store's name in a target.
fn store(db: Db) -> &'static str {
    match db {
        Db::Sqlite => "SQLite",
        Db::Postgres => "PostgreSQL",
    }
}

/// A throughput goal per store: (SQLite, PostgreSQL).
fn per_store(db: Db, goals: (f64, f64)) -> f64 {
    match db {
        Db::Sqlite => goals.0,
        Db::Postgres => goals.1,
    }
}

fn rate(value: f64, goal: f64) -> (String, bool) {
    (format!("{value:.0}/s"), value >= goal)
}

fn percent(value: f64, goal: f64) -> (String, bool) {
    (format!("{:.0}%", value * 100.0), value >= goal)
}

/// The round trip of issue 13's targets.
const RTT_MS: u64 = 50;

/// The targets of issues 6 and 13, checked against the run, per store where they differ.
pub fn targets(runs: &[DbResults], sizes: &Sizes) -> Vec<Target> {
    let mut all = Vec::new();
    for run in runs {
        let s = store(run.db);
        let at0 = run.at(0);
        let at50 = run.at(RTT_MS);
        let fanout = |at: Option<&AtDelay>, p: Platform| {
            at.and_then(|a| a.fanout(p)).map(|f| f.deliveries_per_sec)
        };
        let share = |at: Option<&AtDelay>, p: Platform| {
            at.and_then(|a| a.share(p)).map(|s| s.fanout_to_ceiling)
        };
        // Issue 13: fan-out at a real provider's round trip.
        for p in [Platform::Apns, Platform::Fcm] {
            let goal = per_store(run.db, (20_000.0, 15_000.0));
            all.push(target(
                &format!("{} fan-out at 50 ms ({s})", p.title()),
                &format!(">= {goal:.0}/s"),
                fanout(at50, p).map(|v| rate(v, goal)),
            ));
            all.push(target(
                &format!("{} fan-out / ceiling at 50 ms ({s})", p.title()),
                ">= 50%",
                share(at50, p).map(|v| percent(v, 0.5)),
            ));
        }
        all.push(target(
            &format!("Web Push fan-out / ceiling at 50 ms, >= 10 origins ({s})"),
            ">= 50%",
            share(at50, Platform::Webpush)
                .filter(|_| sizes.webpush_origins >= 10)
                .map(|v| percent(v, 0.5)),
        ));
        // "No worse than today at 0 ms": issue 6's figures less a tenth for drift.
        let today = per_store(run.db, (20_000.0, 17_500.0));
        all.push(target(
            &format!("APNs fan-out at 0 ms, no worse than today ({s})"),
            &format!(">= {today:.0}/s"),
            fanout(at0, Platform::Apns).map(|v| rate(v, today)),
        ));
        // Issue 13: single and queued sends.
        let send_goal = per_store(run.db, (5_000.0, 3_000.0));
        all.push(target(
            &format!("dispatch now, debug sender, 64 clients ({s})"),
            &format!(">= {send_goal:.0}/s"),
            run.single_send
                .as_ref()
                .map(|l| rate(l.requests_per_sec, send_goal)),
        ));
        if run.db == Db::Sqlite {
            all.push(target(
                "dispatch now, debug sender, p99 (SQLite)",
                "<= 40 ms",
                run.single_send
                    .as_ref()
                    .map(|l| (format!("{:.1} ms", l.p99_ms), l.p99_ms <= 40.0)),
            ));
        }
        all.push(target(
            &format!("dispatch now via APNs at 50 ms: p50 - 50 ms ({s})"),
            "<= 5 ms",
            at50.and_then(|a| a.provider_send.as_ref()).map(|p| {
                (
                    format!("{:.1} ms", p.added_latency_p50_ms),
                    p.added_latency_p50_ms <= 5.0,
                )
            }),
        ));
        let queue_goal = per_store(run.db, (15_000.0, 8_000.0));
        all.push(target(
            &format!("dispatch queue accepted, 64 clients ({s})"),
            &format!(">= {queue_goal:.0}/s"),
            run.at_delay
                .iter()
                .filter_map(|a| a.queue.as_ref())
                .map(|q| q.accepted_per_sec)
                .reduce(f64::min)
                .map(|v| rate(v, queue_goal)),
        ));
        all.push(target(
            &format!("100,000 queued drained via APNs at 50 ms ({s})"),
            "<= 10 s",
            run.backlog(RTT_MS)
                .filter(|b| b.messages >= 100_000)
                .map(|b| match b.left_waiting {
                    0 => (format!("{:.1} s", b.drain_seconds), b.drain_seconds <= 10.0),
                    left => (format!("{left} left after {:.0} s", b.drain_seconds), false),
                }),
        ));
        all.push(target(
            &format!("bulk endpoint accepted ({s})"),
            ">= 20000/s",
            run.bulk
                .as_ref()
                .filter(|b| b.skipped.is_none())
                .map(|b| rate(b.accepted_per_sec, 20_000.0)),
        ));
    }

    // Issue 6's targets (its ceiling is now the pool-shaped one at 0 ms).
    let sqlite = runs.iter().find(|r| r.db == Db::Sqlite);
    let sqlite_at0 = sqlite.and_then(|r| r.at(0));
    let worst = |f: fn(&DbResults) -> Option<f64>| runs.iter().filter_map(f).reduce(f64::max);
    all.extend([
        target(
            "issue 6: APNs fan-out / ceiling at 0 ms (SQLite)",
            ">= 50%",
            sqlite_at0
                .and_then(|a| a.share(Platform::Apns))
                .map(|s| percent(s.fanout_to_ceiling, 0.5)),
        ),
        target(
            "issue 6: APNs fan-out at 0 ms (SQLite)",
            ">= 20000/s",
            sqlite_at0
                .and_then(|a| a.fanout(Platform::Apns))
                .map(|f| rate(f.deliveries_per_sec, 20_000.0)),
        ),
        target(
            "peak RSS at 1,000,000 devices",
            "<= 200 MB",
            worst(|r| {
                r.at_delay
                    .iter()
                    .flat_map(|a| &a.fanouts)
                    .map(|f| f.peak_rss_mb)
                    .reduce(f64::max)
            })
            .filter(|_| sizes.devices >= 1_000_000)
            .map(|mb| (format!("{mb:.0} MB"), mb <= 200.0)),
        ),
        target(
            "registration p99 at 64 clients",
            "<= 20 ms",
            worst(|r| r.registration.as_ref().map(|l| l.p99_ms))
                .map(|ms| (format!("{ms:.1} ms"), ms <= 20.0)),
        ),
        target(
            "idle RSS",
            "<= 30 MB",
            worst(|r| Some(r.startup.idle_rss_mb)).map(|mb| (format!("{mb:.1} MB"), mb <= 30.0)),
        ),
        target(
            "startup",
            "<= 200 ms",
            worst(|r| Some(r.startup.startup_ms)).map(|ms| (format!("{ms:.0} ms"), ms <= 200.0)),
        ),
    ]);
    all
}

fn cell<T>(value: Option<&T>, show: impl Fn(&T) -> String) -> String {
    value.map_or_else(|| "-".to_owned(), show)
}

pub fn print(results: &Results) {
    let m = &results.machine;
    let z = &results.sizes;
    println!(
        "\nClarion benchmark: {} APNs / FCM devices, {} Web Push subscriptions over {} origins; \
         provider round trips {:?} ms (jitter {} ms, {} streams); pool {} connections, {} in \
         flight ({}); {} CPUs ({}), {:.0} MB memory\n",
        z.devices,
        z.webpush_devices,
        z.webpush_origins,
        z.provider_rtt_ms,
        z.provider_jitter_ms,
        z.provider_streams,
        results.settings.connections,
        results.settings.max_in_flight,
        match results.settings.pool_keys {
            crate::server::PoolKeys::ConnectionsAndMaxInFlight => "connections, max_in_flight",
            crate::server::PoolKeys::ApnsConcurrencyOnly => "as apns.concurrency only",
        },
        m.cpus,
        m.cpu_model,
        m.memory_mb
    );
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    let mut row = |name: String, cells: Vec<String>| rows.push((name, cells));
    let runs = &results.runs;
    let each = |f: &dyn Fn(&DbResults) -> String| runs.iter().map(f).collect::<Vec<_>>();
    row(
        "startup (ms)".into(),
        each(&|r| format!("{:.0}", r.startup.startup_ms)),
    );
    row(
        "idle RSS (MB)".into(),
        each(&|r| format!("{:.1}", r.startup.idle_rss_mb)),
    );
    row(
        "registration req/s".into(),
        each(&|r| {
            cell(r.registration.as_ref(), |l| {
                format!("{:.0}", l.requests_per_sec)
            })
        }),
    );
    row(
        "registration p50 / p99 (ms)".into(),
        each(&|r| {
            cell(r.registration.as_ref(), |l| {
                format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)
            })
        }),
    );
    row(
        "send now, debug (msg/s)".into(),
        each(&|r| {
            cell(r.single_send.as_ref(), |l| {
                format!("{:.0}", l.requests_per_sec)
            })
        }),
    );
    row(
        "send now, debug p50 / p99 (ms)".into(),
        each(&|r| {
            cell(r.single_send.as_ref(), |l| {
                format!("{:.1} / {:.1}", l.p50_ms, l.p99_ms)
            })
        }),
    );
    row(
        "bulk endpoint (msg/s)".into(),
        each(&|r| {
            cell(r.bulk.as_ref(), |b| match b.skipped {
                Some(_) => "skipped".to_owned(),
                None => format!("{:.0}", b.accepted_per_sec),
            })
        }),
    );
    for platform in &z.platforms {
        let p = *platform;
        row(
            format!("{} load (devices/s)", p.title()),
            each(&|r| {
                cell(r.loads.iter().find(|l| l.platform == p), |l| {
                    format!("{:.0}", l.devices_per_sec)
                })
            }),
        );
    }
    for &rtt in &z.provider_rtt_ms {
        fn at(r: &DbResults, rtt: u64) -> Option<&AtDelay> {
            r.at(rtt)
        }
        for platform in &z.platforms {
            let p = *platform;
            let name = p.title();
            row(
                format!("{rtt} ms: {name} fan-out/s"),
                each(&|r| {
                    cell(at(r, rtt).and_then(|a| a.fanout(p)), |f| {
                        format!("{:.0}", f.deliveries_per_sec)
                    })
                }),
            );
            row(
                format!("{rtt} ms: {name} ceiling/s"),
                each(&|r| {
                    cell(at(r, rtt).and_then(|a| a.share(p)), |s| {
                        format!("{:.0}", s.ceiling_requests_per_sec)
                    })
                }),
            );
            row(
                format!("{rtt} ms: {name} / ceiling"),
                each(&|r| {
                    cell(at(r, rtt).and_then(|a| a.share(p)), |s| {
                        format!("{:.0}%", s.fanout_to_ceiling * 100.0)
                    })
                }),
            );
            row(
                format!("{rtt} ms: {name} state, faulty"),
                each(&|r| {
                    cell(at(r, rtt).and_then(|a| a.fanout(p)), |f| {
                        format!("{}, {}", f.state, f.faulty_requests)
                    })
                }),
            );
        }
        row(
            format!("{rtt} ms: send now, APNs msg/s"),
            each(&|r| {
                cell(at(r, rtt).and_then(|a| a.provider_send.as_ref()), |s| {
                    format!("{:.0}", s.stats.requests_per_sec)
                })
            }),
        );
        row(
            format!("{rtt} ms: send now, APNs p50 (+added)"),
            each(&|r| {
                cell(at(r, rtt).and_then(|a| a.provider_send.as_ref()), |s| {
                    format!("{:.1} ({:+.1})", s.stats.p50_ms, s.added_latency_p50_ms)
                })
            }),
        );
        row(
            format!("{rtt} ms: queued accepted/s"),
            each(&|r| {
                cell(at(r, rtt).and_then(|a| a.queue.as_ref()), |q| {
                    format!("{:.0} ({} 503)", q.accepted_per_sec, q.requests.refused)
                })
            }),
        );
        row(
            format!("{rtt} ms: backlog drained (s, /s)"),
            each(&|r| {
                cell(r.backlog(rtt), |b| match b.left_waiting {
                    0 => format!("{:.1}, {:.0}", b.drain_seconds, b.drained_per_sec),
                    left => format!("{left} left, {:.0}", b.drained_per_sec),
                })
            }),
        );
        row(
            format!("{rtt} ms: drained while queueing (s, /s)"),
            each(&|r| {
                cell(at(r, rtt).and_then(|a| a.queue.as_ref()), |q| {
                    match q.left_waiting {
                        0 => format!("{:.1}, {:.0}", q.drain_seconds, q.drained_per_sec),
                        left => format!("{left} left, {:.0}", q.drained_per_sec),
                    }
                })
            }),
        );
    }
    row(
        "peak RSS (MB)".into(),
        each(&|r| format!("{:.1}", r.peak_rss_mb)),
    );

    let header: Vec<String> = runs
        .iter()
        .map(|r| format!("{:?}", r.db).to_lowercase())
        .collect();
    println!(
        "{:<36} {}",
        "",
        header
            .iter()
            .map(|h| format!("{h:>18}"))
            .collect::<String>()
    );
    for (name, cells) in &rows {
        println!(
            "{name:<36} {}",
            cells.iter().map(|c| format!("{c:>18}")).collect::<String>()
        );
    }
    for r in runs {
        if let Some(note) = r.bulk.as_ref().and_then(|b| b.skipped.as_ref()) {
            println!("\n{:?}: bulk endpoint not measured: {note}", r.db);
        }
        for problem in &r.problems {
            println!("\n{:?}: FAILED {problem}", r.db);
        }
    }
    for failure in &results.failures {
        println!("\n{:?} run FAILED: {}", failure.db, failure.error);
    }
    println!("\nTargets:");
    for t in &results.targets {
        println!(
            "  [{:<4}] {:<62} goal {:<10} measured {}",
            t.verdict, t.name, t.goal, t.measured
        );
    }
}
