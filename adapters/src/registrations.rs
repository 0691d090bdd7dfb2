//! Group commit of device registrations.
//!
//! Apps register their devices one at a time, and many at once. Written one statement each,
//! registrations queue for the database's writer, and each pays for the hand-over of the
//! connection, its own round trip and its own commit: on SQLite, whose writes all go through
//! one connection, that queue and not the CPU set how many registrations a second the server
//! took. Here the registrations that arrive while a batch is being written wait together and
//! are written as the next batch, in one statement per store ([`RegisterMany`]); each caller
//! still gets its own device back and learns whether its registration created it.
//!
//! A batch holds each token at most once (a statement cannot write the same row twice); a
//! second registration of a token in the same batch is written in a later round, so the last
//! registration to arrive is the one that stays. Should a batch fail, each registration in
//! it is written again on its own, so that one bad registration fails alone, unless the
//! database itself is unavailable, which fails the whole batch at once.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use anyhow::anyhow;
use async_trait::async_trait;
use clarion_domain::device::{Device, NewDevice, Registration};
use clarion_domain::ids::AppId;
use clarion_domain::ports::StoreError;
use clarion_domain::token::DeviceToken;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// The most registrations written in one batch.
const MAX_BATCH: usize = 256;

/// How often a registration is tried again when its batch's statement did not return it
/// (another process registered the same token at the same moment).
const ROUNDS: usize = 3;

/// A registration waiting to be written: the device and the time of the request.
pub(crate) type Pending = (NewDevice, OffsetDateTime);

/// The outcome of one registration.
pub(crate) type Registered = Result<(Device, Registration), StoreError>;

/// A store's statement for a batch of registrations.
#[async_trait]
pub(crate) trait RegisterMany: Send + Sync + 'static {
    /// Writes `devices`, whose tokens are distinct, as one statement, and returns each device
    /// written with whether it was created. A device the statement did not return (another
    /// process wrote the same token in between) is tried again.
    async fn register_many(
        &self,
        devices: &[&Pending],
    ) -> Result<Vec<(Device, Registration)>, StoreError>;
}

/// A device as a registration statement returned it, with whether the statement created it.
pub(crate) fn registered(device: Device, created: bool) -> (Device, Registration) {
    let how = if created {
        Registration::Created
    } else {
        Registration::Updated
    };
    (device, how)
}

/// Gathers concurrent registrations into batches for a [`RegisterMany`].
#[derive(Clone)]
pub(crate) struct GroupedRegistrations {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for GroupedRegistrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupedRegistrations")
            .finish_non_exhaustive()
    }
}

struct Shared {
    store: Arc<dyn RegisterMany>,
    queue: Mutex<Queue>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<(Pending, oneshot::Sender<Registered>)>,
    /// Whether a task is writing batches; it takes the waiting ones until none is left.
    writing: bool,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The queue is left consistent at every point a panic could occur.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl GroupedRegistrations {
    pub(crate) fn new(store: Arc<dyn RegisterMany>) -> Self {
        GroupedRegistrations {
            shared: Arc::new(Shared {
                store,
                queue: Mutex::new(Queue::default()),
            }),
        }
    }

    /// Registers `device` with the next batch and waits for its outcome.
    ///
    /// # Errors
    /// The store's error for this registration, [`StoreError::Conflict`] when another
    /// process kept registering the same token, or [`StoreError::Unknown`] when the task
    /// writing the batch was stopped (the runtime shutting down).
    pub(crate) async fn register(&self, device: NewDevice, now: OffsetDateTime) -> Registered {
        let (reply, outcome) = oneshot::channel();
        let start = {
            let mut queue = self.shared.queue();
            queue.waiting.push_back(((device, now), reply));
            !std::mem::replace(&mut queue.writing, true)
        };
        if start {
            tokio::spawn(write_batches(Arc::clone(&self.shared)));
        }
        outcome.await.unwrap_or_else(|_| {
            Err(StoreError::Unknown(anyhow!(
                "the registration was interrupted before it was written"
            )))
        })
    }
}

/// Marks the writing task stopped when it ends, and, should it end early (a panic, or its
/// runtime shutting down), drops the waiting registrations so that their callers get an
/// error instead of waiting for ever.
struct Writing {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for Writing {
    fn drop(&mut self) {
        if !self.finished {
            let mut queue = self.shared.queue();
            queue.writing = false;
            queue.waiting.clear();
        }
    }
}

/// Writes the waiting registrations, a batch at a time, until none is left.
async fn write_batches(shared: Arc<Shared>) {
    let mut writing = Writing {
        shared,
        finished: false,
    };
    loop {
        let batch: Vec<_> = {
            let mut queue = writing.shared.queue();
            if queue.waiting.is_empty() {
                queue.writing = false;
                writing.finished = true;
                return;
            }
            let n = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..n).collect()
        };
        let (pending, replies): (Vec<Pending>, Vec<_>) = batch.into_iter().unzip();
        let outcomes = write_batch(writing.shared.store.as_ref(), &pending).await;
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that stopped waiting no longer wants its outcome.
            let _ = reply.send(outcome);
        }
    }
}

/// The key that makes a device unique: application, platform and token.
fn key<'a>(app: &'a AppId, token: &'a DeviceToken) -> (&'a str, &'a str, &'a str) {
    (app.as_str(), token.platform().as_str(), token.key())
}

/// The key of a device to register.
pub(crate) fn key_of_new(device: &NewDevice) -> (&str, &str, &str) {
    key(&device.app, &device.token)
}

/// Writes one batch in rounds of distinct tokens, and returns an outcome for each
/// registration, in order.
async fn write_batch(store: &dyn RegisterMany, pending: &[Pending]) -> Vec<Registered> {
    let mut outcomes: Vec<Option<Registered>> = pending.iter().map(|_| None).collect();
    let mut tries = vec![0_usize; pending.len()];
    // Indexes still to write, in the order the registrations arrived.
    let mut todo: Vec<usize> = (0..pending.len()).collect();
    while !todo.is_empty() {
        let mut round: BTreeMap<(&str, &str, &str), usize> = BTreeMap::new();
        let mut later = Vec::new();
        for &i in &todo {
            let key = key_of_new(&pending[i].0);
            match round.entry(key) {
                Entry::Occupied(_) => later.push(i),
                Entry::Vacant(slot) => {
                    slot.insert(i);
                }
            }
        }
        // In key order: two processes writing overlapping batches lock the rows in the same
        // order, so that neither waits for the other in a cycle (a deadlock on PostgreSQL).
        let indexes: Vec<usize> = round.values().copied().collect();
        let devices: Vec<&Pending> = indexes.iter().map(|&i| &pending[i]).collect();
        match store.register_many(&devices).await {
            Ok(written) => {
                for (device, how) in written {
                    if let Some(&i) = round.get(&key(&device.app, &device.token)) {
                        outcomes[i] = Some(Ok((device, how)));
                    }
                }
                for i in indexes {
                    if outcomes[i].is_some() {
                        continue;
                    }
                    tries[i] += 1;
                    if tries[i] < ROUNDS {
                        later.push(i);
                    } else {
                        outcomes[i] = Some(Err(raced(&pending[i].0)));
                    }
                }
            }
            // The database cannot write now (a full disk, a server that is down): no
            // registration of the batch is at fault, and writing each alone would only fail
            // as many times more.
            Err(StoreError::Unavailable(reason)) => {
                for i in indexes {
                    outcomes[i] = Some(Err(StoreError::Unavailable(reason.clone())));
                }
            }
            Err(error) if indexes.len() == 1 => outcomes[indexes[0]] = Some(Err(error)),
            // Each registration of the failed batch on its own, so that the one at fault
            // fails alone.
            Err(_) => {
                for i in indexes {
                    outcomes[i] = Some(write_alone(store, &pending[i]).await);
                }
            }
        }
        later.sort_unstable();
        todo = later;
    }
    outcomes
        .into_iter()
        .map(|outcome| {
            outcome.unwrap_or_else(|| {
                Err(StoreError::Unknown(anyhow!(
                    "a registration of the batch was left unwritten"
                )))
            })
        })
        .collect()
}

/// Writes one registration as a batch of its own.
async fn write_alone(store: &dyn RegisterMany, pending: &Pending) -> Registered {
    for _ in 0..ROUNDS {
        let written = store.register_many(&[pending]).await?;
        if let Some(found) = written.into_iter().next() {
            return Ok(found);
        }
    }
    Err(raced(&pending.0))
}

fn raced(device: &NewDevice) -> StoreError {
    StoreError::Conflict(format!(
        "the {} token of application {} is being registered concurrently",
        device.token.platform(),
        device.app
    ))
}

#[cfg(test)]
mod tests;
