//! Rows as the stores read them, and their conversion into domain values, shared by the
//! SQLite and PostgreSQL stores. Each row is generic over how its store keeps a time
//! ([`StoredTime`]: unix milliseconds on SQLite, `timestamptz` on PostgreSQL); JSON is read
//! as text. A row that does not parse is [`StoreError::Corrupt`] naming the table, the row
//! id and the field.

use std::fmt::Display;

use clarion_domain::app::SenderKind;
use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash};
use clarion_domain::device::{Device, Recipient, Registration};
use clarion_domain::ids::{
    AppId, DeliveryId, DeviceId, MessageId, RelatedObject, Slug, Tag, UserId,
};
use clarion_domain::message::{
    Channel, Content, Delivery, DeliveryProgress, DeliveryState, Message, MessageSpec,
    MessageState, Priority, Progress, PushOptions, Target,
};
use clarion_domain::ports::{DueDelivery, NewDeliveries, NewMessage, StoreError};
use clarion_domain::template::Template;
use clarion_domain::token::{DeviceToken, EndpointPolicy, Platform};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::registrations::registered;

/// The columns of `devices` every device query selects, in [`DeviceRow`] order.
pub(crate) const DEVICE_COLUMNS: &str = "id, app, platform, token_key, p256dh, auth, name, \
    active, user_id, device_id, created_at, updated_at, deactivated_at, deactivation_reason";

/// The columns of `messages` every message query selects, in [`MessageRow`] order.
pub(crate) const MESSAGE_COLUMNS: &str = "id, app, target_kind, recipient, target_json, \
    heading, body, url, extra_data, template_slug, tag, priority, options, retry_sending, \
    sender, state, error, number_of_send_attempts, next_attempt_at, sent_at, queued_at, \
    extra_sender_data, created_at, changed_at";

/// The columns of `deliveries` every delivery query selects, in [`DeliveryRow`] order.
pub(crate) const DELIVERY_COLUMNS: &str = "id, message_id, device_id, channel, state, attempts, \
    provider_id, error_code, error_text, details, updated_at";

/// The columns of `templates` every template query selects, in [`TemplateRow`] order.
pub(crate) const TEMPLATE_COLUMNS: &str =
    "app, slug, body, heading, url, is_active, allow_duplicates, created_at, updated_at";

/// The columns of `api_keys` every key query selects, in [`ApiKeyRow`] order.
pub(crate) const API_KEY_COLUMNS: &str = "id, name, scope, prefix, hash, created_at, revoked_at";

/// A time as a store reads it back.
pub(crate) trait StoredTime: Copy {
    /// The instant, or why the stored value is not one.
    fn to_time(self) -> Result<OffsetDateTime, String>;
}

/// SQLite's unix milliseconds, UTC.
impl StoredTime for i64 {
    fn to_time(self) -> Result<OffsetDateTime, String> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self) * 1_000_000)
            .map_err(|e| e.to_string())
    }
}

/// PostgreSQL's `timestamptz`, decoded by sqlx.
impl StoredTime for OffsetDateTime {
    fn to_time(self) -> Result<OffsetDateTime, String> {
        Ok(self.to_offset(time::UtcOffset::UTC))
    }
}

/// A time as stored: unix milliseconds, UTC. Sub-millisecond precision is dropped.
pub(crate) fn millis(at: OffsetDateTime) -> i64 {
    let ms = at.unix_timestamp_nanos().div_euclid(1_000_000);
    i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
}

pub(crate) fn opt_millis(at: Option<OffsetDateTime>) -> Option<i64> {
    at.map(millis)
}

/// The most messages stored in one transaction when many are sent at once.
pub(crate) const MAX_BATCH: usize = 256;
/// The most listed deliveries stored in one transaction (a message with more is stored
/// alone).
pub(crate) const MAX_BATCH_DELIVERIES: usize = 10_000;

/// How much of a batch's bound a message takes: its listed deliveries (a broadcast's are
/// created by the database and do not count).
pub(crate) fn weight(message: &NewMessage) -> usize {
    match &message.deliveries {
        NewDeliveries::Listed(list) => list.len(),
        NewDeliveries::Broadcast { .. } => 1,
    }
}

/// A time as both stores give it back: UTC, to the millisecond.
pub(crate) fn stored_time(at: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis(at)) * 1_000_000).unwrap_or(at)
}

/// A message that was just inserted as `id`, with `deliveries`, as reading it back would
/// give it: a send needs no read after its write. A progress the state machine cannot reach
/// is [`StoreError::Corrupt`], as reading the row back would be.
pub(crate) fn inserted_message(
    message: &NewMessage,
    id: i64,
    deliveries: Vec<Delivery>,
) -> Result<Message, StoreError> {
    let progress = &message.progress;
    let progress = Progress {
        state: progress.state,
        error: progress.error.clone(),
        number_of_send_attempts: progress.number_of_send_attempts,
        next_attempt_at: progress.next_attempt_at.map(stored_time),
        sent_at: progress.sent_at.map(stored_time),
        queued_at: stored_time(progress.queued_at),
    };
    let now = stored_time(message.now);
    let f = Field {
        table: "messages",
        id: &id,
    };
    let mut stored = Message::from_storage(
        MessageId(id),
        message.spec.clone(),
        message.sender,
        progress,
        now,
        now,
    )
    .map_err(|e| f.err("state", e))?;
    stored.deliveries = deliveries;
    Ok(stored)
}

/// A listed delivery that was just inserted as `id`: pending, never attempted.
pub(crate) fn inserted_delivery(
    id: i64,
    message: i64,
    (channel, device): &(Channel, Option<DeviceId>),
    now: OffsetDateTime,
) -> Delivery {
    Delivery::pending(
        DeliveryId(id),
        MessageId(message),
        *device,
        *channel,
        stored_time(now),
    )
}

/// JSON text of a value that serialises infallibly (maps and JSON values).
pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Unknown(anyhow::Error::new(e).context("failed to encode JSON")))
}

pub(crate) fn opt_json_text<T: serde::Serialize>(
    value: Option<&T>,
) -> Result<Option<String>, StoreError> {
    value.map(json_text).transpose()
}

/// Builds the corrupt-row error of one field.
struct Field<'a> {
    table: &'static str,
    id: &'a dyn Display,
}

impl Field<'_> {
    fn err(&self, field: &str, problem: impl Display) -> StoreError {
        StoreError::Corrupt(format!(
            "{} row {}: {field}: {problem}",
            self.table, self.id
        ))
    }

    fn time(&self, field: &str, at: impl StoredTime) -> Result<OffsetDateTime, StoreError> {
        at.to_time().map_err(|e| self.err(field, e))
    }

    fn opt_time(
        &self,
        field: &str,
        at: Option<impl StoredTime>,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        at.map(|at| self.time(field, at)).transpose()
    }

    fn json(&self, field: &str, raw: Option<&str>) -> Result<Option<Value>, StoreError> {
        raw.map(|text| serde_json::from_str(text).map_err(|e| self.err(field, e)))
            .transpose()
    }

    fn object(
        &self,
        field: &str,
        raw: Option<&str>,
    ) -> Result<Option<Map<String, Value>>, StoreError> {
        match self.json(field, raw)? {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(map)),
            Some(_) => Err(self.err(field, "not a JSON object")),
        }
    }

    fn count(&self, field: &str, raw: i64) -> Result<u32, StoreError> {
        u32::try_from(raw).map_err(|e| self.err(field, e))
    }
}

/// A device's columns in [`DEVICE_COLUMNS`] order. SQLite gives the devices read by id as one
/// JSON array of these rows (in this field order, `active` a JSON boolean), PostgreSQL as
/// rows.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct DeviceRow<T> {
    pub id: i64,
    pub app: String,
    pub platform: String,
    pub token_key: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub name: Option<String>,
    pub active: bool,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    pub created_at: T,
    pub updated_at: T,
    pub deactivated_at: Option<T>,
    pub deactivation_reason: Option<String>,
}

impl<T: StoredTime> DeviceRow<T> {
    pub(crate) fn into_domain(self) -> Result<Device, StoreError> {
        let f = Field {
            table: "devices",
            id: &self.id,
        };
        let platform: Platform = self.platform.parse().map_err(|e| f.err("platform", e))?;
        // Stored tokens were validated on the way in; the endpoint policy was applied then.
        let token = DeviceToken::parse(
            platform,
            &self.token_key,
            self.p256dh.as_deref(),
            self.auth.as_deref(),
            EndpointPolicy::AllowPrivate,
        )
        .map_err(|e| f.err("token", e))?;
        Ok(Device {
            id: DeviceId(self.id),
            app: AppId::parse(&self.app).map_err(|e| f.err("app", e))?,
            token,
            name: self.name,
            active: self.active,
            user_id: self
                .user_id
                .as_deref()
                .map(UserId::parse)
                .transpose()
                .map_err(|e| f.err("user_id", e))?,
            device_id: self.device_id,
            created_at: f.time("created_at", self.created_at)?,
            updated_at: f.time("updated_at", self.updated_at)?,
            deactivated_at: f.opt_time("deactivated_at", self.deactivated_at)?,
            deactivation_reason: self.deactivation_reason,
        })
    }
}

/// A device as a registration statement returned it, and whether the statement created it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RegisteredRow<T> {
    #[sqlx(flatten)]
    pub device: DeviceRow<T>,
    pub created: bool,
}

impl<T: StoredTime> RegisteredRow<T> {
    pub(crate) fn into_domain(self) -> Result<(Device, Registration), StoreError> {
        Ok(registered(self.device.into_domain()?, self.created))
    }
}

/// How a target is stored: its kind, the recipient column and the JSON column.
pub(crate) fn target_columns(
    target: &Target,
) -> Result<(&'static str, Option<String>, Option<String>), StoreError> {
    match target {
        Target::User { user_id } => Ok(("user", Some(user_id.as_str().to_owned()), None)),
        Target::Devices { device_ids } => {
            let ids: Vec<i64> = device_ids.iter().map(|d| d.0).collect();
            Ok(("devices", None, Some(json_text(&ids)?)))
        }
        Target::Broadcast { platform } => {
            let body = serde_json::json!({ "platform": platform.map(Platform::as_str) });
            Ok(("broadcast", None, Some(json_text(&body)?)))
        }
    }
}

/// A message's columns in [`MESSAGE_COLUMNS`] order. SQLite gives the messages of a claim as
/// one JSON array of these rows (in this field order, `retry_sending` a JSON boolean),
/// PostgreSQL as rows.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct MessageRow<T> {
    pub id: i64,
    pub app: String,
    pub target_kind: String,
    pub recipient: Option<String>,
    pub target_json: Option<String>,
    pub heading: Option<String>,
    pub body: String,
    pub url: Option<String>,
    pub extra_data: Option<String>,
    pub template_slug: Option<String>,
    pub tag: Option<String>,
    pub priority: String,
    pub options: String,
    pub retry_sending: bool,
    pub sender: String,
    pub state: String,
    pub error: Option<String>,
    pub number_of_send_attempts: i64,
    pub next_attempt_at: Option<T>,
    pub sent_at: Option<T>,
    pub queued_at: T,
    pub extra_sender_data: Option<String>,
    pub created_at: T,
    pub changed_at: T,
}

impl<T: StoredTime> MessageRow<T> {
    /// The message without its deliveries; `related` are its related objects in order.
    pub(crate) fn into_domain(self, related: Vec<RelatedObject>) -> Result<Message, StoreError> {
        let f = Field {
            table: "messages",
            id: &self.id,
        };
        let target = self.target(&f)?;
        let spec = MessageSpec {
            app: AppId::parse(&self.app).map_err(|e| f.err("app", e))?,
            target,
            content: Content {
                heading: self.heading,
                body: self.body,
                url: self.url,
                extra_data: f.object("extra_data", self.extra_data.as_deref())?,
            },
            template_slug: self
                .template_slug
                .as_deref()
                .map(Slug::parse)
                .transpose()
                .map_err(|e| f.err("template_slug", e))?,
            tag: self
                .tag
                .as_deref()
                .map(Tag::parse)
                .transpose()
                .map_err(|e| f.err("tag", e))?,
            priority: self
                .priority
                .parse::<Priority>()
                .map_err(|e| f.err("priority", e))?,
            options: serde_json::from_str::<PushOptions>(&self.options)
                .map_err(|e| f.err("options", e))?,
            related_objects: related,
            retry_sending: self.retry_sending,
        };
        let sender: SenderKind = self.sender.parse().map_err(|e| f.err("sender", e))?;
        let state: MessageState = self.state.parse().map_err(|e| f.err("state", e))?;
        let progress = Progress {
            state,
            error: self.error,
            number_of_send_attempts: f
                .count("number_of_send_attempts", self.number_of_send_attempts)?,
            next_attempt_at: f.opt_time("next_attempt_at", self.next_attempt_at)?,
            sent_at: f.opt_time("sent_at", self.sent_at)?,
            queued_at: f.time("queued_at", self.queued_at)?,
        };
        let mut message = Message::from_storage(
            MessageId(self.id),
            spec,
            sender,
            progress,
            f.time("created_at", self.created_at)?,
            f.time("changed_at", self.changed_at)?,
        )
        .map_err(|e| f.err("state", e))?;
        message.extra_sender_data =
            f.json("extra_sender_data", self.extra_sender_data.as_deref())?;
        Ok(message)
    }

    fn target(&self, f: &Field<'_>) -> Result<Target, StoreError> {
        match self.target_kind.as_str() {
            "user" => {
                let raw = self
                    .recipient
                    .as_deref()
                    .ok_or_else(|| f.err("recipient", "missing for a message to a user"))?;
                let user_id = UserId::parse(raw).map_err(|e| f.err("recipient", e))?;
                Ok(Target::User { user_id })
            }
            "devices" => {
                let raw = self.target_json.as_deref().unwrap_or("null");
                let ids: Vec<i64> =
                    serde_json::from_str(raw).map_err(|e| f.err("target_json", e))?;
                Ok(Target::Devices {
                    device_ids: ids.into_iter().map(DeviceId).collect(),
                })
            }
            "broadcast" => {
                let value = f
                    .json("target_json", self.target_json.as_deref())?
                    .unwrap_or(Value::Null);
                let platform = match value.get("platform") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(name)) => Some(
                        name.parse::<Platform>()
                            .map_err(|e| f.err("target_json", e))?,
                    ),
                    Some(other) => {
                        return Err(f.err("target_json", format!("platform is {other}")));
                    }
                };
                Ok(Target::Broadcast { platform })
            }
            other => Err(f.err("target_kind", format!("unknown kind {other:?}"))),
        }
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RelatedRow {
    pub id: i64,
    pub message_id: i64,
    pub kind: String,
    pub object_id: String,
}

impl RelatedRow {
    pub(crate) fn into_domain(self) -> Result<(MessageId, RelatedObject), StoreError> {
        let f = Field {
            table: "message_related_objects",
            id: &self.id,
        };
        let object = RelatedObject::new(&self.kind, &self.object_id)
            .map_err(|e| f.err("kind/object_id", e))?;
        Ok((MessageId(self.message_id), object))
    }
}

/// A delivery's columns in [`DELIVERY_COLUMNS`] order. SQLite gives the first deliveries of
/// the messages of a claim as one JSON array of these rows (in this field order),
/// PostgreSQL as rows.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct DeliveryRow<T> {
    pub id: i64,
    pub message_id: i64,
    pub device_id: Option<i64>,
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    pub provider_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub details: Option<String>,
    pub updated_at: T,
}

impl<T: StoredTime> DeliveryRow<T> {
    pub(crate) fn into_domain(self) -> Result<Delivery, StoreError> {
        let f = Field {
            table: "deliveries",
            id: &self.id,
        };
        let progress = DeliveryProgress {
            state: self
                .state
                .parse::<DeliveryState>()
                .map_err(|e| f.err("state", e))?,
            attempts: f.count("attempts", self.attempts)?,
            provider_id: self.provider_id,
            error_code: self.error_code,
            error_text: self.error_text,
            details: f.json("details", self.details.as_deref())?,
            updated_at: f.time("updated_at", self.updated_at)?,
        };
        let channel = self
            .channel
            .parse::<Channel>()
            .map_err(|e| f.err("channel", e))?;
        Delivery::from_storage(
            DeliveryId(self.id),
            MessageId(self.message_id),
            self.device_id.map(DeviceId),
            channel,
            progress,
        )
        .map_err(|e| f.err("state", e))
    }
}

/// A due delivery with the columns of its device that sending needs, as
/// [`clarion_domain::ports::MessageStore::due_page`] reads them: the delivery's columns in
/// [`DELIVERY_COLUMNS`] order, then its device's (all `NULL` when there is none). SQLite
/// gives a page as one JSON array of these rows (in this field order), PostgreSQL as rows.
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
pub(crate) struct DueRow<T> {
    pub id: i64,
    pub message_id: i64,
    pub device_id: Option<i64>,
    pub channel: String,
    pub state: String,
    pub attempts: i64,
    pub provider_id: Option<String>,
    pub error_code: Option<String>,
    pub error_text: Option<String>,
    pub details: Option<String>,
    pub updated_at: T,
    pub platform: Option<String>,
    pub token_key: Option<String>,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub active: Option<bool>,
    pub deactivation_reason: Option<String>,
}

impl<T: StoredTime> DueRow<T> {
    pub(crate) fn into_domain(self) -> Result<DueDelivery, StoreError> {
        let device = match (self.device_id, &self.platform, &self.token_key) {
            (Some(id), Some(platform), Some(token_key)) => {
                let f = Field {
                    table: "devices",
                    id: &id,
                };
                let platform: Platform = platform.parse().map_err(|e| f.err("platform", e))?;
                // As in `DeviceRow::into_domain`: validated on the way in.
                let token = DeviceToken::parse(
                    platform,
                    token_key,
                    self.p256dh.as_deref(),
                    self.auth.as_deref(),
                    EndpointPolicy::AllowPrivate,
                )
                .map_err(|e| f.err("token", e))?;
                Some(Recipient {
                    id: DeviceId(id),
                    token,
                    active: self.active.ok_or_else(|| f.err("active", "missing"))?,
                    deactivation_reason: self.deactivation_reason,
                })
            }
            _ => None,
        };
        let delivery = DeliveryRow {
            id: self.id,
            message_id: self.message_id,
            device_id: self.device_id,
            channel: self.channel,
            state: self.state,
            attempts: self.attempts,
            provider_id: self.provider_id,
            error_code: self.error_code,
            error_text: self.error_text,
            details: self.details,
            updated_at: self.updated_at,
        }
        .into_domain()?;
        Ok((delivery, device))
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TemplateRow<T> {
    pub app: String,
    pub slug: String,
    pub body: String,
    pub heading: Option<String>,
    pub url: Option<String>,
    pub is_active: bool,
    pub allow_duplicates: bool,
    pub created_at: T,
    pub updated_at: T,
}

impl<T: StoredTime> TemplateRow<T> {
    pub(crate) fn into_domain(self) -> Result<Template, StoreError> {
        let key = format!("{}/{}", self.app, self.slug);
        let f = Field {
            table: "templates",
            id: &key,
        };
        Ok(Template {
            app: AppId::parse(&self.app).map_err(|e| f.err("app", e))?,
            slug: Slug::parse(&self.slug).map_err(|e| f.err("slug", e))?,
            body: self.body,
            heading: self.heading,
            url: self.url,
            is_active: self.is_active,
            allow_duplicates: self.allow_duplicates,
            created_at: f.time("created_at", self.created_at)?,
            updated_at: f.time("updated_at", self.updated_at)?,
        })
    }
}

#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ApiKeyRow<T> {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub prefix: String,
    pub hash: String,
    pub created_at: T,
    pub revoked_at: Option<T>,
}

impl<T: StoredTime> ApiKeyRow<T> {
    pub(crate) fn into_domain(self) -> Result<ApiKey, StoreError> {
        let f = Field {
            table: "api_keys",
            id: &self.id,
        };
        Ok(ApiKey {
            id: ApiKeyId(self.id),
            scope: self.scope.parse().map_err(|e| f.err("scope", e))?,
            created_at: f.time("created_at", self.created_at)?,
            revoked_at: f.opt_time("revoked_at", self.revoked_at)?,
            name: self.name,
            prefix: self.prefix,
            hash: Some(KeyHash::from_stored(self.hash)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn times_are_stored_as_milliseconds() {
        let at = datetime!(2024-05-06 07:08:09.123456 UTC);
        assert_eq!(millis(at), 1_714_979_289_123);
        let f = Field { table: "t", id: &1 };
        assert_eq!(
            f.time("x", millis(at)).ok(),
            Some(datetime!(2024-05-06 07:08:09.123 UTC))
        );
        assert_eq!(millis(datetime!(1969-12-31 23:59:59.9995 UTC)), -1);
    }

    #[test]
    fn a_device_row_with_an_unknown_platform_is_corrupt_and_names_the_field() {
        let row = DeviceRow::<i64> {
            id: 12,
            app: "shop".into(),
            platform: "pager".into(),
            token_key: "x".into(),
            p256dh: None,
            auth: None,
            name: None,
            active: true,
            user_id: None,
            device_id: None,
            created_at: 0,
            updated_at: 0,
            deactivated_at: None,
            deactivation_reason: None,
        };
        match row.into_domain() {
            Err(StoreError::Corrupt(text)) => {
                assert!(text.starts_with("devices row 12: platform: "), "{text}");
            }
            other => panic!("expected a corrupt row, got {other:?}"),
        }
    }
}
