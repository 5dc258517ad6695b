//! Stable Diffusion 1.x in burn: the model library behind atelier's training and
//! sampling, usable without the worker agent.
//!
//! Modules mirror diffusers' module tree, so that a burn record path *is* the
//! diffusers weight name (`down_blocks.0.attentions.0.proj_in.weight`): there is no
//! remapping table for diffusers folders.
//!
//! # Layout
//! - [`error`]: the crate's error type; every message names the file, tensor or field.
//! - [`config`]: reading a component's `config.json` into its typed config.
//! - [`weights`]: memory-mapped safetensors loading and saving, keyed by module path.
//! - [`layers`]: small building blocks shared by the models (activations, conv helpers).
//! - [`clip`]: `CLIPTextModel` (the text encoder).
//! - [`embeddings`]: sinusoidal timestep projection and the timestep MLP.
//! - [`resnet`]: `ResnetBlock2D`, `Downsample2D`, `Upsample2D`.
//! - [`attention`]: `Attention`, `FeedForward`, `BasicTransformerBlock`, `Transformer2DModel`.
//! - [`unet_2d_blocks`]: the down, mid and up blocks of the UNet and the VAE.
//! - [`unet_2d`]: `UNet2DConditionModel`.
//! - [`vae`]: `AutoencoderKL` (encoder to mean/logvar, decoder).
//! - [`model_folder`]: a diffusers folder: `model_index.json`, components, fp16 variants.
//! - [`pipeline`]: text-to-image with classifier-free guidance.
#![recursion_limit = "256"]

pub mod attention;
pub mod clip;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod layers;
pub mod model_folder;
// pub mod pipeline; (lands with tokenizer and schedulers)
pub mod resnet;
pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod vae;
pub mod weights;

pub use error::{Result, SdError};
