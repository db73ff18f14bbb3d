//! One client connection, from greeting to close: the not-authenticated
//! phase (the gateway answers itself), the login (passdb, routing, backend
//! login), then the [pump] that relays both directions.  All socket I/O of
//! a session lives here; every protocol decision is the [`Session`]'s.
//!
//! TLS: an `implicit` listener handshakes before the greeting; on a
//! `starttls` listener the session asks for the upgrade with
//! [`Action::StartTls`] after its tagged OK, and the relay then drops every
//! byte the client sent after the STARTTLS line (RFC 2595 §3.1, RFC 3501
//! §6.2.1, CVE-2011-0411) before handshaking; nothing said or received in
//! plaintext crosses the switch.

pub mod backend;
pub mod pump;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, error, info, warn};

use crate::auth::{preauth, ClientFacts, Credentials, Failure, Outcome, TlsFacts, UserInfo};
use crate::config::{BackendLogin, TlsMode};
use crate::imap::command::{parse_command, parse_command_head, IdParams, ParseError};
use crate::imap::encode;
use crate::imap::{Command, CommandBody, Frame, FrameError, Framer, Limits, Secret};
use crate::metrics::{self, StateGauge};
use crate::registry::{self, SessionHandle};
use crate::runtime::Runtime;
use crate::session::rules;
use crate::session::{Action, Arrow, LoginFailure, LoginRequest, Policy, Session, State, User};
use crate::tls::{self, ClientStream, ListenerTls, TlsInfo};
use backend::{BackendAuth, BackendConn, ClientMeta};

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
///
/// Not an `async fn`: its arguments would stay in the task twice (as
/// arguments and as the locals they are moved into) for the session's
/// whole life; the `async move` block keeps what it captured once.
#[allow(clippy::manual_async_fn)] // see above
pub fn serve(tcp: TcpStream, conn: Connection, runtime: Arc<Runtime>) -> impl Future<Output = ()> {
    async move {
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
        let listener_tls = runtime.tls.listener(&conn.listener);
        let mode = listener_tls.map_or(TlsMode::None, |t| t.mode);
        let mut client = ClientStream::Plain(tcp);
        let mut session = Session::new(Policy {
            // RFC 8314 §4: cleartext credentials only over TLS, or from a
            // trusted network.  Implicit TLS is up before the greeting.
            cleartext_ok: trusted || mode == TlsMode::Implicit,
            starttls_available: mode == TlsMode::Starttls,
            mechanisms: listener.mechanisms.clone(),
            max_bad_commands: runtime.config.limits.max_bad_commands,
        });
        info!(listener = %conn.listener, "connection opened");
        // In the admin API's list until this function returns.
        let registration = registry::get().register(conn.id, conn.peer, conn.listener.clone());
        let handle = registration.handle();
        let metrics = crate::metrics::get();
        let mut gauge = StateGauge::new(session.state().label());
        let mut arrows = |arrow: Arrow, state: &State| {
            metrics.arrow(arrow.number());
            debug!(arrow = arrow.number(), state = state.label(), "transition")
        };
        // Boxed: the pre-login phase's state (read buffers, TLS handshake, the
        // passdb and backend-login futures; ~12 KiB) is freed at login instead
        // of staying in every relayed session's task for its whole life.
        let outcome = Box::pin(async {
            if let Some(tls) = listener_tls.filter(|t| t.mode == TlsMode::Implicit) {
                if let Err(reason) = handshake(&mut client, tls, &conn).await {
                    return Ok(PreAuthEnd::Closed(reason));
                }
            }
            let cert = client.tls_connection().and_then(|c| TlsInfo::of(c).client);
            if let Some(user) = preauth::match_rules(
                &runtime.config.preauth,
                &conn.listener,
                conn.peer.ip(),
                cert.as_ref(),
            ) {
                return pre_authenticate(
                    &mut client,
                    &mut session,
                    user,
                    &conn,
                    &runtime,
                    handle,
                    &mut arrows,
                )
                .await;
            }
            arrows(Arrow::OkGreeting, session.state());
            send(&mut client, &session.greeting("imapgate ready")).await?;
            let deadline = tokio::time::Instant::now() + runtime.config.limits.login_timeout();
            let login = tokio::time::timeout_at(
                deadline,
                not_authenticated(
                    &mut client,
                    &mut session,
                    &conn,
                    &runtime,
                    listener_tls,
                    handle,
                ),
            )
            .await;
            match login {
                Ok(r) => r,
                Err(_) => {
                    let _ = send(
                        &mut client,
                        &encode::untagged("BYE", Some("UNAVAILABLE"), "Login timeout; closing"),
                    )
                    .await;
                    Ok(PreAuthEnd::Closed("login_timeout"))
                }
            }
        })
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
                // Only what the relay needs outlives login: the capabilities
                // were answered to the client already, and the login reader's
                // buffer is shrunk to the bytes it still holds.
                let BackendConn {
                    stream,
                    mut leftover,
                    name,
                    user_permit: _user_permit,
                    counted: _backend_gauge,
                    capabilities,
                } = backend;
                drop(capabilities);
                leftover.shrink_to_fit();
                gauge.set(session.state().label());
                if let Some(user) = session.state().user() {
                    handle.logged_in(user.clone(), &name);
                }
                handle.set_state(session.state().label());
                let (end, totals) = pump::Pump::new(
                    &mut client,
                    stream,
                    &mut session,
                    framer_limits,
                    timeouts,
                    &mut arrows,
                    &mut gauge,
                    handle,
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
        // A TLS client gets close_notify, so it can tell our close from a
        // truncation (RFC 8446 §6.1); bounded, the peer may be gone.
        if client.is_tls() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(1), client.shutdown()).await;
        }
        if let Some(arrow) = session.closed() {
            arrows(arrow, session.state());
        }
        gauge.set(session.state().label());
        metrics.session_closed(reason);
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
}

/// Arrow (2): a PREAUTH rule named the user.  Log in to the backend as
/// the master user for them, then greet `* PREAUTH [CAPABILITY …]`; if no
/// backend will have them, greet `* BYE [UNAVAILABLE]` (arrow 3).
async fn pre_authenticate(
    client: &mut ClientStream,
    session: &mut Session,
    user: String,
    conn: &Connection,
    runtime: &Runtime,
    handle: &SessionHandle,
    arrows: &mut (dyn FnMut(Arrow, &State) + Send),
) -> std::io::Result<PreAuthEnd> {
    tracing::Span::current().record("user", tracing::field::debug(&user));
    let info = UserInfo {
        user,
        ..UserInfo::default()
    };
    match open_backend(&info, Creds::MasterOnly, &None, conn, runtime).await {
        Ok(backend) => {
            info!(user = ?info.user, backend = %backend.name, result = "ok", mechanism = "PREAUTH", "auth");
            let user: User = Arc::from(info.user.as_str());
            let greeting = session.preauth_greeting(user.clone(), &backend.capabilities);
            arrows(Arrow::PreauthGreeting, session.state());
            handle.logged_in(user, &backend.name);
            handle.set_state(session.state().label());
            send(client, &greeting).await?;
            Ok(PreAuthEnd::LoggedIn {
                backend,
                client_leftover: Vec::new(),
            })
        }
        Err(failure) => {
            warn!(user = ?info.user, ?failure, "PREAUTH: no backend session; refusing the connection");
            arrows(Arrow::ByeGreeting, session.state());
            send(
                client,
                &Session::bye_greeting(Some("UNAVAILABLE"), "Service unavailable; try again later"),
            )
            .await?;
            Ok(PreAuthEnd::Closed("preauth_unavailable"))
        }
    }
}

enum PreAuthEnd {
    LoggedIn {
        backend: BackendConn,
        /// Client bytes pipelined after the login command.
        client_leftover: Vec<u8>,
    },
    Closed(&'static str),
}

/// Write and flush: TLS keeps records in its buffer until flushed.
async fn send(client: &mut ClientStream, bytes: &[u8]) -> std::io::Result<()> {
    client.write_all(bytes).await?;
    client.flush().await
}

/// TLS handshake on a plain client stream (implicit TLS, or after
/// STARTTLS), within the listener's handshake timeout.  On success the
/// stream is TLS; on failure it is closed and the reason is returned.
async fn handshake(
    client: &mut ClientStream,
    tls: &ListenerTls,
    conn: &Connection,
) -> Result<(), &'static str> {
    let tcp = client
        .take_plain()
        .expect("TLS handshakes start on a plain stream");
    let metrics = metrics::get();
    match tls::accept(tls, tcp).await {
        Ok(stream) => {
            *client = stream;
            let info = client
                .tls_connection()
                .map(TlsInfo::of)
                .expect("the stream is TLS after a handshake");
            metrics
                .tls_handshakes
                .with_label_values(&[&conn.listener, "ok", info.version])
                .inc();
            let span = tracing::Span::current();
            span.record("tls", info.version);
            if let Some(id) = &info.client {
                span.record("client_cert", tracing::field::display(id));
            }
            debug!(
                version = info.version,
                cipher = info.cipher,
                sni = info.sni.as_deref(),
                client_cert = info.client.as_ref().map(tracing::field::display),
                "TLS established"
            );
            Ok(())
        }
        Err(e) => {
            metrics
                .tls_handshakes
                .with_label_values(&[&conn.listener, e.kind(), "none"])
                .inc();
            tls::log_handshake_failure(&conn.listener, &e);
            Err("tls_handshake_failed")
        }
    }
}

/// The not-authenticated state: frame, parse, let the session answer, until
/// it logs in or closes.
async fn not_authenticated(
    client: &mut ClientStream,
    session: &mut Session,
    conn: &Connection,
    runtime: &Runtime,
    listener_tls: Option<&ListenerTls>,
    handle: &SessionHandle,
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
    // Login attempts on this connection (nginx's Auth-Login-Attempt).
    let mut attempts: u32 = 0;
    'read: loop {
        let mut replies = Vec::new();
        let mut consumed = 0;
        loop {
            let frame = match framer.next(&buf[consumed..]) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    let fatal = limit_reply(e, &buf[consumed..], &mut replies);
                    if fatal {
                        send(client, &replies).await?;
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
                        send(client, &replies).await?;
                        return Ok(PreAuthEnd::Closed("literal_too_large"));
                    }
                    if lit.sync {
                        if let Some(cmd) = refused_before_literal(&unit, bytes, session.in_sasl()) {
                            // Refused before `+` (RFC 9051 §7.5): the client will not
                            // send the literal, and nothing is taken in for a command
                            // that cannot run before login.
                            framer.cancel_literal();
                            unit.clear();
                            bare_lf = false;
                            for action in session.command(Ok(cmd)) {
                                match action {
                                    Action::Reply(r) => replies.extend(r),
                                    Action::Refused(reason) => {
                                        metrics::get()
                                            .bad_commands
                                            .with_label_values(&[reason])
                                            .inc();
                                    }
                                    Action::Close => {
                                        send(client, &replies).await?;
                                        return Ok(PreAuthEnd::Closed("logout"));
                                    }
                                    _ => {}
                                }
                            }
                            continue;
                        }
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
                        send(client, &replies).await?;
                        return Ok(PreAuthEnd::Closed("logout"));
                    }
                    Action::StartTls => {
                        // The tagged OK goes out in plaintext, then the
                        // handshake.  Everything the client pipelined after
                        // the STARTTLS line arrived before TLS and is
                        // dropped unexecuted (RFC 2595 §3.1, CVE-2011-0411).
                        send(client, &std::mem::take(&mut replies)).await?;
                        let dropped = buf.len() - consumed;
                        buf.clear();
                        framer.reset();
                        unit.clear();
                        bare_lf = false;
                        if dropped > 0 {
                            debug!(bytes = dropped, "discarded plaintext sent after STARTTLS");
                        }
                        let Some(tls) = listener_tls.filter(|t| t.mode == TlsMode::Starttls) else {
                            // The session offers STARTTLS only when policy
                            // says so; a mismatch is a bug, fail closed.
                            warn!("STARTTLS accepted without TLS configured; closing");
                            return Ok(PreAuthEnd::Closed("internal_error"));
                        };
                        if let Err(reason) = handshake(client, tls, conn).await {
                            return Ok(PreAuthEnd::Closed(reason));
                        }
                        session.tls_established();
                        continue 'read;
                    }
                    Action::Login(req) => {
                        send(client, &std::mem::take(&mut replies)).await?;
                        attempts = attempts.saturating_add(1);
                        let asks_cert = runtime.config.listeners.iter().any(|l| {
                            *l.name == *conn.listener
                                && l.client_auth != crate::config::ClientAuth::None
                        });
                        let facts = ClientFacts {
                            ip: conn.peer.ip(),
                            attempt: attempts,
                            tls: client.tls_connection().map(|c| TlsFacts::of(c, asks_cert)),
                        };
                        let (result, close) =
                            log_in(&req, session.client_id(), conn, runtime, &facts).await;
                        let (actions, backend) = match result {
                            Ok((user, backend)) => (
                                session.login_finished(Ok((user, &backend.capabilities))),
                                Some(backend),
                            ),
                            Err(failure) => {
                                (session.login_finished::<&[String]>(Err(failure)), None)
                            }
                        };
                        for a in actions {
                            match a {
                                Action::Reply(r) => replies.extend(r),
                                Action::Transition(arrow) => metrics::get().arrow(arrow.number()),
                                _ => {}
                            }
                        }
                        if let (Some(backend), Some(user)) = (&backend, session.state().user()) {
                            // Before the client hears OK: whoever it tells
                            // finds the session under its user in the
                            // admin API.
                            handle.logged_in(user.clone(), &backend.name);
                            handle.set_state(session.state().label());
                        }
                        send(client, &std::mem::take(&mut replies)).await?;
                        if let Some(backend) = backend {
                            return Ok(PreAuthEnd::LoggedIn {
                                backend,
                                client_leftover: buf[consumed..].to_vec(),
                            });
                        }
                        if close {
                            // The passdb said so (nginx auth_http: a
                            // failure without Auth-Wait ends the session).
                            return Ok(PreAuthEnd::Closed("auth_failed"));
                        }
                    }
                }
            }
        }
        buf.drain(..consumed);
        if !replies.is_empty() {
            send(client, &replies).await?;
        }
        // Straight into the buffer's spare room: no zeroed scratch array,
        // which would also sit in this future (and be copied with it).
        buf.reserve(4096);
        // Waiting for the client is the one place a kick can land between
        // replies: everything owed has been sent.
        let n = tokio::select! {
            n = client.read_buf(&mut buf) => n?,
            () = handle.kicked() => {
                let bye = encode::untagged("BYE", Some("UNAVAILABLE"), handle.kick_reason());
                send(client, &bye).await?;
                return Ok(PreAuthEnd::Closed("kicked"));
            }
        };
        if n == 0 {
            return Ok(PreAuthEnd::Closed("client_closed"));
        }
        handle.add_in(n);
    }
}

/// A command whose first line announces a synchronizing literal but that is valid in no
/// state before login (`APPEND INBOX {10}`, `SELECT {5}`): the session's refusal, to be
/// given instead of `+`.
fn refused_before_literal(unit: &[u8], line: &[u8], in_sasl: bool) -> Option<Command> {
    if in_sasl || !unit.is_empty() {
        return None;
    }
    let (tag, name) = parse_command_head(line).ok()?;
    if rules::allowed(rules::scope(&name), rules::Phase::NotAuthenticated) {
        return None;
    }
    Some(Command {
        tag,
        body: CommandBody::Other(name),
    })
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
/// backend is contacted only after the passdb accepted the user.  The
/// second value says to close the connection after the answer.
async fn log_in(
    req: &LoginRequest,
    client_id: &IdParams,
    conn: &Connection,
    runtime: &Runtime,
    client: &ClientFacts,
) -> (Result<(User, BackendConn), LoginFailure>, bool) {
    let started = Instant::now();
    let creds = Credentials {
        username: req.username.clone(),
        password: req.password.clone(),
    };
    let outcome = runtime.auth.authenticate(&creds, client).await;
    let m = metrics::get();
    m.auth_duration.observe(started.elapsed().as_secs_f64());
    // Counted once the login's fate is known: the passdb's verdict, or
    // `limit` when the per-user session cap refuses a good password.
    let count = |result: &str| {
        m.auth_attempts
            .with_label_values(&[req.mechanism, outcome.passdb, result])
            .inc()
    };
    let info = match &outcome.result {
        Ok(info) => info,
        Err(failure) => {
            count(outcome.label());
            audit(req, client, &outcome, outcome.label(), "", started);
            let close = matches!(failure, Failure::BadCredentials { close: true });
            let failure = match failure {
                // Wrong password and unknown user: the same answer.
                Failure::BadCredentials { .. } => LoginFailure::BadCredentials,
                Failure::Unavailable(text) => LoginFailure::Unavailable((*text).into()),
                // `nologin`: the passdb's text, with the code of a failed
                // login (reusing the variant that carries code and text).
                Failure::NoLogin(text) => LoginFailure::Backend {
                    code: Some("AUTHENTICATIONFAILED".into()),
                    text: text.clone(),
                },
            };
            return (Err(failure), close);
        }
    };
    // PLAIN's authorization identity (RFC 4616 §2): a configured master
    // user acting for another user.  The session is that user's; the
    // backend gets its master login, as for PREAUTH.
    let acting;
    let (info, creds) = match &req.authzid {
        None => (info, Creds::Client(&req.password)),
        Some(target) if runtime.config.auth.master_users.contains(&info.user) => {
            acting = UserInfo {
                user: target.clone(),
                ..UserInfo::default()
            };
            (&acting, Creds::MasterOnly)
        }
        Some(_) => {
            count("authz_denied");
            audit(req, client, &outcome, "authz_denied", "", started);
            return (Err(LoginFailure::Authorization), false);
        }
    };
    tracing::Span::current().record("user", tracing::field::debug(&info.user));
    match open_backend(info, creds, client_id, conn, runtime).await {
        Ok(backend) => {
            count(outcome.label());
            audit(req, client, &outcome, "ok", &backend.name, started);
            let user: User = Arc::from(info.user.as_str());
            (Ok((user, backend)), false)
        }
        Err(failure) => {
            let result = match &failure {
                LoginFailure::Limit(_) => "limit",
                LoginFailure::Backend { .. } => "backend_rejected",
                _ => "backend_unavailable",
            };
            count(if result == "limit" {
                "limit"
            } else {
                outcome.label()
            });
            audit(req, client, &outcome, result, "", started);
            (Err(failure), false)
        }
    }
}

/// The audit line: one per login attempt, never the password.  The user
/// name is Debug-escaped (a client may send anything in it).
fn audit(
    req: &LoginRequest,
    client: &ClientFacts,
    outcome: &Outcome,
    result: &str,
    backend: &str,
    started: Instant,
) {
    info!(
        user = ?req.username,
        // Set when a master user logs in for another user.
        authz_user = ?req.authzid,
        client_ip = %client.ip,
        mechanism = req.mechanism,
        passdb = outcome.passdb,
        result,
        reason = ?outcome.reason,
        cached = outcome.cached,
        delay_ms = outcome.delayed.as_millis() as u64,
        backend,
        duration_ms = started.elapsed().as_millis() as u64,
        "auth"
    );
}

/// What the gateway has to log in to a backend with.
#[derive(Debug, Clone, Copy)]
enum Creds<'a> {
    /// The password the client gave (used unless the backend is set to
    /// log in as master).
    Client(&'a Secret<Vec<u8>>),
    /// Not the user's own password (a PREAUTH session, or a master user
    /// acting for the user): only the backend's master login will do.
    MasterOnly,
}

/// Open and log in to the user's backend, trying the candidates in
/// routing order: a connect or greeting failure moves on to the next,
/// invisibly to the client; the backend's own NO is final.
async fn open_backend(
    info: &UserInfo,
    creds: Creds<'_>,
    client_id: &IdParams,
    conn: &Connection,
    runtime: &Runtime,
) -> Result<BackendConn, LoginFailure> {
    let m = metrics::get();
    let proxy_ttl = backend::proxy_ttl(client_id, runtime.config.limits.proxy_ttl);
    if proxy_ttl == 0 {
        // A proxy in front of us said no hops are left: the session has
        // gone round a loop of proxies (Dovecot's `x-proxy-ttl` guard).
        error!(user = ?info.user, "proxying appears to be looping (x-proxy-ttl reached 0); refusing");
        m.backend_connect_failures
            .with_label_values(&["-", "proxy_loop"])
            .inc();
        return Err(LoginFailure::Unavailable(
            "Proxy loop detected; contact the administrator".into(),
        ));
    }
    let max = runtime.config.limits.max_sessions_per_user;
    let Some(user_permit) = crate::limits::UserSessions::get().admit(&info.user, max) else {
        info!(user = ?info.user, max, result = "limit", "session refused: too many sessions for this user");
        return Err(LoginFailure::Limit(format!(
            "Too many sessions for this user (at most {max})"
        )));
    };
    let meta = ClientMeta {
        peer: conn.peer,
        local: conn.local,
        session_id: format!("imapgate-{}", conn.id),
        proxy_ttl,
        client_fields: backend::forwardable_id_fields(client_id),
    };
    let limits = &runtime.config.limits;
    let timeouts = backend::Timeouts {
        connect: limits.backend_connect_timeout(),
        login: limits.backend_login_timeout(),
    };
    let unavailable = || LoginFailure::Unavailable("Backend unavailable; try again later".into());
    for candidate in runtime.router.candidates(info) {
        if candidate.is_full() {
            warn!(backend = %candidate.name, max = candidate.max_connections, "backend at its connection cap; trying the next");
            m.backend_connect_failures
                .with_label_values(&[&candidate.name, "full"])
                .inc();
            continue;
        }
        let auth = match (creds, candidate.login, &candidate.master) {
            (_, BackendLogin::Master, Some(master)) | (Creds::MasterOnly, _, Some(master)) => {
                BackendAuth::Master {
                    user: info.backend_user.as_deref().unwrap_or(&info.user),
                    master,
                }
            }
            // A passdb may name other backend credentials (nginx's
            // Auth-User/Auth-Pass, passwd-file destuser=/pass=).
            (Creds::Client(password), _, _) => BackendAuth::Client {
                user: info.backend_user.as_deref().unwrap_or(&info.user),
                password: info.backend_password.as_ref().unwrap_or(password),
            },
            (Creds::MasterOnly, _, None) => {
                warn!(backend = %candidate.name, "no master user configured; cannot log in here without the user's password");
                continue;
            }
        };
        let tls = runtime.tls.backend(&candidate.name, &candidate.host);
        match backend::open(&candidate, tls.as_ref(), auth, &meta, timeouts).await {
            Ok(mut backend) => {
                backend.user_permit = Some(user_permit);
                runtime.router.health().report(&candidate.name, true, "");
                tracing::Span::current().record("backend", candidate.name.as_str());
                return Ok(backend);
            }
            Err(e) if e.try_next() => {
                m.backend_connect_failures
                    .with_label_values(&[&candidate.name, e.kind()])
                    .inc();
                runtime
                    .router
                    .health()
                    .report(&candidate.name, false, e.kind());
                warn!(backend = %candidate.name, error = %e, "backend unusable; trying the next");
            }
            Err(backend::BackendError::Rejected { code, text }) => {
                info!(user = ?info.user, backend = %candidate.name, result = "backend_rejected", "auth");
                return Err(LoginFailure::Backend { code, text });
            }
            Err(e) => {
                m.backend_connect_failures
                    .with_label_values(&[&candidate.name, e.kind()])
                    .inc();
                warn!(backend = %candidate.name, error = %e, "backend login failed");
                return Err(unavailable());
            }
        }
    }
    warn!(user = ?info.user, "no backend available");
    Err(unavailable())
}
