//! The ceiling: the mock providers driven by a bare HTTP/2 client (`h2` directly, so that the
//! connections are ours) with the same number of connections and requests in flight as
//! Clarion's provider pool, one provider token, the same payload, and no storage or
//! rendering. Web Push's bare client also encrypts each payload (RFC 8291) as a sender must.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpStream;

use crate::Platform;
use crate::server::Mocks;

/// What a ceiling run measured.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingResult {
    pub platform: Platform,
    pub requests: usize,
    pub connections: usize,
    /// Requests in flight over all connections (each connection also keeps to the stream limit
    /// the mock advertises).
    pub in_flight: usize,
    /// Push-service origins (Web Push: one set of connections per origin, as Clarion's pool).
    pub origins: usize,
    pub seconds: f64,
    pub requests_per_sec: f64,
}

/// How the ceiling is shaped: Clarion's pool settings.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub connections: usize,
    pub max_in_flight: usize,
}

/// One request: its path (with query), headers and body.
struct Request {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
}

/// One origin's connections.
struct Origin {
    scheme: &'static str,
    authority: String,
    senders: Vec<h2::client::SendRequest<Bytes>>,
}

type MakeRequest = dyn Fn(usize) -> anyhow::Result<(usize, Request)> + Send + Sync;

/// `https://127.0.0.1:port` or `http://…` split into whether it is TLS, and the address.
fn parse_origin(url: &str) -> anyhow::Result<(bool, String, SocketAddr)> {
    let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (false, rest)
    } else {
        bail!("the mock URL {url:?} is neither https:// nor http://");
    };
    let authority = rest.split('/').next().unwrap_or_default().to_owned();
    let addr: SocketAddr = authority
        .parse()
        .with_context(|| format!("the mock URL {url:?} is not an IP address and port"))?;
    Ok((tls, authority, addr))
}

fn tls_config(ca_pem: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("the mocks' CA is not PEM")?)
            .context("the mocks' CA is not a usable certificate")?;
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

async fn connect(
    url: &str,
    connections: usize,
    tls: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<Origin> {
    let (is_tls, authority, addr) = parse_origin(url)?;
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("failed to connect to the mock at {addr}"))?;
        tcp.set_nodelay(true).ok();
        let sender = if is_tls {
            let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
            let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS with the mock at {addr} failed"))?;
            let (sender, connection) = handshake(stream)
                .await
                .with_context(|| format!("the HTTP/2 handshake with {addr} failed"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        } else {
            let (sender, connection) = handshake(tcp)
                .await
                .with_context(|| format!("the HTTP/2 handshake with {addr} failed"))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        };
        senders.push(sender);
    }
    Ok(Origin {
        scheme: if is_tls { "https" } else { "http" },
        authority,
        senders,
    })
}

/// An HTTP/2 client handshake with hyper's default windows (5 MB per connection, 2 MB per
/// stream), so that flow control holds back the ceiling no more than it holds back a
/// hyper-based client.
async fn handshake<T>(
    io: T,
) -> Result<
    (
        h2::client::SendRequest<Bytes>,
        h2::client::Connection<T, Bytes>,
    ),
    h2::Error,
>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    h2::client::Builder::new()
        .initial_connection_window_size(5 * 1024 * 1024)
        .initial_window_size(2 * 1024 * 1024)
        .handshake(io)
        .await
}

/// Sends `requests` requests made by `make` (which names the origin of each) over `origins`,
/// `shape.max_in_flight` at a time over all of them (the pool's bound is per application and
/// provider, its connections per origin), and times them.
async fn drive(
    platform: Platform,
    origins: Vec<Origin>,
    shape: Shape,
    requests: usize,
    ok_status: u16,
    make: Arc<MakeRequest>,
) -> anyhow::Result<CeilingResult> {
    let origins = Arc::new(origins);
    let next = Arc::new(AtomicUsize::new(0));
    let in_flight = shape.max_in_flight.max(1);
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..in_flight {
        let (origins, next, make) = (Arc::clone(&origins), Arc::clone(&next), Arc::clone(&make));
        workers.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= requests {
                    return anyhow::Ok(());
                }
                let (origin_index, request) = make(n)?;
                let origin = origins
                    .get(origin_index)
                    .context("a request named an origin that has no connections")?;
                let sender = origin
                    .senders
                    .get(worker % origin.senders.len().max(1))
                    .context("an origin has no connections")?
                    .clone();
                send(origin, sender, request, ok_status).await?;
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a bare client task panicked")??;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(CeilingResult {
        platform,
        requests,
        connections: shape.connections,
        in_flight: shape.max_in_flight,
        origins: origins.len(),
        seconds,
        requests_per_sec: crate::per_sec(requests, seconds),
    })
}

async fn send(
    origin: &Origin,
    sender: h2::client::SendRequest<Bytes>,
    request: Request,
    ok_status: u16,
) -> anyhow::Result<()> {
    let mut builder = http::Request::post(format!(
        "{}://{}{}",
        origin.scheme, origin.authority, request.path
    ));
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let head = builder.body(()).context("a bare request is malformed")?;
    let mut sender = sender.ready().await.context("a bare connection closed")?;
    let (reply, mut stream) = sender
        .send_request(head, request.body.is_empty())
        .context("a bare request could not be sent")?;
    if !request.body.is_empty() {
        stream
            .send_data(request.body, true)
            .context("a bare request's body could not be sent")?;
    }
    let reply = reply.await.context("a bare request got no answer")?;
    let status = reply.status().as_u16();
    let mut body = reply.into_body();
    let mut text = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.context("a bare answer's body broke off")?;
        body.flow_control().release_capacity(chunk.len()).ok();
        if text.len() < 512 {
            text.extend_from_slice(&chunk);
        }
    }
    if status != ok_status {
        bail!(
            "the mock answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// The APNs ceiling: one provider token, the broadcast's payload.
pub async fn apns(mocks: &Mocks, shape: Shape, requests: usize) -> anyhow::Result<CeilingResult> {
    let apns = &mocks.description.apns;
    let tls = tls_config(&mocks.description.ca_pem)?;
    let origin = connect(&apns.url, shape.connections, &tls).await?;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(apns.key_id.clone());
    let key = jsonwebtoken::EncodingKey::from_ec_pem(apns.key_pem.as_bytes())
        .context("the APNs key is not an EC PEM key")?;
    let jwt = jsonwebtoken::encode(
        &header,
        &json!({"iss": apns.team_id, "iat": unix_now()}),
        &key,
    )
    .context("failed to sign a provider token")?;
    let authorization = format!("bearer {jwt}");
    let topic = apns.topic.clone();
    let body = Bytes::from(crate::fanout::apns_payload().to_string());
    let make = move |n: usize| {
        Ok((
            0,
            Request {
                path: format!("/3/device/{}", crate::fanout::apns_token(n)),
                headers: vec![
                    ("authorization", authorization.clone()),
                    ("apns-topic", topic.clone()),
                    ("apns-push-type", "alert".to_owned()),
                    ("apns-priority", "10".to_owned()),
                    ("content-type", "application/json".to_owned()),
                ],
                body: body.clone(),
            },
        ))
    };
    drive(
        Platform::Apns,
        vec![origin],
        shape,
        requests,
        200,
        Arc::new(make),
    )
    .await
}

/// The FCM ceiling: one OAuth access token (fetched once, as Clarion caches it), the
/// broadcast's message.
pub async fn fcm(mocks: &Mocks, shape: Shape, requests: usize) -> anyhow::Result<CeilingResult> {
    let fcm = &mocks.description.fcm;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(fcm.private_key_id.clone());
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fcm.private_key_pem.as_bytes())
        .context("the FCM service account's key is not an RSA PEM key")?;
    let now = unix_now();
    let assertion = jsonwebtoken::encode(
        &header,
        &json!({
            "iss": fcm.client_email,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
            "aud": fcm.token_uri,
            "iat": now,
            "exp": now + 3600,
        }),
        &key,
    )
    .context("failed to sign the OAuth assertion")?;
    let reply: serde_json::Value = reqwest::Client::new()
        .post(&fcm.token_uri)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .context("the FCM token request failed")?
        .json()
        .await
        .context("the FCM token answer is not JSON")?;
    let access_token = reply["access_token"]
        .as_str()
        .with_context(|| format!("the FCM token endpoint gave no access_token: {reply}"))?;
    let authorization = format!("Bearer {access_token}");
    let path = format!("/v1/projects/{}/messages:send", fcm.project_id);

    let tls = tls_config(&mocks.description.ca_pem)?;
    let origin = connect(&fcm.url, shape.connections, &tls).await?;
    let make = move |n: usize| {
        let body = json!({"message": {
            "token": crate::fanout::fcm_token(n),
            "notification": {"title": crate::fanout::HEADING, "body": crate::fanout::BODY},
        }});
        Ok((
            0,
            Request {
                path: path.clone(),
                headers: vec![
                    ("authorization", authorization.clone()),
                    ("content-type", "application/json".to_owned()),
                ],
                body: Bytes::from(body.to_string()),
            },
        ))
    };
    drive(
        Platform::Fcm,
        vec![origin],
        shape,
        requests,
        200,
        Arc::new(make),
    )
    .await
}

/// The Web Push ceiling: the subscriptions of every origin in turn, one VAPID JWT per origin,
/// each payload encrypted for its subscription with a fresh key and salt (RFC 8291, with the
/// function Clarion's Web Push client calls, `clarion_adapters::providers::webpush_ece`).
pub async fn webpush(
    mocks: &Mocks,
    shape: Shape,
    requests: usize,
) -> anyhow::Result<CeilingResult> {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    let webpush = &mocks.description.webpush;
    let tls = tls_config(&mocks.description.ca_pem)?;
    let vapid = clarion_testkit::VapidTestKey {
        private_key_pem: webpush.vapid_private_key_pem.clone(),
        private_key_b64url: webpush.vapid_private_key_b64url.clone(),
        public_key_b64url: webpush.vapid_public_key_b64url.clone(),
    };
    let exp = i64::try_from(unix_now()).unwrap_or(i64::MAX / 2) + 12 * 3600;
    let mut origins = Vec::with_capacity(webpush.origins.len());
    let mut authorizations = Vec::with_capacity(webpush.origins.len());
    for url in &webpush.origins {
        origins.push(connect(url, shape.connections, &tls).await?);
        authorizations.push(vapid.authorization(url, "mailto:bench@example.com", exp)?);
    }
    struct Target {
        origin: usize,
        path: String,
        public: Vec<u8>,
        auth: [u8; 16],
    }
    let mut targets = Vec::with_capacity(webpush.subscriptions.len());
    for s in &webpush.subscriptions {
        let (_, authority, _) = parse_origin(&s.endpoint)?;
        let origin = origins
            .iter()
            .position(|o| o.authority == authority)
            .with_context(|| format!("the subscription {} has no known origin", s.endpoint))?;
        let path = s
            .endpoint
            .split_once(&authority)
            .map(|(_, path)| path.to_owned())
            .unwrap_or_default();
        let public = URL_SAFE_NO_PAD
            .decode(&s.p256dh)
            .ok()
            .filter(|key| key.len() == 65 && key.first() == Some(&4))
            .context("a subscription's p256dh is not an uncompressed P-256 point")?;
        let auth: [u8; 16] = URL_SAFE_NO_PAD
            .decode(&s.auth)
            .ok()
            .and_then(|auth| auth.try_into().ok())
            .context("a subscription's auth secret is not 16 bytes")?;
        targets.push(Target {
            origin,
            path,
            public,
            auth,
        });
    }
    if targets.is_empty() {
        bail!("the mocks made no Web Push subscriptions");
    }
    let plaintext = crate::fanout::webpush_payload().to_string().into_bytes();
    let make = move |n: usize| {
        let target = targets
            .get(n % targets.len())
            .context("no subscription to send to")?;
        let body = clarion_adapters::providers::webpush_ece::encrypt(
            &plaintext,
            &target.public,
            &target.auth,
        )
        .map_err(|e| anyhow::anyhow!("RFC 8291 encryption failed: {e}"))?;
        let authorization = authorizations
            .get(target.origin)
            .context("an origin has no VAPID authorization")?;
        Ok((
            target.origin,
            Request {
                path: target.path.clone(),
                headers: vec![
                    ("authorization", authorization.clone()),
                    ("ttl", "2419200".to_owned()),
                    ("urgency", "high".to_owned()),
                    ("content-encoding", "aes128gcm".to_owned()),
                    ("content-type", "application/octet-stream".to_owned()),
                ],
                body: Bytes::from(body),
            },
        ))
    };
    drive(
        Platform::Webpush,
        origins,
        shape,
        requests,
        201,
        Arc::new(make),
    )
    .await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mock_url_gives_its_scheme_and_address() {
        let (tls, authority, addr) = parse_origin("https://127.0.0.1:8443/push/abc").unwrap();
        assert!(tls);
        assert_eq!(authority, "127.0.0.1:8443");
        assert_eq!(addr.port(), 8443);
        let (tls, _, _) = parse_origin("http://127.0.0.1:80").unwrap();
        assert!(!tls);
    }

    #[test]
    fn a_mock_url_by_name_or_without_scheme_is_refused() {
        assert!(parse_origin("https://localhost:8443").is_err());
        assert!(parse_origin("127.0.0.1:8443").is_err());
    }
}
