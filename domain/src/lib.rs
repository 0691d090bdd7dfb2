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
