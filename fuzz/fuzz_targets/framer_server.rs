//! Drive the framer (ServerToClient) over arbitrarily chunked input.  The first four
//! octets pick limits and chunk sizes (see `check::framer_case`); the
//! invariants are listed in `imapgate::imap::check`.
#![no_main]

use imapgate::imap::{check, Direction};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check::framer_case(data, Direction::ServerToClient) {
        panic!("{violation}");
    }
});
