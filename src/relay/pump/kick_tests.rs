//! Admin kicks after login: the BYE lands at a unit boundary of the
//! backend's stream, never inside a response, and the session ends there.
//! In-memory pipes with small buffers make "mid-response" certain.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;
use crate::imap::command::parse_command;
use crate::registry::Registry;
use crate::session::{Action, Policy};

fn logged_in() -> Session {
    let mut s = Session::new(Policy {
        cleartext_ok: true,
        starttls_available: false,
        mechanisms: vec![crate::imap::Mechanism::Plain],
        max_bad_commands: 3,
    });
    let actions = s.command(parse_command(b"a LOGIN alice wonderland\r\n"));
    assert!(matches!(actions[0], Action::Login(_)));
    s.login_finished(Ok(("alice".into(), vec!["IMAP4rev1".into()])));
    s
}

fn next_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Run a pump with the client on a pipe of `client_buf` bytes while
/// `script` plays client and backend and may kick through the handle.
async fn with_pump<F, Fut>(client_buf: usize, script: F) -> End
where
    F: FnOnce(DuplexStream, DuplexStream, Arc<SessionHandle>) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, client_end) = tokio::io::duplex(client_buf);
    let (backend, backend_end) = tokio::io::duplex(4096);
    let registry = Registry::default();
    let id = next_id();
    let registration =
        registry.register(id, SocketAddr::from(([127, 0, 0, 1], 40000)), "test".into());
    let handle = registration.handle();
    let shared = registry.find(id).expect("registered");
    let mut session = logged_in();
    let mut on_arrow = |_: Arrow, _: &State| {};
    let mut gauge = StateGauge::new(session.state().label());
    let pump = Pump::new(
        client_end,
        backend_end,
        &mut session,
        Limits {
            max_line: 8192,
            max_literal: 1 << 24,
            max_literals_per_unit: 16,
        },
        Timeouts {
            idle: Duration::from_secs(1800),
            max_idle: Duration::from_secs(3600),
        },
        &mut on_arrow,
        &mut gauge,
        handle,
    );
    let both = async { tokio::join!(pump.run(b"", b""), script(client, backend, shared)) };
    let ((end, _), ()) = tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("pump and script finish");
    assert_eq!(handle.state(), "logout");
    end
}

async fn read_to_end(mut client: DuplexStream) -> String {
    let mut out = Vec::new();
    client
        .read_to_end(&mut out)
        .await
        .expect("read client side");
    String::from_utf8_lossy(&out).into_owned()
}

/// A kick in the middle of a large response: a plain kick lets the
/// command finish (BYE after its tagged answer); `close_now` stops at the
/// end of the response being relayed.  Never a BYE inside a literal.
async fn kick_mid_response(urgent: bool) -> String {
    const LEN: usize = 1 << 20;
    let seen_tail = std::cell::RefCell::new(String::new());
    let tail = &seen_tail;
    let end = with_pump(1024, |mut client, mut backend, handle| async move {
        // Any command valid after login will do; only the framing of the
        // answer matters (an untagged FETCH can arrive at any time).
        client.write_all(b"f NOOP\r\n").await.unwrap();
        let mut cmd = [0u8; 8];
        backend.read_exact(&mut cmd).await.unwrap();
        // The backend answers with far more than the pipes and the relay's
        // high-water mark hold, while the client reads nothing yet.
        let head = format!("* 1 FETCH (BODY[] {{{LEN}}}\r\n");
        let writer = async move {
            backend.write_all(head.as_bytes()).await.unwrap();
            backend.write_all(&vec![b'x'; LEN]).await.unwrap();
            backend.write_all(b")\r\nf OK done\r\n").await.unwrap();
            backend
        };
        let kicker = async {
            // Let the relay fill up and stall mid-literal, then kick.
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            assert!(handle.bytes_out() > 0 && handle.bytes_out() < LEN as u64 / 4);
            if urgent {
                handle.close_now("maintenance");
            } else {
                handle.kick("maintenance");
            }
            read_to_end(client).await
        };
        let (_backend, seen) = tokio::join!(writer, kicker);
        let want_head = format!("* 1 FETCH (BODY[] {{{LEN}}}\r\n");
        assert!(seen.starts_with(&want_head), "{}", &seen[..60]);
        assert!(seen[want_head.len()..].starts_with(&"x".repeat(LEN)));
        *tail.borrow_mut() = seen[want_head.len() + LEN..].to_owned();
    })
    .await;
    assert_eq!(end, End::Kicked);
    seen_tail.into_inner()
}

#[tokio::test]
async fn kick_mid_response_lets_the_command_finish() {
    assert_eq!(
        kick_mid_response(false).await,
        ")\r\nf OK done\r\n* BYE [UNAVAILABLE] maintenance\r\n"
    );
}

#[tokio::test]
async fn close_now_mid_response_stops_at_the_end_of_the_response() {
    // The response whole, then the BYE; the tagged OK is never relayed.
    assert_eq!(
        kick_mid_response(true).await,
        ")\r\n* BYE [UNAVAILABLE] maintenance\r\n"
    );
}

#[tokio::test]
async fn kick_between_responses_says_bye_at_once() {
    let end = with_pump(4096, |mut client, mut backend, handle| async move {
        client.write_all(b"n NOOP\r\n").await.unwrap();
        let mut cmd = [0u8; 8];
        backend.read_exact(&mut cmd).await.unwrap();
        backend.write_all(b"n OK done\r\n").await.unwrap();
        let mut ok = [0u8; 11];
        client.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"n OK done\r\n");
        assert_eq!(handle.bytes_in(), 8);
        assert_eq!(handle.state(), "authenticated");
        handle.kick("");
        assert_eq!(
            read_to_end(client).await,
            format!(
                "* BYE [UNAVAILABLE] {}\r\n",
                crate::registry::DEFAULT_KICK_REASON
            )
        );
    })
    .await;
    assert_eq!(end, End::Kicked);
}
