//! The `imapgate` binary: parse the command line, load the config, set up
//! logging, run.  Exit status 64 (EX_USAGE) for a bad config.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use imapgate::config::{Config, LogFormat};
use imapgate::runtime::{Current, Runtime};

/// An IMAP gateway: terminates client connections, authenticates at the
/// edge, routes each session to its backend and relays it.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Run the gateway with this config file.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "check_config",
        required_unless_present = "check_config"
    )]
    config: Option<PathBuf>,
    /// Validate this config file and exit (0 if valid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
}

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        // Parse and validate, then build every runtime part (reads the
        // passdb files and certificates) exactly as a start would.
        return match Config::load(&path) {
            Err(e) => {
                eprintln!("imapgate: {e}");
                ExitCode::from(EX_USAGE)
            }
            Ok(config) => match Runtime::build(config) {
                Ok(_) => {
                    println!("{}: OK", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("imapgate: {}: {e:#}", path.display());
                    ExitCode::from(EX_USAGE)
                }
            },
        };
    }
    let path = cli
        .config
        .expect("clap requires --config without --check-config");
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imapgate: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    init_logging(&config);
    let runtime = match Runtime::build(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("imapgate: {}: {e:#}", path.display());
            return ExitCode::from(EX_USAGE);
        }
    };
    let current = Arc::new(Current::new(&path, runtime));
    // Signals, reloads, the admin listener and health checks; sessions run
    // on the per-core workers (`imapgate::workers`).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imapgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(imapgate::server::run(current)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("imapgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        // Every event carries its session span's fields (id, peer,
        // listener, tls, user, backend) as `span`, and the span stack as
        // `spans`, so one session's lines can be grepped by any of them.
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}
