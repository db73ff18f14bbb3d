//! `imapgate-bench`: the load generator, and a stub IMAP backend.
//!
//! Every scenario prints one JSON line (for scripts) and one human line.
//! Targets are any IMAP server: a backend directly, imapgate, or a peer
//! proxy, so `scripts/bench` can compute ratios measured in the same run.
//!
//! ```text
//! imapgate-bench stub-backend --listen 127.0.0.1:10144
//! imapgate-bench login --target 127.0.0.1:1143 --concurrency 16 --seconds 10
//! imapgate-bench noop  --target 127.0.0.1:1143 --sessions 32 --seconds 10
//! imapgate-bench fetch --target 127.0.0.1:1143 --seconds 10
//! imapgate-bench idle  --target 127.0.0.1:1143 --sessions 9000 --procs 4 --pid 1234
//! imapgate-bench flood --target 127.0.0.1:1144 --probe 127.0.0.1:1143 --seconds 10
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

#[derive(Debug, Parser)]
#[command(version, about = "Load generator and stub backend for imapgate")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, clap::Args)]
struct Common {
    /// Server to load: `ip:port`.
    #[arg(long)]
    target: SocketAddr,
    #[arg(long, default_value = "alice")]
    user: String,
    #[arg(long, default_value = "wonderland")]
    pass: String,
    /// How long to run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Label for the output (e.g. `imapgate`, `nginx`, `direct`).
    #[arg(long, default_value = "target")]
    label: String,
    /// Source addresses to spread connections over (127.0.0.x).
    #[arg(long, value_delimiter = ',')]
    sources: Vec<IpAddr>,
    /// PIDs of the server's processes: `login`, `noop` and `fetch` then
    /// also report their CPU time per operation (user + system), the
    /// server's own cost apart from the load tool's and the backend's.
    #[arg(long, value_delimiter = ',')]
    cpu_pid: Vec<u32>,
    /// Implicit TLS to the target, trusting the CA certificate(s) in this
    /// PEM file (the server's certificate must name the target's IP).
    #[arg(long)]
    tls_ca: Option<PathBuf>,
}

/// CPU time (user + system) `pids` have used so far, in seconds.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: f64 = pids
        .iter()
        .filter_map(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // proc(5): the fields after the command name, which is in
            // parentheses and may hold spaces, start with field 3; utime
            // and stime are fields 14 and 15.
            let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// The server's CPU time per operation since `before`, as a report field
/// and a human suffix; nothing when no `--cpu-pid` was given.
fn cpu_per_op(
    common: &Common,
    before: f64,
    ops: f64,
    unit: &str,
) -> (Vec<(&'static str, f64)>, String) {
    if common.cpu_pid.is_empty() || ops <= 0.0 {
        return (Vec::new(), String::new());
    }
    let us = (cpu_seconds(&common.cpu_pid) - before) * 1e6 / ops;
    (
        vec![("server_cpu_us_per_op", us)],
        format!("; server CPU {us:.1} µs per {unit}"),
    )
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// A minimal, fast IMAP server (greeting, CAPABILITY, LOGIN, ID, SELECT,
    /// NOOP, IDLE/DONE, LOGOUT) to measure a proxy without Dovecot's cost.
    StubBackend {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Workers loop connect → greeting → LOGIN → SELECT INBOX → LOGOUT.
    Login {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Logged-in sessions each send NOOP back to back.
    Noop {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        sessions: usize,
    },
    /// SELECT INBOX, then `FETCH 1:* BODY.PEEK[]` repeatedly; every
    /// literal's length is checked against its announcement.
    Fetch {
        #[command(flatten)]
        common: Common,
    },
    /// Hold sessions in IDLE and report the server's memory per session.
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Client processes to spread the sessions over (fd limits).
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// PIDs of the server's processes (PSS is summed over them).
        #[arg(long, value_delimiter = ',')]
        pid: Vec<u32>,
        /// Hold the sessions this long after they are all open.
        #[arg(long, default_value_t = 2.0)]
        hold: f64,
        /// Internal: run as a child holding this many sessions.
        #[arg(long, hide = true)]
        child: bool,
    },
    /// Open and drop connections as fast as possible against a server set
    /// to reject, while probe sessions measure NOOP latency.
    Flood {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Where admitted probe sessions log in (default: the target).
        #[arg(long)]
        probe: Option<SocketAddr>,
        #[arg(long, default_value_t = 4)]
        probe_sessions: usize,
        /// Run the flooding connections in a child process at this nice
        /// level (0: same priority).  On one machine the flood generator
        /// competes with the gateway and the probe for the same cores; a
        /// positive level makes it stand for load arriving from elsewhere.
        #[arg(long, default_value_t = 0)]
        nice: u8,
        /// Internal: run as the flooding child; prints `REJECTED n`.
        #[arg(long, hide = true)]
        child: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.scenario {
            Scenario::StubBackend { listen } => stub_backend(listen).await,
            Scenario::Login {
                common,
                concurrency,
            } => login(common, concurrency).await,
            Scenario::Noop { common, sessions } => noop(common, sessions).await,
            Scenario::Fetch { common } => fetch(common).await,
            Scenario::Idle {
                common,
                sessions,
                procs,
                pid,
                hold,
                child,
            } => idle(common, sessions, procs, pid, hold, child).await,
            Scenario::Flood {
                common,
                concurrency,
                probe,
                probe_sessions,
                nice,
                child,
            } => {
                if child {
                    flood_child(common, concurrency).await
                } else {
                    flood(common, concurrency, probe, probe_sessions, nice).await
                }
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imapgate-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

// ------------------------------------------------------------------ client

/// The client's connection halves, plain TCP or TLS.
type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// A minimal IMAP client: line reads, tagged waits, literal-aware reads.
struct Client {
    r: BufReader<ReadHalf>,
    w: WriteHalf,
    line: Vec<u8>,
    tag: u64,
}

/// The TLS client configuration for `--tls-ca`, built once per process.
fn tls_connector(ca: &Path) -> Result<tokio_rustls::TlsConnector> {
    static CONNECTOR: OnceLock<Result<tokio_rustls::TlsConnector>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let roots = imapgate::tls::load_roots(ca)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

impl Client {
    async fn connect(
        target: SocketAddr,
        source: Option<IpAddr>,
        tls_ca: Option<&Path>,
    ) -> Result<Client> {
        let stream = match source {
            Some(ip) => {
                let socket = TcpSocket::new_v4().map_err(|e| e.to_string())?;
                socket
                    .bind(SocketAddr::new(ip, 0))
                    .map_err(|e| format!("bind {ip}: {e}"))?;
                socket
                    .connect(target)
                    .await
                    .map_err(|e| format!("connect: {e}"))?
            }
            None => TcpStream::connect(target)
                .await
                .map_err(|e| format!("connect: {e}"))?,
        };
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let (r, w): (ReadHalf, WriteHalf) = match tls_ca {
            None => {
                let (r, w) = stream.into_split();
                (Box::new(r), Box::new(w))
            }
            Some(ca) => {
                let name = rustls_pki_types::ServerName::IpAddress(target.ip().into());
                let tls = tls_connector(ca)?
                    .connect(name, stream)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                let (r, w) = tokio::io::split(tls);
                (Box::new(r), Box::new(w))
            }
        };
        let mut c = Client {
            r: BufReader::with_capacity(64 * 1024, r),
            w,
            line: Vec::with_capacity(256),
            tag: 0,
        };
        let greeting = c.read_line().await?;
        if !greeting.starts_with(b"* OK") {
            return Err(format!("greeting: {}", String::from_utf8_lossy(&greeting)));
        }
        Ok(c)
    }

    async fn read_line(&mut self) -> Result<Vec<u8>> {
        self.line.clear();
        let n = self
            .r
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("connection closed".into());
        }
        Ok(self.line.clone())
    }

    /// Send a command and read to its tagged answer; returns literal octets
    /// seen (each checked against its announcement).
    async fn command(&mut self, cmd: &str) -> Result<u64> {
        self.tag += 1;
        let tag = format!("b{}", self.tag);
        self.w
            .write_all(format!("{tag} {cmd}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        self.until_tagged(&tag).await
    }

    async fn until_tagged(&mut self, tag: &str) -> Result<u64> {
        let mut literal_bytes = 0u64;
        loop {
            self.line.clear();
            let n = self
                .r
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("connection closed".into());
            }
            if let Some(len) = literal_len(&self.line) {
                let mut left = len;
                let mut buf = [0u8; 16 * 1024];
                while left > 0 {
                    let want = left.min(buf.len() as u64) as usize;
                    let got = self
                        .r
                        .read(&mut buf[..want])
                        .await
                        .map_err(|e| e.to_string())?;
                    if got == 0 {
                        return Err(format!("literal truncated: {left} of {len} octets missing"));
                    }
                    left -= got as u64;
                }
                literal_bytes += len;
                continue;
            }
            if self.line.starts_with(tag.as_bytes()) && self.line.get(tag.len()) == Some(&b' ') {
                let rest = &self.line[tag.len() + 1..];
                return if rest.starts_with(b"OK") {
                    Ok(literal_bytes)
                } else {
                    Err(String::from_utf8_lossy(&self.line).trim_end().to_owned())
                };
            }
        }
    }

    async fn login(&mut self, user: &str, pass: &str) -> Result<()> {
        self.command(&format!("LOGIN {user} {pass}"))
            .await
            .map(|_| ())
    }
}

fn literal_len(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r\n")?;
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&c| c == b'{')?;
    std::str::from_utf8(&body[open + 1..])
        .ok()?
        .trim_end_matches('+')
        .parse()
        .ok()
}

fn source(common: &Common, i: usize) -> Option<IpAddr> {
    (!common.sources.is_empty()).then(|| common.sources[i % common.sources.len()])
}

// --------------------------------------------------------------- statistics

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1e6
}

fn report(scenario: &str, label: &str, fields: &[(&str, f64)], human: String) {
    let mut json = format!("{{\"scenario\":\"{scenario}\",\"label\":\"{label}\"");
    for (k, v) in fields {
        json.push_str(&format!(",\"{k}\":{v:.3}"));
    }
    json.push('}');
    println!("{json}");
    println!("# {scenario} [{label}] {human}");
}

// ---------------------------------------------------------------- scenarios

async fn login(common: Common, concurrency: usize) -> Result<()> {
    let cpu_before = cpu_seconds(&common.cpu_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(common.seconds);
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let common = common.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let start = Instant::now();
                let r = async {
                    let mut c = Client::connect(
                        common.target,
                        source(&common, i),
                        common.tls_ca.as_deref(),
                    )
                    .await?;
                    c.login(&common.user, &common.pass).await?;
                    c.command("SELECT INBOX").await?;
                    c.command("LOGOUT").await?;
                    Ok::<(), String>(())
                }
                .await;
                match r {
                    Ok(()) => latencies.push(start.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())?);
    }
    all.sort();
    let rate = all.len() as f64 / common.seconds;
    let errors = errors.load(Ordering::Relaxed) as f64;
    let (cpu, cpu_text) = cpu_per_op(&common, cpu_before, all.len() as f64, "session");
    let mut fields = vec![
        ("sessions_per_sec", rate),
        ("p50_us", percentile(&all, 0.5)),
        ("p99_us", percentile(&all, 0.99)),
        ("errors", errors),
    ];
    fields.extend(cpu);
    report(
        "login",
        &common.label,
        &fields,
        format!(
            "{rate:.0} sessions/s, p50 {:.0} µs, p99 {:.0} µs, {errors} errors{cpu_text}",
            percentile(&all, 0.5),
            percentile(&all, 0.99)
        ),
    );
    Ok(())
}

async fn noop(common: Common, sessions: usize) -> Result<()> {
    let cpu_before = cpu_seconds(&common.cpu_pid);
    let deadline = Instant::now() + Duration::from_secs_f64(common.seconds);
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let common = common.clone();
        tasks.push(tokio::spawn(async move {
            let mut c =
                Client::connect(common.target, source(&common, i), common.tls_ca.as_deref())
                    .await?;
            c.login(&common.user, &common.pass).await?;
            let mut latencies = Vec::with_capacity(100_000);
            while Instant::now() < deadline {
                let start = Instant::now();
                c.command("NOOP").await?;
                latencies.push(start.elapsed());
            }
            let _ = c.command("LOGOUT").await;
            Ok::<_, String>(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    all.sort();
    let ops = all.len() as f64 / common.seconds;
    let max = all.last().map_or(0.0, |d| d.as_secs_f64() * 1e6);
    // Includes the sessions' logins, a few against tens of thousands of NOOPs.
    let (cpu, cpu_text) = cpu_per_op(&common, cpu_before, all.len() as f64, "NOOP");
    let mut fields = vec![
        ("sessions", sessions as f64),
        ("ops_per_sec", ops),
        ("p50_us", percentile(&all, 0.5)),
        ("p90_us", percentile(&all, 0.9)),
        ("p99_us", percentile(&all, 0.99)),
        ("max_us", max),
    ];
    fields.extend(cpu);
    report(
        "noop",
        &common.label,
        &fields,
        format!(
            "{sessions} sessions: {ops:.0} ops/s, p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {max:.0} µs{cpu_text}",
            percentile(&all, 0.5),
            percentile(&all, 0.9),
            percentile(&all, 0.99)
        ),
    );
    Ok(())
}

async fn fetch(common: Common) -> Result<()> {
    let mut c =
        Client::connect(common.target, source(&common, 0), common.tls_ca.as_deref()).await?;
    c.login(&common.user, &common.pass).await?;
    c.command("SELECT INBOX").await?;
    let cpu_before = cpu_seconds(&common.cpu_pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(common.seconds);
    let mut bytes = 0u64;
    let mut rounds = 0u64;
    while Instant::now() < deadline || rounds == 0 {
        bytes += c.command("FETCH 1:* BODY.PEEK[]").await?;
        rounds += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = c.command("LOGOUT").await;
    let mbps = bytes as f64 / secs / 1e6;
    let (cpu, cpu_text) = cpu_per_op(&common, cpu_before, bytes as f64 / 1e6, "MB");
    let mut fields = vec![
        ("mb_per_sec", mbps),
        ("bytes", bytes as f64),
        ("rounds", rounds as f64),
    ];
    fields.extend(cpu);
    report(
        "fetch",
        &common.label,
        &fields,
        format!("{mbps:.1} MB/s of literals ({rounds} rounds, {bytes} octets, lengths checked){cpu_text}"),
    );
    Ok(())
}

/// Proportional set size of a process, in KiB, from smaps_rollup.
fn pss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .map_err(|e| format!("pid {pid}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("pid {pid}: no Pss line"))
}

fn total_pss(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&p| pss_kib(p)).sum()
}

async fn idle(
    common: Common,
    sessions: usize,
    procs: usize,
    pids: Vec<u32>,
    hold: f64,
    child: bool,
) -> Result<()> {
    if child {
        // Hold `sessions` IDLE sessions; say READY, wait for stdin to close.
        let mut held = Vec::with_capacity(sessions);
        for i in 0..sessions {
            let mut c =
                Client::connect(common.target, source(&common, i), common.tls_ca.as_deref())
                    .await?;
            c.login(&common.user, &common.pass).await?;
            c.command("SELECT INBOX").await?;
            c.w.write_all(b"i IDLE\r\n")
                .await
                .map_err(|e| e.to_string())?;
            let line = c.read_line().await?;
            if !line.starts_with(b"+") {
                return Err(format!("IDLE refused: {}", String::from_utf8_lossy(&line)));
            }
            held.push(c);
        }
        println!("READY {}", held.len());
        let mut stdin = tokio::io::stdin();
        let mut buf = [0u8; 1];
        let _ = stdin.read(&mut buf).await;
        return Ok(());
    }
    let before = total_pss(&pids)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let per = sessions.div_ceil(procs.max(1));
    let mut children = Vec::new();
    let started = Instant::now();
    for p in 0..procs.max(1) {
        let n = per.min(sessions - (p * per).min(sessions));
        if n == 0 {
            break;
        }
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.args([
            "idle",
            "--child",
            "--target",
            &common.target.to_string(),
            "--user",
            &common.user,
            "--pass",
            &common.pass,
            "--sessions",
            &n.to_string(),
        ]);
        if !common.sources.is_empty() {
            let s: Vec<String> = common.sources.iter().map(ToString::to_string).collect();
            cmd.args(["--sources", &s.join(",")]);
        }
        if let Some(ca) = &common.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        children.push(cmd.spawn().map_err(|e| e.to_string())?);
    }
    let mut opened = 0usize;
    for c in &mut children {
        let out = c.stdout.take().ok_or("child stdout")?;
        let mut lines = BufReader::new(out).lines();
        match lines.next_line().await.map_err(|e| e.to_string())? {
            Some(l) if l.starts_with("READY ") => opened += l[6..].parse::<usize>().unwrap_or(0),
            other => return Err(format!("child failed: {other:?}")),
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let during = total_pss(&pids)?;
    for c in &mut children {
        drop(c.stdin.take());
    }
    for mut c in children {
        let _ = c.wait().await;
    }
    let per_session = (during.saturating_sub(before)) as f64 * 1024.0 / opened.max(1) as f64;
    report(
        "idle",
        &common.label,
        &[
            ("sessions", opened as f64),
            ("pss_before_kib", before as f64),
            ("pss_during_kib", during as f64),
            ("bytes_per_session", per_session),
            ("open_seconds", open_secs),
        ],
        format!(
            "{opened} IDLE sessions: PSS {before} KiB → {during} KiB, {:.2} KiB per session",
            per_session / 1024.0
        ),
    );
    Ok(())
}

async fn flood(
    common: Common,
    concurrency: usize,
    probe: Option<SocketAddr>,
    probe_sessions: usize,
    nice: u8,
) -> Result<()> {
    let probe_target = probe.unwrap_or(common.target);
    // Unloaded probe latency first, then under the flood.
    let quiet = probe_latency(&common, probe_target, probe_sessions, 1.0).await?;
    // The flood runs in a child process (at `nice`), the probe here.
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = tokio::process::Command::new("nice");
    cmd.args(["-n", &nice.to_string()]).arg(&exe).args([
        "flood",
        "--child",
        "--target",
        &common.target.to_string(),
        "--seconds",
        &common.seconds.to_string(),
        "--concurrency",
        &concurrency.to_string(),
    ]);
    if !common.sources.is_empty() {
        let s: Vec<String> = common.sources.iter().map(ToString::to_string).collect();
        cmd.args(["--sources", &s.join(",")]);
    }
    cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true);
    let child = cmd
        .spawn()
        .map_err(|e| format!("starting the flood: {e}"))?;
    let loaded = probe_latency(&common, probe_target, probe_sessions, common.seconds).await?;
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (rejected, secs) = text
        .lines()
        .find_map(|l| {
            let mut w = l.strip_prefix("REJECTED ")?.split(' ');
            Some((
                w.next()?.parse::<u64>().ok()?,
                w.next()?.parse::<f64>().ok()?,
            ))
        })
        .ok_or_else(|| format!("the flood child said: {text:?}"))?;
    let rate = rejected as f64 / secs;
    report(
        "flood",
        &common.label,
        &[
            ("rejections_per_sec", rate),
            ("probe_p99_quiet_us", quiet),
            ("probe_p99_loaded_us", loaded),
            ("flood_nice", f64::from(nice)),
        ],
        format!("{rate:.0} BYE rejections/s; admitted NOOP p99 {quiet:.0} µs quiet → {loaded:.0} µs under flood (flood at nice {nice})"),
    );
    Ok(())
}

/// The flooding side: `concurrency` tasks connect, read the greeting and
/// drop the connection, for `seconds`; prints `REJECTED count seconds`.
async fn flood_child(common: Common, concurrency: usize) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let rejections = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let stop = stop.clone();
        let rejections = rejections.clone();
        let target = common.target;
        let src = source(&common, i).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        tasks.push(tokio::spawn(async move {
            let mut buf = [0u8; 256];
            while !stop.load(Ordering::Relaxed) {
                let Ok(socket) = TcpSocket::new_v4() else {
                    continue;
                };
                if socket.bind(SocketAddr::new(src, 0)).is_err() {
                    continue;
                }
                // Dropped the way a flooding client drops: a reset, no
                // orderly close (and no TIME_WAIT left on either side to
                // exhaust the source ports).
                let _ = socket.set_zero_linger();
                let Ok(mut s) = socket.connect(target).await else {
                    continue;
                };
                if let Ok(n) = s.read(&mut buf).await {
                    if buf[..n].starts_with(b"* BYE") {
                        rejections.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(common.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let secs = start.elapsed().as_secs_f64();
    let n = rejections.load(Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    println!("REJECTED {n} {secs}");
    Ok(())
}

/// NOOP p99 (µs) over `sessions` logged-in probe sessions for `seconds`.
async fn probe_latency(
    common: &Common,
    target: SocketAddr,
    sessions: usize,
    seconds: f64,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let common = common.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(target, None, None).await?;
            c.login(&common.user, &common.pass).await?;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let s = Instant::now();
                c.command("NOOP").await?;
                lat.push(s.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Ok::<_, String>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    all.sort();
    Ok(percentile(&all, 0.99))
}

// ------------------------------------------------------------ stub backend

async fn stub_backend(listen: SocketAddr) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("stub backend on {listen}");
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = stub_session(stream).await;
        });
    }
}

const STUB_CAPS: &str = "IMAP4rev1 LITERAL+ ID IDLE";

async fn stub_session(stream: TcpStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    w.write_all(format!("* OK [CAPABILITY {STUB_CAPS}] stub ready\r\n").as_bytes())
        .await?;
    let mut line = Vec::with_capacity(256);
    let mut out = Vec::with_capacity(256);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        // Literals (LOGIN with {n} / {n+}): read them as part of the command.
        while let Some(len) = literal_len(&line) {
            if !line.ends_with(b"+}\r\n") {
                w.write_all(b"+ go ahead\r\n").await?;
            }
            let mut lit = vec![0u8; len as usize];
            r.read_exact(&mut lit).await?;
            line.extend_from_slice(&lit);
            r.read_until(b'\n', &mut line).await?;
        }
        let text = String::from_utf8_lossy(&line);
        let mut words = text.split_whitespace();
        let tag = words.next().unwrap_or("*").to_owned();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        out.clear();
        match cmd.as_str() {
            "CAPABILITY" => out.extend(format!("* CAPABILITY {STUB_CAPS}\r\n{tag} OK done\r\n").as_bytes()),
            "LOGIN" => out.extend(format!("{tag} OK [CAPABILITY {STUB_CAPS}] Logged in\r\n").as_bytes()),
            "ID" => out.extend(format!("* ID NIL\r\n{tag} OK ID done\r\n").as_bytes()),
            "SELECT" | "EXAMINE" => out.extend(
                format!(
                    "* FLAGS (\\Seen)\r\n* 0 EXISTS\r\n* OK [UIDVALIDITY 1] ok\r\n{tag} OK [READ-WRITE] selected\r\n"
                )
                .as_bytes(),
            ),
            "NOOP" | "CHECK" => out.extend(format!("{tag} OK NOOP done\r\n").as_bytes()),
            "IDLE" => {
                w.write_all(b"+ idling\r\n").await?;
                line.clear();
                if r.read_until(b'\n', &mut line).await? == 0 {
                    return Ok(());
                }
                out.extend(format!("{tag} OK IDLE done\r\n").as_bytes());
            }
            "LOGOUT" => {
                w.write_all(format!("* BYE bye\r\n{tag} OK LOGOUT done\r\n").as_bytes()).await?;
                return Ok(());
            }
            _ => out.extend(format!("{tag} BAD unknown command\r\n").as_bytes()),
        }
        w.write_all(&out).await?;
    }
}
