//! placeholder
pub mod clock;
pub mod config;
pub mod debug;
pub mod render;
pub mod sqlite;
pub mod wiring;
