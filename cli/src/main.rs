//! `atelier`: every user command. Arguments are parsed here; each verb lives in
//! `commands/<verb>.rs`.

mod commands;
mod error;
mod logging;
mod metrics_http;
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
    /// Log lines as `text` or `json` (setting `log_format`)
    #[arg(long, global = true, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
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
    // Read before anything logs: the settings choose the log format.
    let mut settings = match settings::Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => return report(CliError::invalid(e)),
    };
    if let Some(f) = cli.log_format {
        settings.log_format = f;
    }
    if let Err(e) = logging::init(&settings.log_format, cli.command.default_log_filter()) {
        return report(e);
    }
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
        if let Some(c) = cli.coordinator {
            settings.coordinator = c;
        }
        cli.command.exec(settings).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e),
    }
}

fn report(e: CliError) -> ExitCode {
    eprintln!("error: {e}");
    e.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command lines of the systemd units in `deploy/` are valid `atelier`
    /// invocations.
    #[test]
    fn deploy_units_start_valid_commands() {
        let units = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
        let mut checked = 0;
        for entry in std::fs::read_dir(&units).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for line in text.lines() {
                let Some(command) = line.strip_prefix("ExecStart=") else {
                    continue;
                };
                let args: Vec<&str> = command.split_whitespace().collect();
                assert!(
                    args[0].ends_with("/atelier"),
                    "{}: {command}",
                    path.display()
                );
                if let Err(e) = Cli::try_parse_from(&args) {
                    panic!("{}: `{command}`: {e}", path.display());
                }
                checked += 1;
            }
        }
        assert_eq!(checked, 2, "one ExecStart per unit");
    }
}
