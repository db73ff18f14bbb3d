//! Framing throughput, server → client, as the relay drives the framer:
//! socket reads of 64 KiB appended to a buffer, frames taken off the front,
//! the incomplete tail kept for the next read.
//!
//! - `fetch_heavy`: FETCH responses whose BODY[] literals are 2 KiB–1 MiB
//!   (goal ≥ 2 GB/s on the 2-core dev machine).
//! - `small_responses`: `* N EXISTS`, `* N FETCH (FLAGS (\Seen))` and
//!   tagged OKs (goal ≥ 500 MB/s).
//!
//! Set `IMAPGATE_BENCH_CLOCK=thread-cpu` to time with thread CPU time on a
//! loaded machine (see `support`).
//!
//! Each also runs with `classify` on the first line of every unit, which is
//! what the relay adds to follow tagged completions.

use std::hint::black_box;

mod support;

use criterion::measurement::Measurement;
use criterion::{Criterion, Throughput};
use imapgate::imap::response::classify;
use imapgate::imap::{Frame, Framer, Limits};

const READ: usize = 64 * 1024;

/// Messages of 2 KiB, 4 KiB, … 1 MiB, each FETCHed four times: about 8 MiB.
fn fetch_heavy_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0;
    for _ in 0..4 {
        let mut size = 2 * 1024;
        while size <= 1024 * 1024 {
            n += 1;
            out.extend_from_slice(
                format!(
                    "* {n} FETCH (UID {} FLAGS (\\Seen) BODY[] {{{size}}}\r\n",
                    n + 1000
                )
                .as_bytes(),
            );
            // Message-like payload: 76-octet lines.
            let line =
                b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod t\r\n";
            let mut left = size;
            while left > 0 {
                let take = left.min(line.len());
                out.extend_from_slice(&line[..take]);
                left -= take;
            }
            out.extend_from_slice(b")\r\n");
            size *= 2;
        }
        out.extend_from_slice(
            format!("a{n} OK FETCH completed (0.012 + 0.000 secs).\r\n").as_bytes(),
        );
    }
    out
}

/// About 1 MiB of short untagged data and tagged completions.
fn small_response_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 1024 * 1024 {
        i += 1;
        match i % 4 {
            0 => out.extend_from_slice(format!("* {i} EXISTS\r\n").as_bytes()),
            1 | 2 => out.extend_from_slice(format!("* {i} FETCH (FLAGS (\\Seen))\r\n").as_bytes()),
            _ => out.extend_from_slice(format!("a{i} OK Fetch completed.\r\n").as_bytes()),
        }
    }
    out
}

/// Feed `stream` in `READ`-sized reads; returns (frames, units classified).
fn relay(stream: &[u8], classify_units: bool) -> (usize, usize) {
    let mut framer = Framer::for_responses(Limits::default());
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let (mut frames, mut classified) = (0, 0);
    let mut fed = 0;
    while fed < stream.len() {
        let end = (fed + READ).min(stream.len());
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        let mut pos = 0;
        while let Some(frame) = framer.next(&buf[pos..]).expect("well-formed stream") {
            if classify_units {
                if let Frame::Line {
                    starts_unit: true,
                    len,
                    ..
                } = frame
                {
                    if classify(&buf[pos..pos + len]).is_ok() {
                        classified += 1;
                    }
                }
            }
            pos += frame.len();
            frames += 1;
        }
        buf.drain(..pos);
    }
    (frames, classified)
}

/// The framer alone over bytes already in memory (no read copies).
fn in_memory(stream: &[u8]) -> usize {
    let mut framer = Framer::for_responses(Limits::default());
    let mut pos = 0;
    let mut frames = 0;
    while let Some(frame) = framer.next(&stream[pos..]).expect("well-formed stream") {
        pos += frame.len();
        frames += 1;
    }
    frames
}

fn bench<M: Measurement>(c: &mut Criterion<M>) {
    for (name, stream) in [
        ("fetch_heavy", fetch_heavy_stream()),
        ("small_responses", small_response_stream()),
    ] {
        let mut g = c.benchmark_group(name);
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function("64k_reads", |b| b.iter(|| relay(black_box(&stream), false)));
        g.bench_function("64k_reads+classify", |b| {
            b.iter(|| relay(black_box(&stream), true))
        });
        g.bench_function("in_memory", |b| b.iter(|| in_memory(black_box(&stream))));
        g.finish();
    }
}

fn main() {
    support::main_with(bench, bench);
}
