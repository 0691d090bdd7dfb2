//! The providers' HTTP/2 connection pool against the testkit mocks: it opens no more
//! connections than configured, carries no more requests on each than the peer allows, sends
//! again what a `GOAWAY` refused (nothing lost, nothing twice) and still trusts only the
//! configured roots.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed expectation is a failed test"
)]

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clarion_adapters::config::{
    ApnsConfig, ApnsEnvironment, AppConfig, Config, FcmConfig, Secret, WebPushConfig,
};
use clarion_adapters::providers::apns::ApnsProvider;
use clarion_adapters::providers::fcm::FcmProvider;
use clarion_adapters::providers::http::extra_roots;
use clarion_adapters::providers::webpush::WebPushProvider;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::{
    ApnsHeaders, ApnsPushType, ApnsRequest, FcmRequest, Payload, Urgency, WebPushRequest,
};
use clarion_domain::ports::PushProvider;
use clarion_domain::token::{EndpointPolicy, WebPushSubscription};
use clarion_testkit::{
    ApnsMockConfig, MockApns, MockFcm, MockWebPush, VapidTestKey, WebPushMockConfig, apns_test_key,
};
use support::{temp_dir, write_file};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinSet};

const APP: &str = "shop";
const TEAM_ID: &str = "TEAM123456";
const KEY_ID: &str = "KEY1234567";
const TOPIC: &str = "com.example.shop";

struct Apns {
    mock: MockApns,
    provider: Arc<dyn PushProvider>,
    _dir: TempDir,
}

/// The APNs mock and a provider for it: `connections` and `max_in_flight` as given, the
/// mock's CA trusted when `trust` is set.
async fn apns(connections: Option<usize>, max_in_flight: Option<usize>, trust: bool) -> Apns {
    apns_via(connections, max_in_flight, trust, None).await
}

/// Like [`apns`], the provider connecting through `relay` when given.
async fn apns_via(
    connections: Option<usize>,
    max_in_flight: Option<usize>,
    trust: bool,
    relay: Option<&Relay>,
) -> Apns {
    let (p8, public) = apns_test_key().expect("an APNs test key");
    let mock = MockApns::start(ApnsMockConfig {
        team_id: TEAM_ID.to_owned(),
        key_id: KEY_ID.to_owned(),
        public_key_pem: public,
        topic: TOPIC.to_owned(),
    })
    .await
    .expect("start the APNs mock");
    let dir = temp_dir();
    let mut config = Config::default();
    if trust {
        config.tls.extra_ca_certs = vec![write_file(&dir, "mock-ca.pem", mock.ca_pem())];
    }
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            apns: Some(ApnsConfig {
                team_id: Some(TEAM_ID.to_owned()),
                key_id: Some(KEY_ID.to_owned()),
                key: Some(Secret::File(write_file(&dir, "AuthKey.p8", &p8))),
                certificate: None,
                certificate_key: None,
                topic: TOPIC.to_owned(),
                environment: ApnsEnvironment::Sandbox,
                endpoint: Some(match relay {
                    Some(relay) => format!("https://{}", relay.addr),
                    None => mock.base_url(),
                }),
                timeout_secs: Some(20),
                connections,
                max_in_flight,
            }),
            ..AppConfig::default()
        },
    );
    let roots = extra_roots(&config.tls).unwrap();
    let provider = ApnsProvider::from_config(&config, &roots)
        .unwrap()
        .expect("an APNs provider");
    Apns {
        mock,
        provider: Arc::new(provider),
        _dir: dir,
    }
}

fn apns_payload(n: usize) -> Payload {
    Payload::Apns(ApnsRequest {
        device_token: format!("{n:064x}"),
        headers: ApnsHeaders {
            topic: Some(TOPIC.to_owned()),
            push_type: ApnsPushType::Alert,
            priority: 10,
            expiration: None,
            collapse_id: None,
        },
        body: br#"{"aps":{"alert":{"title":"Hi","body":"There"}}}"#.as_slice().into(),
    })
}

/// Sends `count` payloads at once and returns the outcomes.
async fn send_all(
    provider: &Arc<dyn PushProvider>,
    count: usize,
    payload: fn(usize) -> Payload,
) -> Vec<SendOutcome> {
    let app = AppId::parse(APP).unwrap();
    let mut sends = JoinSet::new();
    for n in 0..count {
        let (provider, app) = (Arc::clone(provider), app.clone());
        sends.spawn(async move { provider.send(&app, &payload(n)).await });
    }
    sends.join_all().await
}

fn assert_all_accepted(outcomes: &[SendOutcome]) {
    let refused: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(o, SendOutcome::Accepted { .. }))
        .collect();
    assert!(
        refused.is_empty(),
        "{} not accepted, such as {:?}",
        refused.len(),
        refused.first()
    );
}

#[tokio::test]
async fn two_connections_to_a_peer_allowing_ten_streams_carry_twenty_requests_at_a_time() {
    let apns = apns(Some(2), None, true).await;
    apns.mock.connections().set_max_concurrent_streams(10);
    apns.mock.set_delay(Duration::from_millis(100));

    let started = Instant::now();
    let outcomes = send_all(&apns.provider, 100, apns_payload).await;
    let elapsed = started.elapsed();

    assert_all_accepted(&outcomes);
    assert_eq!(apns.mock.request_count(), 100);
    // The second connection is opened only once the first carries its ten streams.
    assert_eq!(apns.mock.connections().connections_accepted(), 2);
    // 100 requests of 100 ms, 20 at a time, take at least five round trips; more in flight
    // would take fewer. (No upper bound: on a busy machine it would fail for the wrong
    // reason.)
    assert!(elapsed >= Duration::from_millis(490), "{elapsed:?}");
}

#[tokio::test]
async fn max_in_flight_bounds_the_requests_below_the_streams_the_peer_allows() {
    let apns = apns(Some(4), Some(5), true).await;
    apns.mock.set_delay(Duration::from_millis(100));

    let started = Instant::now();
    let outcomes = send_all(&apns.provider, 20, apns_payload).await;
    let elapsed = started.elapsed();

    assert_all_accepted(&outcomes);
    // Five at a time: four round trips.
    assert!(elapsed >= Duration::from_millis(390), "{elapsed:?}");
    // Lazily opened: five requests fit on the first connection.
    assert_eq!(apns.mock.connections().connections_accepted(), 1);
}

#[tokio::test]
async fn a_goaway_in_the_middle_of_2000_sends_loses_and_doubles_nothing() {
    let apns = apns(None, None, true).await;
    apns.mock.set_delay(Duration::from_millis(20));
    apns.mock.connections().go_away_at_request(700);

    let outcomes = send_all(&apns.provider, 2000, apns_payload).await;

    assert_all_accepted(&outcomes);
    assert!(apns.mock.connections().goaways_sent() >= 1);
    assert_eq!(apns.mock.request_count(), 2000);
    let tokens: HashSet<String> = apns
        .mock
        .requests()
        .into_iter()
        .filter_map(|r| r.view.device_token)
        .collect();
    assert_eq!(tokens.len(), 2000);
    // The connections that went away were replaced.
    assert!(
        apns.mock.connections().connections_accepted() > 1,
        "{}",
        apns.mock.connections().connections_accepted()
    );
}

#[tokio::test]
async fn a_certificate_no_configured_root_vouches_for_fails_with_a_clear_error() {
    let apns = apns(None, None, false).await;

    let outcomes = send_all(&apns.provider, 1, apns_payload).await;

    let [SendOutcome::Transient { code, reason, .. }] = outcomes.as_slice() else {
        panic!("a transient failure, got {outcomes:?}");
    };
    assert_eq!(code, "connection");
    assert!(
        reason.contains("APNs") && reason.contains("invalid peer certificate"),
        "{reason}"
    );
    assert_eq!(apns.mock.request_count(), 0);
}

/// A TCP relay whose connections can be cut.
struct Relay {
    addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Relay {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let (to, all) = (Arc::clone(&target), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let Some(target) = *to.lock().unwrap() else {
                    continue;
                };
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                all.lock().unwrap().push(link.abort_handle());
            }
        });
        Self {
            addr,
            target,
            links,
        }
    }

    fn to(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = Some(target);
    }

    /// Drops every connection made so far, without a word to either side.
    fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

#[tokio::test]
async fn a_request_whose_connection_drops_after_it_was_sent_is_a_transient_failure() {
    let relay = Relay::start().await;
    let apns = apns_via(None, None, true, Some(&relay)).await;
    relay.to(apns.mock.addr());
    apns.mock.set_delay(Duration::from_secs(2));
    let app = AppId::parse(APP).unwrap();

    let provider = Arc::clone(&apns.provider);
    let send = tokio::spawn(async move { provider.send(&app, &apns_payload(1)).await });
    let deadline = Instant::now() + Duration::from_secs(10);
    while apns.mock.request_count() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.cut();
    let outcome = send.await.unwrap();
    apns.mock.set_delay(Duration::ZERO);
    let again = send_all(&apns.provider, 1, apns_payload).await;

    // The mock had the request: the outcome is unknown, so it is the retry policy's.
    assert_eq!(apns.mock.request_count(), 2);
    let SendOutcome::Transient { code, reason, .. } = &outcome else {
        panic!("a transient failure, got {outcome:?}");
    };
    assert_eq!(code, "connection");
    assert!(reason.contains("after the request was sent"), "{reason}");
    // The next send opens a new connection.
    assert_all_accepted(&again);
    assert_eq!(apns.mock.connections().connections_accepted(), 2);
}

const PROJECT: &str = "pool-project";

fn fcm_payload(n: usize) -> Payload {
    Payload::Fcm(FcmRequest {
        token: format!("token-{n}"),
        body: serde_json::to_vec(&serde_json::json!({
            "message": {"token": format!("token-{n}"), "notification": {"title": "Hi"}}
        }))
        .unwrap(),
    })
}

#[tokio::test]
async fn fcm_over_plain_http_is_pooled_and_survives_a_goaway_too() {
    let mock = MockFcm::start(PROJECT).await.expect("start the FCM mock");
    mock.connections().set_max_concurrent_streams(50);
    mock.set_delay(Duration::from_millis(20));
    mock.connections().go_away_at_request(300);
    let mut config = Config::default();
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            fcm: Some(FcmConfig {
                service_account: Secret::Inline(mock.service_account().json),
                endpoint: Some(mock.base_url()),
                timeout_secs: Some(20),
                connections: Some(2),
                max_in_flight: None,
            }),
            ..AppConfig::default()
        },
    );
    let provider: Arc<dyn PushProvider> = Arc::new(
        FcmProvider::from_config(&config, &extra_roots(&config.tls).unwrap())
            .unwrap()
            .expect("an FCM provider"),
    );

    let outcomes = send_all(&provider, 1000, fcm_payload).await;

    assert_all_accepted(&outcomes);
    assert_eq!(mock.request_count(), 1000);
    assert!(mock.connections().goaways_sent() >= 1);
    let versions: HashSet<String> = mock.requests().into_iter().map(|r| r.version).collect();
    assert_eq!(versions, HashSet::from(["HTTP/2.0".to_owned()]));
}

fn webpush_provider(dir: &TempDir, mock: &MockWebPush, allow_private: bool) -> WebPushProvider {
    let key = VapidTestKey::generate().unwrap();
    let mut config = Config::default();
    config.tls.extra_ca_certs = vec![write_file(dir, "push-ca.pem", mock.ca_pem())];
    config.apps.insert(
        APP.to_owned(),
        AppConfig {
            webpush: Some(WebPushConfig {
                vapid_private_key: Secret::Inline(key.private_key_b64url.clone()),
                subject: "mailto:ops@example.com".to_owned(),
                allow_private_endpoints: allow_private,
                timeout_secs: Some(20),
                connections: Some(1),
                max_in_flight: None,
            }),
            ..AppConfig::default()
        },
    );
    WebPushProvider::from_config(&config, &extra_roots(&config.tls).unwrap())
        .unwrap()
        .expect("a Web Push provider")
}

fn webpush_payload(endpoint: &str, p256dh: &str, auth: &str) -> Payload {
    Payload::Webpush(WebPushRequest {
        subscription: WebPushSubscription::parse(
            endpoint,
            p256dh,
            auth,
            EndpointPolicy::AllowPrivate,
        )
        .unwrap(),
        plaintext: br#"{"title":"Hi"}"#.to_vec(),
        ttl: 60,
        urgency: Urgency::Normal,
        topic: None,
    })
}

#[tokio::test]
async fn web_push_keeps_a_pool_per_origin_and_reaches_loopback_only_when_allowed() {
    let config = || WebPushMockConfig {
        expected_vapid_public_key: None,
    };
    let one = MockWebPush::start(config()).await.unwrap();
    // Both push services' certificates come from one CA, which the provider trusts.
    let other = MockWebPush::start_with_ca(config(), one.ca())
        .await
        .unwrap();
    let dir = temp_dir();
    let payload_for = |mock: &MockWebPush, name: bool| {
        let subscription = mock.new_subscription();
        let endpoint = if name {
            subscription.endpoint.replace("127.0.0.1", "localhost")
        } else {
            subscription.endpoint.clone()
        };
        webpush_payload(&endpoint, &subscription.p256dh, &subscription.auth)
    };
    let app = AppId::parse(APP).unwrap();

    let strict = webpush_provider(&dir, &one, false);
    let mut refused = Vec::new();
    for payload in [payload_for(&one, false), payload_for(&one, true)] {
        refused.push(strict.send(&app, &payload).await);
    }
    let allowed: Arc<dyn PushProvider> = Arc::new(webpush_provider(&dir, &one, true));
    let mut sends = JoinSet::new();
    for n in 0..20 {
        let mock = if n % 2 == 0 { &one } else { &other };
        let (provider, app, payload) =
            (Arc::clone(&allowed), app.clone(), payload_for(mock, false));
        sends.spawn(async move { provider.send(&app, &payload).await });
    }
    let sent = sends.join_all().await;

    for outcome in &refused {
        let SendOutcome::Permanent { code, reason, .. } = outcome else {
            panic!("a permanent refusal, got {outcome:?}");
        };
        assert_eq!(code, "endpoint_not_public");
        assert!(reason.contains("allow_private_endpoints"), "{reason}");
    }
    assert_all_accepted(&sent);
    assert_eq!((one.request_count(), other.request_count()), (10, 10));
    // One pool, so one connection, per push-service origin.
    assert_eq!(
        (
            one.connections().connections_accepted(),
            other.connections().connections_accepted()
        ),
        (1, 1)
    );
}
