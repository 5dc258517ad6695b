//! Starts a coordinator: store, events, artifact store, reaper and the gRPC server.

use std::net::SocketAddr;
use std::sync::Arc;

use atelier_proto::v1::admin_server::AdminServer;
use atelier_proto::v1::atelier_server::AtelierServer;
use atelier_proto::v1::worker_api_server::WorkerApiServer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::server::TcpIncoming;

use crate::auth::{AuthLayer, Tokens};
use crate::config::CoordinatorConfig;
use crate::error::{Error, Result};
use crate::events::{EventBus, LocalBus, RedisBus};
use crate::service::{AdminService, AtelierService, Coordinator, WorkerService};
use crate::store::Store;

/// Messages up to this size; artifacts travel in much smaller chunks.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

pub struct RunningCoordinator {
    pub addr: SocketAddr,
    pub coordinator: Arc<Coordinator>,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::result::Result<(), tonic::transport::Error>>,
    reaper: JoinHandle<()>,
}

impl RunningCoordinator {
    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(());
        }
        self.reaper.abort();
        let _ = (&mut self.server).await;
        self.coordinator.store.close().await;
    }

    /// Serves until the server fails or the process is stopped.
    pub async fn wait(mut self) -> Result<()> {
        let r = (&mut self.server).await;
        self.reaper.abort();
        match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Invalid(format!("gRPC server: {e}"))),
            Err(e) => Err(Error::Invalid(format!("gRPC server task: {e}"))),
        }
    }
}

pub async fn start(config: CoordinatorConfig) -> Result<RunningCoordinator> {
    // TLS first: a bad certificate is refused before anything else starts.
    let mut builder = tonic::transport::Server::builder().tcp_nodelay(true);
    if let Some(files) = &config.tls {
        builder = builder.tls_config(files.server_config()?).map_err(|e| {
            Error::Invalid(format!(
                "tls_cert `{}` with tls_key `{}`: {}",
                files.cert.display(),
                files.key.display(),
                error_chain(&e)
            ))
        })?;
    }
    let store = Store::connect(&config.database_url).await?;
    let extended = store
        .extend_running_leases(config.lease_ttl.as_millis() as i64)
        .await?;
    if extended > 0 {
        tracing::info!("{extended} running jobs keep their lease while their workers reconnect");
    }
    let events: Arc<dyn EventBus> = match &config.redis_url {
        Some(url) if !url.is_empty() => RedisBus::connect(url, &config.redis_channel).await?,
        _ => LocalBus::new(),
    };
    let tokens = Arc::new(Tokens::new(store.clone()));
    if config.auth {
        crate::auth::ensure_admin(&store, &config.admin_token_file).await?;
    }
    let auth = AuthLayer::new(config.auth.then(|| tokens.clone()));
    let blobs = crate::artifacts::open_store(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr()?;
    let config_tls = config.tls.is_some();
    let coordinator = Coordinator::new(store, events, blobs, config);
    let reaper = tokio::spawn(crate::reaper::run(coordinator.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let user = AtelierServer::new(AtelierService::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let worker = WorkerApiServer::new(WorkerService::new(coordinator.clone()))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let admin = AdminServer::new(AdminService::new(coordinator.clone(), tokens));
    let server = tokio::spawn(
        builder
            .layer(auth)
            .add_service(admin)
            .add_service(user)
            .add_service(worker)
            // Accepted sockets need TCP_NODELAY set here: `Server::tcp_nodelay` only
            // applies when tonic binds the listener itself, and without it small
            // responses wait for the client's delayed ACK (~40 ms per call).
            .serve_with_incoming_shutdown(
                TcpIncoming::from(listener).with_nodelay(Some(true)),
                async {
                    let _ = rx.await;
                },
            ),
    );
    let scheme = if config_tls { "TLS" } else { "plain text" };
    tracing::info!("coordinator listening on {addr} ({scheme})");
    Ok(RunningCoordinator {
        addr,
        coordinator,
        shutdown: Some(tx),
        server,
        reaper,
    })
}

/// An error and its sources, as one line: tonic's TLS errors say little on their own.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
