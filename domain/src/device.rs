//! Registered devices.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ids::{AppId, DeviceId, UserId};
use crate::text::{UnstorableText, storable_opt};
use crate::token::{DeviceToken, Platform};

/// A device as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The store's id of the device.
    pub id: DeviceId,
    /// The application the device is registered with.
    pub app: AppId,
    /// Its platform and token; serialised flat, as `platform` beside `token` (APNs, FCM) or
    /// `subscription` (Web Push).
    #[serde(flatten)]
    pub token: DeviceToken,
    /// A name for people, such as `Alice's iPhone`.
    pub name: Option<String>,
    /// Whether messages are sent to it: a dead token or an operator turns it off, and a new
    /// registration of the same token turns it on again.
    pub active: bool,
    /// The user who owns it; messages to that user reach it.
    pub user_id: Option<UserId>,
    /// A client-chosen id (a UUID in django-push-notifications), opaque to Clarion.
    pub device_id: Option<String>,
    /// When it was first registered.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it last changed; registering its token again counts.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When it was deactivated; `None` while it is active.
    #[serde(with = "time::serde::rfc3339::option")]
    pub deactivated_at: Option<OffsetDateTime>,
    /// Why it was deactivated: the provider's dead-token code or an operator's reason.
    pub deactivation_reason: Option<String>,
}

impl Device {
    /// The push service its token is for.
    #[must_use]
    pub fn platform(&self) -> Platform {
        self.token.platform()
    }
}

/// What sending to a device needs of it: its token, and whether it is still active (with
/// why not). A page of due deliveries carries this rather than the whole [`Device`], so that a
/// store reads and decodes only these columns for each delivery of a broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The store's id of the device.
    pub id: DeviceId,
    /// Where the payload goes.
    pub token: DeviceToken,
    /// Whether it may still be sent to: a delivery to an inactive device fails without a request.
    pub active: bool,
    /// Why it was deactivated, which such a failed delivery reports.
    pub deactivation_reason: Option<String>,
}

impl Recipient {
    /// The push service its token is for.
    #[must_use]
    pub fn platform(&self) -> Platform {
        self.token.platform()
    }
}

impl From<Device> for Recipient {
    fn from(device: Device) -> Self {
        Self {
            id: device.id,
            token: device.token,
            active: device.active,
            deactivation_reason: device.deactivation_reason,
        }
    }
}

/// A registration request, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// The application to register it with.
    pub app: AppId,
    /// The parsed token; a device is unique by application, platform and token, so registering a
    /// token again updates its device.
    pub token: DeviceToken,
    /// A name for people (at most 255 characters).
    pub name: Option<String>,
    /// The user who owns it.
    pub user_id: Option<UserId>,
    /// A client-chosen id, opaque to Clarion (at most 255 characters).
    pub device_id: Option<String>,
}

/// Why a device field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceFieldError {
    /// The name has more than 255 characters; it holds how many.
    #[error("device name is {0} characters long; at most 255 are allowed")]
    NameTooLong(usize),
    /// The client device id has more than 255 characters; it holds how many.
    #[error("device_id is {0} characters long; at most 255 are allowed")]
    DeviceIdTooLong(usize),
    /// A field holds a character no store can keep; the error names it.
    #[error(transparent)]
    Unstorable(#[from] UnstorableText),
}

impl NewDevice {
    /// Checks the free-text fields.
    ///
    /// # Errors
    /// A [`DeviceFieldError`] naming the field.
    pub fn validate(&self) -> Result<(), DeviceFieldError> {
        storable_opt("name", self.name.as_deref())?;
        storable_opt("device_id", self.device_id.as_deref())?;
        if let Some(name) = &self.name {
            let len = name.chars().count();
            if len > 255 {
                return Err(DeviceFieldError::NameTooLong(len));
            }
        }
        if let Some(id) = &self.device_id {
            let len = id.chars().count();
            if len > 255 {
                return Err(DeviceFieldError::DeviceIdTooLong(len));
            }
        }
        Ok(())
    }
}

/// A change to a registered device; `None` leaves a field as it is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceUpdate {
    /// `Some(None)` clears the name, `Some(Some(name))` sets it.
    pub name: Option<Option<String>>,
    /// `Some(None)` clears the owner, `Some(Some(user))` gives the device to that user.
    pub user_id: Option<Option<UserId>>,
    /// `Some(false)` deactivates the device (with `reason`), `Some(true)` activates it again.
    pub active: Option<bool>,
    /// Why the device is deactivated, when `active` is `Some(false)`.
    pub reason: Option<String>,
}

impl DeviceUpdate {
    /// Checks the free-text fields.
    ///
    /// # Errors
    /// A [`DeviceFieldError`] naming the field.
    pub fn validate(&self) -> Result<(), DeviceFieldError> {
        storable_opt("name", self.name.as_ref().and_then(Option::as_deref))?;
        storable_opt("reason", self.reason.as_deref())?;
        if let Some(Some(name)) = &self.name {
            let len = name.chars().count();
            if len > 255 {
                return Err(DeviceFieldError::NameTooLong(len));
            }
        }
        Ok(())
    }
}

/// Whether a registration created a device or updated the one that had the same token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    /// Nothing had the key (a device's token, a template's slug): it was created (HTTP 201).
    Created,
    /// Something had the key: it was updated (a device made active again with the new owner and
    /// name, a template replaced), HTTP 200.
    Updated,
}

/// What a bulk registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BulkRegistration {
    /// Devices that did not exist.
    pub created: u64,
    /// Devices whose token was registered already, updated as a single registration would.
    pub updated: u64,
}

/// The devices of a bulk registration with one device per application, platform and token:
/// the last registration of a token wins, at the place of its first, as if they had been
/// registered one by one. A store writes each token once per statement, which PostgreSQL's
/// `ON CONFLICT DO UPDATE` requires.
#[must_use]
pub fn last_registration_of_each_token(devices: &[NewDevice]) -> Vec<&NewDevice> {
    let mut position: std::collections::HashMap<(&AppId, Platform, &str), usize> =
        std::collections::HashMap::with_capacity(devices.len());
    let mut unique: Vec<&NewDevice> = Vec::with_capacity(devices.len());
    for device in devices {
        let key = (&device.app, device.token.platform(), device.token.key());
        match position.get(&key) {
            Some(&at) => unique[at] = device,
            None => {
                position.insert(key, unique.len());
                unique.push(device);
            }
        }
    }
    unique
}

/// Filters for listing devices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceFilter {
    /// Only devices of this user.
    pub user_id: Option<UserId>,
    /// Only devices on this platform.
    pub platform: Option<Platform>,
    /// Only active (`true`) or only inactive (`false`) devices.
    pub active: Option<bool>,
    /// Only devices whose token (for Web Push, the endpoint) starts with this text.
    pub token_prefix: Option<String>,
    /// Only devices with an id greater than this (cursor pagination).
    pub after: Option<DeviceId>,
    /// At most this many devices; `None` leaves the page size to the store, which also caps it.
    pub limit: Option<u32>,
}

impl DeviceFilter {
    /// Checks the free-text filter: a store cannot even compare with text it cannot hold.
    ///
    /// # Errors
    /// [`DeviceFieldError::Unstorable`] naming `token` for a prefix holding a NUL character.
    pub fn validate(&self) -> Result<(), DeviceFieldError> {
        Ok(storable_opt("token", self.token_prefix.as_deref())?)
    }
}
