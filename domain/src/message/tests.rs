//! Tests of the message state machine.

use super::*;
use proptest::prelude::*;
use time::macros::datetime;

const T0: OffsetDateTime = datetime!(2026-01-01 12:00 UTC);

fn spec() -> MessageSpec {
    MessageSpec {
        app: AppId::parse("default").expect("valid"),
        target: Target::User {
            user_id: UserId::parse("alice").expect("valid"),
        },
        content: Content {
            body: "hello".into(),
            ..Content::default()
        },
        template_slug: None,
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: vec![],
        retry_sending: true,
    }
}

fn message_with(deliveries: usize) -> Message {
    let mut m = Message::from_storage(
        MessageId(7),
        spec(),
        SenderKind::Direct,
        Message::initial_progress(T0),
        T0,
        T0,
    )
    .expect("a new message's progress");
    m.deliveries = (0..deliveries)
        .map(|i| {
            Delivery::pending(
                DeliveryId(i as i64 + 1),
                MessageId(7),
                Some(DeviceId(i as i64 + 1)),
                Channel::Apns,
                T0,
            )
        })
        .collect();
    m
}

fn accepted() -> SendOutcome {
    SendOutcome::Accepted {
        provider_id: Some("id-1".into()),
        details: None,
    }
}

fn transient(retry_after: Option<u64>) -> SendOutcome {
    SendOutcome::Transient {
        code: "503".into(),
        reason: "ServiceUnavailable".into(),
        retry_after: retry_after.map(Duration::from_secs),
    }
}

fn permanent() -> SendOutcome {
    SendOutcome::Permanent {
        code: "400".into(),
        reason: "PayloadEmpty".into(),
        details: None,
    }
}

fn dead() -> SendOutcome {
    SendOutcome::DeadToken {
        code: "410".into(),
        reason: "Unregistered".into(),
    }
}

fn attempt(m: &mut Message, outcomes: &[SendOutcome], now: OffsetDateTime) -> AttemptSummary {
    let due: Vec<DeliveryId> = m.due_deliveries().map(|d| d.id).collect();
    for (id, outcome) in due.iter().zip(outcomes.iter().cycle()) {
        m.record_outcome(*id, outcome, now);
    }
    m.finish_attempt(&RetryPolicy::default(), None, now)
        .expect("legal transition")
}

#[test]
fn only_the_listed_transitions_are_legal() {
    use MessageState::*;
    let legal = [
        (Waiting, Sent),
        (Waiting, Error),
        (Waiting, ErrorRetry),
        (Waiting, Debug),
        (ErrorRetry, Sent),
        (ErrorRetry, Error),
        (ErrorRetry, ErrorRetry),
        (Error, Waiting),
    ];
    for from in MessageState::ALL {
        for to in MessageState::ALL {
            assert_eq!(
                from.can_become(to),
                legal.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn an_illegal_transition_changes_nothing() {
    let mut m = message_with(1);
    attempt(&mut m, &[accepted()], T0);
    assert_eq!(m.state(), MessageState::Sent);
    let before = m.clone();
    assert_eq!(
        m.transition(MessageState::Waiting, None, T0),
        Err(IllegalTransition {
            from: MessageState::Sent,
            to: MessageState::Waiting
        })
    );
    assert_eq!(m, before);
}

#[test]
fn all_accepted_is_sent_with_the_provider_id_recorded() {
    let mut m = message_with(2);
    attempt(&mut m, &[accepted()], T0);
    assert_eq!(m.state(), MessageState::Sent);
    assert_eq!(m.progress().sent_at, Some(T0));
    assert!(m.deliveries.iter().all(|d| d.provider_id() == Some("id-1")));
}

#[test]
fn some_accepted_and_the_rest_permanent_is_sent_with_failures_visible() {
    let mut m = message_with(2);
    attempt(&mut m, &[accepted(), permanent()], T0);
    assert_eq!(m.state(), MessageState::Sent);
    assert_eq!(m.deliveries[1].state(), DeliveryState::Failed);
    assert_eq!(m.deliveries[1].error_text(), Some("PayloadEmpty"));
    assert!(m.error().is_some_and(|e| e.contains("1 of 2")));
}

#[test]
fn all_failed_permanently_or_dead_is_error() {
    let mut m = message_with(2);
    attempt(&mut m, &[dead(), permanent()], T0);
    assert_eq!(m.state(), MessageState::Error);
    assert_eq!(m.deliveries[0].state(), DeliveryState::DeadToken);
}

#[test]
fn a_transient_failure_with_attempts_left_is_error_retry_in_the_future() {
    let mut m = message_with(2);
    attempt(&mut m, &[accepted(), transient(None)], T0);
    assert_eq!(m.state(), MessageState::ErrorRetry);
    let next = m.next_attempt_at().expect("a next attempt");
    assert!(next > T0);
    assert!(!m.is_due(T0));
    assert!(m.is_due(next));
    let due: Vec<_> = m.due_deliveries().map(|d| d.id).collect();
    assert_eq!(due, vec![DeliveryId(2)]);
}

#[test]
fn retry_after_is_honoured_as_a_floor() {
    let mut m = message_with(1);
    m.record_outcome(DeliveryId(1), &transient(Some(900)), T0);
    m.finish_attempt(&RetryPolicy::default(), Some(Duration::from_secs(900)), T0)
        .expect("legal");
    assert_eq!(m.next_attempt_at(), Some(T0 + Duration::from_secs(900)));
}

#[test]
fn a_wait_beyond_the_last_representable_time_schedules_the_retry_at_that_time() {
    // A provider's Retry-After and a configured retry delay are both unbounded; a wait past the
    // year 9999 made the worker panic (found while writing the `config` fuzz target, which
    // now walks every accepted retry policy through its attempts).
    for (policy, retry_after) in [
        (RetryPolicy::default(), Some(Duration::from_secs(u64::MAX))),
        (
            RetryPolicy {
                base_delay: Duration::from_secs(i64::MAX as u64),
                max_delay: Duration::from_secs(u64::MAX),
                ..RetryPolicy::default()
            },
            None,
        ),
    ] {
        let mut m = message_with(1);
        m.record_outcome(DeliveryId(1), &transient(None), T0);
        m.finish_attempt(&policy, retry_after, T0).expect("legal");
        assert_eq!(m.state(), MessageState::ErrorRetry);
        let at = m.next_attempt_at().expect("a next attempt");
        assert!(at > T0 + Duration::from_secs(100 * 365 * 86_400), "{at}");
    }
}

#[test]
fn the_default_walk_is_three_retries_then_error() {
    let mut m = message_with(1);
    let mut now = T0;
    for expected_attempts in 1..=3 {
        attempt(&mut m, &[transient(None)], now);
        assert_eq!(m.state(), MessageState::ErrorRetry);
        assert_eq!(m.number_of_send_attempts(), expected_attempts);
        now = m.next_attempt_at().expect("next attempt");
    }
    attempt(&mut m, &[transient(None)], now);
    assert_eq!(m.state(), MessageState::Error);
    assert_eq!(m.number_of_send_attempts(), 4);
    assert_eq!(m.deliveries[0].error_code(), Some("retries_exhausted"));
}

#[test]
fn exhausted_retries_after_a_partial_success_leave_the_message_sent() {
    let mut m = message_with(2);
    let mut now = T0;
    attempt(&mut m, &[accepted(), transient(None)], now);
    for _ in 0..3 {
        now = m.next_attempt_at().expect("next attempt");
        attempt(&mut m, &[transient(None)], now);
    }
    assert_eq!(m.state(), MessageState::Sent);
    assert_eq!(m.deliveries[1].state(), DeliveryState::Failed);
}

#[test]
fn retry_sending_off_turns_a_transient_failure_into_error() {
    let mut m = message_with(1);
    m.spec.retry_sending = false;
    attempt(&mut m, &[transient(None)], T0);
    assert_eq!(m.state(), MessageState::Error);
}

#[test]
fn an_old_message_is_given_up_without_another_attempt() {
    let mut m = message_with(1);
    attempt(&mut m, &[transient(None)], T0);
    let late = T0 + Duration::from_secs(3600);
    assert!(m.is_expired(&RetryPolicy::default(), late));
    m.expire(late).expect("legal");
    assert_eq!(m.state(), MessageState::Error);
    assert_eq!(m.deliveries[0].attempts(), 1);
    assert_eq!(m.deliveries[0].error_code(), Some("expired"));
}

#[test]
fn the_debug_sender_ends_in_debug() {
    let mut m = message_with(2);
    attempt(&mut m, &[SendOutcome::Debug], T0);
    assert_eq!(m.state(), MessageState::Debug);
    assert!(
        m.deliveries
            .iter()
            .all(|d| d.state() == DeliveryState::Debug)
    );
}

#[test]
fn cancel_only_works_on_waiting_messages() {
    let mut m = message_with(1);
    m.cancel(T0).expect("legal");
    assert_eq!(m.state(), MessageState::Error);
    assert_eq!(m.error(), Some("cancelled"));
    assert!(m.cancel(T0).is_err());
}

#[test]
fn an_operator_retry_requeues_failed_deliveries_only() {
    let mut m = message_with(3);
    attempt(&mut m, &[dead(), permanent(), permanent()], T0);
    assert_eq!(m.state(), MessageState::Error);
    let later = T0 + Duration::from_secs(7200);
    m.requeue(later).expect("legal");
    assert_eq!(m.state(), MessageState::Waiting);
    assert_eq!(m.number_of_send_attempts(), 0);
    let due: Vec<_> = m.due_deliveries().map(|d| d.id).collect();
    assert_eq!(due, vec![DeliveryId(2), DeliveryId(3)]);
    assert!(!m.is_expired(&RetryPolicy::default(), later));
}

fn outcome_strategy() -> impl Strategy<Value = SendOutcome> {
    prop_oneof![
        Just(accepted()),
        Just(permanent()),
        Just(dead()),
        proptest::option::of(0u64..5000).prop_map(transient),
        Just(SendOutcome::Misconfigured {
            code: "config".into(),
            reason: "bad key".into()
        }),
    ]
}

proptest! {
    #[test]
    fn random_outcomes_never_break_the_state_machine(
        devices in 1usize..6,
        rounds in proptest::collection::vec(proptest::collection::vec(outcome_strategy(), 1..6), 1..10),
        max_attempts in 1u32..6,
    ) {
        let policy = RetryPolicy { max_attempts, ..RetryPolicy::default() };
        let mut m = message_with(devices);
        let mut now = T0;
        let mut accepted_ids: Vec<DeliveryId> = Vec::new();
        for outcomes in rounds {
            if !m.is_due(now) {
                match m.next_attempt_at() {
                    Some(at) => now = at,
                    None => break,
                }
            }
            let before = m.state();
            let due: Vec<DeliveryId> = m.due_deliveries().map(|d| d.id).collect();
            // A delivery that was accepted is never offered for sending again.
            for id in &due {
                prop_assert!(!accepted_ids.contains(id));
            }
            for (id, outcome) in due.iter().zip(outcomes.iter().cycle()) {
                m.record_outcome(*id, outcome, now);
            }
            let retry_after = outcomes.iter().filter_map(|o| match o {
                SendOutcome::Transient { retry_after, .. } => *retry_after,
                _ => None,
            }).max();
            m.finish_attempt(&policy, retry_after, now).expect("finish_attempt on a due message is legal");
            prop_assert!(before.can_become(m.state()));
            prop_assert!(m.number_of_send_attempts() <= max_attempts);
            if m.state() == MessageState::ErrorRetry {
                let next = m.next_attempt_at().expect("ERROR_RETRY has a next attempt");
                prop_assert!(next > now);
                if let Some(floor) = retry_after {
                    prop_assert!(next >= now + floor);
                }
                prop_assert!(m.number_of_send_attempts() < max_attempts);
            }
            // A store could rebuild what the state machine left.
            prop_assert_eq!(m.progress().check(), Ok(()));
            for d in &m.deliveries {
                prop_assert_eq!(d.progress().check(), Ok(()));
            }
            for d in &m.deliveries {
                if d.state() == DeliveryState::Accepted && !accepted_ids.contains(&d.id) {
                    accepted_ids.push(d.id);
                }
            }
            // The state agrees with the deliveries.
            match m.state() {
                MessageState::Sent => prop_assert!(!accepted_ids.is_empty()),
                MessageState::Error => prop_assert!(accepted_ids.is_empty()),
                MessageState::ErrorRetry => prop_assert!(m.due_deliveries().count() > 0),
                other => prop_assert!(false, "unexpected state {other}"),
            }
        }
    }
}
