//! Group commit of writes other than registrations: new messages, and the results of
//! attempts (delivery outcomes and progress).
//!
//! Many requests send a message at the same time. Written one transaction each, they queue
//! for the database's writer (SQLite has one connection that writes) or each pay for a commit
//! (PostgreSQL flushes its log to disk at every commit), and that queue, not the CPU, sets
//! how many messages a second the server stores. Here the writes that arrive while a batch is
//! being written wait together and are written as the next batch, in one transaction
//! ([`WriteMany`]); each caller still gets its own outcome.
//!
//! Should a batch fail, each write in it is tried again on its own, so that one bad write
//! (a device that does not exist) fails alone, unless the database itself is unavailable,
//! which fails the whole batch at once. This is the scheme of `registrations.rs`, without its
//! rounds of distinct tokens, which messages do not need: every message is a new row.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::anyhow;
use async_trait::async_trait;
use clarion_domain::message::{Delivery, Message};
use clarion_domain::ports::{Lease, StoreError};
use tokio::sync::oneshot;

pub(crate) mod attempts;

/// A store's transaction for a batch of writes of one kind.
#[async_trait]
pub(crate) trait WriteMany: Send + Sync + 'static {
    /// One write, as its caller gave it.
    type Item: Send + 'static;
    /// What one write returns to its caller.
    type Output: Send + 'static;

    /// The most items in one batch.
    const MAX_ITEMS: usize;
    /// The most weight (see [`WriteMany::weight`]) in one batch; a single heavier item is
    /// written alone.
    const MAX_WEIGHT: usize;
    /// How many batches may be written at the same time: one for a store with one writer
    /// connection; a few for a server that commits many transactions at once, so that one
    /// batch's round trips do not hold back the next.
    const WRITERS: usize = 1;

    /// How much of the batch's bound an item takes (a message: its deliveries).
    fn weight(item: &Self::Item) -> usize;

    /// Writes `items` in one transaction, all of them or, on an error, none, and returns one
    /// output per item, in order.
    async fn write_many(&self, items: &[Self::Item]) -> Result<Vec<Self::Output>, StoreError>;
}

type Outcome<W> = Result<<W as WriteMany>::Output, StoreError>;
type Waiting<W> = (<W as WriteMany>::Item, oneshot::Sender<Outcome<W>>);

/// Gathers concurrent writes into batches for a [`WriteMany`].
pub(crate) struct Grouped<W: WriteMany> {
    shared: Arc<Shared<W>>,
}

impl<W: WriteMany> Clone for Grouped<W> {
    fn clone(&self) -> Self {
        Grouped {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<W: WriteMany> std::fmt::Debug for Grouped<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grouped").finish_non_exhaustive()
    }
}

struct Shared<W: WriteMany> {
    store: W,
    queue: Mutex<Queue<W>>,
}

struct Queue<W: WriteMany> {
    waiting: VecDeque<Waiting<W>>,
    /// How many tasks are writing batches; each takes the waiting ones until none is left.
    writing: usize,
}

impl<W: WriteMany> Shared<W> {
    fn queue(&self) -> MutexGuard<'_, Queue<W>> {
        // The queue is left consistent at every point a panic could occur.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W: WriteMany> Grouped<W> {
    /// The store that writes the batches.
    pub(crate) fn store(&self) -> &W {
        &self.shared.store
    }

    pub(crate) fn new(store: W) -> Self {
        Grouped {
            shared: Arc::new(Shared {
                store,
                queue: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    writing: 0,
                }),
            }),
        }
    }

    /// Writes `item` with the next batch and waits for its outcome.
    ///
    /// # Errors
    /// The store's error for this write, or [`StoreError::Unknown`] when the task writing the
    /// batch was stopped (the runtime shutting down).
    pub(crate) async fn write(&self, item: W::Item) -> Outcome<W> {
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut queue = self.shared.queue();
            queue.waiting.push_back((item, reply));
            let start = queue.writing < W::WRITERS.max(1);
            if start {
                queue.writing += 1;
            }
            start
        };
        if start {
            tokio::spawn(write_batches(Arc::clone(&self.shared)));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unknown(anyhow!(
                "the write was interrupted before it was committed"
            )))
        })
    }
}

/// Counts the writing task out when it ends, and, should the last one end early (a panic, or
/// its runtime shutting down), drops the waiting writes so that their callers get an error
/// instead of waiting for ever.
struct Writing<W: WriteMany> {
    shared: Arc<Shared<W>>,
    finished: bool,
}

impl<W: WriteMany> Drop for Writing<W> {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.shared.queue();
            queue.writing = queue.writing.saturating_sub(1);
            if queue.writing == 0 {
                queue.waiting.clear();
            }
        }
    }
}

/// Writes the waiting items, a batch at a time, until none is left.
async fn write_batches<W: WriteMany>(shared: Arc<Shared<W>>) {
    let mut writing = Writing {
        shared,
        finished: false,
    };
    loop {
        let batch: Vec<Waiting<W>> = {
            let mut queue = writing.shared.queue();
            if queue.waiting.is_empty() {
                queue.writing = queue.writing.saturating_sub(1);
                writing.finished = true;
                return;
            }
            let mut n = 0;
            let mut weight = 0;
            for (item, _) in &queue.waiting {
                let next = W::weight(item).max(1);
                if n == W::MAX_ITEMS || (n > 0 && weight + next > W::MAX_WEIGHT) {
                    break;
                }
                n += 1;
                weight += next;
            }
            queue.waiting.drain(..n).collect()
        };
        let (items, replies): (Vec<W::Item>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = write_batch(&writing.shared.store, items).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that stopped waiting no longer wants its outcome.
            let _ = reply.send(outcome);
        }
    }
}

/// Writes one batch and returns an outcome for each item, in order.
async fn write_batch<W: WriteMany>(store: &W, items: Vec<W::Item>) -> Vec<Outcome<W>> {
    let error = match store.write_many(&items).await {
        Ok(outputs) if outputs.len() == items.len() => {
            return outputs.into_iter().map(Ok).collect();
        }
        Ok(outputs) => StoreError::Unknown(anyhow!(
            "a batch of {} writes returned {} outcomes",
            items.len(),
            outputs.len()
        )),
        Err(error) => error,
    };
    match error {
        // The database cannot write now (a full disk, a server that is down): no write of the
        // batch is at fault, and writing each alone would only fail as many times more.
        StoreError::Unavailable(reason) => items
            .iter()
            .map(|_| Err(StoreError::Unavailable(reason.clone())))
            .collect(),
        error if items.len() == 1 => vec![Err(error)],
        // Each write of the failed batch on its own, so that the one at fault fails alone.
        _ => {
            let mut outcomes = Vec::with_capacity(items.len());
            for item in items {
                let alone = store.write_many(std::slice::from_ref(&item)).await;
                outcomes.push(alone.and_then(|outputs| {
                    outputs.into_iter().next().ok_or_else(|| {
                        StoreError::Unknown(anyhow!("a write of the batch returned no outcome"))
                    })
                }));
            }
            outcomes
        }
    }
}

/// A write of an attempt's results, grouped with those of attempts at other messages:
/// [`clarion_domain::ports::MessageStore::record_deliveries`] or
/// [`clarion_domain::ports::MessageStore::save_progress`]. Its output is whether it was
/// written: always for deliveries; for progress, whether the writer still held the message.
#[derive(Debug)]
pub(crate) enum AttemptWrite {
    Deliveries(Vec<Delivery>),
    Progress(Box<Message>, Option<Lease>),
}

impl AttemptWrite {
    /// The rows it writes, for [`WriteMany::weight`].
    pub(crate) fn weight(&self) -> usize {
        match self {
            AttemptWrite::Deliveries(deliveries) => deliveries.len(),
            AttemptWrite::Progress(message, _) => 1 + message.deliveries.len(),
        }
    }
}

/// The most deliveries a saved message may carry to be queued with others; one with more
/// (an operator's action on a large message) is written alone rather than copied.
pub(crate) const MAX_GROUPED_DELIVERIES: usize = 1_000;

/// The most attempt writes in one transaction.
pub(crate) const MAX_ATTEMPT_WRITES: usize = 256;
/// The most rows (deliveries and messages) attempt writes change in one transaction.
pub(crate) const MAX_ATTEMPT_ROWS: usize = 10_000;

#[cfg(test)]
pub(crate) mod batch_contract;
#[cfg(test)]
mod tests;
