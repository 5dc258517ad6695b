//! `atelier`: every user command. Arguments are parsed here; each verb lives in
//! `commands/<verb>.rs`.

mod commands;
mod error;
mod output;
mod plot;
mod refs;
mod report;
mod settings;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use crate::error::CliError;

#[derive(Parser, Debug)]
#[command(
    name = "atelier",
    version,
    about = "Fine-tune Stable Diffusion across a fleet of GPU boxes"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid input, 4 not found, \
5 coordinator unreachable, 6 conflict with the job's state, 7 jobs failed (watch) or hash mismatch (pull)"
)]
pub struct Cli {
    /// Settings file (default: ./atelier.toml if present; env ATELIER_CONFIG)
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Coordinator URL for client commands (env ATELIER_COORDINATOR)
    #[arg(long, global = true, value_name = "URL")]
    coordinator: Option<String>,
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `atelier jobs | head` ends quietly, as Unix tools do, instead of panicking on
    // the closed pipe (Rust ignores SIGPIPE unless told otherwise). Not for the
    // long-running commands: a service must outlive a peer that went away.
    #[cfg(unix)]
    if !cli.command.runs_services() {
        // SAFETY: no other thread exists yet; this restores the default disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(cli.command.default_log_filter())
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: Result<(), CliError> = runtime.block_on(async move {
        let mut settings =
            settings::Settings::load(cli.config.as_deref()).map_err(CliError::invalid)?;
        if let Some(c) = cli.coordinator {
            settings.coordinator = c;
        }
        cli.command.exec(settings).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.code()
        }
    }
}
