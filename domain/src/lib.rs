//! Clarion's domain: validated types, models, the message state machine, provider payloads,
//! ports and services. It does no I/O, so other services can reuse it: a backend that checks
//! device tokens before it stores them, builds provider payloads itself, or runs its own sender
//! on Clarion's rules.
//!
//! # The model
//!
//! **Applications** ([`app`]). Clarion serves many applications (tenants) in one process. An
//! [`Application`](app::Application) has an id ([`AppId`](ids::AppId), a slug such as `shop`),
//! a [`SenderKind`](app::SenderKind) (`direct` to its registered devices, `onesignal` by
//! external user id, or `debug`, which sends nothing), a [`RetryPolicy`](retry::RetryPolicy),
//! whether its devices may use private Web Push endpoints, and the non-secret provider settings
//! that shape payloads. Credentials never reach the domain.
//!
//! **Devices and tokens** ([`device`], [`token`]). A [`Device`](device::Device) is registered
//! with one application for one [`Platform`](token::Platform) (`apns`, `fcm`, `webpush`),
//! optionally owned by a user ([`UserId`](ids::UserId)). Its [`DeviceToken`](token::DeviceToken)
//! is parsed once, at the edge: an APNs token is 64 to 200 hexadecimal characters (stored
//! lower-case), an FCM token 1 to 4096 printable ASCII characters, and a Web Push subscription an
//! `https` endpoint on a public host with a 65-byte P-256 key and a 16-byte secret. A device is
//! unique by application, platform and token: registering a token again updates its device.
//!
//! **Messages and their states** ([`message`]). A [`MessageSpec`](message::MessageSpec) is what
//! a caller decides: the application, the [`Target`](message::Target) (a user's active devices,
//! listed devices, or a broadcast), the [`Content`](message::Content), the
//! [`PushOptions`](message::PushOptions) and the related objects. A stored
//! [`Message`](message::Message) moves through these states, and only these; every other
//! transition is refused with [`IllegalTransition`](message::IllegalTransition):
//!
//! ```text
//! WAITING     -> SENT | ERROR | ERROR_RETRY | DEBUG
//! ERROR_RETRY -> SENT | ERROR | ERROR_RETRY
//! ERROR       -> WAITING            (an operator's retry)
//! ```
//!
//! SENT means every delivery was accepted, or some were and the rest failed for good; ERROR that
//! nothing could be delivered; ERROR_RETRY that a delivery failed for a transient reason and
//! attempts remain; DEBUG that the debug sender took it.
//!
//! **Deliveries.** A message has one [`Delivery`](message::Delivery) per targeted device (or
//! OneSignal user). A provider's [`SendOutcome`](message::SendOutcome) moves a delivery to
//! accepted, failed, dead token (the device is deactivated) or retrying; an accepted delivery
//! is never sent again. A delivery's state and a message's progress are private: they change
//! only through these methods, and a store rebuilds them through
//! [`Message::from_storage`](message::Message::from_storage) and
//! [`Delivery::from_storage`](message::Delivery::from_storage), which refuse what the state
//! machine cannot reach. When an attempt's outcomes are in,
//! [`Message::finish_attempt`](message::Message::finish_attempt) decides the message's state
//! from them.
//!
//! **The retry policy** ([`retry`]). A message gets `max_attempts` attempts in all (4 by
//! default). After a transient failure only the failed deliveries are sent again, after an
//! exponential backoff from `base_delay` capped at `max_delay`, with jitter, and never sooner
//! than the provider's `Retry-After`. A message older than `max_age` is given up.
//!
//! **Payloads and their limits** ([`payload`]). [`payload::build`] turns a message spec into the
//! request of one provider ([`Payload`](payload::Payload)) and checks its size against the
//! provider's limit before anything is sent: APNs 4096 bytes, FCM 4096 bytes, Web Push 3993
//! bytes of plaintext (what fits one 4096-byte encrypted record), OneSignal 4096 bytes. An
//! oversized message fails with [`PayloadError::TooLarge`](payload::PayloadError::TooLarge),
//! naming the provider, the limit and the size. The builders check the options themselves
//! ([`PayloadError::Invalid`](payload::PayloadError::Invalid), with the error of
//! [`PushOptions::validate`](message::PushOptions::validate)); check the content with
//! [`Content::validate`](message::Content::validate) first, as the services do.
//!
//! **Ports and `PushService`** ([`ports`], [`service`]). The domain declares what it needs from
//! the outside world as async traits: the stores ([`DeviceStore`](ports::DeviceStore),
//! [`MessageStore`](ports::MessageStore), [`TemplateStore`](ports::TemplateStore),
//! [`ApiKeyStore`](ports::ApiKeyStore), [`ReportStore`](ports::ReportStore)), a
//! [`PushProvider`](ports::PushProvider) per channel, a
//! [`TemplateRenderer`](ports::TemplateRenderer) and a [`Clock`](ports::Clock). Clarion's
//! adapters implement them with SQLite, PostgreSQL, HTTP/2 clients and MiniJinja; a service of
//! your own may implement them over anything. [`PushService`](service::PushService) holds them
//! (as `Arc<dyn Port>`) and carries out every use case: register devices, send (directly or from
//! a template), process a batch of due messages, retry, cancel and prune.
//!
//! # Examples
//!
//! Check tokens and subscriptions as they arrive. Each refusal names the field and the rule:
//!
//! ```
//! use clarion_domain::token::{
//!     ApnsToken, DeviceToken, EndpointPolicy, FcmToken, Platform, TokenError,
//!     WebPushSubscription,
//! };
//!
//! let apns = ApnsToken::parse(&"A1B2".repeat(16))?;
//! assert_eq!(apns.as_str(), "a1b2".repeat(16)); // stored lower-case
//! assert_eq!(ApnsToken::parse("abc"), Err(TokenError::ApnsLength(3)));
//! assert!(matches!(FcmToken::parse("has space"), Err(TokenError::FcmCharacter(' '))));
//!
//! const P256DH: &str =
//!     "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
//! const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
//! let subscription = WebPushSubscription::parse(
//!     "https://push.example.com/send/1",
//!     P256DH,
//!     AUTH,
//!     EndpointPolicy::PublicOnly,
//! )?;
//! assert_eq!(subscription.endpoint(), "https://push.example.com/send/1");
//! // A private address is refused unless the application allows private endpoints.
//! let policy = EndpointPolicy::PublicOnly;
//! let private = WebPushSubscription::parse("https://10.0.0.1/push", P256DH, AUTH, policy);
//! assert!(matches!(private, Err(TokenError::EndpointNotPublic(_))));
//!
//! // Raw registration fields, as an API receives them; the platform's aliases are accepted.
//! let token = DeviceToken::parse("android".parse()?, "fcm-token", None, None, policy)?;
//! assert_eq!(token.platform(), Platform::Fcm);
//! // Read through serde, a token is checked by the same parser.
//! let json = r#"{"platform":"apns","token":"zz"}"#;
//! assert!(clarion_domain::serde_json::from_str::<DeviceToken>(json).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Build a message spec, check it, and build its payload for each provider, with the limits
//! enforced:
//!
//! ```
//! use clarion_domain::app::{ApnsSettings, Application, SenderKind};
//! use clarion_domain::ids::{AppId, UserId};
//! use clarion_domain::message::{Content, MessageSpec, OptionError, PushOptions, Target};
//! use clarion_domain::payload::{self, Payload, PayloadError, PayloadTarget};
//! use clarion_domain::serde_json::{self, json};
//! use clarion_domain::time::macros::datetime;
//! use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
//!
//! let mut app = Application::new(AppId::parse("shop")?, SenderKind::Direct);
//! app.apns = Some(ApnsSettings { topic: "com.example.shop".to_owned() });
//! let target = Target::User { user_id: UserId::parse("alice")? };
//! let content = Content {
//!     heading: Some("Shipped".to_owned()),
//!     body: "Order 42 is on its way.".to_owned(),
//!     url: None,
//!     extra_data: json!({"order_id": 42}).as_object().cloned(),
//! };
//! let options = PushOptions {
//!     collapse_key: Some("order-42".to_owned()),
//!     time_to_live: Some(3600),
//!     ..PushOptions::default()
//! };
//! let mut spec = MessageSpec::new(app.id.clone(), target, content).with_options(options);
//! // The builders check the options themselves; check the content first.
//! spec.content.validate(&spec.options)?;
//! let too_long = PushOptions { time_to_live: Some(u32::MAX), ..PushOptions::default() };
//! assert!(matches!(too_long.validate(), Err(OptionError::TimeToLive(_))));
//!
//! let now = datetime!(2026-03-01 10:00 UTC);
//! let policy = EndpointPolicy::PublicOnly;
//! let apns = DeviceToken::parse(Platform::Apns, &"ab".repeat(32), None, None, policy)?;
//! let build = |token| payload::build(&app, &spec, PayloadTarget::Device(token), now);
//! let Payload::Apns(request) = build(&apns)? else {
//!     return Err("not an APNs request".into());
//! };
//! assert_eq!(request.headers.topic.as_deref(), Some("com.example.shop"));
//! assert_eq!(request.headers.collapse_id.as_deref(), Some("order-42"));
//!
//! let fcm = DeviceToken::parse(Platform::Fcm, "fcm-token", None, None, policy)?;
//! let Payload::Fcm(request) = build(&fcm)? else {
//!     return Err("not an FCM request".into());
//! };
//! let body: serde_json::Value = serde_json::from_slice(&request.body)?;
//! assert_eq!(body["message"]["data"]["order_id"], "42"); // FCM data values are strings
//!
//! let endpoint = "https://push.example.com/send/1";
//! let p256dh =
//!     "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
//! let auth = "BTBZMqHH6r4Tts7J_aSIgg";
//! let webpush =
//!     DeviceToken::parse(Platform::Webpush, endpoint, Some(p256dh), Some(auth), policy)?;
//! let Payload::Webpush(request) = build(&webpush)? else {
//!     return Err("not a Web Push request".into());
//! };
//! assert_eq!((request.ttl, request.topic.as_deref()), (3600, Some("order-42")));
//!
//! // Over the limit, nothing is built, and the error says by how much.
//! spec.content.body = "x".repeat(5000);
//! match payload::build(&app, &spec, PayloadTarget::Device(&apns), now) {
//!     Err(PayloadError::TooLarge { provider, limit, size }) => {
//!         assert_eq!((provider, limit), ("APNs", payload::apns::LIMIT));
//!         assert!(size > limit);
//!     }
//!     other => return Err(format!("expected TooLarge, got {other:?}").into()),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Drive the state machine through a retry: a transient failure with `Retry-After` leaves the
//! message ERROR_RETRY until its next attempt is due, and the next attempt concludes it:
//!
//! ```
//! use std::time::Duration;
//!
//! use clarion_domain::app::SenderKind;
//! use clarion_domain::ids::{AppId, DeliveryId, DeviceId, MessageId};
//! use clarion_domain::message::{
//!     Channel, Content, Delivery, Message, MessageSpec, MessageState, SendOutcome, Target,
//! };
//! use clarion_domain::retry::RetryPolicy;
//! use clarion_domain::time::macros::datetime;
//!
//! let now = datetime!(2026-03-01 10:00 UTC);
//! let target = Target::Devices { device_ids: vec![DeviceId(7)] };
//! let content = Content { body: "Hello".to_owned(), ..Content::default() };
//! // The defaults: high priority, no options, retries on.
//! let spec = MessageSpec::new(AppId::parse("shop")?, target, content);
//! let id = MessageId(1);
//! let progress = Message::initial_progress(now);
//! // A store rebuilds a message through this checked constructor; it refuses a progress the
//! // state machine cannot reach, such as a SENT message without `sent_at`.
//! let mut message = Message::from_storage(id, spec, SenderKind::Direct, progress, now, now)?;
//! let device = Some(DeviceId(7));
//! message.deliveries.push(Delivery::pending(DeliveryId(1), id, device, Channel::Apns, now));
//! let policy = RetryPolicy::default();
//!
//! // The first attempt meets a busy provider.
//! let wait = Duration::from_secs(120);
//! let busy = SendOutcome::Transient {
//!     code: "server_error".to_owned(),
//!     reason: "the push service is busy".to_owned(),
//!     retry_after: Some(wait),
//! };
//! message.record_outcome(DeliveryId(1), &busy, now);
//! message.finish_attempt(&policy, Some(wait), now)?;
//! assert_eq!(message.state(), MessageState::ErrorRetry);
//! let due = message.next_attempt_at().ok_or("no next attempt")?;
//! assert!(due >= now + wait);
//! assert!(!message.is_due(now) && message.is_due(due));
//!
//! // The second attempt is accepted: the message is SENT after two attempts.
//! let accepted = SendOutcome::Accepted {
//!     provider_id: Some("apns-id".to_owned()),
//!     details: None,
//! };
//! message.record_outcome(DeliveryId(1), &accepted, due);
//! message.finish_attempt(&policy, None, due)?;
//! assert_eq!(message.state(), MessageState::Sent);
//! assert_eq!(message.number_of_send_attempts(), 2);
//!
//! // SENT is final: every other transition is refused and changes nothing.
//! assert!(message.transition(MessageState::Waiting, None, due).is_err());
//! assert_eq!(message.state(), MessageState::Sent);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Implement a port and run `PushService` on it. Here the provider and the clock are written
//! out; the stores are the in-memory ones of the crate's example (`examples/push_service/`,
//! `memory.rs`), which implement [`DeviceStore`](ports::DeviceStore) and the other store ports
//! the same way over a map:
//!
//! ```
//! # #[allow(dead_code)]
//! # mod memory {
//! #     include!(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/push_service/memory.rs"));
//! # }
//! use std::sync::Arc;
//!
//! use clarion_domain::app::{Application, Applications, SenderKind};
//! use clarion_domain::async_trait;
//! use clarion_domain::ids::{AppId, UserId};
//! use clarion_domain::message::{
//!     Channel, Content, MessageState, Priority, PushOptions, SendOutcome, Target,
//! };
//! use clarion_domain::payload::Payload;
//! use clarion_domain::ports::{Clock, PushProvider};
//! use clarion_domain::service::{
//!     Dispatch, Ports, Providers, PushService, RegisterDevice, SendRequest, ServiceSettings,
//! };
//! use clarion_domain::time::OffsetDateTime;
//! use clarion_domain::time::macros::datetime;
//! use clarion_domain::token::Platform;
//!
//! /// A provider that accepts every request: where a real one sends `payload` over HTTP and
//! /// turns the answer into an outcome.
//! struct Accepting;
//!
//! #[async_trait]
//! impl PushProvider for Accepting {
//!     async fn send(&self, _app: &AppId, payload: &Payload) -> SendOutcome {
//!         assert!(matches!(payload, Payload::Fcm(_)));
//!         SendOutcome::Accepted {
//!             provider_id: Some("projects/p/messages/1".to_owned()),
//!             details: None,
//!         }
//!     }
//! }
//!
//! /// A clock that always says the same time.
//! struct Fixed(OffsetDateTime);
//!
//! impl Clock for Fixed {
//!     fn now(&self) -> OffsetDateTime {
//!         self.0
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(memory::MemoryStore::default());
//! let ports = Ports {
//!     devices: store.clone(),
//!     messages: store.clone(),
//!     templates: store.clone(),
//!     keys: store.clone(),
//!     reports: store,
//!     renderer: Arc::new(memory::NoTemplates),
//!     clock: Arc::new(Fixed(datetime!(2026-03-01 10:00 UTC))),
//! };
//! let providers = Providers::default().with(Channel::Fcm, Arc::new(Accepting));
//! let shop = Application::new(AppId::parse("shop")?, SenderKind::Direct);
//! let apps = Arc::new(Applications::new([shop]));
//! let service = PushService::new(apps, ports, providers, ServiceSettings::default());
//!
//! let alice = UserId::parse("alice")?;
//! let phone = RegisterDevice {
//!     platform: Platform::Fcm,
//!     token: "fcm-token".to_owned(),
//!     p256dh: None,
//!     auth: None,
//!     name: Some("Alice's phone".to_owned()),
//!     user_id: Some(alice.clone()),
//!     device_id: None,
//! };
//! let (device, _) = service.register_device("shop", phone).await?;
//!
//! let request = SendRequest {
//!     target: Target::User { user_id: alice },
//!     content: Content { body: "Hello".to_owned(), ..Content::default() },
//!     tag: None,
//!     priority: Priority::High,
//!     options: PushOptions::default(),
//!     related_objects: Vec::new(),
//!     retry_sending: true,
//! };
//! let message = service.send("shop", request, Dispatch::Now).await?;
//! assert_eq!(message.state(), MessageState::Sent);
//! assert_eq!(message.deliveries[0].device_id, Some(device.id));
//! # Ok(())
//! # }
//! ```
//!
//! The `push_service` example (`cargo run -p clarion-domain --example push_service`) puts these
//! together in a program another service can copy.
//!
//! # Features
//!
//! - `mocks`: exports [mockall](https://docs.rs/mockall) mocks of every port
//!   (`ports::MockDeviceStore`, `ports::MockPushProvider`, ...) for the tests of crates that use
//!   the services, and re-exports `mockall`.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod device;
pub mod ids;
pub mod message;
pub mod payload;
pub mod ports;
pub mod retry;
pub mod service;
pub mod template;
pub mod text;
pub mod token;

/// The date and time crate of every timestamp in the API ([`time::OffsetDateTime`]), so that a
/// caller builds and reads them without adding `time` itself.
pub use time;

/// The JSON crate of the API: a message's `extra_data`, a template's context and the details of
/// a provider's answer are [`serde_json`] maps and values.
pub use serde_json;

/// The error type behind [`ports::StoreError::Unknown`], which a store returns for failures a
/// caller cannot act on.
pub use anyhow;

/// The attribute every port implementation carries: the ports are async traits held as
/// `Arc<dyn Port>`, which `async-trait` makes object-safe. Write `#[async_trait]` on an
/// `impl` of a port.
pub use async_trait::async_trait;

/// The mocking crate of the port mocks (`ports::Mock*`, with the `mocks` feature), for its
/// predicates and sequences.
#[cfg(feature = "mocks")]
pub use mockall;

/// The example of `README.md`, compiled and run with the doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
