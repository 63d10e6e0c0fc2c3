//! One file per command; `main` parses the command line and dispatches here.

pub(crate) mod gc;
pub(crate) mod keys;
pub(crate) mod manage;
pub(crate) mod rotate;
pub(crate) mod serve;
pub(crate) mod store_audit;
pub(crate) mod tools;
pub(crate) mod users;
