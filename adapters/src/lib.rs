//! Clarion's adapters: the sqlx stores, the push providers, the MiniJinja renderer, the clock,
//! the typed configuration, its checks and the wiring that builds the services from it.
pub mod check;
pub mod client_token;
pub mod clock;
pub mod config;
pub mod debug;
mod device_reads;
mod faults;
mod grouped;
mod held;
pub mod key_cache;
pub mod keys;
pub mod metrics;
pub mod postgres;
pub mod providers;
mod registrations;
pub mod render;
mod rows;
mod sql;
pub mod sqlite;
pub mod store;
mod url_secrets;
pub mod wiring;
pub mod worker;
