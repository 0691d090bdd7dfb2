//! Local mock push providers for Clarion's tests: APNs, FCM HTTP v1 (with Google's OAuth 2.0
//! token endpoint), Web Push and OneSignal. Each mock checks what the real service checks,
//! built from the published specifications rather than from Clarion's code, records every
//! request with the problems it found, and can be scripted with canned responses and delays.
//!
//! Every mock binds 127.0.0.1 port 0 on the current tokio runtime and stops when dropped.
//!
//! For tests of a real server process: [`Spawned`] starts a binary and captures its output,
//! [`tree_memory`] and [`MemoryWatch`] read and bound the memory of a process and its
//! descendants, and [`HealthProbe`] asks a health route throughout a test and reports its
//! latencies.
//!
//! [`faults`] makes real infrastructure faults: a small disk to fill or turn read-only, and a
//! PostgreSQL cluster of the test's own to stop and start.

pub mod apns;
pub mod clock;
pub mod faults;
pub mod fcm;
mod goaway;
mod jwt;
pub mod memory;
pub mod onesignal;
pub mod probe;
pub mod process;
pub mod script;
mod server;
pub mod tls;
pub mod webpush;

pub use apns::{ApnsMockConfig, ApnsView, MockApns, apns_test_key};
pub use clock::ManualClock;
pub use faults::{PrivatePostgres, ReadOnlyFile, SmallDisk, require_root};
pub use fcm::{
    Chaos, FcmMockConfig, FcmServiceAccount, FcmTokenView, FcmView, MockFcm,
    fcm_test_service_account,
};
pub use memory::{MemoryWatch, Peak, TreeMemory, tree_memory};
pub use onesignal::{MockOneSignal, OneSignalMockConfig, OneSignalView};
pub use probe::{HealthProbe, ProbeReport, RawResponse};
pub use process::{Spawned, Stream};
pub use script::{CannedResponse, RecordedRequest};
pub use server::ConnectionControl;
pub use tls::{ClientIdentity, TestCa, TestClientCa, install_default_crypto_provider};
pub use webpush::{MockWebPush, TestSubscription, VapidTestKey, WebPushMockConfig, WebPushView};
