//! Fan-out: N devices of one platform loaded through the bulk route, then one broadcast to
//! them, timed to the last delivery recorded. APNs and FCM devices have made-up tokens; Web
//! Push devices are the mocks' subscriptions, spread over every push-service origin.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde::Serialize;
use serde_json::{Value, json};

use crate::server::{Database, Mocks, Server, apps};
use crate::{Platform, per_sec, poll, proc_status_mb};

/// Devices per bulk request.
const BULK: usize = 2000;

/// The broadcast's title and text.
pub const HEADING: &str = "Clarion";
pub const BODY: &str = "Benchmark broadcast";

/// Loading one platform's devices.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub platform: Platform,
    pub devices: usize,
    /// Loading the devices through `POST /v1/apps/{app}/devices/bulk`.
    pub seconds: f64,
    pub devices_per_sec: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub platform: Platform,
    /// The mocks' answer delay during the broadcast.
    pub provider_rtt_ms: u64,
    pub devices: usize,
    /// From the broadcast request to the mock's count of requests reaching N.
    pub sent_seconds: f64,
    /// From the broadcast request to no delivery pending in the database and the message
    /// out of `WAITING`.
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    /// The message's final state.
    pub state: String,
    /// Requests in which the mock found a problem (should be 0).
    pub faulty_requests: u64,
    /// The server's peak resident memory (`VmHWM`) over its whole life up to the last
    /// delivery of this broadcast.
    pub peak_rss_mb: f64,
}

/// The APNs token of device `n`.
pub fn apns_token(n: usize) -> String {
    format!("{:064x}", 0x00be_0000_0000_usize + n)
}

/// The FCM registration token of device `n`.
pub fn fcm_token(n: usize) -> String {
    format!("bench-fcm:{n:010}")
}

/// The body of an APNs notification of the broadcast.
pub fn apns_payload() -> Value {
    json!({"aps": {"alert": {"title": HEADING, "body": BODY}}})
}

/// The plaintext of a Web Push notification of the broadcast.
pub fn webpush_payload() -> Value {
    json!({"title": HEADING, "body": BODY})
}

fn app(platform: Platform) -> &'static str {
    match platform {
        Platform::Apns => apps::APNS,
        Platform::Fcm => apps::FCM,
        Platform::Webpush => apps::WEBPUSH,
    }
}

fn device(mocks: &Mocks, platform: Platform, n: usize) -> anyhow::Result<Value> {
    let user_id = format!("user-{n}");
    Ok(match platform {
        Platform::Apns => json!({"platform": "apns", "token": apns_token(n), "user_id": user_id}),
        Platform::Fcm => json!({"platform": "fcm", "token": fcm_token(n), "user_id": user_id}),
        Platform::Webpush => {
            let s = mocks
                .description
                .webpush
                .subscriptions
                .get(n)
                .context("fewer Web Push subscriptions than devices")?;
            json!({"platform": "webpush", "token": s.endpoint, "p256dh": s.p256dh,
                   "auth": s.auth, "user_id": user_id})
        }
    })
}

/// Registers `devices` devices of `platform` in its application, 2,000 a request.
pub async fn load(
    server: &Server,
    mocks: &Mocks,
    platform: Platform,
    devices: usize,
) -> anyhow::Result<LoadResult> {
    let loading = Instant::now();
    let path = format!("/v1/apps/{}/devices/bulk", app(platform));
    let mut start = 0;
    while start < devices {
        let end = (start + BULK).min(devices);
        let batch = (start..end)
            .map(|n| device(mocks, platform, n))
            .collect::<anyhow::Result<Vec<Value>>>()?;
        let (status, reply) = server.post(&path, &json!({ "devices": batch })).await?;
        if status != 200 {
            bail!("a bulk registration answered {status}: {reply}");
        }
        start = end;
    }
    let seconds = loading.elapsed().as_secs_f64();
    Ok(LoadResult {
        platform,
        devices,
        seconds,
        devices_per_sec: per_sec(devices, seconds),
    })
}

/// One broadcast to the `devices` devices of `platform` loaded before, timed to its last
/// delivery.
pub async fn broadcast(
    server: &Server,
    mocks: &Mocks,
    database: &Database,
    platform: Platform,
    devices: usize,
    provider_rtt_ms: u64,
) -> anyhow::Result<FanoutResult> {
    let before = mocks.counts(platform).await?;
    let expected = before.requests + devices as u64;
    let started = Instant::now();
    let (status, message) = server
        .post(
            &format!("/v1/apps/{}/messages", app(platform)),
            &json!({
                "target": {"broadcast": {"platform": platform.as_str()}},
                "heading": HEADING,
                "body": BODY,
                "dispatch": "now",
            }),
        )
        .await?;
    if !(status == 201 || status == 202) {
        bail!("the broadcast answered {status}: {message}");
    }
    let id = message["id"].as_i64().context("the broadcast's id")?;
    // Generous: a run far slower than this is broken, not slow.
    let deadline = Duration::from_secs(120 + (devices / 200) as u64);
    let counts = poll(
        "the mock to receive every delivery",
        deadline,
        Duration::from_millis(20),
        || async {
            let counts = mocks.counts(platform).await?;
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
        platform,
        provider_rtt_ms,
        devices,
        sent_seconds,
        seconds,
        deliveries_per_sec: per_sec(devices, seconds),
        state,
        faulty_requests: counts.faulty.saturating_sub(before.faulty),
        peak_rss_mb,
    })
}
