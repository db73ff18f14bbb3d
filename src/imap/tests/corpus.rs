//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/*`) through the
//! same invariant checks the fuzz targets run, so `cargo test` (and CI)
//! catches a regression on any input libFuzzer once found interesting,
//! without libFuzzer.

use std::path::{Path, PathBuf};

use crate::imap::check;
use crate::imap::Direction;

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

fn replay(target: &str, case: impl Fn(&[u8]) -> Result<(), String>) {
    let mut failures = Vec::new();
    let files = seeds(target);
    for path in &files {
        let data = std::fs::read(path).expect("readable seed");
        if let Err(v) = case(&data) {
            failures.push(format!("{}: {v}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn framer_client_seeds() {
    replay("framer_client", |d| {
        check::framer_case(d, Direction::ClientToServer)
    });
}

#[test]
fn framer_server_seeds() {
    replay("framer_server", |d| {
        check::framer_case(d, Direction::ServerToClient)
    });
}

#[test]
fn command_seeds() {
    replay("command", check::command_case);
}

#[test]
fn response_seeds() {
    replay("response", check::response_case);
}

#[test]
fn session_seeds() {
    replay("session", crate::session::check::session_case);
}
