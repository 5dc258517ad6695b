//! `train`: fine-tunes a diffusers model folder with LoRA, DreamBooth-LoRA or
//! textual inversion.
//!
//! The training fields are those of `atelier_sd::train::config::TrainConfig`, with
//! its defaults (a worker test checks that the two agree), so an experiment's
//! `params:` read like an `atelier train --from` file. They are spelt out here rather
//! than shared because this crate is also the coordinator's, which has no use for
//! the model library.

use serde::{Deserialize, Serialize};

/// The training methods, as `TrainConfig::method` spells them.
pub const METHODS: &[&str] = &["lora", "dreambooth", "ti"];
/// `TrainParams::backend` values.
pub const TRAIN_BACKENDS: &[&str] = &["cpu", "cuda"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    /// Diffusers model folder, as the worker sees it (a shared path, like a
    /// trainset's). `atelier submit` makes a relative path absolute against the
    /// experiment file's folder and checks that it exists.
    pub model: String,
    /// A trainset folder the worker reads directly. Without it, the images are the
    /// `dataset.safetensors` of the `prepare` job this job needs (`needs:`).
    #[serde(default)]
    pub trainset: Option<String>,
    /// `cpu`, or `cuda` on the GPU the job is given (it must ask for one:
    /// `requires: {gpus: 1, backend: cuda}`).
    #[serde(default = "default_backend")]
    pub backend: String,

    // The training fields, as in `TrainConfig`.
    /// `lora`, `dreambooth` or `ti`.
    #[serde(default = "default_method")]
    pub method: String,
    /// The style token (`<monet-style>`).
    pub token: String,
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// `constant`, `constant_with_warmup`, `linear` or `cosine` (diffusers' names).
    #[serde(default = "default_lr_scheduler")]
    pub lr_scheduler: String,
    #[serde(default)]
    pub lr_warmup_steps: usize,
    #[serde(default = "default_one")]
    pub gradient_accumulation_steps: usize,
    #[serde(default = "default_rank")]
    pub rank: usize,
    #[serde(default = "default_alpha")]
    pub alpha: f64,
    #[serde(default)]
    pub lora_dropout: f64,
    #[serde(default = "default_resolution")]
    pub resolution: usize,
    #[serde(default = "default_one")]
    pub batch: usize,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_caption_template")]
    pub caption_template: String,
    #[serde(default = "default_initializer_token")]
    pub initializer_token: String,
    #[serde(default)]
    pub class_prompt: Option<String>,
    #[serde(default = "default_class_images")]
    pub class_images: usize,
    #[serde(default = "default_class_steps")]
    pub class_steps: usize,
    #[serde(default = "default_prior_loss_weight")]
    pub prior_loss_weight: f64,
    #[serde(default = "default_max_grad_norm")]
    pub max_grad_norm: Option<f64>,
    /// Steps between checkpoints, each uploaded as `checkpoint-N/…` artifacts as
    /// soon as it is written; a job leased again after its worker died resumes
    /// from the last complete one. `null` turns them off.
    // The one default that differs from `TrainConfig`'s (no checkpoints): a job
    // that cannot resume loses all its steps with its worker.
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: Option<usize>,
    #[serde(default)]
    pub random_flip: bool,
    #[serde(default = "default_true")]
    pub center_crop: bool,
    /// Frozen weights' dtype: `f32`, or `bf16`/`f16` with `backend: cuda`.
    #[serde(default = "default_precision")]
    pub precision: String,
    /// Also write `pytorch_lora_weights_kohya.safetensors` (kohya / A1111 keys).
    #[serde(default)]
    pub kohya_file: bool,
}

/// `TrainParams::lr_scheduler` values.
pub const LR_SCHEDULERS: &[&str] = &["constant", "constant_with_warmup", "linear", "cosine"];
/// `TrainParams::precision` values.
pub const PRECISIONS: &[&str] = &["f32", "bf16", "f16"];

fn default_lr_scheduler() -> String {
    "constant".into()
}
fn default_precision() -> String {
    "f32".into()
}

/// The fields of [`TrainParams`] that are not training settings.
pub const PLACEMENT_FIELDS: &[&str] = &["model", "trainset", "backend"];

fn default_backend() -> String {
    "cpu".into()
}
fn default_method() -> String {
    "lora".into()
}
fn default_steps() -> usize {
    200
}
fn default_lr() -> f64 {
    5e-4
}
fn default_rank() -> usize {
    4
}
fn default_alpha() -> f64 {
    4.0
}
fn default_resolution() -> usize {
    512
}
fn default_one() -> usize {
    1
}
fn default_caption_template() -> String {
    "a painting in the style of {}".into()
}
fn default_initializer_token() -> String {
    "style".into()
}
fn default_class_images() -> usize {
    100
}
fn default_class_steps() -> usize {
    30
}
fn default_prior_loss_weight() -> f64 {
    1.0
}
fn default_max_grad_norm() -> Option<f64> {
    Some(1.0)
}
fn default_checkpoint_every() -> Option<usize> {
    Some(100)
}
fn default_true() -> bool {
    true
}

impl TrainParams {
    /// The training fields alone, as a JSON object `TrainConfig` deserialises.
    pub fn config_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).expect("params serialise");
        let map = value.as_object_mut().expect("a struct is an object");
        for key in PLACEMENT_FIELDS {
            map.remove(*key);
        }
        value
    }

    /// Refuses, naming the field, what cannot train. The worker checks again with
    /// the model library's own rules.
    pub fn check(&self) -> Result<(), String> {
        if self.model.trim().is_empty() {
            return Err("`model` is empty".into());
        }
        if self
            .trainset
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(
                "`trainset` is empty (leave it out to train on a prepare job's dataset)".into(),
            );
        }
        if !TRAIN_BACKENDS.contains(&self.backend.as_str()) {
            return Err(format!(
                "`backend` `{}` is not one of {}",
                self.backend,
                TRAIN_BACKENDS.join(", ")
            ));
        }
        for (name, value, allowed) in [
            ("lr_scheduler", &self.lr_scheduler, LR_SCHEDULERS),
            ("precision", &self.precision, PRECISIONS),
        ] {
            if !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "`{name}` `{value}` is not one of {}",
                    allowed.join(", ")
                ));
            }
        }
        if self.precision != "f32" && self.backend != "cuda" {
            return Err(format!(
                "`precision` `{}` needs `backend: cuda` (the CPU backend computes in f32)",
                self.precision
            ));
        }
        if self.gradient_accumulation_steps == 0 {
            return Err("`gradient_accumulation_steps` must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(format!(
                "`lora_dropout` must be in [0, 1), not {}",
                self.lora_dropout
            ));
        }
        if !METHODS.contains(&self.method.as_str()) {
            return Err(format!(
                "`method` `{}` is not one of {}",
                self.method,
                METHODS.join(", ")
            ));
        }
        if self.token.trim().is_empty() {
            return Err("`token` is empty".into());
        }
        for (name, value) in [
            ("steps", self.steps),
            ("rank", self.rank),
            ("batch", self.batch),
        ] {
            if value == 0 {
                return Err(format!("`{name}` must be at least 1"));
            }
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, not {}", self.lr));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(format!(
                "`alpha` must be a positive number, not {}",
                self.alpha
            ));
        }
        if self.resolution < 8 || self.resolution > 4096 || !self.resolution.is_multiple_of(8) {
            return Err(format!(
                "`resolution` {} must be a multiple of 8 in 8..=4096",
                self.resolution
            ));
        }
        if self.checkpoint_every == Some(0) {
            return Err("`checkpoint_every` must be at least 1 (or null: no checkpoints)".into());
        }
        if let Some(norm) = self.max_grad_norm {
            if !(norm > 0.0 && norm.is_finite()) {
                return Err(format!(
                    "`max_grad_norm` must be a positive number (or null: no clipping), not {norm}"
                ));
            }
        }
        match self.method.as_str() {
            "dreambooth" => {
                if self
                    .class_prompt
                    .as_deref()
                    .is_none_or(|p| p.trim().is_empty())
                {
                    return Err("`class_prompt` is required by method dreambooth".into());
                }
                if self.class_images == 0 || self.class_steps == 0 {
                    return Err(
                        "`class_images` and `class_steps` must be at least 1 for dreambooth".into(),
                    );
                }
            }
            method => {
                if self.class_prompt.is_some() {
                    return Err(format!(
                        "`class_prompt` is for method dreambooth, not {method}"
                    ));
                }
            }
        }
        if self.method != "ti" && !self.caption_template.contains("{}") {
            return Err("`caption_template` must contain `{}` for the token".into());
        }
        if self.method == "ti" && self.initializer_token.trim().is_empty() {
            return Err("`initializer_token` is empty".into());
        }
        Ok(())
    }
}
