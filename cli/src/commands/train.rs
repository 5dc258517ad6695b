//! `atelier train`: fine-tunes a diffusers model folder on a folder of images with
//! LoRA, DreamBooth-LoRA (prior preservation) or textual inversion, on the CPU or a
//! CUDA GPU, and writes the files diffusers, ComfyUI, A1111 and kohya tools load,
//! plus `training.json` and a loss curve (`loss.png`).
//!
//! Settings come from flags, from a YAML file (`--from FILE.yaml`), or both: a flag
//! overrides the file. The file holds the training fields (`method`, `token`,
//! `steps`, `lr`, `rank`, ... as in `atelier_sd::train::config::TrainConfig`) and
//! `model`, `trainset`, `output`, `backend`; its relative paths are relative to the
//! file's folder.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_sd::backend::BackendKind;
use atelier_sd::precision::Precision;
use atelier_sd::train::config::{Method, TrainConfig};
use atelier_sd::train::schedule::LrScheduler;
use atelier_sd::train::trainer::{train_from, StepReport, TrainOutcome};
use atelier_sd::SdError;
use burn::tensor::backend::AutodiffBackend;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

use crate::error::{CliError, CliResult};
use crate::output::{duration_ms, print_json};
use crate::plot;
use crate::settings::Settings;

#[derive(clap::Args, Debug, Default)]
#[command(after_help = "\
Defaults are the study's LoRA runs: rank 4, alpha 4, lr 5e-4 constant, AdamW, grad-norm \
clip 1.0, batch 1, 512 px centre crops, 200 steps. With --grad-accum N a step sums the \
gradients of N batches (the loss shown is their mean); --steps counts optimizer steps. A \
trainset is a folder of images (or a folder with an `images/` sub-folder); `name.txt` beside \
`name.png` is that image's caption, else the caption template is used (textual inversion \
draws from style templates).

Example:
  atelier train --method lora --model ./sd15 --trainset trainsets/demo --token '<demo-style>' -o out/demo
  atelier train --from run.yaml --steps 50    # the file's settings, 50 steps
  atelier train ... --lr-scheduler cosine --lr-warmup-steps 20 --grad-accum 4 --kohya")]
pub struct Args {
    /// YAML file with the run's settings (training fields and model, trainset, output, backend); flags override it
    #[arg(long, value_name = "FILE.yaml")]
    pub from: Option<PathBuf>,
    /// lora, dreambooth or ti (textual inversion) [default: lora]
    #[arg(long)]
    pub method: Option<Method>,
    /// Diffusers model folder to fine-tune (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Folder of images (PNG, JPEG, WebP, ...), directly or in an `images/` sub-folder
    #[arg(long, value_name = "DIR")]
    pub trainset: Option<PathBuf>,
    /// The style token, e.g. `<monet-style>`: in the captions for LoRA and DreamBooth, the new placeholder for ti
    #[arg(long, value_name = "T")]
    pub token: Option<String>,
    /// Optimizer steps [default: 200]
    #[arg(long, value_name = "N")]
    pub steps: Option<usize>,
    /// Learning rate (the schedule's peak) [default: 5e-4]
    #[arg(long, value_name = "F")]
    pub lr: Option<f64>,
    /// constant, constant_with_warmup, linear or cosine (diffusers' schedules, decaying to 0 at the last step) [default: constant]
    #[arg(long, value_name = "NAME")]
    pub lr_scheduler: Option<LrScheduler>,
    /// Steps over which the learning rate rises linearly from 0 (needs a schedule with warm-up) [default: 0]
    #[arg(long, value_name = "N")]
    pub lr_warmup_steps: Option<usize>,
    /// Micro-batches per optimizer step, gradients summed: batch B x N for the memory of B [default: 1]
    #[arg(long, value_name = "N")]
    pub grad_accum: Option<usize>,
    /// LoRA rank [default: 4]
    #[arg(long, value_name = "R")]
    pub rank: Option<usize>,
    /// LoRA alpha; the update is scaled by alpha / rank [default: 4]
    #[arg(long, value_name = "A")]
    pub alpha: Option<f64>,
    /// LoRA dropout: probability of zeroing each input element of the adapters while training (peft's lora_dropout) [default: 0]
    #[arg(long, value_name = "P")]
    pub lora_dropout: Option<f64>,
    /// Also write pytorch_lora_weights_kohya.safetensors (kohya / A1111 keys) beside the diffusers file
    #[arg(long)]
    pub kohya: bool,
    /// Training image side in pixels, a multiple of 8 [default: 512]
    #[arg(long, value_name = "PX")]
    pub resolution: Option<usize>,
    /// Images per step (DreamBooth adds as many class images) [default: 1]
    #[arg(long, value_name = "B")]
    pub batch: Option<usize>,
    /// Seed of every random draw: a run is reproducible from it [default: 0]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Caption of images without a .txt file, `{}` is the token [default: "a painting in the style of {}"]
    #[arg(long, value_name = "TEXT")]
    pub caption_template: Option<String>,
    /// Textual inversion: the existing token the new embedding starts from [default: style]
    #[arg(long, value_name = "T")]
    pub initializer_token: Option<String>,
    /// DreamBooth: prompt of the class images the base model draws first, e.g. "a painting"
    #[arg(long, value_name = "P")]
    pub class_prompt: Option<String>,
    /// DreamBooth: how many class images (cached in OUTDIR/class_images/) [default: 100]
    #[arg(long, value_name = "N")]
    pub class_images: Option<usize>,
    /// DreamBooth: denoising steps for each class image [default: 30]
    #[arg(long, value_name = "N")]
    pub class_steps: Option<usize>,
    /// DreamBooth: weight of the class images' loss [default: 1]
    #[arg(long, value_name = "W")]
    pub prior_loss_weight: Option<f64>,
    /// Clip the global gradient norm to this (0: no clipping; ti never clips) [default: 1]
    #[arg(long, value_name = "F")]
    pub max_grad_norm: Option<f64>,
    /// Also write the outputs every N steps into OUTDIR/checkpoint-N/
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Continue a stopped run from one of its checkpoint folders (same settings);
    /// the result equals the uninterrupted run's
    #[arg(long, value_name = "OUTDIR/checkpoint-N")]
    pub resume: Option<PathBuf>,
    /// Flip half of the images left-right
    #[arg(long)]
    pub random_flip: bool,
    /// Crop at random places instead of the centre
    #[arg(long)]
    pub random_crop: bool,
    /// cpu or cuda [default: cpu]
    #[arg(long)]
    pub backend: Option<BackendKind>,
    /// Dtype of the frozen UNet and VAE weights: f32, or bf16/f16 on CUDA (adapters,
    /// optimizer state and loss stay f32) [default: f32]
    #[arg(long)]
    pub precision: Option<Precision>,
    /// Folder to write the weights, training.json and loss.png into (created if missing)
    #[arg(long, short, value_name = "OUTDIR")]
    pub output: Option<PathBuf>,
    /// Print JSON (and no progress bar)
    #[arg(long)]
    pub json: bool,
}

/// A run, once the file and the flags are merged.
#[derive(Debug, Clone)]
struct Run {
    model: PathBuf,
    trainset: PathBuf,
    output: PathBuf,
    resume: Option<PathBuf>,
    backend: BackendKind,
    config: TrainConfig,
}

/// Keys of a `--from` file besides the training fields.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePaths {
    model: Option<PathBuf>,
    trainset: Option<PathBuf>,
    output: Option<PathBuf>,
    backend: Option<BackendKind>,
}

const PATH_KEYS: [&str; 4] = ["model", "trainset", "output", "backend"];

#[derive(Debug, serde::Serialize)]
struct Report {
    method: Method,
    token: String,
    model: PathBuf,
    trainset: PathBuf,
    output: PathBuf,
    backend: String,
    steps: usize,
    images: usize,
    class_images: usize,
    trainable_parameters: usize,
    final_loss: Option<f64>,
    /// The mean of the last `average_window` steps' losses.
    mean_loss: Option<f64>,
    average_window: usize,
    load_seconds: f64,
    train_seconds: f64,
    steps_per_second: f64,
    /// Seconds per step after the first [`WARM_UP_STEPS`] (kernel compilation and
    /// autotuning on CUDA): median and 90th percentile.
    step_seconds_median: Option<f64>,
    step_seconds_p90: Option<f64>,
    files: Vec<PathBuf>,
    loss_png: PathBuf,
    config: TrainConfig,
}

impl Args {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        tokio::task::spawn_blocking(move || {
            let run = self.resolve()?;
            match run.backend {
                BackendKind::Cpu => run_on::<burn::backend::Autodiff<atelier_sd::backend::Cpu>>(
                    &run,
                    Default::default(),
                    self.json,
                ),
                BackendKind::Cuda => {
                    let device = atelier_sd::backend::cuda_device(0).map_err(CliError::failure)?;
                    run_on::<burn::backend::Autodiff<atelier_sd::backend::Cuda>>(
                        &run, device, self.json,
                    )
                }
            }
        })
        .await
        .map_err(|e| CliError::failure(format!("training stopped: {e}")))?
    }

    /// The `--from` file (if any) with the flags laid over it, checked.
    fn resolve(&self) -> CliResult<Run> {
        let (paths, mut config) = match &self.from {
            Some(file) => read_run_file(file)?,
            None => (FilePaths::default(), TrainConfig::default()),
        };
        if let Some(v) = self.method {
            config.method = v;
        }
        if let Some(v) = &self.token {
            config.token = v.clone();
        }
        if let Some(v) = self.steps {
            config.steps = v;
        }
        if let Some(v) = self.lr {
            config.lr = v;
        }
        if let Some(v) = self.lr_scheduler {
            config.lr_scheduler = v;
        }
        if let Some(v) = self.lr_warmup_steps {
            config.lr_warmup_steps = v;
        }
        if let Some(v) = self.grad_accum {
            config.gradient_accumulation_steps = v;
        }
        if let Some(v) = self.rank {
            config.rank = v;
        }
        if let Some(v) = self.alpha {
            config.alpha = v;
        }
        if let Some(v) = self.lora_dropout {
            config.lora_dropout = v;
        }
        if self.kohya {
            config.kohya_file = true;
        }
        if let Some(v) = self.resolution {
            config.resolution = v;
        }
        if let Some(v) = self.batch {
            config.batch = v;
        }
        if let Some(v) = self.seed {
            config.seed = v;
        }
        if let Some(v) = &self.caption_template {
            config.caption_template = v.clone();
        }
        if let Some(v) = &self.initializer_token {
            config.initializer_token = v.clone();
        }
        if let Some(v) = &self.class_prompt {
            config.class_prompt = Some(v.clone());
        }
        if let Some(v) = self.class_images {
            config.class_images = v;
        }
        if let Some(v) = self.class_steps {
            config.class_steps = v;
        }
        if let Some(v) = self.prior_loss_weight {
            config.prior_loss_weight = v;
        }
        if let Some(v) = self.max_grad_norm {
            config.max_grad_norm = (v > 0.0).then_some(v);
        }
        if let Some(v) = self.checkpoint_every {
            config.checkpoint_every = Some(v);
        }
        if self.random_flip {
            config.random_flip = true;
        }
        if self.random_crop {
            config.center_crop = false;
        }
        if let Some(v) = self.precision {
            config.precision = v;
        }

        let missing = |key: &str| {
            let or_file = match &self.from {
                Some(file) => format!(" (or `{key}:` in `{}`)", file.display()),
                None => String::new(),
            };
            CliError::invalid(format!("`--{key}` is required{or_file}"))
        };
        let model = (self.model.clone().or(paths.model)).ok_or_else(|| missing("model"))?;
        let trainset =
            (self.trainset.clone().or(paths.trainset)).ok_or_else(|| missing("trainset"))?;
        let output = (self.output.clone().or(paths.output)).ok_or_else(|| missing("output"))?;
        let backend = self.backend.or(paths.backend).unwrap_or_default();
        if config.token.trim().is_empty() {
            return Err(missing("token"));
        }
        if backend == BackendKind::Cpu && config.precision != Precision::F32 {
            return Err(CliError::invalid(format!(
                "precision `{}` needs `--backend cuda` (the CPU backend computes in f32)",
                config.precision
            )));
        }
        if config.checkpoint_every == Some(0) {
            return Err(CliError::invalid("`--checkpoint-every` must be at least 1"));
        }
        if config.method != Method::Dreambooth
            && (self.class_prompt.is_some() || self.class_images.is_some())
        {
            return Err(CliError::invalid(format!(
                "`--class-prompt` and `--class-images` are for `--method dreambooth`, not `{}`",
                config.method
            )));
        }
        config
            .validate()
            .map_err(|m| CliError::invalid(format!("training settings: {m}")))?;
        if !model.is_dir() {
            return Err(CliError::invalid(format!(
                "model folder `{}` does not exist",
                model.display()
            )));
        }
        if !trainset.is_dir() {
            return Err(CliError::invalid(format!(
                "trainset `{}` is not a folder",
                trainset.display()
            )));
        }
        if output.exists() && !output.is_dir() {
            return Err(CliError::invalid(format!(
                "output `{}` exists and is not a folder",
                output.display()
            )));
        }
        if let Some(resume) = &self.resume {
            if !resume.join("state.json").is_file() {
                return Err(CliError::invalid(format!(
                    "`{}` is not a checkpoint folder (no state.json)",
                    resume.display()
                )));
            }
        }
        Ok(Run {
            model,
            trainset,
            output,
            resume: self.resume.clone(),
            backend,
            config,
        })
    }
}

/// Reads a `--from` file: the path keys, and the training fields as a
/// [`TrainConfig`] (unknown keys refused). Relative paths are made relative to the
/// file's folder.
fn read_run_file(file: &Path) -> CliResult<(FilePaths, TrainConfig)> {
    let label = file.display();
    let source = std::fs::read_to_string(file)
        .map_err(|e| CliError::invalid(format!("cannot read `{label}`: {e}")))?;
    let value: serde_yaml::Value = serde_yaml::from_str(&source)
        .map_err(|e| CliError::invalid(format!("`{label}` is not valid YAML: {e}")))?;
    let mut mapping = match value {
        serde_yaml::Value::Mapping(m) => m,
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(CliError::invalid(format!(
                "`{label}` must be a mapping of settings (`method: lora`, `token: ...`)"
            )))
        }
    };
    let mut path_keys = serde_yaml::Mapping::new();
    for key in PATH_KEYS {
        if let Some(v) = mapping.remove(key) {
            path_keys.insert(key.into(), v);
        }
    }
    let mut paths: FilePaths = serde_yaml::from_value(serde_yaml::Value::Mapping(path_keys))
        .map_err(|e| CliError::invalid(format!("`{label}`: {e}")))?;
    let config: TrainConfig =
        serde_yaml::from_value(serde_yaml::Value::Mapping(mapping)).map_err(|e| {
            CliError::invalid(format!(
                "`{label}`: {e} (besides the training fields, a run file may hold {})",
                PATH_KEYS.join(", ")
            ))
        })?;
    let base = file.parent().unwrap_or(Path::new(""));
    for p in [&mut paths.model, &mut paths.trainset, &mut paths.output]
        .into_iter()
        .flatten()
    {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    Ok((paths, config))
}

fn run_on<B: AutodiffBackend>(run: &Run, device: B::Device, json: bool) -> CliResult {
    let config = &run.config;
    let started = Instant::now();
    let mut progress = Progress::new(config, json);
    let outcome = train_from::<B>(
        &run.model,
        &run.trainset,
        config,
        &run.output,
        run.resume.as_deref(),
        &device,
        |report| progress.step(report),
    );
    progress.finish();
    let outcome: TrainOutcome = outcome.map_err(sd_error)?;
    let total_seconds = started.elapsed().as_secs_f64();
    let train_seconds = progress.train_seconds;

    let loss_png = run.output.join("loss.png");
    let title = format!("training loss: {} {}", config.method, config.token);
    plot::write_loss_png(&loss_png, &title, &outcome.losses).map_err(CliError::failure)?;
    let mut files = outcome.files.clone();
    files.push(loss_png.clone());

    let window = plot::AVERAGE_WINDOW.min(outcome.losses.len()).max(1);
    let mean_loss = plot::moving_average(&outcome.losses, window)
        .last()
        .copied()
        .flatten();
    let steps = outcome.losses.len();
    let report = Report {
        method: config.method,
        token: config.token.clone(),
        model: run.model.clone(),
        trainset: run.trainset.clone(),
        output: run.output.clone(),
        backend: run.backend.to_string(),
        steps,
        images: outcome.images,
        class_images: outcome.class_images,
        trainable_parameters: outcome.trainable_parameters,
        final_loss: outcome.losses.last().copied(),
        mean_loss,
        average_window: window,
        load_seconds: (total_seconds - train_seconds).max(0.0),
        train_seconds,
        steps_per_second: if train_seconds > 0.0 {
            steps as f64 / train_seconds
        } else {
            0.0
        },
        step_seconds_median: percentile(&progress.step_seconds, 0.5),
        step_seconds_p90: percentile(&progress.step_seconds, 0.9),
        files,
        loss_png,
        config: config.clone(),
    };
    if json {
        print_json(&report);
    } else {
        let class = if report.class_images > 0 {
            format!(" and {} class images", report.class_images)
        } else {
            String::new()
        };
        println!(
            "trained {} `{}` on {} image(s){class}: {} steps in {} ({:.2} step/s, +{} loading), \
             {} trainable parameters",
            report.method,
            report.token,
            report.images,
            report.steps,
            duration_ms((report.train_seconds * 1000.0) as i64),
            report.steps_per_second,
            duration_ms((report.load_seconds * 1000.0) as i64),
            report.trainable_parameters,
        );
        if let (Some(median), Some(p90)) = (report.step_seconds_median, report.step_seconds_p90) {
            println!(
                "step time after {WARM_UP_STEPS} warm-up steps: median {median:.3} s, p90 {p90:.3} s"
            );
        }
        if let (Some(last), Some(mean)) = (report.final_loss, report.mean_loss) {
            println!("loss: last step {last:.4}, mean of the last {window} steps {mean:.4}");
        }
        for file in &report.files {
            println!("wrote {}", file.display());
        }
    }
    Ok(())
}

/// A spinner while the model loads (and DreamBooth draws its class images), then a
/// bar with the loss, steps per second and the time left. Without a terminal on
/// stderr (and without `--json`), a line every twentieth of the run instead.
struct Progress {
    spinner: ProgressBar,
    bar: Option<ProgressBar>,
    lines: bool,
    hidden: bool,
    losses: Vec<f64>,
    train_seconds: f64,
    /// Steps this process ran, and the durations of those after the warm-up.
    steps_seen: usize,
    step_seconds: Vec<f64>,
}

/// Steps left out of the step-time figures: the first ones compile and autotune
/// kernels on CUDA.
const WARM_UP_STEPS: usize = 3;

/// The `q` quantile (nearest rank) of `values`, if any.
fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl Progress {
    fn new(config: &TrainConfig, json: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let hidden = json || !terminal;
        let spinner = if hidden {
            ProgressBar::hidden()
        } else {
            let s = ProgressBar::new_spinner();
            let what = match config.method {
                Method::Dreambooth => format!(
                    "loading the model and drawing {} class images (cached in OUTDIR/class_images/)",
                    config.class_images
                ),
                _ => "loading the model".to_string(),
            };
            s.set_message(what);
            s.enable_steady_tick(std::time::Duration::from_millis(120));
            s
        };
        Progress {
            spinner,
            bar: None,
            lines: !json && !terminal,
            hidden,
            losses: Vec::with_capacity(config.steps),
            train_seconds: 0.0,
            steps_seen: 0,
            step_seconds: Vec::new(),
        }
    }

    fn step(&mut self, report: &StepReport) {
        self.losses.push(report.loss);
        self.steps_seen += 1;
        if self.steps_seen > WARM_UP_STEPS {
            self.step_seconds.push(report.seconds - self.train_seconds);
        }
        self.train_seconds = report.seconds;
        let window = plot::AVERAGE_WINDOW.min(self.losses.len());
        let mean = plot::moving_average(&self.losses[self.losses.len() - window..], window)
            .last()
            .copied()
            .flatten()
            .unwrap_or(f64::NAN);
        let rate = if report.seconds > 0.0 {
            report.step as f64 / report.seconds
        } else {
            0.0
        };
        let left = if report.step > 0 {
            report.seconds / report.step as f64 * (report.steps - report.step) as f64
        } else {
            0.0
        };
        let message = format!(
            "loss {:.4} avg {:.4} lr {:.1e}  {}  eta {}",
            report.loss,
            mean,
            report.lr,
            speed(rate),
            duration_ms((left * 1000.0) as i64)
        );
        if self.lines {
            let every = (report.steps / 20).max(1);
            if report.step.is_multiple_of(every) || report.step == report.steps || report.step == 1
            {
                eprintln!("step {}/{}  {message}", report.step, report.steps);
            }
            return;
        }
        if self.hidden {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            self.spinner.finish_and_clear();
            let bar = ProgressBar::new(report.steps as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:20} {pos}/{len} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        });
        bar.set_message(message);
        bar.set_position(report.step as u64);
    }

    fn finish(&mut self) {
        self.spinner.finish_and_clear();
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `2.31 step/s`, or `4.2 s/step` when slower than one step a second.
fn speed(steps_per_second: f64) -> String {
    if steps_per_second >= 1.0 || steps_per_second == 0.0 {
        format!("{steps_per_second:.2} step/s")
    } else {
        format!("{:.1} s/step", 1.0 / steps_per_second)
    }
}

fn sd_error(e: SdError) -> CliError {
    match e {
        SdError::Io { .. } => CliError::failure(e.to_string()),
        _ => CliError::invalid(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn flags_override_the_file_and_paths_are_relative_to_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sd")).unwrap();
        std::fs::create_dir_all(dir.path().join("set")).unwrap();
        let file = write(
            dir.path(),
            "run.yaml",
            "method: ti\ntoken: <x-style>\nsteps: 50\nlr: 0.001\nmodel: sd\ntrainset: set\n\
             output: out\nbackend: cpu\nrandom_flip: true\n",
        );
        let args = Args {
            from: Some(file),
            steps: Some(7),
            ..Args::default()
        };
        let run = args.resolve().unwrap();
        assert_eq!(run.config.method, Method::Ti);
        assert_eq!(run.config.token, "<x-style>");
        assert_eq!(run.config.steps, 7);
        assert_eq!(run.config.lr, 0.001);
        assert!(run.config.random_flip);
        assert_eq!(run.config.rank, TrainConfig::default().rank);
        assert_eq!(run.model, dir.path().join("sd"));
        assert_eq!(run.trainset, dir.path().join("set"));
        assert_eq!(run.output, dir.path().join("out"));
    }

    #[test]
    fn schedule_accumulation_dropout_and_kohya_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "run.yaml",
            "token: <x-style>\nsteps: 40\nlr_scheduler: cosine\nlr_warmup_steps: 5\n\
             gradient_accumulation_steps: 2\nlora_dropout: 0.1\nkohya_file: true\n\
             model: .\ntrainset: .\noutput: out\n",
        );
        let run = Args {
            from: Some(file.clone()),
            ..Args::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(run.config.lr_scheduler, LrScheduler::Cosine);
        assert_eq!(run.config.lr_warmup_steps, 5);
        assert_eq!(run.config.gradient_accumulation_steps, 2);
        assert_eq!(run.config.lora_dropout, 0.1);
        assert!(run.config.kohya_file);
        let run = Args {
            from: Some(file),
            lr_scheduler: Some(LrScheduler::Linear),
            lr_warmup_steps: Some(0),
            grad_accum: Some(4),
            lora_dropout: Some(0.0),
            ..Args::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(run.config.lr_scheduler, LrScheduler::Linear);
        assert_eq!(run.config.lr_warmup_steps, 0);
        assert_eq!(run.config.gradient_accumulation_steps, 4);
        assert_eq!(run.config.lora_dropout, 0.0);
        assert!(run.config.kohya_file, "the file's kohya_file stays");

        let base = || Args {
            model: Some(dir.path().to_path_buf()),
            trainset: Some(dir.path().to_path_buf()),
            output: Some(dir.path().join("out")),
            token: Some("<t>".into()),
            ..Args::default()
        };
        for (args, needle) in [
            (
                Args {
                    lr_warmup_steps: Some(10),
                    ..base()
                },
                "`lr_warmup_steps` 10 needs a schedule with warm-up",
            ),
            (
                Args {
                    lr_scheduler: Some(LrScheduler::Linear),
                    lr_warmup_steps: Some(500),
                    ..base()
                },
                "`lr_warmup_steps` 500 is longer",
            ),
            (
                Args {
                    grad_accum: Some(0),
                    ..base()
                },
                "`gradient_accumulation_steps` must be at least 1",
            ),
            (
                Args {
                    lora_dropout: Some(1.0),
                    ..base()
                },
                "`lora_dropout` must be at least 0 and below 1",
            ),
            (
                Args {
                    method: Some(Method::Ti),
                    kohya: true,
                    ..base()
                },
                "`kohya_file` is for LoRA and DreamBooth",
            ),
            (
                Args {
                    precision: Some(Precision::Bf16),
                    ..base()
                },
                "precision `bf16` needs `--backend cuda`",
            ),
        ] {
            let err = args.resolve().unwrap_err();
            assert_eq!(err.exit, crate::error::Exit::Invalid, "{}", err.message);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
    }

    #[test]
    fn a_misspelt_key_in_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), "run.yaml", "token: <x>\nsteps: 5\nrnak: 8\n");
        let err = Args {
            from: Some(file),
            ..Args::default()
        }
        .resolve()
        .unwrap_err();
        assert_eq!(err.exit, crate::error::Exit::Invalid);
        assert!(err.message.contains("rnak"), "{}", err.message);
    }

    #[test]
    fn missing_and_bad_settings_are_invalid_input() {
        let dir = tempfile::tempdir().unwrap();
        let base = || Args {
            model: Some(dir.path().to_path_buf()),
            trainset: Some(dir.path().to_path_buf()),
            output: Some(dir.path().join("out")),
            token: Some("<t>".into()),
            ..Args::default()
        };
        assert!(base().resolve().is_ok());
        for (args, needle) in [
            (
                Args {
                    token: None,
                    ..base()
                },
                "--token",
            ),
            (
                Args {
                    output: None,
                    ..base()
                },
                "--output",
            ),
            (
                Args {
                    trainset: Some(dir.path().join("nope")),
                    ..base()
                },
                "nope",
            ),
            (
                Args {
                    resolution: Some(100),
                    ..base()
                },
                "resolution",
            ),
            (
                Args {
                    method: Some(Method::Dreambooth),
                    ..base()
                },
                "class_prompt",
            ),
            (
                Args {
                    class_prompt: Some("a painting".into()),
                    ..base()
                },
                "dreambooth",
            ),
        ] {
            let err = args.resolve().unwrap_err();
            assert_eq!(err.exit, crate::error::Exit::Invalid, "{}", err.message);
            assert!(err.message.contains(needle), "{needle}: {}", err.message);
        }
    }

    #[test]
    fn zero_max_grad_norm_turns_clipping_off() {
        let dir = tempfile::tempdir().unwrap();
        let run = Args {
            model: Some(dir.path().to_path_buf()),
            trainset: Some(dir.path().to_path_buf()),
            output: Some(dir.path().join("out")),
            token: Some("<t>".into()),
            max_grad_norm: Some(0.0),
            ..Args::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(run.config.max_grad_norm, None);
    }

    #[test]
    fn speed_reads_both_ways() {
        assert_eq!(speed(2.5), "2.50 step/s");
        assert_eq!(speed(0.25), "4.0 s/step");
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 9.0, 8.0];
        assert_eq!(percentile(&values, 0.5), Some(5.0));
        assert_eq!(percentile(&values, 0.9), Some(9.0));
        assert_eq!(percentile(&[2.0], 0.9), Some(2.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
