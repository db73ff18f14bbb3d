//! The IMAP protocol core, sans I/O: bytes in, frames and typed values out.
//!
//! - [`framer`]: splits a byte stream into lines and literal payload.
//! - [`command`]: nom grammar for client commands.
//! - [`response`]: classifier for server responses.
//! - [`encode`]: serializers for what the gateway writes itself.
//! - [`capability`]: what the gateway advertises, and the post-login allow-list.
//! - [`mechanism`]: the SASL mechanisms `AUTHENTICATE` runs.
//! - [`secret`]: `Secret<T>` for passwords and SASL data.
//! - `check` (hidden): the invariants the fuzz targets and the corpus replay
//!   test share.
//!
//! Nothing here touches sockets or tokio, so all of it is unit-tested and
//! fuzzed on byte slices.

pub mod capability;
#[doc(hidden)]
pub mod check;
pub mod command;
pub mod encode;
pub mod framer;
pub mod mechanism;
pub mod response;
pub mod secret;

#[cfg(test)]
mod tests;

pub use command::{Command, CommandBody, Mailbox, Tag};
pub use framer::{Direction, Frame, FrameError, Framer, Limits, LiteralHeader};
pub use mechanism::Mechanism;
pub use secret::Secret;
