//! The handle a running job gets: its lease, its folder, and channels to the
//! coordinator for logs, progress and artifacts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atelier_proto::v1;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::client::{is_transient, Api, Backoff};
use crate::telemetry::Telemetry;

/// How a job failed: `retryable` errors may pass on another attempt (a lost
/// connection, a full disk); the others (bad input) will not.
#[derive(Debug, Clone)]
pub struct JobError {
    pub message: String,
    pub retryable: bool,
}

impl JobError {
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retryable: false,
        }
    }
    pub fn retryable(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            retryable: true,
        }
    }
}

pub struct JobContext {
    pub job: v1::Job,
    pub token: u64,
    pub gpu_indexes: Vec<u32>,
    /// Created on first use by [`JobContext::work_dir`]; removed by the agent.
    work_dir: PathBuf,
    /// What outlives jobs on this worker (unpacked pushed trainsets, by sha256).
    pub cache_dir: PathBuf,
    work_dir_made: std::sync::atomic::AtomicBool,
    /// Cancelled when the coordinator says to stop (cancel, or the lease moved on)
    /// or the worker shuts down.
    pub cancel: CancellationToken,
    pub(crate) api: Api,
    pending_logs: Mutex<Vec<String>>,
    last_progress: Mutex<Option<Instant>>,
    /// Bytes a download must leave free on its disk ([`JobContext::keep_free`]).
    keep_free: u64,
    /// Where progress metrics (step rate, loss) go for the worker's `/metrics`.
    telemetry: Option<Arc<Telemetry>>,
}

/// Progress reports closer together than this are dropped (the last one is sent).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
const UPLOAD_CHUNK: usize = 1024 * 1024;

impl JobContext {
    pub fn new(
        job: v1::Job,
        token: u64,
        gpu_indexes: Vec<u32>,
        work_dir: PathBuf,
        cache_dir: PathBuf,
        cancel: CancellationToken,
        api: Api,
    ) -> JobContext {
        JobContext {
            job,
            token,
            gpu_indexes,
            work_dir,
            cache_dir,
            work_dir_made: std::sync::atomic::AtomicBool::new(false),
            cancel,
            api,
            pending_logs: Mutex::new(Vec::new()),
            last_progress: Mutex::new(None),
            keep_free: 0,
            telemetry: None,
        }
    }

    /// Progress metrics also go to `telemetry` (every report, not only those sent).
    pub fn report_to(mut self, telemetry: Arc<Telemetry>) -> JobContext {
        self.telemetry = Some(telemetry);
        self
    }

    /// Downloads fail (retryable, with the numbers) unless they leave `bytes` free
    /// on the disk they write to.
    pub fn keep_free(mut self, bytes: u64) -> JobContext {
        self.keep_free = bytes;
        self
    }

    /// Why `artifact` must not be downloaded to `dest`: the disk would keep less
    /// than [`JobContext::keep_free`] bytes. A size of 0 (a blob asked for by its
    /// sha256) checks the reserve alone.
    fn disk_shortfall(&self, artifact: &v1::Artifact, dest: &Path) -> Option<JobError> {
        let available = crate::disk::available_bytes(dest).ok()?;
        let needed = artifact.size.saturating_add(self.keep_free);
        (available < needed).then(|| {
            let gb = |b: u64| b as f64 / 1e9;
            JobError::retryable(format!(
                "not enough disk space for `{}` of job {}: {:.2} GB needed and {:.2} GB \
                 kept free (`--min-free-disk-gb`), {:.2} GB available at `{}`",
                artifact.name,
                artifact.job_id,
                gb(artifact.size),
                gb(self.keep_free),
                gb(available),
                dest.parent().unwrap_or(dest).display()
            ))
        })
    }

    /// The job's own folder, created on first use (most `noop` jobs never ask).
    pub async fn work_dir(&self) -> Result<&Path, JobError> {
        use std::sync::atomic::Ordering;
        if !self.work_dir_made.load(Ordering::Acquire) {
            tokio::fs::create_dir_all(&self.work_dir)
                .await
                .map_err(|e| {
                    JobError::retryable(format!("cannot create `{}`: {e}", self.work_dir.display()))
                })?;
            self.work_dir_made.store(true, Ordering::Release);
        }
        Ok(&self.work_dir)
    }

    /// Removes the job's folder if it was made.
    pub async fn remove_work_dir(&self) {
        if self
            .work_dir_made
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let _ = tokio::fs::remove_dir_all(&self.work_dir).await;
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Queues a log line; lines reach the coordinator with the next flush.
    pub fn log(&self, line: impl Into<String>) {
        let line = line.into();
        tracing::info!(job = self.job.id, "{line}");
        self.pending_logs.lock().unwrap().push(line);
    }

    /// Sends queued log lines. Lines are kept for a later flush while the
    /// coordinator is away; a refused token drops them (the job is over).
    pub async fn flush_logs(&self) {
        let lines = std::mem::take(&mut *self.pending_logs.lock().unwrap());
        if lines.is_empty() {
            return;
        }
        let req = v1::AppendLogsRequest {
            job_id: self.job.id,
            lease_token: self.token,
            lines: lines.clone(),
        };
        if let Err(e) = self.api.clone().append_logs(req).await {
            if is_transient(&e) {
                let mut pending = self.pending_logs.lock().unwrap();
                let newer = std::mem::take(&mut *pending);
                *pending = lines;
                pending.extend(newer);
                // Bound what a long outage can pile up.
                let len = pending.len();
                if len > 10_000 {
                    pending.drain(..len - 10_000);
                }
            } else {
                tracing::warn!(job = self.job.id, "log lines refused: {}", e.message());
            }
        }
    }

    /// Reports progress (0..=1) with a short message; throttled.
    pub async fn progress(&self, fraction: f64, message: impl Into<String>) {
        self.progress_with_metrics(fraction, message, "").await
    }

    pub async fn progress_with_metrics(
        &self,
        fraction: f64,
        message: impl Into<String>,
        metrics_json: &str,
    ) {
        if let Some(t) = &self.telemetry {
            t.progress(self.job.id, metrics_json);
        }
        {
            let mut last = self.last_progress.lock().unwrap();
            if fraction < 1.0 && last.is_some_and(|t| t.elapsed() < PROGRESS_EVERY) {
                return;
            }
            *last = Some(Instant::now());
        }
        let req = v1::ProgressRequest {
            job_id: self.job.id,
            lease_token: self.token,
            fraction,
            message: message.into(),
            metrics_json: metrics_json.to_string(),
        };
        if let Err(e) = self.api.clone().report_progress(req).await {
            tracing::debug!(job = self.job.id, "progress not delivered: {}", e.message());
        }
        self.flush_logs().await;
    }

    /// Uploads a file as an artifact named `name`, retrying while the coordinator is
    /// away. The coordinator checks the sha256 computed here against what arrived.
    pub async fn upload(&self, name: &str, path: &Path) -> Result<v1::Artifact, JobError> {
        let (sha, size) = file_sha256(path).await.map_err(|e| {
            JobError::retryable(format!("reading `{}` for upload: {e}", path.display()))
        })?;
        let mut backoff = Backoff::default();
        loop {
            if self.is_cancelled() {
                return Err(JobError::permanent("cancelled during upload"));
            }
            match self.upload_once(name, path, &sha, size).await {
                Ok(a) => {
                    self.log(format!(
                        "stored artifact `{name}` ({size} bytes, sha256 {sha})"
                    ));
                    return Ok(a);
                }
                // Over the coordinator's `max_upload_gb`: no retry can pass.
                Err(e) if e.code() == tonic::Code::ResourceExhausted => {
                    return Err(JobError::permanent(format!(
                        "upload of `{name}` ({size} bytes) refused: {}",
                        e.message()
                    )))
                }
                Err(e) if is_transient(&e) => {
                    tracing::warn!(
                        job = self.job.id,
                        "upload of `{name}` failed: {}; retrying",
                        e.message()
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    return Err(JobError::permanent(format!(
                        "upload of `{name}` refused: {}",
                        e.message()
                    )))
                }
            }
        }
    }

    async fn upload_once(
        &self,
        name: &str,
        path: &Path,
        sha: &str,
        size: u64,
    ) -> Result<v1::Artifact, tonic::Status> {
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| tonic::Status::internal(format!("`{}`: {e}", path.display())))?;
        let header = v1::UploadChunk {
            part: Some(v1::upload_chunk::Part::Header(v1::UploadHeader {
                job_id: self.job.id,
                lease_token: self.token,
                name: name.to_string(),
                size,
                sha256: sha.to_string(),
            })),
        };
        let stream = async_stream::stream! {
            yield header;
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            loop {
                let n = match file.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                yield v1::UploadChunk { part: Some(v1::upload_chunk::Part::Data(buf[..n].to_vec())) };
            }
        };
        let resp = self.api.clone().upload(stream).await?;
        resp.into_inner()
            .artifact
            .ok_or_else(|| tonic::Status::internal("upload answered without an artifact"))
    }
}

impl JobContext {
    /// The artifacts this job may read: those of the jobs it needs, and its own
    /// from earlier attempts. Retried while the coordinator is away.
    pub async fn inputs(&self) -> Result<v1::JobInputsResponse, JobError> {
        let mut backoff = Backoff::default();
        loop {
            if self.is_cancelled() {
                return Err(JobError::permanent("cancelled"));
            }
            let req = v1::JobInputsRequest {
                job_id: self.job.id,
                lease_token: self.token,
            };
            match self.api.clone().job_inputs(req).await {
                Ok(resp) => return Ok(resp.into_inner()),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(
                        job = self.job.id,
                        "listing the job's inputs failed: {}; retrying",
                        e.message()
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    return Err(JobError::permanent(format!(
                        "listing the job's inputs refused: {}",
                        e.message()
                    )))
                }
            }
        }
    }

    /// Downloads an artifact to `dest` (through a `.partial` file beside it),
    /// retrying while the coordinator is away. The bytes must have the artifact's
    /// size and sha256, or nothing is written and the error says
    /// [`DownloadError::Corrupt`]. An `artifact` with id 0 is a blob asked for by
    /// its sha256 (a pushed trainset); its size is the one the coordinator sends.
    pub async fn download(
        &self,
        artifact: &v1::Artifact,
        dest: &Path,
    ) -> Result<(), DownloadError> {
        if let Some(e) = self.disk_shortfall(artifact, dest) {
            return Err(DownloadError::Failed(e));
        }
        let mut backoff = Backoff::default();
        loop {
            if self.is_cancelled() {
                return Err(DownloadError::Failed(JobError::permanent(
                    "cancelled during download",
                )));
            }
            match self.download_once(artifact, dest).await {
                Ok(()) => return Ok(()),
                Err(Fetch::Rpc(e)) if is_transient(&e) => {
                    tracing::warn!(
                        job = self.job.id,
                        "download of `{}` failed: {}; retrying",
                        artifact.name,
                        e.message()
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(Fetch::Rpc(e)) => {
                    return Err(DownloadError::Failed(JobError::permanent(format!(
                        "download of artifact `{}` of job {} refused: {}",
                        artifact.name,
                        artifact.job_id,
                        e.message()
                    ))))
                }
                Err(Fetch::Io(e)) => {
                    return Err(DownloadError::Failed(JobError::retryable(format!(
                        "writing `{}`: {e}",
                        dest.display()
                    ))))
                }
                Err(Fetch::Corrupt(message)) => return Err(DownloadError::Corrupt(message)),
            }
        }
    }

    async fn download_once(&self, artifact: &v1::Artifact, dest: &Path) -> Result<(), Fetch> {
        let name = dest.file_name().unwrap_or_default().to_string_lossy();
        let partial = dest.with_file_name(format!(".{name}.partial"));
        let what = if artifact.id != 0 {
            v1::download_request::What::ArtifactId(artifact.id)
        } else {
            v1::download_request::What::Sha256(artifact.sha256.clone())
        };
        let req = v1::DownloadRequest { what: Some(what) };
        let mut expected_size = artifact.size;
        let mut stream = self
            .api
            .clone()
            .download(req)
            .await
            .map_err(Fetch::Rpc)?
            .into_inner();
        let mut file = tokio::fs::File::create(&partial).await.map_err(Fetch::Io)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let streamed = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(Fetch::Rpc)?;
                if let (0, Some(meta)) = (artifact.id, &chunk.artifact) {
                    expected_size = meta.size;
                }
                hasher.update(&chunk.data);
                size += chunk.data.len() as u64;
                file.write_all(&chunk.data).await.map_err(Fetch::Io)?;
            }
            file.flush().await.map_err(Fetch::Io)
        }
        .await;
        drop(file);
        let sha = hex::encode(hasher.finalize());
        let checked = streamed.and_then(|()| {
            if sha == artifact.sha256 && size == expected_size {
                Ok(())
            } else {
                let what = if artifact.id != 0 {
                    format!("artifact `{}` of job {}", artifact.name, artifact.job_id)
                } else {
                    format!("`{}`", artifact.name)
                };
                Err(Fetch::Corrupt(format!(
                    "{what}: the {size} bytes received have sha256 {sha}, expected \
                     {expected_size} bytes with sha256 {}",
                    artifact.sha256
                )))
            }
        });
        if let Err(e) = checked {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, dest).await.map_err(Fetch::Io)
    }
}

/// Why [`JobContext::download`] wrote nothing.
#[derive(Debug)]
pub enum DownloadError {
    /// The bytes do not match the artifact's sha256 or size.
    Corrupt(String),
    /// Anything else: refused, cancelled, or the local disk.
    Failed(JobError),
}

impl DownloadError {
    pub fn into_job_error(self) -> JobError {
        match self {
            DownloadError::Corrupt(message) => JobError::permanent(message),
            DownloadError::Failed(e) => e,
        }
    }
}

enum Fetch {
    Rpc(tonic::Status),
    Io(std::io::Error),
    Corrupt(String),
}

pub async fn file_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; UPLOAD_CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}
