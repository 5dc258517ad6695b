//! `prepare`: runs the dataset preparation off the async runtime and uploads the
//! packed dataset and its manifest.

use std::sync::Arc;

use atelier_proto::kinds::PrepareParams;
use atelier_proto::trainset_ref::TrainsetRef;
use tokio::sync::mpsc;

use super::{pushed_trainset, JobContext, JobError};
use crate::prepare::{self, PrepareError, PrepareEvent};

pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    let mut params: PrepareParams = serde_json::from_str(&ctx.job.params_json)
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    ctx.log(format!(
        "preparing `{}` at {}px",
        params.trainset, params.resolution
    ));
    // A pushed trainset: its content, pinned at submit, as a folder of this worker.
    match TrainsetRef::parse(&params.trainset) {
        None => {}
        Some(Err(e)) => return Err(JobError::permanent(format!("params.trainset: {e}"))),
        Some(Ok(r)) => {
            let Some(sha) = r.pinned_sha256() else {
                return Err(JobError::permanent(format!(
                    "params.trainset: `{}` is not pinned to a sha256 (the coordinator pins it \
                     at submit)",
                    params.trainset
                )));
            };
            let folder = pushed_trainset::folder(ctx, &params.trainset, sha).await?;
            params.trainset = folder.display().to_string();
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<PrepareEvent>();
    let out_dir = ctx.work_dir().await?.to_path_buf();
    let cancel = Arc::new(ctx.cancel.clone());
    let p = params.clone();
    let work = tokio::task::spawn_blocking(move || {
        let cancelled = || cancel.is_cancelled();
        let mut on_event = |e: PrepareEvent| {
            let _ = tx.send(e);
        };
        prepare::prepare(&p, &out_dir, &cancelled, &mut on_event)
    });
    while let Some(event) = rx.recv().await {
        match event {
            PrepareEvent::Progress { done, total } => {
                let f = if total == 0 {
                    0.0
                } else {
                    done as f64 / total as f64
                };
                ctx.progress(f * 0.9, format!("{done}/{total} images"))
                    .await;
            }
            PrepareEvent::Log(line) => ctx.log(line),
        }
    }
    let prepared = work
        .await
        .map_err(|e| JobError::retryable(format!("prepare task panicked: {e}")))?
        .map_err(|e| match e {
            PrepareError::Read { .. } | PrepareError::Write { .. } => {
                JobError::retryable(e.to_string())
            }
            other => JobError::permanent(other.to_string()),
        })?;
    ctx.progress(0.9, "uploading").await;
    let dataset = ctx.upload("dataset.safetensors", &prepared.dataset).await?;
    let manifest = ctx.upload("manifest.json", &prepared.manifest_path).await?;
    let mut holdout = serde_json::Value::Null;
    if let Some((packed, manifest_path, held)) = &prepared.holdout {
        let artifact = ctx.upload(prepare::HOLDOUT_FILE, packed).await?;
        ctx.upload(prepare::HOLDOUT_MANIFEST_FILE, manifest_path)
            .await?;
        holdout = serde_json::json!({"images": held.count, "sha256": artifact.sha256});
    }
    let m = &prepared.manifest;
    ctx.log(format!(
        "{} images, {} rejected, {} duplicates",
        m.count,
        m.rejected.len(),
        m.duplicates.len()
    ));
    Ok(serde_json::json!({
        "images": m.count,
        "rejected": m.rejected.len(),
        "duplicates": m.duplicates.len(),
        "resolution": m.resolution,
        "dataset_sha256": dataset.sha256,
        "manifest_sha256": manifest.sha256,
        "holdout": holdout,
    }))
}
