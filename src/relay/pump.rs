//! The relay after login: both directions through the framer, the session
//! following every unit, bytes copied with bounded buffers.
//!
//! One task, one hand-written poll loop, no per-direction tasks: the
//! session state is shared by both directions without locks, and replies
//! the gateway makes itself (a BAD for a command in the wrong state) are
//! slotted into the client's stream between two backend responses, never
//! inside one.
//!
//! Memory: reads land in a per-thread scratch buffer; a session only owns
//! buffers while it has bytes in flight (a partial line, or output the
//! peer has not accepted yet).  An idle session holds no buffer at all.
//! Backpressure: a direction stops reading once `HIGH_WATER` bytes wait for
//! its destination, so a client that stops reading slows the backend, and
//! nothing grows without bound.  The client is also not read while
//! `HIGH_WATER` bytes of its own answers wait for it: a client that pipelines
//! without reading gets no more commands through.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};

use crate::imap::encode;
use crate::imap::response::{classify, Code, Response, Status, Untagged};
use crate::imap::{capability, Frame, FrameError, Framer, Limits};
use crate::metrics::{self, StateGauge};
use crate::registry::SessionHandle;
use crate::session::{Arrow, Session, State, Verdict};

/// Read size, and the per-thread scratch buffer's size.
const SCRATCH: usize = 32 * 1024;
/// Stop reading a source once this much waits for its destination.
const HIGH_WATER: usize = 64 * 1024;
/// Loop turns per poll before yielding to other sessions.
const BUDGET: u32 = 32;

thread_local! {
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// How the relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client closed its side.
    ClientClosed,
    /// Logout completed (LOGOUT or a backend BYE) and the backend closed.
    Logout,
    /// The backend went away without a BYE.
    BackendLost,
    /// The client was silent longer than its state allows.
    Timeout,
    /// A limit was exceeded or the backend broke the protocol.
    ProtocolError(&'static str),
    /// An I/O error on either leg.
    IoError,
    /// The admin API ended the session.
    Kicked,
}

impl End {
    pub fn label(self) -> &'static str {
        match self {
            End::ClientClosed => "client_closed",
            End::Logout => "logout",
            End::BackendLost => "backend_lost",
            End::Timeout => "timeout",
            End::ProtocolError(kind) => kind,
            End::IoError => "io_error",
            End::Kicked => "kicked",
        }
    }
}

/// Per-state inactivity limits.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Authenticated or selected, client silent.
    pub idle: Duration,
    /// Longest single IDLE.
    pub max_idle: Duration,
}

/// One direction's buffers.
#[derive(Debug)]
struct Leg {
    framer: Framer,
    /// An incomplete line (at most `max_line` octets).
    partial: Vec<u8>,
    /// Bytes waiting for the destination; `out[sent..]` is unsent.
    out: Vec<u8>,
    sent: usize,
    /// Written but not yet flushed: a TLS stream holds records in its own
    /// buffer until `poll_flush` completes, so a flush that returned
    /// Pending must be retried even when `out` is empty.
    unflushed: bool,
    /// Octets read from this direction's source.
    bytes: u64,
}

impl Leg {
    fn new(framer: Framer) -> Leg {
        Leg {
            framer,
            partial: Vec::new(),
            out: Vec::new(),
            sent: 0,
            unflushed: false,
            bytes: 0,
        }
    }

    fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Give memory back while the session has nothing in flight.
    fn release_if_idle(&mut self) {
        if self.backlog() == 0 && self.out.capacity() > 0 {
            self.out = Vec::new();
            self.sent = 0;
        }
        if self.partial.is_empty() && self.partial.capacity() > 0 {
            self.partial = Vec::new();
        }
    }
}

/// Counters reported when the relay ends.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub client_bytes: u64,
    pub backend_bytes: u64,
    pub commands: u64,
}

pub struct Pump<'s, C, B> {
    client: C,
    backend: B,
    session: &'s mut Session,
    c2b: Leg,
    b2c: Leg,
    /// Gateway replies waiting for the backend stream's next unit boundary.
    deferred: Vec<u8>,
    /// Whether the client unit being received is forwarded (false: it was
    /// refused, and the rest of it is dropped).
    forwarding: bool,
    /// Set once the relay must stop; output still drains to the client.
    ending: Option<End>,
    client_closed: bool,
    backend_closed: bool,
    commands: u64,
    timeouts: Timeouts,
    last_client: Instant,
    timer: Pin<Box<Sleep>>,
    on_arrow: &'s mut (dyn FnMut(Arrow, &State) + Send),
    gauge: &'s mut StateGauge,
    /// The admin API's view of this session (state, bytes, kick).
    handle: &'s SessionHandle,
    /// End once the deferred BYE reaches the client (it waits for the
    /// backend stream's unit boundary).
    end_after_unit: Option<End>,
    /// Commands forwarded whose tagged answer has not come back yet.
    in_flight: u32,
    /// Kicked gracefully while commands were in flight: BYE once quiet.
    drain_pending: bool,
    /// The inactivity BYE is waiting for the backend's unit boundary.
    timeout_deferred: bool,
    command_counter: metrics::CommandCounter,
}

impl<'s, C, B> Pump<'s, C, B>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    /// `client_leftover` and `backend_leftover` are bytes already read from
    /// each side before the relay began (pipelined commands after LOGIN,
    /// data after the backend's LOGIN answer).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: C,
        backend: B,
        session: &'s mut Session,
        limits: Limits,
        timeouts: Timeouts,
        on_arrow: &'s mut (dyn FnMut(Arrow, &State) + Send),
        gauge: &'s mut StateGauge,
        handle: &'s SessionHandle,
    ) -> Self {
        let now = Instant::now();
        Pump {
            client,
            backend,
            session,
            c2b: Leg::new(Framer::new(limits)),
            // Responses: a status response's text never announces a literal
            // (RFC 9051 §9 `resp-text`), so `NO ... x{5}` echoing a mailbox
            // name does not make the framer swallow the next response.
            b2c: Leg::new(Framer::for_responses(limits)),
            deferred: Vec::new(),
            forwarding: true,
            ending: None,
            client_closed: false,
            backend_closed: false,
            commands: 0,
            timeouts,
            last_client: now,
            timer: Box::pin(tokio::time::sleep_until(now + timeouts.idle)),
            on_arrow,
            gauge,
            handle,
            end_after_unit: None,
            in_flight: 0,
            drain_pending: false,
            timeout_deferred: false,
            command_counter: metrics::CommandCounter::default(),
        }
    }

    /// Run until the session ends; returns why, and the byte counts.
    ///
    /// Not an `async fn`: that would keep a second copy of the whole pump
    /// (its by-value argument and the local it is moved into) in every
    /// relayed session's task for its whole life.  An `async move` block
    /// keeps the one it captured.
    #[allow(clippy::manual_async_fn)] // see above
    pub fn run<'a>(
        mut self,
        client_leftover: &'a [u8],
        backend_leftover: &'a [u8],
    ) -> impl Future<Output = (End, Totals)> + use<'a, 's, C, B> {
        async move {
            if !backend_leftover.is_empty() {
                self.on_backend_bytes(backend_leftover);
            }
            if !client_leftover.is_empty() {
                self.on_client_bytes(client_leftover);
            }
            // Polled in place (and re-armed in place after each kick):
            // waiting for a kick costs no allocation per poll.
            let handle = self.handle;
            let mut kick = std::pin::pin!(handle.kicked());
            let end = poll_fn(|cx| self.poll_relay(cx, kick.as_mut())).await;
            let totals = Totals {
                client_bytes: self.c2b.bytes,
                backend_bytes: self.b2c.bytes,
                commands: self.commands,
            };
            (end, totals)
        }
    }

    fn poll_relay(&mut self, cx: &mut Context<'_>, kick: Pin<&mut Notified<'s>>) -> Poll<End> {
        // Once per wakeup, before relaying anything more: a kick applies to
        // the stream as it stands when it arrives (and this poll keeps the
        // task's waker registered with it).
        let _ = self.poll_kick(cx, kick);
        for _ in 0..BUDGET {
            let mut progress = false;

            match flush(&mut self.backend, &mut self.c2b, cx) {
                Poll::Ready(Ok(true)) => progress = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => {
                    // The backend went away while we wrote to it (closed or reset
                    // mid-command, say halfway through an APPEND literal).  What
                    // the client sent can no longer be delivered; tell the client
                    // as for any lost backend (a BYE at a response boundary) and
                    // let what it is owed drain, rather than stopping on the spot.
                    self.c2b.out = Vec::new();
                    self.c2b.sent = 0;
                    self.c2b.unflushed = false;
                    if !self.backend_closed {
                        self.backend_closed = true;
                        self.backend_eof();
                    }
                    progress = true;
                }
            }
            match flush(&mut self.client, &mut self.b2c, cx) {
                Poll::Ready(Ok(true)) => progress = true,
                Poll::Ready(Ok(false)) | Poll::Pending => {}
                Poll::Ready(Err(_)) => return Poll::Ready(End::IoError),
            }
            if let Some(end) = self.ending {
                // Deliver what the client is owed (a BYE, the rest of a
                // response), then stop.
                if (self.b2c.backlog() == 0 && !self.b2c.unflushed) || self.client_closed {
                    return Poll::Ready(end);
                }
                if !progress {
                    return Poll::Pending;
                }
                continue;
            }

            // A client that does not read its answers is not read either: its
            // commands would only pile answers up behind the gateway (Dovecot
            // buffers pipelined NOOP answers until it runs out of memory).
            if self.c2b.backlog() < HIGH_WATER
                && self.b2c.backlog() < HIGH_WATER
                && !self.client_closed
            {
                match read_scratch(&mut self.client, cx) {
                    Poll::Ready(Ok(0)) => {
                        self.client_closed = true;
                        self.end(End::ClientClosed);
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        SCRATCH_BUF.with(|s| self.on_client_bytes(&s.borrow()[..n]));
                        progress = true;
                    }
                    Poll::Ready(Err(_)) => {
                        self.client_closed = true;
                        self.end(End::IoError);
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if self.b2c.backlog() < HIGH_WATER && !self.backend_closed && self.ending.is_none() {
                match read_scratch(&mut self.backend, cx) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        SCRATCH_BUF.with(|s| self.on_backend_bytes(&s.borrow()[..n]));
                        progress = true;
                    }
                    Poll::Ready(_) => {
                        self.backend_closed = true;
                        self.backend_eof();
                        progress = true;
                    }
                    Poll::Pending => {}
                }
            }
            if !progress {
                if let Poll::Ready(()) = self.poll_timer(cx) {
                    continue;
                }
                self.c2b.release_if_idle();
                self.b2c.release_if_idle();
                return Poll::Pending;
            }
        }
        // Used the budget: let other sessions run, then come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// The admin API asked this session to end: `* BYE [UNAVAILABLE]` at
    /// the backend stream's next unit boundary, then close.  A graceful
    /// kick may be followed by an urgent one (`close_now`: the shutdown
    /// grace period ran out), which must still be heard.
    fn poll_kick(&mut self, cx: &mut Context<'_>, mut kick: Pin<&mut Notified<'s>>) -> Poll<()> {
        let mut seen = false;
        // Once the BYE is queued (or waits for the unit boundary), later
        // kicks change nothing.
        while self.ending.is_none()
            && self.end_after_unit.is_none()
            && kick.as_mut().poll(cx).is_ready()
        {
            seen = true;
            // A completed future is never polled again: listen anew (the
            // loop's next poll registers this task's waker with it).
            kick.set(self.handle.kicked());
            if !self.handle.is_urgent() && !self.quiet() {
                // Graceful: the command in flight (a large FETCH, say)
                // finishes first; the BYE follows its tagged answer.
                self.drain_pending = true;
                continue;
            }
            self.drain_pending = false;
            let bye = encode::untagged("BYE", Some("UNAVAILABLE"), self.handle.kick_reason());
            self.end_with(bye, End::Kicked);
        }
        if seen {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// No command is waiting for its answer (IDLE counts as quiet: the
    /// client is only listening).
    fn quiet(&self) -> bool {
        self.in_flight == 0 || matches!(self.session.state(), State::Idle { .. })
    }

    /// Say `bye` at the next unit boundary of the backend stream and end
    /// there.  Until then the relay goes on, so the response in flight
    /// reaches the client whole and the BYE is not lost inside it.
    fn end_with(&mut self, bye: Vec<u8>, end: End) {
        if self.b2c.framer.at_unit_start() {
            self.b2c.out.extend_from_slice(&bye);
            self.end(end);
        } else {
            self.deferred.extend_from_slice(&bye);
            self.end_after_unit.get_or_insert(end);
        }
    }

    /// Mirror the session's state to the state gauge and the admin API.
    fn sync_state(&mut self) {
        let label = self.session.state().label();
        self.gauge.set(label);
        self.handle.set_state(label);
    }

    /// Inactivity: fires `timeouts.idle` after the client last sent
    /// anything (`max_idle` during IDLE).  Returns Ready when the timer
    /// changed something (re-armed or ended the session).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if self.timeout_deferred {
            // A whole limit after the BYE was due, the backend still has not
            // finished the response it waits behind: it is stalled mid-response
            // and no boundary is coming.  Close without the BYE (inside the
            // response it would be taken for data); the client sees the end.
            self.end(End::Timeout);
            return Poll::Ready(());
        }
        let limit = match self.session.state() {
            State::Idle { .. } => self.timeouts.max_idle,
            _ => self.timeouts.idle,
        };
        let deadline = self.last_client + limit;
        if Instant::now() < deadline {
            self.timer.as_mut().reset(deadline);
            return Poll::Ready(());
        }
        self.end_with(
            encode::untagged("BYE", None, "Autologout; idle for too long"),
            End::Timeout,
        );
        if self.ending.is_none() {
            // Deferred to the backend's next unit boundary.  The elapsed timer
            // would fire on every poll (re-queueing the BYE each time, a busy
            // loop that grows `deferred`): re-arm it, one more limit.
            self.timeout_deferred = true;
            self.timer.as_mut().reset(Instant::now() + limit);
        }
        Poll::Ready(())
    }

    fn end(&mut self, end: End) {
        if self.ending.is_none() {
            self.ending = Some(end);
            if let Some(arrow) = self.session.closed() {
                (self.on_arrow)(arrow, self.session.state());
            }
            self.sync_state();
        }
    }

    /// Queue a gateway-made reply for the client at the next unit boundary
    /// of the backend's stream.
    fn inject(&mut self, reply: Vec<u8>) {
        if self.b2c.framer.at_unit_start() {
            self.b2c.out.extend_from_slice(&reply);
        } else {
            self.deferred.extend_from_slice(&reply);
        }
    }

    fn on_client_bytes(&mut self, data: &[u8]) {
        self.c2b.bytes += data.len() as u64;
        self.handle.add_in(data.len());
        metrics::get().relayed_client.inc_by(data.len() as u64);
        self.last_client = Instant::now();
        // Most of what arrives goes out again: one allocation for it, not
        // a doubling per appended line (the buffer is freed when idle).
        self.c2b.out.reserve(data.len());
        if self.c2b.partial.is_empty() {
            let used = self.client_frames(data);
            self.c2b.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.c2b.partial);
            buf.extend_from_slice(data);
            let used = self.client_frames(&buf);
            buf.drain(..used);
            self.c2b.partial = buf;
        }
        self.sync_state();
    }

    /// Frame and judge client bytes; returns how many were consumed.
    fn client_frames(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while self.ending.is_none() {
            let frame = match self.c2b.framer.next(&input[pos..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    self.client_limit_exceeded(e);
                    return input.len();
                }
            };
            let bytes = &input[pos..pos + frame.len()];
            pos += frame.len();
            match frame {
                Frame::Line {
                    starts_unit: true,
                    literal,
                    bare_lf,
                    ..
                } => {
                    self.commands += 1;
                    let sync = literal.is_some_and(|l| l.sync);
                    let verdict = if bare_lf
                        && !matches!(self.session.state(), State::Idle { done: false, .. })
                    {
                        // Both ends must agree where a command ends; a bare
                        // LF is not a line ending in IMAP (RFC 9051 §2.2).
                        Verdict::Refuse {
                            reply: encode::untagged_bad("Command line must end with CRLF"),
                            reason: "bare_lf",
                        }
                    } else {
                        self.session.client_command(bytes, sync)
                    };
                    self.command_counter
                        .inc(self.session.last_command(), self.session.state().label());
                    match verdict {
                        Verdict::Forward => {
                            self.forwarding = true;
                            if !matches!(self.session.state(), State::Idle { .. }) {
                                self.in_flight += 1;
                            }
                            self.c2b.out.extend_from_slice(bytes);
                        }
                        Verdict::Refuse { reply, reason } => {
                            metrics::get()
                                .bad_commands
                                .with_label_values(&[reason])
                                .inc();
                            self.forwarding = false;
                            self.inject(reply);
                            if sync {
                                // Refused before `+`: the client will not
                                // send the literal.
                                self.c2b.framer.cancel_literal();
                            }
                        }
                    }
                }
                Frame::Line { literal, .. } => {
                    if self.forwarding {
                        if let Some(l) = literal {
                            self.session.client_literal_announced(l.sync);
                        }
                        self.c2b.out.extend_from_slice(bytes);
                    } else if literal.is_some_and(|l| l.sync) {
                        self.c2b.framer.cancel_literal();
                    }
                }
                Frame::Literal { .. } => {
                    if self.forwarding {
                        self.session.client_literal_data();
                        self.c2b.out.extend_from_slice(bytes);
                    }
                }
            }
        }
        pos
    }

    /// A client exceeded a framing limit after login.  The unit was partly
    /// forwarded already, so the stream cannot continue (RFC 7888 §4).
    fn client_limit_exceeded(&mut self, e: FrameError) {
        let text = match e {
            FrameError::LineTooLong { .. } => "Command line too long",
            _ => "Literal too large",
        };
        self.inject(encode::untagged("BYE", Some("TOOBIG"), text));
        self.end(End::ProtocolError(e.kind()));
    }

    fn on_backend_bytes(&mut self, data: &[u8]) {
        self.b2c.bytes += data.len() as u64;
        self.handle.add_out(data.len());
        metrics::get().relayed_backend.inc_by(data.len() as u64);
        self.b2c.out.reserve(data.len());
        if self.b2c.partial.is_empty() {
            let used = self.backend_frames(data);
            self.b2c.partial.extend_from_slice(&data[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.b2c.partial);
            buf.extend_from_slice(data);
            let used = self.backend_frames(&buf);
            buf.drain(..used);
            self.b2c.partial = buf;
        }
        self.sync_state();
    }

    fn backend_frames(&mut self, input: &[u8]) -> usize {
        let mut pos = 0;
        while self.ending.is_none() {
            let frame = match self.b2c.framer.next(&input[pos..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "backend exceeded a framing limit");
                    self.backend_fault(End::ProtocolError("backend_limit"));
                    return input.len();
                }
            };
            let bytes = &input[pos..pos + frame.len()];
            pos += frame.len();
            if let Frame::Line {
                starts_unit: true, ..
            } = frame
            {
                if !self.backend_unit(bytes) {
                    continue;
                }
            } else {
                self.b2c.out.extend_from_slice(bytes);
            }
            if frame.ends_unit() && !self.deferred.is_empty() {
                let deferred = std::mem::take(&mut self.deferred);
                self.b2c.out.extend_from_slice(&deferred);
                if let Some(end) = self.end_after_unit.take() {
                    self.end(end);
                }
            }
            if frame.ends_unit() && self.drain_pending && self.quiet() {
                self.drain_pending = false;
                let bye = encode::untagged("BYE", Some("UNAVAILABLE"), self.handle.kick_reason());
                self.end_with(bye, End::Kicked);
            }
        }
        pos
    }

    /// Follow the first line of a backend response; returns false if the
    /// line was replaced or dropped rather than forwarded.
    fn backend_unit(&mut self, line: &[u8]) -> bool {
        let response = match classify(line) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, line = %super::backend::printable(line), "backend sent an invalid response");
                self.backend_fault(End::ProtocolError("backend_protocol"));
                return false;
            }
        };
        match response {
            Response::Tagged { tag, status, .. } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                let (arrow, literal_refused) = self.session.backend_tagged(tag, status);
                if literal_refused && self.c2b.framer.in_literal() {
                    self.c2b.framer.cancel_literal();
                }
                if let Some(a) = arrow {
                    (self.on_arrow)(a, self.session.state());
                }
                if status == Status::Ok && self.session.state() == &State::Logout {
                    self.b2c.out.extend_from_slice(line);
                    self.end(End::Logout);
                    return false;
                }
            }
            Response::Untagged(Untagged::Status(Status::Ok, text))
                if text.code == Some(Code::Closed) =>
            {
                if let Some(a) = self.session.backend_mailbox_closed() {
                    (self.on_arrow)(a, self.session.state());
                }
            }
            Response::Untagged(Untagged::Bye(_)) => {
                if let Some(a) = self.session.backend_bye() {
                    (self.on_arrow)(a, self.session.state());
                }
            }
            Response::Untagged(Untagged::Capability(caps)) => {
                // The client sees only what the gateway can relay.
                self.b2c
                    .out
                    .extend_from_slice(&encode::capability(&capability::post_login(&caps)));
                return false;
            }
            Response::Continuation(_) => self.session.backend_continuation(),
            Response::Untagged(_) => {}
        }
        self.b2c.out.extend_from_slice(line);
        true
    }

    fn backend_fault(&mut self, end: End) {
        if self.b2c.framer.at_unit_start() {
            self.b2c.out.extend_from_slice(&encode::untagged(
                "BYE",
                Some("UNAVAILABLE"),
                "Backend protocol error",
            ));
        }
        self.end(end);
    }

    fn backend_eof(&mut self) {
        if self.session.state() == &State::Logout {
            self.end(End::Logout);
            return;
        }
        if self.b2c.framer.at_unit_start() {
            let mut bye = std::mem::take(&mut self.deferred);
            bye.extend_from_slice(&encode::untagged(
                "BYE",
                Some("UNAVAILABLE"),
                "Backend connection lost",
            ));
            self.b2c.out.extend_from_slice(&bye);
        }
        self.end(End::BackendLost);
    }
}

/// Read once from `src` into this thread's scratch buffer.  Ready(Ok(0))
/// is end of stream.
fn read_scratch<R: AsyncRead + Unpin>(
    src: &mut R,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    SCRATCH_BUF.with(|s| {
        let mut s = s.borrow_mut();
        let mut buf = ReadBuf::new(&mut s[..]);
        match Pin::new(src).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
}

/// Write a leg's backlog to `dst`.  Ready(Ok(true)) when bytes moved.
fn flush<W: AsyncWrite + Unpin>(
    dst: &mut W,
    leg: &mut Leg,
    cx: &mut Context<'_>,
) -> Poll<io::Result<bool>> {
    let mut moved = false;
    while leg.sent < leg.out.len() {
        match Pin::new(&mut *dst).poll_write(cx, &leg.out[leg.sent..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => {
                leg.sent += n;
                moved = true;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {
                // Partly written: drop the sent prefix once it is as large
                // as what is left (amortised: at most one move per octet
                // sent).  Otherwise a peer that keeps taking a little but
                // never all grows `out` by everything it ever took, since
                // reads refill whenever the *backlog* is under HIGH_WATER.
                if leg.sent > 0 && leg.sent >= leg.backlog() {
                    leg.out.drain(..leg.sent);
                    leg.sent = 0;
                }
                return if moved {
                    Poll::Ready(Ok(true))
                } else {
                    Poll::Pending
                };
            }
        }
    }
    if leg.sent > 0 {
        leg.out.clear();
        leg.sent = 0;
        leg.unflushed = true;
    }
    if leg.unflushed {
        // Pending registers the waker (TLS: socket writability), so the
        // loop comes back here until the records are out.
        match Pin::new(&mut *dst).poll_flush(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => leg.unflushed = false,
            Poll::Pending => {}
        }
    }
    Poll::Ready(Ok(moved))
}

#[cfg(test)]
mod buffer_tests;
#[cfg(test)]
mod kick_tests;
#[cfg(test)]
mod tests;
