//! Clarion's one typed configuration: read from a TOML file, overridden by `CLARION_*`
//! environment variables, validated once, and turned into the domain's applications.
//!
//! Sources, later ones winning:
//! 1. the defaults below;
//! 2. the file given to [`Config::load`], else the one named by `CLARION_CONFIG`, else
//!    `./clarion.toml` when it exists;
//! 3. `CLARION_LISTEN`, `CLARION_DEBUG`, `CLARION_DATABASE_URL` (for `database.url`), and
//!    `CLARION_<SECTION>__<KEY>` for any nested key, such as
//!    `CLARION_WORKER__POLL_INTERVAL_SECS` or `CLARION_APPS__SHOP__SENDER`. Other
//!    `CLARION_*` variables with no `__` (`CLARION_CONFIG`, the CLI's own variables) are not
//!    configuration keys and are ignored.
//!
//! Secrets are [`Secret`]s: given inline, as `{ file = "path" }` or as `{ env = "NAME" }`,
//! and never printed.
//!
//! This module is data only: the sections and their defaults (`database`, `sections`,
//! `apps`), secrets (`secret`), loading and validation (`load`). It imports none of the
//! adapters it configures; the providers, the stores and the renderer read it, and
//! `clarion config check` ([`crate::check`]) runs each adapter's own check of its part.

mod apps;
mod database;
mod load;
mod secret;
mod sections;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clarion_domain::app::{ApnsSettings, Application, Applications, OneSignalSettings, SenderKind};
use clarion_domain::ids::AppId;
use clarion_domain::token::EndpointPolicy;
use serde::{Deserialize, Serialize};

pub use crate::config::apps::{
    ApnsConfig, ApnsEnvironment, AppConfig, CLIENT_TOKEN_MAX_LIFETIME_SECS, FcmConfig,
    OneSignalConfig, WebPushConfig,
};
pub use crate::config::database::{DatabaseConfig, DatabaseKind};
pub use crate::config::load::{CONFIG_ENV, ConfigError};
pub use crate::config::secret::Secret;
pub use crate::config::sections::{
    AdminConfig, HttpConfig, MAX_TEMPLATE_NESTING, MIN_HEADER_BYTES, MIN_RENDER_MEMORY_MB,
    TemplateIsolation, TemplatesConfig, TlsConfig, WorkerConfig,
};
pub use crate::url_secrets::redact_url;

/// The application that exists when none is configured.
pub const DEFAULT_APP: &str = "default";

/// The whole configuration of a Clarion process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Turns every application's sender into `debug`: nothing leaves the process.
    pub debug: bool,
    /// The HTTP server's address, such as `127.0.0.1:8080`.
    pub listen: String,
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub tls: TlsConfig,
    pub templates: TemplatesConfig,
    /// The applications (tenants), by id.
    pub apps: BTreeMap<String, AppConfig>,
    /// The file this configuration was read from, if any.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut config = Self {
            debug: false,
            listen: "127.0.0.1:8080".to_owned(),
            database: DatabaseConfig::default(),
            worker: WorkerConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            tls: TlsConfig::default(),
            templates: TemplatesConfig::default(),
            apps: BTreeMap::new(),
            file: None,
        };
        config.add_default_app();
        config
    }
}

impl Config {
    fn add_default_app(&mut self) {
        if self.apps.is_empty() {
            self.apps.insert(
                DEFAULT_APP.to_owned(),
                AppConfig {
                    sender: SenderKind::Debug,
                    ..AppConfig::default()
                },
            );
        }
    }

    /// The applications as the domain sees them. With `debug = true` every sender is
    /// `debug`. Applications whose id does not parse are left out ([`Config::load`] refuses
    /// them).
    #[must_use]
    pub fn applications(&self) -> Applications {
        Applications::new(self.apps.iter().filter_map(|(id, app)| {
            let id = AppId::parse(id).ok()?;
            let sender = if self.debug {
                SenderKind::Debug
            } else {
                app.sender
            };
            let endpoint_policy = match &app.webpush {
                Some(webpush) if webpush.allow_private_endpoints => EndpointPolicy::AllowPrivate,
                _ => EndpointPolicy::PublicOnly,
            };
            Some(Application {
                id,
                sender,
                endpoint_policy,
                retry: app.retry,
                apns: app.apns.as_ref().map(|apns| ApnsSettings {
                    topic: apns.topic.clone(),
                }),
                onesignal: app.onesignal.as_ref().map(|onesignal| OneSignalSettings {
                    app_id: onesignal.app_id.clone(),
                    language: onesignal.language.clone(),
                }),
            })
        }))
    }

    /// The configuration as TOML, with every secret and the database password redacted.
    #[must_use]
    pub fn redacted_toml(&self) -> String {
        let mut shown = self.clone();
        shown.database.url = self.database.redacted_url();
        match toml::to_string_pretty(&shown) {
            Ok(text) => text,
            // Every type here serialises to TOML; say so rather than panic if one stops.
            Err(error) => format!("# the configuration cannot be shown as TOML: {error}\n"),
        }
    }
}

/// One line of `clarion config check`: what one check found. It is data, like the rest of
/// this module; the checks that produce it live with what they check (see [`crate::check`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckItem {
    /// The key or thing checked, such as `apps.shop.fcm.service_account`.
    pub subject: String,
    pub ok: bool,
    /// What was found; never a secret's value.
    pub detail: String,
}

impl CheckItem {
    pub(crate) fn ok(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: true,
            detail,
        }
    }

    pub(crate) fn failed(subject: String, detail: String) -> Self {
        Self {
            subject,
            ok: false,
            detail,
        }
    }
}
