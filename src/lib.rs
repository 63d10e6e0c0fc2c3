//! token-issuer: a registry token service. A request flows one way through the modules:
//! `http` (parse) → `identity` (who) → `policy` (what) → `token` (sign), with `keys` and
//! `config` feeding them at start-up (`app`).

pub mod app;
pub mod audit;
pub mod config;
pub mod credentials;
pub mod glob;
pub mod http;
pub mod identity;
mod issuing;
mod jwt;
pub mod keys;
pub mod metrics;
pub mod policy;
pub mod registry;
pub mod reload;
pub mod sample;
pub mod scope;
pub mod server;
pub mod store;
pub mod token;
pub mod upstream;
