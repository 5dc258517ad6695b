use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
        let tls = config.tls.is_some();
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        settings.coordinator = local_url(running.addr, tls);
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

/// The in-process worker's address of the coordinator: loopback when it listens on
/// every interface; `https://` when it speaks TLS (its certificate must then name
/// that address, e.g. an IP SAN 127.0.0.1, and `tls_ca` the CA that signed it).
fn local_url(addr: SocketAddr, tls: bool) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}
