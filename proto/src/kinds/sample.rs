//! `sample`: generates images from a model folder, with the LoRA or textual
//! inversion a `train` job it needs produced (or the base model alone, without
//! one), for a list of prompts, K images each, from fixed seeds.

use serde::{Deserialize, Serialize};

use super::train::TRAIN_BACKENDS;

/// Schedulers the sampler accepts (atelier-sd's names).
pub const SAMPLE_SCHEDULERS: &[&str] = &["ddim", "euler", "dpmpp2m"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleParams {
    /// Diffusers model folder, as the worker sees it; the one the adapter was trained
    /// on. `atelier submit` makes a relative path absolute and checks it.
    pub model: String,
    /// What to draw; `{token}` is replaced by the trained token (the train job's
    /// `token`, from its `training.json`).
    pub prompts: Vec<String>,
    /// Images per prompt; image `k` of every prompt starts from the latents of seed
    /// `seed + k`, so every method of an experiment gets the same starting noise.
    #[serde(default = "default_images_per_prompt")]
    pub images_per_prompt: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_steps")]
    pub steps: usize,
    /// `ddim`, `euler` or `dpmpp2m`.
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    #[serde(default = "default_guidance")]
    pub guidance: f64,
    /// Image side in pixels (default: the model's native size).
    #[serde(default)]
    pub size: Option<usize>,
    /// Scale of the LoRA (ignored for textual inversion).
    #[serde(default = "default_scale")]
    pub lora_scale: f64,
    /// `cpu`, or `cuda` on the GPU the job is given.
    #[serde(default = "default_backend")]
    pub backend: String,
}

fn default_images_per_prompt() -> usize {
    4
}
fn default_steps() -> usize {
    30
}
fn default_scheduler() -> String {
    "ddim".into()
}
fn default_guidance() -> f64 {
    7.5
}
fn default_scale() -> f64 {
    1.0
}
fn default_backend() -> String {
    "cpu".into()
}

/// Most images one sample job makes.
pub const MAX_SAMPLES: usize = 10_000;

impl SampleParams {
    pub fn check(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("`model` is empty".into());
        }
        if self.prompts.is_empty() {
            return Err("`prompts` is empty: give at least one prompt".into());
        }
        if let Some(i) = self.prompts.iter().position(|p| p.trim().is_empty()) {
            return Err(format!("`prompts[{i}]` is empty"));
        }
        if self.images_per_prompt == 0 {
            return Err("`images_per_prompt` must be at least 1".into());
        }
        if self.images_per_prompt * self.prompts.len() > MAX_SAMPLES {
            return Err(format!(
                "{} prompts x `images_per_prompt` {} is more than {MAX_SAMPLES} images",
                self.prompts.len(),
                self.images_per_prompt
            ));
        }
        if !(1..=1000).contains(&self.steps) {
            return Err(format!("`steps` {} is out of range (1..=1000)", self.steps));
        }
        if !SAMPLE_SCHEDULERS.contains(&self.scheduler.as_str()) {
            return Err(format!(
                "`scheduler` `{}` is not one of {}",
                self.scheduler,
                SAMPLE_SCHEDULERS.join(", ")
            ));
        }
        if !self.guidance.is_finite() || self.guidance < 0.0 {
            return Err(format!(
                "`guidance` must be a number >= 0, not {}",
                self.guidance
            ));
        }
        if !self.lora_scale.is_finite() {
            return Err("`lora_scale` must be a finite number".into());
        }
        if let Some(size) = self.size {
            if !(8..=4096).contains(&size) {
                return Err(format!("`size` {size} is out of range (8..=4096)"));
            }
        }
        if !TRAIN_BACKENDS.contains(&self.backend.as_str()) {
            return Err(format!(
                "`backend` `{}` is not one of {}",
                self.backend,
                TRAIN_BACKENDS.join(", ")
            ));
        }
        Ok(())
    }

    /// The prompts with `{token}` replaced.
    pub fn prompts_for(&self, token: Option<&str>) -> Vec<String> {
        self.prompts
            .iter()
            .map(|p| match token {
                Some(token) => p.replace("{token}", token),
                None => p.clone(),
            })
            .collect()
    }
}
