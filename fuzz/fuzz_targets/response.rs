//! `classify` never panics, ignores the line ending, and status responses
//! re-encode to the same classification (`check::response_case`).
#![no_main]

use imapgate::imap::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check::response_case(data) {
        panic!("{violation}");
    }
});
