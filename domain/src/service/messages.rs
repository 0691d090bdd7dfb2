//! Stored messages: reading one or a list, and an operator's retry or cancel, with their
//! error type.

use crate::app::UnknownApplication;
use crate::ids::MessageId;
use crate::message::{DeliveryTally, IllegalTransition, Message};
use crate::ports::{DELIVERIES_SHOWN, MessageFilter, StoreError};
use crate::service::PushService;

/// Why an operation on a stored message failed.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// The application has no message with this id.
    #[error("message {0} not found")]
    NotFound(MessageId),
    /// The message's state does not allow the operation (a retry of a message that is not ERROR,
    /// a cancel of one that is not WAITING).
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// A worker holds the message's lease (it is being sent); try again once it is done.
    #[error("message {0} is being sent by a worker; try again when it is done")]
    Busy(MessageId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl PushService {
    /// A message as it is shown: with its first [`DELIVERIES_SHOWN`] deliveries, and the
    /// tally of all of them.
    ///
    /// # Errors
    /// [`MessageError::UnknownApplication`], [`MessageError::NotFound`] or
    /// [`MessageError::Store`].
    pub async fn get_message(
        &self,
        app: &str,
        id: MessageId,
    ) -> Result<(Message, DeliveryTally), MessageError> {
        let app = self.apps.get(app)?;
        let message = self
            .ports
            .messages
            .get_message_head(&app.id, id, DELIVERIES_SHOWN)
            .await?
            .ok_or(MessageError::NotFound(id))?;
        let tally = self.ports.messages.delivery_tally(id).await?;
        Ok((message, tally))
    }

    /// A message with all its deliveries, for an operator's action on it.
    async fn whole_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let app = self.apps.get(app)?;
        self.ports
            .messages
            .get_message(&app.id, id)
            .await?
            .ok_or(MessageError::NotFound(id))
    }

    /// Messages matching the filter; the filter's application, when set, must be configured.
    ///
    /// # Errors
    /// [`MessageError::UnknownApplication`] or [`MessageError::Store`].
    pub async fn list_messages(
        &self,
        filter: &MessageFilter,
    ) -> Result<Vec<Message>, MessageError> {
        if let Some(app) = &filter.app {
            self.apps.get(app.as_str())?;
        }
        Ok(self.ports.messages.list_messages(filter).await?)
    }

    /// An operator's retry of an ERROR message: it goes back to WAITING for the batch worker.
    ///
    /// # Errors
    /// [`MessageError::Illegal`] unless the message is ERROR, and the errors of
    /// [`PushService::get_message`].
    pub async fn retry_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let mut message = self.whole_message(app, id).await?;
        message.requeue(self.now())?;
        if !self.ports.messages.save_progress(&message, None).await? {
            return Err(MessageError::Busy(id));
        }
        Ok(message)
    }

    /// An operator's cancel of a WAITING message: it becomes ERROR `cancelled`.
    ///
    /// # Errors
    /// [`MessageError::Illegal`] unless the message is WAITING, and the errors of
    /// [`PushService::get_message`].
    pub async fn cancel_message(&self, app: &str, id: MessageId) -> Result<Message, MessageError> {
        let mut message = self.whole_message(app, id).await?;
        message.cancel(self.now())?;
        if !self.ports.messages.save_progress(&message, None).await? {
            return Err(MessageError::Busy(id));
        }
        Ok(message)
    }
}
