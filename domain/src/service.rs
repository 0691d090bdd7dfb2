//! The services: register devices, send messages (directly or from templates), process a batch
//! of due messages, prune dead devices, and let an operator retry or cancel. The CLI and the
//! HTTP server call these and nothing below them.
//!
//! This module holds [`PushService`] with its construction, ports and settings; each concern
//! keeps its part of `impl PushService`, with its request and error types, in a module of
//! its own, and every public type is re-exported here:
//!
//! - `devices`: registering, reading, changing and deleting devices;
//! - `send`: sending a message, directly or from a template, and planning its deliveries;
//! - `attempt`: one attempt at a stored message, its sends, outcomes and lease (what a send
//!   now and the batch worker share);
//! - `batch`: the batch worker's pipeline of claims;
//! - `worker`: what the worker reports, its backlog, id and leases;
//! - `messages`: reading stored messages, and an operator's retry or cancel;
//! - `keys`: API keys and authentication;
//! - `templates`: storing, checking and rendering templates;
//! - `reports`: an application's overview, and pruning its dead devices.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use crate::app::Applications;
use crate::message::Channel;
use crate::ports::{
    ApiKeyStore, Clock, DeviceStore, Lease, MessageStore, PushProvider, ReportStore,
    TemplateRenderer, TemplateStore,
};

mod attempt;
mod batch;
mod devices;
mod keys;
mod messages;
mod reports;
mod send;
mod templates;
mod worker;

pub use batch::PollAgain;
pub use devices::{BulkDeviceError, DeviceError, MAX_BULK_DEVICES, RegisterDevice};
pub use keys::KeyError;
pub use messages::MessageError;
pub use reports::{Overview, PruneReport, ReportError};
pub use send::{Dispatch, SendError, SendRequest, TemplateSend, TemplateSendRequest};
pub use templates::TemplateError;
pub use worker::BatchReport;

/// The ports the services use.
#[derive(Clone)]
pub struct Ports {
    /// Devices: registration, look-up, deactivation.
    pub devices: Arc<dyn DeviceStore>,
    /// Messages with their deliveries, and the claim of due messages by leases.
    pub messages: Arc<dyn MessageStore>,
    /// Templates per application.
    pub templates: Arc<dyn TemplateStore>,
    /// API keys, stored as hashes.
    pub keys: Arc<dyn ApiKeyStore>,
    /// Read-only counts for the overview and the preview of a prune.
    pub reports: Arc<dyn ReportStore>,
    /// Renders templates with bounded work.
    pub renderer: Arc<dyn TemplateRenderer>,
    /// The time every service reads (`now`), so that tests can fix it.
    pub clock: Arc<dyn Clock>,
}

impl fmt::Debug for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ports").finish_non_exhaustive()
    }
}

/// The push providers, by the channel they serve.
#[derive(Clone, Default)]
pub struct Providers {
    by_channel: BTreeMap<&'static str, Arc<dyn PushProvider>>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.by_channel.keys()).finish()
    }
}

impl Providers {
    /// Registers the provider that serves `channel`.
    #[must_use]
    pub fn with(mut self, channel: Channel, provider: Arc<dyn PushProvider>) -> Self {
        self.by_channel.insert(channel.as_str(), provider);
        self
    }

    fn get(&self, channel: Channel) -> Option<&Arc<dyn PushProvider>> {
        self.by_channel.get(channel.as_str())
    }
}

/// Settings of the services.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// Who claims messages; shown in leases. It must be unique per process (a host name,
    /// process id and random suffix), since a lease is checked by its owner.
    pub worker_id: String,
    /// How long a claim on a message lasts before another worker may take it over. A worker
    /// renews its lease once half of it has passed.
    pub lease: Duration,
    /// How many messages one claim takes: one store statement claims up to this many.
    pub claim_size: u32,
    /// The page size when walking the devices of a broadcast.
    pub device_page: u32,
    /// How many due deliveries of one message an attempt loads at a time.
    pub delivery_page: u32,
    /// How many claimed messages a batch works on at once. A one-device message holds its
    /// slot for about one provider round trip, so this is what bounds how fast a queue of
    /// small messages drains: 2,000 at a 50 ms round trip is up to 40,000 messages a second.
    pub message_concurrency: usize,
    /// How many of those may belong to one application while another application's messages
    /// are due: a provider that hangs then holds back only its own application's messages.
    pub app_concurrency: usize,
    /// How many deliveries of one message are sent at once.
    pub delivery_concurrency: usize,
    /// How many messages of one application with more than a first small page of due
    /// deliveries (broadcasts, users with many devices) a batch sends at once; the others
    /// wait for one of them to finish reading its deliveries. Each holds a page of
    /// `delivery_page` deliveries and up to `delivery_concurrency` sends.
    pub large_message_concurrency: usize,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            worker_id: "clarion".to_owned(),
            lease: Duration::from_secs(60),
            claim_size: 500,
            device_page: 1000,
            delivery_page: 500,
            message_concurrency: 2000,
            app_concurrency: 500,
            delivery_concurrency: 4096,
            large_message_concurrency: 4,
        }
    }
}

/// Clarion's services.
#[derive(Debug, Clone)]
pub struct PushService {
    apps: Arc<Applications>,
    ports: Ports,
    providers: Providers,
    settings: ServiceSettings,
}

impl PushService {
    /// The services for `apps`, over the given ports and providers. Nothing is read or checked
    /// until a method is called.
    #[must_use]
    pub fn new(
        apps: Arc<Applications>,
        ports: Ports,
        providers: Providers,
        settings: ServiceSettings,
    ) -> Self {
        Self {
            apps,
            ports,
            providers,
            settings,
        }
    }

    /// The applications the services serve.
    #[must_use]
    pub fn applications(&self) -> &Applications {
        &self.apps
    }

    // The clock and the lease are read by the modules of several concerns (sending, the
    // attempt, the batch worker), so they stay with the struct.

    fn now(&self) -> OffsetDateTime {
        self.ports.clock.now()
    }

    fn lease(&self, now: OffsetDateTime) -> Lease {
        Lease {
            owner: self.settings.worker_id.clone(),
            until: now + self.settings.lease,
        }
    }
}

#[cfg(test)]
mod tests;
