//! One module per verb; `Command` dispatches.

mod bench;
mod cancel;
mod coordinator;
mod experiments;
mod generate;
mod jobs;
mod logs;
mod model;
mod priority;
mod pull;
mod quickstart;
mod report;
mod retry;
mod show;
mod submit;
mod token;
mod train;
mod trainset;
mod up;
mod watch;
mod worker;
mod workers;

use clap::Subcommand;

use crate::error::{CliError, CliResult};
use crate::settings::Settings;
use atelier_worker::client::{self, UserApi};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the coordinator service
    Coordinator(coordinator::Args),
    /// Run a worker agent that leases and runs jobs
    Worker(worker::Command),
    /// Run a coordinator and a worker in one process (embedded defaults)
    Up(up::Args),
    /// Run the study in miniature on this machine: tiny model, demo trainset, report
    Quickstart(quickstart::Args),
    /// Submit an experiment file (YAML)
    Submit(submit::Args),
    /// List experiments with job counts
    Experiments(experiments::Args),
    /// List jobs
    Jobs(jobs::Args),
    /// Show one job: state, attempts, artifacts, and why it has not started
    Show(show::Args),
    /// Follow jobs live (a table on a terminal, event lines otherwise)
    Watch(watch::Args),
    /// Print a job's log lines
    Logs(logs::Args),
    /// Cancel a job or a whole experiment
    Cancel(cancel::Args),
    /// Re-queue failed or cancelled jobs
    Retry(retry::Args),
    /// Change the priority of a job or of an experiment's jobs
    Priority(priority::Args),
    /// Download a job's artifacts and check their sha256
    Pull(pull::Args),
    /// Compare an experiment's methods: comparison.png, samples.png, loss.png, report.md
    Report(report::Args),
    /// List workers and what they run
    Workers(workers::Args),
    /// Generate an image from a prompt with a diffusers model folder
    Generate(generate::Args),
    /// Fine-tune a model folder on a folder of images: LoRA, DreamBooth-LoRA or textual inversion
    // Boxed: its many flags would make every other variant as large.
    Train(Box<train::Args>),
    /// Make a trainset from a folder of images, list, show or check trainsets
    #[command(subcommand)]
    Trainset(trainset::Trainset),
    /// Make a model folder with random weights, or inspect one
    #[command(subcommand)]
    Model(model::Model),
    /// Benchmarks
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Make, list and revoke API tokens (coordinator with `auth = true`; admin only)
    #[command(subcommand)]
    Token(token::Token),
}

impl Command {
    pub async fn exec(self, settings: Settings) -> CliResult {
        match self {
            Command::Coordinator(a) => a.exec(settings).await,
            Command::Worker(a) => a.exec(settings).await,
            Command::Up(a) => a.exec(settings).await,
            Command::Quickstart(a) => a.exec(settings).await,
            Command::Submit(a) => a.exec(settings).await,
            Command::Experiments(a) => a.exec(settings).await,
            Command::Jobs(a) => a.exec(settings).await,
            Command::Show(a) => a.exec(settings).await,
            Command::Watch(a) => a.exec(settings).await,
            Command::Logs(a) => a.exec(settings).await,
            Command::Cancel(a) => a.exec(settings).await,
            Command::Retry(a) => a.exec(settings).await,
            Command::Priority(a) => a.exec(settings).await,
            Command::Pull(a) => a.exec(settings).await,
            Command::Report(a) => a.exec(settings).await,
            Command::Workers(a) => a.exec(settings).await,
            Command::Generate(a) => a.exec(settings).await,
            Command::Train(a) => a.exec(settings).await,
            Command::Trainset(t) => t.exec(settings).await,
            Command::Model(m) => m.exec(settings).await,
            Command::Bench(b) => b.exec(settings).await,
            Command::Token(t) => t.exec(settings).await,
        }
    }

    /// Whether this command runs a coordinator or a worker in this process.
    pub fn runs_services(&self) -> bool {
        matches!(
            self,
            Command::Coordinator(_) | Command::Worker(_) | Command::Up(_) | Command::Quickstart(_)
        )
    }

    /// Services log their progress; client commands only warnings.
    pub fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Coordinator(_) | Command::Worker(_) | Command::Up(_) => {
                "info,sqlx=warn,h2=warn,tower=warn"
            }
            _ => "warn",
        }
    }
}

/// A client of the coordinator named in the settings.
pub fn connect(settings: &Settings) -> CliResult<UserApi> {
    let options = settings.connect_options().map_err(CliError::invalid)?;
    let channel = client::channel(&options).map_err(CliError::invalid)?;
    Ok(client::user_api(channel))
}

/// Cancelled on Ctrl-C or SIGTERM (what systemd sends), so that a worker hands its
/// running jobs back at once instead of letting their leases expire.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        next_signal().await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// Returns at the next Ctrl-C or SIGTERM.
pub async fn next_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
