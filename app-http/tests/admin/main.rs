//! Tests of the admin web UI: every page and action through HTTP with a hand-kept cookie
//! (`pages`), and one end-to-end run in headless Chromium (`chromium`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chromium;
mod form;
#[allow(dead_code, reason = "shared with the API tests, which use the rest")]
#[path = "../api/helpers.rs"]
mod helpers;
mod pages;
#[path = "../api/postgres.rs"]
mod postgres;
mod sign_in;
mod unstorable_text;
