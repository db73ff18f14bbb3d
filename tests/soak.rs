//! Issue 11, load and time: many sessions doing mixed commands through the built `imapgate`
//! against a real Dovecot, with the config reloaded (SIGHUP) on a timer. At the end:
//! - zero protocol errors (every command got the answer it should, no BYE, no timeout);
//! - every message APPENDed is fetched back byte for byte (bodies hold lines that look
//!   like responses, so a framing slip shows);
//! - every reload was applied;
//! - the gateway's open descriptors are back at their starting level once the clients
//!   have left, and its resident memory within 8 MiB of it; a second, shorter wave of the
//!   same load then adds nothing (at most 2 MiB): what the allocator kept from the peak is
//!   reused, not leaked.
//!
//! `soak_short` (50 sessions, 20 s, a reload every 5 s) runs with the normal tests.
//! `soak_full` is ignored by default; `scripts/soak` runs it with `SOAK_SESSIONS` (500),
//! `SOAK_SECS` (600) and `SOAK_RELOAD_SECS` (30).
//!
//! Clients are plain threads with the harness's blocking client; a panic in one (a NO
//! where OK was due, a timeout, a mismatch) is one protocol error, reported with its
//! message.

mod common;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::procstat;
use common::session::with_limits;
use common::{eventually, free_port, gateway_config, Client, Dovecot, Gateway};

/// Users the sessions are spread over (several sessions share each mailbox).
const USERS: usize = 50;

struct Params {
    sessions: usize,
    duration: Duration,
    reload_every: Duration,
    /// Pause between a session's commands, picked uniformly in this range (ms).
    think_ms: (u64, u64),
    /// Sessions are opened over this long, not all at once.
    ramp: Duration,
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn soak_short() {
    soak(Params {
        sessions: 50,
        duration: Duration::from_secs(20),
        reload_every: Duration::from_secs(5),
        think_ms: (20, 200),
        ramp: Duration::from_secs(2),
    });
}

/// The full soak: `scripts/soak` (defaults 500 sessions, 10 minutes, reload every 30 s).
#[test]
#[ignore = "takes 10 minutes; run with scripts/soak"]
fn soak_full() {
    let sessions = env_or("SOAK_SESSIONS", 500) as usize;
    soak(Params {
        sessions,
        duration: Duration::from_secs(env_or("SOAK_SECS", 600)),
        reload_every: Duration::from_secs(env_or("SOAK_RELOAD_SECS", 30)),
        think_ms: (
            env_or("SOAK_THINK_MIN_MS", 200),
            env_or("SOAK_THINK_MAX_MS", 2000),
        ),
        ramp: Duration::from_secs((sessions as u64 / 25).max(2)),
    });
}

// ---------------------------------------------------------------------------------------
// Driver

/// What the gateway process looked like at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    Sample {
        rss_kib: procstat::rss_kib(pid),
        fds: procstat::open_fds(pid),
    }
}

fn soak(p: Params) {
    let mut builder = Dovecot::builder();
    for u in 0..USERS {
        builder = builder.user(&format!("soak{u}"), &format!("pw{u}"));
    }
    let dovecot = builder.start();
    let config = gateway_config(free_port(), dovecot.port(), &dovecot.users_file())
        + "\n[health]\ninterval_secs = 5\n";
    // Info, not debug: a debug line per command would make the log the bottleneck.
    let config = config.replace("level = \"debug\"", "level = \"info\"");
    let gw = Gateway::start(&config);

    // Warm up every path once (passdb file, hash pool, backend login, relay) so lazily
    // built state is in the baseline, then let it settle.
    let warm = Worker::run(0, gw.port(), "soak0", "pw0", Instant::now(), (0, 0), 1);
    assert!(warm.errors.is_empty(), "warm-up failed: {:?}", warm.errors);
    thread::sleep(Duration::from_secs(2));
    let before = sample(gw.pid());

    // The soak proper, then a second, shorter wave of the same load: the allocator keeps
    // some of what a peak needed, so "back to the start" for memory means within a few
    // MiB of it, and a second wave adding nothing more (a leak would grow with every
    // session and command, wave after wave).
    let mut reloads = Reloads::new(&gw, config.clone(), p.reload_every);
    let first = wave(&gw, &p, p.duration, &mut reloads);
    let fds_back = eventually(Duration::from_secs(30), || {
        procstat::open_fds(gw.pid()) <= before.fds
    });
    thread::sleep(Duration::from_secs(3));
    let after = sample(gw.pid());
    let second = wave(
        &gw,
        &p,
        (p.duration / 10).max(Duration::from_secs(5)),
        &mut reloads,
    );
    let fds_back_again = eventually(Duration::from_secs(30), || {
        procstat::open_fds(gw.pid()) <= before.fds
    });
    thread::sleep(Duration::from_secs(3));
    let again = sample(gw.pid());

    let log = gw.log();
    let applied = log.matches("config reloaded").count();
    let mut report = String::new();
    for (name, w) in [("soak", &first), ("second wave", &second)] {
        writeln!(
            report,
            "{name}: {} sessions, {:.0} s, {} commands, {} APPENDs ({} fetched back \
             identical), {} reconnects, {} errors",
            p.sessions,
            w.ran.as_secs_f64(),
            w.ops,
            w.appended,
            w.verified,
            w.reconnects,
            w.errors.len()
        )
        .expect("write");
    }
    writeln!(
        report,
        "{} reloads ({applied} applied)\n\
         gateway RSS KiB: before {}, peak {}, after {}; second wave peak {}, after {}\n\
         gateway open fds: before {}, peak {}, after {}; second wave peak {}, after {}",
        reloads.sent,
        before.rss_kib,
        first.peak.rss_kib,
        after.rss_kib,
        second.peak.rss_kib,
        again.rss_kib,
        before.fds,
        first.peak.fds,
        after.fds,
        second.peak.fds,
        again.fds,
    )
    .expect("write");
    eprintln!("{report}");
    let errors: Vec<&String> = first.errors.iter().chain(&second.errors).collect();
    assert!(
        errors.is_empty(),
        "{} protocol errors, first ones:\n{}\n{report}",
        errors.len(),
        errors
            .iter()
            .take(10)
            .map(|e| e.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for w in [&first, &second] {
        assert_eq!(
            w.appended, w.verified,
            "not every APPEND was fetched back\n{report}"
        );
        assert!(w.appended > 0, "no APPEND happened\n{report}");
    }
    assert_eq!(applied, reloads.sent, "not every reload applied\n{report}");
    assert!(
        !log.contains("panicked") && !log.contains(" ERROR "),
        "errors in the gateway log:\n{}",
        log.lines()
            .filter(|l| l.contains("panicked") || l.contains(" ERROR "))
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        fds_back && fds_back_again,
        "descriptors not released\n{report}"
    );
    assert!(
        after.rss_kib <= before.rss_kib + 8 * 1024,
        "RSS more than 8 MiB over the start after the clients left\n{report}"
    );
    assert!(
        again.rss_kib <= after.rss_kib + 2 * 1024,
        "RSS grew again with a second wave of the same load: a leak\n{report}"
    );
}

/// SIGHUP on a timer, each time with a changed config (so a new runtime is built).
struct Reloads<'g> {
    gw: &'g Gateway,
    config: String,
    every: Duration,
    next: Instant,
    sent: usize,
}

impl<'g> Reloads<'g> {
    fn new(gw: &'g Gateway, config: String, every: Duration) -> Self {
        Reloads {
            gw,
            config,
            every,
            next: Instant::now() + every,
            sent: 0,
        }
    }

    fn tick(&mut self) {
        if Instant::now() < self.next {
            return;
        }
        let bad = if self.sent % 2 == 0 { "11" } else { "10" };
        std::fs::write(
            self.gw.config_path(),
            with_limits(&self.config, &[("max_bad_commands", bad)]),
        )
        .expect("rewrite config");
        self.gw.signal("HUP");
        self.sent += 1;
        self.next += self.every;
    }
}

/// What one wave of sessions did.
struct Wave {
    ran: Duration,
    ops: usize,
    appended: usize,
    verified: usize,
    reconnects: usize,
    errors: Vec<String>,
    peak: Sample,
}

/// `p.sessions` sessions for `duration` (after the ramp), reloading meanwhile; returns
/// once every session has ended.
fn wave(gw: &Gateway, p: &Params, duration: Duration, reloads: &mut Reloads) -> Wave {
    let port = gw.port();
    let started = Instant::now();
    let deadline = started + p.ramp + duration;
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let ops = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..p.sessions {
        let (errors, ops) = (errors.clone(), ops.clone());
        let user = i % USERS;
        let think = p.think_ms;
        let start_at = started + p.ramp.mul_f64(i as f64 / p.sessions as f64);
        workers.push(
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    thread::sleep(start_at.saturating_duration_since(Instant::now()));
                    let mut r = Worker::run(
                        i,
                        port,
                        &format!("soak{user}"),
                        &format!("pw{user}"),
                        deadline,
                        think,
                        0x9e37_79b9_7f4a_7c15
                            ^ (i as u64 + 1)
                            ^ started.elapsed().as_nanos() as u64,
                    );
                    ops.fetch_add(r.ops, Ordering::Relaxed);
                    errors
                        .lock()
                        .expect("errors")
                        .extend(std::mem::take(&mut r.errors));
                    r
                })
                .expect("spawn worker"),
        );
    }
    let mut peak = Sample::default();
    while workers.iter().any(|w| !w.is_finished()) {
        thread::sleep(Duration::from_millis(500));
        let s = sample(gw.pid());
        peak.rss_kib = peak.rss_kib.max(s.rss_kib);
        peak.fds = peak.fds.max(s.fds);
        if Instant::now() < deadline {
            reloads.tick();
        }
    }
    let mut w = Wave {
        ran: started.elapsed(),
        ops: 0,
        appended: 0,
        verified: 0,
        reconnects: 0,
        errors: Vec::new(),
        peak,
    };
    for h in workers {
        match h.join() {
            Ok(r) => {
                w.appended += r.appended;
                w.verified += r.verified;
                w.reconnects += r.reconnects;
            }
            Err(e) => errors
                .lock()
                .expect("errors")
                .push(format!("worker died: {}", panic_text(&e))),
        }
    }
    w.ops = ops.load(Ordering::Relaxed);
    w.errors = std::mem::take(&mut *errors.lock().expect("errors"));
    w
}

fn panic_text(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

// ---------------------------------------------------------------------------------------
// One session's life

/// xorshift64: deterministic per worker, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

#[derive(Default)]
struct Report {
    ops: usize,
    appended: usize,
    verified: usize,
    reconnects: usize,
    errors: Vec<String>,
}

struct Worker {
    id: usize,
    port: u16,
    user: String,
    pass: String,
    rng: Rng,
    tag: u64,
    /// (uid, body) of every message this worker appended.
    mine: Vec<(u64, Vec<u8>)>,
    report: Report,
}

impl Worker {
    /// Run one session (reconnecting now and then) until `deadline`, then fetch back every
    /// message it appended. A `deadline` in the past does one round of each command.
    fn run(
        id: usize,
        port: u16,
        user: &str,
        pass: &str,
        deadline: Instant,
        think_ms: (u64, u64),
        seed: u64,
    ) -> Report {
        let mut w = Worker {
            id,
            port,
            user: user.into(),
            pass: pass.into(),
            rng: Rng(seed),
            tag: 0,
            mine: Vec::new(),
            report: Report::default(),
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            w.session(deadline, think_ms)
        }));
        if let Err(e) = result {
            w.report
                .errors
                .push(format!("session {} ({}): {}", w.id, w.user, panic_text(&e)));
        }
        std::mem::take(&mut w.report)
    }

    fn tag(&mut self) -> String {
        self.tag += 1;
        format!("w{}t{}", self.id, self.tag)
    }

    fn connect(&mut self) -> Client {
        let mut c = Client::connect(self.port);
        c.set_timeout(Duration::from_secs(60));
        c.greeting();
        let t = self.tag();
        c.send(&format!("{t} LOGIN {} {}\r\n", self.user, self.pass));
        c.expect_ok(&t);
        let t = self.tag();
        c.send(&format!("{t} SELECT INBOX\r\n"));
        c.expect_ok(&t);
        c
    }

    fn session(&mut self, deadline: Instant, think_ms: (u64, u64)) {
        let mut c = self.connect();
        let warm_up = Instant::now() >= deadline;
        let mut round = 0;
        loop {
            let op = if warm_up {
                round
            } else {
                self.rng.below(100) as usize
            };
            round += 1;
            if warm_up && round > 100 {
                break;
            }
            if !warm_up && Instant::now() >= deadline {
                break;
            }
            self.op(&mut c, op);
            self.report.ops += 1;
            if !warm_up {
                let ms = self.rng.between(think_ms.0, think_ms.1);
                thread::sleep(Duration::from_millis(ms));
            }
            if op >= 97 && !warm_up {
                // Churn: log out and come back.
                let t = self.tag();
                c.send(&format!("{t} LOGOUT\r\n"));
                c.expect_ok(&t);
                c.expect_eof();
                c = self.connect();
                self.report.reconnects += 1;
            }
        }
        // Every message this session appended, fetched back identical.
        for i in 0..self.mine.len() {
            self.verify(&mut c, i);
            self.report.verified += 1;
        }
        let t = self.tag();
        c.send(&format!("{t} LOGOUT\r\n"));
        c.expect_ok(&t);
    }

    /// One command chosen by `op` (0..100).
    fn op(&mut self, c: &mut Client, op: usize) {
        match op {
            0..=19 => {
                let t = self.tag();
                c.send(&format!("{t} NOOP\r\n"));
                c.expect_ok(&t);
            }
            20..=34 => self.append(c),
            35..=49 => {
                if self.mine.is_empty() {
                    self.append(c);
                } else {
                    let i = self.rng.below(self.mine.len() as u64) as usize;
                    self.verify(c, i);
                }
            }
            50..=57 => {
                let t = self.tag();
                c.send(&format!("{t} STATUS INBOX (MESSAGES UIDNEXT UNSEEN)\r\n"));
                c.expect_ok(&t);
            }
            58..=64 => {
                let Some((uid, _)) = self.mine.last().cloned() else {
                    return self.append(c);
                };
                let t = self.tag();
                c.send(&format!("{t} UID SEARCH UID {uid}\r\n"));
                let lines = c.expect_ok(&t);
                assert!(
                    lines
                        .iter()
                        .any(|l| l.starts_with("* SEARCH")
                            && l.split(' ').any(|w| w == uid.to_string())),
                    "UID SEARCH for {uid}: {lines:?}"
                );
            }
            65..=69 => {
                let t = self.tag();
                c.send(&format!("{t} LIST \"\" \"*\"\r\n"));
                c.expect_ok(&t);
            }
            70..=75 => {
                let Some((uid, _)) = self.mine.last().cloned() else {
                    return self.append(c);
                };
                let t = self.tag();
                c.send(&format!("{t} UID STORE {uid} +FLAGS (\\Flagged)\r\n"));
                c.expect_ok(&t);
            }
            76..=81 => {
                // IDLE a little, then DONE.
                let t = self.tag();
                c.send(&format!("{t} IDLE\r\n"));
                let (_, plus) = c.expect_response(|r| r.starts_with('+'));
                assert!(plus.starts_with('+'));
                thread::sleep(Duration::from_millis(self.rng.between(50, 400)));
                c.send("DONE\r\n");
                c.expect_ok(&t);
            }
            82..=86 => {
                // Pipelined: three commands in one write, answered in order.
                let (a, b, d) = (self.tag(), self.tag(), self.tag());
                c.send(&format!(
                    "{a} NOOP\r\n{b} UID FETCH 1:* (FLAGS)\r\n{d} EXAMINE INBOX\r\n"
                ));
                c.expect_ok(&a);
                c.expect_ok(&b);
                c.expect_ok(&d);
                let t = self.tag();
                c.send(&format!("{t} SELECT INBOX\r\n"));
                c.expect_ok(&t);
            }
            87..=91 => {
                let t = self.tag();
                c.send(&format!("{t} CAPABILITY\r\n"));
                let lines = c.expect_ok(&t);
                assert!(lines.iter().any(|l| l.starts_with("* CAPABILITY")));
            }
            92..=94 => {
                let t = self.tag();
                c.send(&format!("{t} ID (\"name\" \"soak\" \"version\" \"1\")\r\n"));
                c.expect_ok(&t);
            }
            _ => {
                // A command the gateway refuses itself after login.
                let t = self.tag();
                c.send(&format!("{t} LOGIN someone else\r\n"));
                let (_, tagged) = c.expect_tagged(&t);
                assert!(tagged.starts_with(&format!("{t} BAD")), "{tagged:?}");
            }
        }
    }

    /// A message of 1–16 KB, now and then 100–400 KB, whose body holds lines that look
    /// like responses and literal announcements.
    fn message(&mut self) -> Vec<u8> {
        let n = self.mine.len();
        let mut m = format!(
            "From: soak{id}@imapgate.test\r\nTo: soak@imapgate.test\r\n\
             Message-ID: <soak-{id}-{n}-{r}@imapgate.test>\r\nSubject: soak {id} {n}\r\n\r\n",
            id = self.id,
            r = self.rng.next()
        )
        .into_bytes();
        let size = if self.rng.below(20) == 0 {
            self.rng.between(100_000, 400_000)
        } else {
            self.rng.between(1_000, 16_000)
        } as usize;
        let lines: [&[u8]; 6] = [
            b"A001 OK FETCH completed\r\n",
            b"* BYE [UNAVAILABLE] not really\r\n",
            b"* 1 FETCH (BODY[] {42}\r\n",
            b"+ go ahead\r\n",
            b"~{7}\r\n",
            b".\r\n",
        ];
        while m.len() < size {
            if self.rng.below(4) == 0 {
                m.extend_from_slice(lines[self.rng.below(lines.len() as u64) as usize]);
            } else {
                let len = self.rng.between(1, 76) as usize;
                for _ in 0..len {
                    m.push(b' ' + (self.rng.below(95) as u8));
                }
                m.extend_from_slice(b"\r\n");
            }
        }
        m
    }

    fn append(&mut self, c: &mut Client) {
        let body = self.message();
        let t = self.tag();
        // Synchronizing or non-synchronizing (LITERAL+), at random.
        if self.rng.below(2) == 0 {
            c.send(&format!("{t} APPEND INBOX {{{}}}\r\n", body.len()));
            let (_, plus) = c.expect_response(|r| r.starts_with('+') || r.starts_with(&t));
            assert!(plus.starts_with('+'), "APPEND not accepted: {plus:?}");
        } else {
            c.send(&format!("{t} APPEND INBOX {{{}+}}\r\n", body.len()));
        }
        c.send_bytes(&body);
        c.send("\r\n");
        let lines = c.expect_ok(&t);
        let tagged = lines.last().expect("tagged");
        let uid = tagged
            .split_once("[APPENDUID ")
            .and_then(|(_, r)| r.split(']').next())
            .and_then(|r| r.split(' ').nth(1))
            .and_then(|u| u.parse().ok())
            .unwrap_or_else(|| panic!("no APPENDUID in {tagged:?}"));
        self.mine.push((uid, body));
        self.report.appended += 1;
    }

    /// UID FETCH message `i` of this worker and compare it byte for byte.
    fn verify(&mut self, c: &mut Client, i: usize) {
        let (uid, body) = self.mine[i].clone();
        let t = self.tag();
        c.send(&format!("{t} UID FETCH {uid} BODY.PEEK[]\r\n"));
        let mut got = None;
        loop {
            let line = c.line();
            if line.starts_with(&format!("{t} ")) {
                assert!(line.starts_with(&format!("{t} OK")), "{line:?}");
                break;
            }
            if let Some(n) = literal_len(&line) {
                let data = c.read_exact(n);
                if line.starts_with("* ")
                    && line.contains("FETCH")
                    && line.contains(&format!("UID {uid} "))
                {
                    got = Some(data);
                }
                // The rest of the response after the literal.
                let _ = c.line();
            }
        }
        let got = got.unwrap_or_else(|| panic!("UID {uid} not fetched"));
        assert!(
            got == body,
            "UID {uid}: fetched {} bytes differ from the {} appended",
            got.len(),
            body.len()
        );
    }
}

fn literal_len(line: &str) -> Option<usize> {
    let body = line.strip_suffix('}')?;
    let open = body.rfind('{')?;
    body[open + 1..].trim_end_matches('+').parse().ok()
}
