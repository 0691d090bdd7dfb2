//! Reports: an application's overview, and the prune of its dead and old devices (or what a
//! prune would do), with their result and error types.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::app::UnknownApplication;
use crate::ports::{DeviceCount, ErrorReason, StateCount, StoreError};
use crate::service::{DeviceError, PushService};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The application is not configured.
    #[error(transparent)]
    UnknownApplication(#[from] UnknownApplication),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An application at a glance: its devices, its recent messages and errors, and its backlog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overview {
    /// The start of the window the message counts and errors cover.
    pub since: OffsetDateTime,
    /// Its devices, counted by platform and active flag.
    pub devices: Vec<DeviceCount>,
    /// Its messages created since `since`, counted by state.
    pub messages: Vec<StateCount>,
    /// The application's messages due now.
    pub backlog: u64,
    /// Its errors recorded since `since`, grouped by reason, latest first (at most 20).
    pub errors: Vec<ErrorReason>,
}

/// The most error reasons an overview lists.
const OVERVIEW_ERRORS: u32 = 20;

/// What a prune did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PruneReport {
    /// Devices deactivated because their latest delivery hit a dead token.
    pub deactivated: u64,
    /// Inactive devices deleted because they were deactivated longer ago than asked.
    pub deleted: u64,
}

impl PushService {
    /// Deactivates the devices whose latest delivery hit a dead token and, when
    /// `delete_inactive_older_than` is given, deletes inactive devices deactivated longer ago.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`] or [`DeviceError::Store`].
    pub async fn prune(
        &self,
        app: &str,
        delete_inactive_older_than: Option<Duration>,
    ) -> Result<PruneReport, DeviceError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let deactivated = self
            .ports
            .devices
            .deactivate_dead_devices(&app.id, now)
            .await?;
        let deleted = match delete_inactive_older_than {
            Some(age) => {
                self.ports
                    .devices
                    .delete_inactive_devices(&app.id, now - age)
                    .await?
            }
            None => 0,
        };
        Ok(PruneReport {
            deactivated,
            deleted,
        })
    }

    /// What [`PushService::prune`] would do now with the same argument, changing nothing:
    /// how many devices it would deactivate and how many it would delete. A device that is
    /// both dead and old enough is counted once, as deactivated, because a prune deactivates
    /// it now and deletes it later.
    ///
    /// # Errors
    /// [`DeviceError::UnknownApplication`] or [`DeviceError::Store`].
    pub async fn prune_preview(
        &self,
        app: &str,
        delete_inactive_older_than: Option<Duration>,
    ) -> Result<PruneReport, DeviceError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let reports = &self.ports.reports;
        let deactivated = reports.count_dead_devices(&app.id).await?;
        let deleted = match delete_inactive_older_than {
            Some(age) => reports.count_inactive_devices(&app.id, now - age).await?,
            None => 0,
        };
        Ok(PruneReport {
            deactivated,
            deleted,
        })
    }

    /// The overview of an application: devices by platform and active flag, messages by
    /// state and errors by reason over the last `window`, and its backlog.
    ///
    /// # Errors
    /// [`ReportError::UnknownApplication`] or [`ReportError::Store`].
    pub async fn overview(&self, app: &str, window: Duration) -> Result<Overview, ReportError> {
        let app = self.apps.get(app)?;
        let now = self.now();
        let since = now - window;
        let reports = &self.ports.reports;
        Ok(Overview {
            since,
            devices: reports.count_devices(&app.id).await?,
            messages: reports.count_messages_by_state(&app.id, since).await?,
            backlog: reports.count_due_in_app(&app.id, now).await?,
            errors: reports
                .error_reasons(&app.id, since, OVERVIEW_ERRORS)
                .await?,
        })
    }
}
