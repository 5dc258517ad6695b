//! A pushed trainset (`params.trainset: pushed:NAME@SHA256` or `sha256:HEX`) as a
//! folder on this worker: downloaded once (sha256 checked), unpacked into
//! `<cache_dir>/trainsets/<sha256>/` and reused by later jobs.
//!
//! The folder appears by a rename of a fully unpacked temporary folder, so a job
//! never reads a half-unpacked one: two jobs (or two workers sharing the cache)
//! that unpack the same content at once each unpack their own copy and the second
//! rename finds the folder there and drops its copy. Within one worker, jobs of the
//! same content also wait for each other, so it is downloaded once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex};

use atelier_proto::v1;

use super::{DownloadError, JobContext, JobError};
use crate::trainset::archive;

/// One lock per sha256 being fetched by this process.
static FETCHING: LazyLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> =
    LazyLock::new(Default::default);

/// The folder holding the trainset with content `sha256` (`shown`: the reference as
/// the job's params write it, for logs and errors).
pub async fn folder(ctx: &JobContext, shown: &str, sha256: &str) -> Result<PathBuf, JobError> {
    let root = ctx.cache_dir.join("trainsets");
    let dest = root.join(sha256);
    let lock = FETCHING
        .lock()
        .unwrap()
        .entry(sha256.to_string())
        .or_default()
        .clone();
    let _held = lock.lock().await;
    if dest.is_dir() {
        ctx.log(format!(
            "trainset `{shown}`: reusing `{}` (unpacked before on this worker)",
            dest.display()
        ));
        return Ok(dest);
    }
    tokio::fs::create_dir_all(&root)
        .await
        .map_err(|e| JobError::retryable(format!("cannot create `{}`: {e}", root.display())))?;
    let tar = ctx.work_dir().await?.join(format!("trainset-{sha256}.tar"));
    ctx.progress(0.0, "downloading the trainset").await;
    let blob = v1::Artifact {
        id: 0,
        name: format!("trainset {shown}"),
        sha256: sha256.to_string(),
        ..Default::default()
    };
    ctx.download(&blob, &tar)
        .await
        .map_err(DownloadError::into_job_error)?;
    let partial = root.join(format!(".{sha256}.{:016x}.partial", rand::random::<u64>()));
    let unpacked = {
        let (tar, partial) = (tar.clone(), partial.clone());
        tokio::task::spawn_blocking(move || archive::unpack(&tar, &partial))
            .await
            .map_err(|e| JobError::retryable(format!("unpacking `{shown}` panicked: {e}")))?
    };
    let _ = tokio::fs::remove_file(&tar).await;
    let files = match unpacked {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_dir_all(&partial).await;
            // The bytes matched their sha256: the archive itself is bad.
            return Err(JobError::permanent(format!("trainset `{shown}`: {e}")));
        }
    };
    if let Err(e) = tokio::fs::rename(&partial, &dest).await {
        let _ = tokio::fs::remove_dir_all(&partial).await;
        if !dest.is_dir() {
            return Err(JobError::retryable(format!(
                "cannot move the unpacked trainset to `{}`: {e}",
                dest.display()
            )));
        }
    }
    ctx.log(format!(
        "trainset `{shown}`: {files} files downloaded (sha256 checked) and unpacked into `{}`",
        dest.display()
    ));
    Ok(dest)
}
