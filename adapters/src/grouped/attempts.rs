//! How a batch of attempt writes becomes a constant number of statements, the same on every
//! store: one that saves the progress of every message of the batch, one that writes every
//! delivery, whatever the batch's size.
//!
//! The cost of a write on SQLite is per statement, not per row (each statement is a round
//! trip to the connection's thread), and on PostgreSQL a round trip to the server, so a batch
//! of 256 results written one statement or two each spent most of its time in hand-offs.
//! Written as two statements, the batch must still leave the database as writing its writes
//! one after another would; [`AttemptBatch`] works out what that is before anything is sent.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use clarion_domain::ids::{DeliveryId, MessageId};
use clarion_domain::message::{Delivery, DeliveryState, Message};
use clarion_domain::ports::Lease;

use crate::grouped::AttemptWrite;

/// A message's progress to save, with the lease its writer holds (`None` for an operator).
pub(crate) type Save<'a> = (&'a Message, Option<&'a Lease>);

/// A batch of attempt writes cut into [`AttemptRun`]s, each written in two statements.
pub(crate) struct AttemptBatch<'a> {
    runs: Vec<AttemptRun<'a>>,
}

/// Consecutive writes of a batch in which no message is saved twice.
///
/// Within a run, whether a save is written depends only on the message's row as it was
/// before the run (no other write of the run touches that row), so one statement can decide
/// every save at once. A message saved twice is another matter: the first save releases the
/// lease, which refuses a second save by the same worker. Rather than imitate that, the
/// second save starts a new run, written after the first: such batches are rare (a worker
/// saves a message once per attempt), and two more statements for them keep the semantics
/// exact.
pub(crate) struct AttemptRun<'a> {
    writes: &'a [AttemptWrite],
}

impl<'a> AttemptBatch<'a> {
    pub(crate) fn new(writes: &'a [AttemptWrite]) -> AttemptBatch<'a> {
        let mut runs = Vec::new();
        let mut start = 0;
        let mut saved = HashSet::new();
        for (i, write) in writes.iter().enumerate() {
            if let AttemptWrite::Progress(message, _) = write
                && !saved.insert(message.id)
            {
                runs.push(AttemptRun {
                    writes: &writes[start..i],
                });
                start = i;
                saved.clear();
                saved.insert(message.id);
            }
        }
        if start < writes.len() {
            runs.push(AttemptRun {
                writes: &writes[start..],
            });
        }
        AttemptBatch { runs }
    }

    /// The runs, to write in this order.
    pub(crate) fn runs(&self) -> &[AttemptRun<'a>] {
        &self.runs
    }

    /// Whether the batch is at most one statement, which is atomic without a transaction:
    /// one run that only saves progress without deliveries, or only writes deliveries.
    pub(crate) fn is_one_statement(&self) -> bool {
        match self.runs.as_slice() {
            [] => true,
            [run] => {
                let saves = run
                    .writes
                    .iter()
                    .any(|w| matches!(w, AttemptWrite::Progress(..)));
                let deliveries = run.writes.iter().any(|w| match w {
                    AttemptWrite::Deliveries(list) => !list.is_empty(),
                    AttemptWrite::Progress(message, _) => !message.deliveries.is_empty(),
                });
                !(saves && deliveries)
            }
            _ => false,
        }
    }
}

impl<'a> AttemptRun<'a> {
    /// The progress writes of the run, in order.
    pub(crate) fn saves(&self) -> Vec<Save<'a>> {
        self.writes
            .iter()
            .filter_map(|write| match write {
                AttemptWrite::Progress(message, lease) => Some((&**message, lease.as_ref())),
                AttemptWrite::Deliveries(_) => None,
            })
            .collect()
    }

    /// The deliveries to write once the messages in `saved` were saved: those of every
    /// deliveries write and of every saved message, one per delivery id, sorted by id (the
    /// order in which PostgreSQL then locks their rows, the same for every batch).
    ///
    /// Written one after another, the writes of a delivery overwrite each other until one
    /// makes it final (accepted or debug), which no later write changes; and the statement
    /// changes no delivery that was final before the run. So the write that counts is the
    /// first that makes the delivery final, else the last.
    pub(crate) fn deliveries(&self, saved: &HashSet<MessageId>) -> Vec<&'a Delivery> {
        let mut chosen: HashMap<DeliveryId, &'a Delivery> = HashMap::new();
        for write in self.writes {
            let written: &'a [Delivery] = match write {
                AttemptWrite::Deliveries(list) => list,
                AttemptWrite::Progress(message, _) if saved.contains(&message.id) => {
                    &message.deliveries
                }
                AttemptWrite::Progress(..) => &[],
            };
            for delivery in written {
                match chosen.entry(delivery.id) {
                    Entry::Vacant(entry) => {
                        entry.insert(delivery);
                    }
                    Entry::Occupied(mut entry) => {
                        if !is_final(entry.get().state()) {
                            entry.insert(delivery);
                        }
                    }
                }
            }
        }
        let mut deliveries: Vec<&Delivery> = chosen.into_values().collect();
        deliveries.sort_unstable_by_key(|d| d.id);
        deliveries
    }

    /// Every delivery the run writes, each with the message whose save decides whether it
    /// is written (`None`: a deliveries write, always written), sorted by id; `None` when a
    /// delivery is written twice in the run.
    ///
    /// Without a delivery written twice, [`AttemptRun::deliveries`] has nothing to choose:
    /// each delivery is written when its message is saved, so a store can save the messages
    /// and write the deliveries in one statement that checks the saves itself.
    pub(crate) fn deliveries_once(&self) -> Option<Vec<(&'a Delivery, Option<MessageId>)>> {
        let mut seen = HashSet::new();
        let mut deliveries = Vec::new();
        for write in self.writes {
            let (written, owner): (&'a [Delivery], _) = match write {
                AttemptWrite::Deliveries(list) => (list, None),
                AttemptWrite::Progress(message, _) => (&message.deliveries, Some(message.id)),
            };
            for delivery in written {
                if !seen.insert(delivery.id) {
                    return None;
                }
                deliveries.push((delivery, owner));
            }
        }
        deliveries.sort_unstable_by_key(|(d, _)| d.id);
        Some(deliveries)
    }

    /// Whether each write of the run was written: a deliveries write always; a progress
    /// write when its message is in `saved`.
    pub(crate) fn outcomes(&self, saved: &HashSet<MessageId>) -> impl Iterator<Item = bool> {
        self.writes.iter().map(|write| match write {
            AttemptWrite::Deliveries(_) => true,
            AttemptWrite::Progress(message, _) => saved.contains(&message.id),
        })
    }
}

/// Whether a stored delivery in `state` is never written again: the condition of both
/// stores' `write_deliveries` (`state NOT IN ('accepted', 'debug')`).
fn is_final(state: DeliveryState) -> bool {
    matches!(state, DeliveryState::Accepted | DeliveryState::Debug)
}

#[cfg(test)]
mod tests;
