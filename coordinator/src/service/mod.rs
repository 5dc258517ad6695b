//! The gRPC handlers. Each writes to the store in one transaction, then publishes
//! the resulting events and wakes waiting workers.

mod admin;
mod scope;
mod user;
mod worker;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use atelier_proto::v1;
use futures::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, RwLock};
use tonic::{Response, Status};

use crate::artifacts::BlobStore;
use crate::config::CoordinatorConfig;
use crate::events::{state_event, EventBus};
use crate::metrics::Metrics;
use crate::store::{StateChange, Store};
use scope::Scope;

/// Chunk size for artifact downloads.
pub const CHUNK: usize = 256 * 1024;

/// Shared state of the coordinator, behind both gRPC services.
pub struct Coordinator {
    pub store: Store,
    pub events: Arc<dyn EventBus>,
    pub blobs: Arc<dyn BlobStore>,
    pub config: CoordinatorConfig,
    /// Woken whenever a job may have become leasable, so that long-polling workers
    /// start it within milliseconds instead of at their next poll.
    pub work_available: Notify,
    /// Each registered worker's backend, GPU memory by index and labels: needed on
    /// every lease, so kept in memory (refilled from the store on a miss).
    worker_shapes: RwLock<HashMap<String, WorkerShape>>,
    /// Experiment names never change; every lease needs one.
    experiment_names: RwLock<HashMap<i64, String>>,
    pub metrics: Arc<Metrics>,
}

#[derive(Debug, Clone)]
pub(crate) struct WorkerShape {
    pub backend: String,
    pub gpus: HashMap<u32, f64>,
    pub labels: std::collections::BTreeMap<String, String>,
}

impl Coordinator {
    pub fn new(
        store: Store,
        events: Arc<dyn EventBus>,
        blobs: Arc<dyn BlobStore>,
        config: CoordinatorConfig,
    ) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            store,
            events,
            blobs,
            config,
            work_available: Notify::new(),
            worker_shapes: RwLock::new(HashMap::new()),
            experiment_names: RwLock::new(HashMap::new()),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Publishes state changes and wakes workers when a job went back to the queue
    /// or one ended (which may unblock the jobs that need it).
    pub fn announce(&self, changes: &[StateChange]) {
        self.metrics.observe(changes);
        let mut wake = false;
        for c in changes {
            tracing::info!(
                job = c.job_id,
                worker = %c.worker_id,
                kind = %c.kind,
                attempt = c.attempt,
                "{} -> {}",
                c.from,
                c.to
            );
            self.events.publish(state_event(c));
            wake |= c.to != "running";
        }
        if wake {
            self.work_available.notify_waiters();
        }
    }

    pub(crate) async fn experiment_name(&self, id: i64) -> crate::Result<String> {
        if let Some(n) = self.experiment_names.read().await.get(&id) {
            return Ok(n.clone());
        }
        let name = self.store.experiment_name(id).await?;
        self.experiment_names.write().await.insert(id, name.clone());
        Ok(name)
    }

    pub(crate) fn ttl_ms(&self) -> i64 {
        self.config.lease_ttl.as_millis() as i64
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// An artifact's bytes in chunks of [`CHUNK`], the first carrying its metadata;
/// for users (`pull`) and workers (a job's inputs) alike.
/// A user (`Scope::Owner`) reads only its own jobs' artifacts and pushed trainsets.
async fn download(
    c: &Coordinator,
    scope: &Scope,
    req: v1::DownloadRequest,
) -> Result<Response<BoxStream<v1::DownloadChunk>>, Status> {
    let meta = match req.what {
        Some(v1::download_request::What::ArtifactId(id)) => {
            let row = c.store.get_artifact(id).await?;
            if let Some(me) = scope.owner() {
                if c.store.job_owner(row.job_id).await? != me {
                    return Err(Status::not_found(format!("artifact {id} does not exist")));
                }
            }
            row.to_proto()
        }
        // A job's artifact, or else a pushed trainset (`atelier trainset push`).
        Some(v1::download_request::What::Sha256(sha)) => {
            let own = match scope.owner() {
                None => c.store.artifact_by_sha(&sha).await,
                Some(me) => {
                    let row = c.store.artifact_by_sha_of(me, &sha).await?;
                    row.ok_or_else(|| {
                        crate::Error::NotFound(format!("no artifact has sha256 {sha}"))
                    })
                }
            };
            match own {
                Ok(row) => row.to_proto(),
                Err(crate::Error::NotFound(m)) => match c.store.trainset_by_sha(&sha).await? {
                    Some(t) => t.to_artifact(),
                    None => return Err(Status::not_found(format!("{m} and no trainset either"))),
                },
                Err(e) => return Err(e.into()),
            }
        }
        None => return Err(Status::invalid_argument("no artifact given")),
    };
    let mut reader = c.blobs.open(&meta.sha256).await?;
    let metrics = c.metrics.clone();
    let stream = async_stream::try_stream! {
        let mut first = Some(meta);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                let n = reader.read(&mut buf[filled..]).await.map_err(|e| Status::internal(e.to_string()))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 && first.is_none() {
                break;
            }
            metrics.downloaded(filled as u64);
            yield v1::DownloadChunk { artifact: first.take(), data: buf[..filled].to_vec() };
            if filled < CHUNK {
                break;
            }
        }
    };
    Ok(Response::new(Box::pin(stream)))
}

/// An upload refused for its size (setting `max_upload_gb`); nothing of it is kept.
fn too_large(what: &str, limit: u64) -> Status {
    Status::resource_exhausted(format!(
        "{what} is larger than the coordinator's upload limit of {limit} bytes \
         (max_upload_gb); nothing was stored"
    ))
}

pub use admin::AdminService;
pub use user::AtelierService;
pub use worker::WorkerService;
