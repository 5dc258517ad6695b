//! The `sample` job's blocking half: load the model on the job's backend, apply
//! the trained adapter, and draw K images per prompt from fixed seeds.
//!
//! Image `k` of every prompt starts from the latents of seed `seed + k`, so the
//! samples of two methods (or of the base model) differ only by what was trained.
//! Outputs, in the output folder:
//! - `samples/pPP-kKK.png`: 8-bit images, rounded as diffusers';
//! - `samples.safetensors`: `images`, f32 [N, 3, H, W] in [0, 1], before
//!   quantisation, in the order of `samples.json`;
//! - `samples.json`: one entry per image (file, prompt, prompt index, seed), and
//!   what was applied.

use std::path::PathBuf;

use atelier_sd::model_folder::{ModelFolder, Variant};
use atelier_sd::pipeline::{to_rgb8, GenerateOptions, StableDiffusion};
use atelier_sd::schedulers::SchedulerKind;
use atelier_sd::weights::write_f32_safetensors;
use atelier_sd::SdError;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::train::Device;

pub const SAMPLES_DIR: &str = "samples";
pub const SAMPLES_TENSORS: &str = "samples.safetensors";
pub const SAMPLES_INDEX: &str = "samples.json";
/// Key of the image tensor in [`SAMPLES_TENSORS`].
pub const IMAGES_KEY: &str = "images";

/// What a sample run applies to the base model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Adapter {
    /// The base model alone.
    None,
    Lora {
        file: PathBuf,
        scale: f64,
    },
    TextualInversion {
        file: PathBuf,
    },
}

/// Where the adapter came from, recorded in `samples.json` so that an `eval` job
/// and `atelier report` can label the samples without asking the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// `none`, `lora` or `textual_inversion`.
    pub adapter: String,
    /// The training method (`lora`, `dreambooth`, `ti`), from `training.json`.
    pub method: Option<String>,
    pub token: Option<String>,
    pub train_job: Option<i64>,
    pub train_job_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SampleSpec {
    pub model: PathBuf,
    pub adapter: Adapter,
    pub provenance: Provenance,
    /// Prompts with the token already in place.
    pub prompts: Vec<String>,
    pub images_per_prompt: usize,
    pub seed: u64,
    pub steps: usize,
    pub scheduler: SchedulerKind,
    pub guidance: f64,
    pub size: Option<usize>,
    pub out: PathBuf,
    pub device: Device,
}

/// One generated image, as listed in `samples.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Path relative to the output folder (`samples/p00-k00.png`).
    pub file: String,
    pub prompt: String,
    pub prompt_index: usize,
    pub seed: u64,
}

/// `samples.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleIndex {
    pub provenance: Provenance,
    pub width: usize,
    pub height: usize,
    pub steps: usize,
    pub scheduler: String,
    pub guidance: f64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error(transparent)]
    Sd(#[from] SdError),
    #[error("{0}")]
    Device(String),
    #[error("failed to write `{}`: {error}", .path.display())]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("sampling was cancelled")]
    Cancelled,
}

/// Draws every sample; `on_image(done, total)` hears each, `cancelled` is asked
/// between images.
pub fn run(
    spec: &SampleSpec,
    cancelled: &dyn Fn() -> bool,
    on_image: &mut dyn FnMut(usize, usize),
) -> Result<SampleIndex, SampleError> {
    match spec.device {
        Device::Cpu => {
            run_on::<atelier_sd::backend::Cpu>(spec, &Default::default(), cancelled, on_image)
        }
        Device::Cuda(index) => {
            let device = atelier_sd::backend::cuda_device(index).map_err(SampleError::Device)?;
            run_on::<atelier_sd::backend::Cuda>(spec, &device, cancelled, on_image)
        }
    }
}

fn run_on<B: Backend>(
    spec: &SampleSpec,
    device: &B::Device,
    cancelled: &dyn Fn() -> bool,
    on_image: &mut dyn FnMut(usize, usize),
) -> Result<SampleIndex, SampleError> {
    let folder = ModelFolder::open(&spec.model, Variant::Auto)?;
    let mut sd = StableDiffusion::<B>::load(&folder, device)?;
    match &spec.adapter {
        Adapter::None => {}
        Adapter::Lora { file, scale } => {
            sd.apply_lora(file, *scale)?;
        }
        Adapter::TextualInversion { file } => {
            sd.load_textual_inversion(file)?;
        }
    }
    let latent_side = match spec.size {
        Some(px) => {
            let factor = sd.vae_config.downscale();
            if px % factor != 0 {
                return Err(SdError::Invalid(format!(
                    "params.size {px} is not a multiple of the VAE's factor {factor}"
                ))
                .into());
            }
            Some(px / factor)
        }
        None => None,
    };
    let dir = spec.out.join(SAMPLES_DIR);
    std::fs::create_dir_all(&dir).map_err(|error| SampleError::Write {
        path: dir.clone(),
        error,
    })?;

    let total = spec.prompts.len() * spec.images_per_prompt;
    let mut samples = Vec::with_capacity(total);
    let mut values: Vec<f32> = Vec::new();
    let (mut width, mut height) = (0, 0);
    for (p, prompt) in spec.prompts.iter().enumerate() {
        let options = GenerateOptions {
            prompt: prompt.clone(),
            negative_prompt: None,
            steps: spec.steps,
            guidance: spec.guidance,
            scheduler: spec.scheduler,
        };
        for k in 0..spec.images_per_prompt {
            if cancelled() {
                return Err(SampleError::Cancelled);
            }
            let seed = spec.seed + k as u64;
            let latents = sd.random_latents(seed, latent_side);
            let image = sd.generate(&options, latents, |_, _| {})?;
            let [_, _, h, w] = image.dims();
            (width, height) = (w, h);
            let image: Tensor<B, 3> = image.squeeze_dim(0);
            let chw = image
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| SdError::Invalid(format!("reading an image back: {e:?}")))?;
            let file = format!("{SAMPLES_DIR}/p{p:02}-k{k:02}.png");
            let path = spec.out.join(&file);
            to_rgb8(&chw, w, h)
                .save(&path)
                .map_err(|e| SampleError::Write {
                    path: path.clone(),
                    error: std::io::Error::other(e),
                })?;
            values.extend_from_slice(&chw);
            samples.push(Sample {
                file,
                prompt: prompt.clone(),
                prompt_index: p,
                seed,
            });
            on_image(samples.len(), total);
        }
    }
    let index = SampleIndex {
        provenance: spec.provenance.clone(),
        width,
        height,
        steps: spec.steps,
        scheduler: spec.scheduler.to_string(),
        guidance: spec.guidance,
        samples,
    };
    let index_json = serde_json::to_string_pretty(&index).expect("serialisable");
    write_f32_safetensors(
        &spec.out.join(SAMPLES_TENSORS),
        &[(
            IMAGES_KEY.to_string(),
            vec![total, 3, height, width],
            values,
        )],
        &[("samples", index_json.clone())],
    )?;
    let path = spec.out.join(SAMPLES_INDEX);
    std::fs::write(&path, index_json + "\n").map_err(|error| SampleError::Write {
        path: path.clone(),
        error,
    })?;
    Ok(index)
}

/// The files of a finished run, relative to its output folder, in upload order.
pub fn output_files(index: &SampleIndex) -> Vec<String> {
    let mut files: Vec<String> = index.samples.iter().map(|s| s.file.clone()).collect();
    files.push(SAMPLES_TENSORS.to_string());
    files.push(SAMPLES_INDEX.to_string());
    files
}
