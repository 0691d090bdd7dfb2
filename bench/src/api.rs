//! API latency: device registration and single sends (debug sender) by 64 concurrent clients.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::server::Server;

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
}

impl LatencyStats {
    fn of(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
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
            clients: CLIENTS,
            seconds,
            requests_per_sec,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
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
            "/v1/apps/debug/devices".to_owned(),
            registration(1_000_000_000 + i),
            &[201][..],
        )
    })
    .await?;
    let registration_stats = drive(server, requests, |i| {
        (
            "/v1/apps/debug/devices".to_owned(),
            registration(i),
            &[201][..],
        )
    })
    .await?;

    let (status, device) = server
        .post("/v1/apps/debug/devices", &registration(2_000_000_000))
        .await?;
    if status != 201 {
        bail!("registering the send target answered {status}: {device}");
    }
    let id = device["id"].as_i64().context("a device id")?;
    let send = json!({"target": {"device_ids": [id]}, "heading": "Clarion", "body": "Benchmark"});
    let send_stats = drive(server, requests, move |_| {
        // 202: the send outlasted `http.send_wait_secs`; it is timed all the same.
        (
            "/v1/apps/debug/messages".to_owned(),
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
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(latencies);
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
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = clients.join_next().await {
        all.extend(done.context("a client panicked")??);
    }
    Ok(LatencyStats::of(all, started.elapsed()))
}
