//! Instrumentation of the ports: decorators that count stored messages and deliveries and time
//! provider requests through the `metrics` facade, so that the domain stays free of metrics.
//! Without an installed recorder (the CLI) every measurement is a no-op.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use clarion_domain::ids::{AppId, DeliveryId, MessageId, RelatedObject, Slug};
use clarion_domain::message::{Channel, Delivery, DeliveryTally, GiveUp, Message, SendOutcome};
use clarion_domain::payload::Payload;
use clarion_domain::ports::{
    DueDelivery, Lease, MessageFilter, MessageStore, NewMessage, PushProvider, StoreError,
};
use time::OffsetDateTime;

/// Counter: messages stored in a state, by `app`, `sender` and `state`. A message counts once
/// when it is created (WAITING) and once more for every state it is saved in afterwards.
pub const MESSAGES_TOTAL: &str = "clarion_messages_total";
/// Counter: recorded delivery attempts, by `provider`, `outcome` (the delivery's state) and
/// `reason` (the provider's error code, `none` when there is none).
pub const DELIVERIES_TOTAL: &str = "clarion_deliveries_total";
/// Histogram: the time a provider takes to answer one send, by `provider`.
pub const PROVIDER_REQUEST_DURATION: &str = "clarion_provider_request_duration_seconds";
/// The buckets of [`PROVIDER_REQUEST_DURATION`], in seconds: from a local mock's millisecond
/// to a provider's timeout.
pub const PROVIDER_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Describes the metrics of this module, so that the exporter prints their help texts.
pub fn describe() {
    metrics::describe_counter!(
        MESSAGES_TOTAL,
        "Messages stored in a state, by application, sender and state"
    );
    metrics::describe_counter!(
        DELIVERIES_TOTAL,
        "Delivery attempts recorded, by provider, outcome and error reason"
    );
    metrics::describe_histogram!(
        PROVIDER_REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time a push provider takes to answer one send, by provider"
    );
}

fn count_message(message: &Message) {
    metrics::counter!(
        MESSAGES_TOTAL,
        "app" => message.spec.app.to_string(),
        "sender" => message.sender.as_str(),
        "state" => message.state().as_str(),
    )
    .increment(1);
}

/// Counts recorded delivery attempts by provider, outcome and reason: one counter update per
/// distinct label set of the batch, not one per delivery.
fn count_deliveries(deliveries: &[Delivery]) {
    let mut counts: BTreeMap<(&'static str, &'static str, &str), u64> = BTreeMap::new();
    for delivery in deliveries {
        let reason = delivery.error_code().unwrap_or("none");
        *counts
            .entry((delivery.channel.as_str(), delivery.state().as_str(), reason))
            .or_default() += 1;
    }
    for ((provider, outcome, reason), count) in counts {
        metrics::counter!(
            DELIVERIES_TOTAL,
            "provider" => provider,
            "outcome" => outcome,
            "reason" => reason.to_owned(),
        )
        .increment(count);
    }
}

/// A [`MessageStore`] that counts the messages it stores by state and the deliveries it
/// records by outcome, and otherwise does what the store it wraps does.
#[derive(Debug)]
pub struct InstrumentedMessages<S: ?Sized> {
    inner: Arc<S>,
}

impl<S: ?Sized> InstrumentedMessages<S> {
    #[must_use]
    pub fn new(inner: Arc<S>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl<S: MessageStore + ?Sized> MessageStore for InstrumentedMessages<S> {
    async fn insert_message(&self, message: &NewMessage) -> Result<Message, StoreError> {
        let stored = self.inner.insert_message(message).await?;
        count_message(&stored);
        Ok(stored)
    }

    async fn get_message_head(
        &self,
        app: &AppId,
        id: MessageId,
        deliveries: u32,
    ) -> Result<Option<Message>, StoreError> {
        self.inner.get_message_head(app, id, deliveries).await
    }

    async fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<Message>, StoreError> {
        self.inner.list_messages(filter).await
    }

    async fn claim_due_except(
        &self,
        now: OffsetDateTime,
        limit: u32,
        lease: &Lease,
        except: &[AppId],
        deliveries_each: u32,
    ) -> Result<Vec<Message>, StoreError> {
        self.inner
            .claim_due_except(now, limit, lease, except, deliveries_each)
            .await
    }

    async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        self.inner.record_deliveries(deliveries).await?;
        count_deliveries(deliveries);
        Ok(())
    }

    async fn renew_lease(
        &self,
        ids: &[MessageId],
        lease: &Lease,
    ) -> Result<Vec<MessageId>, StoreError> {
        self.inner.renew_lease(ids, lease).await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.release_leases(owner).await
    }

    async fn due_deliveries(
        &self,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.due_deliveries(message, after, limit).await
    }

    async fn due_page(
        &self,
        app: &AppId,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Option<Vec<DueDelivery>>, StoreError> {
        self.inner.due_page(app, message, after, limit).await
    }

    async fn delivery_tally(&self, message: MessageId) -> Result<DeliveryTally, StoreError> {
        self.inner.delivery_tally(message).await
    }

    async fn give_up_due_deliveries(
        &self,
        message: MessageId,
        lease: &Lease,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.inner
            .give_up_due_deliveries(message, lease, give_up, now)
            .await
    }

    async fn save_progress<'a>(
        &self,
        message: &Message,
        lease: Option<&'a Lease>,
    ) -> Result<bool, StoreError> {
        let saved = self.inner.save_progress(message, lease).await?;
        // A refused save changed nothing, so it counts nothing.
        if saved {
            count_message(message);
        }
        Ok(saved)
    }

    async fn save_attempt(
        &self,
        message: &Message,
        lease: &Lease,
        outcomes: &[Delivery],
    ) -> Result<bool, StoreError> {
        let saved = self.inner.save_attempt(message, lease, outcomes).await?;
        // The outcomes written with the message are recorded attempts too.
        if saved {
            count_message(message);
            count_deliveries(outcomes);
        }
        Ok(saved)
    }

    async fn find_template_message(
        &self,
        app: &AppId,
        slug: &Slug,
        related: &[RelatedObject],
    ) -> Result<Option<MessageId>, StoreError> {
        self.inner.find_template_message(app, slug, related).await
    }

    async fn count_due(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.inner.count_due(now).await
    }
}

/// A [`PushProvider`] that times every send of the provider it wraps.
pub struct InstrumentedProvider {
    channel: Channel,
    inner: Arc<dyn PushProvider>,
}

impl std::fmt::Debug for InstrumentedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstrumentedProvider")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl InstrumentedProvider {
    /// Wraps the provider that serves `channel`; the channel names it in the histogram.
    #[must_use]
    pub fn wrap(channel: Channel, inner: Arc<dyn PushProvider>) -> Arc<dyn PushProvider> {
        Arc::new(Self { channel, inner })
    }
}

#[async_trait]
impl PushProvider for InstrumentedProvider {
    async fn send(&self, app: &AppId, payload: &Payload) -> SendOutcome {
        let started = Instant::now();
        let outcome = self.inner.send(app, payload).await;
        metrics::histogram!(PROVIDER_REQUEST_DURATION, "provider" => self.channel.as_str())
            .record(started.elapsed().as_secs_f64());
        outcome
    }
}
