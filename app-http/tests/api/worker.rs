use std::time::Duration;

use clarion_domain::ids::UserId;
use clarion_domain::message::{Content, MessageState, Priority, PushOptions, Target};
use clarion_domain::service::{Dispatch, RegisterDevice, SendRequest};
use clarion_domain::token::Platform;

use crate::helpers::{eventually, runtime_with, spawn};

fn message_to(user: &UserId) -> SendRequest {
    SendRequest {
        target: Target::User {
            user_id: user.clone(),
        },
        content: Content {
            heading: Some("Hello".to_owned()),
            body: "Your order has shipped".to_owned(),
            url: None,
            extra_data: None,
        },
        tag: None,
        priority: Priority::default(),
        options: PushOptions::default(),
        related_objects: Vec::new(),
        retry_sending: true,
    }
}

async fn queue_one_message(
    service: &clarion_domain::service::PushService,
) -> clarion_domain::ids::MessageId {
    let user = UserId::parse("alice").expect("a user id");
    service
        .register_device(
            "default",
            RegisterDevice {
                platform: Platform::Fcm,
                token: "fcm-registration-token-1".to_owned(),
                p256dh: None,
                auth: None,
                name: None,
                user_id: Some(user.clone()),
                device_id: None,
            },
        )
        .await
        .expect("the device registers");
    let message = service
        .send("default", message_to(&user), Dispatch::Queue)
        .await
        .expect("the message is queued");
    assert_eq!(message.state(), MessageState::Waiting);
    message.id
}

#[tokio::test]
async fn the_worker_sends_a_queued_message_through_the_debug_sender() {
    let (runtime, dir) = runtime_with(|config| config.worker.poll_interval_secs = 1).await;
    let id = queue_one_message(&runtime.service).await;

    let app = spawn(runtime, dir).await;

    let state = eventually(Duration::from_secs(10), || async {
        let message = app
            .service
            .get_message("default", id)
            .await
            .expect("the message exists")
            .0;
        (message.state() != MessageState::Waiting).then(|| message.state())
    })
    .await;
    assert_eq!(state, MessageState::Debug);
}

#[tokio::test]
async fn the_worker_polls_for_messages_queued_while_it_runs() {
    let (runtime, dir) = runtime_with(|config| config.worker.poll_interval_secs = 1).await;
    let app = spawn(runtime, dir).await;

    let id = queue_one_message(&app.service).await;

    let state = eventually(Duration::from_secs(10), || async {
        let message = app
            .service
            .get_message("default", id)
            .await
            .expect("the message exists")
            .0;
        (message.state() != MessageState::Waiting).then(|| message.state())
    })
    .await;
    assert_eq!(state, MessageState::Debug);
}
