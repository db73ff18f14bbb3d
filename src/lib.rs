//! imapgate: an IMAP gateway.  See README.md for the architecture; each
//! module's own docs say what it owns.
#![forbid(unsafe_code)]

pub mod imap;
