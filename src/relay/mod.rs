//! One client connection, from greeting to close: the not-authenticated
//! phase (the gateway answers itself), the login (passdb, routing, backend
//! login), then the [pump] that relays both directions.  All socket I/O of
//! a session lives here; every protocol decision is the [`Session`]'s.

pub mod backend;
pub mod pump;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use crate::auth::{Answer, Credentials};
use crate::imap::command::{parse_command, parse_command_head, ParseError};
use crate::imap::encode;
use crate::imap::{Frame, FrameError, Framer, Limits};
use crate::metrics::{self, StateGauge};
use crate::runtime::Runtime;
use crate::session::rules;
use crate::session::{Action, Arrow, LoginFailure, LoginRequest, Policy, Session, State, User};
use backend::{BackendConn, ClientMeta};

/// Before login, a non-synchronizing literal may be at most this large
/// (LITERAL-, RFC 7888 §5).
const LITERAL_MINUS_MAX: u64 = 4096;

/// Facts about the connection that the session's policy depends on.
#[derive(Debug, Clone)]
pub struct Connection {
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub listener: Arc<str>,
}

/// Serve one accepted connection to the end.
pub async fn serve(mut client: TcpStream, conn: Connection, runtime: Arc<Runtime>) {
    let started = Instant::now();
    let listener = runtime
        .config
        .listeners
        .iter()
        .find(|l| *l.name == *conn.listener)
        .expect("connection from a configured listener");
    let trusted = listener
        .trusted_networks
        .iter()
        .any(|n| n.contains(&conn.peer.ip()));
    let mut session = Session::new(Policy {
        cleartext_ok: trusted,
        starttls_available: false,
        mechanisms: listener
            .mechanisms
            .iter()
            .map(|m| m.to_ascii_uppercase())
            .collect(),
        max_bad_commands: runtime.config.limits.max_bad_commands,
    });
    info!(listener = %conn.listener, "connection opened");
    let metrics = crate::metrics::get();
    let mut gauge = StateGauge::new(session.state().label());
    let mut arrows = |arrow: Arrow, state: &State| {
        metrics.arrow(arrow.number());
        debug!(arrow = arrow.number(), state = state.label(), "transition")
    };
    arrows(Arrow::OkGreeting, session.state());
    let outcome = async {
        client
            .write_all(&session.greeting("imapgate ready"))
            .await?;
        let deadline = tokio::time::Instant::now() + runtime.config.limits.login_timeout();
        let login = tokio::time::timeout_at(
            deadline,
            not_authenticated(&mut client, &mut session, &conn, &runtime),
        )
        .await;
        match login {
            Ok(r) => r,
            Err(_) => {
                let _ = client
                    .write_all(&encode::untagged(
                        "BYE",
                        Some("UNAVAILABLE"),
                        "Login timeout; closing",
                    ))
                    .await;
                Ok(PreAuthEnd::Closed("login_timeout"))
            }
        }
    }
    .await;
    let (reason, totals) = match outcome {
        Ok(PreAuthEnd::LoggedIn {
            backend,
            client_leftover,
        }) => {
            let limits = &runtime.config.limits;
            let framer_limits = Limits {
                max_line: limits.max_line_length,
                max_literal: limits.max_literal_size,
                max_literals_per_unit: limits.max_literals_per_command,
            };
            let timeouts = pump::Timeouts {
                idle: limits.idle_timeout(),
                max_idle: limits.max_idle(),
            };
            let BackendConn {
                stream,
                leftover,
                name,
                ..
            } = backend;
            gauge.set(session.state().label());
            let _backend_gauge = crate::metrics::BackendGauge::new(&name);
            let (end, totals) = pump::Pump::new(
                client,
                stream,
                &mut session,
                framer_limits,
                timeouts,
                &mut arrows,
                &mut gauge,
            )
            .run(&client_leftover, &leftover)
            .await;
            (end.label(), Some(totals))
        }
        Ok(PreAuthEnd::Closed(reason)) => (reason, None),
        Err(e) => {
            debug!(error = %e, "client I/O error before login");
            ("io_error", None)
        }
    };
    if let Some(arrow) = session.closed() {
        arrows(arrow, session.state());
    }
    gauge.set(session.state().label());
    metrics.sessions_closed.with_label_values(&[reason]).inc();
    let totals = totals.unwrap_or_default();
    info!(
        duration_ms = started.elapsed().as_millis() as u64,
        bytes_from_client = totals.client_bytes,
        bytes_from_backend = totals.backend_bytes,
        commands = totals.commands,
        state = session.state().label(),
        reason,
        "connection closed"
    );
}

enum PreAuthEnd {
    LoggedIn {
        backend: BackendConn,
        /// Client bytes pipelined after the login command.
        client_leftover: Vec<u8>,
    },
    Closed(&'static str),
}

/// The not-authenticated state: frame, parse, let the session answer, until
/// it logs in or closes.
async fn not_authenticated(
    client: &mut TcpStream,
    session: &mut Session,
    conn: &Connection,
    runtime: &Runtime,
) -> std::io::Result<PreAuthEnd> {
    let limits = &runtime.config.limits;
    let mut framer = Framer::new(Limits {
        max_line: limits.max_line_length,
        max_literal: limits.max_literal_size_preauth,
        max_literals_per_unit: limits.max_literals_per_command,
    });
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    // The command being assembled: lines with their literals inline.
    let mut unit: Vec<u8> = Vec::new();
    let mut bare_lf = false;
    loop {
        let mut replies = Vec::new();
        let mut consumed = 0;
        loop {
            let frame = match framer.next(&buf[consumed..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let fatal = limit_reply(e, &buf[consumed..], &mut replies);
                    if fatal {
                        client.write_all(&replies).await?;
                        return Ok(PreAuthEnd::Closed(e.kind()));
                    }
                    consumed += e.line_len().unwrap_or(0);
                    unit.clear();
                    continue;
                }
            };
            let bytes = &buf[consumed..consumed + frame.len()];
            consumed += frame.len();
            if let Frame::Line {
                literal,
                bare_lf: lf,
                ..
            } = frame
            {
                bare_lf |= lf;
                if let Some(lit) = literal {
                    if !lit.sync && lit.len > LITERAL_MINUS_MAX {
                        // RFC 7888 §5: BYE, with TOOBIG.
                        replies.extend(encode::untagged(
                            "BYE",
                            Some("TOOBIG"),
                            "Non-synchronizing literal over 4096 octets; use {n}",
                        ));
                        client.write_all(&replies).await?;
                        return Ok(PreAuthEnd::Closed("literal_too_large"));
                    }
                    if lit.sync {
                        replies.extend_from_slice(b"+ Ready for literal data\r\n");
                    }
                }
            }
            unit.extend_from_slice(bytes);
            if !frame.ends_unit() {
                continue;
            }
            let actions = if session.in_sasl() {
                session.sasl_response(&unit)
            } else if bare_lf {
                let tag = parse_command_head(&unit).ok().map(|(t, _)| t);
                session.command(Err(ParseError {
                    tag,
                    reason: "Command line must end with CRLF",
                }))
            } else {
                let parsed = parse_command(&unit);
                if let Ok(cmd) = &parsed {
                    debug!(tag = %cmd.tag, command = cmd.body.name(), "command");
                }
                metrics::get()
                    .commands
                    .with_label_values(&[
                        parsed
                            .as_ref()
                            .map_or("other", |c| rules::metric_name(c.body.name())),
                        "not_authenticated",
                    ])
                    .inc();
                session.command(parsed)
            };
            unit.clear();
            bare_lf = false;
            for action in actions {
                match action {
                    Action::Reply(r) => replies.extend(r),
                    Action::Refused(reason) => {
                        metrics::get()
                            .bad_commands
                            .with_label_values(&[reason])
                            .inc();
                    }
                    Action::Transition(arrow) => {
                        metrics::get().arrow(arrow.number());
                        debug!(
                            arrow = arrow.number(),
                            state = session.state().label(),
                            "transition"
                        )
                    }
                    Action::Close => {
                        client.write_all(&replies).await?;
                        return Ok(PreAuthEnd::Closed("logout"));
                    }
                    Action::StartTls => {
                        // Not offered until TLS is configured on a listener.
                        warn!("STARTTLS requested but not available");
                    }
                    Action::Login(req) => {
                        client.write_all(&std::mem::take(&mut replies)).await?;
                        let (result, backend) = log_in(&req, conn, runtime).await;
                        let actions = session.login_finished(result);
                        for a in actions {
                            match a {
                                Action::Reply(r) => replies.extend(r),
                                Action::Transition(arrow) => metrics::get().arrow(arrow.number()),
                                _ => {}
                            }
                        }
                        client.write_all(&std::mem::take(&mut replies)).await?;
                        if let Some(backend) = backend {
                            return Ok(PreAuthEnd::LoggedIn {
                                backend,
                                client_leftover: buf[consumed..].to_vec(),
                            });
                        }
                    }
                }
            }
        }
        buf.drain(..consumed);
        if !replies.is_empty() {
            client.write_all(&replies).await?;
        }
        let mut chunk = [0u8; 4096];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(PreAuthEnd::Closed("client_closed"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Answer a framing limit before login.  Returns true if the connection
/// must close (the offending bytes keep coming).
fn limit_reply(e: FrameError, input: &[u8], replies: &mut Vec<u8>) -> bool {
    if e.payload_follows() {
        let text = match e {
            FrameError::LineTooLong { .. } => "Line too long",
            _ => "Literal too large",
        };
        replies.extend(encode::untagged("BYE", Some("TOOBIG"), text));
        return true;
    }
    // A synchronizing literal refused before `+`: the client will not send
    // it, so the connection goes on (RFC 9051 §7.5).
    let line = &input[..e.line_len().unwrap_or(0)];
    let text = "Literal too large";
    match parse_command_head(line) {
        Ok((tag, _)) => replies.extend(encode::tagged(
            &tag,
            crate::imap::response::Status::No,
            Some("TOOBIG"),
            text,
        )),
        Err(ParseError { tag: Some(tag), .. }) => replies.extend(encode::tagged(
            &tag,
            crate::imap::response::Status::No,
            Some("TOOBIG"),
            text,
        )),
        Err(_) => replies.extend(encode::untagged_bad(text)),
    }
    false
}

/// Check credentials at the edge, then open the user's backend.  The
/// backend is contacted only after the passdb accepted the user.
async fn log_in(
    req: &LoginRequest,
    conn: &Connection,
    runtime: &Runtime,
) -> (
    Result<(User, Vec<String>), LoginFailure>,
    Option<BackendConn>,
) {
    let started = Instant::now();
    let verdict = runtime.passdbs.verify(&Credentials {
        username: &req.username,
        password: &req.password,
    });
    let m = metrics::get();
    m.auth_duration.observe(started.elapsed().as_secs_f64());
    let result_label = match &verdict.answer {
        Answer::Accept(_) => "ok",
        Answer::TempFail(_) => "tempfail",
        Answer::Reject { .. } | Answer::Unknown => "failed",
    };
    m.auth_attempts
        .with_label_values(&[req.mechanism, verdict.passdb, result_label])
        .inc();
    let info = match verdict.answer {
        Answer::Accept(info) => info,
        answer => {
            let (result, reason) = match &answer {
                Answer::TempFail(why) => (
                    LoginFailure::Unavailable("Authentication service unavailable".into()),
                    why.as_str(),
                ),
                Answer::Reject { reason } => (LoginFailure::BadCredentials, *reason),
                Answer::Unknown | Answer::Accept(_) => {
                    (LoginFailure::BadCredentials, "unknown user")
                }
            };
            info!(
                user = ?req.username,
                mechanism = req.mechanism,
                passdb = verdict.passdb,
                result = "failed",
                reason,
                duration_ms = started.elapsed().as_millis() as u64,
                "auth"
            );
            return (Err(result), None);
        }
    };
    tracing::Span::current().record("user", tracing::field::debug(&info.user));
    let meta = ClientMeta {
        peer: conn.peer,
        local: conn.local,
        session_id: format!("imapgate-{}", conn.id),
    };
    let limits = &runtime.config.limits;
    let timeouts = backend::Timeouts {
        connect: limits.backend_connect_timeout(),
        login: limits.backend_login_timeout(),
    };
    for candidate in runtime.router.candidates(&info) {
        match backend::open(&candidate, &info.user, &req.password, &meta, timeouts).await {
            Ok(conn) => {
                tracing::Span::current().record("backend", candidate.name.as_str());
                info!(
                    user = ?info.user,
                    mechanism = req.mechanism,
                    passdb = verdict.passdb,
                    backend = %candidate.name,
                    result = "ok",
                    duration_ms = started.elapsed().as_millis() as u64,
                    "auth"
                );
                let user: User = Arc::from(info.user.as_str());
                let caps = conn.capabilities.clone();
                return (Ok((user, caps)), Some(conn));
            }
            Err(e) if e.try_next() => {
                m.backend_connect_failures
                    .with_label_values(&[&candidate.name, e.kind()])
                    .inc();
                warn!(backend = %candidate.name, error = %e, "backend unusable; trying the next");
            }
            Err(backend::BackendError::Rejected { code, text }) => {
                info!(user = ?info.user, backend = %candidate.name, result = "backend_rejected", "auth");
                return (Err(LoginFailure::Backend { code, text }), None);
            }
            Err(e) => {
                m.backend_connect_failures
                    .with_label_values(&[&candidate.name, e.kind()])
                    .inc();
                warn!(backend = %candidate.name, error = %e, "backend login failed");
                return (
                    Err(LoginFailure::Unavailable(
                        "Backend unavailable; try again later".into(),
                    )),
                    None,
                );
            }
        }
    }
    warn!(user = ?info.user, "no backend available");
    (
        Err(LoginFailure::Unavailable(
            "Backend unavailable; try again later".into(),
        )),
        None,
    )
}
