//! Text-to-image, as diffusers' `StableDiffusionPipeline.__call__`: encode the
//! prompt and the negative prompt (the empty prompt when none is given), scale the
//! initial latents by the scheduler's `init_noise_sigma`, run the UNet on both
//! halves with classifier-free guidance, step the scheduler, decode with the VAE.

use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};

use crate::clip::ClipTextModel;
use crate::error::{Result, SdError};
use crate::lora::{linear_paths, merge_into, LoraFile, Target};
use crate::model_folder::ModelFolder;
use crate::schedulers::{build_scheduler, SchedulerKind};
use crate::textual_inversion;
use crate::tokenizer::ClipTokenizer;
use crate::unet_2d::UNet2DConditionModel;
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};

pub struct StableDiffusion<B: Backend> {
    pub tokenizer: ClipTokenizer,
    pub text_encoder: ClipTextModel<B>,
    pub unet: UNet2DConditionModel<B>,
    pub vae: AutoencoderKL<B>,
    pub vae_config: AutoencoderKLConfig,
    pub scheduler_config: serde_json::Value,
    /// The UNet's `sample_size`: latents' side when none is asked for.
    pub latent_size: usize,
    pub latent_channels: usize,
    /// Multi-vector textual-inversion tokens and what they expand to in a prompt
    /// (`<tok>` -> `<tok> <tok>_1 <tok>_2`), as diffusers' `maybe_convert_prompt`.
    pub expansions: Vec<(String, String)>,
    pub device: B::Device,
}

#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    /// `None` is the empty prompt, as in diffusers.
    pub negative_prompt: Option<String>,
    pub steps: usize,
    pub guidance: f64,
    pub scheduler: SchedulerKind,
}

impl<B: Backend> StableDiffusion<B> {
    pub fn load(folder: &ModelFolder, device: &B::Device) -> Result<Self> {
        let tokenizer_dir = folder.component("tokenizer")?;
        let tokenizer = ClipTokenizer::from_dir(&tokenizer_dir)?;
        let unet_config = folder.unet_config()?;
        let vae_config = folder.vae_config()?;
        let text_config = folder.text_encoder_config()?;
        let cross = unet_config
            .cross_attention_dim
            .expand(1, "cross_attention_dim");
        if let Ok(dims) = &cross {
            if dims[0] != text_config.hidden_size {
                return Err(SdError::ModelFolder {
                    path: folder.root().to_path_buf(),
                    message: format!(
                        "the UNet's `cross_attention_dim` {} differs from the text encoder's \
                         `hidden_size` {}",
                        dims[0], text_config.hidden_size
                    ),
                });
            }
        }
        Ok(StableDiffusion {
            tokenizer,
            text_encoder: folder.load_text_encoder(device)?,
            unet: folder.load_unet(device)?,
            latent_size: unet_config.sample_size.unwrap_or(64),
            latent_channels: unet_config.in_channels,
            vae: folder.load_vae(device)?,
            vae_config,
            scheduler_config: folder.scheduler_config()?,
            expansions: Vec::new(),
            device: device.clone(),
        })
    }

    /// Adds the placeholder tokens of a textual-inversion file to the tokenizer and
    /// their vectors to the token embedding table; returns the placeholders.
    /// Nothing changes when the file is refused.
    pub fn load_textual_inversion(&mut self, path: &Path) -> Result<Vec<String>> {
        let embeddings = textual_inversion::read(path)?;
        let hidden = self.text_encoder.hidden_size();
        let invalid = |message: String| SdError::config(path, message);
        // Checked for every embedding before any is added.
        for embedding in &embeddings {
            if embedding.hidden != hidden {
                return Err(invalid(format!(
                    "embedding `{}` is {} wide but the text encoder's hidden size is {hidden}",
                    embedding.token, embedding.hidden
                )));
            }
            if let Some(t) = embedding
                .tokens()
                .iter()
                .find(|t| self.tokenizer.token_id(t).is_some())
            {
                return Err(invalid(format!(
                    "token `{t}` is already in the tokenizer (is this embedding loaded twice?); \
                     load each embedding once"
                )));
            }
        }
        let mut placeholders = Vec::new();
        for embedding in embeddings {
            let tokens = embedding.tokens();
            let rows = self.text_encoder.vocab_rows();
            let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
            let ids = self.tokenizer.add_tokens(&refs);
            let expected: Vec<u32> = (rows..rows + tokens.len()).map(|r| r as u32).collect();
            if ids != expected {
                return Err(invalid(format!(
                    "the tokenizer gave ids {ids:?} but the embedding table has {rows} rows"
                )));
            }
            self.text_encoder
                .append_token_embeddings(embedding.values.clone(), embedding.vectors);
            if tokens.len() > 1 {
                self.expansions
                    .push((embedding.token.clone(), tokens.join(" ")));
            }
            placeholders.push(embedding.token);
        }
        Ok(placeholders)
    }

    /// Merges a LoRA file into the UNet (and the text encoder if it has pairs for
    /// it) at `scale`; returns the number of layers changed.
    pub fn apply_lora(&mut self, path: &Path, scale: f64) -> Result<usize> {
        let file = LoraFile::read(path)?;
        let unet_pairs = file.resolve(Target::Unet, &linear_paths(&self.unet), path)?;
        let text_pairs =
            file.resolve(Target::TextEncoder, &linear_paths(&self.text_encoder), path)?;
        let (unet, a) = merge_into(self.unet.clone(), &unet_pairs, scale as f32, path)?;
        let (text, b) = merge_into(self.text_encoder.clone(), &text_pairs, scale as f32, path)?;
        self.unet = unet;
        self.text_encoder = text;
        Ok(a + b)
    }

    /// Token ids padded to the tokenizer's length: [n, 77].
    pub fn token_ids(&self, prompts: &[&str]) -> Tensor<B, 2, Int> {
        let rows: Vec<Vec<u32>> = prompts
            .iter()
            .map(|p| {
                let mut prompt = p.to_string();
                for (token, expansion) in &self.expansions {
                    prompt = prompt.replace(token.as_str(), expansion);
                }
                self.tokenizer.encode_padded(&prompt)
            })
            .collect();
        let len = rows.first().map_or(0, Vec::len);
        let flat: Vec<i64> = rows.iter().flatten().map(|&id| id as i64).collect();
        Tensor::from_data(TensorData::new(flat, [prompts.len(), len]), &self.device)
    }

    /// Prompts -> text encoder hidden states [n, 77, hidden].
    pub fn encode_prompts(&self, prompts: &[&str]) -> Tensor<B, 3> {
        self.text_encoder.forward(self.token_ids(prompts))
    }

    /// Gaussian latents [1, c, size, size] from a seed (atelier's own generator;
    /// pass diffusers' latents with `generate` to compare with PyTorch).
    pub fn random_latents(&self, seed: u64, size: Option<usize>) -> Tensor<B, 4> {
        let size = size.unwrap_or(self.latent_size);
        let shape = [1, self.latent_channels, size, size];
        gaussian(seed, shape, &self.device)
    }

    /// Runs the denoising loop from `latents` [1, c, h, w] and decodes: image
    /// [1, 3, H, W] in [0, 1], before quantisation. `on_step(i, n)` is called after
    /// each step.
    pub fn generate(
        &self,
        options: &GenerateOptions,
        latents: Tensor<B, 4>,
        mut on_step: impl FnMut(usize, usize),
    ) -> Result<Tensor<B, 4>> {
        let guided = options.guidance > 1.0;
        let negative = options.negative_prompt.as_deref().unwrap_or("");
        let context = if guided {
            self.encode_prompts(&[negative, &options.prompt])
        } else {
            self.encode_prompts(&[&options.prompt])
        };
        let mut scheduler =
            build_scheduler::<B>(options.scheduler, &self.scheduler_config, options.steps)?;
        let timesteps = scheduler.timesteps().to_vec();
        let mut latents = latents * scheduler.init_noise_sigma();
        for (i, &t) in timesteps.iter().enumerate() {
            let input = if guided {
                Tensor::cat(vec![latents.clone(), latents.clone()], 0)
            } else {
                latents.clone()
            };
            let input = scheduler.scale_model_input(input, i);
            let noise = self.unet.forward(input, &[t], &context);
            let noise = if guided {
                let [uncond, text] = noise
                    .chunk(2, 0)
                    .try_into()
                    .expect("chunk(2) gives two halves");
                uncond.clone() + (text - uncond) * options.guidance
            } else {
                noise
            };
            latents = scheduler.step(noise, i, latents);
            on_step(i + 1, timesteps.len());
        }
        Ok(self.decode(latents))
    }

    /// Latents (as the UNet sees them) -> image in [0, 1].
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut z = latents / self.vae_config.scaling_factor;
        if let Some(shift) = self.vae_config.shift_factor {
            z = z + shift;
        }
        let image = self.vae.decode(z);
        (image / 2.0 + 0.5).clamp(0.0, 1.0)
    }
}

/// An image [3, H, W] in [0, 1] (channel planes) as 8-bit RGB, rounded as
/// diffusers' `numpy_to_pil` (`(x * 255).round()`).
pub fn to_rgb8(chw: &[f32], width: usize, height: usize) -> image::RgbImage {
    let plane = width * height;
    assert_eq!(chw.len(), plane * 3, "an image of [3, {height}, {width}]");
    let mut rgb = Vec::with_capacity(plane * 3);
    for i in 0..plane {
        for c in 0..3 {
            rgb.push((chw[c * plane + i] * 255.0).round().clamp(0.0, 255.0) as u8);
        }
    }
    image::RgbImage::from_raw(width as u32, height as u32, rgb).expect("the buffer's size")
}

/// Standard normal samples (Box-Muller over ChaCha8), reproducible for a seed.
pub fn gaussian<B: Backend, const D: usize>(
    seed: u64,
    shape: [usize; D],
    device: &B::Device,
) -> Tensor<B, D> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let mut values = Vec::with_capacity(n + 1);
    while values.len() < n {
        let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1]: ln is finite
        let u2: f64 = rng.gen();
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        values.push((r * theta.cos()) as f32);
        values.push((r * theta.sin()) as f32);
    }
    values.truncate(n);
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// Reads initial latents from a safetensors file (key `latents`, [1, c, h, w]).
pub fn read_latents<B: Backend>(
    path: &Path,
    channels: usize,
    device: &B::Device,
) -> Result<Tensor<B, 4>> {
    let file = crate::weights::SafetensorsFile::open(path)?;
    let shape = file
        .shape("latents")
        .ok_or_else(|| SdError::Safetensors {
            path: path.to_path_buf(),
            message: "no tensor named `latents`".into(),
        })?
        .to_vec();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != channels {
        return Err(SdError::Safetensors {
            path: path.to_path_buf(),
            message: format!(
                "tensor `latents` has shape {shape:?}, expected [1, {channels}, h, w]"
            ),
        });
    }
    file.tensor("latents", device)
}
