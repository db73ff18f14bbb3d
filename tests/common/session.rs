//! Harness additions for the session-state tests (issue 4): what Dovecot itself received
//! (its rawlog), `doveadm` against a sandbox, gateway limits, and client helpers for
//! logging in and for writing from another thread.
//!
//! The rawlog is the proof that a command did or did not reach the backend: Dovecot writes
//! every byte a client sends after login to `DIR/rawlog/USER/*.in` and every byte it answers
//! to `*.out` (`scripts/dovecot-sandbox --rawlog`, Dovecot's `rawlog_dir`). The LOGIN itself
//! is handled by `imap-login` and never appears there.

use super::*;

impl DovecotBuilder {
    /// Record every post-login session in `DIR/rawlog/USER/` (see [`Dovecot::rawlog_in`]).
    pub fn rawlog(mut self) -> Self {
        self.rawlog = true;
        self
    }
}

/// One post-login session as Dovecot recorded it: the lines it received and the lines it
/// sent, each without its CRLF and without rawlog's timestamp.
#[derive(Debug, Default, Clone)]
pub struct Rawlog {
    pub input: Vec<String>,
    pub output: Vec<String>,
}

impl Rawlog {
    /// The tags of the commands Dovecot received (first word of each input line; literal
    /// payload lines give words too, so choose tags that no payload contains).
    pub fn received_tags(&self) -> Vec<&str> {
        self.input
            .iter()
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    /// Whether Dovecot received a command tagged `tag`.
    pub fn received(&self, tag: &str) -> bool {
        self.received_tags().contains(&tag)
    }

    /// Dovecot's tagged answer for `tag`, if it sent one.
    pub fn answer(&self, tag: &str) -> Option<&str> {
        let prefix = format!("{tag} ");
        self.output
            .iter()
            .find(|l| l.starts_with(&prefix))
            .map(String::as_str)
    }
}

/// Rawlog prefixes each line with `SECONDS.MICROS `; remove it.
fn strip_rawlog_timestamp(line: &str) -> &str {
    match line.split_once(' ') {
        Some((ts, rest))
            if !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            rest
        }
        _ => line,
    }
}

fn rawlog_lines(path: &Path) -> Vec<String> {
    read_lossy(path)
        .split('\n')
        .map(|l| strip_rawlog_timestamp(l.trim_end_matches('\r')).to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

impl Dovecot {
    /// `user`'s rawlog directory (exists only when started with `rawlog()`).
    pub fn rawlog_dir(&self, user: &str) -> PathBuf {
        self.dir().join("rawlog").join(user)
    }

    /// Every post-login session of `user` so far, oldest first.
    pub fn rawlogs(&self, user: &str) -> Vec<Rawlog> {
        let dir = self.rawlog_dir(user);
        assert!(
            dir.is_dir(),
            "{} missing: start Dovecot with .rawlog()",
            dir.display()
        );
        let mut inputs: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("read rawlog dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "in"))
            .collect();
        // Names are DATE-TIME.PID.N.in: the same second sorts by pid, which is good enough
        // for tests that look sessions up by tag rather than by position.
        inputs.sort();
        inputs
            .into_iter()
            .map(|input| Rawlog {
                input: rawlog_lines(&input),
                output: rawlog_lines(&input.with_extension("out")),
            })
            .collect()
    }

    /// All of `user`'s sessions merged into one (tags are unique per test).
    pub fn rawlog(&self, user: &str) -> Rawlog {
        let mut all = Rawlog::default();
        for r in self.rawlogs(user) {
            all.input.extend(r.input);
            all.output.extend(r.output);
        }
        all
    }

    /// Wait until Dovecot has answered `tag` for `user` (rawlog files are written as the
    /// session goes, but by another process); return the merged rawlog.
    pub fn rawlog_after(&self, user: &str, tag: &str) -> Rawlog {
        let mut last = Rawlog::default();
        let found = eventually(Duration::from_secs(5), || {
            last = self.rawlog(user);
            last.answer(tag).is_some()
        });
        assert!(
            found,
            "no answer to {tag} in {user}'s rawlog; received: {:?}",
            last.input
        );
        last
    }

    /// Run `doveadm` against this sandbox (its config, hence its base_dir and sockets).
    pub fn doveadm(&self, args: &[&str]) -> Output {
        run(
            Command::new("doveadm")
                .arg("-c")
                .arg(self.dir().join("dovecot.conf"))
                .args(args)
                .env("PATH", sbin_path()),
            Duration::from_secs(30),
        )
    }
}

/// PATH with the sbin directories, where Debian installs doveadm.
fn sbin_path() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}

/// `config` (from [`gateway_config`]) with `[limits]` keys set: an existing `key = …` line
/// in that table is replaced, a new one is added at its top.
pub fn with_limits(config: &str, limits: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = config.lines().map(str::to_string).collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "[limits]")
        .expect("config has a [limits] table");
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.trim_start().starts_with('['))
        .map_or(lines.len(), |i| start + 1 + i);
    for (key, value) in limits {
        let line = format!("{key} = {value}");
        let existing = lines[start + 1..end].iter().position(|l| {
            l.split('=')
                .next()
                .is_some_and(|k| k.trim() == *key && l.contains('='))
        });
        match existing {
            Some(i) => lines[start + 1 + i] = line,
            None => lines.insert(start + 1, line),
        }
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

impl Client {
    /// Connect, read the greeting, LOGIN with tag `tag` and assert OK; returns the tagged
    /// line.
    pub fn logged_in(port: u16, tag: &str, user: &str, password: &str) -> Client {
        let mut c = Client::connect(port);
        c.greeting();
        c.send(&format!("{tag} LOGIN {user} {password}\r\n"));
        c.expect_ok(tag);
        c
    }

    /// A second handle on the socket for writing from another thread (e.g. trickling
    /// bytes while this one reads).
    pub fn writer(&self) -> TcpStream {
        self.writer.try_clone().expect("dup socket")
    }

    /// Read responses until one satisfies `pred`; return it and those before it.
    pub fn expect_response(&mut self, pred: impl Fn(&str) -> bool) -> (Vec<String>, String) {
        let mut before = Vec::new();
        loop {
            let r = self.response();
            if pred(&r) {
                return (before, r);
            }
            before.push(r);
        }
    }

    /// Read whole responses until the server closes the connection; return them.
    pub fn read_to_eof(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return out,
                Ok(_) => out.push(String::from_utf8_lossy(&buf).trim_end().to_string()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!(
                    "reading from {} until EOF: {e}; so far {out:?} {:?}",
                    self.port,
                    String::from_utf8_lossy(&buf)
                ),
            }
        }
    }
}
