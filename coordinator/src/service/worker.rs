//! `WorkerApi`: what worker agents call. Every write carries a lease token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_proto::v1::{self, worker_api_server::WorkerApi};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::scope::Scope;
use super::{download, too_large, BoxStream, Coordinator, WorkerShape};
use crate::events::{log_event, progress_event};
use crate::scheduler::{Capacity, FreeGpu};
use crate::store::workers::Registration;
use crate::store::{GpuInfo as GpuInfoRef, LeaseGrant};

/// The longest a lease call waits for work before answering "none".
const MAX_LEASE_WAIT: Duration = Duration::from_secs(20);

pub struct WorkerService {
    c: Arc<Coordinator>,
}

impl WorkerService {
    pub fn new(c: Arc<Coordinator>) -> WorkerService {
        WorkerService { c }
    }

    /// What the worker offers now: its registered GPUs that it says are free.
    async fn capacity(&self, r: &v1::LeaseRequest) -> Result<Capacity, Status> {
        let shape = self.shape_of(&r.worker_id).await?;
        let mut free_gpus = Vec::with_capacity(r.free_gpus.len());
        for idx in &r.free_gpus {
            let mem = shape.gpus.get(idx).copied().ok_or_else(|| {
                Status::invalid_argument(format!(
                    "worker {} offers GPU {idx}, which it did not register",
                    r.worker_id
                ))
            })?;
            free_gpus.push(FreeGpu {
                index: *idx,
                memory_gb: mem,
            });
        }
        Ok(Capacity {
            backend: shape.backend.clone(),
            free_gpus,
            free_cpu_slots: r.free_cpu_slots,
            labels: shape.labels.clone(),
        })
    }

    async fn leased_jobs(&self, grants: Vec<LeaseGrant>) -> Result<Vec<v1::LeasedJob>, Status> {
        let mut jobs = Vec::with_capacity(grants.len());
        for g in grants {
            let experiment = self.c.experiment_name(g.job.experiment_id).await?;
            jobs.push(v1::LeasedJob {
                lease_token: g.job.lease_token as u64,
                gpu_indexes: g.gpu_indexes.clone(),
                job: Some(g.job.to_proto(&experiment, Vec::new())),
            });
        }
        Ok(jobs)
    }

    async fn shape_of(&self, worker_id: &str) -> Result<WorkerShape, Status> {
        if let Some(s) = self.c.worker_shapes.read().await.get(worker_id) {
            return Ok(s.clone());
        }
        let row =
            self.c.store.get_worker(worker_id).await?.ok_or_else(|| {
                Status::not_found(format!("worker {worker_id} is not registered"))
            })?;
        let shape = WorkerShape {
            backend: row.backend.clone(),
            gpus: row
                .gpu_list()
                .into_iter()
                .map(|g| (g.index, g.memory_gb))
                .collect(),
            labels: row.label_map().into_iter().collect(),
        };
        self.c
            .worker_shapes
            .write()
            .await
            .insert(worker_id.to_string(), shape.clone());
        Ok(shape)
    }
}

fn token(t: u64) -> i64 {
    t as i64
}

#[tonic::async_trait]
impl WorkerApi for WorkerService {
    async fn register(
        &self,
        req: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let r = req.into_inner();
        if r.worker_id.is_empty() {
            return Err(Status::invalid_argument("worker_id is empty"));
        }
        if !matches!(r.backend.as_str(), "cpu" | "cuda") {
            return Err(Status::invalid_argument(format!(
                "backend `{}`: expected cpu or cuda",
                r.backend
            )));
        }
        let gpus: Vec<GpuInfoRef> = r
            .gpus
            .iter()
            .map(|g| GpuInfoRef {
                index: g.index,
                name: g.name.clone(),
                memory_gb: g.memory_gb,
            })
            .collect();
        self.c
            .store
            .register_worker(&Registration {
                id: &r.worker_id,
                name: &r.name,
                backend: &r.backend,
                gpus: &gpus,
                labels: &r.labels,
                cpu_slots: r.cpu_slots,
                version: &r.version,
            })
            .await?;
        self.c.worker_shapes.write().await.insert(
            r.worker_id.clone(),
            WorkerShape {
                backend: r.backend.clone(),
                gpus: r.gpus.iter().map(|g| (g.index, g.memory_gb)).collect(),
                labels: r.labels.clone().into_iter().collect(),
            },
        );
        tracing::info!(worker = %r.worker_id, name = %r.name, backend = %r.backend, gpus = r.gpus.len(), "worker registered");
        Ok(Response::new(v1::RegisterResponse {
            heartbeat_interval_ms: self.c.config.heartbeat_interval().as_millis() as u64,
            lease_ttl_ms: self.c.config.lease_ttl.as_millis() as u64,
        }))
    }

    async fn lease(
        &self,
        req: Request<v1::LeaseRequest>,
    ) -> Result<Response<v1::LeaseResponse>, Status> {
        let r = req.into_inner();
        let cap = self.capacity(&r).await?;
        let max_jobs = r.max_jobs.max(1) as usize;
        let wait_until = Instant::now() + Duration::from_millis(r.wait_ms).min(MAX_LEASE_WAIT);
        loop {
            let notified = self.c.work_available.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (grants, changes) = self
                .c
                .store
                .lease(&r.worker_id, &cap, max_jobs, self.c.ttl_ms())
                .await?;
            if !grants.is_empty() {
                self.c.announce(&changes);
                let jobs = self.leased_jobs(grants).await?;
                return Ok(Response::new(v1::LeaseResponse { jobs }));
            }
            let now = Instant::now();
            if now >= wait_until {
                return Ok(Response::new(v1::LeaseResponse { jobs: Vec::new() }));
            }
            // Woken by new work, or re-checked each second in case another
            // coordinator (sharing the database) changed the queue.
            let nap = (wait_until - now).min(Duration::from_secs(1));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn heartbeat(
        &self,
        req: Request<v1::HeartbeatRequest>,
    ) -> Result<Response<v1::HeartbeatResponse>, Status> {
        let r = req.into_inner();
        let held: Vec<(i64, i64)> = r
            .leases
            .iter()
            .map(|l| (l.job_id, token(l.lease_token)))
            .collect();
        let checks = self
            .c
            .store
            .heartbeat(&r.worker_id, &held, self.c.ttl_ms())
            .await?;
        Ok(Response::new(v1::HeartbeatResponse {
            leases: checks
                .into_iter()
                .map(|c| v1::LeaseStatus {
                    job_id: c.job_id,
                    keep_running: c.keep_running,
                    reason: c.reason,
                })
                .collect(),
        }))
    }

    async fn report_progress(
        &self,
        req: Request<v1::ProgressRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let r = req.into_inner();
        let job = self
            .c
            .store
            .report_progress(r.job_id, token(r.lease_token), r.fraction, &r.message)
            .await?;
        self.c.events.publish(progress_event(
            job.id,
            job.experiment_id,
            r.fraction,
            &r.message,
            &r.metrics_json,
        ));
        Ok(Response::new(v1::Ack {}))
    }

    async fn append_logs(
        &self,
        req: Request<v1::AppendLogsRequest>,
    ) -> Result<Response<v1::Ack>, Status> {
        let r = req.into_inner();
        let (job, rows) = self
            .c
            .store
            .append_logs(r.job_id, token(r.lease_token), &r.lines)
            .await?;
        for row in &rows {
            self.c.events.publish(log_event(job.experiment_id, row));
        }
        Ok(Response::new(v1::Ack {}))
    }

    async fn upload(
        &self,
        req: Request<Streaming<v1::UploadChunk>>,
    ) -> Result<Response<v1::UploadResponse>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.next().await {
            Some(Ok(v1::UploadChunk {
                part: Some(v1::upload_chunk::Part::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("an upload starts with its header")),
        };
        atelier_proto::artifact_name::check(&header.name).map_err(Status::invalid_argument)?;
        self.c
            .store
            .check_lease(header.job_id, token(header.lease_token))
            .await?;
        let limit = self.c.config.max_upload_bytes;
        let what = || format!("artifact `{}` of job {}", header.name, header.job_id);
        if header.size > limit {
            return Err(too_large(&what(), limit));
        }
        let mut writer = self.c.blobs.begin().await?;
        let mut received = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk?.part {
                Some(v1::upload_chunk::Part::Data(d)) => {
                    received += d.len() as u64;
                    // Dropping the writer discards what it has written.
                    if received > limit {
                        return Err(too_large(&what(), limit));
                    }
                    writer.write(&d).await?
                }
                _ => return Err(Status::invalid_argument("a second header in one upload")),
            }
        }
        let (sha, size) = writer.finish().await?;
        self.c.metrics.uploaded(size);
        if header.size != 0 && header.size != size {
            return Err(Status::data_loss(format!(
                "artifact `{}` of job {}: {size} bytes arrived, {} were announced",
                header.name, header.job_id, header.size
            )));
        }
        if !header.sha256.is_empty() && header.sha256 != sha {
            return Err(Status::data_loss(format!(
                "artifact `{}` of job {}: sha256 of the bytes received is {sha}, the worker sent {}",
                header.name, header.job_id, header.sha256
            )));
        }
        let (job, row) = self
            .c
            .store
            .insert_artifact(
                header.job_id,
                token(header.lease_token),
                &header.name,
                &sha,
                size as i64,
            )
            .await?;
        self.c.events.publish(v1::Event {
            job_id: job.id,
            experiment_id: job.experiment_id,
            at_ms: row.created_at,
            kind: Some(v1::event::Kind::Artifact(v1::ArtifactStored {
                name: row.name.clone(),
                sha256: row.sha256.clone(),
                size: row.size as u64,
            })),
        });
        Ok(Response::new(v1::UploadResponse {
            artifact: Some(row.to_proto()),
        }))
    }

    async fn job_inputs(
        &self,
        req: Request<v1::JobInputsRequest>,
    ) -> Result<Response<v1::JobInputsResponse>, Status> {
        let r = req.into_inner();
        let inputs = self
            .c
            .store
            .job_inputs(r.job_id, token(r.lease_token))
            .await?;
        Ok(Response::new(v1::JobInputsResponse {
            needs: inputs
                .needs
                .into_iter()
                .map(|n| v1::NeededJob {
                    job_id: n.id,
                    name: n.name,
                    kind: n.kind,
                    artifacts: n.artifacts.iter().map(|a| a.to_proto()).collect(),
                })
                .collect(),
            own: inputs.own.iter().map(|a| a.to_proto()).collect(),
        }))
    }

    type DownloadStream = BoxStream<v1::DownloadChunk>;

    async fn download(
        &self,
        req: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        download(&self.c, &Scope::All, req.into_inner()).await
    }

    async fn complete(
        &self,
        req: Request<v1::CompleteRequest>,
    ) -> Result<Response<v1::CompleteResponse>, Status> {
        let r = req.into_inner();
        let next = match &r.lease_next {
            Some(l) => Some((
                self.capacity(l).await?,
                l.worker_id.clone(),
                l.max_jobs.max(1) as usize,
            )),
            None => None,
        };
        let (change, grants, leased) = self
            .c
            .store
            .complete_and_lease(
                r.job_id,
                token(r.lease_token),
                &r.result_json,
                next.as_ref()
                    .map(|(cap, worker, max)| (worker.as_str(), cap, *max, self.c.ttl_ms())),
            )
            .await?;
        self.c.announce(&[change]);
        self.c.announce(&leased);
        Ok(Response::new(v1::CompleteResponse {
            jobs: self.leased_jobs(grants).await?,
        }))
    }

    async fn fail(&self, req: Request<v1::FailRequest>) -> Result<Response<v1::Ack>, Status> {
        let r = req.into_inner();
        let changes = self
            .c
            .store
            .fail(r.job_id, token(r.lease_token), &r.error, r.retryable)
            .await?;
        self.c.announce(&changes);
        Ok(Response::new(v1::Ack {}))
    }
}
