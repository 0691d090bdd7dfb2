//! End-to-end tests of clarion-server, in process: a real listener on a free port, a fresh
//! SQLite database per test (and a fresh PostgreSQL schema for the tests that must hold on
//! both stores), and the debug sender.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod bad_input;
mod bulk;
mod connections;
mod devices;
mod faults;
mod health;
mod helpers;
mod keys;
mod matrix;
mod messages;
mod openapi;
mod ops;
mod postgres;
mod problems;
mod process;
mod template_limits;
mod templates;
mod unstorable_text;
mod worker;
