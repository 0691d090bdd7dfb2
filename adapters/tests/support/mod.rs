//! A harness for provider tests: the real domain service over a fresh SQLite store, the
//! providers built from a configuration (pointed at local mocks), and a clock the test moves.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use clarion_adapters::config::Config;
use clarion_adapters::providers;
use clarion_adapters::render::MiniJinjaRenderer;
use clarion_adapters::sqlite::SqliteStore;
use clarion_domain::device::Device;
use clarion_domain::ids::UserId;
use clarion_domain::message::{Content, Message, Priority, PushOptions, Target};
use clarion_domain::service::{
    BatchReport, Dispatch, Ports, PushService, RegisterDevice, SendRequest, ServiceSettings,
};
use clarion_domain::token::Platform;
use clarion_testkit::ManualClock;
use tempfile::TempDir;

/// The service, its store and clock, and the folder that holds the database and any files
/// the configuration names.
pub struct Harness {
    pub service: PushService,
    pub store: Arc<SqliteStore>,
    pub clock: Arc<ManualClock>,
    pub dir: TempDir,
}

/// A fresh folder for a test's database and credential files.
pub fn temp_dir() -> TempDir {
    tempfile::tempdir().expect("a temporary folder")
}

/// Writes `contents` to `name` in `dir` and returns the path (for `{ file = ... }` secrets and
/// `tls.extra_ca_certs`).
pub fn write_file(dir: &TempDir, name: &str, contents: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, contents).expect("write a test file");
    path
}

/// The service's ports over `store` (every store port), the MiniJinja renderer and `clock`.
pub fn ports(store: &Arc<SqliteStore>, clock: &Arc<ManualClock>) -> Ports {
    Ports {
        devices: store.clone(),
        messages: store.clone(),
        templates: store.clone(),
        keys: store.clone(),
        reports: store.clone(),
        renderer: Arc::new(MiniJinjaRenderer::default()),
        clock: clock.clone(),
    }
}

impl Harness {
    /// Builds the service from `config` (its `apps` and `tls` sections) over a new database in
    /// `dir`.
    pub async fn new(config: &Config, dir: TempDir) -> Self {
        clarion_testkit::install_default_crypto_provider();
        let url = format!("sqlite://{}", dir.path().join("clarion.db").display());
        let store = Arc::new(SqliteStore::connect(&url).await.expect("open the store"));
        let clock = Arc::new(ManualClock::starting_now());
        let ports = ports(&store, &clock);
        let providers = providers::build(config).expect("build the providers");
        let service = PushService::new(
            Arc::new(config.applications()),
            ports,
            providers,
            ServiceSettings::default(),
        );
        Self {
            service,
            store,
            clock,
            dir,
        }
    }

    /// Registers a device for `user` on `app`.
    pub async fn register(
        &self,
        app: &str,
        platform: Platform,
        token: &str,
        keys: Option<(&str, &str)>,
        user: &str,
    ) -> Device {
        let (device, _) = self
            .service
            .register_device(
                app,
                RegisterDevice {
                    platform,
                    token: token.to_owned(),
                    p256dh: keys.map(|k| k.0.to_owned()),
                    auth: keys.map(|k| k.1.to_owned()),
                    name: None,
                    user_id: Some(UserId::parse(user).expect("a valid user id")),
                    device_id: None,
                },
            )
            .await
            .expect("register the device");
        device
    }

    /// Sends `request` on `app` now and returns the stored result.
    pub async fn send(&self, app: &str, request: SendRequest) -> Message {
        self.service
            .send(app, request, Dispatch::Now)
            .await
            .expect("send")
    }

    /// Runs one batch of every due message.
    pub async fn batch(&self) -> BatchReport {
        self.service
            .process_batch(u64::MAX, &|_| {})
            .await
            .expect("run a batch")
    }

    /// Reads a message back from the store.
    pub async fn message(&self, app: &str, message: &Message) -> Message {
        self.service
            .get_message(app, message.id)
            .await
            .expect("read the message")
            .0
    }

    /// Reads a device back from the store.
    pub async fn device(&self, app: &str, device: &Device) -> Device {
        self.service
            .get_device(app, device.id)
            .await
            .expect("read the device")
    }
}

/// A message with a heading and body to one user, no options.
pub fn to_user(user: &str, heading: &str, body: &str) -> SendRequest {
    request(
        Target::User {
            user_id: UserId::parse(user).expect("a valid user id"),
        },
        Some(heading),
        body,
    )
}

/// A message with `heading` (if any) and `body` to `target`, high priority, no options, retried.
pub fn request(target: Target, heading: Option<&str>, body: &str) -> SendRequest {
    SendRequest {
        target,
        content: Content {
            heading: heading.map(str::to_owned),
            body: body.to_owned(),
            url: None,
            extra_data: None,
        },
        tag: None,
        priority: Priority::High,
        options: PushOptions::default(),
        related_objects: vec![],
        retry_sending: true,
    }
}
