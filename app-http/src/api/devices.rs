//! `/v1/apps/{app}/devices`: register, list, read, update and delete devices. A client token
//! sees only its user's devices; another user's device answers 404.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use clarion_domain::auth::Principal;
use clarion_domain::device::{Device, DeviceFilter, DeviceUpdate, Registration};
use clarion_domain::ids::{DeviceId, UserId};
use clarion_domain::service::{MAX_BULK_DEVICES, RegisterDevice};
use clarion_domain::token::{DeviceToken, Platform};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::api::{paginate, parse_cursor, parse_limit, present};
use crate::auth::device_owner;
use crate::error::{ApiError, Problem, bulk_error, id_error};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::AppState;

/// The push service a device is registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PlatformDto {
    Apns,
    Fcm,
    Webpush,
}

impl From<PlatformDto> for Platform {
    fn from(value: PlatformDto) -> Self {
        match value {
            PlatformDto::Apns => Platform::Apns,
            PlatformDto::Fcm => Platform::Fcm,
            PlatformDto::Webpush => Platform::Webpush,
        }
    }
}

impl From<Platform> for PlatformDto {
    fn from(value: Platform) -> Self {
        match value {
            Platform::Apns => PlatformDto::Apns,
            Platform::Fcm => PlatformDto::Fcm,
            Platform::Webpush => PlatformDto::Webpush,
        }
    }
}

/// A device registration. Registering a token that is already registered updates that
/// device (owner, name, `active = true`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDeviceBody {
    pub platform: PlatformDto,
    /// The APNs device token (hex), the FCM registration token, or the Web Push endpoint.
    pub token: String,
    /// Web Push only: the subscription's `p256dh` key (base64url).
    #[serde(default)]
    pub p256dh: Option<String>,
    /// Web Push only: the subscription's `auth` secret (base64url).
    #[serde(default)]
    pub auth: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The owner; a client token registers for its own user.
    #[serde(default)]
    pub user_id: Option<String>,
    /// The client's own id for the device (a UUID, say).
    #[serde(default)]
    pub device_id: Option<String>,
}

/// A change to a device: absent fields stay as they are, `null` clears `name` or `user_id`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateDeviceBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, nullable)]
    pub user_id: Option<Option<String>>,
    #[serde(default)]
    pub active: Option<bool>,
}

/// A registered device.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceResponse {
    pub id: i64,
    pub app: String,
    pub platform: PlatformDto,
    /// The APNs or FCM token, or the Web Push endpoint.
    pub token: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub name: Option<String>,
    pub active: bool,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub deactivated_at: Option<OffsetDateTime>,
    pub deactivation_reason: Option<String>,
}

impl From<Device> for DeviceResponse {
    fn from(device: Device) -> Self {
        let (p256dh, auth) = match &device.token {
            DeviceToken::Webpush { subscription } => (
                Some(subscription.p256dh().to_owned()),
                Some(subscription.auth().to_owned()),
            ),
            DeviceToken::Apns { .. } | DeviceToken::Fcm { .. } => (None, None),
        };
        Self {
            id: device.id.0,
            app: device.app.to_string(),
            platform: device.platform().into(),
            token: device.token.key().to_owned(),
            p256dh,
            auth,
            name: device.name,
            active: device.active,
            user_id: device.user_id.map(String::from),
            device_id: device.device_id,
            created_at: device.created_at,
            updated_at: device.updated_at,
            deactivated_at: device.deactivated_at,
            deactivation_reason: device.deactivation_reason,
        }
    }
}

/// A page of devices, in id order.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePage {
    pub items: Vec<DeviceResponse>,
    /// Pass as `after` for the next page; `null` on the last page.
    pub next_cursor: Option<i64>,
}

/// Filters and pagination of the device list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeviceListQuery {
    /// Only this user's devices (a client token always sees its own user's only).
    #[param(value_type = Option<String>)]
    pub user_id: Option<String>,
    #[param(value_type = Option<PlatformDto>)]
    pub platform: Option<String>,
    #[param(value_type = Option<bool>)]
    pub active: Option<String>,
    /// The `next_cursor` of the previous page.
    #[param(value_type = Option<i64>)]
    pub after: Option<String>,
    /// 1 to 500; 50 by default.
    #[param(value_type = Option<u32>)]
    pub limit: Option<String>,
}

pub(crate) fn user_id(field: &str, raw: &str) -> Result<UserId, ApiError> {
    UserId::parse(raw).map_err(|e| id_error(field, &e))
}

/// The device, if the caller may see it: another user's device is "not found" for a client
/// token, so that its existence is not revealed.
async fn visible_device(
    state: &AppState,
    principal: &Principal,
    app: &str,
    id: i64,
) -> Result<Device, ApiError> {
    let device = state.service.get_device(app, DeviceId(id)).await?;
    match device_owner(principal) {
        Some(user) if device.user_id.as_ref() != Some(user) => {
            Err(ApiError::NotFound(format!("device {id} not found")))
        }
        _ => Ok(device),
    }
}

/// Register a device, or update the device with the same token.
#[utoipa::path(
    post, path = "/v1/apps/{app}/devices", tag = "devices",
    params(("app" = String, Path, description = "The application id")),
    request_body = RegisterDeviceBody,
    responses(
        (status = 201, description = "A new device", body = DeviceResponse),
        (status = 200, description = "The token was registered already; that device was updated", body = DeviceResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(app): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterDeviceBody>,
) -> Result<(StatusCode, Json<DeviceResponse>), ApiError> {
    let mut owner = body
        .user_id
        .as_deref()
        .map(|raw| user_id("user_id", raw))
        .transpose()?;
    if let Some(user) = device_owner(&principal) {
        match &owner {
            Some(given) if given != user => {
                return Err(ApiError::Forbidden(
                    "a client token may only register devices for its own user".into(),
                ));
            }
            _ => owner = Some(user.clone()),
        }
    }
    let request = RegisterDevice {
        platform: body.platform.into(),
        token: body.token,
        p256dh: body.p256dh,
        auth: body.auth,
        name: body.name,
        user_id: owner,
        device_id: body.device_id,
    };
    let (device, registration) = state.service.register_device(&app, request).await?;
    let status = match registration {
        Registration::Created => StatusCode::CREATED,
        Registration::Updated => StatusCode::OK,
    };
    Ok((status, Json(device.into())))
}

/// Many device registrations at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterDevicesBody {
    /// Up to 5,000 registrations, each as `POST /v1/apps/{app}/devices` takes it.
    pub devices: Vec<RegisterDeviceBody>,
}

/// What a bulk registration did.
#[derive(Debug, Serialize, ToSchema)]
pub struct BulkRegistrationResponse {
    /// Devices that did not exist.
    pub created: u64,
    /// Devices whose token was registered already, updated (owner, name, `active = true`).
    pub updated: u64,
}

/// Register up to 5,000 devices in one transaction (imports, load tests): all of them, or
/// none when one is invalid (the error names it, as `devices[3].token`). API keys only.
#[utoipa::path(
    post, path = "/v1/apps/{app}/devices/bulk", tag = "devices",
    params(("app" = String, Path, description = "The application id")),
    request_body = RegisterDevicesBody,
    responses(
        (status = 200, description = "How many devices were created and updated", body = BulkRegistrationResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn register_devices(
    State(state): State<AppState>,
    ApiPath(app): ApiPath<String>,
    ApiJson(body): ApiJson<RegisterDevicesBody>,
) -> Result<Json<BulkRegistrationResponse>, ApiError> {
    if body.devices.len() > MAX_BULK_DEVICES {
        return Err(ApiError::invalid(
            "devices",
            format!(
                "{} devices given; at most {MAX_BULK_DEVICES} are registered at once",
                body.devices.len()
            ),
        ));
    }
    let mut requests = Vec::with_capacity(body.devices.len());
    for (index, device) in body.devices.into_iter().enumerate() {
        let owner = device
            .user_id
            .as_deref()
            .map(|raw| user_id(&format!("devices[{index}].user_id"), raw))
            .transpose()?;
        requests.push(RegisterDevice {
            platform: device.platform.into(),
            token: device.token,
            p256dh: device.p256dh,
            auth: device.auth,
            name: device.name,
            user_id: owner,
            device_id: device.device_id,
        });
    }
    let done = state
        .service
        .register_devices(&app, requests)
        .await
        .map_err(bulk_error)?;
    Ok(Json(BulkRegistrationResponse {
        created: done.created,
        updated: done.updated,
    }))
}

/// List devices, in id order.
#[utoipa::path(
    get, path = "/v1/apps/{app}/devices", tag = "devices",
    params(("app" = String, Path, description = "The application id"), DeviceListQuery),
    responses(
        (status = 200, body = DevicePage),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list_devices(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(app): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeviceListQuery>,
) -> Result<Json<DevicePage>, ApiError> {
    let limit = parse_limit(query.limit.as_deref())?;
    let mut filter = DeviceFilter {
        user_id: query
            .user_id
            .as_deref()
            .map(|raw| user_id("user_id", raw))
            .transpose()?,
        platform: query
            .platform
            .as_deref()
            .map(|raw| match raw {
                "apns" => Ok(Platform::Apns),
                "fcm" => Ok(Platform::Fcm),
                "webpush" => Ok(Platform::Webpush),
                other => Err(ApiError::invalid(
                    "platform",
                    format!("must be apns, fcm or webpush; got {other:?}"),
                )),
            })
            .transpose()?,
        active: query
            .active
            .as_deref()
            .map(|raw| {
                raw.parse::<bool>().map_err(|_| {
                    ApiError::invalid("active", format!("must be true or false; got {raw:?}"))
                })
            })
            .transpose()?,
        token_prefix: None,
        after: parse_cursor("after", query.after.as_deref())?.map(DeviceId),
        limit: Some(limit + 1),
    };
    if let Some(user) = device_owner(&principal) {
        filter.user_id = Some(user.clone());
    }
    let devices = state.service.list_devices(&app, &filter).await?;
    let (devices, next_cursor) = paginate(devices, limit, |d| d.id.0);
    Ok(Json(DevicePage {
        items: devices.into_iter().map(Into::into).collect(),
        next_cursor,
    }))
}

/// Read one device.
#[utoipa::path(
    get, path = "/v1/apps/{app}/devices/{id}", tag = "devices",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The device id")),
    responses(
        (status = 200, body = DeviceResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
) -> Result<Json<DeviceResponse>, ApiError> {
    let device = visible_device(&state, &principal, &app, id).await?;
    Ok(Json(device.into()))
}

/// Change a device's name, owner or active flag.
#[utoipa::path(
    patch, path = "/v1/apps/{app}/devices/{id}", tag = "devices",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The device id")),
    request_body = UpdateDeviceBody,
    responses(
        (status = 200, body = DeviceResponse),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn update_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
    ApiJson(body): ApiJson<UpdateDeviceBody>,
) -> Result<Json<DeviceResponse>, ApiError> {
    let new_owner = match body.user_id {
        None => None,
        Some(None) => Some(None),
        Some(Some(raw)) => Some(Some(user_id("user_id", &raw)?)),
    };
    visible_device(&state, &principal, &app, id).await?;
    if let Some(user) = device_owner(&principal)
        && new_owner
            .as_ref()
            .is_some_and(|owner| owner.as_ref() != Some(user))
    {
        return Err(ApiError::Forbidden(
            "a client token may not give its device to another user".into(),
        ));
    }
    let update = DeviceUpdate {
        name: body.name,
        user_id: new_owner,
        active: body.active,
        reason: (body.active == Some(false)).then(|| "deactivated through the API".to_owned()),
    };
    let device = state
        .service
        .update_device(&app, DeviceId(id), &update)
        .await?;
    Ok(Json(device.into()))
}

/// Delete a device; its past deliveries keep their records.
#[utoipa::path(
    delete, path = "/v1/apps/{app}/devices/{id}", tag = "devices",
    params(("app" = String, Path, description = "The application id"), ("id" = i64, Path, description = "The device id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, body = Problem), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn delete_device(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((app, id)): ApiPath<(String, i64)>,
) -> Result<StatusCode, ApiError> {
    visible_device(&state, &principal, &app, id).await?;
    state.service.delete_device(&app, DeviceId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}
