//! The worker agent: registers with the coordinator, leases jobs that fit its free
//! GPUs and CPU slots, heartbeats its leases, runs jobs, reports their end, and
//! survives the coordinator going away.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atelier_proto::v1;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::{self, is_transient, Api, Backoff};
use crate::jobs::{self, JobContext};
use crate::telemetry::Telemetry;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The coordinator's address (or replicas' list), token and CA.
    pub coordinator: client::ConnectOptions,
    pub name: String,
    /// `cpu` or `cuda`.
    pub backend: String,
    pub gpus: Vec<v1::Gpu>,
    pub labels: HashMap<String, String>,
    /// Jobs that need no GPU (e.g. `prepare`) that may run at once.
    pub cpu_slots: u32,
    /// Jobs run in `<work_dir>/<job id>-<lease token>`.
    pub work_dir: PathBuf,
    /// Kept across jobs: pushed trainsets unpacked, in `<cache_dir>/trainsets/<sha256>`.
    pub cache_dir: PathBuf,
    /// Bytes every download must leave free on its disk.
    pub min_free_disk_bytes: u64,
}

struct Running {
    token: u64,
    cancel: CancellationToken,
    gpus: Vec<u32>,
}

struct Slots {
    free_gpus: BTreeSet<u32>,
    free_cpu: u32,
    running: HashMap<i64, Running>,
}

pub struct Agent {
    config: WorkerConfig,
    id: String,
    api: Api,
    slots: Mutex<Slots>,
    slot_freed: Notify,
    heartbeat_every: Mutex<Duration>,
    /// Cancelled by [`Agent::drain`]: lease nothing more, leave when idle.
    draining: CancellationToken,
    telemetry: Arc<Telemetry>,
}

impl Agent {
    pub fn new(config: WorkerConfig) -> Result<Arc<Agent>, String> {
        let channel = client::channel(&config.coordinator)?;
        let id = format!("{}-{:06x}", config.name, rand::random::<u32>() & 0xff_ffff);
        Ok(Arc::new(Agent {
            telemetry: Arc::new(Telemetry::new(
                &id,
                config.gpus.iter().map(|g| g.index).collect(),
            )),
            slots: Mutex::new(Slots {
                free_gpus: config.gpus.iter().map(|g| g.index).collect(),
                free_cpu: config.cpu_slots,
                running: HashMap::new(),
            }),
            id,
            api: client::worker_api(channel),
            config,
            slot_freed: Notify::new(),
            heartbeat_every: Mutex::new(Duration::from_secs(2)),
            draining: CancellationToken::new(),
        }))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// This worker's metrics, for its `/metrics` endpoint.
    pub fn telemetry(&self) -> Arc<Telemetry> {
        self.telemetry.clone()
    }

    /// Stops leasing: the jobs running now finish and are reported, then
    /// [`Agent::run`] returns. A cancelled `shutdown` still hands them back at once.
    pub fn drain(&self) {
        if !self.draining.is_cancelled() {
            tracing::info!(worker = %self.id, "draining: finishing the running jobs, taking no more");
            self.draining.cancel();
        }
    }

    /// Runs until `shutdown` is cancelled, or until [`Agent::drain`] was called and
    /// the running jobs have ended. Jobs still running at shutdown are handed back
    /// (re-queued at once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        // Every log line of this agent carries its id (`worker`), its jobs' lines
        // also the job's (see `spawn_job`).
        let span = tracing::info_span!("worker", worker = %self.id);
        self.run_in_span(shutdown).instrument(span).await
    }

    async fn run_in_span(self: Arc<Self>, shutdown: CancellationToken) {
        self.register(&shutdown).await;
        let hb = tokio::spawn(
            self.clone()
                .heartbeat_loop(shutdown.clone())
                .in_current_span(),
        );
        self.clone().lease_loop(shutdown.clone()).await;
        while !shutdown.is_cancelled() && !self.slots.lock().unwrap().running.is_empty() {
            tokio::select! {
                _ = self.slot_freed.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        let running: Vec<CancellationToken> = self
            .slots
            .lock()
            .unwrap()
            .running
            .values()
            .map(|r| r.cancel.clone())
            .collect();
        for c in running {
            c.cancel();
        }
        // Give stopped jobs a moment to hand their leases back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.slots.lock().unwrap().running.is_empty()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hb.abort();
    }

    /// Registers, retrying with backoff until the coordinator answers.
    async fn register(&self, shutdown: &CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let req = v1::RegisterRequest {
                worker_id: self.id.clone(),
                name: self.config.name.clone(),
                backend: self.config.backend.clone(),
                gpus: self.config.gpus.clone(),
                labels: self.config.labels.clone(),
                cpu_slots: self.config.cpu_slots,
                version: env!("CARGO_PKG_VERSION").into(),
            };
            match self.api.clone().register(req).await {
                Ok(resp) => {
                    let r = resp.into_inner();
                    *self.heartbeat_every.lock().unwrap() =
                        Duration::from_millis(r.heartbeat_interval_ms.max(50));
                    tracing::info!(worker = %self.id, "registered with {}", self.config.coordinator);
                    return;
                }
                Err(e) => {
                    tracing::warn!(
                        "cannot register with {}: {}; retrying",
                        self.config.coordinator,
                        e.message()
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let every = *self.heartbeat_every.lock().unwrap();
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.cancelled() => return,
            }
            let leases: Vec<v1::HeldLease> = self
                .slots
                .lock()
                .unwrap()
                .running
                .iter()
                .map(|(&job_id, r)| v1::HeldLease {
                    job_id,
                    lease_token: r.token,
                })
                .collect();
            let req = v1::HeartbeatRequest {
                worker_id: self.id.clone(),
                leases,
            };
            match self.api.clone().heartbeat(req).await {
                Ok(resp) => {
                    for status in resp.into_inner().leases {
                        if !status.keep_running {
                            self.stop_job(status.job_id, &status.reason);
                        }
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    tracing::warn!(
                        "coordinator forgot this worker ({}); registering again",
                        e.message()
                    );
                    self.register(&shutdown).await;
                }
                Err(e) => tracing::warn!("heartbeat failed: {}", e.message()),
            }
        }
    }

    fn stop_job(&self, job_id: i64, reason: &str) {
        if let Some(r) = self.slots.lock().unwrap().running.get(&job_id) {
            if !r.cancel.is_cancelled() {
                tracing::warn!(job = job_id, "stopping: {reason}");
                r.cancel.cancel();
            }
        }
    }

    async fn lease_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut backoff = Backoff::default();
        while !shutdown.is_cancelled() && !self.draining.is_cancelled() {
            let (free_gpus, free_cpu) = {
                let s = self.slots.lock().unwrap();
                (s.free_gpus.iter().copied().collect::<Vec<_>>(), s.free_cpu)
            };
            let room = free_gpus.len() as u32 + free_cpu;
            if room == 0 {
                tokio::select! {
                    _ = self.slot_freed.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.cancelled() => return,
                    _ = self.draining.cancelled() => return,
                }
                continue;
            }
            let req = v1::LeaseRequest {
                worker_id: self.id.clone(),
                free_gpus,
                free_cpu_slots: free_cpu,
                max_jobs: room,
                wait_ms: 10_000,
            };
            let mut api = self.api.clone();
            let leased = tokio::select! {
                r = api.lease(req) => r,
                _ = shutdown.cancelled() => return,
                // Not on drain: jobs the coordinator grants in this long poll would
                // wait for their lease to expire; they run instead, like the others.
            };
            match leased {
                Ok(resp) => {
                    backoff.reset();
                    for lj in resp.into_inner().jobs {
                        self.clone().start_job(lj, &shutdown);
                    }
                }
                Err(e) if e.code() == tonic::Code::NotFound => {
                    self.register(&shutdown).await;
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("lease failed: {}; retrying in {delay:?}", e.message());
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Takes the job's GPUs (or a CPU slot) from the free pool and runs it.
    fn start_job(self: Arc<Self>, lj: v1::LeasedJob, shutdown: &CancellationToken) {
        let Some(job) = &lj.job else { return };
        let cancel = shutdown.child_token();
        {
            let mut s = self.slots.lock().unwrap();
            if lj.gpu_indexes.is_empty() {
                s.free_cpu = s.free_cpu.saturating_sub(1);
            }
            for g in &lj.gpu_indexes {
                s.free_gpus.remove(g);
            }
            s.running.insert(
                job.id,
                Running {
                    token: lj.lease_token,
                    cancel: cancel.clone(),
                    gpus: lj.gpu_indexes.clone(),
                },
            );
        }
        self.spawn_job(lj, cancel, shutdown.clone());
    }

    /// Runs `next`, leased when `done` completed, in the slot `done` held: the slot
    /// never returns to the free pool, so the lease loop cannot hand it out twice.
    fn hand_over(self: Arc<Self>, done: i64, next: v1::LeasedJob, shutdown: &CancellationToken) {
        let Some(job) = &next.job else { return };
        let cancel = shutdown.child_token();
        {
            let mut s = self.slots.lock().unwrap();
            let old = s.running.remove(&done);
            let old_gpus = old.map(|r| r.gpus).unwrap_or_default();
            for g in old_gpus.iter().filter(|g| !next.gpu_indexes.contains(g)) {
                s.free_gpus.insert(*g);
            }
            s.running.insert(
                job.id,
                Running {
                    token: next.lease_token,
                    cancel: cancel.clone(),
                    gpus: next.gpu_indexes.clone(),
                },
            );
        }
        self.spawn_job(next, cancel, shutdown.clone());
    }

    fn spawn_job(
        self: Arc<Self>,
        lj: v1::LeasedJob,
        cancel: CancellationToken,
        shutdown: CancellationToken,
    ) {
        let Some(job) = lj.job else { return };
        tracing::info!(job = job.id, name = %job.name, kind = %job.kind, attempt = job.attempt, "started");
        let work_dir = self
            .config
            .work_dir
            .join(format!("{}-{}", job.id, lj.lease_token));
        let ctx = JobContext::new(
            job,
            lj.lease_token,
            lj.gpu_indexes,
            work_dir,
            self.config.cache_dir.clone(),
            cancel,
            self.api.clone(),
        )
        .keep_free(self.config.min_free_disk_bytes)
        .report_to(self.telemetry.clone());
        self.telemetry.job_started(ctx.job.id, &ctx.job.kind);
        // With the worker's id too: a job handed over starts outside the agent's span.
        let span =
            tracing::info_span!("job", worker = %self.id, job = ctx.job.id, kind = %ctx.job.kind);
        tokio::spawn(async move {
            let job_id = ctx.job.id;
            let next = self.execute(ctx, &shutdown).instrument(span).await;
            self.telemetry.job_ended(job_id);
            if let Some(next) = next {
                self.hand_over(job_id, next, &shutdown);
                return;
            }
            let mut s = self.slots.lock().unwrap();
            if let Some(r) = s.running.remove(&job_id) {
                if r.gpus.is_empty() {
                    s.free_cpu += 1;
                }
                s.free_gpus.extend(r.gpus);
            }
            drop(s);
            self.slot_freed.notify_one();
        });
    }

    /// Runs the job and reports its end; returns the next job if the coordinator
    /// leased one for this slot along with the completion.
    async fn execute(
        &self,
        ctx: JobContext,
        shutdown: &CancellationToken,
    ) -> Option<v1::LeasedJob> {
        let outcome = jobs::run(&ctx).await;
        let mut next = None;
        ctx.flush_logs().await;
        // Artifacts are uploaded by now. Cleaning up before reporting means the slot
        // is freed right after the coordinator acknowledges the end.
        ctx.remove_work_dir().await;
        if shutdown.is_cancelled() {
            // Hand the job back now rather than at lease expiry.
            let err = jobs::JobError::retryable(format!("worker {} shut down", self.id));
            self.send_end(&ctx, &Err(err), false).await.ok();
            tracing::info!(job = ctx.job.id, "handed back: worker shutting down");
        } else if ctx.is_cancelled() {
            tracing::info!(job = ctx.job.id, "stopped");
        } else {
            next = self.report_end(&ctx, outcome, shutdown).await;
        }
        next
    }

    /// Reports the end of a job, retrying until the coordinator answers: a finished
    /// job is never lost to a coordinator restart.
    async fn report_end(
        &self,
        ctx: &JobContext,
        outcome: Result<serde_json::Value, jobs::JobError>,
        shutdown: &CancellationToken,
    ) -> Option<v1::LeasedJob> {
        let mut backoff = Backoff::default();
        loop {
            if ctx.is_cancelled() {
                return None;
            }
            let lease_next = !shutdown.is_cancelled() && !self.draining.is_cancelled();
            let sent = self.send_end(ctx, &outcome, lease_next).await;
            match sent {
                Ok(next) => {
                    match &outcome {
                        Ok(_) => tracing::info!(job = ctx.job.id, "succeeded"),
                        Err(e) => tracing::warn!(job = ctx.job.id, "failed: {}", e.message),
                    }
                    return next;
                }
                Err(e) if is_transient(&e) => {
                    let d = backoff.next_delay();
                    tracing::warn!(
                        job = ctx.job.id,
                        "cannot report the end of the job: {}; retrying in {d:?}",
                        e.message()
                    );
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    tracing::warn!(job = ctx.job.id, "end of job refused: {}", e.message());
                    return None;
                }
            }
        }
    }

    /// Sends the end of a job once. After a success, with `lease_next`, asks in the
    /// same call for the next job for this job's slot.
    async fn send_end(
        &self,
        ctx: &JobContext,
        outcome: &Result<serde_json::Value, jobs::JobError>,
        lease_next: bool,
    ) -> Result<Option<v1::LeasedJob>, tonic::Status> {
        match outcome {
            Ok(result) => {
                let lease_next = lease_next.then(|| v1::LeaseRequest {
                    worker_id: self.id.clone(),
                    free_gpus: ctx.gpu_indexes.clone(),
                    free_cpu_slots: u32::from(ctx.gpu_indexes.is_empty()),
                    max_jobs: 1,
                    wait_ms: 0,
                });
                let resp = self
                    .api
                    .clone()
                    .complete(v1::CompleteRequest {
                        job_id: ctx.job.id,
                        lease_token: ctx.token,
                        result_json: result.to_string(),
                        lease_next,
                    })
                    .await?;
                Ok(resp.into_inner().jobs.into_iter().next())
            }
            Err(e) => self
                .api
                .clone()
                .fail(v1::FailRequest {
                    job_id: ctx.job.id,
                    lease_token: ctx.token,
                    error: e.message.clone(),
                    retryable: e.retryable,
                })
                .await
                .map(|_| None),
        }
    }
}
