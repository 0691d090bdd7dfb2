//! The batch worker's side of the service: a pipeline that claims due messages as sending
//! slots free up (never waiting for the slowest message of a claim) and keeps one application
//! from taking every slot, so that a provider that hangs holds back only its own messages.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use futures_channel::mpsc;
use futures_util::future::{self, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use time::OffsetDateTime;

use super::attempt::{Attempted, FIRST_PAGE, Loaded, PageDevices};
use super::{BatchReport, PushService};
use crate::ids::{AppId, DeviceId, MessageId};
use crate::message::Message;
use crate::ports::{Lease, StoreError};

/// What the attempts of one batch share: their leases, renewed together, and the permits
/// of large messages, a few per application so that an application whose provider hangs
/// holds only its own.
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) leases: LeaseBook,
    large_per_app: usize,
    large: Mutex<BTreeMap<AppId, Arc<Permits>>>,
    /// Where an attempt says that its sends are over (only its save is left), so that its
    /// sending slot is freed at once rather than after the save.
    sent: Option<mpsc::UnboundedSender<MessageId>>,
}

impl Batch {
    fn new(large_per_app: usize) -> Self {
        Self {
            leases: LeaseBook::default(),
            large_per_app,
            large: Mutex::default(),
            sent: None,
        }
    }

    /// Says that the sends of message `id` are over: its attempt has only its save left.
    pub(super) fn sent(&self, id: MessageId) {
        if let Some(sent) = &self.sent {
            // Fails only once the batch stopped listening, and then nobody needs it.
            let _ = sent.unbounded_send(id);
        }
    }

    /// Waits for a permit to send a large message of `app`.
    pub(super) async fn large_message(&self, app: &AppId) -> Permit {
        let permits = {
            let mut large = self.large.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(
                large
                    .entry(app.clone())
                    .or_insert_with(|| Arc::new(Permits::new(self.large_per_app))),
            )
        };
        permits.acquire().await
    }
}

/// A fixed number of permits that async tasks wait for in turn (the domain has no runtime
/// of its own to lend a semaphore).
#[derive(Debug)]
pub(super) struct Permits {
    free: futures_util::lock::Mutex<mpsc::UnboundedReceiver<()>>,
    give_back: mpsc::UnboundedSender<()>,
}

impl Permits {
    fn new(count: usize) -> Self {
        let (give_back, free) = mpsc::unbounded();
        for _ in 0..count.max(1) {
            // Cannot fail: the receiver is alive.
            let _ = give_back.unbounded_send(());
        }
        Self {
            free: futures_util::lock::Mutex::new(free),
            give_back,
        }
    }

    /// Waits for a permit; the permit is given back when dropped.
    async fn acquire(&self) -> Permit {
        // The sender lives in `self`, so the channel never ends.
        let _ = self.free.lock().await.next().await;
        Permit(self.give_back.clone())
    }
}

/// A permit of [`Permits`], given back when dropped.
#[derive(Debug)]
pub(super) struct Permit(mpsc::UnboundedSender<()>);

impl Drop for Permit {
    fn drop(&mut self) {
        // Fails only once the permits are gone, and then nobody needs it.
        let _ = self.0.unbounded_send(());
    }
}

/// The leases of the messages a batch is sending, so that they are renewed together: the
/// first attempt whose lease is past its half renews, in one store call, every lease of the
/// batch that is past its half (messages claimed together share their lease, so one call
/// renews a whole claim), and the others find their renewed lease here instead of asking
/// the store again.
#[derive(Debug, Default)]
pub(super) struct LeaseBook {
    /// Each message's latest lease, `None` once another worker took it over.
    held: Mutex<BTreeMap<MessageId, Option<Lease>>>,
    /// Held while a renewal is under way, so that attempts that need one at the same time
    /// wait for it rather than renewing the same leases again.
    renewing: futures_util::lock::Mutex<()>,
}

impl LeaseBook {
    fn enter(&self, id: MessageId, lease: &Lease) {
        self.lock().insert(id, Some(lease.clone()));
    }

    fn leave(&self, id: MessageId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<MessageId, Option<Lease>>> {
        // The map is never left half-changed, so a panic elsewhere does not spoil it.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps message `id`'s lease in `lease`, renewing with one store call every lease of the
    /// book that `fresh` finds stale. Returns `false` when another worker took `id` over.
    pub(super) async fn keep(
        &self,
        service: &PushService,
        id: MessageId,
        lease: &mut Lease,
        now: OffsetDateTime,
        fresh: impl Fn(&Lease) -> bool,
    ) -> Result<bool, StoreError> {
        let _renewing = self.renewing.lock().await;
        let stale: Vec<MessageId> = {
            let held = self.lock();
            match held.get(&id) {
                Some(None) => return Ok(false),
                Some(Some(known)) if fresh(known) => {
                    *lease = known.clone();
                    return Ok(true);
                }
                _ => {}
            }
            held.iter()
                .filter(|(_, known)| known.as_ref().is_some_and(|known| !fresh(known)))
                .map(|(stale, _)| *stale)
                .chain(std::iter::once(id))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let renewed = service.lease(now);
        let kept: BTreeSet<MessageId> = service
            .ports
            .messages
            .renew_lease(&stale, &renewed)
            .await?
            .into_iter()
            .collect();
        let mut held = self.lock();
        for message in stale {
            // A message whose attempt ended meanwhile is not put back.
            if let Some(entry) = held.get_mut(&message) {
                *entry = kept.contains(&message).then(|| renewed.clone());
            }
        }
        if !kept.contains(&id) {
            return Ok(false);
        }
        *lease = renewed;
        Ok(true)
    }
}

/// What a running batch asks for when messages are still being sent and slots are free: a
/// future that resolves when it is time to look for due messages again (`true`), or when the
/// batch should stop taking new messages (`false`) and end once those under way are done.
/// The domain has no timer of its own, so the caller decides the rhythm (the worker's poll
/// interval).
pub type PollAgain<'a> = dyn Fn() -> BoxFuture<'static, bool> + Send + Sync + 'a;

/// A claimed message, with its lease and where its attempt finds its deliveries.
type ClaimedMessage = (Message, Lease, Loaded);

/// What a claim brings back: the messages it claimed, and whether it came back short (it
/// found fewer due messages than it had room for).
type Claimed = Result<(Vec<ClaimedMessage>, bool), StoreError>;

/// What a running batch waits for.
enum Event {
    /// The claim under way came back.
    Claimed(Claimed),
    /// A message's sends are over; its save is under way.
    Sent(MessageId),
    /// A message's attempt ended; it names the message and its application.
    Done(Box<(MessageId, AppId, Result<Attempted, StoreError>)>),
    /// The caller's rhythm: look for due messages again (`true`) or stop (`false`).
    Tick(bool),
}

/// The sending slots of one batch: how many there are, how many each application holds, and
/// how many one application may hold while others have due messages.
#[derive(Debug, Clone)]
struct Slots {
    total: usize,
    per_app: usize,
    /// Slots an application that already holds `per_app` may not borrow, so that a message
    /// of another application that comes due finds a free slot at once.
    reserve: usize,
    busy: usize,
    by_app: BTreeMap<AppId, usize>,
}

impl Slots {
    fn new(total: usize, per_app: usize) -> Self {
        let total = total.max(1);
        let per_app = per_app.clamp(1, total);
        Self {
            total,
            per_app,
            reserve: usize::from(per_app < total),
            busy: 0,
            by_app: BTreeMap::new(),
        }
    }

    fn free(&self) -> usize {
        self.total - self.busy
    }

    /// The applications that hold their share of the slots (or more, borrowed).
    fn saturated(&self) -> Vec<AppId> {
        self.by_app
            .iter()
            .filter(|(_, held)| **held >= self.per_app)
            .map(|(app, _)| app.clone())
            .collect()
    }

    /// The most messages one claim that leaves out the saturated applications may take
    /// without any application going past its share: all of them might be of the application
    /// with the least room left.
    fn claimable(&self) -> usize {
        let least_room = self
            .by_app
            .values()
            .filter(|held| **held < self.per_app)
            .map(|held| self.per_app - held)
            .min()
            .unwrap_or(self.per_app);
        self.free().min(least_room)
    }

    /// The most messages of saturated applications that may take free slots when no other
    /// application has a message due.
    fn borrowable(&self) -> usize {
        self.free().saturating_sub(self.reserve)
    }

    fn take(&mut self, app: &AppId) {
        self.busy += 1;
        *self.by_app.entry(app.clone()).or_default() += 1;
    }

    fn give_back(&mut self, app: &AppId) {
        self.busy = self.busy.saturating_sub(1);
        if let Some(held) = self.by_app.get_mut(app) {
            *held -= 1;
            if *held == 0 {
                self.by_app.remove(app);
            }
        }
    }

    /// Whether enough slots are free to be worth a claim now rather than at the next poll: half
    /// of them, so that fast messages are claimed a few at a time instead of one claim each.
    fn worth_a_claim(&self) -> bool {
        self.busy == 0 || self.free() >= self.total.div_ceil(2)
    }
}

impl PushService {
    /// Claims due messages and sends them, up to `limit` messages, calling `on_message` after
    /// each one, until nothing more is due: [`PushService::process_due`] without polling while
    /// messages are being sent (a one-off pass over the backlog).
    ///
    /// # Errors
    /// As [`PushService::process_due`].
    pub async fn process_batch(
        &self,
        limit: u64,
        on_message: &(dyn Fn(&Message) + Send + Sync),
    ) -> Result<BatchReport, StoreError> {
        let never = || -> BoxFuture<'static, bool> { Box::pin(future::pending()) };
        self.process_due(limit, &never, on_message).await
    }

    /// Claims due messages and sends them as a pipeline, up to `limit` messages, calling
    /// `on_message` after each one. It sends `message_concurrency` messages at once and claims
    /// more as slots free up (once half of them are free, or whenever `poll_again` says so
    /// while any is free), so a slow message holds one slot and nothing else. After a
    /// claim that came back short (nothing more was due), it claims again only when
    /// `poll_again` says so or once nothing is being sent, not each time a message ends. One
    /// application holds at most `app_concurrency` slots while other applications have due
    /// messages; when none has, it may borrow every free slot but one, which stays free for
    /// the next message of another application. Returns when nothing is being sent and
    /// nothing more was due, when `limit` messages were taken, or once `poll_again` said stop
    /// and the messages under way are done.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails; no more messages are claimed then, the ones under
    /// way finish first, and messages already processed keep their results.
    pub async fn process_due(
        &self,
        limit: u64,
        poll_again: &PollAgain<'_>,
        on_message: &(dyn Fn(&Message) + Send + Sync),
    ) -> Result<BatchReport, StoreError> {
        let mut report = BatchReport::default();
        let slots_total = self.settings.message_concurrency;
        // With one application there is nobody to keep a slot for.
        let per_app = if self.apps.iter().nth(1).is_none() {
            slots_total
        } else {
            self.settings.app_concurrency
        };
        let mut slots = Slots::new(slots_total, per_app);
        let (sent, mut sends_over) = mpsc::unbounded();
        let batch = Batch {
            sent: Some(sent),
            ..Batch::new(self.settings.large_message_concurrency)
        };
        // The messages that hold a sending slot, with their application. A message frees its
        // slot once its sends are over, so that a slot waits for the provider only and not
        // for the save (a grouped write, behind the claims and the other saves): the
        // messages being saved are bounded apart, by `message_concurrency` again.
        let mut holding: BTreeMap<MessageId, AppId> = BTreeMap::new();
        let mut sending = FuturesUnordered::new();
        // The claim under way, if any. It runs side by side with the sends: a send that holds
        // a store connection (SQLite has one writer) must go on being polled while the claim
        // waits for that connection.
        let mut claiming: Option<BoxFuture<'_, Claimed>> = None;
        let mut taken: u64 = 0;
        // The first store failure: no more claims then, and the messages under way finish
        // (dropping them mid-send would leave their outcomes unrecorded until their leases
        // expire) before it is returned.
        let mut failure: Option<StoreError> = None;
        let mut stopped = false;
        let mut claim_now = true;
        // The last claim came back short: nothing more was due then.
        let mut drained = false;
        let mut poll: Option<BoxFuture<'static, bool>> = None;
        loop {
            // Room for the attempts that are being saved, whose slots are free already.
            let saving_room = (2 * slots.total).saturating_sub(sending.len());
            if claiming.is_none()
                && saving_room > 0
                && std::mem::take(&mut claim_now)
                && !stopped
                && taken < limit
            {
                let room = (limit - taken).min(u64::try_from(saving_room).unwrap_or(u64::MAX));
                claiming = Some(Box::pin(self.claim_for(slots.clone(), room)));
            }
            if sending.is_empty() && claiming.is_none() {
                break;
            }
            let polling = claiming.is_none() && !stopped && taken < limit && slots.free() > 0;
            let event = future::poll_fn(|cx| {
                if let Some(claim) = claiming.as_mut()
                    && let Poll::Ready(claimed) = claim.as_mut().poll(cx)
                {
                    return Poll::Ready(Event::Claimed(claimed));
                }
                if let Poll::Ready(Some(id)) = sends_over.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Sent(id));
                }
                if let Poll::Ready(Some(done)) = sending.poll_next_unpin(cx) {
                    return Poll::Ready(Event::Done(Box::new(done)));
                }
                if polling {
                    let tick = poll.get_or_insert_with(poll_again);
                    if let Poll::Ready(go_on) = tick.as_mut().poll(cx) {
                        return Poll::Ready(Event::Tick(go_on));
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Claimed(Ok((claimed, short))) => {
                    claiming = None;
                    drained = short;
                    // Claimed messages are leased: they are sent even after a stop.
                    for (message, lease, loaded) in claimed {
                        taken += 1;
                        slots.take(&message.spec.app);
                        holding.insert(message.id, message.spec.app.clone());
                        batch.leases.enter(message.id, &lease);
                        sending.push(self.start(message, lease, loaded, &batch));
                    }
                }
                Event::Claimed(Err(error)) => {
                    claiming = None;
                    failure.get_or_insert(error);
                    stopped = true;
                }
                Event::Sent(id) => {
                    if let Some(app) = holding.remove(&id) {
                        slots.give_back(&app);
                        claim_now |= if drained {
                            slots.busy == 0
                        } else {
                            slots.worth_a_claim()
                        };
                    }
                }
                Event::Done(done) => {
                    let (id, app, attempted) = *done;
                    let freed = holding.remove(&id).is_some();
                    if freed {
                        slots.give_back(&app);
                    }
                    match attempted {
                        Ok(Attempted::Done(message)) => {
                            report.count(&message);
                            on_message(&message);
                        }
                        Ok(Attempted::Lost(_)) => {
                            report.processed += 1;
                            report.lost += 1;
                        }
                        Err(error) => {
                            failure.get_or_insert(error);
                            stopped = true;
                        }
                    }
                    // Once the backlog is drained, the messages that end do not each ask for
                    // a claim that would find nothing: the next comes with `poll_again`, or
                    // when the last message ends (so that a one-off pass ends only when
                    // nothing more is due).
                    claim_now |= if drained {
                        freed && slots.busy == 0
                    } else {
                        slots.worth_a_claim()
                    };
                }
                Event::Tick(go_on) => {
                    poll = None;
                    drained = false;
                    stopped |= !go_on;
                    claim_now = go_on;
                }
            }
        }
        match failure {
            Some(error) => Err(error),
            None => Ok(report),
        }
    }

    /// Claims what the free slots can take, at most `room` messages: first the messages of
    /// the applications that are below their share, claim after claim until one comes back
    /// short (nothing more of theirs is due), then, borrowed, those of the saturated ones.
    async fn claim_for(&self, mut slots: Slots, room: u64) -> Claimed {
        let room = usize::try_from(room).unwrap_or(usize::MAX);
        let claim_size = usize::try_from(self.settings.claim_size.max(1)).unwrap_or(usize::MAX);
        let mut claimed = Vec::new();
        loop {
            let want = slots.claimable().min(room - claimed.len()).min(claim_size);
            if want == 0 {
                return Ok((claimed, false));
            }
            let except = slots.saturated();
            let got = self.claim(want, &except).await?;
            let short = got.len() < want;
            for message in got {
                slots.take(&message.0.spec.app);
                claimed.push(message);
            }
            if short {
                if except.is_empty() {
                    return Ok((claimed, true));
                }
                let borrow = slots.borrowable().min(room - claimed.len()).min(claim_size);
                if borrow == 0 {
                    return Ok((claimed, false));
                }
                let borrowed = self.claim(borrow, &[]).await?;
                let short = borrowed.len() < borrow;
                claimed.extend(borrowed);
                return Ok((claimed, short));
            }
        }
    }

    /// Claims up to `limit` due messages, none of the applications in `except`, under a
    /// fresh lease.
    ///
    /// The claim brings each message's first deliveries, one more than [`FIRST_PAGE`]: a
    /// message that has no more is small, and is sent from what the claim brought
    /// ([`Loaded::All`]) with the devices its due deliveries name, read for all the small
    /// messages of an application in one call. The store calls of a claim are thus the same
    /// few however many small messages it brings, where reading each message's deliveries,
    /// devices and tally cost three calls a message. A larger message is paged as before.
    async fn claim(
        &self,
        limit: usize,
        except: &[AppId],
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        let now = self.now();
        let lease = self.lease(now);
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        let claimed = self
            .ports
            .messages
            .claim_due_except(now, limit, &lease, except, FIRST_PAGE + 1)
            .await?;
        let small = |message: &Message| message.deliveries.len() <= FIRST_PAGE as usize;
        let mut wanted: BTreeMap<&AppId, BTreeSet<DeviceId>> = BTreeMap::new();
        for message in claimed.iter().filter(|message| small(message)) {
            wanted
                .entry(&message.spec.app)
                .or_default()
                .extend(message.due_deliveries().filter_map(|d| d.device_id));
        }
        let mut devices: BTreeMap<AppId, Arc<PageDevices>> = BTreeMap::new();
        for (app, ids) in wanted {
            let found: PageDevices = if ids.is_empty() {
                PageDevices::new()
            } else {
                let ids: Vec<DeviceId> = ids.into_iter().collect();
                match self.ports.devices.get_devices(app, &ids).await {
                    Ok(found) => found.into_iter().map(|d| (d.id, d.into())).collect(),
                    // The messages are claimed already: failing the claim would leave them
                    // leased, and unsent, until their leases expire. Their application's
                    // messages are paged instead, and that path reads (and fails) again.
                    Err(_) => continue,
                }
            };
            devices.insert(app.clone(), Arc::new(found));
        }
        Ok(claimed
            .into_iter()
            .map(|mut message| {
                let loaded = match devices.get(&message.spec.app) {
                    Some(found) if small(&message) => Loaded::All(Arc::clone(found)),
                    _ => {
                        // A large message is read a page at a time; what the claim brought of
                        // it is left out, so that its save writes no stale delivery.
                        message.deliveries.clear();
                        Loaded::Paged
                    }
                };
                (message, lease.clone(), loaded)
            })
            .collect())
    }

    /// Sends a claimed message; the answer names it and its application, whose slot it frees
    /// unless the attempt said earlier that its sends were over.
    fn start<'a>(
        &'a self,
        message: Message,
        lease: Lease,
        loaded: Loaded,
        batch: &'a Batch,
    ) -> impl Future<Output = (MessageId, AppId, Result<Attempted, StoreError>)> + Send + 'a {
        let app = message.spec.app.clone();
        let id = message.id;
        async move {
            let attempted = self.process_claimed(message, lease, loaded, batch).await;
            batch.leases.leave(id);
            (id, app, attempted)
        }
    }

    async fn process_claimed(
        &self,
        mut message: Message,
        lease: Lease,
        loaded: Loaded,
        batch: &Batch,
    ) -> Result<Attempted, StoreError> {
        let Ok(app) = self.apps.get(message.spec.app.as_str()) else {
            let reason = format!("application {} is no longer configured", message.spec.app);
            let now = self.now();
            let give_up = crate::message::GiveUp {
                code: "failed".to_owned(),
                reason: reason.clone(),
            };
            let store = &self.ports.messages;
            if !store
                .give_up_due_deliveries(message.id, &lease, &give_up, now)
                .await?
            {
                return Ok(Attempted::Lost(message));
            }
            if message.fail(&reason, now).is_ok()
                && !store.save_progress(&message, Some(&lease)).await?
            {
                return Ok(Attempted::Lost(message));
            }
            return Ok(Attempted::Done(message));
        };
        self.attempt(app, message, lease, loaded, Some(batch)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(id: &str) -> AppId {
        AppId::parse(id).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn an_application_at_its_share_is_left_out_and_others_keep_a_slot() {
        let mut slots = Slots::new(8, 4);
        for _ in 0..4 {
            slots.take(&app("a"));
        }

        assert_eq!(slots.saturated(), vec![app("a")]);
        assert_eq!(slots.claimable(), 4);
        // Borrowed, the saturated application may fill every free slot but one.
        assert_eq!(slots.borrowable(), 3);
        for _ in 0..3 {
            slots.take(&app("a"));
        }
        assert_eq!(slots.free(), 1);
        assert_eq!(slots.claimable(), 1);
        assert_eq!(slots.borrowable(), 0);
    }

    #[test]
    fn a_claim_never_takes_more_than_the_least_room_of_an_application() {
        let mut slots = Slots::new(8, 4);
        for _ in 0..3 {
            slots.take(&app("b"));
        }

        assert_eq!(slots.claimable(), 1);
        slots.give_back(&app("b"));
        assert_eq!(slots.claimable(), 2);
    }

    #[test]
    fn a_large_message_waits_for_a_permit_of_its_own_application_only() {
        use futures_util::FutureExt as _;
        let (a, b) = (app("a"), app("b"));
        let batch = Batch::new(1);
        let first = batch.large_message(&a).now_or_never();
        assert!(first.is_some(), "the first permit of a is free");

        let mut second = Box::pin(batch.large_message(&a));
        assert!(second.as_mut().now_or_never().is_none(), "a has one permit");
        assert!(
            batch.large_message(&b).now_or_never().is_some(),
            "b has permits of its own"
        );
        drop(first);
        assert!(second.now_or_never().is_some(), "a's permit came back");
    }

    #[test]
    fn one_slot_cannot_be_shared() {
        let slots = Slots::new(1, 4);

        assert_eq!(slots.per_app, 1);
        assert_eq!(slots.reserve, 0);
        assert_eq!(slots.claimable(), 1);
    }
}
