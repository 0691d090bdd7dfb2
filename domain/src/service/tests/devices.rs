//! Tests of registering devices.

use crate::app::{Application, SenderKind};
use crate::device::Registration;
use crate::ids::{AppId, DeviceId};
use crate::service::tests::helpers::{APNS_TOKEN, Mocks, NOW, apns_device};
use crate::service::{DeviceError, RegisterDevice};
use crate::token::{EndpointPolicy, Platform, TokenError};
#[tokio::test]
async fn registering_a_private_web_push_endpoint_is_refused_before_the_store() {
    let mocks = Mocks::new(SenderKind::Direct);
    let service = mocks.service();
    let result = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Webpush,
                token: "https://10.0.0.1/push".into(),
                p256dh: Some(format!("B{}", "A".repeat(86))),
                auth: Some("AAAAAAAAAAAAAAAAAAAAAA".into()),
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await;
    assert!(matches!(
        result,
        Err(DeviceError::InvalidToken(TokenError::EndpointNotPublic(_)))
    ));
}

#[tokio::test]
async fn registering_for_an_unknown_application_names_it() {
    let service = Mocks::new(SenderKind::Direct).service();
    let err = service
        .register_device(
            "nope",
            RegisterDevice {
                platform: Platform::Apns,
                token: APNS_TOKEN.into(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown application \"nope\"");
}

#[tokio::test]
async fn registering_a_valid_token_stores_it_lower_case() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    mocks
        .devices
        .expect_register_device()
        .withf(|d, now| d.token.key() == APNS_TOKEN && *now == NOW)
        .times(1)
        .returning(|_, _| Ok((apns_device(1), Registration::Created)));
    let service = mocks.service();
    let (device, registration) = service
        .register_device(
            "shop",
            RegisterDevice {
                platform: Platform::Apns,
                token: APNS_TOKEN.to_ascii_uppercase(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: None,
                device_id: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(registration, Registration::Created);
    assert_eq!(device.id, DeviceId(1));
}

#[test]
fn the_endpoint_policy_of_an_application_defaults_to_public_only() {
    let app = Application::new(AppId::parse("x").unwrap(), SenderKind::Debug);
    assert_eq!(app.endpoint_policy, EndpointPolicy::PublicOnly);
}
