//! The entry point of the `request_bodies` fuzz target (`fuzz/`): not part of the API. It
//! reads a request body as its handler does and turns it into the domain's values with the
//! same conversions and checks, without a store.

use clarion_domain::auth::KeyScope;
use clarion_domain::device::NewDevice;
use clarion_domain::ids::AppId;
use clarion_domain::service::{DeviceError, SendError};
use clarion_domain::token::{DeviceToken, EndpointPolicy};
use serde::de::DeserializeOwned;

use crate::api::devices::{RegisterDeviceBody, RegisterDevicesBody, UpdateDeviceBody};
use crate::api::keys::CreateKeyBody;
use crate::api::messages::{SendBody, TemplateSendBody};
use crate::api::templates::{CreateTemplateBody, PreviewBody, PutTemplateBody};
use crate::bulk::BulkItem;
use crate::error::{ApiError, id_error};
use crate::extract::parse_json;

/// The request bodies of the API, by the route that takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// `POST /v1/apps/{app}/devices`
    RegisterDevice,
    /// `POST /v1/apps/{app}/devices/bulk`
    RegisterDevices,
    /// `PATCH /v1/apps/{app}/devices/{id}`
    UpdateDevice,
    /// `POST /v1/apps/{app}/messages`
    Send,
    /// `POST /v1/apps/{app}/messages/template`
    TemplateSend,
    /// `POST /v1/apps/{app}/messages/bulk`
    BulkSend,
    /// `POST /v1/apps/{app}/templates`
    CreateTemplate,
    /// `PUT /v1/apps/{app}/templates/{slug}`
    PutTemplate,
    /// `POST /v1/apps/{app}/templates/{slug}/preview`
    Preview,
    /// `POST /v1/keys`
    CreateKey,
}

impl RequestBody {
    /// Every request body.
    pub const ALL: [RequestBody; 10] = [
        RequestBody::RegisterDevice,
        RequestBody::RegisterDevices,
        RequestBody::UpdateDevice,
        RequestBody::Send,
        RequestBody::TemplateSend,
        RequestBody::CreateTemplate,
        RequestBody::PutTemplate,
        RequestBody::Preview,
        RequestBody::CreateKey,
        RequestBody::BulkSend,
    ];
}

/// A refused body: the status it is answered with and the problem's detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

/// Reads `bytes` as the body of `route` and converts it into the domain's values. Refusals
/// carry the status the API answers with.
///
/// # Errors
/// The [`Refused`] status and detail of the first problem found.
pub fn read_body(route: RequestBody, bytes: &[u8]) -> Result<(), Refused> {
    read(route, bytes).map_err(|error| Refused {
        status: error.status().as_u16(),
        detail: error.to_string(),
    })
}

fn read(route: RequestBody, bytes: &[u8]) -> Result<(), ApiError> {
    match route {
        RequestBody::RegisterDevice => register(body::<RegisterDeviceBody>(bytes)?, ""),
        RequestBody::RegisterDevices => {
            for (index, device) in body::<RegisterDevicesBody>(bytes)?
                .devices
                .into_iter()
                .enumerate()
            {
                register(device, &format!("devices[{index}]."))?;
            }
            Ok(())
        }
        RequestBody::UpdateDevice => {
            let update = body::<UpdateDeviceBody>(bytes)?;
            if let Some(Some(raw)) = update.user_id {
                crate::api::devices::user_id("user_id", &raw)?;
            }
            Ok(())
        }
        RequestBody::Send => {
            let (request, _) = body::<SendBody>(bytes)?.into_request()?;
            request.options.validate().map_err(SendError::from)?;
            request
                .content
                .validate(&request.options)
                .map_err(SendError::from)?;
            Ok(())
        }
        RequestBody::TemplateSend => {
            let (request, _) = body::<TemplateSendBody>(bytes)?.into_request()?;
            request.options.validate().map_err(SendError::from)?;
            Ok(())
        }
        // Each message's problem is a result of a 200 answer, not a refusal of the body.
        RequestBody::BulkSend => {
            for raw in crate::api::bulk::envelope(bytes)?.messages {
                if let Ok(BulkItem::Send { request, .. }) = BulkItem::parse_checked(raw.get())
                    && request.options.validate().is_ok()
                {
                    let _ = request.content.validate(&request.options);
                }
            }
            Ok(())
        }
        RequestBody::CreateTemplate => {
            let template = body::<CreateTemplateBody>(bytes)?;
            crate::api::templates::slug(&template.slug)?;
            Ok(())
        }
        RequestBody::PutTemplate => body::<PutTemplateBody>(bytes).map(drop),
        RequestBody::Preview => body::<PreviewBody>(bytes).map(drop),
        RequestBody::CreateKey => {
            let key = body::<CreateKeyBody>(bytes)?;
            key.scope
                .parse::<KeyScope>()
                .map_err(|e| ApiError::invalid("scope", e))?;
            Ok(())
        }
    }
}

fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    parse_json(bytes)
}

/// What the service does with a registration before it reaches the store.
fn register(body: RegisterDeviceBody, prefix: &str) -> Result<(), ApiError> {
    let user_id = body
        .user_id
        .as_deref()
        .map(|raw| crate::api::devices::user_id(&format!("{prefix}user_id"), raw))
        .transpose()?;
    let token = DeviceToken::parse(
        body.platform.into(),
        &body.token,
        body.p256dh.as_deref(),
        body.auth.as_deref(),
        EndpointPolicy::PublicOnly,
    )
    .map_err(DeviceError::from)?;
    let app = AppId::parse("fuzz").map_err(|e| id_error("app", &e))?;
    let device = NewDevice {
        app,
        token,
        name: body.name,
        user_id,
        device_id: body.device_id,
    };
    Ok(device.validate().map_err(DeviceError::from)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_body_is_refused_as_a_whole_only_for_its_list_not_for_a_bad_message() {
        let seed = include_bytes!("../../fuzz/corpus/request_bodies/send-bulk");
        let (route, body) = seed.split_first().unwrap();
        let route = RequestBody::ALL[usize::from(route - b'0')];

        assert_eq!(route, RequestBody::BulkSend);
        assert_eq!(read_body(route, body), Ok(()));
        assert_eq!(
            read_body(route, br#"{"messages": [1, {"body": 2}]}"#),
            Ok(())
        );
        assert_eq!(
            read_body(route, br#"{"messages": []}"#).unwrap_err().status,
            422
        );
        assert_eq!(read_body(route, b"{").unwrap_err().status, 400);
    }
}
