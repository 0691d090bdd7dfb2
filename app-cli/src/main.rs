//! `clarion`: Clarion's command-line interface. It parses input into domain values, builds the
//! adapters from the configuration, calls the domain services and formats their results; it
//! holds no SQL and no provider code.

mod args;
mod bulk;
mod error;
mod output;
mod parse;
mod run;

use std::process::ExitCode;

use clap::Parser as _;
use tracing_subscriber::EnvFilter;

use crate::args::Cli;
use crate::error::CliError;

fn main() -> ExitCode {
    // A render worker is this same executable; it must start before any runtime or thread.
    clarion_adapters::render::run_worker_if_requested();
    cli()
}

#[tokio::main]
async fn cli() -> ExitCode {
    // clap prints usage errors itself and exits with code 2.
    let cli = Cli::parse();
    init_tracing();
    match run::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match &error {
                CliError::NotSent(_) => eprintln!("{error}"),
                _ => eprintln!("error: {error}"),
            }
            error.exit_code()
        }
    }
}

/// Logs go to stderr, at the level RUST_LOG sets (warn by default), so that they never mix
/// with the tables or the JSON on stdout.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Only fails when a subscriber is already set, which nothing else here does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
