//! Job kinds and what a running job can do: log, report progress, read the
//! artifacts of the jobs it needs (and its own from earlier attempts), upload
//! artifacts, and notice that it was cancelled.

mod context;
mod eval_job;
mod noop;
mod prepare_job;
mod pushed_trainset;
mod sample_job;
mod train_job;

pub use context::{DownloadError, JobContext, JobError};

use std::path::{Path, PathBuf};

use atelier_proto::v1;

use crate::prepare::{self, Manifest, PrepareError};
use crate::train::Device;

/// Runs the job's kind to completion; the value is the job's result document.
pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    match ctx.job.kind.as_str() {
        "noop" => noop::run(ctx).await,
        "prepare" => prepare_job::run(ctx).await,
        "train" => train_job::run(ctx).await,
        "sample" => sample_job::run(ctx).await,
        "eval" => eval_job::run(ctx).await,
        other => Err(JobError::permanent(format!(
            "this worker (version {}) does not know job kind `{other}`",
            env!("CARGO_PKG_VERSION")
        ))),
    }
}

/// The CPU, or the GPU the job was given when its params ask for `cuda`.
fn backend_device(ctx: &JobContext, backend: &str) -> Result<Device, JobError> {
    if backend != "cuda" {
        return Ok(Device::Cpu);
    }
    match ctx.gpu_indexes.first() {
        Some(&index) => Ok(Device::Cuda(index as usize)),
        None => Err(JobError::permanent(
            "params.backend is cuda but the job was given no GPU: add \
             `requires: {gpus: 1, backend: cuda}`",
        )),
    }
}

/// Downloads `artifact`, a packed dataset of the needed job `source` (sha256
/// checked), and unpacks it into `work/<folder>/` as PNG files and captions; the
/// packed file is removed afterwards.
async fn unpack_dataset(
    ctx: &JobContext,
    source: &v1::NeededJob,
    artifact: &v1::Artifact,
    work: &Path,
    folder: &str,
) -> Result<(PathBuf, Manifest), JobError> {
    let packed = work.join(&artifact.name);
    ctx.download(artifact, &packed)
        .await
        .map_err(DownloadError::into_job_error)?;
    let folder = work.join(folder);
    let cancel = ctx.cancel.clone();
    let unpacked = {
        let (packed, folder) = (packed.clone(), folder.clone());
        tokio::task::spawn_blocking(move || {
            prepare::unpack(&packed, &folder, &|| cancel.is_cancelled())
        })
        .await
        .map_err(|e| JobError::retryable(format!("unpacking `{}` panicked: {e}", artifact.name)))?
    };
    let manifest = unpacked.map_err(|e| match e {
        PrepareError::Read { .. } | PrepareError::Write { .. } => {
            JobError::retryable(e.to_string())
        }
        other => JobError::permanent(format!("job {} `{}`: {other}", source.job_id, source.name)),
    })?;
    let _ = tokio::fs::remove_file(&packed).await;
    Ok((folder, manifest))
}

/// Downloads a needed job's artifact into `dir` (created if absent), under its own
/// name, sha256 checked.
async fn download_into(
    ctx: &JobContext,
    artifact: &v1::Artifact,
    dir: &Path,
) -> Result<PathBuf, JobError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| JobError::retryable(format!("cannot create `{}`: {e}", dir.display())))?;
    let path = dir.join(&artifact.name);
    ctx.download(artifact, &path)
        .await
        .map_err(DownloadError::into_job_error)?;
    Ok(path)
}
