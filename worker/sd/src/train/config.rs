//! What a training run is told: method, token, hyper-parameters. Defaults are the
//! study's LoRA runs (diffusers' DreamBooth-LoRA script settings).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::precision::Precision;

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
    pub steps: usize,
    pub lr: f64,
    pub rank: usize,
    pub alpha: f64,
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
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            method: Method::Lora,
            token: String::new(),
            steps: 200,
            lr: 5e-4,
            rank: 4,
            alpha: 4.0,
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
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(format!("`lr` must be a positive number, not {}", self.lr));
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
