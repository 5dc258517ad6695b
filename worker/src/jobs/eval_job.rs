//! `eval`: scores the images of the `sample` jobs it needs against the held-out
//! images of the `prepare` job it needs (LPIPS) and their prompts (CLIP score),
//! off the async runtime. Each sample set's metrics go out as progress as soon as
//! they are known (`atelier watch` shows them); `metrics.json` is the artifact.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atelier_metrics::lpips::LpipsNet;
use atelier_metrics::MetricsError;
use atelier_proto::kinds::EvalParams;
use atelier_proto::v1;
use tokio::sync::mpsc;

use super::{backend_device, download_into, unpack_dataset, JobContext, JobError};
use crate::eval::{self, EvalError, EvalSpec, Reference, SampleSet, SetMetrics, METRICS_FILE};
use crate::prepare::{self, HOLDOUT_FILE};
use crate::sample::{SampleIndex, SAMPLES_INDEX, SAMPLES_TENSORS};

enum Event {
    Log(String),
    Set(Box<SetMetrics>, usize, usize),
}

pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    let params: EvalParams = serde_json::from_str(&ctx.job.params_json)
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    params
        .check()
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    let net: LpipsNet = params
        .lpips_net
        .parse()
        .map_err(|e: MetricsError| JobError::permanent(format!("params.lpips_net: {e}")))?;
    let device = backend_device(ctx, &params.backend)?;
    let work = ctx.work_dir().await?.to_path_buf();
    let inputs = ctx.inputs().await?;
    let references = references(ctx, &inputs, &work).await?;
    let sets = sample_sets(ctx, &inputs, &work).await?;
    ctx.log(format!(
        "scoring {} sample sets ({} images) against {} held-out images: LPIPS {net} \
         (`{}`), CLIP score (`{}`)",
        sets.len(),
        sets.iter().map(|s| s.index.samples.len()).sum::<usize>(),
        references.len(),
        params.lpips_weights,
        params.clip_model
    ));
    ctx.flush_logs().await;

    let spec = EvalSpec {
        net,
        lpips_weights: PathBuf::from(&params.lpips_weights),
        clip_model: PathBuf::from(&params.clip_model),
        device,
        batch: params.batch,
        sets,
        references,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let cancel = Arc::new(ctx.cancel.clone());
    let task = tokio::task::spawn_blocking(move || {
        let cancelled = || cancel.is_cancelled();
        let log_tx = tx.clone();
        let mut log = |line: String| {
            let _ = log_tx.send(Event::Log(line));
        };
        let mut on_set = |m: &SetMetrics, done: usize, total: usize| {
            let _ = tx.send(Event::Set(Box::new(m.clone()), done, total));
        };
        eval::run(&spec, &cancelled, &mut log, &mut on_set)
    });
    while let Some(event) = rx.recv().await {
        match event {
            Event::Log(line) => ctx.log(line),
            Event::Set(m, done, total) => {
                let metrics = serde_json::json!({
                    "sample_job": m.sample_job_name,
                    "method": eval::label(&m.provenance),
                    "lpips_nearest": m.lpips_nearest.mean,
                    "lpips_pairwise": m.lpips_pairwise.mean,
                    "clip_score": m.clip_score.mean,
                });
                ctx.progress_with_metrics(
                    done as f64 / total as f64 * 0.95,
                    format!(
                        "{done}/{total} sets: {} LPIPS {:.4} CLIP {:.2}",
                        m.sample_job_name, m.lpips_nearest.mean, m.clip_score.mean
                    ),
                    &metrics.to_string(),
                )
                .await;
            }
        }
    }
    let report = task
        .await
        .map_err(|e| JobError::retryable(format!("the evaluation task panicked: {e}")))?
        .map_err(|e| match e {
            EvalError::Device(m) => JobError::retryable(format!("params.backend: {m}")),
            EvalError::Cancelled => JobError::permanent("cancelled"),
            EvalError::Sd(e @ atelier_sd::SdError::Io { .. }) => JobError::retryable(e.to_string()),
            other => JobError::permanent(other.to_string()),
        })?;
    let path = work.join(METRICS_FILE);
    let json = serde_json::to_string_pretty(&report).expect("serialisable");
    tokio::fs::write(&path, json + "\n")
        .await
        .map_err(|e| JobError::retryable(format!("writing `{}`: {e}", path.display())))?;
    ctx.upload(METRICS_FILE, &path).await?;
    let sets: Vec<serde_json::Value> = report
        .sets
        .iter()
        .map(|s| {
            serde_json::json!({
                "sample_job": s.sample_job,
                "sample_job_name": s.sample_job_name,
                "method": s.provenance.method,
                "adapter": s.provenance.adapter,
                "token": s.provenance.token,
                "train_job": s.provenance.train_job,
                "lpips_pairwise": s.lpips_pairwise,
                "lpips_nearest": s.lpips_nearest,
                "clip_score": s.clip_score,
            })
        })
        .collect();
    Ok(serde_json::json!({
        "lpips_net": report.lpips_net,
        "references": report.references,
        "sets": sets,
    }))
}

/// The held-out images of the one `prepare` job this job needs, unpacked.
async fn references(
    ctx: &JobContext,
    inputs: &v1::JobInputsResponse,
    work: &Path,
) -> Result<Vec<Reference>, JobError> {
    let prepares: Vec<&v1::NeededJob> = inputs
        .needs
        .iter()
        .filter(|n| n.kind == "prepare")
        .collect();
    let [source] = prepares[..] else {
        return Err(JobError::permanent(format!(
            "an eval job compares with the held-out images of one prepare job, but it needs {}",
            prepares.len()
        )));
    };
    let artifact = source
        .artifacts
        .iter()
        .find(|a| a.name == HOLDOUT_FILE)
        .ok_or_else(|| {
            JobError::permanent(format!(
                "job {} `{}` (prepare) held out no images (no `{HOLDOUT_FILE}`): set its \
                 `holdout: N` to keep N images out of training as references",
                source.job_id, source.name
            ))
        })?;
    let (folder, manifest) = unpack_dataset(ctx, source, artifact, work, "references").await?;
    Ok(manifest
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| Reference {
            file: image.file.clone(),
            png: prepare::image_path(&folder, i),
        })
        .collect())
}

/// `samples.json` and `samples.safetensors` of every `sample` job this job needs.
async fn sample_sets(
    ctx: &JobContext,
    inputs: &v1::JobInputsResponse,
    work: &Path,
) -> Result<Vec<SampleSet>, JobError> {
    let mut sets = Vec::new();
    for source in inputs.needs.iter().filter(|n| n.kind == "sample") {
        let dir = work.join("samples").join(source.job_id.to_string());
        let mut paths = Vec::new();
        for name in [SAMPLES_INDEX, SAMPLES_TENSORS] {
            let artifact = source
                .artifacts
                .iter()
                .find(|a| a.name == name)
                .ok_or_else(|| {
                    JobError::permanent(format!(
                        "job {} `{}` (sample) has no `{name}`",
                        source.job_id, source.name
                    ))
                })?;
            paths.push(download_into(ctx, artifact, &dir).await?);
        }
        let index: SampleIndex = std::fs::read(&paths[0])
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| {
                JobError::permanent(format!(
                    "`{SAMPLES_INDEX}` of job {} `{}`: {e}",
                    source.job_id, source.name
                ))
            })?;
        if index.samples.is_empty() {
            return Err(JobError::permanent(format!(
                "job {} `{}` (sample) made no images: nothing to score",
                source.job_id, source.name
            )));
        }
        sets.push(SampleSet {
            job_id: source.job_id,
            job_name: source.name.clone(),
            index,
            tensors: paths[1].clone(),
        });
    }
    if sets.is_empty() {
        return Err(JobError::permanent(
            "an eval job scores the images of the sample jobs it needs, but it needs none",
        ));
    }
    Ok(sets)
}
