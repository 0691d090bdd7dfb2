//! Devices: registering them (one or in bulk), reading, changing, deactivating and deleting
//! them, with the request and error types of these operations.

use crate::app::UnknownApplication;
use crate::device::{
    BulkRegistration, Device, DeviceFieldError, DeviceFilter, DeviceUpdate, NewDevice, Registration,
};
use crate::ids::{DeviceId, UserId};
use crate::ports::StoreError;
use crate::service::PushService;
use crate::text::storable;
use crate::token::{DeviceToken, Platform, TokenError};

/// A device registration as received at the edge; the token is parsed here because a Web
/// Push endpoint's policy depends on the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterDevice {
    /// Which push service the token is for; it decides how `token` is read.
    pub platform: Platform,
    /// The APNs or FCM token, or the Web Push endpoint.
    pub token: String,
    /// The Web Push subscription's public key (base64url of a 65-byte P-256 point); Web Push only.
    pub p256dh: Option<String>,
    /// The Web Push subscription's authentication secret (base64url of 16 bytes); Web Push only.
    pub auth: Option<String>,
    /// A name for people, such as `Alice's iPhone` (at most 255 characters).
    pub name: Option<String>,
    /// The user who owns the device; messages to that user reach it.
    pub user_id: Option<UserId>,
    /// A client-chosen id (a UUID in django-push-notifications), opaque to Clarion (at most 255
    /// characters).
    pub device_id: Option<String>,
}

/// Why a device operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// The token or subscription was refused; the text names the field.
    #[error("invalid token: {0}")]
    InvalidToken(#[from] TokenError),
    /// A name, client device id, reason or token prefix was refused; the text names the field.
    #[error(transparent)]
    InvalidField(#[from] DeviceFieldError),
    /// The application has no device with this id.
    #[error("device {0} not found")]
    NotFound(DeviceId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The most devices one bulk registration takes.
pub const MAX_BULK_DEVICES: usize = 5000;

/// Why a bulk registration failed. Nothing is registered when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum BulkDeviceError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// More than [`MAX_BULK_DEVICES`] devices were given.
    #[error("{given} devices given; at most {MAX_BULK_DEVICES} are registered at once")]
    TooMany {
        /// How many devices were given.
        given: usize,
    },
    /// The device at `index` (from 0) of the list is invalid.
    #[error("device {index}: {error}")]
    Invalid {
        /// Where the device is in the list, from 0.
        index: usize,
        /// Why it was refused.
        error: DeviceError,
    },
    /// The store failed; nothing was registered.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushService {
    /// Registers a device, or updates the device with the same token.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidToken`] naming the field,
    /// [`DeviceError::InvalidField`], or [`DeviceError::Store`].
    pub async fn register_device(
        &self,
        app: &str,
        request: RegisterDevice,
    ) -> Result<(Device, Registration), DeviceError> {
        let app = self.apps.get(app)?;
        let token = DeviceToken::parse(
            request.platform,
            &request.token,
            request.p256dh.as_deref(),
            request.auth.as_deref(),
            app.endpoint_policy,
        )?;
        let device = NewDevice {
            app: app.id.clone(),
            token,
            name: request.name,
            user_id: request.user_id,
            device_id: request.device_id,
        };
        device.validate()?;
        Ok(self
            .ports
            .devices
            .register_device(&device, self.now())
            .await?)
    }

    /// Registers up to [`MAX_BULK_DEVICES`] devices at once, all or none, each as
    /// [`PushService::register_device`] would (a token given twice is registered once, with
    /// its last registration).
    ///
    /// # Errors
    /// [`BulkDeviceError::UnknownApplication`], [`BulkDeviceError::TooMany`],
    /// [`BulkDeviceError::Invalid`] for the first invalid device, or
    /// [`BulkDeviceError::Store`].
    pub async fn register_devices(
        &self,
        app: &str,
        requests: Vec<RegisterDevice>,
    ) -> Result<BulkRegistration, BulkDeviceError> {
        let app = self.apps.get(app)?;
        if requests.len() > MAX_BULK_DEVICES {
            return Err(BulkDeviceError::TooMany {
                given: requests.len(),
            });
        }
        let mut devices = Vec::with_capacity(requests.len());
        for (index, request) in requests.into_iter().enumerate() {
            let invalid = |error: DeviceError| BulkDeviceError::Invalid { index, error };
            let token = DeviceToken::parse(
                request.platform,
                &request.token,
                request.p256dh.as_deref(),
                request.auth.as_deref(),
                app.endpoint_policy,
            )
            .map_err(|e| invalid(e.into()))?;
            let device = NewDevice {
                app: app.id.clone(),
                token,
                name: request.name,
                user_id: request.user_id,
                device_id: request.device_id,
            };
            device.validate().map_err(|e| invalid(e.into()))?;
            devices.push(device);
        }
        Ok(self
            .ports
            .devices
            .register_devices(&devices, self.now())
            .await?)
    }

    /// The device of `app` with this id.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn get_device(&self, app: &str, id: DeviceId) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        self.ports
            .devices
            .get_device(&app.id, id)
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// The devices of `app` that match the filter, in id order.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`] for a token prefix
    /// that cannot be stored, or [`DeviceError::Store`].
    pub async fn list_devices(
        &self,
        app: &str,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, DeviceError> {
        let app = self.apps.get(app)?;
        filter.validate()?;
        Ok(self.ports.devices.list_devices(&app.id, filter).await?)
    }

    /// Deactivates a device with the operator's reason.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`] for a reason that
    /// cannot be stored, [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn deactivate_device(
        &self,
        app: &str,
        id: DeviceId,
        reason: &str,
    ) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        storable("reason", reason).map_err(DeviceFieldError::from)?;
        if !self
            .ports
            .devices
            .deactivate_device(&app.id, id, reason, self.now())
            .await?
        {
            return Err(DeviceError::NotFound(id));
        }
        self.ports
            .devices
            .get_device(&app.id, id)
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// Changes a device's name, owner or active flag.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::InvalidField`],
    /// [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn update_device(
        &self,
        app: &str,
        id: DeviceId,
        update: &DeviceUpdate,
    ) -> Result<Device, DeviceError> {
        let app = self.apps.get(app)?;
        update.validate()?;
        self.ports
            .devices
            .update_device(&app.id, id, update, self.now())
            .await?
            .ok_or(DeviceError::NotFound(id))
    }

    /// Deletes a device; its past deliveries keep their records without it.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`], [`DeviceError::NotFound`] or [`DeviceError::Store`].
    pub async fn delete_device(&self, app: &str, id: DeviceId) -> Result<(), DeviceError> {
        let app = self.apps.get(app)?;
        if self.ports.devices.delete_device(&app.id, id).await? {
            Ok(())
        } else {
            Err(DeviceError::NotFound(id))
        }
    }
}
