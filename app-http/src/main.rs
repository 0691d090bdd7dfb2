//! `clarion-server`: reads the configuration, wires the services and serves until stopped.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clarion_adapters::config::Config;
use clarion_adapters::wiring;
use clarion_http::Application;
use tracing_subscriber::EnvFilter;

/// Clarion's HTTP server and background worker.
#[derive(Debug, Parser)]
#[command(name = "clarion-server", version, about)]
struct Args {
    /// The configuration file (default: $CLARION_CONFIG, else ./clarion.toml if it exists).
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    // A render worker is this same executable; it must start before any runtime or thread.
    clarion_adapters::render::run_worker_if_requested();
    serve()
}

#[tokio::main]
async fn serve() -> ExitCode {
    let args = Args::parse();
    init_tracing();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "clarion-server failed");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = Config::load(args.config.as_deref())?;
    let runtime = wiring::build(config, &wiring::worker_id("server")).await?;
    let application = Application::build(runtime).await?;
    application.run_until_stopped().await
}

/// JSON lines on stderr, filtered by `RUST_LOG` (default `info`).
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
