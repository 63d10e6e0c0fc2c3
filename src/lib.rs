//! token-issuer: a registry token service. A request flows one way through the modules:
//! `http` (parse) → `identity` (who) → `policy` (what) → `token` (sign), with `keys` and
//! `config` feeding them at start-up (`app`).
//!
//! Modules are `pub` only where the binary (`main.rs`, `commands/`) or the integration tests
//! use them; every item the crate does not export is `pub(crate)` (`unreachable_pub`).

#![warn(unreachable_pub)]

pub mod app;
pub mod audit;
pub mod config;
pub(crate) mod credentials;
pub mod expiry;
pub mod explaining;
pub(crate) mod glob;
pub mod http;
pub mod identity;
mod issuing;
mod jwt;
pub mod keys;
pub mod metrics;
pub(crate) mod policy;
#[cfg(test)]
mod props;
pub mod registry;
pub mod reload;
pub mod sample;
pub mod scope;
pub mod server;
pub mod store;
pub mod token;
pub(crate) mod upstream;
