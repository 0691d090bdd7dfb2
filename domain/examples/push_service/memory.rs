// The module's description is the doc comment on `mod memory;` in `main.rs`: the crate's
// documentation includes this file in a doctest, where an inner doc comment cannot stand.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use clarion_domain::async_trait;
use clarion_domain::auth::{ApiKey, ApiKeyId, KeyHash, NewApiKey};
use clarion_domain::device::{
    BulkRegistration, Device, DeviceFilter, DeviceUpdate, NewDevice, Registration,
    last_registration_of_each_token,
};
use clarion_domain::ids::{AppId, DeliveryId, DeviceId, MessageId, RelatedObject, Slug};
use clarion_domain::message::{
    Channel, Delivery, DeliveryState, DeliveryTally, GiveUp, Message, MessageState,
};
use clarion_domain::ports::{
    ApiKeyStore, DELIVERIES_SHOWN, DeviceCount, DeviceStore, ErrorReason, Lease, MessageFilter,
    MessageStore, NewDeliveries, NewMessage, RenderError, ReportStore, StateCount, StoreError,
    TemplateRenderer, TemplateStore,
};
use clarion_domain::serde_json::{Map, Value};
use clarion_domain::template::{Template, TemplateSpec};
use clarion_domain::time::OffsetDateTime;

/// Devices, messages and templates in memory, behind the store ports. API keys and reports
/// are not kept: those ports answer with an error.
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_id: i64,
    devices: BTreeMap<DeviceId, Device>,
    messages: BTreeMap<MessageId, Stored>,
    templates: BTreeMap<(AppId, Slug), Template>,
}

/// A message with every one of its deliveries, and the lease a worker holds on it.
#[derive(Debug)]
struct Stored {
    message: Message,
    lease: Option<Lease>,
}

impl State {
    fn next_id(&mut self) -> i64 {
        self.last_id += 1;
        self.last_id
    }
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves no half-written change behind: every write
        // below is a single assignment or insert.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The answer of a port this store does not keep.
fn not_kept(what: &str) -> StoreError {
    StoreError::Unknown(clarion_domain::anyhow::anyhow!(
        "the in-memory store keeps no {what}"
    ))
}

/// `stored` with the deliveries of `written` that a write may change: a delivery already
/// accepted or taken by the debug sender is never changed again.
fn merge(stored: &mut [Delivery], written: &[Delivery]) {
    for new in written {
        if let Some(old) = stored.iter_mut().find(|d| d.id == new.id)
            && !matches!(old.state(), DeliveryState::Accepted | DeliveryState::Debug)
        {
            *old = new.clone();
        }
    }
}

#[async_trait]
impl DeviceStore for MemoryStore {
    async fn register_device(
        &self,
        device: &NewDevice,
        now: OffsetDateTime,
    ) -> Result<(Device, Registration), StoreError> {
        let mut state = self.state();
        let same_token = |d: &&mut Device| {
            d.app == device.app
                && d.token.platform() == device.token.platform()
                && d.token.key() == device.token.key()
        };
        if let Some(known) = state.devices.values_mut().find(same_token) {
            known.token = device.token.clone();
            known.name.clone_from(&device.name);
            known.user_id.clone_from(&device.user_id);
            known.device_id.clone_from(&device.device_id);
            known.active = true;
            known.deactivated_at = None;
            known.deactivation_reason = None;
            known.updated_at = now;
            return Ok((known.clone(), Registration::Updated));
        }
        let id = DeviceId(state.next_id());
        let created = Device {
            id,
            app: device.app.clone(),
            token: device.token.clone(),
            name: device.name.clone(),
            active: true,
            user_id: device.user_id.clone(),
            device_id: device.device_id.clone(),
            created_at: now,
            updated_at: now,
            deactivated_at: None,
            deactivation_reason: None,
        };
        state.devices.insert(id, created.clone());
        Ok((created, Registration::Created))
    }

    async fn register_devices(
        &self,
        devices: &[NewDevice],
        now: OffsetDateTime,
    ) -> Result<BulkRegistration, StoreError> {
        let mut report = BulkRegistration::default();
        for device in last_registration_of_each_token(devices) {
            match self.register_device(device, now).await?.1 {
                Registration::Created => report.created += 1,
                Registration::Updated => report.updated += 1,
            }
        }
        Ok(report)
    }

    async fn get_device(&self, app: &AppId, id: DeviceId) -> Result<Option<Device>, StoreError> {
        let state = self.state();
        Ok(state.devices.get(&id).filter(|d| &d.app == app).cloned())
    }

    async fn get_devices(&self, app: &AppId, ids: &[DeviceId]) -> Result<Vec<Device>, StoreError> {
        let state = self.state();
        let devices = state.devices.values();
        Ok(devices
            .filter(|d| &d.app == app && ids.contains(&d.id))
            .cloned()
            .collect())
    }

    async fn list_devices(
        &self,
        app: &AppId,
        filter: &DeviceFilter,
    ) -> Result<Vec<Device>, StoreError> {
        let state = self.state();
        let limit = filter.limit.map_or(usize::MAX, |n| n as usize);
        let matches = |d: &&Device| {
            &d.app == app
                && filter
                    .user_id
                    .as_ref()
                    .is_none_or(|u| d.user_id.as_ref() == Some(u))
                && filter.platform.is_none_or(|p| d.platform() == p)
                && filter.active.is_none_or(|a| d.active == a)
                && filter
                    .token_prefix
                    .as_deref()
                    .is_none_or(|p| d.token.key().starts_with(p))
                && filter.after.is_none_or(|after| d.id > after)
        };
        Ok(state
            .devices
            .values()
            .filter(matches)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn deactivate_device(
        &self,
        app: &AppId,
        id: DeviceId,
        reason: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let update = DeviceUpdate {
            active: Some(false),
            reason: Some(reason.to_owned()),
            ..DeviceUpdate::default()
        };
        Ok(self.update_device(app, id, &update, now).await?.is_some())
    }

    async fn update_device(
        &self,
        app: &AppId,
        id: DeviceId,
        update: &DeviceUpdate,
        now: OffsetDateTime,
    ) -> Result<Option<Device>, StoreError> {
        let mut state = self.state();
        let Some(device) = state.devices.get_mut(&id).filter(|d| &d.app == app) else {
            return Ok(None);
        };
        if let Some(name) = &update.name {
            device.name.clone_from(name);
        }
        if let Some(user_id) = &update.user_id {
            device.user_id.clone_from(user_id);
        }
        match update.active {
            Some(false) => {
                device.active = false;
                device.deactivated_at = Some(now);
                device.deactivation_reason.clone_from(&update.reason);
            }
            Some(true) => {
                device.active = true;
                device.deactivated_at = None;
                device.deactivation_reason = None;
            }
            None => {}
        }
        device.updated_at = now;
        Ok(Some(device.clone()))
    }

    async fn delete_device(&self, app: &AppId, id: DeviceId) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.devices.get(&id).is_none_or(|d| &d.app != app) {
            return Ok(false);
        }
        Ok(state.devices.remove(&id).is_some())
    }

    async fn deactivate_dead_devices(
        &self,
        app: &AppId,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut state = self.state();
        let State {
            devices, messages, ..
        } = &mut *state;
        let mut deactivated = 0;
        for device in devices.values_mut().filter(|d| &d.app == app && d.active) {
            let latest = messages
                .values()
                .flat_map(|s| &s.message.deliveries)
                .filter(|d| d.device_id == Some(device.id) && d.updated_at() >= device.updated_at)
                .max_by_key(|d| (d.updated_at(), d.id));
            if let Some(dead) = latest.filter(|d| d.state() == DeliveryState::DeadToken) {
                device.active = false;
                device.deactivated_at = Some(now);
                device.deactivation_reason = dead.error_code().map(str::to_owned);
                deactivated += 1;
            }
        }
        Ok(deactivated)
    }

    async fn delete_inactive_devices(
        &self,
        app: &AppId,
        before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let mut state = self.state();
        let count = state.devices.len();
        state.devices.retain(|_, d| {
            &d.app != app || d.active || d.deactivated_at.is_none_or(|at| at >= before)
        });
        Ok((count - state.devices.len()) as u64)
    }
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn insert_message(&self, new: &NewMessage) -> Result<Message, StoreError> {
        let mut state = self.state();
        let targets: Vec<(Channel, Option<DeviceId>)> = match &new.deliveries {
            NewDeliveries::Listed(listed) => listed.clone(),
            NewDeliveries::Broadcast { platform, channel } => state
                .devices
                .values()
                .filter(|d| d.app == new.spec.app && d.active)
                .filter(|d| platform.is_none_or(|p| d.platform() == p))
                .map(|d| (channel.unwrap_or_else(|| d.platform().into()), Some(d.id)))
                .collect(),
        };
        let id = MessageId(state.next_id());
        let mut message = Message::from_storage(
            id,
            new.spec.clone(),
            new.sender,
            new.progress.clone(),
            new.now,
            new.now,
        )
        .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
        for (channel, device_id) in targets {
            let delivery_id = DeliveryId(state.next_id());
            let delivery = Delivery::pending(delivery_id, id, device_id, channel, new.now);
            message.deliveries.push(delivery);
        }
        // A broadcast comes back without its deliveries, however many there are, as the
        // port says.
        let mut shown = message.clone();
        if let NewDeliveries::Broadcast { .. } = new.deliveries {
            shown.deliveries.clear();
        }
        let lease = new.lease.clone();
        state.messages.insert(id, Stored { message, lease });
        Ok(shown)
    }

    async fn get_message_head(
        &self,
        app: &AppId,
        id: MessageId,
        deliveries: u32,
    ) -> Result<Option<Message>, StoreError> {
        let state = self.state();
        let Some(stored) = state
            .messages
            .get(&id)
            .filter(|s| &s.message.spec.app == app)
        else {
            return Ok(None);
        };
        let mut message = stored.message.clone();
        message.deliveries.truncate(deliveries as usize);
        Ok(Some(message))
    }

    async fn list_messages(&self, filter: &MessageFilter) -> Result<Vec<Message>, StoreError> {
        let state = self.state();
        let limit = filter.limit.map_or(usize::MAX, |n| n as usize);
        let matches = |m: &&Message| {
            filter.app.as_ref().is_none_or(|a| &m.spec.app == a)
                && filter.state.is_none_or(|s| m.state() == s)
                && filter
                    .tag
                    .as_ref()
                    .is_none_or(|t| m.spec.tag.as_ref() == Some(t))
                && filter
                    .recipient
                    .as_ref()
                    .is_none_or(|r| m.spec.target.recipient() == Some(r))
                && filter
                    .related
                    .as_ref()
                    .is_none_or(|r| m.spec.related_objects.contains(r))
                && filter.created_after.is_none_or(|t| m.created_at >= t)
                && filter.created_before.is_none_or(|t| m.created_at < t)
                && filter.before.is_none_or(|id| m.id < id)
        };
        let messages = state.messages.values().rev().map(|s| &s.message);
        Ok(messages
            .filter(matches)
            .take(limit)
            .map(|m| {
                let mut shown = m.clone();
                shown.deliveries.truncate(DELIVERIES_SHOWN as usize);
                shown
            })
            .collect())
    }

    async fn claim_due_except(
        &self,
        now: OffsetDateTime,
        limit: u32,
        lease: &Lease,
        except: &[AppId],
        deliveries_each: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let mut state = self.state();
        let claimable = state.messages.values_mut().filter(|s| {
            s.message.is_due(now)
                && !except.contains(&s.message.spec.app)
                && s.lease.as_ref().is_none_or(|l| l.until <= now)
        });
        let mut claimed = Vec::new();
        for stored in claimable.take(limit as usize) {
            stored.lease = Some(lease.clone());
            let mut message = stored.message.clone();
            message.deliveries.truncate(deliveries_each as usize);
            claimed.push(message);
        }
        Ok(claimed)
    }

    async fn renew_lease(
        &self,
        ids: &[MessageId],
        lease: &Lease,
    ) -> Result<Vec<MessageId>, StoreError> {
        let mut state = self.state();
        let mut renewed = Vec::new();
        for id in ids {
            if let Some(stored) = state.messages.get_mut(id)
                && stored
                    .lease
                    .as_ref()
                    .is_some_and(|l| l.owner == lease.owner)
            {
                stored.lease = Some(lease.clone());
                renewed.push(*id);
            }
        }
        Ok(renewed)
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let mut released = 0;
        for stored in state.messages.values_mut() {
            if stored.lease.as_ref().is_some_and(|l| l.owner == owner) {
                stored.lease = None;
                released += 1;
            }
        }
        Ok(released)
    }

    async fn due_deliveries(
        &self,
        message: MessageId,
        after: Option<DeliveryId>,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let state = self.state();
        let Some(stored) = state.messages.get(&message) else {
            return Ok(Vec::new());
        };
        Ok(stored
            .message
            .due_deliveries()
            .filter(|d| after.is_none_or(|after| d.id > after))
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn delivery_tally(&self, message: MessageId) -> Result<DeliveryTally, StoreError> {
        let state = self.state();
        let deliveries = state.messages.get(&message).map(|s| &s.message.deliveries);
        Ok(DeliveryTally::of(deliveries.map_or(&[], Vec::as_slice)))
    }

    async fn give_up_due_deliveries(
        &self,
        message: MessageId,
        lease: &Lease,
        give_up: &GiveUp,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(stored) = state.messages.get_mut(&message) else {
            return Ok(false);
        };
        if stored.lease.as_ref().is_none_or(|l| l.owner != lease.owner) {
            return Ok(false);
        }
        stored.message.give_up_due(give_up, now);
        Ok(true)
    }

    async fn record_deliveries(&self, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let mut state = self.state();
        for delivery in deliveries {
            if let Some(stored) = state.messages.get_mut(&delivery.message_id) {
                merge(
                    &mut stored.message.deliveries,
                    std::slice::from_ref(delivery),
                );
            }
        }
        Ok(())
    }

    async fn save_progress<'a>(
        &self,
        message: &Message,
        lease: Option<&'a Lease>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let Some(stored) = state.messages.get_mut(&message.id) else {
            return Ok(false);
        };
        let may_write = match (lease, &stored.lease) {
            (Some(mine), Some(held)) => mine.owner == held.owner,
            (Some(_), None) => false,
            (None, held) => held.as_ref().is_none_or(|l| l.until <= message.changed_at),
        };
        if !may_write {
            return Ok(false);
        }
        let mut deliveries = std::mem::take(&mut stored.message.deliveries);
        merge(&mut deliveries, &message.deliveries);
        stored.message = message.clone();
        stored.message.deliveries = deliveries;
        stored.lease = None;
        Ok(true)
    }

    async fn find_template_message(
        &self,
        app: &AppId,
        slug: &Slug,
        related: &[RelatedObject],
    ) -> Result<Option<MessageId>, StoreError> {
        let state = self.state();
        let messages = state.messages.values().rev().map(|s| &s.message);
        Ok(messages
            .filter(|m| &m.spec.app == app && m.spec.template_slug.as_ref() == Some(slug))
            .find(|m| related.iter().all(|r| m.spec.related_objects.contains(r)))
            .map(|m| m.id))
    }

    async fn count_due(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let state = self.state();
        let messages = state.messages.values();
        Ok(messages.filter(|s| s.message.is_due(now)).count() as u64)
    }
}

#[async_trait]
impl TemplateStore for MemoryStore {
    async fn put_template(
        &self,
        spec: &TemplateSpec,
        now: OffsetDateTime,
    ) -> Result<(Template, Registration), StoreError> {
        let mut state = self.state();
        let key = (spec.app.clone(), spec.slug.clone());
        let (created_at, registration) = match state.templates.get(&key) {
            Some(old) => (old.created_at, Registration::Updated),
            None => (now, Registration::Created),
        };
        let template = Template {
            app: spec.app.clone(),
            slug: spec.slug.clone(),
            body: spec.body.clone(),
            heading: spec.heading.clone(),
            url: spec.url.clone(),
            is_active: spec.is_active,
            allow_duplicates: spec.allow_duplicates,
            created_at,
            updated_at: now,
        };
        state.templates.insert(key, template.clone());
        Ok((template, registration))
    }

    async fn get_template(&self, app: &AppId, slug: &Slug) -> Result<Option<Template>, StoreError> {
        let state = self.state();
        Ok(state.templates.get(&(app.clone(), slug.clone())).cloned())
    }

    async fn list_templates(&self, app: &AppId) -> Result<Vec<Template>, StoreError> {
        let state = self.state();
        let templates = state.templates.values();
        Ok(templates.filter(|t| &t.app == app).cloned().collect())
    }

    async fn delete_template(&self, app: &AppId, slug: &Slug) -> Result<bool, StoreError> {
        let mut state = self.state();
        Ok(state
            .templates
            .remove(&(app.clone(), slug.clone()))
            .is_some())
    }
}

#[async_trait]
impl ApiKeyStore for MemoryStore {
    async fn insert_api_key(
        &self,
        _key: &NewApiKey,
        _now: OffsetDateTime,
    ) -> Result<ApiKey, StoreError> {
        Err(not_kept("API keys"))
    }

    async fn find_api_key(&self, _hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        Err(not_kept("API keys"))
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        Err(not_kept("API keys"))
    }

    async fn revoke_api_key(
        &self,
        _id: ApiKeyId,
        _now: OffsetDateTime,
    ) -> Result<Option<ApiKey>, StoreError> {
        Err(not_kept("API keys"))
    }
}

#[async_trait]
impl ReportStore for MemoryStore {
    async fn count_devices(&self, _app: &AppId) -> Result<Vec<DeviceCount>, StoreError> {
        Err(not_kept("reports"))
    }

    async fn count_messages_by_state(
        &self,
        _app: &AppId,
        _since: OffsetDateTime,
    ) -> Result<Vec<StateCount>, StoreError> {
        Err(not_kept("reports"))
    }

    async fn count_due_in_app(
        &self,
        _app: &AppId,
        _now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        Err(not_kept("reports"))
    }

    async fn error_reasons(
        &self,
        _app: &AppId,
        _since: OffsetDateTime,
        _limit: u32,
    ) -> Result<Vec<ErrorReason>, StoreError> {
        Err(not_kept("reports"))
    }

    async fn count_dead_devices(&self, _app: &AppId) -> Result<u64, StoreError> {
        Err(not_kept("reports"))
    }

    async fn count_inactive_devices(
        &self,
        _app: &AppId,
        _before: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        Err(not_kept("reports"))
    }
}

/// A renderer for services that send no templates: every template is refused as one that
/// cannot be rendered now.
#[derive(Debug, Default)]
pub struct NoTemplates;

#[async_trait]
impl TemplateRenderer for NoTemplates {
    async fn render(
        &self,
        field: &str,
        _source: &str,
        _context: &Map<String, Value>,
    ) -> Result<String, RenderError> {
        Err(RenderError::Unavailable {
            field: field.to_owned(),
            detail: "this service renders no templates".to_owned(),
        })
    }

    async fn check(&self, field: &str, _source: &str) -> Result<(), RenderError> {
        Err(RenderError::Unavailable {
            field: field.to_owned(),
            detail: "this service renders no templates".to_owned(),
        })
    }
}

/// One line that says where a message stands and how each of its deliveries went.
#[must_use]
pub fn describe(message: &Message) -> String {
    let deliveries: Vec<String> = message
        .deliveries
        .iter()
        .map(|d| match &d.error_code() {
            Some(code) => format!("{} {} ({code})", d.channel.as_str(), d.state().as_str()),
            None => format!("{} {}", d.channel.as_str(), d.state().as_str()),
        })
        .collect();
    let retry = match (message.state(), message.next_attempt_at()) {
        (MessageState::ErrorRetry, Some(at)) => format!(", due again at {at}"),
        _ => String::new(),
    };
    format!(
        "message {} is {} after {} attempt(s){retry}: {}",
        message.id,
        message.state(),
        message.number_of_send_attempts(),
        deliveries.join(", ")
    )
}
