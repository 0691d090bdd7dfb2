//! The API measurements: device registration and single sends (debug sender) by 64
//! concurrent clients; single sends through the APNs mock at its delay; queued one-device
//! messages (their acceptance, and their drain by the worker); and the bulk message endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::server::{Database, Mocks, Server, apps};
use crate::{Platform, per_sec, poll, proc_status_mb};

/// Concurrent clients of the API measurements.
pub const CLIENTS: usize = 64;

/// Throughput and latency of one kind of request.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    pub requests: usize,
    pub clients: usize,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests answered 503 (the server shedding load) where that answer was allowed; they
    /// are timed with the rest.
    pub refused: usize,
}

impl LatencyStats {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration, clients: usize) -> Self {
        latencies.sort_unstable();
        let at = |q: f64| {
            let last = latencies.len().saturating_sub(1);
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "an index into a list of at most a few million latencies"
            )]
            let index = ((last as f64) * q).round() as usize;
            latencies
                .get(index)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        let seconds = elapsed.as_secs_f64();
        #[allow(clippy::cast_precision_loss, reason = "request counts are small")]
        let requests_per_sec = latencies.len() as f64 / seconds.max(f64::EPSILON);
        Self {
            requests: latencies.len(),
            clients,
            seconds,
            requests_per_sec,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
            refused: 0,
        }
    }
}

/// Measures registration, then single sends, each with `requests` requests.
pub async fn measure(
    server: &Server,
    requests: usize,
) -> anyhow::Result<(LatencyStats, LatencyStats)> {
    // A short warm-up, so that connections and the SQLite file are open.
    drive(server, CLIENTS, |i| {
        (
            format!("/v1/apps/{}/devices", apps::DEBUG),
            registration(1_000_000_000 + i),
            &[201][..],
        )
    })
    .await?;
    let registration_stats = drive(server, requests, |i| {
        (
            format!("/v1/apps/{}/devices", apps::DEBUG),
            registration(i),
            &[201][..],
        )
    })
    .await?;

    let (status, device) = server
        .post(
            &format!("/v1/apps/{}/devices", apps::DEBUG),
            &registration(2_000_000_000),
        )
        .await?;
    if status != 201 {
        bail!("registering the send target answered {status}: {device}");
    }
    let id = device["id"].as_i64().context("a device id")?;
    let send = json!({"target": {"device_ids": [id]}, "heading": "Clarion", "body": "Benchmark"});
    let send_stats = drive(server, requests, move |_| {
        // 202: the send outlasted `http.send_wait_secs`; it is timed all the same.
        (
            format!("/v1/apps/{}/messages", apps::DEBUG),
            send.clone(),
            &[201, 202][..],
        )
    })
    .await?;
    Ok((registration_stats, send_stats))
}

fn registration(n: usize) -> Value {
    json!({
        "platform": "apns",
        "token": format!("{:064x}", n),
        "user_id": format!("user-{}", n % 10_000),
        "name": "bench phone",
    })
}

/// Sends `count` requests from [`CLIENTS`] concurrent clients, each request made by
/// `request(i)` as (path, body, expected status), and times each.
async fn drive(
    server: &Server,
    count: usize,
    request: impl Fn(usize) -> (String, Value, &'static [u16]) + Send + Sync + 'static,
) -> anyhow::Result<LatencyStats> {
    let next = Arc::new(AtomicUsize::new(0));
    let request = Arc::new(request);
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (next, request) = (Arc::clone(&next), Arc::clone(&request));
        let (http, base, key) = (
            server.http.clone(),
            server.base.clone(),
            server.admin_key.clone(),
        );
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let mut refused = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok((latencies, refused));
                }
                let (path, body, want) = request(i);
                let sent = Instant::now();
                let reply = http
                    .post(format!("{base}{path}"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("POST {path} failed"))?;
                let status = reply.status().as_u16();
                let text = reply.text().await.unwrap_or_default();
                latencies.push(sent.elapsed());
                if !want.contains(&status) {
                    bail!("POST {path} answered {status}, not {want:?}: {text}");
                }
                if status == 503 {
                    refused += 1;
                }
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    let mut refused = 0;
    while let Some(done) = clients.join_next().await {
        let (latencies, some) = done.context("a client panicked")??;
        all.extend(latencies);
        refused += some;
    }
    let mut stats = LatencyStats::of(all, started.elapsed(), CLIENTS);
    stats.refused = refused;
    Ok(stats)
}

/// Single sends (`dispatch` now) by [`CLIENTS`] clients through the APNs mock at its delay.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSend {
    pub provider_rtt_ms: u64,
    #[serde(flatten)]
    pub stats: LatencyStats,
    /// p50 minus the mock's delay: what Clarion adds to the provider's round trip.
    pub added_latency_p50_ms: f64,
}

/// Registers `count` APNs devices in the single-send application, one request each (the bulk
/// route does not answer with ids), and returns their ids.
pub async fn single_devices(server: &Server, count: usize) -> anyhow::Result<Vec<i64>> {
    let path = format!("/v1/apps/{}/devices", apps::SINGLE);
    let mut ids = Vec::with_capacity(count);
    for n in 0..count {
        let body = json!({"platform": "apns", "token": format!("{:064x}", 0x5e_0000_0000_usize + n),
                          "user_id": format!("single-{n}")});
        let (status, device) = server.post(&path, &body).await?;
        if !(status == 200 || status == 201) {
            bail!("registering a single-send device answered {status}: {device}");
        }
        ids.push(device["id"].as_i64().context("a device id")?);
    }
    Ok(ids)
}

/// `requests` single sends to one APNs device each (round the given devices), answered once
/// the provider has answered.
pub async fn provider_send(
    server: &Server,
    devices: &[i64],
    requests: usize,
    provider_rtt_ms: u64,
) -> anyhow::Result<ProviderSend> {
    let devices: Arc<Vec<i64>> = Arc::new(devices.to_vec());
    let path = format!("/v1/apps/{}/messages", apps::SINGLE);
    let stats = drive(server, requests, move |i| {
        let id = devices.get(i % devices.len().max(1)).copied().unwrap_or(0);
        (
            path.clone(),
            json!({"target": {"device_ids": [id]}, "heading": "Clarion", "body": "Benchmark",
                   "dispatch": "now"}),
            &[201, 202][..],
        )
    })
    .await?;
    #[allow(clippy::cast_precision_loss, reason = "a delay of milliseconds")]
    let added_latency_p50_ms = stats.p50_ms - provider_rtt_ms as f64;
    Ok(ProviderSend {
        provider_rtt_ms,
        stats,
        added_latency_p50_ms,
    })
}

/// One-device messages queued by [`CLIENTS`] clients, and their drain by the worker through
/// the APNs mock.
#[derive(Debug, Clone, Serialize)]
pub struct QueueResult {
    pub provider_rtt_ms: u64,
    pub messages: usize,
    /// Queuing the messages (`dispatch` queue): requests per second and latency, and how many
    /// the server refused with 503 (shedding load; not sent again).
    pub requests: LatencyStats,
    /// Messages accepted (201 or 202) per second of the queuing.
    pub accepted_per_sec: f64,
    /// From the first message queued to none of them `WAITING`; per second counts the
    /// accepted messages.
    pub drain_seconds: f64,
    pub drained_per_sec: f64,
    /// Messages still `WAITING` when the bench stopped waiting (0: the drain finished).
    pub left_waiting: usize,
    /// Requests the APNs mock received meanwhile (should equal `messages`), and those in
    /// which it found a problem (should be 0).
    pub provider_requests: u64,
    pub faulty_requests: u64,
}

pub async fn queue_and_drain(
    server: &Server,
    mocks: &Mocks,
    database: &Database,
    devices: &[i64],
    messages: usize,
    provider_rtt_ms: u64,
) -> anyhow::Result<QueueResult> {
    let before = mocks.counts(Platform::Apns).await?;
    let started = Instant::now();
    let requests = queue(server, devices, messages).await?;
    // Generous: at the worker's slowest plausible pace (8 messages per round trip).
    let deadline = Duration::from_secs(60 + (messages as u64) * (provider_rtt_ms + 10) / 8000);
    // A drain that outlasts the deadline is reported with what was left, not as a failure:
    // it is the figure of a slow worker.
    let drained = poll(
        "every queued message to leave WAITING",
        deadline,
        Duration::from_millis(50),
        || async { Ok((!database.any_waiting(apps::SINGLE).await?).then_some(())) },
    )
    .await;
    let left_waiting = match drained {
        Ok(()) => 0,
        Err(_) => {
            let left = database.waiting(apps::SINGLE).await?;
            eprintln!(
                "clarion-bench: {left} queued messages still WAITING after {deadline:?}; \
                 reporting the drain as unfinished"
            );
            usize::try_from(left).unwrap_or(usize::MAX)
        }
    };
    let drain_seconds = started.elapsed().as_secs_f64();
    let after = mocks.counts(Platform::Apns).await?;
    let accepted = messages.saturating_sub(requests.refused);
    Ok(QueueResult {
        provider_rtt_ms,
        messages,
        accepted_per_sec: per_sec(accepted, requests.seconds),
        requests,
        drain_seconds,
        drained_per_sec: per_sec(accepted.saturating_sub(left_waiting), drain_seconds),
        left_waiting,
        provider_requests: after.requests.saturating_sub(before.requests),
        faulty_requests: after.faulty.saturating_sub(before.faulty),
    })
}

/// Queues `messages` one-device messages (`dispatch` queue) to the single-send application,
/// going round `devices`, from [`CLIENTS`] clients.
async fn queue(server: &Server, devices: &[i64], messages: usize) -> anyhow::Result<LatencyStats> {
    let devices: Arc<Vec<i64>> = Arc::new(devices.to_vec());
    let path = format!("/v1/apps/{}/messages", apps::SINGLE);
    drive(server, messages, move |i| {
        let id = devices.get(i % devices.len().max(1)).copied().unwrap_or(0);
        (
            path.clone(),
            json!({"target": {"device_ids": [id]}, "heading": "Clarion", "body": "Queued",
                   "dispatch": "queue"}),
            &[201, 202, 503][..],
        )
    })
    .await
}

/// The drain of a backlog: messages queued while no worker ran, then sent by a server whose
/// worker starts with all of them waiting. Unlike [`QueueResult`]'s drain, which runs while
/// the 64 clients still queue (and so cannot outrun their acceptance), this measures the
/// worker alone.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogResult {
    pub provider_rtt_ms: u64,
    pub messages: usize,
    /// Queuing them with the worker off.
    pub queued: LatencyStats,
    /// From starting the server with the worker on (its startup included) to none of them
    /// `WAITING`; per second counts the messages queued.
    pub drain_seconds: f64,
    pub drained_per_sec: f64,
    /// Messages still `WAITING` when the bench stopped waiting (0: the drain finished).
    pub left_waiting: usize,
    /// Requests the APNs mock received during the drain, and those it found faulty.
    pub provider_requests: u64,
    pub faulty_requests: u64,
    /// The draining server's peak resident memory.
    pub peak_rss_mb: f64,
}

/// Queues `messages` one-device messages through `idle` (a server whose worker is off).
pub async fn queue_backlog(
    idle: &Server,
    devices: &[i64],
    messages: usize,
) -> anyhow::Result<LatencyStats> {
    queue(idle, devices, messages).await
}

/// Waits for the backlog to drain through `draining`, started at `started` with its worker
/// on, and measures it.
pub async fn drain_backlog(
    started: Instant,
    draining: &Server,
    mocks: &Mocks,
    database: &Database,
    queued: LatencyStats,
    provider_rtt_ms: u64,
    before: crate::server::Counts,
) -> anyhow::Result<BacklogResult> {
    let messages = queued.requests.saturating_sub(queued.refused);
    let deadline = Duration::from_secs(60 + (messages as u64) * (provider_rtt_ms + 10) / 8000);
    let drained = poll(
        "every queued message of the backlog to leave WAITING",
        deadline,
        Duration::from_millis(20),
        || async { Ok((!database.any_waiting(apps::SINGLE).await?).then_some(())) },
    )
    .await;
    let drain_seconds = started.elapsed().as_secs_f64();
    let left_waiting = match drained {
        Ok(()) => 0,
        Err(_) => usize::try_from(database.waiting(apps::SINGLE).await?).unwrap_or(usize::MAX),
    };
    let after = mocks.counts(Platform::Apns).await?;
    Ok(BacklogResult {
        provider_rtt_ms,
        messages,
        queued,
        drain_seconds,
        drained_per_sec: per_sec(messages.saturating_sub(left_waiting), drain_seconds),
        left_waiting,
        provider_requests: after.requests.saturating_sub(before.requests),
        faulty_requests: after.faulty.saturating_sub(before.faulty),
        peak_rss_mb: proc_status_mb(draining.pid, "VmHWM"),
    })
}

/// Clients of the bulk endpoint.
pub const BULK_CLIENTS: usize = 4;
/// Messages per bulk request (the endpoint's most).
pub const BULK_ITEMS: usize = 1000;

/// The bulk message endpoint, `POST /v1/apps/{app}/messages/bulk`.
#[derive(Debug, Clone, Serialize)]
pub struct BulkResult {
    /// Why it was not measured (the server has no such route), when it was not.
    pub skipped: Option<String>,
    pub clients: usize,
    pub items_per_request: usize,
    pub requests: usize,
    /// Items the server stored (those not refused one by one).
    pub accepted: usize,
    pub refused: usize,
    pub seconds: f64,
    pub accepted_per_sec: f64,
    pub request_p50_ms: f64,
    pub request_p99_ms: f64,
}

/// Sends `messages` one-device messages to the debug application in requests of
/// [`BULK_ITEMS`], from [`BULK_CLIENTS`] clients; skipped when the route answers 404 or 405.
pub async fn bulk(server: &Server, messages: usize) -> anyhow::Result<BulkResult> {
    let (status, device) = server
        .post(
            &format!("/v1/apps/{}/devices", apps::DEBUG),
            &registration(3_000_000_000),
        )
        .await?;
    if status != 201 {
        bail!("registering the bulk target answered {status}: {device}");
    }
    let id = device["id"].as_i64().context("a device id")?;
    let item = json!({"target": {"device_ids": [id]}, "heading": "Clarion", "body": "Bulk"});
    let path = format!("/v1/apps/{}/messages/bulk", apps::DEBUG);
    let requests = messages.div_ceil(BULK_ITEMS);
    let mut result = BulkResult {
        skipped: None,
        clients: BULK_CLIENTS,
        items_per_request: BULK_ITEMS,
        requests,
        accepted: 0,
        refused: 0,
        seconds: 0.0,
        accepted_per_sec: 0.0,
        request_p50_ms: 0.0,
        request_p99_ms: 0.0,
    };
    // One small request first: a server without the route is noted, not failed.
    let (status, reply) = server
        .post(&path, &json!({"messages": [item.clone()]}))
        .await?;
    if status == 404 || status == 405 {
        result.skipped = Some(format!(
            "POST {path} answered {status}: this server has no bulk message endpoint"
        ));
        return Ok(result);
    }
    if !(200..300).contains(&status) {
        bail!("POST {path} answered {status}: {reply}");
    }

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..BULK_CLIENTS {
        let (next, item, path) = (Arc::clone(&next), item.clone(), path.clone());
        let (http, base, key) = (
            server.http.clone(),
            server.base.clone(),
            server.admin_key.clone(),
        );
        clients.spawn(async move {
            let mut latencies = Vec::new();
            let (mut accepted, mut refused) = (0, 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return anyhow::Ok((latencies, accepted, refused));
                }
                let items = BULK_ITEMS.min(messages - i * BULK_ITEMS);
                let body = json!({"messages": vec![item.clone(); items]});
                let sent = Instant::now();
                let reply = http
                    .post(format!("{base}{path}"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .with_context(|| format!("POST {path} failed"))?;
                let status = reply.status().as_u16();
                let reply: Value = reply.json().await.unwrap_or(Value::Null);
                latencies.push(sent.elapsed());
                if !(200..300).contains(&status) {
                    bail!("POST {path} answered {status}: {reply}");
                }
                let (ok, bad) = tally(&reply, items);
                accepted += ok;
                refused += bad;
            }
        });
    }
    let mut latencies = Vec::new();
    while let Some(done) = clients.join_next().await {
        let (mut some, ok, bad) = done.context("a bulk client panicked")??;
        latencies.append(&mut some);
        result.accepted += ok;
        result.refused += bad;
    }
    let stats = LatencyStats::of(latencies, started.elapsed(), BULK_CLIENTS);
    result.seconds = stats.seconds;
    result.accepted_per_sec = per_sec(result.accepted, stats.seconds);
    result.request_p50_ms = stats.p50_ms;
    result.request_p99_ms = stats.p99_ms;
    Ok(result)
}

/// Items accepted and refused in a bulk answer: the first list of `items` entries it holds
/// (at the top or in a field), where an entry with a `problem` or `error` was refused; all
/// accepted when the answer holds no such list.
fn tally(reply: &Value, items: usize) -> (usize, usize) {
    let list = match reply {
        Value::Array(list) => Some(list),
        Value::Object(fields) => fields.values().find_map(|v| match v {
            Value::Array(list) if list.len() == items => Some(list),
            _ => None,
        }),
        _ => None,
    };
    let Some(list) = list else {
        return (items, 0);
    };
    let refused = list
        .iter()
        .filter(|entry| {
            entry.get("problem").is_some_and(|p| !p.is_null())
                || entry.get("error").is_some_and(|e| !e.is_null())
        })
        .count();
    (list.len() - refused, refused)
}

/// Waits until no message of `app` is `WAITING`, so that the next measurement has the worker
/// to itself.
pub async fn settle(database: &Database, app: &str, deadline: Duration) -> anyhow::Result<()> {
    poll(
        "the worker to finish the queued messages",
        deadline,
        Duration::from_millis(100),
        || async { Ok((!database.any_waiting(app).await?).then_some(())) },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_answer_counts_the_items_with_a_problem_as_refused() {
        let reply = json!({"results": [
            {"message": {"id": 1}},
            {"problem": {"title": "invalid target"}},
            {"message": {"id": 3}, "problem": null},
        ]});
        assert_eq!(tally(&reply, 3), (2, 1));
    }

    #[test]
    fn a_bulk_answer_as_a_bare_list_is_counted_too() {
        let reply = json!([{"id": 1}, {"error": "no such device"}]);
        assert_eq!(tally(&reply, 2), (1, 1));
    }

    #[test]
    fn a_bulk_answer_without_a_list_of_the_items_counts_all_accepted() {
        assert_eq!(tally(&json!({"accepted": 5}), 5), (5, 0));
        // A list of another length is not the items' outcomes.
        assert_eq!(tally(&json!({"warnings": [{"error": "x"}]}), 5), (5, 0));
    }
}
