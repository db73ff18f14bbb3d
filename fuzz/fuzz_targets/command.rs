//! `parse_command` never panics, agrees with `parse_command_head`, and what
//! it accepts re-encodes to the same command (`check::command_case`).
#![no_main]

use imapgate::imap::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check::command_case(data) {
        panic!("{violation}");
    }
});
