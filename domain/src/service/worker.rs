//! What the batch worker needs of the service beside its pipeline (`batch`): the report of
//! a batch run, the backlog it watches, and the id its leases carry, with their release at
//! shutdown.

use serde::{Deserialize, Serialize};

use crate::message::{Message, MessageState};
use crate::ports::StoreError;
use crate::service::PushService;

/// What one batch run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchReport {
    /// Messages attempted, whatever came of them.
    pub processed: u64,
    /// Messages that ended SENT.
    pub sent: u64,
    /// Messages that ended DEBUG (the debug sender took them).
    pub debug: u64,
    /// Messages that are in ERROR_RETRY, due again later.
    pub retrying: u64,
    /// Messages that ended ERROR.
    pub failed: u64,
    /// Messages whose lease another worker took over mid-attempt; that worker finishes them.
    #[serde(default)]
    pub lost: u64,
}

impl BatchReport {
    pub(super) fn count(&mut self, message: &Message) {
        self.processed += 1;
        match message.state() {
            MessageState::Sent => self.sent += 1,
            MessageState::Debug => self.debug += 1,
            MessageState::ErrorRetry => self.retrying += 1,
            MessageState::Error | MessageState::Waiting => self.failed += 1,
        }
    }
}

impl PushService {
    /// Releases every lease this worker holds, so that other workers take its messages at
    /// once (a graceful shutdown). Returns how many were released.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn release_leases(&self) -> Result<u64, StoreError> {
        self.ports
            .messages
            .release_leases(&self.settings.worker_id)
            .await
    }

    /// The id this worker's leases carry.
    #[must_use]
    pub fn worker_id(&self) -> &str {
        &self.settings.worker_id
    }

    /// How many messages are due now.
    ///
    /// # Errors
    /// [`StoreError`] when the store fails.
    pub async fn backlog(&self) -> Result<u64, StoreError> {
        self.ports.messages.count_due(self.now()).await
    }
}
