//! `Atelier`: what people and scripts call (through the CLI).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use atelier_proto::trainset_ref::{self, TrainsetRef};
use atelier_proto::v1::{self, atelier_server::Atelier};
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::scope::{caller, Scope};
use super::{download, too_large, BoxStream, Coordinator};
use crate::clock::now_ms;
use crate::scheduler::{explain_waiting, WorkerView};
use crate::spec::{self, JobSpec, Requirements};
use crate::store::{JobRow, Target, TERMINAL};

pub struct AtelierService {
    c: Arc<Coordinator>,
}

impl AtelierService {
    pub fn new(c: Arc<Coordinator>) -> AtelierService {
        AtelierService { c }
    }

    async fn explain(&self, job: &JobRow) -> Result<String, Status> {
        if job.state != "queued" {
            return Ok(String::new());
        }
        if job.pending_needs > 0 {
            let waiting: Vec<String> = self
                .c
                .store
                .needs_of(job.id)
                .await?
                .into_iter()
                .filter(|(_, _, state)| state != "succeeded")
                .map(|(id, name, state)| format!("{id} `{name}` ({state})"))
                .collect();
            return Ok(format!(
                "waiting for the jobs it needs to succeed: {}",
                waiting.join(", ")
            ));
        }
        if let Some((id, name, state)) = self.c.store.cache_leader(job).await? {
            return Ok(format!(
                "waiting for job {id} `{name}` ({state}), which prepares the same content with \
                 the same params: its artifacts will be reused"
            ));
        }
        let offline_after = self.c.config.worker_offline_after().as_millis() as i64;
        let now = now_ms();
        let workers: Vec<WorkerView> = self
            .c
            .store
            .list_workers(None)
            .await?
            .into_iter()
            .map(|w| WorkerView {
                name: w.name.clone(),
                online: w.last_seen >= now - offline_after,
                backend: w.backend.clone(),
                gpus: w.gpu_list().iter().map(|g| g.memory_gb).collect(),
                labels: w.label_map().into_iter().collect(),
                cpu_slots: w.cpu_slots as u32,
                running: w.running_jobs().len(),
            })
            .collect();
        let ahead = self.c.store.queue_position(job).await?;
        Ok(explain_waiting(&job.requirements(), &workers, ahead))
    }
}

impl AtelierService {
    /// Replaces each `prepare` job's `params.trainset` that names a pushed trainset
    /// with the reference pinned to its content's sha256, so that every job of the
    /// experiment reads the same bytes whatever is pushed later. Errors name the job
    /// and the field.
    async fn pin_trainsets(&self, jobs: &mut [JobSpec]) -> Result<(), Status> {
        // Sweeps repeat one reference in many jobs: resolve each once.
        let mut pinned: HashMap<String, String> = HashMap::new();
        for job in jobs.iter_mut().filter(|j| j.kind == "prepare") {
            let Some(value) = job.params.get("trainset").and_then(|v| v.as_str()) else {
                continue;
            };
            let Some(parsed) = TrainsetRef::parse(value) else {
                continue;
            };
            let value = value.to_string();
            let fail = |m: String| {
                Status::invalid_argument(format!("job `{}`: params.trainset: {m}", job.name))
            };
            let pin = match pinned.get(&value) {
                Some(p) => p.clone(),
                None => {
                    let r = parsed.map_err(fail)?;
                    let row = match self.c.store.resolve_trainset(&r).await {
                        Ok(row) => row,
                        Err(crate::Error::Invalid(m)) => return Err(fail(m)),
                        Err(e) => return Err(e.into()),
                    };
                    if !self.c.blobs.contains(&row.sha256).await? {
                        return Err(fail(format!(
                            "the content of `{value}` (sha256 {}) is missing from the artifact \
                             store: push it again",
                            row.sha256
                        )));
                    }
                    let p = r.pinned(&row.sha256);
                    pinned.insert(value, p.clone());
                    p
                }
            };
            job.params["trainset"] = serde_json::Value::String(pin);
        }
        Ok(())
    }

    /// Records the name of a push whose bytes are stored.
    async fn record_push(
        &self,
        header: &v1::PushTrainsetHeader,
        sha: &str,
        size: u64,
        uploaded: bool,
    ) -> Result<Response<v1::PushTrainsetResponse>, Status> {
        let (row, _) = self
            .c
            .store
            .record_trainset(&header.name, sha, size as i64, header.files as i64)
            .await?;
        tracing::info!(name = %row.name, sha256 = %row.sha256, uploaded, "trainset pushed");
        Ok(Response::new(v1::PushTrainsetResponse {
            trainset: Some(row.to_proto()),
            uploaded,
            missing: false,
        }))
    }
}

fn target(t: Option<v1::target_request::Target>) -> Result<Target, Status> {
    match t {
        Some(v1::target_request::Target::JobId(id)) => Ok(Target::Job(id)),
        Some(v1::target_request::Target::ExperimentId(id)) => Ok(Target::Experiment(id)),
        None => Err(Status::invalid_argument("no job or experiment given")),
    }
}

fn job_spec(j: v1::JobSpec) -> Result<JobSpec, Status> {
    let params: serde_json::Value = serde_json::from_str(&j.params_json).map_err(|e| {
        Status::invalid_argument(format!("job `{}`: params are not JSON: {e}", j.name))
    })?;
    let sweep_point = if j.sweep_point_json.is_empty() {
        None
    } else {
        serde_json::from_str(&j.sweep_point_json).ok()
    };
    let req = j.requires.unwrap_or_default();
    Ok(JobSpec {
        name: j.name,
        kind: j.kind,
        params,
        priority: j.priority,
        max_attempts: j.max_attempts,
        requires: Requirements {
            gpus: req.gpus,
            gpu_mem_gb: req.gpu_mem_gb,
            backend: if req.backend.is_empty() {
                "any".into()
            } else {
                req.backend
            },
            labels: req.labels.into_iter().collect(),
        },
        needs: j.needs,
        sweep_point,
    })
}

#[tonic::async_trait]
impl Atelier for AtelierService {
    async fn submit(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let owner = caller(&self.c, &req)?.map(|c| c.name).unwrap_or_default();
        let r = req.into_inner();
        if r.name.trim().is_empty() {
            return Err(Status::invalid_argument("experiment name is empty"));
        }
        let jobs = r
            .jobs
            .into_iter()
            .map(job_spec)
            .collect::<Result<Vec<_>, _>>()?;
        spec::validate_jobs(&r.name, &jobs).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut jobs = jobs;
        self.pin_trainsets(&mut jobs).await?;
        let (experiment_id, job_ids, cached) = self
            .c
            .store
            .submit_experiment_as(&owner, &r.name, &r.source, &jobs)
            .await?;
        tracing::info!(
            experiment = experiment_id,
            jobs = job_ids.len(),
            cached = cached.len(),
            "experiment submitted"
        );
        self.c.announce(&cached);
        self.c.work_available.notify_waiters();
        Ok(Response::new(v1::SubmitResponse {
            experiment_id,
            job_ids,
        }))
    }

    async fn list_experiments(
        &self,
        req: Request<v1::ListExperimentsRequest>,
    ) -> Result<Response<v1::ListExperimentsResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let r = req.into_inner();
        let name = (!r.name.is_empty()).then_some(r.name.as_str());
        let rows = self
            .c
            .store
            .list_experiments_of(scope.owner(), name)
            .await?;
        let count = |m: &std::collections::HashMap<String, i64>, s: &str| {
            m.get(s).copied().unwrap_or(0) as u32
        };
        Ok(Response::new(v1::ListExperimentsResponse {
            experiments: rows
                .into_iter()
                .map(|e| v1::Experiment {
                    id: e.experiment.id,
                    name: e.experiment.name.clone(),
                    created_at_ms: e.experiment.created_at,
                    queued: count(&e.counts, "queued"),
                    running: count(&e.counts, "running"),
                    succeeded: count(&e.counts, "succeeded"),
                    failed: count(&e.counts, "failed"),
                    cancelled: count(&e.counts, "cancelled"),
                })
                .collect(),
        }))
    }

    async fn list_jobs(
        &self,
        req: Request<v1::ListJobsRequest>,
    ) -> Result<Response<v1::ListJobsResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let r = req.into_inner();
        let exp = (r.experiment_id != 0).then_some(r.experiment_id);
        let state = (!r.state.is_empty()).then_some(r.state.as_str());
        if let Some(s) = state {
            if !["queued", "running"].contains(&s) && !TERMINAL.contains(&s) {
                return Err(Status::invalid_argument(format!(
                    "state `{s}`: expected queued, running, succeeded, failed or cancelled"
                )));
            }
        }
        let limit = (r.limit != 0).then_some(r.limit as i64);
        let rows = self
            .c
            .store
            .list_jobs_of(scope.owner(), exp, state, limit)
            .await?;
        let names = self.c.store.experiment_names().await?;
        let mut needs: std::collections::HashMap<i64, Vec<i64>> = Default::default();
        for (job, need) in self.c.store.needs_edges(exp).await? {
            needs.entry(job).or_default().push(need);
        }
        Ok(Response::new(v1::ListJobsResponse {
            jobs: rows
                .iter()
                .map(|j| {
                    j.to_proto(
                        names.get(&j.experiment_id).map_or("", |s| s.as_str()),
                        needs.remove(&j.id).unwrap_or_default(),
                    )
                })
                .collect(),
        }))
    }

    async fn get_job(
        &self,
        req: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let id = req.into_inner().job_id;
        scope.check_job(&self.c, id).await?;
        let job = self.c.store.get_job(id).await?;
        let needs = self.c.store.needs_of(id).await?;
        let exp_name = self.c.store.experiment_name(job.experiment_id).await?;
        let waiting_reason = self.explain(&job).await?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(job.to_proto(&exp_name, needs.iter().map(|n| n.0).collect())),
            artifacts: self
                .c
                .store
                .artifacts_of(id)
                .await?
                .iter()
                .map(|a| a.to_proto())
                .collect(),
            attempts: self
                .c
                .store
                .attempts_of(id)
                .await?
                .iter()
                .map(|a| a.to_proto())
                .collect(),
            waiting_reason,
            needs_names: needs.into_iter().map(|n| n.1).collect(),
        }))
    }

    async fn cancel(
        &self,
        req: Request<v1::TargetRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let r = req.into_inner();
        let t = target(r.target)?;
        scope.check_target(&self.c, t).await?;
        let reason = if r.reason.is_empty() {
            "cancelled by user".to_string()
        } else {
            r.reason
        };
        let changes = self.c.store.cancel(t, &reason).await?;
        self.c.announce(&changes);
        Ok(Response::new(v1::ChangeResponse {
            job_ids: changes.iter().map(|c| c.job_id).collect(),
        }))
    }

    async fn retry(
        &self,
        req: Request<v1::TargetRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let t = target(req.into_inner().target)?;
        scope.check_target(&self.c, t).await?;
        let changes = self.c.store.retry(t).await?;
        self.c.announce(&changes);
        Ok(Response::new(v1::ChangeResponse {
            job_ids: changes.iter().map(|c| c.job_id).collect(),
        }))
    }

    async fn set_priority(
        &self,
        req: Request<v1::SetPriorityRequest>,
    ) -> Result<Response<v1::ChangeResponse>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let r = req.into_inner();
        let t = target(r.target.and_then(|t| t.target))?;
        scope.check_target(&self.c, t).await?;
        let job_ids = self.c.store.set_priority(t, r.priority).await?;
        Ok(Response::new(v1::ChangeResponse { job_ids }))
    }

    async fn list_workers(
        &self,
        _req: Request<v1::ListWorkersRequest>,
    ) -> Result<Response<v1::ListWorkersResponse>, Status> {
        let offline_after = self.c.config.worker_offline_after().as_millis() as i64;
        let now = now_ms();
        let rows = self.c.store.list_workers(None).await?;
        Ok(Response::new(v1::ListWorkersResponse {
            workers: rows
                .iter()
                .map(|w| w.to_proto(w.last_seen >= now - offline_after))
                .collect(),
        }))
    }

    type LogsStream = BoxStream<v1::LogLine>;

    async fn logs(
        &self,
        req: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let r = req.into_inner();
        let c = self.c.clone();
        c.store.get_job(r.job_id).await?;
        scope.check_job(&c, r.job_id).await?;
        let mut events = c.events.subscribe();
        let stream = async_stream::try_stream! {
            let mut after = r.after_seq;
            loop {
                let rows = c.store.logs_after(r.job_id, after, 1000).await?;
                let got = rows.len();
                for row in rows {
                    after = row.id;
                    yield row.to_proto();
                }
                if got == 1000 {
                    continue;
                }
                if !r.follow {
                    break;
                }
                let job = c.store.get_job(r.job_id).await?;
                if TERMINAL.contains(&job.state.as_str()) {
                    // Lines written just before the end were read above.
                    if c.store.logs_after(r.job_id, after, 1).await?.is_empty() {
                        break;
                    }
                    continue;
                }
                // Wait for news of this job, or re-read within a second anyway.
                let wait = async {
                    loop {
                        match events.recv().await {
                            Ok(ev) if ev.job_id == r.job_id => break,
                            Ok(_) | Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => {
                                tokio::time::sleep(Duration::from_secs(1)).await;
                                break;
                            }
                        }
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), wait).await;
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    type WatchStream = BoxStream<v1::Event>;

    async fn watch(
        &self,
        req: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        let exp = req.into_inner().experiment_id;
        if exp != 0 {
            scope.check_experiment(&self.c, exp).await?;
        }
        let mut events = self.c.events.subscribe();
        let c = self.c.clone();
        let stream = async_stream::try_stream! {
            // Experiment id -> whether the caller may see it (owners never change).
            let mut visible: HashMap<i64, bool> = HashMap::new();
            loop {
                match events.recv().await {
                    Ok(ev) if exp == 0 || ev.experiment_id == exp => {
                        let shown = match (scope.owner(), visible.get(&ev.experiment_id)) {
                            (None, _) => true,
                            (Some(_), Some(v)) => *v,
                            (Some(me), None) => {
                                let v = c.store.experiment_owner(ev.experiment_id).await? == me;
                                visible.insert(ev.experiment_id, v);
                                v
                            }
                        };
                        if shown {
                            yield ev;
                        }
                    }
                    Ok(_) => {}
                    Err(RecvError::Lagged(n)) => {
                        tracing::warn!("a watcher fell {n} events behind");
                    }
                    Err(RecvError::Closed) => break,
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    type DownloadStream = BoxStream<v1::DownloadChunk>;

    async fn download(
        &self,
        req: Request<v1::DownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let scope = Scope::of(&self.c, &req)?;
        download(&self.c, &scope, req.into_inner()).await
    }

    async fn push_trainset(
        &self,
        req: Request<Streaming<v1::PushTrainsetChunk>>,
    ) -> Result<Response<v1::PushTrainsetResponse>, Status> {
        let mut stream = req.into_inner();
        let header = match stream.next().await {
            Some(Ok(v1::PushTrainsetChunk {
                part: Some(v1::push_trainset_chunk::Part::Header(h)),
            })) => h,
            Some(Err(e)) => return Err(e),
            _ => return Err(Status::invalid_argument("a push starts with its header")),
        };
        trainset_ref::check_name(&header.name).map_err(Status::invalid_argument)?;
        let sha = header.sha256.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(format!(
                "`{}` is not a sha256 hex digest",
                header.sha256
            )));
        }
        // Content-addressed: stored bytes are not read again.
        if self.c.blobs.contains(&sha).await? {
            return self.record_push(&header, &sha, header.size, false).await;
        }
        let limit = self.c.config.max_upload_bytes;
        let what = || format!("trainset `{}`", header.name);
        if header.size > limit {
            return Err(too_large(&what(), limit));
        }
        let mut writer = self.c.blobs.begin().await?;
        let mut received = false;
        let mut bytes = 0u64;
        while let Some(chunk) = stream.next().await {
            match chunk?.part {
                Some(v1::push_trainset_chunk::Part::Data(d)) => {
                    received = true;
                    bytes += d.len() as u64;
                    // Dropping the writer discards what it has written.
                    if bytes > limit {
                        return Err(too_large(&what(), limit));
                    }
                    writer.write(&d).await?
                }
                _ => return Err(Status::invalid_argument("a second header in one push")),
            }
        }
        if !received {
            return Ok(Response::new(v1::PushTrainsetResponse {
                trainset: None,
                uploaded: false,
                missing: true,
            }));
        }
        let (got, size) = writer.finish().await?;
        self.c.metrics.uploaded(size);
        if got != sha || size != header.size {
            return Err(Status::data_loss(format!(
                "trainset `{}`: the {size} bytes received have sha256 {got}, the client \
                 announced {} bytes with sha256 {sha}; nothing recorded",
                header.name, header.size
            )));
        }
        self.record_push(&header, &got, size, true).await
    }
}
