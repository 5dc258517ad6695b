//! What a training run is told: method, token, hyper-parameters. Defaults are the
//! study's LoRA runs (diffusers' DreamBooth-LoRA script settings).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::precision::Precision;
use crate::train::schedule::LrScheduler;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    #[default]
    Lora,
    Dreambooth,
    Ti,
}

impl FromStr for Method {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "lora" => Ok(Method::Lora),
            "dreambooth" => Ok(Method::Dreambooth),
            "ti" => Ok(Method::Ti),
            other => Err(format!("unknown method `{other}` (lora, dreambooth or ti)")),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Lora => "lora",
            Method::Dreambooth => "dreambooth",
            Method::Ti => "ti",
        })
    }
}

/// The prompt templates of diffusers' textual-inversion script for styles.
pub const STYLE_TEMPLATES: &[&str] = &[
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dirty painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a cropped painting in the style of {}",
    "a good painting in the style of {}",
    "a close-up painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    pub method: Method,
    /// The style token (`<monet-style>`): the caption's `{}` for LoRA and
    /// DreamBooth, the new placeholder for textual inversion.
    pub token: String,
    /// Optimizer steps (with accumulation, each takes
    /// `gradient_accumulation_steps` micro-batches).
    pub steps: usize,
    /// The base learning rate; the schedule multiplies it at each step.
    pub lr: f64,
    pub lr_scheduler: LrScheduler,
    /// Optimizer steps over which the rate rises linearly from 0 (diffusers'
    /// `lr_warmup_steps`; needs a schedule with warm-up).
    pub lr_warmup_steps: usize,
    /// Micro-batches per optimizer step: each loss is divided by this and the
    /// gradients summed, as accelerate does, so accumulation 2 at batch 1 is a
    /// batch-2 step with the memory of batch 1.
    pub gradient_accumulation_steps: usize,
    pub rank: usize,
    pub alpha: f64,
    /// peft's `lora_dropout`: the probability of zeroing an element of each
    /// adapter's input (before `down`), training only. The masks come from the
    /// run's generator, so runs stay reproducible and resumable.
    pub lora_dropout: f64,
    pub resolution: usize,
    pub batch: usize,
    pub seed: u64,
    /// LoRA and DreamBooth captions (`{}` is the token) when an image has no
    /// caption file; textual inversion draws from [`STYLE_TEMPLATES`].
    pub caption_template: String,
    /// Textual inversion: the token whose embedding the new one starts from.
    pub initializer_token: String,
    /// DreamBooth: the class prompt the base model draws class images from.
    pub class_prompt: Option<String>,
    pub class_images: usize,
    /// DreamBooth: denoising steps for each class image.
    pub class_steps: usize,
    pub prior_loss_weight: f64,
    pub max_grad_norm: Option<f64>,
    pub checkpoint_every: Option<usize>,
    pub random_flip: bool,
    pub center_crop: bool,
    /// The dtype of the frozen UNet and VAE weights (bf16/f16 need CUDA); adapters,
    /// embeddings being learned, optimizer state and loss stay f32.
    pub precision: Precision,
    /// LoRA and DreamBooth: also write `pytorch_lora_weights_kohya.safetensors`
    /// (kohya / A1111 keys and metadata) beside the diffusers file; the name is the
    /// one diffusers' `--output_kohya_format` uses.
    pub kohya_file: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Lora,
            token: String::new(),
            steps: 200,
            lr: 5e-4,
            lr_scheduler: LrScheduler::Constant,
            lr_warmup_steps: 0,
            gradient_accumulation_steps: 1,
            rank: 4,
            alpha: 4.0,
            lora_dropout: 0.0,
            resolution: 512,
            batch: 1,
            seed: 0,
            caption_template: "a painting in the style of {}".into(),
            initializer_token: "style".into(),
            class_prompt: None,
            class_images: 100,
            class_steps: 30,
            prior_loss_weight: 1.0,
            max_grad_norm: Some(1.0),
            checkpoint_every: None,
            random_flip: false,
            center_crop: true,
            precision: Precision::F32,
            kohya_file: false,
        }
    }
}

impl TrainConfig {
    /// Refuses, by field, a run that cannot start.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.trim().is_empty() {
            return Err("`token` is empty".into());
        }
        if self.steps == 0 || self.batch == 0 || self.rank == 0 {
            return Err("`steps`, `batch` and `rank` must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return Err("`gradient_accumulation_steps` must be at least 1".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, not {}", self.lr));
        }
        if self.lr_warmup_steps > 0 && self.lr_scheduler == LrScheduler::Constant {
            return Err(format!(
                "`lr_warmup_steps` {} needs a schedule with warm-up: `lr_scheduler` is \
                 constant (use constant_with_warmup, linear or cosine)",
                self.lr_warmup_steps
            ));
        }
        if self.lr_warmup_steps > self.steps {
            return Err(format!(
                "`lr_warmup_steps` {} is longer than the run's {} `steps`",
                self.lr_warmup_steps, self.steps
            ));
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(format!(
                "`lora_dropout` must be at least 0 and below 1, not {}",
                self.lora_dropout
            ));
        }
        if self.method == Method::Ti {
            if self.lora_dropout > 0.0 {
                return Err("`lora_dropout` is for LoRA and DreamBooth, not ti".into());
            }
            if self.kohya_file {
                return Err(
                    "`kohya_file` is for LoRA and DreamBooth (ti writes learned_embeds)".into(),
                );
            }
        }
        if self.resolution < 8 || !self.resolution.is_multiple_of(8) {
            return Err(format!(
                "`resolution` {} must be a multiple of 8 (the VAE's factor)",
                self.resolution
            ));
        }
        if self.method == Method::Dreambooth {
            if self
                .class_prompt
                .as_deref()
                .is_none_or(|p| p.trim().is_empty())
            {
                return Err("DreamBooth needs `class_prompt` (prior preservation)".into());
            }
            if self.class_images == 0 {
                return Err("DreamBooth needs `class_images` of at least 1".into());
            }
        }
        if self.method != Method::Ti && !self.caption_template.contains("{}") {
            return Err("`caption_template` must contain `{}` for the token".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `state.json` of checkpoints written before the schedule, accumulation,
    /// dropout and kohya options: the missing fields read as their defaults, so
    /// such a checkpoint still resumes a run with default settings.
    #[test]
    fn configs_saved_before_the_newer_options_still_read() {
        let old = r#"{"method":"lora","token":"<t>","steps":6,"lr":0.001,"rank":2,
            "alpha":2.0,"resolution":64,"batch":1,"seed":7,
            "caption_template":"a painting in the style of {}","initializer_token":"style",
            "class_prompt":null,"class_images":100,"class_steps":30,"prior_loss_weight":1.0,
            "max_grad_norm":1.0,"checkpoint_every":3,"random_flip":false,"center_crop":true}"#;
        let config: TrainConfig = serde_json::from_str(old).unwrap();
        let expected = TrainConfig {
            token: "<t>".into(),
            steps: 6,
            lr: 0.001,
            rank: 2,
            alpha: 2.0,
            resolution: 64,
            seed: 7,
            checkpoint_every: Some(3),
            ..TrainConfig::default()
        };
        assert_eq!(config, expected);
        assert_eq!(config.lr_scheduler, LrScheduler::Constant);
        assert_eq!(config.gradient_accumulation_steps, 1);
    }
}
