//! `atelier generate`: text-to-image with a diffusers model folder, on the CPU or a
//! CUDA GPU. `--latents` starts from diffusers' latents so that outputs can be
//! compared with PyTorch; `--raw` keeps the image before 8-bit quantisation.

use std::path::{Path, PathBuf};
use std::time::Instant;

use atelier_sd::backend::BackendKind;
use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::{read_latents, GenerateOptions, StableDiffusion};
use atelier_sd::schedulers::SchedulerKind;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{CliError, CliResult};
use crate::output::print_json;
use crate::settings::Settings;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Diffusers model folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// What to draw
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (default: the empty prompt, as diffusers)
    #[arg(long)]
    pub negative_prompt: Option<String>,
    /// Denoising steps
    #[arg(long, default_value_t = 30)]
    pub steps: usize,
    /// ddim, euler or dpmpp2m (configured from the folder's scheduler_config.json)
    #[arg(long, default_value = "ddim")]
    pub scheduler: SchedulerKind,
    /// Classifier-free guidance scale (1 turns guidance off)
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// Seed for the initial latents (default: random, printed)
    #[arg(long)]
    pub seed: Option<u64>,
    /// Initial latents from a safetensors file (key `latents`, shape [1,4,h,w])
    #[arg(long, value_name = "FILE", conflicts_with = "seed")]
    pub latents: Option<PathBuf>,
    /// Image side in pixels (default: the model's native size)
    #[arg(long, value_name = "PX")]
    pub size: Option<usize>,
    /// LoRA weights to apply, with an optional scale (diffusers, peft or kohya keys)
    #[arg(long, value_name = "FILE[:SCALE]")]
    pub lora: Vec<String>,
    /// Textual-inversion embeddings (learned_embeds.safetensors or A1111 `emb_params`)
    #[arg(long, value_name = "FILE")]
    pub ti: Vec<PathBuf>,
    /// cpu or cuda
    #[arg(long, default_value = "cpu")]
    pub backend: BackendKind,
    /// Prefer the fp16 variant files when the folder has both
    #[arg(long)]
    pub fp16: bool,
    /// PNG to write
    #[arg(long, short, value_name = "OUT.png")]
    pub output: PathBuf,
    /// Also write the image before quantisation (key `image`, f32 [3,H,W] in [0,1])
    #[arg(long, value_name = "OUT.safetensors")]
    pub raw: Option<PathBuf>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    output: PathBuf,
    raw: Option<PathBuf>,
    width: usize,
    height: usize,
    steps: usize,
    scheduler: String,
    guidance: f64,
    seed: Option<u64>,
    latents: Option<PathBuf>,
    backend: String,
    load_seconds: f64,
    generate_seconds: f64,
}

impl Args {
    pub async fn exec(self, _settings: Settings) -> CliResult {
        tokio::task::spawn_blocking(move || self.run())
            .await
            .map_err(|e| CliError::failure(format!("generation stopped: {e}")))?
    }

    fn run(self) -> CliResult {
        match self.backend {
            BackendKind::Cpu => self.run_on::<atelier_sd::backend::Cpu>(Default::default()),
            BackendKind::Cuda => {
                let device = atelier_sd::backend::cuda_device(0).map_err(CliError::failure)?;
                self.run_on::<atelier_sd::backend::Cuda>(device)
            }
        }
    }

    fn run_on<B: Backend>(self, device: B::Device) -> CliResult {
        if self.steps == 0 {
            return Err(CliError::invalid("`--steps` must be at least 1"));
        }
        let variant = if self.fp16 {
            Variant::Fp16
        } else {
            Variant::Auto
        };
        let started = Instant::now();
        let spinner = spinner(&format!("loading {}", self.model.display()), self.json);
        let folder = ModelFolder::open(&self.model, variant).map_err(sd_error)?;
        let mut sd = StableDiffusion::<B>::load(&folder, &device).map_err(sd_error)?;
        for file in &self.ti {
            let tokens = sd.load_textual_inversion(file).map_err(sd_error)?;
            spinner.println(format!("textual inversion: {}", tokens.join(", ")));
        }
        for spec in &self.lora {
            let (path, scale) = parse_lora(spec)?;
            let applied = sd.apply_lora(&path, scale).map_err(sd_error)?;
            spinner.println(format!(
                "LoRA {} at scale {scale}: {applied} layers",
                path.display()
            ));
        }
        spinner.finish_and_clear();
        let load_seconds = started.elapsed().as_secs_f64();

        let seed = match (&self.latents, self.seed) {
            (Some(_), _) => None,
            (None, Some(seed)) => Some(seed),
            (None, None) => Some(rand::random::<u32>() as u64),
        };
        let latents = match &self.latents {
            Some(path) => read_latents::<B>(path, sd.latent_channels, &device).map_err(sd_error)?,
            None => {
                let latent_side = match self.size {
                    Some(px) => {
                        let factor = sd.vae_config.downscale();
                        if px % factor != 0 {
                            return Err(CliError::invalid(format!(
                                "`--size` {px} is not a multiple of the VAE's factor {factor}"
                            )));
                        }
                        Some(px / factor)
                    }
                    None => None,
                };
                sd.random_latents(seed.unwrap_or_default(), latent_side)
            }
        };

        let options = GenerateOptions {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            scheduler: self.scheduler,
        };
        let started = Instant::now();
        let bar = steps_bar(self.steps, self.json);
        let image = sd
            .generate(&options, latents, |done, _| bar.set_position(done as u64))
            .map_err(sd_error)?;
        bar.finish_and_clear();
        let generate_seconds = started.elapsed().as_secs_f64();

        let [_, _, height, width] = image.dims();
        let image: Tensor<B, 3> = image.squeeze_dim(0);
        let values = image
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| CliError::failure(format!("reading the image back: {e:?}")))?;
        write_png(&self.output, &values, width, height)?;
        if let Some(raw) = &self.raw {
            write_raw(raw, &values, width, height)?;
        }

        let report = Report {
            output: self.output.clone(),
            raw: self.raw.clone(),
            width,
            height,
            steps: self.steps,
            scheduler: self.scheduler.to_string(),
            guidance: self.guidance,
            seed,
            latents: self.latents.clone(),
            backend: self.backend.to_string(),
            load_seconds,
            generate_seconds,
        };
        if self.json {
            print_json(&report);
        } else {
            let start = match (&self.latents, seed) {
                (Some(path), _) => format!("latents {}", path.display()),
                (None, Some(seed)) => format!("seed {seed}"),
                (None, None) => String::new(),
            };
            println!(
                "wrote {} ({width}x{height}, {} {} steps, guidance {}, {start}) in {:.1}s (+{:.1}s loading)",
                self.output.display(),
                self.steps,
                self.scheduler,
                self.guidance,
                generate_seconds,
                load_seconds
            );
        }
        Ok(())
    }
}

fn sd_error(e: atelier_sd::SdError) -> CliError {
    CliError::invalid(e.to_string())
}

/// `FILE` or `FILE:SCALE` (a scale is a number after the last colon).
fn parse_lora(spec: &str) -> CliResult<(PathBuf, f64)> {
    if let Some((path, scale)) = spec.rsplit_once(':') {
        if let Ok(scale) = scale.parse::<f64>() {
            return Ok((PathBuf::from(path), scale));
        }
    }
    Ok((PathBuf::from(spec), 1.0))
}

fn spinner(message: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

fn steps_bar(steps: usize, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// [3, H, W] in [0, 1] -> 8-bit RGB PNG, rounded as diffusers' `numpy_to_pil`.
fn write_png(path: &Path, chw: &[f32], width: usize, height: usize) -> CliResult {
    atelier_sd::pipeline::to_rgb8(chw, width, height)
        .save(path)
        .map_err(|e| CliError::failure(format!("failed to write `{}`: {e}", path.display())))
}

fn write_raw(path: &Path, chw: &[f32], width: usize, height: usize) -> CliResult {
    let bytes: Vec<u8> = chw.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![3, height, width],
        &bytes,
    )
    .map_err(|e| CliError::failure(e.to_string()))?;
    safetensors::serialize_to_file([("image", view)], None, path)
        .map_err(|e| CliError::failure(format!("failed to write `{}`: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lora_scale_follows_the_last_colon() {
        assert_eq!(
            parse_lora("a.safetensors").unwrap(),
            ("a.safetensors".into(), 1.0)
        );
        assert_eq!(
            parse_lora("a.safetensors:0.5").unwrap(),
            ("a.safetensors".into(), 0.5)
        );
        assert_eq!(
            parse_lora("C:/x/a.safetensors").unwrap(),
            ("C:/x/a.safetensors".into(), 1.0)
        );
    }
}
