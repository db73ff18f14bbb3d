//! Drive the session state machine (`imapgate::session::Session`) with arbitrary
//! interleavings of client command lines, SASL lines, login results and backend responses
//! (tagged, untagged BYE, continuation).  The input format and the invariants (no panic;
//! refused commands never forwarded; the state label always one of the five; the pending
//! table bounded by `MAX_PENDING`; the user bound only by a login and never changed; the
//! gateway's own replies never split by client bytes) are in
//! `imapgate::session::check`, shared with the seed replay test.
#![no_main]

use imapgate::session::check;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(violation) = check::session_case(data) {
        panic!("{violation}");
    }
});
