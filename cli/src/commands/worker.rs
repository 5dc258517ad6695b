use std::collections::HashMap;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use atelier_worker::agent::{Agent, WorkerConfig};
use atelier_worker::resources;

use crate::error::{CliError, CliResult};
use crate::metrics_http;
use crate::settings::Settings;

/// `atelier worker`: the agent's flags, and those `up` (whose flags are the
/// coordinator's) cannot share.
#[derive(clap::Args, Debug)]
pub struct Command {
    #[command(flatten)]
    pub args: Args,
    /// Serve this worker's Prometheus metrics at http://ADDR/metrics (setting
    /// `worker_metrics_listen`)
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

impl Command {
    pub async fn exec(self, mut settings: Settings) -> CliResult {
        if let Some(v) = self.metrics_listen {
            settings.worker_metrics_listen = v;
        }
        self.args.exec(settings).await
    }
}

/// Serves `agent`'s metrics where `worker_metrics_listen` says, if anywhere.
pub async fn serve_metrics(settings: &Settings, agent: &Arc<Agent>) -> CliResult {
    if settings.worker_metrics_listen.is_empty() {
        return Ok(());
    }
    let render = metrics_http::worker(agent.telemetry());
    metrics_http::serve(
        &settings.worker_metrics_listen,
        "worker_metrics_listen",
        "worker",
        render,
    )
    .await?;
    Ok(())
}

#[derive(clap::Args, Debug)]
#[group(skip)]
pub struct Args {
    /// GPUs this worker may use, e.g. 0,1 (default: all that nvidia-smi lists for cuda)
    #[arg(long, value_delimiter = ',')]
    pub gpus: Option<Vec<u32>>,
    /// Compute backend this worker runs models on
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    pub backend: String,
    /// Label jobs can ask for, k=v (repeatable)
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// Name shown in `atelier workers` (default: host name)
    #[arg(long)]
    pub name: Option<String>,
    /// Jobs needing no GPU that may run at once
    #[arg(long, default_value_t = 1)]
    pub slots: u32,
    /// Memory to assume for a GPU that nvidia-smi cannot read
    #[arg(long, default_value_t = 0.0)]
    pub gpu_memory_gb: f64,
    /// Free disk space every download must leave, in GB (a download that would
    /// leave less fails its job, retryable, with the numbers)
    #[arg(long, default_value_t = 1.0)]
    pub min_free_disk_gb: f64,
    /// On SIGTERM or Ctrl-C, finish the running jobs, take no more, and leave
    /// (a second signal hands them back); without it they are handed back at once
    #[arg(long)]
    pub drain: bool,
}

impl Args {
    pub fn worker_config(&self, settings: &Settings) -> CliResult<WorkerConfig> {
        let mut labels = HashMap::new();
        for l in &self.labels {
            let (k, v) = l
                .split_once('=')
                .ok_or_else(|| CliError::invalid(format!("--label `{l}`: expected K=V")))?;
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
        let gpus = if self.backend == "cuda" || self.gpus.is_some() {
            let detected = resources::detect_gpus();
            resources::select_gpus(self.gpus.as_deref(), &detected, self.gpu_memory_gb)
                .map_err(CliError::invalid)?
        } else {
            Vec::new()
        };
        if self.backend == "cuda" && gpus.is_empty() {
            return Err(CliError::invalid(
                "--backend cuda: no GPU found (nvidia-smi lists none); name them with --gpus",
            ));
        }
        Ok(WorkerConfig {
            coordinator: settings.connect_options().map_err(CliError::invalid)?,
            name: self.name.clone().unwrap_or_else(resources::host_name),
            backend: self.backend.clone(),
            gpus,
            labels,
            cpu_slots: self.slots,
            work_dir: settings.data_dir.join("work"),
            cache_dir: settings.data_dir.join("cache"),
            min_free_disk_bytes: (self.min_free_disk_gb.max(0.0) * 1e9) as u64,
        })
    }

    pub async fn exec(self, settings: Settings) -> CliResult {
        let config = self.worker_config(&settings)?;
        let target = config.coordinator.to_string();
        let agent = Agent::new(config).map_err(CliError::invalid)?;
        crate::logging::banner(format!("atelier worker {} → {target}", agent.id()));
        serve_metrics(&settings, &agent).await?;
        let shutdown = self.stop_on_signal(&agent);
        agent.run(shutdown).await;
        Ok(())
    }

    /// What a signal does to `agent`: hand its jobs back (the returned token is
    /// cancelled), or with `--drain`, first drain it and hand back only on a second.
    pub fn stop_on_signal(&self, agent: &Arc<Agent>) -> CancellationToken {
        if !self.drain {
            return super::shutdown_on_signal();
        }
        let shutdown = CancellationToken::new();
        let (a, s) = (agent.clone(), shutdown.clone());
        tokio::spawn(async move {
            super::next_signal().await;
            a.drain();
            super::next_signal().await;
            tracing::info!("second signal: handing the running jobs back");
            s.cancel();
        });
        shutdown
    }
}
