//! imapgate: an IMAP gateway.  See README.md for the architecture; each
//! module's own docs say what it owns.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod config;
pub mod imap;
pub mod limits;
pub mod listeners;
pub mod metrics;
pub mod registry;
pub mod relay;
pub mod route;
pub mod runtime;
pub mod server;
pub mod session;
pub mod tls;
pub mod workers;
