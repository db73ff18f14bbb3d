//! Cross-module tests of the protocol core: property tests, the
//! differential test against imap-codec, and the fuzz corpus replay.

mod corpus;
mod differential;
mod props;
