//! A service of its own on Clarion's rules, with no Clarion server and no database: it checks
//! device tokens as they arrive, builds a provider payload and checks it against the
//! provider's limit before anything is sent, and runs `PushService` over in-memory stores with
//! a provider that prints each request, through a retry that the batch worker completes.
//!
//! `cargo run -p clarion-domain --example push_service` runs it; copy `main.rs` and
//! `memory.rs` to start a service of your own, and replace the printing provider with one
//! that sends.

use std::error::Error;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clarion_domain::app::{ApnsSettings, Application, Applications, SenderKind};
use clarion_domain::async_trait;
use clarion_domain::ids::{AppId, UserId};
use clarion_domain::message::{
    Channel, Content, MessageSpec, MessageState, Priority, PushOptions, SendOutcome, Target,
};
use clarion_domain::payload::{self, Payload, PayloadTarget};
use clarion_domain::ports::{Clock, PushProvider};
use clarion_domain::serde_json::json;
use clarion_domain::service::{
    Dispatch, Ports, Providers, PushService, RegisterDevice, SendRequest, ServiceSettings,
};
use clarion_domain::time::OffsetDateTime;
use clarion_domain::time::macros::datetime;
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};

/// The store ports kept in memory (devices, messages with their deliveries, templates) and a
/// renderer for a service that sends no templates. No `//!` line in the file itself: the
/// crate's documentation includes it in a doctest, where an inner doc comment cannot stand.
mod memory;

use memory::{MemoryStore, NoTemplates, describe};

const APNS_TOKEN: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
const ENDPOINT: &str = "https://push.example.com/send/alice-laptop";
const P256DH: &str =
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";

/// A provider that prints each request instead of sending it. It answers its first request
/// as a busy push service would (a transient failure with `Retry-After`), and accepts the
/// others.
#[derive(Debug, Default)]
struct PrintingProvider {
    requests: Mutex<u32>,
}

#[async_trait]
impl PushProvider for PrintingProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let request = match payload {
            Payload::Apns(r) => {
                format!("APNs /3/device/{} ({} bytes)", r.device_token, r.body.len())
            }
            Payload::Fcm(r) => format!("FCM messages:send ({} bytes)", r.body.len()),
            Payload::Webpush(r) => format!(
                "Web Push {} ({} bytes before encryption, TTL {} s)",
                r.subscription.endpoint(),
                r.plaintext.len(),
                r.ttl
            ),
            Payload::Onesignal(r) => format!("OneSignal notifications ({} bytes)", r.body.len()),
        };
        let mut requests = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *requests += 1;
        println!("  {app}: {request}");
        if *requests == 1 {
            return SendOutcome::Transient {
                code: "server_error".to_owned(),
                reason: "the push service is busy".to_owned(),
                retry_after: Some(Duration::from_secs(60)),
            };
        }
        SendOutcome::Accepted {
            provider_id: Some(format!("demo-{requests}")),
            details: None,
        }
    }
}

/// A clock the program moves on by hand, to reach a retry's time without waiting for it. A
/// real service reads the system's clock (`OffsetDateTime::now_utc()`).
#[derive(Debug)]
struct ManualClock(Mutex<OffsetDateTime>);

impl ManualClock {
    fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The application of this service: devices registered directly, APNs topic set.
fn shop() -> Result<Application, Box<dyn Error>> {
    let mut app = Application::new(AppId::parse("shop")?, SenderKind::Direct);
    app.apns = Some(ApnsSettings {
        topic: "com.example.shop".to_owned(),
    });
    Ok(app)
}

/// What the message says and how it is delivered.
fn order_shipped() -> Content {
    Content {
        heading: Some("Your order has shipped".to_owned()),
        body: "Order 42 is on its way.".to_owned(),
        url: Some("https://shop.example.com/orders/42".to_owned()),
        extra_data: json!({"order_id": 42}).as_object().cloned(),
    }
}

/// Checks tokens as a registration endpoint would, before anything is stored.
fn check_tokens() -> Result<(), Box<dyn Error>> {
    println!("1. Tokens are parsed once, at the edge:");
    let apns = DeviceToken::parse(
        Platform::Apns,
        &APNS_TOKEN.to_uppercase(),
        None,
        None,
        EndpointPolicy::PublicOnly,
    )?;
    println!("  accepted {} token {}", apns.platform(), apns.key());
    let private = DeviceToken::parse(
        Platform::Webpush,
        "https://127.0.0.1/push",
        Some(P256DH),
        Some(AUTH),
        EndpointPolicy::PublicOnly,
    );
    if let Err(refused) = private {
        println!("  refused: {refused}");
    }
    Ok(())
}

/// Builds the APNs payload of a message and shows the limit being enforced.
fn build_payloads(app: &Application, now: OffsetDateTime) -> Result<(), Box<dyn Error>> {
    println!("2. Payloads are built and checked before anything is sent:");
    let mut spec = MessageSpec {
        app: app.id.clone(),
        target: Target::User {
            user_id: UserId::parse("alice")?,
        },
        content: order_shipped(),
        template_slug: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions {
            badge: Some(1),
            ..PushOptions::default()
        },
        related_objects: Vec::new(),
        retry_sending: true,
    };
    spec.options.validate()?;
    spec.content.validate(&spec.options)?;
    let token = DeviceToken::parse(
        Platform::Apns,
        APNS_TOKEN,
        None,
        None,
        EndpointPolicy::PublicOnly,
    )?;
    if let Payload::Apns(request) = payload::build(app, &spec, PayloadTarget::Device(&token), now)?
    {
        println!("  {}", String::from_utf8_lossy(&request.body));
    }
    spec.content.body = "x".repeat(5000);
    if let Err(too_large) = payload::build(app, &spec, PayloadTarget::Device(&token), now) {
        println!("  refused: {too_large}");
    }
    Ok(())
}

/// Registers two devices of one user and sends them a message through `PushService`; the
/// first attempt meets a busy push service, and the batch worker sends the rest later.
async fn send_through_the_service(app: Application) -> Result<MessageState, Box<dyn Error>> {
    println!("3. PushService sends over in-memory ports:");
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(ManualClock(Mutex::new(datetime!(2026-03-01 10:00 UTC))));
    let ports = Ports {
        devices: store.clone(),
        messages: store.clone(),
        templates: store.clone(),
        keys: store.clone(),
        reports: store,
        renderer: Arc::new(NoTemplates),
        clock: clock.clone(),
    };
    let provider = Arc::new(PrintingProvider::default());
    let providers = Providers::default()
        .with(Channel::Apns, provider.clone())
        .with(Channel::Fcm, provider.clone())
        .with(Channel::Webpush, provider);
    let apps = Arc::new(Applications::new([app]));
    let service = PushService::new(apps, ports, providers, ServiceSettings::default());

    let alice = UserId::parse("alice")?;
    let iphone = RegisterDevice {
        platform: Platform::Apns,
        token: APNS_TOKEN.to_owned(),
        p256dh: None,
        auth: None,
        name: Some("Alice's iPhone".to_owned()),
        user_id: Some(alice.clone()),
        device_id: None,
    };
    let laptop = RegisterDevice {
        platform: Platform::Webpush,
        token: ENDPOINT.to_owned(),
        p256dh: Some(P256DH.to_owned()),
        auth: Some(AUTH.to_owned()),
        name: Some("Alice's laptop".to_owned()),
        ..iphone.clone()
    };
    for device in [iphone, laptop] {
        let (device, registration) = service.register_device("shop", device).await?;
        println!(
            "  {registration:?} device {} ({})",
            device.id,
            device.platform()
        );
    }

    let request = SendRequest {
        target: Target::User { user_id: alice },
        content: order_shipped(),
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    };
    let message = service.send("shop", request, Dispatch::Now).await?;
    println!("  {}", describe(&message));

    println!("4. Two minutes later the batch worker retries what failed:");
    clock.advance(Duration::from_secs(120));
    let report = service
        .process_batch(100, &|message| println!("  {}", describe(message)))
        .await?;
    println!("  batch: {report:?}");
    let (message, _) = service.get_message("shop", message.id).await?;
    Ok(message.state())
}

async fn run() -> Result<MessageState, Box<dyn Error>> {
    let app = shop()?;
    check_tokens()?;
    build_payloads(&app, datetime!(2026-03-01 10:00 UTC))?;
    send_through_the_service(app).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let state = run().await?;
    println!("The message ended {state}.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_example_sends_its_message_after_one_retry() {
        let state = run().await.expect("the example runs");

        assert_eq!(state, MessageState::Sent);
    }
}
