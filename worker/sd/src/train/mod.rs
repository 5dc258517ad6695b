//! Training: LoRA adapters on the UNet's attention projections, textual-inversion
//! rows, the diffusion loss, and an AdamW that matches `torch.optim.AdamW` step for
//! step (burn's differs in defaults and clips each tensor on its own instead of the
//! global norm `clip_grad_norm_` uses).
//!
//! # Layout
//! - [`adapters`]: attaching LoRA adapters, their dropout masks, and
//!   reading/writing them under diffusers', peft's and kohya's names.
//! - [`adamw`]: AdamW with a global gradient-norm clip, over a module's trainable
//!   parameters.
//! - [`step`]: one training step's loss, with every random draw passed in, and
//!   gradient accumulation over micro-batches.
//! - [`schedule`]: learning-rate schedules with warm-up (diffusers' `get_scheduler`).
//! - [`checkpoint`]: optimizer moments and run state, for a bit-exact resume.
//! - [`config`]: a run's method, token and hyper-parameters.
//! - [`data`]: trainset folders, crops and normalisation.
//! - [`trainer`]: a whole run, writing diffusers-loadable files.

pub mod adamw;
pub mod adapters;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod schedule;
pub mod step;
pub mod trainer;
