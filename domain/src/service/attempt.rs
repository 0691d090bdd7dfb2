//! One attempt at a stored message, which a send now and the batch worker share: its due
//! deliveries are sent a page at a time, each outcome is recorded as it comes in, dead devices
//! are deactivated, the lease is kept while sending, and the attempt is concluded and saved.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_channel::mpsc;
use futures_util::future::{self, Either};
use futures_util::sink::SinkExt as _;
use futures_util::stream::{self, Stream, StreamExt as _, TryStreamExt as _};
use time::OffsetDateTime;

use crate::app::Application;
use crate::device::Recipient;
use crate::ids::{DeliveryId, DeviceId, MessageId};
use crate::message::{
    AttemptEnd, Channel, Delivery, DeliveryTally, GiveUp, Message, MessageSpec, SendOutcome,
};
use crate::payload::{self, Payload, PayloadTarget};
use crate::ports::{DueDelivery, Lease, PushProvider, StoreError};
use crate::service::PushService;
use crate::service::batch::{Batch, Permit};
use crate::token::Platform;

/// The most delivery outcomes written in one batch.
const RECORD_BATCH: usize = 512;
/// The first page of due deliveries a batch reads of a claimed message: a message with more
/// is a large one (see [`PushService::due_pages`]).
pub(super) const FIRST_PAGE: u32 = 64;

/// The devices of a loaded message's deliveries, by id, as sending needs them.
pub(super) type PageDevices = BTreeMap<DeviceId, Recipient>;
/// What one delivery needs to go out, or the outcome it gets without a request.
enum Prepared<'a> {
    Send(&'a Arc<dyn PushProvider>, Payload),
    Done(SendOutcome),
}

/// One sent delivery with its outcome, or the store failure that ended the sending.
type Sent = Result<(Delivery, SendOutcome), StoreError>;

impl PushService {
    /// Keeps `lease` on message `id`: renews it once half of it has passed, together with the
    /// other leases of its batch that need it when the message is one of a batch's. Returns
    /// `false` when another worker took the message over.
    async fn keep_lease(
        &self,
        id: MessageId,
        lease: &mut Lease,
        batch: Option<&Batch>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let fresh = |lease: &Lease| now + self.settings.lease / 2 < lease.until;
        if fresh(lease) {
            return Ok(true);
        }
        if let Some(batch) = batch {
            return batch.leases.keep(self, id, lease, now, fresh).await;
        }
        let renewed = self.lease(now);
        let held = self.ports.messages.renew_lease(&[id], &renewed).await?;
        if !held.contains(&id) {
            return Ok(false);
        }
        *lease = renewed;
        Ok(true)
    }

    /// Makes one attempt at a claimed message: sends its due deliveries a page at a time, records
    /// each outcome as soon as it is known, deactivates dead devices, concludes the attempt and
    /// releases the claim. The lease is renewed while sending; once it is lost the attempt
    /// stops and saves nothing, since the worker that took the message over sends the rest.
    ///
    /// A message whose deliveries are all loaded writes the outcomes that arrive last, and
    /// the deliveries it gives up, with its progress in one write (see
    /// [`PushService::record_outcomes`]): a one-device message costs one write in all.
    pub(super) async fn attempt(
        &self,
        app: &Application,
        mut message: Message,
        mut lease: Lease,
        loaded: Loaded,
        batch: Option<&Batch>,
    ) -> Result<Attempted, StoreError> {
        let started = self.now();
        if message.is_expired(&app.retry, started) {
            let expiry = Message::expiry();
            if !self
                .give_up_due(&mut message, &lease, &loaded, &expiry, started)
                .await?
            {
                return Ok(Attempted::Lost(message));
            }
            let tally = self.tally(&message, &loaded).await?;
            if message.expire_tallied(&tally, started).is_ok()
                && !self.save_attempt(&message, &lease, &[]).await?
            {
                return Ok(Attempted::Lost(message));
            }
            return Ok(Attempted::Done(message));
        }
        let mut retry_after: Option<Duration> = None;
        // The outcomes the attempt holds back to write them with the message's progress.
        let mut held: Vec<Delivery> = Vec::new();
        if !self
            .send_due(
                app,
                &mut message,
                (&mut lease, batch),
                &loaded,
                started,
                (&mut retry_after, &mut held),
            )
            .await?
        {
            return Ok(Attempted::Lost(message));
        }
        if let Some(batch) = batch {
            batch.sent(message.id);
        }
        let now = self.now();
        let tally = self.tally(&message, &loaded).await?;
        let end = match message.finish_attempt_tallied(&app.retry, retry_after, &tally, now) {
            Ok(end) => end,
            Err(_) => {
                self.record_held(&held).await?;
                return Ok(Attempted::Done(message));
            }
        };
        if let AttemptEnd::GiveUp(_, give_up) = end {
            if !self
                .give_up_due(&mut message, &lease, &loaded, &give_up, now)
                .await?
            {
                return Ok(Attempted::Lost(message));
            }
            let tally = self.tally(&message, &loaded).await?;
            if message.conclude_tallied(&tally, now).is_err() {
                self.record_held(&held).await?;
                return Ok(Attempted::Done(message));
            }
        }
        if !self.save_attempt(&message, &lease, &held).await? {
            return Ok(Attempted::Lost(message));
        }
        Ok(Attempted::Done(message))
    }

    /// Records the outcomes an attempt held back when no save follows to write them.
    async fn record_held(&self, held: &[Delivery]) -> Result<(), StoreError> {
        if held.is_empty() {
            return Ok(());
        }
        self.ports.messages.record_deliveries(held).await
    }

    /// Gives up the deliveries of `message` that are still due: in the store and in memory
    /// for a paged message, in memory only for a loaded one, whose save writes every loaded
    /// delivery with its progress in one transaction. Returns `false` when the lease was lost.
    async fn give_up_due(
        &self,
        message: &mut Message,
        lease: &Lease,
        loaded: &Loaded,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        if matches!(loaded, Loaded::Paged)
            && !self
                .ports
                .messages
                .give_up_due_deliveries(message.id, lease, give_up, now)
                .await?
        {
            return Ok(false);
        }
        message.give_up_due(give_up, now);
        Ok(true)
    }

    /// Saves the conclusion of an attempt, with `held`, the outcomes not yet recorded, in the
    /// same write. Returns `false` when the lease was lost; the held outcomes are recorded
    /// anyway then, since a provider's answer is a fact worth keeping whoever holds the lease.
    async fn save_attempt(
        &self,
        message: &Message,
        lease: &Lease,
        held: &[Delivery],
    ) -> Result<bool, StoreError> {
        let store = &self.ports.messages;
        if held.is_empty() {
            return store.save_progress(message, Some(lease)).await;
        }
        match store.save_attempt(message, lease, held).await {
            Ok(true) => Ok(true),
            Ok(false) => {
                store.record_deliveries(held).await?;
                Ok(false)
            }
            Err(error) => {
                // The write may have failed for a moment only (a busy database): one more try
                // at the outcomes alone spares their devices a second notification. Its own
                // failure adds nothing to the error returned.
                let _ = store.record_deliveries(held).await;
                Err(error)
            }
        }
    }

    /// The tally of `message`'s deliveries: counted in memory when they are all loaded (and
    /// kept up to date by the attempt), asked of the store otherwise.
    async fn tally(&self, message: &Message, loaded: &Loaded) -> Result<DeliveryTally, StoreError> {
        match loaded {
            Loaded::All(_) => Ok(DeliveryTally::of(&message.deliveries)),
            Loaded::Paged => self.ports.messages.delivery_tally(message.id).await,
        }
    }

    /// Sends every due delivery of `message`, `delivery_concurrency` at a time, and records
    /// the outcomes as they come in (also on the loaded copy in `message`, when it has one).
    ///
    /// Two halves run side by side in one task. The sending half reads the due deliveries a
    /// page at a time, with their devices, reading the next page while the last sends of the
    /// previous one are still in flight, and keeps `delivery_concurrency` sends going. The
    /// recording half writes outcomes in batches: every outcome that arrived while the
    /// previous batch was being written, up to [`RECORD_BATCH`]. A slow provider thus has
    /// its answers written nearly one by one, as they arrive, and a fast one costs one commit
    /// per batch instead of one per device. When the recording half falls behind, the
    /// channel between them fills and the sending half waits.
    ///
    /// A loaded message holds the outcomes of its last batch in `held` rather than recording
    /// them: the save that concludes the attempt writes them (see
    /// [`PushService::record_outcomes`]).
    ///
    /// Returns `false` when the lease was lost; the sends still in flight are dropped then.
    async fn send_due(
        &self,
        app: &Application,
        message: &mut Message,
        (lease, batch): (&mut Lease, Option<&Batch>),
        loaded: &Loaded,
        started: OffsetDateTime,
        (retry_after, held): (&mut Option<Duration>, &mut Vec<Delivery>),
    ) -> Result<bool, StoreError> {
        if !self.keep_lease(message.id, lease, batch).await? {
            return Ok(false);
        }
        let (mut outcomes_tx, outcomes_rx) = mpsc::channel::<Sent>(RECORD_BATCH);
        let spec = message.spec.clone();
        let concurrency = self.settings.delivery_concurrency.max(1);
        // Each due delivery of a loaded message gives exactly one outcome, so the recording
        // half knows which batch is the last.
        let expected = match loaded {
            Loaded::All(_) => Some(message.due_deliveries().count()),
            Loaded::Paged => None,
        };
        let pages = match loaded {
            // Known from planning: one page of every due delivery, with no store call.
            Loaded::All(devices) => {
                let page: Vec<DueDelivery> = message
                    .due_deliveries()
                    .map(|delivery| {
                        let device = delivery.device_id.and_then(|id| devices.get(&id).cloned());
                        (delivery.clone(), device)
                    })
                    .collect();
                Either::Left(stream::once(future::ready(Ok(page))))
            }
            Loaded::Paged => Either::Right(self.due_pages(app, message.id, batch)),
        };
        let sending = async move {
            let spec = &spec;
            let mut built = BTreeMap::new();
            let mut sent = std::pin::pin!(
                pages
                    .map_ok(|page| stream::iter(page).map(Ok::<_, StoreError>))
                    .try_flatten()
                    .map(move |due| {
                        let prepared = due.map(|(delivery, device)| {
                            let prepared = self.prepare(
                                app,
                                spec,
                                &delivery,
                                device.as_ref(),
                                started,
                                &mut built,
                            );
                            (delivery, prepared)
                        });
                        async move {
                            let (delivery, prepared) = prepared?;
                            let outcome = match prepared {
                                Prepared::Send(provider, payload) => {
                                    provider.send(&app.id, &payload).await
                                }
                                Prepared::Done(outcome) => outcome,
                            };
                            Ok((delivery, outcome))
                        }
                    })
                    .buffer_unordered(concurrency)
            );
            while let Some(item) = sent.next().await {
                let failed = item.is_err();
                // A closed channel means the recording half stopped: the lease was lost or
                // the store failed, and the sends still in flight are dropped.
                if outcomes_tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        };
        let recording = self.record_outcomes(
            app,
            message,
            (lease, batch),
            (outcomes_rx, expected),
            (retry_after, held),
        );
        let (sending, recording) = (std::pin::pin!(sending), std::pin::pin!(recording));
        match future::select(sending, recording).await {
            // Everything was sent: the recording half writes what is left and ends when the
            // channel closes.
            Either::Left(((), recording)) => recording.await,
            // The recording half stopped first (the lease was lost or the store failed): the
            // sends still in flight are dropped at once.
            Either::Right((kept, _sending)) => kept,
        }
    }

    /// The due deliveries of message `id`, a page at a time, each with its device.
    ///
    /// In a batch, the first page is small ([`FIRST_PAGE`]), and a message with more due
    /// deliveries than that is a large one: it waits for one of the few permits its
    /// application has for large messages in the batch before it reads on. A batch may send
    /// a thousand messages at once, but only a few per application hold a page of
    /// `delivery_page` deliveries and `delivery_concurrency` sends each, which bounds its
    /// memory however its backlog is made.
    fn due_pages<'a>(
        &'a self,
        app: &'a Application,
        id: MessageId,
        batch: Option<&'a Batch>,
    ) -> impl Stream<Item = Result<Vec<DueDelivery>, StoreError>> + Send + 'a {
        let page = self.settings.delivery_page.max(1);
        let first = match batch {
            Some(_) => page.min(FIRST_PAGE),
            None => page,
        };
        // The state is the cursor, `None` once the last page was read, and the permit of a
        // large message, held until its last page was read.
        stream::try_unfold(
            (Some(None), None::<Permit>),
            move |(cursor, permit): (Option<Option<DeliveryId>>, Option<Permit>)| async move {
                let Some(after) = cursor else {
                    return Ok(None);
                };
                let (limit, permit) = match (after, batch) {
                    (None, _) => (first, permit),
                    (Some(_), Some(batch)) if permit.is_none() => {
                        (page, Some(batch.large_message(&app.id).await))
                    }
                    (Some(_), _) => (page, permit),
                };
                let page = self.due_page(app, id, after, limit).await?;
                let Some((last, _)) = page.last() else {
                    return Ok(None);
                };
                let next = (page.len() >= limit as usize).then_some(Some(last.id));
                Ok(Some((page, (next, permit))))
            },
        )
    }

    /// One page of due deliveries of message `id` with their devices: in one read when the
    /// store can, else the deliveries and then their devices.
    async fn due_page(
        &self,
        app: &Application,
        id: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let messages = &self.ports.messages;
        if let Some(page) = messages.due_page(&app.id, id, after, limit).await? {
            return Ok(page);
        }
        let due = messages.due_deliveries(id, after, limit).await?;
        let device_ids: Vec<DeviceId> = due.iter().filter_map(|d| d.device_id).collect();
        let devices: PageDevices = if device_ids.is_empty() {
            BTreeMap::new()
        } else {
            self.ports
                .devices
                .get_devices(&app.id, &device_ids)
                .await?
                .into_iter()
                .map(|d| (d.id, Recipient::from(d)))
                .collect()
        };
        Ok(due
            .into_iter()
            .map(|delivery| {
                let device = delivery.device_id.and_then(|id| devices.get(&id).cloned());
                (delivery, device)
            })
            .collect())
    }

    /// The recording half of [`PushService::send_due`]. Returns `false` when the lease was
    /// lost.
    ///
    /// When `expected` outcomes are all there will be (a loaded message), the batch that
    /// brings the last of them is not recorded but moved to `held`, for the save that
    /// concludes the attempt: no send waits between that batch and the save (only the
    /// deactivation of dead devices comes between), so holding it loses no more in a crash
    /// than recording it first would, and saves a write. Batches
    /// that arrive while sends are still in flight are recorded as they come.
    async fn record_outcomes(
        &self,
        app: &Application,
        message: &mut Message,
        (lease, in_batch): (&mut Lease, Option<&Batch>),
        (mut outcomes, expected): (mpsc::Receiver<Sent>, Option<usize>),
        (retry_after, held): (&mut Option<Duration>, &mut Vec<Delivery>),
    ) -> Result<bool, StoreError> {
        // Sized for what the message can bring, not for a full batch: a worker has up to a
        // thousand one-device messages in flight, and 512 deliveries reserved for each held
        // 80 MB (heaptrack, 52,000 queued messages drained through the APNs mock at 50 ms).
        let mut batch: Vec<Delivery> =
            Vec::with_capacity(expected.unwrap_or(RECORD_BATCH).min(RECORD_BATCH));
        let mut dead: Vec<(DeviceId, String)> = Vec::new();
        let mut received: usize = 0;
        while let Some(first) = outcomes.next().await {
            let mut failure = None;
            let mut next = Some(first);
            while let Some(item) = next {
                let (mut delivery, outcome) = match item {
                    Ok(sent) => sent,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                if let SendOutcome::Transient {
                    retry_after: Some(wait),
                    ..
                } = &outcome
                {
                    *retry_after = Some(retry_after.map_or(*wait, |w| w.max(*wait)));
                }
                if delivery.channel == Channel::Onesignal
                    && let SendOutcome::Accepted { details, .. } = &outcome
                {
                    message.extra_sender_data.clone_from(details);
                }
                let now = self.now();
                delivery.record(&outcome, now);
                message.record_outcome(delivery.id, &outcome, now);
                if let (SendOutcome::DeadToken { reason, .. }, Some(device)) =
                    (&outcome, delivery.device_id)
                {
                    dead.push((device, format!("dead token: {reason}")));
                }
                batch.push(delivery);
                received += 1;
                next = if batch.len() < RECORD_BATCH {
                    outcomes.try_recv().ok()
                } else {
                    None
                };
            }
            if failure.is_none() && expected == Some(received) {
                held.append(&mut batch);
            } else {
                // What was sent is recorded even when reading the next page failed.
                self.ports.messages.record_deliveries(&batch).await?;
                batch.clear();
            }
            let now = self.now();
            for (device, reason) in dead.drain(..) {
                self.ports
                    .devices
                    .deactivate_device(&app.id, device, &reason, now)
                    .await?;
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if !self.keep_lease(message.id, lease, in_batch).await? {
                // No save follows: what is held is recorded now.
                self.record_held(held).await?;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// What delivery `delivery` needs to go out: its provider and payload, or the outcome it
    /// gets without a request. `device` is its device, `None` when it was not found. `built`
    /// keeps the first payload of each platform, so that a payload that does not depend on the
    /// device (APNs) is built once per attempt.
    fn prepare(
        &self,
        app: &Application,
        spec: &MessageSpec,
        delivery: &Delivery,
        device: Option<&Recipient>,
        now: OffsetDateTime,
        built: &mut BTreeMap<Platform, Payload>,
    ) -> Prepared<'_> {
        let payload = match delivery.device_id {
            Some(id) => match device {
                None => {
                    return Prepared::Done(permanent(
                        "device_deleted",
                        &format!("device {id} no longer exists"),
                    ));
                }
                Some(device) if !device.active => {
                    let why = device
                        .deactivation_reason
                        .as_deref()
                        .unwrap_or("deactivated");
                    return Prepared::Done(permanent(
                        "device_inactive",
                        &format!("device {id} is inactive: {why}"),
                    ));
                }
                Some(device) => {
                    let platform = device.platform();
                    match built
                        .get(&platform)
                        .and_then(|first| first.for_device(&device.token))
                    {
                        Some(payload) => Ok(payload),
                        None => {
                            let payload = payload::build(
                                app,
                                spec,
                                PayloadTarget::Device(&device.token),
                                now,
                            );
                            if let Ok(payload) = &payload {
                                built.entry(platform).or_insert_with(|| payload.clone());
                            }
                            payload
                        }
                    }
                }
            },
            None => match spec.target.recipient() {
                Some(user) => payload::build(app, spec, PayloadTarget::ExternalUser(user), now),
                None => {
                    return Prepared::Done(permanent(
                        "no_recipient",
                        "a OneSignal delivery needs a user id",
                    ));
                }
            },
        };
        let payload: Payload = match payload {
            Ok(p) => p,
            Err(e) => return Prepared::Done(permanent("payload", &e.to_string())),
        };
        let Some(provider) = self.providers.get(delivery.channel) else {
            return Prepared::Done(SendOutcome::Misconfigured {
                code: "no_provider".to_owned(),
                reason: format!(
                    "no {} provider is configured for application {}",
                    delivery.channel.as_str(),
                    app.id
                ),
            });
        };
        Prepared::Send(provider, payload)
    }
}

/// Where an attempt finds the deliveries it sends.
pub(super) enum Loaded {
    /// In the store, read a page at a time with their devices (a claimed message with more
    /// deliveries than its claim brought, a broadcast).
    Paged,
    /// Every delivery of the message is in `message.deliveries` and every device its due
    /// deliveries name is here (perhaps with others of its application): a message with
    /// listed deliveries that was just stored, whose devices planning read, or a small message
    /// that came with its deliveries in a batch's claim, whose devices the claim read. The
    /// attempt then reads neither deliveries, devices nor tallies from the store, and writes
    /// its last outcomes with its progress.
    All(Arc<PageDevices>),
}

/// How an attempt at a claimed message ended.
pub(super) enum Attempted {
    /// The attempt concluded (or found nothing to do) and saved what it did.
    Done(Message),
    /// Another worker took the message over; it finishes it, and nothing more was saved.
    Lost(Message),
}

impl Attempted {
    pub(super) fn into_message(self) -> Message {
        match self {
            Attempted::Done(message) | Attempted::Lost(message) => message,
        }
    }
}

fn permanent(code: &str, reason: &str) -> SendOutcome {
    SendOutcome::Permanent {
        code: code.to_owned(),
        reason: reason.to_owned(),
        details: None,
    }
}
