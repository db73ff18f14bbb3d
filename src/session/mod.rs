//! The session state machine: every connection followed through the IMAP
//! state diagram (RFC 3501 §3, RFC 9051 §3).  Pure: events in, actions out;
//! the [relay](crate::relay) does all I/O and never decides protocol.
//!
//! ```text
//!                +----------------------+
//!                |connection established|
//!                +----------------------+
//!                           ||
//!                           \/
//!         +--------------------------------------+
//!         |          server greeting             |
//!         +--------------------------------------+
//!                   || (1)       || (2)        || (3)
//!                   \/           ||            ||
//!         +-----------------+    ||            ||
//!         |Not Authenticated|    ||            ||
//!         +-----------------+    ||            ||
//!          || (7)   || (4)       ||            ||
//!          ||       \/           \/            ||
//!          ||     +----------------+           ||
//!          ||     | Authenticated  |<=++       ||
//!          ||     +----------------+  ||       ||
//!          ||       || (7)   || (5)   || (6)   ||
//!          ||       ||       \/       ||       ||
//!          ||       ||    +--------+  ||       ||
//!          ||       ||    |Selected|==++       ||
//!          ||       ||    +--------+           ||
//!          ||       ||       || (7)            ||
//!          \/       \/       \/                \/
//!         +--------------------------------------+
//!         |               Logout                 |
//!         +--------------------------------------+
//!
//!   (1) connection without pre-authentication (OK greeting)
//!   (2) pre-authenticated connection (PREAUTH greeting)
//!   (3) rejected connection (BYE greeting)
//!   (4) successful LOGIN or AUTHENTICATE command
//!   (5) successful SELECT or EXAMINE command
//!   (6) CLOSE or UNSELECT command, unsolicited CLOSED response code, or
//!       failed SELECT or EXAMINE command
//!   (7) LOGOUT command, server shutdown, or connection closed
//! ```
//!
//! Before login the gateway answers every command itself.  After login it
//! forwards commands and follows the backend's tagged answers: a SELECT is
//! only "selected" once the backend says OK for *that* tag, so pipelined
//! commands are matched to their own tags.  A command that is valid in no
//! state the session can be in (counting the outcomes of commands still in
//! flight) is answered with a tagged BAD by the gateway and never forwarded.

#[doc(hidden)]
pub mod check;
pub mod rules;

use std::sync::Arc;

use base64::Engine as _;

use crate::imap::command::{self, parse_command_head, IdParams, InitialResponse, ParseError};
use crate::imap::encode;
use crate::imap::response::Status;
use crate::imap::{capability, Command, CommandBody, Mailbox, Mechanism, Secret, Tag};
use rules::{Phase, Scope};

/// The authenticated user's canonical name.
pub type User = Arc<str>;

/// Arrows of the state diagram, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrow {
    /// (1) OK greeting.
    OkGreeting,
    /// (2) PREAUTH greeting.
    PreauthGreeting,
    /// (3) BYE greeting.
    ByeGreeting,
    /// (4) successful LOGIN or AUTHENTICATE.
    Login,
    /// (5) successful SELECT or EXAMINE.
    Select,
    /// (6) CLOSE, UNSELECT, or failed SELECT/EXAMINE.
    Deselect,
    /// (7) LOGOUT, server shutdown, or connection closed.
    Logout,
}

impl Arrow {
    /// The arrow's number in the RFC's diagram.
    pub fn number(self) -> u8 {
        match self {
            Arrow::OkGreeting => 1,
            Arrow::PreauthGreeting => 2,
            Arrow::ByeGreeting => 3,
            Arrow::Login => 4,
            Arrow::Select => 5,
            Arrow::Deselect => 6,
            Arrow::Logout => 7,
        }
    }
}

/// Where a SASL exchange handled by the gateway stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sasl {
    /// PLAIN (RFC 4616): waiting for `authzid NUL authcid NUL passwd`.
    Plain,
    /// LOGIN: waiting for the user name.
    LoginUser,
    /// LOGIN: waiting for the password.
    LoginPassword { username: Vec<u8> },
}

/// The session's state; data lives in the variant where it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    NotAuthenticated,
    /// An AUTHENTICATE exchange with the gateway is in progress.
    Authenticating {
        tag: Tag,
        step: Sasl,
    },
    /// Credentials were handed to the relay (passdb, then backend login);
    /// still not authenticated until it reports back.
    LoggingIn {
        tag: Tag,
    },
    Authenticated(User),
    Selected(User, Mailbox),
    /// IDLE accepted by the backend (`+` received); `done` once the client
    /// sent DONE and the tagged answer is awaited.
    Idle {
        tag: Tag,
        user: User,
        mailbox: Option<Mailbox>,
        done: bool,
    },
    Logout,
}

impl State {
    /// Stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            State::NotAuthenticated | State::Authenticating { .. } | State::LoggingIn { .. } => {
                "not_authenticated"
            }
            State::Authenticated(_) => "authenticated",
            State::Selected(..) => "selected",
            State::Idle { .. } => "idle",
            State::Logout => "logout",
        }
    }

    fn phase(&self) -> Phase {
        match self {
            State::Authenticated(_) | State::Idle { mailbox: None, .. } => Phase::Authenticated,
            State::Selected(..)
            | State::Idle {
                mailbox: Some(_), ..
            } => Phase::Selected,
            _ => Phase::NotAuthenticated,
        }
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            State::Authenticated(u) | State::Selected(u, _) | State::Idle { user: u, .. } => {
                Some(u)
            }
            _ => None,
        }
    }
}

/// Listener policy the not-authenticated state needs.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Cleartext credentials are acceptable on this connection right now
    /// (TLS is up, or the client is local or in a trusted network).
    pub cleartext_ok: bool,
    /// STARTTLS can still be offered.
    pub starttls_available: bool,
    /// SASL mechanisms offered.
    pub mechanisms: Vec<Mechanism>,
    /// Invalid commands tolerated before login.
    pub max_bad_commands: u32,
}

/// Credentials the relay must check (passdb) and use (backend login).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginRequest {
    pub tag: Tag,
    /// `LOGIN`, or the SASL mechanism used.
    pub mechanism: &'static str,
    pub username: String,
    pub password: Secret<Vec<u8>>,
    /// PLAIN's authorization identity when it differs from `username`:
    /// the user to act as, allowed for configured master users only.
    pub authzid: Option<String>,
}

/// Why a login did not succeed; the session turns it into the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginFailure {
    /// Wrong user or password: `NO [AUTHENTICATIONFAILED]` (RFC 5530).
    BadCredentials,
    /// Passdb or backend unreachable: `NO [UNAVAILABLE]`.
    Unavailable(String),
    /// The backend said NO; its response code and text are passed on.
    Backend { code: Option<String>, text: String },
    /// A per-user or other limit: `NO [LIMIT]`.
    Limit(String),
    /// The user may not act as the authorization identity asked for:
    /// `NO [AUTHORIZATIONFAILED]` (RFC 5530 §3).
    Authorization,
}

/// What the relay must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the client.
    Reply(Vec<u8>),
    /// Start the TLS handshake now (after STARTTLS's tagged OK is
    /// written); everything the client sent before it is discarded.
    StartTls,
    /// Check these credentials and log in to a backend, then report back
    /// with [`Session::login_finished`].
    Login(LoginRequest),
    /// The session moved along an arrow of the diagram.
    Transition(Arrow),
    /// The gateway answered BAD itself; a bounded reason for metrics.
    Refused(&'static str),
    /// Close the connection once replies are written.
    Close,
}

/// A forwarded command's effect that is still waiting for its tagged answer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Select(Mailbox),
    Deselect,
    Idle,
    Logout,
}

/// The gateway's decision about a client command after login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Forward,
    /// Answer the client with `reply` and do not forward the command;
    /// `reason` is a bounded label for metrics.
    Refuse {
        reply: Vec<u8>,
        reason: &'static str,
    },
}

/// Most state-changing commands that may await their answers at once;
/// more are refused so a pipelining client cannot grow the table.
pub const MAX_PENDING: usize = 128;

/// One client session.
#[derive(Debug)]
pub struct Session {
    state: State,
    policy: Policy,
    bad_commands: u32,
    pending: Vec<(Tag, Pending)>,
    /// Tag of a forwarded command whose synchronizing literal the backend
    /// has not yet accepted with `+`.
    awaiting_literal: Option<Tag>,
    /// Tag of the command whose unit the client is still sending.
    current: Option<Tag>,
    /// The client sent DONE for an IDLE the backend has not accepted yet
    /// (it did not wait for the `+`); that IDLE is over as soon as it starts.
    idle_done_early: bool,
    client_id: IdParams,
    /// Metric label of the last client command seen.
    last_command: &'static str,
}

impl Session {
    pub fn new(policy: Policy) -> Session {
        Session {
            state: State::NotAuthenticated,
            policy,
            bad_commands: 0,
            pending: Vec::new(),
            awaiting_literal: None,
            current: None,
            idle_done_early: false,
            client_id: None,
            last_command: "other",
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// Metric label (known command name or `other`) of the last command.
    pub fn last_command(&self) -> &'static str {
        self.last_command
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ID the client sent, if any (kept for logs and forwarding).
    pub fn client_id(&self) -> &IdParams {
        &self.client_id
    }

    /// Arrow (1): the OK greeting.  Capabilities are included so the client
    /// needs no extra round trip (RFC 9051 §7.1.1).
    pub fn greeting(&self, text: &str) -> Vec<u8> {
        let caps = self.capabilities();
        encode::untagged("OK", Some(&encode::capability_code(&caps)), text)
    }

    /// Arrow (2): the PREAUTH greeting.  The gateway has logged in to the
    /// backend for `user`; the session starts authenticated and the client
    /// gets the backend's capabilities, filtered, in the greeting.
    pub fn preauth_greeting(&mut self, user: User, backend_caps: &[String]) -> Vec<u8> {
        let text = format!("Logged in as {}", user.escape_debug());
        self.state = State::Authenticated(user);
        let caps = capability::post_login(backend_caps);
        encode::untagged("PREAUTH", Some(&encode::capability_code(&caps)), &text)
    }

    /// Arrow (3): the BYE greeting for a refused connection.
    pub fn bye_greeting(code: Option<&str>, text: &str) -> Vec<u8> {
        encode::untagged("BYE", code, text)
    }

    fn capabilities(&self) -> Vec<&'static str> {
        capability::pre_auth(capability::PreAuthOffer {
            starttls: self.policy.starttls_available,
            login_disabled: !self.policy.cleartext_ok,
            mechanisms: &self.policy.mechanisms,
        })
    }

    /// A TLS handshake after STARTTLS completed: the old capability list is
    /// void (RFC 9051 §6.2.1) and cleartext credentials are now protected.
    pub fn tls_established(&mut self) {
        self.policy.starttls_available = false;
        self.policy.cleartext_ok = true;
    }

    /// Whether the relay must hand client lines to [`Session::sasl_response`]
    /// instead of parsing them as commands.
    pub fn in_sasl(&self) -> bool {
        matches!(self.state, State::Authenticating { .. })
    }

    // ----- not authenticated: the gateway answers everything itself -----

    /// A complete command unit arrived before login.
    pub fn command(&mut self, parsed: Result<Command, ParseError>) -> Vec<Action> {
        let cmd = match parsed {
            Ok(c) => c,
            Err(e) => return self.bad(e.tag.as_ref(), "syntax", e.reason),
        };
        if self.state != State::NotAuthenticated {
            // The relay only parses commands in this state; anything else is
            // a relay bug, answered safely.
            return self.bad(Some(&cmd.tag), "wrong_state", "command not expected now");
        }
        let tag = cmd.tag;
        self.last_command = rules::metric_name(cmd.body.name());
        let ok = |text: &str| Action::Reply(encode::tagged(&tag, Status::Ok, None, text));
        match cmd.body {
            CommandBody::Capability => vec![
                Action::Reply(encode::capability(&self.capabilities())),
                ok("CAPABILITY completed"),
            ],
            CommandBody::Noop => vec![ok("NOOP completed")],
            CommandBody::Logout => self.logout(&tag),
            CommandBody::Id(params) => {
                self.client_id = params;
                vec![
                    Action::Reply(encode::id_response(&[
                        ("name", "imapgate"),
                        ("version", env!("CARGO_PKG_VERSION")),
                    ])),
                    ok("ID completed"),
                ]
            }
            CommandBody::StartTls => {
                if self.policy.starttls_available {
                    vec![ok("Begin TLS negotiation now"), Action::StartTls]
                } else {
                    self.bad(
                        Some(&tag),
                        "wrong_state",
                        "STARTTLS is not available on this connection",
                    )
                }
            }
            CommandBody::Login { username, password } => {
                if let Some(refusal) = self.cleartext_refusal(&tag) {
                    return refusal;
                }
                self.login(tag, "LOGIN", username, password)
            }
            CommandBody::Authenticate { mechanism, initial } => {
                self.authenticate(tag, mechanism, initial)
            }
            body => {
                let name = body.name().to_owned();
                let scope = rules::scope(&name);
                let text = rules::refusal(&name, scope, Phase::NotAuthenticated);
                self.bad(Some(&tag), "wrong_state", &text)
            }
        }
    }

    /// A tagged or untagged BAD; too many of them before login end the
    /// connection (a client that keeps sending garbage is not a client).
    fn bad(&mut self, tag: Option<&Tag>, reason: &'static str, text: &str) -> Vec<Action> {
        self.bad_commands += 1;
        let reply = match tag {
            Some(t) => encode::tagged(t, Status::Bad, None, text),
            None => encode::untagged_bad(text),
        };
        let mut actions = vec![Action::Reply(reply), Action::Refused(reason)];
        if self.bad_commands >= self.policy.max_bad_commands {
            actions.push(Action::Reply(encode::untagged(
                "BYE",
                None,
                "Too many invalid commands",
            )));
            actions.extend(self.enter_logout());
        }
        actions
    }

    fn logout(&mut self, tag: &Tag) -> Vec<Action> {
        let mut actions = vec![
            Action::Reply(encode::untagged("BYE", None, "Logging out")),
            Action::Reply(encode::tagged(tag, Status::Ok, None, "LOGOUT completed")),
        ];
        actions.extend(self.enter_logout());
        actions
    }

    fn enter_logout(&mut self) -> Vec<Action> {
        self.state = State::Logout;
        vec![Action::Transition(Arrow::Logout), Action::Close]
    }

    /// `NO [PRIVACYREQUIRED]` when cleartext credentials are not acceptable
    /// here (RFC 5530 §3, RFC 2595 §3.2).
    fn cleartext_refusal(&mut self, tag: &Tag) -> Option<Vec<Action>> {
        (!self.policy.cleartext_ok).then(|| {
            vec![Action::Reply(encode::tagged(
                tag,
                Status::No,
                Some("PRIVACYREQUIRED"),
                "Cleartext authentication is disabled; use TLS (STARTTLS or port 993)",
            ))]
        })
    }

    fn login(
        &mut self,
        tag: Tag,
        mechanism: &'static str,
        username: Vec<u8>,
        password: Secret<Vec<u8>>,
    ) -> Vec<Action> {
        self.login_as(tag, mechanism, username, password, None)
    }

    fn login_as(
        &mut self,
        tag: Tag,
        mechanism: &'static str,
        username: Vec<u8>,
        password: Secret<Vec<u8>>,
        authzid: Option<Vec<u8>>,
    ) -> Vec<Action> {
        let failed = |tag: &Tag| {
            vec![Action::Reply(encode::tagged(
                tag,
                Status::No,
                Some("AUTHENTICATIONFAILED"),
                "Authentication failed",
            ))]
        };
        let Ok(username) = String::from_utf8(username) else {
            return failed(&tag);
        };
        let authzid = match authzid.map(String::from_utf8) {
            None => None,
            Some(Ok(a)) => Some(a),
            Some(Err(_)) => return failed(&tag),
        };
        self.state = State::LoggingIn { tag: tag.clone() };
        vec![Action::Login(LoginRequest {
            tag,
            mechanism,
            username,
            password,
            authzid,
        })]
    }

    fn authenticate(
        &mut self,
        tag: Tag,
        mechanism: String,
        initial: Option<InitialResponse>,
    ) -> Vec<Action> {
        if let Some(refusal) = self.cleartext_refusal(&tag) {
            return refusal;
        }
        let offered =
            Mechanism::from_name(&mechanism).filter(|m| self.policy.mechanisms.contains(m));
        let Some(offered) = offered else {
            let names: Vec<&str> = self.policy.mechanisms.iter().map(|m| m.as_str()).collect();
            return vec![Action::Reply(encode::tagged(
                &tag,
                Status::No,
                None,
                &format!(
                    "Unsupported authentication mechanism; offered: {}",
                    names.join(" ")
                ),
            ))];
        };
        let step = match offered {
            Mechanism::Plain => Sasl::Plain,
            Mechanism::Login => Sasl::LoginUser,
        };
        self.state = State::Authenticating { tag, step };
        match initial {
            // RFC 4959 §3: "=" is an empty initial response.
            Some(InitialResponse::Empty) => self.sasl_decoded(Vec::new()),
            Some(InitialResponse::Base64(b64)) => self.sasl_response(b64.expose()),
            None => vec![Action::Reply(self.sasl_challenge())],
        }
    }

    fn sasl_challenge(&self) -> Vec<u8> {
        match &self.state {
            // LOGIN's customary prompts, base64 of "Username:" / "Password:".
            State::Authenticating {
                step: Sasl::LoginUser,
                ..
            } => b"+ VXNlcm5hbWU6\r\n".to_vec(),
            State::Authenticating {
                step: Sasl::LoginPassword { .. },
                ..
            } => b"+ UGFzc3dvcmQ6\r\n".to_vec(),
            _ => b"+ \r\n".to_vec(),
        }
    }

    /// A client line during AUTHENTICATE (RFC 9051 §6.2.2): base64, or `*`
    /// to cancel.
    pub fn sasl_response(&mut self, line: &[u8]) -> Vec<Action> {
        let State::Authenticating { tag, .. } = &self.state else {
            return self.bad(
                None,
                "wrong_state",
                "no authentication exchange in progress",
            );
        };
        let tag = tag.clone();
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"*" {
            self.state = State::NotAuthenticated;
            return self.bad(Some(&tag), "auth_cancelled", "AUTHENTICATE cancelled");
        }
        match base64::engine::general_purpose::STANDARD.decode(line) {
            Ok(decoded) => self.sasl_decoded(decoded),
            Err(_) => {
                self.state = State::NotAuthenticated;
                self.bad(
                    Some(&tag),
                    "syntax",
                    "Invalid base64 in authentication response",
                )
            }
        }
    }

    fn sasl_decoded(&mut self, decoded: Vec<u8>) -> Vec<Action> {
        let State::Authenticating { tag, step } =
            std::mem::replace(&mut self.state, State::NotAuthenticated)
        else {
            return Vec::new();
        };
        match step {
            Sasl::Plain => {
                // RFC 4616 §2: message = [authzid] UTF8NUL authcid UTF8NUL passwd
                let mut parts = decoded.splitn(3, |&b| b == 0);
                let (Some(authzid), Some(authcid), Some(passwd)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return self.bad(Some(&tag), "syntax", "Malformed PLAIN response");
                };
                // An authorization identity other than the authentication
                // identity asks to act as another user (§2): only a master
                // user may, which the relay decides once the password is
                // verified.
                let authzid = (!authzid.is_empty() && authzid != authcid).then(|| authzid.to_vec());
                let (authcid, passwd) = (authcid.to_vec(), Secret::new(passwd.to_vec()));
                self.login_as(tag, "PLAIN", authcid, passwd, authzid)
            }
            Sasl::LoginUser => {
                self.state = State::Authenticating {
                    tag,
                    step: Sasl::LoginPassword { username: decoded },
                };
                vec![Action::Reply(self.sasl_challenge())]
            }
            Sasl::LoginPassword { username } => {
                self.login(tag, "LOGIN", username, Secret::new(decoded))
            }
        }
    }

    /// The relay finished a [`LoginRequest`]: arrow (4) on success, back to
    /// not authenticated on failure.
    pub fn login_finished<C: AsRef<[String]>>(
        &mut self,
        result: Result<(User, C), LoginFailure>,
    ) -> Vec<Action> {
        let State::LoggingIn { tag } = std::mem::replace(&mut self.state, State::NotAuthenticated)
        else {
            return Vec::new();
        };
        match result {
            Ok((user, backend_caps)) => {
                self.state = State::Authenticated(user);
                let caps = capability::post_login(backend_caps.as_ref());
                vec![
                    Action::Reply(encode::tagged(
                        &tag,
                        Status::Ok,
                        Some(&encode::capability_code(&caps)),
                        "Logged in",
                    )),
                    Action::Transition(Arrow::Login),
                ]
            }
            Err(failure) => {
                let (code, text) = match &failure {
                    LoginFailure::BadCredentials => (
                        Some("AUTHENTICATIONFAILED".to_owned()),
                        "Authentication failed".to_owned(),
                    ),
                    LoginFailure::Unavailable(why) => (Some("UNAVAILABLE".to_owned()), why.clone()),
                    LoginFailure::Backend { code, text } => (code.clone(), text.clone()),
                    LoginFailure::Limit(why) => (Some("LIMIT".to_owned()), why.clone()),
                    LoginFailure::Authorization => (
                        Some("AUTHORIZATIONFAILED".to_owned()),
                        "Not authorized to act as that user".to_owned(),
                    ),
                };
                vec![Action::Reply(encode::tagged(
                    &tag,
                    Status::No,
                    code.as_deref(),
                    &text,
                ))]
            }
        }
    }

    // ----- after login: forward and follow the backend's answers -----

    /// The first line of a client unit after login.  `sync_literal` says the
    /// line announces a synchronizing literal.
    pub fn client_command(&mut self, line: &[u8], sync_literal: bool) -> Verdict {
        if let State::Idle {
            done: done @ false, ..
        } = &mut self.state
        {
            // RFC 2177: the only thing a client sends during IDLE is DONE.
            // The backend judges it; the IDLE ends with its tagged answer.
            *done = true;
            return Verdict::Forward;
        }
        if !self.idle_done_early
            && self.pending.iter().any(|(_, p)| *p == Pending::Idle)
            && line.trim_ascii_end().eq_ignore_ascii_case(b"DONE")
        {
            // DONE pipelined behind IDLE, before the backend's `+`: the
            // backend reads it as the end of that IDLE (RFC 2177 §3), so it
            // is forwarded, not refused as a malformed command.
            self.idle_done_early = true;
            return Verdict::Forward;
        }
        let (tag, name) = match parse_command_head(line) {
            Ok(h) => h,
            Err(e) => {
                let text = format!("Invalid command: {}", e.reason);
                self.last_command = "other";
                return Verdict::Refuse {
                    reply: match e.tag {
                        Some(t) => encode::tagged(&t, Status::Bad, None, &text),
                        None => encode::untagged_bad(&text),
                    },
                    reason: "syntax",
                };
            }
        };
        self.last_command = rules::metric_name(&name);
        let scope = rules::scope(&name);
        let phases = self.possible_phases();
        if !phases.iter().any(|&p| rules::allowed(scope, p)) {
            let text = rules::refusal(&name, scope, self.state.phase());
            let reason = if matches!(scope, Scope::Refused(_)) {
                "unsupported"
            } else {
                "wrong_state"
            };
            return Verdict::Refuse {
                reply: encode::tagged(&tag, Status::Bad, None, &text),
                reason,
            };
        }
        let pending = match name.as_str() {
            "SELECT" | "EXAMINE" => Some(Pending::Select(select_mailbox(line, name.len()))),
            "CLOSE" | "UNSELECT" => Some(Pending::Deselect),
            "IDLE" => Some(Pending::Idle),
            "LOGOUT" => Some(Pending::Logout),
            _ => None,
        };
        if let Some(p) = pending {
            if self.pending.len() >= MAX_PENDING {
                return Verdict::Refuse {
                    reply: encode::tagged(
                        &tag,
                        Status::Bad,
                        None,
                        "Too many state-changing commands in flight; wait for their answers",
                    ),
                    reason: "too_many_pending",
                };
            }
            self.pending.push((tag.clone(), p));
        }
        if sync_literal {
            self.awaiting_literal = Some(tag.clone());
        }
        self.current = Some(tag);
        Verdict::Forward
    }

    /// A later line of the current client unit announces a literal.
    pub fn client_literal_announced(&mut self, sync: bool) {
        if sync {
            self.awaiting_literal = self.current.clone();
        }
    }

    /// Client literal payload is flowing: the backend accepted it.
    pub fn client_literal_data(&mut self) {
        self.awaiting_literal = None;
    }

    /// The backend sent a continuation request (`+`).
    pub fn backend_continuation(&mut self) {
        if self.awaiting_literal.take().is_some() {
            return;
        }
        // Otherwise it accepts an IDLE still pending (RFC 2177 "+ idling").
        let Some(pos) = self.pending.iter().position(|(_, p)| *p == Pending::Idle) else {
            return;
        };
        let tag = self.pending[pos].0.clone();
        let (user, mailbox) = match &self.state {
            State::Authenticated(u) => (u.clone(), None),
            State::Selected(u, m) => (u.clone(), Some(m.clone())),
            _ => return,
        };
        self.state = State::Idle {
            tag,
            user,
            mailbox,
            done: std::mem::take(&mut self.idle_done_early),
        };
    }

    /// A tagged answer from the backend.  Returns the arrow taken, if any,
    /// and whether the client's announced synchronizing literal was refused
    /// (so the relay must stop expecting its payload).
    pub fn backend_tagged(&mut self, tag: &str, status: Status) -> (Option<Arrow>, bool) {
        let literal_refused = self
            .awaiting_literal
            .as_ref()
            .is_some_and(|t| t.as_str() == tag);
        if literal_refused {
            self.awaiting_literal = None;
        }
        let Some(pos) = self.pending.iter().position(|(t, _)| t.as_str() == tag) else {
            return (None, literal_refused);
        };
        let (_, pending) = self.pending.remove(pos);
        let user = match self.state.user() {
            Some(u) => u.clone(),
            None => return (None, literal_refused),
        };
        let arrow = match (pending, status) {
            (Pending::Select(mailbox), Status::Ok) => {
                self.state = State::Selected(user, mailbox);
                Some(Arrow::Select)
            }
            // RFC 9051 §6.3.2: a failed SELECT closes the selected mailbox.
            (Pending::Select(_), Status::No) if matches!(self.state, State::Selected(..)) => {
                self.state = State::Authenticated(user);
                Some(Arrow::Deselect)
            }
            (Pending::Deselect, Status::Ok) if matches!(self.state, State::Selected(..)) => {
                self.state = State::Authenticated(user);
                Some(Arrow::Deselect)
            }
            (Pending::Idle, _) => {
                self.idle_done_early = false;
                if let State::Idle { mailbox, .. } = &self.state {
                    self.state = match mailbox.clone() {
                        Some(m) => State::Selected(user, m),
                        None => State::Authenticated(user),
                    };
                }
                None
            }
            (Pending::Logout, Status::Ok) => {
                self.state = State::Logout;
                Some(Arrow::Logout)
            }
            _ => None,
        };
        (arrow, literal_refused)
    }

    /// An untagged `OK [CLOSED]` from the backend (RFC 9051 §7.1): the
    /// selected mailbox was closed — arrow (6), "unsolicited CLOSED response
    /// code".  A SELECT in flight may select the next one on its OK.
    pub fn backend_mailbox_closed(&mut self) -> Option<Arrow> {
        match &self.state {
            State::Selected(user, _) => {
                self.state = State::Authenticated(user.clone());
                Some(Arrow::Deselect)
            }
            _ => None,
        }
    }

    /// An untagged BYE from the backend: the session is logging out.
    pub fn backend_bye(&mut self) -> Option<Arrow> {
        if self.state == State::Logout {
            return None;
        }
        self.state = State::Logout;
        Some(Arrow::Logout)
    }

    /// The connection ended (either side, or the gateway closed it).
    pub fn closed(&mut self) -> Option<Arrow> {
        self.backend_bye()
    }

    /// States the session may be in once the commands in flight are
    /// answered; a command is refused only if valid in none of them, so a
    /// pipelined `SELECT` + `FETCH` is not refused early.
    fn possible_phases(&self) -> Vec<Phase> {
        let mut phases = vec![self.state.phase()];
        for (_, p) in &self.pending {
            let phase = match p {
                Pending::Select(_) => Phase::Selected,
                Pending::Deselect => Phase::Authenticated,
                _ => continue,
            };
            if !phases.contains(&phase) {
                phases.push(phase);
            }
        }
        phases
    }
}

/// The mailbox named on a SELECT/EXAMINE line, when it is there (a literal
/// mailbox name is not on the first line; it is only needed for logs).
fn select_mailbox(line: &[u8], name_len: usize) -> Mailbox {
    let after_tag = line
        .iter()
        .position(|&c| c == b' ')
        .map(|i| &line[i + 1..])
        .unwrap_or(&[]);
    let args = after_tag.get(name_len..).unwrap_or(&[]);
    match args.strip_prefix(b" ").map(command::mailbox) {
        Some(Ok((_, m))) => m,
        _ => Mailbox::Other(Vec::new()),
    }
}

#[cfg(test)]
mod tests;
