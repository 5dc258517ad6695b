//! `atelier quickstart`: the whole pipeline on a laptop in minutes. A coordinator
//! (SQLite, artifacts and job folders under `OUT/state`) and a CPU worker run in
//! this process; a tiny random model of the SD1.5 architecture is made from
//! `worker/sd/configs/tiny`; `experiments/quickstart.yaml` (the study in miniature
//! on the demo trainset) runs under a live job table; the trained weights are
//! pulled into `OUT/weights` and the report written to `OUT/report`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_proto::v1;
use atelier_worker::agent::{Agent, WorkerConfig};
use atelier_worker::client::{ConnectOptions, UserApi};
use indicatif::ProgressBar;

use super::pull::download;
use super::report::{create_dir, write_file};
use crate::error::{CliError, CliResult, Exit};
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder for everything the quick start makes: state, model, weights, report
    #[arg(long, short, default_value = "quickstart")]
    pub output: PathBuf,
    /// Training steps of each run (LoRA, DreamBooth-LoRA, textual inversion)
    #[arg(long, default_value_t = 200)]
    pub steps: u32,
    /// Denoising steps of each sample image
    #[arg(long, default_value_t = 20)]
    pub sample_steps: u32,
    /// Seed of the tiny model's random weights
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// LPIPS weights (made by tools/convert_lpips_weights.py); default: a random
    /// AlexNet with the lpips package's linear layers, and the report says so
    #[arg(long, value_name = "FILE")]
    pub lpips_weights: Option<PathBuf>,
    /// CLIP model folder (openai/clip-vit-large-patch14 layout); default: the tiny
    /// random CLIP of the tests, and the report says so
    #[arg(long, value_name = "DIR")]
    pub clip_model: Option<PathBuf>,
    /// Jobs the worker runs at once
    #[arg(long, default_value_t = 2)]
    pub slots: u32,
}

/// Files of the repository the quick start reads, relative to its root.
const EXPERIMENT: &str = "experiments/quickstart.yaml";
const TINY_CONFIGS: &str = "worker/sd/configs/tiny";
const LPIPS_LIN_ALEX: &str = "worker/metrics/tests/fixtures/lpips/lin_alex.safetensors";
const TINY_CLIP: &str = "worker/metrics/tests/fixtures/tiny-clip";

impl Args {
    pub async fn exec(self, settings: Settings) -> CliResult {
        let started = Instant::now();
        let repo = repo_root()?;
        let out = absolute(&self.output)?;
        let state = out.join("state");
        create_dir(&state)?;

        let model = out.join("model");
        eprintln!(
            "making a tiny random SD1.5-architecture model (seed {}) in {}",
            self.seed,
            model.display()
        );
        make_model(repo.join(TINY_CONFIGS), model.clone(), self.seed).await?;
        let (lpips, clip, metrics_note) = self.metric_networks(&repo, &out).await?;

        // Everything embedded and private to this folder, whatever the settings say:
        // a coordinator already running elsewhere is left alone.
        let mut local = settings.clone();
        local.data_dir = state.clone();
        local.database_url = String::new();
        local.redis_url = String::new();
        local.artifact_dir = String::new();
        local.artifact_store = String::new();
        local.listen = "127.0.0.1:0".into();
        for s in [
            &mut local.tls_cert,
            &mut local.tls_key,
            &mut local.tls_ca,
            &mut local.token,
            &mut local.token_file,
        ] {
            s.clear();
        }
        let config = super::coordinator::Args::default().config(local.clone())?;
        let running = atelier_coordinator::server::start(config)
            .await
            .map_err(|e| CliError::failure(e.to_string()))?;
        local.coordinator = format!("http://{}", running.addr);
        write_settings(&out, &state)?;

        let agent = Agent::new(WorkerConfig {
            coordinator: ConnectOptions::new(local.coordinator.clone()),
            name: "quickstart".into(),
            backend: "cpu".into(),
            gpus: Vec::new(),
            labels: Default::default(),
            cpu_slots: self.slots.max(1),
            work_dir: state.join("work"),
            cache_dir: state.join("cache"),
            min_free_disk_bytes: 0,
        })
        .map_err(CliError::invalid)?;
        let stop = tokio_util::sync::CancellationToken::new();
        let worker = tokio::spawn(agent.run(stop.clone()));

        let outcome = self
            .run_experiment(&repo, &out, &local, &model, &lpips, &clip, metrics_note)
            .await;

        stop.cancel();
        let _ = worker.await;
        running.stop().await;
        let summary = outcome?;
        println!();
        println!(
            "quick start finished in {:.0} s: {}",
            started.elapsed().as_secs_f64(),
            summary.counts
        );
        println!("base model:   {}", model.display());
        for path in &summary.weights {
            println!("weights:      {}", path.display());
        }
        for path in &summary.pictures {
            println!("report:       {}", path.display());
        }
        println!(
            "\nServe these jobs again (for `atelier pull`, `show`, `logs`): \
             atelier --config {} up",
            out.join("atelier.toml").display()
        );
        match summary.failed {
            0 => Ok(()),
            n => Err(CliError::new(
                Exit::JobsFailed,
                format!("{n} jobs did not succeed; `atelier logs JOB` says why"),
            )),
        }
    }

    /// The LPIPS weight file and CLIP folder the eval jobs use, and the note the
    /// report carries about them.
    async fn metric_networks(
        &self,
        repo: &Path,
        out: &Path,
    ) -> CliResult<(PathBuf, PathBuf, String)> {
        let mut random = Vec::new();
        let lpips = match &self.lpips_weights {
            Some(path) => absolute(path)?,
            None => {
                let path = out.join("metrics/lpips_alex_random_backbone.safetensors");
                create_dir(path.parent().expect("has a folder"))?;
                let lin = repo.join(LPIPS_LIN_ALEX);
                let p = path.clone();
                tokio::task::spawn_blocking(move || {
                    atelier_metrics::testing::write_test_weights(
                        &p,
                        atelier_metrics::lpips::LpipsNet::Alex,
                        &lin,
                    )
                })
                .await
                .map_err(|e| CliError::failure(e.to_string()))?
                .map_err(|e| CliError::failure(e.to_string()))?;
                random.push("LPIPS with a random AlexNet");
                path
            }
        };
        let clip = match &self.clip_model {
            Some(path) => absolute(path)?,
            None => {
                random.push("a tiny random CLIP");
                repo.join(TINY_CLIP)
            }
        };
        let note = if random.is_empty() {
            "Quick start: a tiny random base model; the figures show the pipeline, not \
             the methods' quality."
                .to_string()
        } else {
            format!(
                "Quick start: a tiny random base model, {}: the figures show the pipeline, \
                 not the methods' quality.",
                random.join(" and ")
            )
        };
        Ok((lpips, clip, note))
    }

    #[allow(clippy::too_many_arguments)]
    async fn run_experiment(
        &self,
        repo: &Path,
        out: &Path,
        settings: &Settings,
        model: &Path,
        lpips: &Path,
        clip: &Path,
        note: String,
    ) -> CliResult<Summary> {
        let sets = [
            format!("model={}", model.display()),
            format!("lpips_weights={}", lpips.display()),
            format!("clip_model={}", clip.display()),
            format!("steps={}", self.steps),
            format!("ti_steps={}", self.steps),
            format!("sample_steps={}", self.sample_steps),
        ];
        let exp = super::submit::load(&repo.join(EXPERIMENT), &sets)?;
        let mut api = super::connect(settings)?;
        let submitted = api
            .submit(super::submit::to_request(&exp))
            .await?
            .into_inner();
        let experiment = format!("e{}", submitted.experiment_id);
        eprintln!(
            "submitted `{}` ({experiment}): {} jobs on an embedded coordinator and a CPU worker",
            exp.name,
            submitted.job_ids.len()
        );

        let watched = super::watch::Args {
            experiment: Some(experiment.clone()),
            json: false,
            forever: false,
        }
        .exec(settings.clone());
        let interrupted = super::shutdown_on_signal();
        tokio::select! {
            // Failed jobs are counted below; the report shows what finished.
            watched = watched => match watched {
                Err(e) if !matches!(e.exit, Exit::JobsFailed) => return Err(e),
                _ => {}
            },
            _ = interrupted.cancelled() => {
                return Err(CliError::failure(
                    "interrupted; the jobs so far are kept: serve them with \
                     `atelier --config OUT/atelier.toml up`",
                ));
            }
        }

        let jobs = api
            .list_jobs(v1::ListJobsRequest {
                experiment_id: submitted.experiment_id,
                state: String::new(),
                limit: 0,
            })
            .await?
            .into_inner()
            .jobs;
        println!("{}", super::jobs::job_table(&jobs));
        let weights = pull_weights(&mut api, &jobs, &out.join("weights")).await?;

        let report_dir = out.join("report");
        super::report::Args {
            experiment,
            output: report_dir.clone(),
            images_per_prompt: 4,
            note: Some(note),
            json: false,
        }
        .exec(settings.clone())
        .await?;
        let pictures = ["comparison.png", "samples.png", "loss.png", "report.md"]
            .iter()
            .map(|name| report_dir.join(name))
            .filter(|p| p.exists())
            .collect();
        let n = |s: &str| jobs.iter().filter(|j| j.state == s).count();
        Ok(Summary {
            counts: format!(
                "{} jobs, {} succeeded, {} failed, {} cancelled",
                jobs.len(),
                n("succeeded"),
                n("failed"),
                n("cancelled")
            ),
            failed: jobs.len() - n("succeeded"),
            weights,
            pictures,
        })
    }
}

struct Summary {
    counts: String,
    failed: usize,
    /// The adapter files pulled (LoRA, kohya LoRA, learned embeddings).
    weights: Vec<PathBuf>,
    pictures: Vec<PathBuf>,
}

/// Downloads the final files of every succeeded train job (not its checkpoints)
/// into `dir/<job name>/`; returns the adapter files among them.
async fn pull_weights(api: &mut UserApi, jobs: &[v1::Job], dir: &Path) -> CliResult<Vec<PathBuf>> {
    let mut adapters = Vec::new();
    for job in jobs
        .iter()
        .filter(|j| j.kind == "train" && j.state == "succeeded")
    {
        let artifacts = api
            .get_job(v1::GetJobRequest { job_id: job.id })
            .await?
            .into_inner()
            .artifacts;
        let folder = dir.join(&job.name);
        create_dir(&folder)?;
        for a in artifacts.iter().filter(|a| !a.name.contains('/')) {
            let dest = folder.join(&a.name);
            download(api, job.id, a, &dest, &ProgressBar::hidden()).await?;
            if a.name.ends_with(".safetensors") {
                adapters.push(dest);
            }
        }
    }
    Ok(adapters)
}

/// The clone of the repository: the current folder or one above it that holds
/// `experiments/quickstart.yaml`, else the one this binary was built from.
fn repo_root() -> CliResult<PathBuf> {
    let is_root = |dir: &Path| dir.join(EXPERIMENT).is_file() && dir.join(TINY_CONFIGS).is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if let Some(dir) = cwd.ancestors().find(|d| is_root(d)) {
            return Ok(dir.to_path_buf());
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if is_root(&built_from) {
        return Ok(built_from.canonicalize().unwrap_or(built_from));
    }
    Err(CliError::invalid(format!(
        "atelier quickstart reads {EXPERIMENT}, {TINY_CONFIGS} and trainsets/demo from a \
         clone of the atelier repository: run it inside one"
    )))
}

async fn make_model(configs: PathBuf, out: PathBuf, seed: u64) -> CliResult {
    tokio::task::spawn_blocking(move || {
        atelier_sd::random_model::write_random_model::<atelier_sd::backend::Cpu>(
            &configs,
            &out,
            seed,
            false,
            &Default::default(),
        )
    })
    .await
    .map_err(|e| CliError::failure(e.to_string()))?
    .map(|_| ())
    .map_err(|e| CliError::failure(format!("making the tiny model: {e}")))
}

/// `OUT/atelier.toml`: settings that serve the quick start's state again.
fn write_settings(out: &Path, state: &Path) -> CliResult {
    let path = out.join("atelier.toml");
    let text = format!(
        "# Written by `atelier quickstart`. Serve its jobs again with\n\
         #   atelier --config {} up\n\
         data_dir = {}\n",
        path.display(),
        toml::Value::String(state.display().to_string())
    );
    write_file(&path, text)
}

fn absolute(path: &Path) -> CliResult<PathBuf> {
    std::path::absolute(path).map_err(|e| CliError::invalid(format!("`{}`: {e}", path.display())))
}
