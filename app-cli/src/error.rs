//! The CLI's one error type and the exit code of each kind of failure.
//!
//! Exit codes: 0 ok, 1 failure (store, configuration), 2 bad input, 3 not found, 4 a template
//! that may not send.

use std::process::ExitCode;

use clarion_domain::ports::{RenderError, StoreError};
use clarion_domain::service::{DeviceError, KeyError, MessageError, SendError, TemplateError};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The input is wrong: a malformed value, an unknown application, an illegal option.
    /// Exit code 2.
    #[error("{0}")]
    Input(String),
    /// A device, message or template does not exist. Exit code 3.
    #[error("{0}")]
    NotFound(String),
    /// A template may not send (inactive, or a duplicate); nothing was stored. Exit code 4.
    #[error("not sent: {0}")]
    NotSent(String),
    /// Everything else: the store, the configuration, a failed check. Exit code 1.
    #[error("{0:#}")]
    Failure(#[from] anyhow::Error),
}

impl CliError {
    #[must_use]
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CliError::Failure(_) => 1,
            CliError::Input(_) => 2,
            CliError::NotFound(_) => 3,
            CliError::NotSent(_) => 4,
        })
    }

    fn input(error: &impl ToString) -> Self {
        CliError::Input(error.to_string())
    }

    fn not_found(error: &impl ToString) -> Self {
        CliError::NotFound(error.to_string())
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        match error {
            // A failure of the database, not of the input (exit code 1), with the reason and
            // what to do about it.
            StoreError::Unavailable(reason) => CliError::Failure(anyhow::anyhow!(
                "the database cannot be used now: {reason}; nothing was written, run the \
                 command again once the database is fixed"
            )),
            other => CliError::Failure(anyhow::Error::new(other)),
        }
    }
}

impl From<DeviceError> for CliError {
    fn from(error: DeviceError) -> Self {
        match error {
            DeviceError::UnknownApplication(_)
            | DeviceError::InvalidToken(_)
            | DeviceError::InvalidField(_) => CliError::input(&error),
            DeviceError::NotFound(_) => CliError::not_found(&error),
            DeviceError::Store(e) => e.into(),
        }
    }
}

impl From<SendError> for CliError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Render(RenderError::Unavailable { .. }) => {
                CliError::Failure(anyhow::Error::new(error))
            }
            SendError::UnknownApplication(_)
            | SendError::Invalid(_)
            | SendError::Unsupported(_)
            | SendError::Payload(_)
            | SendError::Render(_) => CliError::input(&error),
            SendError::UnknownDevices(_) | SendError::TemplateNotFound(_) => {
                CliError::not_found(&error)
            }
            SendError::Store(e) => e.into(),
        }
    }
}

impl From<MessageError> for CliError {
    fn from(error: MessageError) -> Self {
        match error {
            MessageError::UnknownApplication(_) | MessageError::Illegal(_) => {
                CliError::input(&error)
            }
            MessageError::NotFound(_) => CliError::not_found(&error),
            // Busy is temporary: a failure (1) a script may retry, not bad input.
            MessageError::Busy(_) => CliError::Failure(anyhow::Error::new(error)),
            MessageError::Store(e) => e.into(),
        }
    }
}

impl From<TemplateError> for CliError {
    fn from(error: TemplateError) -> Self {
        match error {
            // The renderer is busy or could not start: a failure (1) to retry, not bad input.
            TemplateError::Render(RenderError::Unavailable { .. }) => {
                CliError::Failure(anyhow::Error::new(error))
            }
            TemplateError::UnknownApplication(_)
            | TemplateError::Render(_)
            | TemplateError::Unstorable(_) => CliError::input(&error),
            TemplateError::NotFound(_) => CliError::not_found(&error),
            TemplateError::Store(e) => e.into(),
        }
    }
}

impl From<KeyError> for CliError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::UnknownApplication(_) | KeyError::BadName | KeyError::Unstorable(_) => {
                CliError::input(&error)
            }
            KeyError::NotFound(_) => CliError::not_found(&error),
            KeyError::WeakSecret => CliError::Failure(anyhow::Error::new(error)),
            KeyError::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unavailable_database_exits_1_saying_why_and_that_nothing_was_written() {
        let error = CliError::from(StoreError::Unavailable(
            "the disk holding the database is full".to_owned(),
        ));

        assert_eq!(error.exit_code(), ExitCode::from(1));
        let text = error.to_string();
        assert!(
            text.contains("the disk holding the database is full"),
            "{text}"
        );
        assert!(text.contains("nothing was written"), "{text}");
    }
}
