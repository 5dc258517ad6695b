//! `eval`: scores the images of the `sample` jobs it needs against held-out
//! reference images (LPIPS) and against their prompts (CLIP score).

use serde::{Deserialize, Serialize};

use super::train::TRAIN_BACKENDS;

/// LPIPS backbones.
pub const LPIPS_NETS: &[&str] = &["alex", "vgg"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalParams {
    /// `alex` or `vgg`, as the `lpips` package.
    #[serde(default = "default_lpips_net")]
    pub lpips_net: String,
    /// The LPIPS weights file on the worker (`lpips_alex.safetensors`, made by
    /// `tools/convert_lpips_weights.py`). A relative path is made absolute against
    /// the experiment file's folder; the worker checks that it exists and, if not,
    /// fails the job saying how to make it.
    pub lpips_weights: String,
    /// A CLIP model folder on the worker in the Hugging Face layout
    /// (`openai/clip-vit-large-patch14`: config.json, model.safetensors, vocab.json,
    /// merges.txt). Checked by the worker, as `lpips_weights`.
    pub clip_model: String,
    /// `cpu`, or `cuda` on the GPU the job is given.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Images per forward pass.
    #[serde(default = "default_batch")]
    pub batch: usize,
}

fn default_lpips_net() -> String {
    "alex".into()
}
fn default_backend() -> String {
    "cpu".into()
}
fn default_batch() -> usize {
    8
}

impl EvalParams {
    pub fn check(&self) -> Result<(), String> {
        if !LPIPS_NETS.contains(&self.lpips_net.as_str()) {
            return Err(format!(
                "`lpips_net` `{}` is not one of {}",
                self.lpips_net,
                LPIPS_NETS.join(", ")
            ));
        }
        for (name, value) in [
            ("lpips_weights", &self.lpips_weights),
            ("clip_model", &self.clip_model),
        ] {
            if value.trim().is_empty() {
                return Err(format!("`{name}` is empty"));
            }
        }
        if !TRAIN_BACKENDS.contains(&self.backend.as_str()) {
            return Err(format!(
                "`backend` `{}` is not one of {}",
                self.backend,
                TRAIN_BACKENDS.join(", ")
            ));
        }
        if !(1..=1024).contains(&self.batch) {
            return Err(format!("`batch` {} is out of range (1..=1024)", self.batch));
        }
        Ok(())
    }
}
