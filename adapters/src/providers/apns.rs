//! The APNs provider (being written).

use async_trait::async_trait;
use clarion_domain::ids::AppId;
use clarion_domain::message::SendOutcome;
use clarion_domain::payload::Payload;
use clarion_domain::ports::PushProvider;

use crate::config::Config;

/// Sends to APNs for every application that configures it.
#[derive(Debug)]
pub struct ApnsProvider {}

impl ApnsProvider {
    /// The provider for the applications that configure APNs, or `None` when none does.
    ///
    /// # Errors
    /// When a credential cannot be loaded; the error names the application and setting.
    pub fn from_config(
        _config: &Config,
        _roots: &[reqwest::Certificate],
    ) -> anyhow::Result<Option<Self>> {
        Ok(None)
    }
}

#[async_trait]
impl PushProvider for ApnsProvider {
    async fn send(&self, _app: &AppId, _payload: &Payload) -> SendOutcome {
        SendOutcome::Misconfigured {
            code: "not_implemented".to_owned(),
            reason: "APNs is not implemented yet".to_owned(),
        }
    }
}
