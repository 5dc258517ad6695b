//! `sample`: draws K images per prompt with the adapter of the `train` job it
//! needs (LoRA or textual inversion; none: the base model), off the async runtime,
//! and uploads the PNGs, the raw tensors and `samples.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use atelier_proto::kinds::SampleParams;
use atelier_proto::v1;
use atelier_sd::schedulers::SchedulerKind;
use tokio::sync::mpsc;

use super::{backend_device, download_into, JobContext, JobError};
use crate::sample::{self, Adapter, Provenance, SampleError, SampleSpec};

const LORA_FILE: &str = "pytorch_lora_weights.safetensors";
const EMBEDS_FILE: &str = "learned_embeds.safetensors";
const TRAINING_FILE: &str = "training.json";
/// Share of the progress bar the images fill; the rest is the upload.
const IMAGES_SHARE: f64 = 0.95;

pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    let params: SampleParams = serde_json::from_str(&ctx.job.params_json)
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    params
        .check()
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    let scheduler: SchedulerKind = params
        .scheduler
        .parse()
        .map_err(|e| JobError::permanent(format!("params.scheduler: {e}")))?;
    let device = backend_device(ctx, &params.backend)?;
    let work = ctx.work_dir().await?.to_path_buf();
    let inputs = ctx.inputs().await?;
    let trained = adapter(ctx, &params, &inputs, &work).await?;
    if trained.token.is_none() {
        if let Some(i) = params.prompts.iter().position(|p| p.contains("{token}")) {
            return Err(JobError::permanent(format!(
                "params.prompts[{i}] uses `{{token}}`, but there is no trained token: the job \
                 needs no train job (or its training.json names none)"
            )));
        }
    }
    let prompts = params.prompts_for(trained.token.as_deref());
    ctx.log(format!(
        "sampling {} x {} images ({} {} steps, guidance {}, seeds {}..{}) with {}",
        prompts.len(),
        params.images_per_prompt,
        params.scheduler,
        params.steps,
        params.guidance,
        params.seed,
        params.seed + params.images_per_prompt as u64 - 1,
        trained.describe,
    ));
    ctx.flush_logs().await;

    let spec = SampleSpec {
        model: PathBuf::from(&params.model),
        adapter: trained.adapter.clone(),
        provenance: Provenance {
            adapter: trained.adapter_kind.to_string(),
            method: trained.method.clone(),
            token: trained.token.clone(),
            train_job: trained.job,
            train_job_name: trained.job_name.clone(),
        },
        prompts: prompts.clone(),
        images_per_prompt: params.images_per_prompt,
        seed: params.seed,
        steps: params.steps,
        scheduler,
        guidance: params.guidance,
        size: params.size,
        out: work.join("out"),
        device,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, usize)>();
    let cancel = Arc::new(ctx.cancel.clone());
    let started = std::time::Instant::now();
    let task = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || {
            let cancelled = || cancel.is_cancelled();
            let mut on_image = |done, total| {
                let _ = tx.send((done, total));
            };
            sample::run(&spec, &cancelled, &mut on_image)
        })
    };
    while let Some((done, total)) = rx.recv().await {
        let seconds = started.elapsed().as_secs_f64();
        ctx.progress(
            done as f64 / total as f64 * IMAGES_SHARE,
            format!(
                "{done}/{total} images  {:.1} s/image",
                seconds / done as f64
            ),
        )
        .await;
    }
    let index = task
        .await
        .map_err(|e| JobError::retryable(format!("the sampling task panicked: {e}")))?
        .map_err(|e| match e {
            SampleError::Device(m) => JobError::retryable(format!("params.backend: {m}")),
            SampleError::Write { .. } => JobError::retryable(e.to_string()),
            SampleError::Cancelled => JobError::permanent("cancelled"),
            SampleError::Sd(e @ atelier_sd::SdError::Io { .. }) => {
                JobError::retryable(e.to_string())
            }
            SampleError::Sd(e) => JobError::permanent(format!("sampling: {e}")),
        })?;
    let seconds = started.elapsed().as_secs_f64();
    ctx.progress(IMAGES_SHARE, "uploading the samples").await;
    for name in sample::output_files(&index) {
        ctx.upload(&name, &spec.out.join(&name)).await?;
    }
    ctx.log(format!(
        "{} images of {}x{} in {seconds:.1} s",
        index.samples.len(),
        index.width,
        index.height
    ));
    Ok(serde_json::json!({
        "images": index.samples.len(),
        "prompts": prompts,
        "images_per_prompt": params.images_per_prompt,
        "width": index.width,
        "height": index.height,
        "adapter": trained.adapter_kind,
        "method": trained.method,
        "token": trained.token,
        "trained_by": trained.job,
        "seconds": seconds,
    }))
}

/// What the needed `train` job produced, downloaded.
struct Trained {
    adapter: Adapter,
    adapter_kind: &'static str,
    method: Option<String>,
    token: Option<String>,
    job: Option<i64>,
    job_name: Option<String>,
    describe: String,
}

async fn adapter(
    ctx: &JobContext,
    params: &SampleParams,
    inputs: &v1::JobInputsResponse,
    work: &Path,
) -> Result<Trained, JobError> {
    let trains: Vec<&v1::NeededJob> = inputs.needs.iter().filter(|n| n.kind == "train").collect();
    let source = match trains[..] {
        [] => {
            return Ok(Trained {
                adapter: Adapter::None,
                adapter_kind: "none",
                method: None,
                token: None,
                job: None,
                job_name: None,
                describe: "the base model (no train job needed)".into(),
            })
        }
        [one] => one,
        _ => {
            return Err(JobError::permanent(format!(
                "a sample job applies the adapter of one train job, but it needs {}",
                trains.len()
            )))
        }
    };
    let find = |name: &str| source.artifacts.iter().find(|a| a.name == name);
    let training = find(TRAINING_FILE).ok_or_else(|| {
        JobError::permanent(format!(
            "job {} `{}` (train) has no `{TRAINING_FILE}`",
            source.job_id, source.name
        ))
    })?;
    let summary_path = download_into(ctx, training, &work.join("adapter")).await?;
    let summary: serde_json::Value = std::fs::read(&summary_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| {
            JobError::permanent(format!(
                "`{TRAINING_FILE}` of job {} `{}` is not readable JSON",
                source.job_id, source.name
            ))
        })?;
    let config = &summary["config"];
    let token = config["token"].as_str().map(str::to_string);
    let method = config["method"].as_str().map(str::to_string);
    let (adapter, adapter_kind, file) = if let Some(a) = find(LORA_FILE) {
        let file = download_into(ctx, a, &work.join("adapter")).await?;
        (
            Adapter::Lora {
                file: file.clone(),
                scale: params.lora_scale,
            },
            "lora",
            a,
        )
    } else if let Some(a) = find(EMBEDS_FILE) {
        let file = download_into(ctx, a, &work.join("adapter")).await?;
        (Adapter::TextualInversion { file }, "textual_inversion", a)
    } else {
        return Err(JobError::permanent(format!(
            "job {} `{}` (train) has neither `{LORA_FILE}` nor `{EMBEDS_FILE}`",
            source.job_id, source.name
        )));
    };
    Ok(Trained {
        describe: format!(
            "`{}` of job {} `{}` (sha256 {}){}",
            file.name,
            source.job_id,
            source.name,
            file.sha256,
            match &adapter {
                Adapter::Lora { scale, .. } => format!(" at scale {scale}"),
                _ => String::new(),
            }
        ),
        adapter,
        adapter_kind,
        method,
        token,
        job: Some(source.job_id),
        job_name: Some(source.name.clone()),
    })
}
