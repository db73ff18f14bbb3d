//! A leg's output buffer against a destination that takes a little at a
//! time (a slow client: every write partial, then Pending): the buffer must
//! stay within a few times HIGH_WATER however long the stream, or "nothing
//! buffers without bound" is false.
//!
//! The bound: `flush` leaves the sent prefix no larger than the backlog,
//! reads come only while the backlog is under HIGH_WATER and add at most
//! SCRATCH, so `out` holds under 2 × (HIGH_WATER + SCRATCH) octets, and its
//! doubling capacity never passes the next power of two.

use super::*;

/// Accepts at most `per_write` octets per call and is Pending on every
/// other call, like a socket whose peer reads slowly.
struct Trickle {
    per_write: usize,
    ready: bool,
    taken: Vec<u8>,
}

impl AsyncWrite for Trickle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.ready = !self.ready;
        if !self.ready {
            return Poll::Pending;
        }
        let n = buf.len().min(self.per_write);
        self.taken.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_slow_destination_never_grows_the_buffer_past_its_bound() {
    let mut leg = Leg::new(Framer::new(Limits {
        max_line: 8192,
        max_literal: u64::MAX,
        max_literals_per_unit: 16,
    }));
    let mut dst = Trickle {
        per_write: 1000,
        ready: false,
        taken: Vec::new(),
    };
    let mut cx = Context::from_waker(std::task::Waker::noop());
    // What the relay loop does: flush, then read a scratch-full from the
    // source whenever less than HIGH_WATER waits.  12 MiB in all.
    let mut source = (0..12 * 1024 * 1024u32).map(|i| (i % 251) as u8);
    let mut offered = 0usize;
    let (mut longest, mut largest) = (0usize, 0usize);
    while dst.taken.len() < offered || offered == 0 {
        let _ = flush(&mut dst, &mut leg, &mut cx);
        if leg.backlog() < HIGH_WATER {
            let chunk: Vec<u8> = source.by_ref().take(SCRATCH).collect();
            offered += chunk.len();
            leg.out.extend_from_slice(&chunk);
        }
        longest = longest.max(leg.out.len());
        largest = largest.max(leg.out.capacity());
    }
    let bound = 2 * (HIGH_WATER + SCRATCH);
    assert!(
        longest < bound && largest <= bound.next_power_of_two(),
        "the buffer held {longest} octets (capacity {largest}) while the destination trickled"
    );
    let expected: Vec<u8> = (0..offered as u32).map(|i| (i % 251) as u8).collect();
    assert!(dst.taken == expected, "bytes lost, doubled or reordered");
}
