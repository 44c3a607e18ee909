//! rvoip-tuning: the configuration schema and its validation, and (later)
//! CPU/NIC topology and per-core plans for `rvoip tune`.
//!
//! Owns: what an operator can write in `rvoip.toml`, and every check that a
//! configuration makes sense before anything starts.
//! Must not: open sockets or start threads.

pub mod config;
pub mod dns;
pub mod host;
pub mod mediaserver;
pub mod sbc;

pub use config::{Config, ConfigError};
