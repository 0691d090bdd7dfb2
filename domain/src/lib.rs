//! Clarion's domain: validated types, models, the message state machine, provider payloads,
//! ports and services. It does no I/O, so other services can reuse it.

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod device;
pub mod ids;
pub mod message;
pub mod payload;
pub mod ports;
pub mod retry;
pub mod service;
pub mod template;
pub mod text;
pub mod token;

/// The date and time crate of every timestamp in the API ([`time::OffsetDateTime`]), so that a
/// caller builds and reads them without adding `time` itself.
pub use time;

/// The JSON crate of the API: a message's `extra_data`, a template's context and the details of
/// a provider's answer are [`serde_json`] maps and values.
pub use serde_json;

/// The error type behind [`ports::StoreError::Unknown`], which a store returns for failures a
/// caller cannot act on.
pub use anyhow;

/// The attribute every port implementation carries: the ports are async traits held as
/// `Arc<dyn Port>`, which `async-trait` makes object-safe. Write `#[async_trait]` on an
/// `impl` of a port.
pub use async_trait::async_trait;

/// The mocking crate of the port mocks (`ports::Mock*`, with the `mocks` feature), for its
/// predicates and sequences.
#[cfg(feature = "mocks")]
pub use mockall;
