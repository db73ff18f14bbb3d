//! Inactivity timeouts after login, on tokio's paused clock: the limits are at
//! least 30 minutes (RFC 9051 §5.4), far too long for a test on a real clock.
//! The client and the backend are in-memory pipes driven by the test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

use super::*;
use crate::imap::command::parse_command;
use crate::session::{Action, Policy};

const IDLE: Duration = Duration::from_secs(30 * 60);
const MAX_IDLE: Duration = Duration::from_secs(60 * 60);

fn logged_in() -> Session {
    let mut s = Session::new(Policy {
        cleartext_ok: true,
        starttls_available: false,
        mechanisms: vec![crate::imap::Mechanism::Plain],
        max_bad_commands: 3,
    });
    let actions = s.command(parse_command(b"a LOGIN alice wonderland\r\n"));
    assert!(matches!(actions[0], Action::Login(_)));
    s.login_finished(Ok((
        "alice".into(),
        vec!["IMAP4rev1".into(), "IDLE".into()],
    )));
    s
}

/// Registry ids of their own, so these sessions never meet the server's.
fn handle_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(u64::MAX - 1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

async fn line(r: &mut BufReader<DuplexStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).await.expect("read a line");
    s
}

/// Run a pump between two pipes while `script` plays client and backend;
/// returns how the pump ended.
async fn with_pump<F, Fut>(script: F) -> End
where
    F: FnOnce(BufReader<DuplexStream>, BufReader<DuplexStream>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, client_end) = tokio::io::duplex(4096);
    let (backend, backend_end) = tokio::io::duplex(4096);
    let mut session = logged_in();
    let registration = crate::registry::get().register(
        handle_id(),
        SocketAddr::from(([127, 0, 0, 1], 40000)),
        "test".into(),
    );
    let mut on_arrow = |_: Arrow, _: &State| {};
    let mut gauge = StateGauge::new(session.state().label());
    let pump = Pump::new(
        client_end,
        backend_end,
        &mut session,
        Limits {
            max_line: 8192,
            max_literal: 1 << 20,
            max_literals_per_unit: 16,
        },
        Timeouts {
            idle: IDLE,
            max_idle: MAX_IDLE,
        },
        &mut on_arrow,
        &mut gauge,
        registration.handle(),
    );
    let ((end, _), ()) = tokio::join!(
        PollLimit {
            inner: Box::pin(pump.run(b"", b"")),
            polls: 0,
        },
        script(BufReader::new(client), BufReader::new(backend))
    );
    end
}

/// Fails a future polled absurdly often: a relay that wakes itself forever (a busy loop)
/// keeps the paused clock from ever advancing, so it would hang the test instead.
struct PollLimit<F> {
    inner: Pin<Box<F>>,
    polls: u64,
}

impl<F: Future> Future for PollLimit<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.polls += 1;
        assert!(
            self.polls < 100_000,
            "the relay was polled {} times: busy loop",
            self.polls
        );
        self.inner.as_mut().poll(cx)
    }
}

#[tokio::test(start_paused = true)]
async fn silent_client_gets_bye_at_the_idle_timeout_counted_from_its_last_bytes() {
    let started = Instant::now();
    let end = with_pump(|mut client, mut backend| async move {
        // Activity at 20 minutes restarts the clock.
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        client.write_all(b"n1 NOOP\r\n").await.unwrap();
        assert_eq!(line(&mut backend).await, "n1 NOOP\r\n");
        backend.write_all(b"n1 OK done\r\n").await.unwrap();
        assert_eq!(line(&mut client).await, "n1 OK done\r\n");
        // Backend chatter does not count as client activity.
        tokio::time::sleep(Duration::from_secs(25 * 60)).await;
        backend.write_all(b"* 3 EXISTS\r\n").await.unwrap();
        assert_eq!(line(&mut client).await, "* 3 EXISTS\r\n");
        // Nothing more from the client: BYE 30 minutes after its NOOP.
        assert_eq!(
            line(&mut client).await,
            "* BYE Autologout; idle for too long\r\n"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(20 * 60) + IDLE);
    })
    .await;
    assert_eq!(end, End::Timeout);
}

#[tokio::test(start_paused = true)]
async fn idle_command_is_held_up_to_max_idle_not_the_idle_timeout() {
    let started = Instant::now();
    let end = with_pump(|mut client, mut backend| async move {
        client.write_all(b"i1 IDLE\r\n").await.unwrap();
        assert_eq!(line(&mut backend).await, "i1 IDLE\r\n");
        backend.write_all(b"+ idling\r\n").await.unwrap();
        assert_eq!(line(&mut client).await, "+ idling\r\n");
        // Past the 30-minute inactivity limit, the IDLE is still on: the
        // next thing the client reads is the BYE at the IDLE maximum.
        assert_eq!(
            line(&mut client).await,
            "* BYE Autologout; idle for too long\r\n"
        );
        assert_eq!(started.elapsed(), MAX_IDLE);
    })
    .await;
    assert_eq!(end, End::Timeout);
}

#[tokio::test(start_paused = true)]
async fn backend_stalled_mid_response_is_closed_one_idle_period_later_without_spinning() {
    let started = Instant::now();
    let end = with_pump(|mut client, mut backend| async move {
        client.write_all(b"s1 SELECT INBOX\r\n").await.unwrap();
        assert_eq!(line(&mut backend).await, "s1 SELECT INBOX\r\n");
        backend
            .write_all(b"s1 OK [READ-WRITE] done\r\n")
            .await
            .unwrap();
        assert_eq!(line(&mut client).await, "s1 OK [READ-WRITE] done\r\n");
        client.write_all(b"f1 FETCH 1 BODY[]\r\n").await.unwrap();
        assert_eq!(line(&mut backend).await, "f1 FETCH 1 BODY[]\r\n");
        // Ten octets of a hundred, then the backend says nothing more (but stays).
        backend
            .write_all(b"* 1 FETCH (BODY[] {100}\r\n0123456789")
            .await
            .unwrap();
        assert_eq!(line(&mut client).await, "* 1 FETCH (BODY[] {100}\r\n");
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        // At the idle timeout the BYE waits for the response to end; one idle
        // period later the session is closed without it (inside the literal it
        // would be message data).
        assert_eq!(rest, b"0123456789");
        assert_eq!(started.elapsed(), IDLE * 2);
        drop(backend);
    })
    .await;
    assert_eq!(end, End::Timeout);
}

#[tokio::test(start_paused = true)]
async fn backend_gone_while_the_client_sends_a_literal_still_gets_bye() {
    let end = with_pump(|mut client, mut backend| async move {
        client
            .write_all(b"a1 APPEND INBOX {100+}\r\n")
            .await
            .unwrap();
        assert_eq!(line(&mut backend).await, "a1 APPEND INBOX {100+}\r\n");
        // The backend vanishes while the literal is still coming: writing to it
        // fails, and the client must still hear why.
        drop(backend);
        let _ = client.write_all(&[b'x'; 50]).await;
        let mut rest = String::new();
        client.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "* BYE [UNAVAILABLE] Backend connection lost\r\n");
    })
    .await;
    assert_eq!(end, End::BackendLost);
}
