//! Fan-out: N APNs devices loaded through the bulk route, then one broadcast, timed to the
//! last delivery recorded; and its ceiling, the same mock driven by a bare HTTP/2 client.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::server::{Database, Mocks, Server};
use crate::{poll, proc_status_mb};

/// Devices per bulk request.
const BULK: usize = 2000;

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub devices: usize,
    /// Loading the devices through `POST /v1/apps/bench/devices/bulk`.
    pub load_seconds: f64,
    pub load_devices_per_sec: f64,
    /// From the broadcast request to the mock's count of requests reaching N.
    pub sent_seconds: f64,
    /// From the broadcast request to no delivery pending in the database and the message
    /// out of `WAITING`.
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    /// The message's final state.
    pub state: String,
    /// Requests in which the APNs mock found a problem (should be 0).
    pub faulty_requests: u64,
    /// The server's peak resident memory (`VmHWM`) over its whole life up to the last
    /// delivery: startup, the API measurements, loading and the broadcast.
    pub peak_rss_mb: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CeilingResult {
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub requests_per_sec: f64,
}

fn per_sec(count: usize, seconds: f64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "counts are far below 2^52")]
    let count = count as f64;
    count / seconds.max(f64::EPSILON)
}

/// The APNs token of device `n` of the broadcast.
fn token(n: usize) -> String {
    format!("{:064x}", 0x00be_0000_0000_usize + n)
}

pub async fn fan_out(
    server: &Server,
    mocks: &Mocks,
    database: &Database,
    devices: usize,
) -> anyhow::Result<FanoutResult> {
    let loading = Instant::now();
    let mut start = 0;
    while start < devices {
        let end = (start + BULK).min(devices);
        let batch: Vec<Value> = (start..end)
            .map(|n| json!({"platform": "apns", "token": token(n), "user_id": format!("user-{n}")}))
            .collect();
        let (status, reply) = server
            .post("/v1/apps/bench/devices/bulk", &json!({ "devices": batch }))
            .await?;
        if status != 200 {
            bail!("a bulk registration answered {status}: {reply}");
        }
        start = end;
    }
    let load_seconds = loading.elapsed().as_secs_f64();
    eprintln!("clarion-bench: loaded {devices} devices in {load_seconds:.1} s; broadcasting");

    let before = mocks.apns_counts().await?;
    let expected = before.requests + devices as u64;
    let started = Instant::now();
    let (status, message) = server
        .post(
            "/v1/apps/bench/messages",
            &json!({
                "target": {"broadcast": {"platform": "apns"}},
                "heading": "Clarion",
                "body": "Benchmark broadcast",
                "dispatch": "now",
            }),
        )
        .await?;
    if !(status == 201 || status == 202) {
        bail!("the broadcast answered {status}: {message}");
    }
    let id = message["id"].as_i64().context("the broadcast's id")?;
    // Generous: a run far slower than this is broken, not slow.
    let deadline = Duration::from_secs(120 + (devices / 500) as u64);
    let counts = poll(
        "the APNs mock to receive every delivery",
        deadline,
        Duration::from_millis(20),
        || async {
            let counts = mocks.apns_counts().await?;
            Ok((counts.requests >= expected).then_some(counts))
        },
    )
    .await?;
    let sent_seconds = started.elapsed().as_secs_f64();
    let state = poll(
        "no delivery of the broadcast to be pending",
        deadline,
        Duration::from_millis(50),
        || async {
            let (pending, state) = database.progress(id).await?;
            Ok((pending == 0 && state != "WAITING").then_some(state))
        },
    )
    .await?;
    let seconds = started.elapsed().as_secs_f64();
    let peak_rss_mb = proc_status_mb(server.pid, "VmHWM");
    Ok(FanoutResult {
        devices,
        load_seconds,
        load_devices_per_sec: per_sec(devices, load_seconds),
        sent_seconds,
        seconds,
        deliveries_per_sec: per_sec(devices, seconds),
        state,
        faulty_requests: counts.faulty - before.faulty,
        peak_rss_mb,
    })
}

/// Drives the APNs mock with a bare client: `requests` requests, `concurrency` at a time, on
/// one HTTP/2 connection as Clarion's APNs client uses, with one provider token, and no
/// storage or rendering.
pub async fn ceiling(
    mocks: &Mocks,
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<CeilingResult> {
    let apns = &mocks.description.apns;
    let ca = reqwest::Certificate::from_pem(mocks.description.ca_pem.as_bytes())
        .context("the mocks' CA is not PEM")?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http2_prior_knowledge()
        .build()
        .context("failed to build the bare client")?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(apns.key_id.clone());
    let iat = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(apns.key_pem.as_bytes())
        .context("the APNs key is not an EC PEM key")?;
    let jwt = jsonwebtoken::encode(&header, &json!({"iss": apns.team_id, "iat": iat}), &key)
        .context("failed to sign a provider token")?;
    let authorization = format!("bearer {jwt}");
    let body =
        json!({"aps": {"alert": {"title": "Clarion", "body": "Benchmark broadcast"}}}).to_string();

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next) = (client.clone(), Arc::clone(&next));
        let (base, topic, authorization, body) = (
            apns.url.clone(),
            apns.topic.clone(),
            authorization.clone(),
            body.clone(),
        );
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return anyhow::Ok(());
                }
                let reply = client
                    .post(format!("{base}/3/device/{}", token(n)))
                    .header("authorization", &authorization)
                    .header("apns-topic", &topic)
                    .header("apns-push-type", "alert")
                    .header("apns-priority", "10")
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .context("a bare APNs request failed")?;
                if reply.status() != 200 {
                    let status = reply.status();
                    bail!(
                        "the APNs mock answered {status}: {}",
                        reply.text().await.unwrap_or_default()
                    );
                }
                let _ = reply.bytes().await;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a bare client task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CeilingResult {
        requests,
        concurrency,
        seconds,
        requests_per_sec: per_sec(requests, seconds),
    })
}
