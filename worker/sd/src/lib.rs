//! Stable Diffusion 1.x in burn: the model library behind atelier's training and
//! sampling, usable without the worker agent.
//!
//! Modules mirror diffusers' module tree, so that a burn record path *is* the
//! diffusers weight name (`down_blocks.0.attentions.0.proj_in.weight`): there is no
//! remapping table for diffusers folders.
//!
//! # Layout
//! - [`backend`]: the CPU and CUDA backends and picking one at run time.
//! - [`error`]: the crate's error type; every message names the file, tensor or field.
//! - [`config`]: reading a component's `config.json` into its typed config.
//! - [`weights`]: memory-mapped safetensors loading and saving, keyed by module path.
//! - [`layers`]: small building blocks shared by the models (activations, conv helpers).
//! - [`lora`]: LoRA files (diffusers, peft, kohya) merged into linear layers.
//! - [`fuse`]: a LoRA fused into a model folder, written as a new folder.
//! - [`textual_inversion`]: learned embeddings for new tokens.
//! - [`tokenizer`]: the CLIP BPE tokenizer, as transformers' `CLIPTokenizer`.
//! - [`clip`]: `CLIPTextModel` (the text encoder).
//! - [`embeddings`]: sinusoidal timestep projection and the timestep MLP.
//! - [`resnet`]: `ResnetBlock2D`, `Downsample2D`, `Upsample2D`.
//! - [`attention`]: `Attention`, `FeedForward`, `BasicTransformerBlock`, `Transformer2DModel`.
//! - [`unet_2d_blocks`]: the down, mid and up blocks of the UNet and the VAE.
//! - [`unet_2d`]: the `UNet2DConditionModel` and its config.
//! - [`vae`]: `AutoencoderKL` (encoder to mean/logvar, decoder).
//! - [`schedulers`]: DDPM (training), DDIM, Euler, DPM++ 2M, configured as diffusers'.
//! - [`model_folder`]: a diffusers folder: `model_index.json`, components, fp16 variants.
//! - [`pipeline`]: text-to-image with classifier-free guidance.
//! - [`train`]: LoRA adapters, the diffusion loss, a PyTorch-exact AdamW.
//! - [`random_model`]: a diffusers folder with random weights, from configs.
#![recursion_limit = "256"]

pub mod attention;
pub mod backend;
pub mod clip;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod fuse;
pub mod layers;
pub mod lora;
pub mod model_folder;
pub mod pipeline;
pub mod precision;
pub mod random_model;
pub mod resnet;
pub mod schedulers;
pub mod textual_inversion;
pub mod tokenizer;
pub mod train;
pub mod unet_2d;
pub mod unet_2d_blocks;
pub mod vae;
pub mod weights;

pub use error::{Result, SdError};
