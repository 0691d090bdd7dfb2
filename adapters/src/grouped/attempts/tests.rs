//! How [`AttemptBatch`] cuts a batch into runs and picks the deliveries each run writes,
//! without a database (the stores' batches are checked in `grouped::batch_contract`).

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "test code: a failed expectation is a failed test"
)]

use std::collections::HashSet;

use clarion_domain::app::SenderKind;
use clarion_domain::ids::MessageId;
use clarion_domain::message::{Channel, Delivery, DeliveryState, Message};

use super::AttemptBatch;
use crate::grouped::AttemptWrite;
use crate::grouped::batch_contract::{at, new_message, outcome, saved_as};
use crate::rows::inserted_delivery;

/// A pending delivery with id `id` of the message with id `message`.
fn delivery(id: i64, message: i64) -> Delivery {
    inserted_delivery(id, message, &(Channel::Apns, None), at(0))
}

/// A message with id `id` and `deliveries` loaded, as a worker saves it.
fn progress(id: i64, deliveries: Vec<Delivery>) -> AttemptWrite {
    let message = Message::from_storage(
        MessageId(id),
        new_message("m", &[], Vec::new()).spec,
        SenderKind::Direct,
        Message::initial_progress(at(0)),
        at(0),
        at(0),
    )
    .expect("a new message's progress");
    let saved = saved_as(
        &message,
        clarion_domain::message::MessageState::Sent,
        "save",
        deliveries,
    );
    AttemptWrite::Progress(Box::new(saved), None)
}

fn run_lengths(writes: &[AttemptWrite]) -> Vec<usize> {
    AttemptBatch::new(writes)
        .runs()
        .iter()
        .map(|run| run.writes.len())
        .collect()
}

#[test]
fn a_message_saved_again_starts_a_new_run_and_nothing_else_does() {
    let d = || AttemptWrite::Deliveries(vec![delivery(1, 1)]);
    let writes = [
        progress(1, Vec::new()),
        d(),
        progress(2, Vec::new()),
        progress(1, Vec::new()),
        d(),
        d(),
        progress(1, Vec::new()),
    ];

    assert_eq!(run_lengths(&writes), [3, 3, 1]);
    assert_eq!(run_lengths(&[d(), d()]), [2]);
    assert_eq!(run_lengths(&[]), Vec::<usize>::new());
}

#[test]
fn the_write_that_counts_is_the_first_to_make_a_delivery_final_else_the_last() {
    use DeliveryState::{Accepted, Debug, Failed, Pending, Retrying};
    let cases: [(&[DeliveryState], usize); 6] = [
        (&[Retrying], 0),
        (&[Retrying, Failed], 1),
        (&[Accepted, Failed], 0),
        (&[Retrying, Debug, Accepted, Failed], 1),
        (&[Pending, Retrying, Accepted], 2),
        (&[Failed, Retrying, Failed], 2),
    ];
    for (states, counts) in cases {
        let written: Vec<Delivery> = states
            .iter()
            .enumerate()
            .map(|(i, state)| outcome(&delivery(7, 1), *state, &i.to_string()))
            .collect();
        let writes: Vec<AttemptWrite> = written
            .iter()
            .map(|d| AttemptWrite::Deliveries(vec![d.clone()]))
            .collect();

        let batch = AttemptBatch::new(&writes);
        let chosen = batch.runs()[0].deliveries(&HashSet::new());

        assert_eq!(chosen, [&written[counts]], "{states:?}");
    }
}

#[test]
fn only_saved_messages_write_their_deliveries_and_every_delivery_once_in_id_order() {
    let writes = [
        AttemptWrite::Deliveries(vec![delivery(9, 3), delivery(4, 1)]),
        progress(1, vec![delivery(5, 1), delivery(4, 1)]),
        progress(2, vec![delivery(6, 2)]),
        AttemptWrite::Deliveries(vec![delivery(2, 1), delivery(9, 3)]),
    ];
    let batch = AttemptBatch::new(&writes);
    let run = &batch.runs()[0];
    let saved = HashSet::from([MessageId(1)]);

    let ids: Vec<i64> = run.deliveries(&saved).iter().map(|d| d.id.0).collect();
    let outcomes: Vec<bool> = run.outcomes(&saved).collect();

    assert_eq!(ids, [2, 4, 5, 9]);
    assert_eq!(outcomes, [true, true, false, true]);
}

#[test]
fn a_batch_is_one_statement_when_it_only_saves_or_only_writes_deliveries() {
    let d = || AttemptWrite::Deliveries(vec![delivery(1, 1)]);
    let cases = [
        (vec![d(), d()], true),
        (vec![progress(1, Vec::new()), progress(2, Vec::new())], true),
        (
            vec![
                progress(1, Vec::new()),
                AttemptWrite::Deliveries(Vec::new()),
            ],
            true,
        ),
        (vec![progress(1, vec![delivery(1, 1)])], false),
        (vec![progress(1, Vec::new()), d()], false),
        (
            vec![progress(1, Vec::new()), progress(1, Vec::new())],
            false,
        ),
    ];
    for (i, (writes, one)) in cases.iter().enumerate() {
        assert_eq!(
            AttemptBatch::new(writes).is_one_statement(),
            *one,
            "case {i}"
        );
    }
}
