//! Command parsing of simple commands, one command per iteration (goal
//! ≥ 5 million per second, i.e. ≤ 200 ns each, on the 2-core dev machine):
//! `parse_command` on the whole unit, `parse_command_head` on its line.
//! Set `IMAPGATE_BENCH_CLOCK=thread-cpu` to time with thread CPU time on a
//! loaded machine (see `support`).

use std::hint::black_box;

mod support;

use criterion::measurement::Measurement;
use criterion::{Criterion, Throughput};
use imapgate::imap::command::{parse_command, parse_command_head};
use imapgate::imap::response::classify;

const COMMANDS: [(&str, &[u8]); 3] = [
    ("noop", b"a1 NOOP\r\n"),
    ("select_inbox", b"a2 SELECT INBOX\r\n"),
    ("uid_fetch", b"a3 UID FETCH 1:* (FLAGS)\r\n"),
];

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    let mut g = c.benchmark_group("parse_command");
    g.throughput(Throughput::Elements(1));
    for (name, cmd) in COMMANDS {
        g.bench_function(name, |b| b.iter(|| parse_command(black_box(cmd))));
    }
    g.finish();
    let mut g = c.benchmark_group("parse_command_head");
    g.throughput(Throughput::Elements(1));
    for (name, cmd) in COMMANDS {
        g.bench_function(name, |b| b.iter(|| parse_command_head(black_box(cmd))));
    }
    g.finish();
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(1));
    for (name, line) in [
        (
            "tagged_ok",
            &b"a3 OK Fetch completed (0.001 + 0.000 secs).\r\n"[..],
        ),
        ("untagged_data", b"* 12 FETCH (FLAGS (\\Seen))\r\n"),
    ] {
        g.bench_function(name, |b| b.iter(|| classify(black_box(line))));
    }
    g.finish();
}

fn main() {
    support::main_with(bench, bench);
}
