//! `train`: fine-tunes a model folder on the dataset of the `prepare` job it needs
//! (or a trainset folder), off the async runtime. Each step's loss and speed go to
//! the coordinator as progress, each checkpoint is uploaded as soon as it is
//! written (`checkpoint-N/…`), then the final weights and `training.json`. An
//! attempt after one that was lost resumes from the last complete checkpoint the
//! earlier attempts uploaded, and ends with the same files, bit for bit.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use atelier_proto::kinds::TrainParams;
use atelier_proto::v1;
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::train::config::TrainConfig;
use atelier_sd::train::trainer::StepReport;
use atelier_sd::SdError;
use tokio::sync::mpsc;

use super::context::DownloadError;
use super::{backend_device, unpack_dataset, JobContext, JobError};
use crate::prepare::DATASET_FILE;
use crate::train::checkpoints::{self, parse_name};
use crate::train::{self, Device, RunError, RunSpec};

/// Share of the progress bar the steps fill; the rest is the final upload.
const STEPS_SHARE: f64 = 0.98;
/// Log lines per run for steps (the first and last always).
const STEP_LINES: usize = 20;

pub async fn run(ctx: &JobContext) -> Result<serde_json::Value, JobError> {
    let params: TrainParams = serde_json::from_str(&ctx.job.params_json)
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    params
        .check()
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    let config = train::config(&params).map_err(JobError::permanent)?;
    config
        .validate()
        .map_err(|e| JobError::permanent(format!("params: {e}")))?;
    let model = PathBuf::from(&params.model);
    ModelFolder::open(&model, Variant::Auto)
        .map_err(|e| JobError::permanent(format!("params.model: {e}")))?;
    let device = backend_device(ctx, &params.backend)?;

    let work = ctx.work_dir().await?.to_path_buf();
    let inputs = ctx.inputs().await?;
    let trainset = trainset(ctx, &params, &inputs, &work).await?;
    let resume = resume_point(ctx, &config, &inputs.own, &work).await?;
    let resumed_from = resume.as_ref().map(|(step, _)| *step);
    ctx.log(format!(
        "training {} `{}`: {} steps at {}px, rank {}, lr {}, seed {}, on {}",
        config.method,
        config.token,
        config.steps,
        config.resolution,
        config.rank,
        config.lr,
        config.seed,
        match device {
            Device::Cpu => "the CPU".to_string(),
            Device::Cuda(i) => format!("CUDA device {i}"),
        }
    ));
    ctx.flush_logs().await;

    let spec = RunSpec {
        model,
        trainset,
        out: work.join("out"),
        resume: resume.map(|(_, dir)| dir),
        config: config.clone(),
        device,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<StepReport>();
    let stop = Arc::new(AtomicBool::new(false));
    let training = {
        let stop = stop.clone();
        let cancel = ctx.cancel.clone();
        tokio::task::spawn_blocking(move || {
            let should_stop = || cancel.is_cancelled() || stop.load(Ordering::Relaxed);
            let mut on_step = |report: &StepReport| {
                let _ = tx.send(report.clone());
            };
            train::run(&spec, &should_stop, &mut on_step)
        })
    };
    let mut meter = Meter::new(config.steps, resumed_from.unwrap_or(0));
    let mut upload_failed = None;
    while let Some(report) = rx.recv().await {
        meter.report(ctx, &report).await;
        if let Some(dir) = &report.checkpoint {
            if let Err(e) = upload_checkpoint(ctx, report.step, dir).await {
                // The run stops after its next step; its error is this one.
                stop.store(true, Ordering::Relaxed);
                upload_failed = Some(e);
                break;
            }
        }
    }
    drop(rx);
    let outcome = training
        .await
        .map_err(|e| JobError::retryable(format!("the training task panicked: {e}")))?;
    if let Some(e) = upload_failed {
        return Err(e);
    }
    let outcome = outcome.map_err(run_error)?;

    ctx.progress(STEPS_SHARE, "uploading the weights").await;
    let mut uploaded = serde_json::Map::new();
    for path in &outcome.files {
        let name = file_name(path);
        let artifact = ctx.upload(&name, path).await?;
        uploaded.insert(name, artifact.sha256.into());
    }
    let last = outcome.losses.last().copied();
    let seconds = meter.seconds;
    let run_steps = config.steps - resumed_from.unwrap_or(0);
    Ok(serde_json::json!({
        "method": config.method,
        "token": config.token,
        "steps": config.steps,
        "resumed_from_step": resumed_from,
        "images": outcome.images,
        "class_images": outcome.class_images,
        "trainable_parameters": outcome.trainable_parameters,
        "final_loss": last,
        "train_seconds": seconds,
        "steps_per_second": if seconds > 0.0 { run_steps as f64 / seconds } else { 0.0 },
        "files": uploaded,
    }))
}

/// The folder of images to train on: `params.trainset` as is, or the dataset of
/// the `prepare` job this job needs, downloaded (sha256 checked) and unpacked.
async fn trainset(
    ctx: &JobContext,
    params: &TrainParams,
    inputs: &v1::JobInputsResponse,
    work: &Path,
) -> Result<PathBuf, JobError> {
    if let Some(folder) = &params.trainset {
        let path = PathBuf::from(folder);
        if !path.is_dir() {
            return Err(JobError::permanent(format!(
                "params.trainset: `{folder}` is not a folder on this worker"
            )));
        }
        ctx.log(format!("training on the trainset folder `{folder}`"));
        return Ok(path);
    }
    let prepares: Vec<&v1::NeededJob> = inputs
        .needs
        .iter()
        .filter(|n| n.kind == "prepare")
        .collect();
    let [source] = prepares[..] else {
        let names: Vec<String> = prepares
            .iter()
            .map(|n| format!("{} `{}`", n.job_id, n.name))
            .collect();
        return Err(JobError::permanent(format!(
            "params.trainset is not set, so the job trains on the dataset of the one \
             `prepare` job it needs, but it needs {} ({})",
            prepares.len(),
            names.join(", ")
        )));
    };
    let artifact = source
        .artifacts
        .iter()
        .find(|a| a.name == DATASET_FILE)
        .ok_or_else(|| {
            JobError::permanent(format!(
                "job {} `{}` (prepare) has no `{DATASET_FILE}` artifact to train on",
                source.job_id, source.name
            ))
        })?;
    ctx.log(format!(
        "downloading `{DATASET_FILE}` of job {} `{}` ({} bytes, sha256 {})",
        source.job_id, source.name, artifact.size, artifact.sha256
    ));
    let (folder, manifest) = unpack_dataset(ctx, source, artifact, work, "trainset").await?;
    ctx.log(format!(
        "unpacked {} images of {}px from `{}`",
        manifest.count, manifest.resolution, manifest.source
    ));
    Ok(folder)
}

/// The latest complete checkpoint earlier attempts uploaded, downloaded into
/// `work/resume/checkpoint-N/` with every file's sha256 checked; one that does
/// not check out is passed over for the one before it.
async fn resume_point(
    ctx: &JobContext,
    config: &TrainConfig,
    own: &[v1::Artifact],
    work: &Path,
) -> Result<Option<(usize, PathBuf)>, JobError> {
    'checkpoints: for checkpoint in checkpoints::complete(own, config.method, config.steps) {
        let dir = work
            .join("resume")
            .join(format!("checkpoint-{}", checkpoint.step));
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| JobError::retryable(format!("cannot create `{}`: {e}", dir.display())))?;
        for artifact in &checkpoint.files {
            let (_, file) = parse_name(&artifact.name).expect("a checkpoint artifact's name");
            match ctx.download(artifact, &dir.join(file)).await {
                Ok(()) => {}
                Err(DownloadError::Corrupt(message)) => {
                    ctx.log(format!(
                        "checkpoint-{} passed over: {message}",
                        checkpoint.step
                    ));
                    continue 'checkpoints;
                }
                Err(DownloadError::Failed(e)) => return Err(e),
            }
        }
        let attempt = checkpoint.files.last().map_or(0, |a| a.attempt);
        ctx.log(format!(
            "resuming from checkpoint-{step} (step {step} of {}), uploaded by attempt {attempt}",
            config.steps,
            step = checkpoint.step,
        ));
        return Ok(Some((checkpoint.step, dir)));
    }
    Ok(None)
}

/// Uploads the files of a checkpoint folder as `checkpoint-N/<file>`, the run's
/// state last.
async fn upload_checkpoint(ctx: &JobContext, step: usize, dir: &Path) -> Result<(), JobError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|e| JobError::retryable(format!("reading `{}`: {e}", dir.display())))?;
    files.retain(|p| p.is_file());
    files.sort_by_key(|p| {
        (
            file_name(p) == atelier_sd::train::checkpoint::STATE_FILE,
            p.clone(),
        )
    });
    for path in &files {
        ctx.upload(&checkpoints::artifact_name(step, &file_name(path)), path)
            .await?;
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

fn run_error(e: RunError) -> JobError {
    match e {
        RunError::Device(message) => JobError::retryable(format!("params.backend: {message}")),
        RunError::Sd(e @ SdError::Io { .. }) => JobError::retryable(format!("training: {e}")),
        RunError::Sd(e @ (SdError::ModelFolder { .. } | SdError::Weights { .. })) => {
            JobError::permanent(format!("params.model: {e}"))
        }
        RunError::Sd(SdError::Stopped { step }) => {
            JobError::permanent(format!("cancelled after step {step}"))
        }
        RunError::Sd(e) => JobError::permanent(format!("training: {e}")),
    }
}

/// Progress and log lines from step reports.
struct Meter {
    steps: usize,
    /// The step the run started after (its checkpoint's, when resumed).
    first: usize,
    every: usize,
    seconds: f64,
}

impl Meter {
    fn new(steps: usize, first: usize) -> Meter {
        Meter {
            steps,
            first,
            every: (steps / STEP_LINES).max(1),
            seconds: 0.0,
        }
    }

    async fn report(&mut self, ctx: &JobContext, r: &StepReport) {
        self.seconds = r.seconds;
        let rate = if r.seconds > 0.0 {
            (r.step - self.first) as f64 / r.seconds
        } else {
            0.0
        };
        let message = format!(
            "step {}/{}  loss {:.4}  {rate:.2} step/s",
            r.step, r.steps, r.loss
        );
        if r.step == self.first + 1 || r.step == self.steps || r.step.is_multiple_of(self.every) {
            ctx.log(message.clone());
        }
        let metrics = serde_json::json!({
            "step": r.step,
            "steps": r.steps,
            "loss": r.loss,
            "steps_per_second": rate,
        });
        let fraction = r.step as f64 / r.steps.max(1) as f64 * STEPS_SHARE;
        ctx.progress_with_metrics(fraction, message, &metrics.to_string())
            .await;
    }
}
