//! Messages, their deliveries and the message state machine.
//!
//! A message's state changes only through [`Message::transition`], which refuses every
//! transition DESIGN.md does not list, and through the methods built on it
//! ([`Message::finish_attempt`], [`Message::expire`], [`Message::cancel`], [`Message::requeue`]).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::app::SenderKind;
use crate::ids::{AppId, DeliveryId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId};
use crate::retry::{RetryPolicy, jitter_for};
use crate::text::{UnstorableText, storable, storable_object, storable_opt};
use crate::token::Platform;

/// The state of a message (pymess's states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessageState {
    /// Stored and due to be sent: a new message, or one an operator retried.
    Waiting,
    /// Every delivery was accepted, or some were and the others failed for good (their errors stay
    /// on the deliveries). Final.
    Sent,
    /// Nothing could be delivered, the retries ran out with nothing accepted, or an operator
    /// cancelled it. Final unless an operator retries it.
    Error,
    /// A delivery failed for a transient reason and attempts remain: the failed deliveries are due
    /// again at `next_attempt_at`.
    ErrorRetry,
    /// The debug sender took it; nothing left the process. Final.
    Debug,
}

impl MessageState {
    /// Every state, in the order DESIGN.md lists them.
    pub const ALL: [MessageState; 5] = [
        MessageState::Waiting,
        MessageState::Sent,
        MessageState::Error,
        MessageState::ErrorRetry,
        MessageState::Debug,
    ];

    /// The stored and shown name, such as `ERROR_RETRY`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Waiting => "WAITING",
            MessageState::Sent => "SENT",
            MessageState::Error => "ERROR",
            MessageState::ErrorRetry => "ERROR_RETRY",
            MessageState::Debug => "DEBUG",
        }
    }

    /// Whether DESIGN.md lists `self -> to` as a transition.
    #[must_use]
    pub fn can_become(self, to: MessageState) -> bool {
        use MessageState::{Debug, Error, ErrorRetry, Sent, Waiting};
        matches!(
            (self, to),
            (Waiting, Sent | Error | ErrorRetry | Debug)
                | (ErrorRetry, Sent | Error | ErrorRetry)
                | (Error, Waiting)
        )
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown state name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown message state {0:?}: expected WAITING, SENT, ERROR, ERROR_RETRY or DEBUG")]
pub struct UnknownState(pub String);

impl FromStr for MessageState {
    type Err = UnknownState;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let upper = raw.to_ascii_uppercase();
        MessageState::ALL
            .into_iter()
            .find(|s| s.as_str() == upper)
            .ok_or_else(|| UnknownState(raw.to_owned()))
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a message in state {from} cannot become {to}")]
pub struct IllegalTransition {
    /// The state the message was in.
    pub from: MessageState,
    /// The state it was asked to take.
    pub to: MessageState,
}

/// A stored message or delivery whose fields contradict each other: no run of the state
/// machine leaves one so, so it was written by something else (or the row was damaged). The
/// stores report it as [`StoreError::Corrupt`](crate::ports::StoreError::Corrupt), naming the
/// row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImpossibleRecord {
    /// The message's [`Progress`] is not one the state machine reaches.
    #[error("a {state} message {problem}")]
    Message {
        /// The state it claims.
        state: MessageState,
        /// What contradicts the state, in words.
        problem: &'static str,
    },
    /// The delivery's fields are not ones [`Delivery::record`] and the message's methods reach.
    #[error("a {state} delivery {problem}")]
    Delivery {
        /// The state it claims.
        state: DeliveryState,
        /// What contradicts the state, in words.
        problem: &'static str,
    },
}

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Target {
    /// Every active device of one user (or, with OneSignal, the external user id).
    User {
        /// The owner the devices were registered with.
        user_id: UserId,
    },
    /// An explicit list of devices of the application.
    Devices {
        /// The devices, by id; each must be a device of the message's application.
        device_ids: Vec<DeviceId>,
    },
    /// Every active device of the application, optionally on one platform only.
    Broadcast {
        /// Only the devices on this platform; every platform when `None`.
        platform: Option<Platform>,
    },
}

impl Target {
    /// The user id a message is addressed to, if it is addressed to one.
    #[must_use]
    pub fn recipient(&self) -> Option<&UserId> {
        match self {
            Target::User { user_id } => Some(user_id),
            _ => None,
        }
    }
}

/// How urgently a message should be delivered (APNs priority 10 / 5, FCM HIGH / NORMAL,
/// Web Push Urgency high / normal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Deliver at once: APNs priority 10, FCM `HIGH`, Web Push urgency `high`. The default.
    #[default]
    High,
    /// Deliver when it suits the device's battery: APNs priority 5, FCM `NORMAL`, Web Push urgency
    /// `normal`.
    Normal,
}

impl FromStr for Priority {
    type Err = OptionError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            other => Err(OptionError::Priority(other.to_owned())),
        }
    }
}

impl Priority {
    /// The name the API uses: `high` or `normal`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
        }
    }
}

/// The longest time-to-live any provider accepts (FCM: 28 days).
pub const MAX_TIME_TO_LIVE_SECS: u32 = 2_419_200;
/// The longest APNs collapse id, in bytes.
pub const MAX_COLLAPSE_KEY_BYTES: usize = 64;

/// Platform options of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushOptions {
    /// The number to show on the app's icon (APNs `badge`; `badge` in the Web Push payload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub badge: Option<u32>,
    /// The sound to play, such as `default` (APNs `sound`, FCM's Android `sound`); not blank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// The group the device shows the notification in (APNs `thread-id`); not blank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    /// The notification's category, which selects its actions on the device (APNs `category`);
    /// not blank.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// APNs `apns-collapse-id`, FCM `collapse_key`, Web Push `Topic`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_key: Option<String>,
    /// Seconds the provider keeps the message for an offline device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_live: Option<u32>,
    /// Wakes the app in the background (APNs `content-available`); a message with this and no
    /// heading, body, badge or sound is a silent push.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub content_available: bool,
    /// Lets the app's notification service extension change the notification before it is shown
    /// (APNs `mutable-content`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub mutable_content: bool,
}

/// Why a message option was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// A priority other than `high` or `normal`; it holds the text given.
    #[error("priority must be high or normal; got {0:?}")]
    Priority(String),
    /// The collapse key is longer than APNs allows ([`MAX_COLLAPSE_KEY_BYTES`]); it holds its
    /// length in bytes.
    #[error("collapse_key is {0} bytes long; APNs allows at most {MAX_COLLAPSE_KEY_BYTES} bytes")]
    CollapseKeyTooLong(usize),
    /// The collapse key is empty, longer than 32 characters, or holds a character other than
    /// letters, digits, `-` and `_` (the rule of Web Push's `Topic`, which every provider follows).
    #[error(
        "collapse_key must be 1 to 32 characters of letters, digits, '-' and '_' for Web Push Topic; got {0:?}"
    )]
    CollapseKeyCharacters(String),
    /// The time-to-live is longer than [`MAX_TIME_TO_LIVE_SECS`]; it holds the value.
    #[error("time_to_live is {0} seconds; at most {MAX_TIME_TO_LIVE_SECS} (28 days) are allowed")]
    TimeToLive(u32),
    /// An option that names something (`sound`, `thread_id`, `category`) is blank; it holds the
    /// option's name.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// No body, no heading and no `content_available`: nothing to show and nothing to wake.
    #[error("a message needs a body, a heading or content_available")]
    NothingToSend,
    /// The URL is not an absolute URL; it holds the URL and why.
    #[error("url is not a valid absolute URL: {0}")]
    Url(String),
    /// `extra_data` is JSON but not an object; it holds what it is (`an array`, `null`, ...).
    #[error("extra_data must be a JSON object; got {0}")]
    ExtraData(&'static str),
    /// A [`Target::Devices`] with an empty list.
    #[error("a message to device ids needs at least one device id")]
    NoDevices,
    /// A text holds a character no store can keep; the error names the field.
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
}

impl PushOptions {
    /// Checks every option against the limits the providers publish.
    ///
    /// # Errors
    /// An [`OptionError`] naming the option.
    pub fn validate(&self) -> Result<(), OptionError> {
        for (field, value) in [
            ("options.sound", &self.sound),
            ("options.thread_id", &self.thread_id),
            ("options.category", &self.category),
            ("options.collapse_key", &self.collapse_key),
        ] {
            storable_opt(field, value.as_deref())?;
        }
        if let Some(key) = &self.collapse_key {
            if key.len() > MAX_COLLAPSE_KEY_BYTES {
                return Err(OptionError::CollapseKeyTooLong(key.len()));
            }
            // RFC 8030 restricts the Topic header to 32 characters of the URL-safe base64
            // alphabet; one collapse key serves every provider, so it follows the strictest rule.
            if key.is_empty()
                || key.len() > 32
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(OptionError::CollapseKeyCharacters(key.clone()));
            }
        }
        if let Some(ttl) = self.time_to_live
            && ttl > MAX_TIME_TO_LIVE_SECS
        {
            return Err(OptionError::TimeToLive(ttl));
        }
        for (name, value) in [
            ("sound", &self.sound),
            ("thread_id", &self.thread_id),
            ("category", &self.category),
        ] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(OptionError::Empty(name));
            }
        }
        Ok(())
    }
}

/// What a message says.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Content {
    /// The title (pymess `heading`).
    pub heading: Option<String>,
    /// The body text (pymess `content`).
    pub body: String,
    /// The link the app or browser opens when the notification is tapped; an absolute URL, sent
    /// as the custom key `url` unless `extra_data` has one.
    pub url: Option<String>,
    /// Custom data delivered with the notification (a JSON object).
    pub extra_data: Option<Map<String, Value>>,
}

impl Content {
    /// Checks the content: text every store can keep (also when a template rendered it),
    /// something to show or a silent push, and an absolute URL.
    ///
    /// # Errors
    /// An [`OptionError`] naming what is wrong.
    pub fn validate(&self, options: &PushOptions) -> Result<(), OptionError> {
        storable_opt("heading", self.heading.as_deref())?;
        storable("body", &self.body)?;
        storable_opt("url", self.url.as_deref())?;
        if let Some(extra_data) = &self.extra_data {
            storable_object("extra_data", extra_data)?;
        }
        let has_heading = self.heading.as_deref().is_some_and(|h| !h.is_empty());
        if self.body.is_empty() && !has_heading && !options.content_available {
            return Err(OptionError::NothingToSend);
        }
        if let Some(url) = &self.url {
            url::Url::parse(url).map_err(|e| OptionError::Url(format!("{url:?}: {e}")))?;
        }
        Ok(())
    }

    /// Parses extra data given as JSON text.
    ///
    /// # Errors
    /// [`OptionError::ExtraData`] when the text is JSON but not an object; the JSON parse error
    /// is returned by the caller's parser.
    pub fn extra_data_from_value(value: Value) -> Result<Map<String, Value>, OptionError> {
        match value {
            Value::Object(map) => Ok(map),
            Value::Array(_) => Err(OptionError::ExtraData("an array")),
            Value::String(_) => Err(OptionError::ExtraData("a string")),
            Value::Number(_) => Err(OptionError::ExtraData("a number")),
            Value::Bool(_) => Err(OptionError::ExtraData("a boolean")),
            Value::Null => Err(OptionError::ExtraData("null")),
        }
    }
}

/// Everything a caller decides about a message before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSpec {
    /// The application the message is sent for.
    pub app: AppId,
    /// Who the message is for.
    pub target: Target,
    /// What the message says.
    pub content: Content,
    /// The template it was rendered from, kept when the template is deleted; `None` for a message
    /// sent directly.
    pub template_slug: Option<Slug>,
    /// A label to find and group messages by, such as a campaign.
    pub tag: Option<Tag>,
    /// How urgently it should be delivered.
    pub priority: Priority,
    /// The platform options: badge, sound, collapse key, time-to-live and the like.
    pub options: PushOptions,
    /// The caller's objects the message is about; a template that does not allow duplicates sends
    /// once for the same objects.
    pub related_objects: Vec<RelatedObject>,
    /// Whether a transient failure may be retried (pymess `retry_sending`).
    pub retry_sending: bool,
}

impl MessageSpec {
    /// A message for `app` to `target` saying `content`, with the defaults the API uses: no
    /// template, tag or related objects, high priority, no platform options, and retries on.
    /// The `with_` methods set the rest.
    ///
    /// ```
    /// use clarion_domain::ids::{AppId, Tag, UserId};
    /// use clarion_domain::message::{Content, MessageSpec, Priority, Target};
    ///
    /// let target = Target::User { user_id: UserId::parse("alice")? };
    /// let content = Content { body: "Your order shipped".to_owned(), ..Content::default() };
    /// let spec = MessageSpec::new(AppId::parse("shop")?, target, content)
    ///     .with_tag(Tag::parse("orders")?)
    ///     .with_priority(Priority::Normal);
    /// assert!(spec.retry_sending && spec.options.validate().is_ok());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn new(app: AppId, target: Target, content: Content) -> Self {
        Self {
            app,
            target,
            content,
            template_slug: None,
            tag: None,
            priority: Priority::default(),
            options: PushOptions::default(),
            related_objects: Vec::new(),
            retry_sending: true,
        }
    }

    /// The same message, rendered from the template `slug`.
    #[must_use]
    pub fn with_template_slug(self, slug: Slug) -> Self {
        Self {
            template_slug: Some(slug),
            ..self
        }
    }

    /// The same message, labelled with `tag`.
    #[must_use]
    pub fn with_tag(self, tag: Tag) -> Self {
        Self {
            tag: Some(tag),
            ..self
        }
    }

    /// The same message, delivered with `priority`.
    #[must_use]
    pub fn with_priority(self, priority: Priority) -> Self {
        Self { priority, ..self }
    }

    /// The same message, with these platform options.
    #[must_use]
    pub fn with_options(self, options: PushOptions) -> Self {
        Self { options, ..self }
    }

    /// The same message, about these objects of the caller.
    #[must_use]
    pub fn with_related_objects(self, related_objects: Vec<RelatedObject>) -> Self {
        Self {
            related_objects,
            ..self
        }
    }

    /// The same message, with transient failures retried or not.
    #[must_use]
    pub fn with_retry_sending(self, retry_sending: bool) -> Self {
        Self {
            retry_sending,
            ..self
        }
    }
}

/// Where one delivery goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Through Apple's APNs, to a registered device.
    Apns,
    /// Through FCM HTTP v1, to a registered device.
    Fcm,
    /// Through the push service of a browser's Web Push subscription.
    Webpush,
    /// Through OneSignal, to an external user id rather than a registered device.
    Onesignal,
    /// Nowhere: the debug sender records it as taken.
    Debug,
}

impl Channel {
    /// The stored name, such as `webpush`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Apns => "apns",
            Channel::Fcm => "fcm",
            Channel::Webpush => "webpush",
            Channel::Onesignal => "onesignal",
            Channel::Debug => "debug",
        }
    }
}

impl From<Platform> for Channel {
    fn from(platform: Platform) -> Self {
        match platform {
            Platform::Apns => Channel::Apns,
            Platform::Fcm => Channel::Fcm,
            Platform::Webpush => Channel::Webpush,
        }
    }
}

impl FromStr for Channel {
    type Err = UnknownState;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "apns" => Ok(Channel::Apns),
            "fcm" => Ok(Channel::Fcm),
            "webpush" => Ok(Channel::Webpush),
            "onesignal" => Ok(Channel::Onesignal),
            "debug" => Ok(Channel::Debug),
            other => Err(UnknownState(other.to_owned())),
        }
    }
}

/// The state of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Not tried yet.
    Pending,
    /// The provider accepted it; it is never sent again.
    Accepted,
    /// It failed for a transient reason and will be tried again.
    Retrying,
    /// It failed for good (permanent error, configuration error or retries used up).
    Failed,
    /// The provider said the token is dead; the device was deactivated.
    DeadToken,
    /// The debug sender took it; nothing left the process.
    Debug,
}

impl DeliveryState {
    /// The stored and shown name, such as `dead_token`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Accepted => "accepted",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Failed => "failed",
            DeliveryState::DeadToken => "dead_token",
            DeliveryState::Debug => "debug",
        }
    }

    /// Whether the delivery still has to be sent.
    #[must_use]
    pub fn is_due(self) -> bool {
        matches!(self, DeliveryState::Pending | DeliveryState::Retrying)
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DeliveryState {
    type Err = UnknownState;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        [
            DeliveryState::Pending,
            DeliveryState::Accepted,
            DeliveryState::Retrying,
            DeliveryState::Failed,
            DeliveryState::DeadToken,
            DeliveryState::Debug,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
        .ok_or_else(|| UnknownState(raw.to_owned()))
    }
}

/// What a provider said about one delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SendOutcome {
    /// Accepted; `provider_id` is the `apns-id`, the FCM message name, the OneSignal id...
    Accepted {
        /// The provider's id of the notification, when it gave one.
        provider_id: Option<String>,
        /// Parts of the provider's answer worth keeping (JSON).
        details: Option<Value>,
    },
    /// Taken by the debug sender.
    Debug,
    /// The device's token is dead: deactivate the device.
    DeadToken {
        /// The provider's reason, such as `Unregistered` (APNs) or `UNREGISTERED` (FCM).
        code: String,
        /// The provider's answer in words.
        reason: String,
    },
    /// This message can never be delivered to this device.
    Permanent {
        /// The error code, the provider's (`INVALID_ARGUMENT`) or Clarion's own.
        code: String,
        /// What went wrong, in words.
        reason: String,
        /// Parts of the provider's answer worth keeping (JSON).
        details: Option<Value>,
    },
    /// The credentials or settings are wrong; an operator must act.
    Misconfigured {
        /// The error code, such as `InvalidProviderToken` or `missing_topic`.
        code: String,
        /// What the operator must fix, in words that name no secret.
        reason: String,
    },
    /// Try again later, no sooner than `retry_after`.
    Transient {
        /// The error code, such as `rate_limited`, `server_error` or `oauth_unavailable`.
        code: String,
        /// What went wrong, in words.
        reason: String,
        /// The provider's `Retry-After`: the next attempt waits at least this long.
        #[serde(with = "opt_seconds", default)]
        retry_after: Option<Duration>,
    },
}

mod opt_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_some(&d.as_secs()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(deserializer).map(|v| v.map(Duration::from_secs))
    }
}

/// One targeted device (or OneSignal user) of one message.
///
/// Where it stands ([`Delivery::progress`]) is private: it changes only through
/// [`Delivery::record`] and the message's methods, so that an accepted delivery is never sent
/// again. A store rebuilds one with [`Delivery::from_storage`], which checks it. It serializes
/// (for logs and reports) but does not deserialize.
///
/// ```compile_fail
/// // An accepted delivery cannot be set back to pending, which would send it again.
/// use clarion_domain::message::{Delivery, DeliveryState};
/// fn resend(delivery: &mut Delivery) {
///     delivery.state = DeliveryState::Pending;
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// The store's id of the delivery.
    pub id: DeliveryId,
    /// The message it belongs to.
    pub message_id: MessageId,
    /// The device, for direct and debug deliveries; `None` for OneSignal.
    pub device_id: Option<DeviceId>,
    /// Where it goes.
    pub channel: Channel,
    #[serde(flatten)]
    progress: DeliveryProgress,
}

/// The parts of a delivery that [`Delivery::record`] and the message's methods change, as a
/// store writes them and reads them back for [`Delivery::from_storage`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryProgress {
    /// Where it stands: [`Delivery::record`] moves it on, and an accepted or debug delivery never
    /// changes again.
    pub state: DeliveryState,
    /// How many outcomes were recorded for it: one per send.
    pub attempts: u32,
    /// The provider's id of the accepted notification: the `apns-id`, the FCM message name or the
    /// OneSignal notification id.
    pub provider_id: Option<String>,
    /// The error code of its last failure: the provider's (`BadDeviceToken`, `UNREGISTERED`) or
    /// Clarion's (`expired`, `cancelled`, `retries_exhausted`); `None` once accepted.
    pub error_code: Option<String>,
    /// The text of that error; a delivery that was given up keeps its last error in it.
    pub error_text: Option<String>,
    /// Parts of the provider's answer worth keeping (JSON).
    pub details: Option<Value>,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl DeliveryProgress {
    /// Checks that recording outcomes can reach this progress: an accepted, debug, dead-token
    /// or retrying delivery has had an attempt; an accepted or debug one has no error code; a
    /// dead-token, retrying or failed one has one (a failed delivery may have had no attempt
    /// when it was given up, and a pending one is anything an operator's retry left).
    ///
    /// # Errors
    /// [`ImpossibleRecord::Delivery`] naming what contradicts the state.
    pub fn check(&self) -> Result<(), ImpossibleRecord> {
        let state = self.state;
        let impossible = |problem| Err(ImpossibleRecord::Delivery { state, problem });
        let attempted = matches!(
            state,
            DeliveryState::Accepted
                | DeliveryState::Debug
                | DeliveryState::DeadToken
                | DeliveryState::Retrying
        );
        if attempted && self.attempts == 0 {
            return impossible("must have had an attempt");
        }
        let delivered = matches!(state, DeliveryState::Accepted | DeliveryState::Debug);
        if delivered && self.error_code.is_some() {
            return impossible("cannot have an error code");
        }
        let failed = matches!(
            state,
            DeliveryState::DeadToken | DeliveryState::Retrying | DeliveryState::Failed
        );
        if failed && self.error_code.is_none() {
            return impossible("must have an error code");
        }
        Ok(())
    }
}

impl Delivery {
    /// A delivery that was just created: pending, never attempted.
    #[must_use]
    pub fn pending(
        id: DeliveryId,
        message_id: MessageId,
        device_id: Option<DeviceId>,
        channel: Channel,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            message_id,
            device_id,
            channel,
            progress: DeliveryProgress {
                state: DeliveryState::Pending,
                attempts: 0,
                provider_id: None,
                error_code: None,
                error_text: None,
                details: None,
                updated_at: now,
            },
        }
    }

    /// A delivery as the store keeps it.
    ///
    /// # Errors
    /// [`ImpossibleRecord::Delivery`] when its progress is not one recording outcomes reaches
    /// (see [`DeliveryProgress::check`]).
    pub fn from_storage(
        id: DeliveryId,
        message_id: MessageId,
        device_id: Option<DeviceId>,
        channel: Channel,
        progress: DeliveryProgress,
    ) -> Result<Self, ImpossibleRecord> {
        progress.check()?;
        Ok(Self {
            id,
            message_id,
            device_id,
            channel,
            progress,
        })
    }

    /// Where it stands, as a store writes it.
    #[must_use]
    pub fn progress(&self) -> &DeliveryProgress {
        &self.progress
    }

    /// Where it stands: pending, accepted, retrying, failed, dead token or debug.
    #[must_use]
    pub fn state(&self) -> DeliveryState {
        self.progress.state
    }

    /// How many outcomes were recorded for it: one per send.
    #[must_use]
    pub fn attempts(&self) -> u32 {
        self.progress.attempts
    }

    /// The provider's id of the accepted notification.
    #[must_use]
    pub fn provider_id(&self) -> Option<&str> {
        self.progress.provider_id.as_deref()
    }

    /// The error code of its last failure; `None` once accepted.
    #[must_use]
    pub fn error_code(&self) -> Option<&str> {
        self.progress.error_code.as_deref()
    }

    /// The text of that error.
    #[must_use]
    pub fn error_text(&self) -> Option<&str> {
        self.progress.error_text.as_deref()
    }

    /// Parts of the provider's answer worth keeping (JSON).
    #[must_use]
    pub fn details(&self) -> Option<&Value> {
        self.progress.details.as_ref()
    }

    /// When it last changed.
    #[must_use]
    pub fn updated_at(&self) -> OffsetDateTime {
        self.progress.updated_at
    }

    /// Records one attempt's outcome. An accepted delivery stays accepted whatever is
    /// reported later, so that it is never sent again.
    pub fn record(&mut self, outcome: &SendOutcome, now: OffsetDateTime) {
        if !self.progress.state.is_due() {
            return;
        }
        self.progress.attempts = self.progress.attempts.saturating_add(1);
        self.progress.updated_at = now;
        let (state, provider_id, code, text, details) = match outcome {
            SendOutcome::Accepted {
                provider_id,
                details,
            } => (
                DeliveryState::Accepted,
                provider_id.clone(),
                None,
                None,
                details.clone(),
            ),
            SendOutcome::Debug => (DeliveryState::Debug, None, None, None, None),
            SendOutcome::DeadToken { code, reason } => (
                DeliveryState::DeadToken,
                None,
                Some(code.clone()),
                Some(reason.clone()),
                None,
            ),
            SendOutcome::Permanent {
                code,
                reason,
                details,
            } => (
                DeliveryState::Failed,
                None,
                Some(code.clone()),
                Some(reason.clone()),
                details.clone(),
            ),
            SendOutcome::Misconfigured { code, reason } => (
                DeliveryState::Failed,
                None,
                Some(code.clone()),
                Some(reason.clone()),
                None,
            ),
            SendOutcome::Transient { code, reason, .. } => (
                DeliveryState::Retrying,
                None,
                Some(code.clone()),
                Some(reason.clone()),
                None,
            ),
        };
        self.progress.state = state;
        if provider_id.is_some() {
            self.progress.provider_id = provider_id;
        }
        self.progress.error_code = code;
        self.progress.error_text = text;
        if details.is_some() {
            self.progress.details = details;
        }
    }

    /// An operator's retry: a failed delivery is pending again, with its attempts and last
    /// error kept.
    fn retry(&mut self, now: OffsetDateTime) {
        if self.progress.state == DeliveryState::Failed {
            self.progress.state = DeliveryState::Pending;
            self.progress.updated_at = now;
        }
    }

    fn give_up(&mut self, code: &str, reason: &str, now: OffsetDateTime) {
        if self.progress.state.is_due() {
            self.progress.state = DeliveryState::Failed;
            self.progress.error_code = Some(code.to_owned());
            let give_up = GiveUp {
                code: code.to_owned(),
                reason: reason.to_owned(),
            };
            self.progress.error_text = Some(give_up.text(self.progress.error_text.as_deref()));
            self.progress.updated_at = now;
        }
    }
}

/// Counts of a message's deliveries by state, and its first error: what concluding an attempt
/// needs, without holding every delivery (a broadcast may have a hundred thousand). The store
/// computes it for a message whose deliveries are paged; [`DeliveryTally::of`] for loaded ones.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryTally {
    /// Every delivery of the message.
    pub total: u64,
    /// Deliveries a provider accepted.
    pub accepted: u64,
    /// Deliveries the debug sender took.
    pub debug: u64,
    /// Pending or retrying: still to be sent.
    pub due: u64,
    /// Deliveries that failed for good.
    pub failed: u64,
    /// Deliveries whose token the provider said is dead.
    pub dead_tokens: u64,
    /// Deliveries with an error code.
    pub errors: u64,
    /// The error code and text of the delivery with the lowest id that has an error code.
    pub first_error: Option<(String, Option<String>)>,
}

impl DeliveryTally {
    /// The tally of loaded deliveries.
    #[must_use]
    pub fn of(deliveries: &[Delivery]) -> Self {
        let mut tally = DeliveryTally::default();
        let mut sorted: Vec<&Delivery> = deliveries.iter().collect();
        sorted.sort_by_key(|d| d.id);
        for d in sorted {
            tally.count(d.state(), d.error_code(), d.error_text(), 1);
        }
        tally
    }

    /// Adds `n` deliveries in `state`; the first error seen is kept, so callers add in id
    /// order.
    pub fn count(&mut self, state: DeliveryState, code: Option<&str>, text: Option<&str>, n: u64) {
        self.total += n;
        match state {
            DeliveryState::Accepted => self.accepted += n,
            DeliveryState::Debug => self.debug += n,
            DeliveryState::Pending | DeliveryState::Retrying => self.due += n,
            DeliveryState::Failed => self.failed += n,
            DeliveryState::DeadToken => self.dead_tokens += n,
        }
        if let Some(code) = code {
            self.errors += n;
            if self.first_error.is_none() {
                self.first_error = Some((code.to_owned(), text.map(ToOwned::to_owned)));
            }
        }
    }

    fn any_accepted(&self) -> bool {
        self.accepted + self.debug > 0
    }

    /// One line that sums up the deliveries' errors, such as `2 of 3 deliveries failed: ...`.
    fn summary(&self) -> Option<String> {
        let (code, text) = self.first_error.as_ref()?;
        let detail = match text {
            Some(text) => format!("{code}: {text}"),
            None => code.clone(),
        };
        Some(format!(
            "{} of {} deliveries failed; first: {detail}",
            self.errors, self.total
        ))
    }
}

/// Deliveries still due that an attempt gives up: they become failed with this code, and their
/// last error is kept in the text (see [`GiveUp::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiveUp {
    /// The error code the given-up deliveries get, such as `expired` or `retries_exhausted`.
    pub code: String,
    /// Why they were given up, in words; it begins their error text.
    pub reason: String,
}

impl GiveUp {
    /// The error text a given-up delivery gets, from its last error text.
    #[must_use]
    pub fn text(&self, last: Option<&str>) -> String {
        match last {
            Some(last) => format!("{} (last error: {last})", self.reason),
            None => self.reason.clone(),
        }
    }
}

/// How an attempt ends, from [`Message::finish_attempt_tallied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptEnd {
    /// The message's new state is set: save it.
    Done(AttemptSummary),
    /// The attempts are counted, but the deliveries still due must first be given up (in the
    /// store, for paged deliveries); then [`Message::conclude_tallied`] with a fresh tally sets
    /// the state.
    GiveUp(AttemptSummary, GiveUp),
}

/// The parts of a message that only the state machine changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Where the message stands in the state machine.
    pub state: MessageState,
    /// Why the message failed or waits for a retry: the deliveries' errors summed up, or
    /// Clarion's reason (`cancelled`, `message is older than max_age`).
    pub error: Option<String>,
    /// Attempts since the message was queued; the retry policy's `max_attempts` bounds it, and an
    /// operator's retry starts it again from 0.
    pub number_of_send_attempts: u32,
    /// When an ERROR_RETRY message is due again; `None` in every other state.
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When the message became SENT or DEBUG.
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
    /// When the message was queued (created, or re-queued by an operator); `max_age` counts
    /// from here.
    #[serde(with = "time::serde::rfc3339")]
    pub queued_at: OffsetDateTime,
}

/// A stored message with its deliveries.
///
/// It serializes (for logs and reports) but does not deserialize: a message is rebuilt only
/// through [`Message::from_storage`], which refuses a progress the state machine cannot reach,
/// and its state changes only through [`Message::transition`] and the methods built on it.
///
/// ```compile_fail
/// // A message cannot be read from JSON, which could force any state on it.
/// use clarion_domain::message::Message;
/// let forced = clarion_domain::serde_json::from_str::<Message>(r#"{"state":"SENT"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// The store's id of the message.
    pub id: MessageId,
    /// What the caller decided: application, target, content and options.
    #[serde(flatten)]
    pub spec: MessageSpec,
    /// The sender its application had when it was created.
    pub sender: SenderKind,
    #[serde(flatten)]
    progress: Progress,
    /// Details of OneSignal's answer, kept on the message (pymess `extra_sender_data`).
    pub extra_sender_data: Option<Value>,
    /// When the message was stored.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the message last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub changed_at: OffsetDateTime,
    /// Its deliveries, in id order: all of them, or the first ones when the store read a page.
    pub deliveries: Vec<Delivery>,
}

/// What an attempt did, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AttemptSummary {
    /// Deliveries accepted or taken by the debug sender.
    pub accepted: usize,
    /// Deliveries that failed for good.
    pub failed: usize,
    /// Deliveries still due: they wait for another attempt.
    pub retrying: usize,
    /// Deliveries whose token the provider said is dead.
    pub dead_tokens: usize,
}

impl Progress {
    /// Checks that the state machine can reach this progress: `sent_at` is set exactly when
    /// the message is SENT or DEBUG, `next_attempt_at` only when it is ERROR_RETRY, and a
    /// message that is ERROR_RETRY or DEBUG has made an attempt.
    ///
    /// A SENT message may have made no attempt: [`Message::expire`] concludes a WAITING
    /// message whose first attempt was interrupted after a delivery was accepted, without
    /// counting that attempt. An ERROR_RETRY message without `next_attempt_at` is due at once
    /// (see [`Message::is_due`]), and a WAITING one may count attempts when it was moved back
    /// with [`Message::transition`] rather than [`Message::requeue`].
    ///
    /// # Errors
    /// [`ImpossibleRecord::Message`] naming what contradicts the state.
    pub fn check(&self) -> Result<(), ImpossibleRecord> {
        let state = self.state;
        let impossible = |problem| Err(ImpossibleRecord::Message { state, problem });
        let sent = matches!(state, MessageState::Sent | MessageState::Debug);
        if sent && self.sent_at.is_none() {
            return impossible("must have sent_at");
        }
        if !sent && self.sent_at.is_some() {
            return impossible("cannot have sent_at");
        }
        if state != MessageState::ErrorRetry && self.next_attempt_at.is_some() {
            return impossible("cannot have next_attempt_at");
        }
        let attempted = matches!(state, MessageState::ErrorRetry | MessageState::Debug);
        if attempted && self.number_of_send_attempts == 0 {
            return impossible("must have made a send attempt");
        }
        Ok(())
    }
}

impl Message {
    /// A message as the store keeps it, without its deliveries.
    ///
    /// # Errors
    /// [`ImpossibleRecord::Message`] when the progress is not one the state machine reaches
    /// (see [`Progress::check`]).
    pub fn from_storage(
        id: MessageId,
        spec: MessageSpec,
        sender: SenderKind,
        progress: Progress,
        created_at: OffsetDateTime,
        changed_at: OffsetDateTime,
    ) -> Result<Self, ImpossibleRecord> {
        progress.check()?;
        Ok(Self {
            id,
            spec,
            sender,
            progress,
            extra_sender_data: None,
            created_at,
            changed_at,
            deliveries: Vec::new(),
        })
    }

    /// The progress of a message that was just created: WAITING, no attempt made.
    #[must_use]
    pub fn initial_progress(now: OffsetDateTime) -> Progress {
        Progress {
            state: MessageState::Waiting,
            error: None,
            number_of_send_attempts: 0,
            next_attempt_at: None,
            sent_at: None,
            queued_at: now,
        }
    }

    /// Where the message stands in the state machine.
    #[must_use]
    pub fn state(&self) -> MessageState {
        self.progress.state
    }

    /// The parts only the state machine changes, as a store writes them.
    #[must_use]
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Why the message failed or waits for a retry.
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        self.progress.error.as_deref()
    }

    /// Attempts since the message was queued.
    #[must_use]
    pub fn number_of_send_attempts(&self) -> u32 {
        self.progress.number_of_send_attempts
    }

    /// When an ERROR_RETRY message is due again.
    #[must_use]
    pub fn next_attempt_at(&self) -> Option<OffsetDateTime> {
        self.progress.next_attempt_at
    }

    /// The one way to change the state. `error` replaces the message's error text.
    ///
    /// # Errors
    /// [`IllegalTransition`] when DESIGN.md does not list the transition; nothing changes.
    pub fn transition(
        &mut self,
        to: MessageState,
        error: Option<String>,
        now: OffsetDateTime,
    ) -> Result<(), IllegalTransition> {
        let from = self.progress.state;
        if !from.can_become(to) {
            return Err(IllegalTransition { from, to });
        }
        self.progress.state = to;
        self.progress.error = error;
        self.changed_at = now;
        if to != MessageState::ErrorRetry {
            self.progress.next_attempt_at = None;
        }
        if matches!(to, MessageState::Sent | MessageState::Debug) {
            self.progress.sent_at = Some(now);
        }
        Ok(())
    }

    /// Whether the message may be sent now: WAITING, or ERROR_RETRY whose time has come.
    #[must_use]
    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        match self.progress.state {
            MessageState::Waiting => true,
            MessageState::ErrorRetry => self.progress.next_attempt_at.is_none_or(|at| at <= now),
            _ => false,
        }
    }

    /// Whether the message is older than the policy's `max_age`.
    #[must_use]
    pub fn is_expired(&self, policy: &RetryPolicy, now: OffsetDateTime) -> bool {
        now - self.progress.queued_at >= policy.max_age
    }

    /// The deliveries an attempt must send: pending ones and those waiting for a retry.
    pub fn due_deliveries(&self) -> impl Iterator<Item = &Delivery> {
        self.deliveries.iter().filter(|d| d.state().is_due())
    }

    /// Records one delivery's outcome. Unknown ids and deliveries that are no longer due are
    /// left alone.
    pub fn record_outcome(
        &mut self,
        delivery: DeliveryId,
        outcome: &SendOutcome,
        now: OffsetDateTime,
    ) {
        if let Some(at) = self.delivery_index(delivery) {
            self.deliveries[at].record(outcome, now);
        }
    }

    /// The delivery with this id.
    #[must_use]
    pub fn delivery(&self, id: DeliveryId) -> Option<&Delivery> {
        self.delivery_index(id).map(|at| &self.deliveries[at])
    }

    /// Where the delivery with this id is. The stores list deliveries in id order, so a binary
    /// search finds it: a broadcast to a million devices records a million outcomes, and a
    /// linear search for each made that quadratic. Any other order falls back to a scan.
    fn delivery_index(&self, id: DeliveryId) -> Option<usize> {
        match self.deliveries.binary_search_by_key(&id, |d| d.id) {
            Ok(at) => Some(at),
            Err(_) => self.deliveries.iter().position(|d| d.id == id),
        }
    }

    /// Gives the message up without another attempt because it is older than `max_age`.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message is not WAITING or ERROR_RETRY.
    pub fn expire(&mut self, now: OffsetDateTime) -> Result<(), IllegalTransition> {
        if !matches!(
            self.progress.state,
            MessageState::Waiting | MessageState::ErrorRetry
        ) {
            return Err(IllegalTransition {
                from: self.progress.state,
                to: MessageState::Error,
            });
        }
        self.give_up_due(&Message::expiry(), now);
        let tally = DeliveryTally::of(&self.deliveries);
        self.expire_tallied(&tally, now)
    }

    /// An operator's cancel of a WAITING message.
    ///
    /// # Errors
    /// [`IllegalTransition`] unless the message is WAITING.
    pub fn cancel(&mut self, now: OffsetDateTime) -> Result<(), IllegalTransition> {
        if self.progress.state != MessageState::Waiting {
            return Err(IllegalTransition {
                from: self.progress.state,
                to: MessageState::Error,
            });
        }
        for d in &mut self.deliveries {
            d.give_up("cancelled", "cancelled by an operator", now);
        }
        self.transition(MessageState::Error, Some("cancelled".to_owned()), now)
    }

    /// An operator's retry of an ERROR message: the deliveries that were not accepted and whose
    /// token is not dead are sent again, with a fresh attempt budget and age.
    ///
    /// # Errors
    /// [`IllegalTransition`] unless the message is ERROR.
    pub fn requeue(&mut self, now: OffsetDateTime) -> Result<(), IllegalTransition> {
        self.transition(MessageState::Waiting, None, now)?;
        self.progress.number_of_send_attempts = 0;
        self.progress.queued_at = now;
        for d in &mut self.deliveries {
            d.retry(now);
        }
        Ok(())
    }

    /// Marks a message that has no delivery to make as ERROR (for instance a recipient with no
    /// active device).
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message is not WAITING or ERROR_RETRY.
    pub fn fail(&mut self, error: &str, now: OffsetDateTime) -> Result<(), IllegalTransition> {
        for d in &mut self.deliveries {
            d.give_up("failed", error, now);
        }
        self.transition(MessageState::Error, Some(error.to_owned()), now)
    }

    /// Concludes an attempt once every due delivery's outcome is recorded: counts the attempt and
    /// moves the message to DEBUG, SENT, ERROR_RETRY or ERROR as DESIGN.md says. For a message
    /// whose deliveries are all loaded.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message was not WAITING or ERROR_RETRY.
    pub fn finish_attempt(
        &mut self,
        policy: &RetryPolicy,
        retry_after: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<AttemptSummary, IllegalTransition> {
        let tally = DeliveryTally::of(&self.deliveries);
        match self.finish_attempt_tallied(policy, retry_after, &tally, now)? {
            AttemptEnd::Done(summary) => Ok(summary),
            AttemptEnd::GiveUp(summary, give_up) => {
                self.give_up_due(&give_up, now);
                let tally = DeliveryTally::of(&self.deliveries);
                self.conclude_tallied(&tally, now)?;
                Ok(summary)
            }
        }
    }

    /// [`Message::finish_attempt`] from a tally of the deliveries, for a message whose
    /// deliveries are paged rather than loaded.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message was not WAITING or ERROR_RETRY; nothing changes.
    pub fn finish_attempt_tallied(
        &mut self,
        policy: &RetryPolicy,
        retry_after: Option<Duration>,
        tally: &DeliveryTally,
        now: OffsetDateTime,
    ) -> Result<AttemptEnd, IllegalTransition> {
        let from = self.progress.state;
        if !matches!(from, MessageState::Waiting | MessageState::ErrorRetry) {
            return Err(IllegalTransition {
                from,
                to: MessageState::Sent,
            });
        }
        self.progress.number_of_send_attempts =
            self.progress.number_of_send_attempts.saturating_add(1);
        let attempts = self.progress.number_of_send_attempts;
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let summary = AttemptSummary {
            accepted: as_usize(tally.accepted + tally.debug),
            failed: as_usize(tally.failed),
            retrying: as_usize(tally.due),
            dead_tokens: as_usize(tally.dead_tokens),
        };

        if tally.debug > 0 && from == MessageState::Waiting {
            self.transition(MessageState::Debug, None, now)?;
            return Ok(AttemptEnd::Done(summary));
        }
        if tally.due > 0 {
            let can_retry = self.spec.retry_sending
                && policy.attempts_left(attempts)
                && !self.is_expired(policy, now);
            if can_retry {
                let jitter = jitter_for(self.id.0, attempts);
                let wait = policy.delay(attempts, jitter, retry_after);
                self.transition(MessageState::ErrorRetry, tally.summary(), now)?;
                // Neither a provider's Retry-After nor a configured delay is bounded: a wait
                // past the last time the calendar holds (the year 9999) waits until then.
                let wait = time::Duration::try_from(wait).unwrap_or(time::Duration::MAX);
                self.progress.next_attempt_at = Some(now.saturating_add(wait));
                return Ok(AttemptEnd::Done(summary));
            }
            let reason = if self.spec.retry_sending {
                format!("gave up after {attempts} attempts")
            } else {
                "retry_sending is off".to_owned()
            };
            let give_up = GiveUp {
                code: "retries_exhausted".to_owned(),
                reason,
            };
            return Ok(AttemptEnd::GiveUp(summary, give_up));
        }
        self.conclude_tallied(tally, now)?;
        Ok(AttemptEnd::Done(summary))
    }

    /// SENT when any delivery was accepted (the failures stay on the deliveries), else ERROR,
    /// from a tally taken after every due delivery was given up.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message is not WAITING or ERROR_RETRY.
    pub fn conclude_tallied(
        &mut self,
        tally: &DeliveryTally,
        now: OffsetDateTime,
    ) -> Result<(), IllegalTransition> {
        let error = tally.summary();
        if tally.any_accepted() {
            return self.transition(MessageState::Sent, error, now);
        }
        let error = error.or_else(|| Some("no delivery could be made".to_owned()));
        self.transition(MessageState::Error, error, now)
    }

    /// Gives up the loaded deliveries that are still due.
    pub fn give_up_due(&mut self, give_up: &GiveUp, now: OffsetDateTime) {
        for d in &mut self.deliveries {
            d.give_up(&give_up.code, &give_up.reason, now);
        }
    }

    /// What [`Message::expire`] does to the deliveries still due.
    #[must_use]
    pub fn expiry() -> GiveUp {
        GiveUp {
            code: "expired".to_owned(),
            reason: "message is older than max_age".to_owned(),
        }
    }

    /// [`Message::expire`] for a message whose due deliveries were given up in the store with
    /// [`Message::expiry`]; `tally` is taken after that.
    ///
    /// # Errors
    /// [`IllegalTransition`] when the message is not WAITING or ERROR_RETRY.
    pub fn expire_tallied(
        &mut self,
        tally: &DeliveryTally,
        now: OffsetDateTime,
    ) -> Result<(), IllegalTransition> {
        let from = self.progress.state;
        if !matches!(from, MessageState::Waiting | MessageState::ErrorRetry) {
            return Err(IllegalTransition {
                from,
                to: MessageState::Error,
            });
        }
        let reason = Message::expiry().reason;
        if tally.any_accepted() {
            return self.transition(MessageState::Sent, Some(reason), now);
        }
        self.transition(MessageState::Error, Some(reason), now)
    }
}

#[cfg(test)]
mod tests;
