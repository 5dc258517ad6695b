use atelier_worker::agent::Agent;

use crate::error::{CliError, CliResult};
use crate::metrics_http;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub coordinator: super::coordinator::Args,
    #[command(flatten)]
    pub worker: super::worker::Args,
}

impl Args {
    pub async fn exec(self, mut settings: Settings) -> CliResult {
        let config = self.coordinator.config(settings.clone())?;
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        settings.coordinator = format!("http://{}", running.addr);
        let agent = Agent::new(self.worker.worker_config(&settings)?).map_err(CliError::invalid)?;
        crate::logging::banner(format!(
            "atelier is up: coordinator on {}, worker {} ({}); Ctrl-C stops both",
            running.addr,
            agent.id(),
            self.worker.backend
        ));
        let metrics = self.coordinator.metrics_listen(&settings);
        if !metrics.is_empty() {
            let render = metrics_http::both(
                metrics_http::coordinator(running.coordinator.clone()),
                metrics_http::worker(agent.telemetry()),
            );
            metrics_http::serve(&metrics, "metrics_listen", "coordinator and worker", render)
                .await?;
        }
        super::worker::serve_metrics(&settings, &agent).await?;
        let shutdown = self.worker.stop_on_signal(&agent);
        agent.run(shutdown).await;
        running.stop().await;
        Ok(())
    }
}
