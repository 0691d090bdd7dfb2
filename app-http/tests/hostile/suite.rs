//! The suite's bookkeeping: what a row expects (`Expect`), and `Suite`, which after every case
//! checks that the server still lives, answers `/healthz` and stays under its memory bounds,
//! restarts it when a case killed it (so that one fault does not hide the others), and at the
//! end prints every case's result with the `/healthz` latencies and the peak memory.

use std::time::Duration;

use clarion_testkit::{HealthProbe, MemoryWatch, process::Stream};

use crate::server::{Call, Clarion, Reply, excerpt};

/// The largest resident set the server process itself may reach, in bytes. Measured on the
/// debug binary: about 40 MiB after start and through every benign case. Rendering runs in
/// render worker processes with a budget of their own (`templates.render_memory_mb`), so
/// nothing a tenant sends should grow the server itself by more than a request body
/// (`http.body_limit_bytes`, 1 MiB) per connection; 300 MiB leaves that a margin of seven
/// times the measured peak and still catches a template that builds a string of 100s of MiB
/// in the server, as one did before.
pub const SERVER_RSS_BOUND: u64 = 300 << 20;

/// The largest resident set of the server and its render workers together: the server's bound
/// plus two workers (`templates.render_workers`) at their memory budget
/// (`templates.render_memory_mb`, 256 MiB) with a margin.
pub const TREE_RSS_BOUND: u64 = 1 << 30;

/// Where the memory watch kills the server outright, so that a runaway case cannot take the
/// test machine's memory with it.
const KILL_ABOVE: u64 = 2 << 30;

/// How long the server may take to answer `/healthz` again after a case.
const HEALTH_PATIENCE: Duration = Duration::from_secs(15);

/// What a row expects of its answer: one of `statuses` and, for an error, a problem document
/// whose `detail` (or an `errors[].field`) holds one of `words` (case-insensitive). No words:
/// any problem document will do.
#[derive(Debug, Clone)]
pub struct Expect {
    pub statuses: Vec<u16>,
    pub words: Vec<&'static str>,
}

pub fn expect(statuses: &[u16], words: &[&'static str]) -> Expect {
    Expect {
        statuses: statuses.to_vec(),
        words: words.to_vec(),
    }
}

impl Expect {
    /// Checks `reply`, describing it either way.
    pub fn check(&self, reply: &Reply) -> Result<String, String> {
        let seen = describe(reply);
        if !self.statuses.contains(&reply.status) {
            return Err(format!("expected {:?}, got {seen}", self.statuses));
        }
        if reply.status < 400 {
            return Ok(seen);
        }
        let problem = problem_text(reply).map_err(|why| format!("{why}: {seen}"))?;
        if !self.words.is_empty() && !self.words.iter().any(|w| problem.contains(w)) {
            return Err(format!("the detail names none of {:?}: {seen}", self.words));
        }
        Ok(seen)
    }
}

/// The detail and the invalid fields of a problem document, in lower case.
pub fn problem_text(reply: &Reply) -> Result<String, String> {
    let content_type = reply.header("content-type").unwrap_or_default();
    if !content_type.starts_with("application/problem+json") {
        return Err(format!("not a problem document ({content_type:?})"));
    }
    let problem: serde_json::Value =
        serde_json::from_str(&reply.body).map_err(|e| format!("not JSON ({e})"))?;
    let detail = problem["detail"]
        .as_str()
        .ok_or("a problem document without a detail")?;
    let mut text = detail.to_lowercase();
    for error in problem["errors"].as_array().into_iter().flatten() {
        text.push(' ');
        text.push_str(&error["field"].as_str().unwrap_or_default().to_lowercase());
    }
    Ok(text)
}

/// `status detail` (or `status body`), short.
pub fn describe(reply: &Reply) -> String {
    let detail = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["detail"].as_str().map(str::to_owned))
        .unwrap_or_else(|| reply.body.clone());
    format!("{} {}", reply.status, excerpt(&detail, 110))
}

struct Outcome {
    area: &'static str,
    name: String,
    result: Result<String, String>,
}

/// One server under attack, and every case's outcome.
pub struct Suite {
    pub server: Clarion,
    probe: HealthProbe,
    watch: MemoryWatch,
    area: &'static str,
    outcomes: Vec<Outcome>,
    /// The server's high-water mark after the previous case, to tell which case raised it.
    last_hwm: u64,
    restarts: usize,
}

impl Suite {
    pub fn new(server: Clarion) -> Suite {
        let probe = HealthProbe::start(
            server.addr(),
            "/healthz",
            Duration::from_millis(50),
            Duration::from_secs(30),
        );
        let watch = MemoryWatch::start(server.process.pid(), Duration::from_millis(10), KILL_ABOVE);
        Suite {
            server,
            probe,
            watch,
            area: "",
            outcomes: Vec::new(),
            last_hwm: 0,
            restarts: 0,
        }
    }

    /// Names the area of the cases that follow, for the report.
    pub fn area(&mut self, area: &'static str) {
        self.area = area;
    }

    /// Sends `call` and records whether its answer is what `expected` says.
    pub async fn row(&mut self, name: &str, call: Call, expected: &Expect) {
        let result = match self.server.send(&call).await {
            Ok(reply) => expected.check(&reply),
            Err(error) => Err(error),
        };
        self.record(name, result).await;
    }

    /// Sends raw bytes and records whether the answer is what `expected` says.
    pub async fn raw_row(&mut self, name: &str, bytes: Vec<u8>, expected: &Expect) {
        let result = match self.server.send_raw(bytes).await {
            Ok(reply) => expected.check(&reply),
            Err(error) => Err(error),
        };
        self.record(name, result).await;
    }

    /// Records a case's own result, then what it did to the server: whether the server died
    /// (then it is restarted), whether `/healthz` answers, and the memory it reached.
    pub async fn record(&mut self, name: &str, result: Result<String, String>) {
        let mut problems = Vec::new();
        if let Err(why) = self.alive_and_healthy().await {
            problems.push(why);
        }
        let (peak, killed) = self.watch.take();
        problems.extend(killed);
        if peak.main_rss > SERVER_RSS_BOUND {
            problems.push(format!(
                "the server's RSS reached {} MiB, over its bound of {} MiB",
                peak.main_rss >> 20,
                SERVER_RSS_BOUND >> 20
            ));
        }
        if peak.tree_rss > TREE_RSS_BOUND {
            problems.push(format!(
                "the server and its workers reached {} MiB RSS, over their bound of {} MiB",
                peak.tree_rss >> 20,
                TREE_RSS_BOUND >> 20
            ));
        }
        // VmHWM catches a peak between two samples of the watch.
        let hwm =
            clarion_testkit::memory::process_memory(self.server.process.pid()).map_or(0, |m| m.hwm);
        if hwm > SERVER_RSS_BOUND && self.last_hwm <= SERVER_RSS_BOUND {
            problems.push(format!(
                "the server's VmHWM rose to {} MiB, over its bound of {} MiB",
                hwm >> 20,
                SERVER_RSS_BOUND >> 20
            ));
        }
        self.last_hwm = hwm;
        if !problems.is_empty() && self.server.process.exited().is_some() {
            self.restart();
        }
        let result = match (result, problems.is_empty()) {
            (Ok(seen), true) => Ok(seen),
            (Ok(seen), false) => Err(format!("{seen}; but {}", problems.join("; "))),
            (Err(why), true) => Err(why),
            (Err(why), false) => Err(format!("{why}; and {}", problems.join("; "))),
        };
        let mark = if result.is_ok() { "pass" } else { "FAIL" };
        let text = result.as_ref().unwrap_or_else(|e| e);
        println!(
            "{mark} [{}] {name}: {text} (server RSS up to {} MiB)",
            self.area,
            peak.main_rss >> 20
        );
        self.outcomes.push(Outcome {
            area: self.area,
            name: name.to_owned(),
            result,
        });
    }

    /// Waits until `/healthz` answers 200 from a fresh connection, failing when the server
    /// dies first or takes longer than `HEALTH_PATIENCE`.
    async fn alive_and_healthy(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + HEALTH_PATIENCE;
        loop {
            if let Some(status) = self.server.process.exited() {
                return Err(format!(
                    "the server died ({status}): {}",
                    self.server.last_words()
                ));
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.server.healthz_once().await {
                Ok(()) => return Ok(()),
                Err(why) if left.is_zero() => return Err(why),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    fn restart(&mut self) {
        self.restarts += 1;
        match self.server.restart() {
            Ok(()) => {
                self.probe.retarget(self.server.addr());
                self.watch.follow(self.server.process.pid());
                self.last_hwm = 0;
            }
            Err(error) => panic!("the server could not be restarted after it died: {error}"),
        }
    }

    /// Prints the report and fails when a case failed or a `/healthz` probe went unanswered.
    pub fn finish(self) {
        let Suite {
            server,
            probe,
            watch,
            outcomes,
            restarts,
            ..
        } = self;
        let report = probe.finish();
        let peak = watch.overall();
        let hwm =
            clarion_testkit::memory::process_memory(server.process.pid()).map_or(0, |m| m.hwm);
        println!("\n== hostile-input suite: {} cases ==", outcomes.len());
        for outcome in &outcomes {
            let (mark, text) = match &outcome.result {
                Ok(seen) => ("pass", seen),
                Err(why) => ("FAIL", why),
            };
            println!("{mark} [{}] {}: {text}", outcome.area, outcome.name);
        }
        println!(
            "/healthz during the suite: {} probes, p50 {:?}, p99 {:?}, max {:?}, {} unanswered",
            report.probes,
            report.p50,
            report.p99,
            report.max,
            report.failures.len()
        );
        println!(
            "peak RSS: server {} MiB (VmHWM {} MiB), server and workers {} MiB, largest worker \
             {} MiB; server restarts after a death: {restarts}",
            peak.main_rss >> 20,
            hwm >> 20,
            peak.tree_rss >> 20,
            peak.descendant_rss >> 20
        );
        let failed: Vec<String> = outcomes
            .iter()
            .filter_map(|o| {
                let why = o.result.as_ref().err()?;
                Some(format!("[{}] {}: {why}", o.area, o.name))
            })
            .collect();
        assert!(
            failed.is_empty(),
            "{} of {} hostile cases failed:\n{}\n(the server's last log line: {})",
            failed.len(),
            outcomes.len(),
            failed.join("\n"),
            excerpt(
                &server
                    .process
                    .lines(Stream::Stderr)
                    .last()
                    .cloned()
                    .unwrap_or_default(),
                200
            )
        );
        assert!(
            report.failures.is_empty(),
            "{} /healthz probes were not answered 200: {:?}",
            report.failures.len(),
            report.failures.iter().take(5).collect::<Vec<_>>()
        );
    }
}
