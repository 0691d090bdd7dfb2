//! Tests of an operator's actions on stored messages.

use mockall::predicate::eq;

use crate::app::SenderKind;
use crate::ids::{DeliveryId, MessageId};
use crate::message::{Channel, Message, MessageState, SendOutcome};
use crate::service::MessageError;
use crate::service::tests::helpers::{Mocks, NOW, capture_saves, claimed_message};
#[tokio::test]
async fn an_operator_can_retry_an_error_message_but_not_a_sent_one() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let mut failed = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    failed.fail("boom", NOW).unwrap();
    let mut sent = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    sent.record_outcome(
        DeliveryId(1),
        &SendOutcome::Accepted {
            provider_id: None,
            details: None,
        },
        NOW,
    );
    sent.finish_attempt(&crate::retry::RetryPolicy::default(), None, NOW)
        .unwrap();
    mocks
        .messages
        .expect_get_message()
        .with(mockall::predicate::always(), eq(MessageId(1)))
        .returning(move |_, _| Ok(Some(failed.clone())));
    mocks
        .messages
        .expect_get_message()
        .with(mockall::predicate::always(), eq(MessageId(2)))
        .returning(move |_, _| Ok(Some(sent.clone())));
    let saved = capture_saves(&mut mocks);
    let service = mocks.service();

    let retried = service.retry_message("shop", MessageId(1)).await.unwrap();
    let refused = service.retry_message("shop", MessageId(2)).await;

    assert_eq!(retried.state(), MessageState::Waiting);
    assert_eq!(retried.due_deliveries().count(), 1);
    assert!(matches!(refused, Err(MessageError::Illegal(_))));
    assert_eq!(saved.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn an_operator_action_on_a_message_a_worker_holds_is_refused_as_busy() {
    let mut mocks = Mocks::new(SenderKind::Direct);
    let waiting = claimed_message(vec![(Channel::Apns, 1)], Message::initial_progress(NOW));
    mocks
        .messages
        .expect_get_message()
        .returning(move |_, _| Ok(Some(waiting.clone())));
    mocks
        .messages
        .expect_save_progress()
        .withf(|_, lease| lease.is_none())
        .times(1)
        .returning(|_, _| Ok(false));
    let service = mocks.service();

    let result = service.cancel_message("shop", MessageId(1)).await;

    assert!(matches!(result, Err(MessageError::Busy(MessageId(1)))));
}
