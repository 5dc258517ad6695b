//! CLIP score: `max(100 * cos(E_image, E_text), 0)` per (image, prompt) pair, as
//! torchmetrics' `CLIPScore` computes it per sample, with a transformers `CLIPModel`
//! folder (`openai/clip-vit-large-patch14` by default in torchmetrics).
//!
//! Prompts are tokenized as `tokenizer(text, truncation=True, max_length=77)`. This is
//! where torchmetrics 1.9 differs, for prompts over 77 tokens only: it tokenizes without
//! truncation and cuts the ids at 77, dropping the end token, so transformers pools some
//! other token (position 0 with `eos_token_id` 49407). atelier keeps the end token.

pub mod config;
pub mod model;
pub mod preprocess;
pub mod text;
pub mod vision;

use std::path::{Path, PathBuf};

use atelier_sd::tokenizer::ClipTokenizer;
use atelier_sd::weights::{load_module, KeyRules, SafetensorsFile};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use image::RgbImage;

use crate::error::{MetricsError, Result};
use config::ClipConfig;
use model::ClipModel;
use preprocess::PreprocessConfig;
use text::{padded_ids, pooled_position};

const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const WEIGHTS_INDEX: &str = "model.safetensors.index.json";
const PREPROCESSOR: &str = "preprocessor_config.json";

/// Buffers and the contrastive temperature, which scoring does not use.
const KEY_RULES: KeyRules<'static> = KeyRules {
    aliases: &[],
    ignored: &[
        "logit_scale",
        "text_model.embeddings.position_ids",
        "vision_model.embeddings.position_ids",
    ],
};

/// A CLIP model with its tokenizer and image preprocessing.
#[derive(Debug)]
pub struct ClipScorer<B: Backend> {
    model: ClipModel<B>,
    config: ClipConfig,
    tokenizer: ClipTokenizer,
    preprocess: PreprocessConfig,
    device: B::Device,
}

impl<B: Backend> ClipScorer<B> {
    /// Loads a Hugging Face CLIPModel folder: `config.json`, `model.safetensors` (or a
    /// sharded `model.safetensors.index.json`), the tokenizer (`tokenizer.json` or
    /// `vocab.json` + `merges.txt`) and, when present, `preprocessor_config.json`.
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        let missing = |file| MetricsError::MissingClipFile {
            dir: dir.to_path_buf(),
            file,
        };
        let config_path = dir.join(CONFIG);
        if !config_path.is_file() {
            return Err(missing(CONFIG));
        }
        let weight_files = weight_files(dir).ok_or_else(|| missing(WEIGHTS))??;
        if !dir.join("tokenizer.json").is_file() {
            for file in ["vocab.json", "merges.txt"] {
                if !dir.join(file).is_file() {
                    return Err(missing(file));
                }
            }
        }
        let config = ClipConfig::from_file(&config_path)?;
        let tokenizer = ClipTokenizer::from_dir(dir)?;
        if tokenizer.max_length() > config.text.max_position_embeddings {
            return Err(MetricsError::config(
                dir.join("tokenizer_config.json"),
                format!(
                    "`model_max_length` {} exceeds the text model's `max_position_embeddings` {} in `{}`",
                    tokenizer.max_length(),
                    config.text.max_position_embeddings,
                    config_path.display()
                ),
            ));
        }
        let preprocessor_path = dir.join(PREPROCESSOR);
        let preprocess = if preprocessor_path.is_file() {
            PreprocessConfig::from_file(&preprocessor_path)?
        } else {
            PreprocessConfig::default()
        };
        let files = weight_files
            .iter()
            .map(SafetensorsFile::open)
            .collect::<atelier_sd::Result<Vec<_>>>()?;
        let model = load_module(config.init(device), &files, "CLIP model", KEY_RULES)?;
        Ok(ClipScorer {
            model,
            config,
            tokenizer,
            preprocess,
            device: device.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    /// `pixel_values` [N, 3, S, S] as the folder's image processor makes them.
    pub fn preprocess(&self, images: &[RgbImage]) -> Result<Tensor<B, 4>> {
        preprocess::preprocess(images, &self.preprocess, &self.device)
    }

    /// Vision tower + `visual_projection` on pixel values [N, 3, S, S]; one embedding
    /// (not normalised) per image.
    pub fn image_embeds_from_pixels(&self, pixel_values: Tensor<B, 4>) -> Result<Vec<Vec<f32>>> {
        let dims = pixel_values.dims();
        let s = self.config.vision.image_size;
        if dims[0] == 0 {
            return Err(MetricsError::Empty("images"));
        }
        if dims[1..] != [3, s, s] {
            return Err(MetricsError::Invalid(format!(
                "pixel_values have shape {dims:?}, the vision model takes [N, 3, {s}, {s}]"
            )));
        }
        Ok(rows(self.model.image_features(pixel_values)))
    }

    /// Preprocessing as `CLIPImageProcessor`, then the vision tower and
    /// `visual_projection` (not normalised), all images in one batch.
    pub fn image_embeds(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        self.image_embeds_from_pixels(self.preprocess(images)?)
    }

    /// Token ids per prompt: `<|startoftext|>` ... `<|endoftext|>`, cut to the
    /// tokenizer's `model_max_length` (77) with the end token kept.
    pub fn input_ids(&self, prompts: &[&str]) -> Vec<Vec<u32>> {
        prompts.iter().map(|p| self.tokenizer.encode(p)).collect()
    }

    /// Text tower + `text_projection` (not normalised) for rows of token ids, pooled
    /// as transformers does (see [`text::pooled_position`]).
    pub fn text_embeds_from_ids(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        if ids.is_empty() {
            return Err(MetricsError::Empty("prompts"));
        }
        let max = self.config.text.max_position_embeddings;
        if let Some(row) = ids.iter().find(|r| r.is_empty() || r.len() > max) {
            return Err(MetricsError::Invalid(format!(
                "a row of {} token ids does not fit the text model (1 to {max})",
                row.len()
            )));
        }
        let pooled: Vec<usize> = ids
            .iter()
            .map(|row| pooled_position(row, self.config.text.eos_token_id))
            .collect();
        let input_ids = padded_ids::<B>(ids, self.tokenizer.pad_id(), &self.device);
        Ok(rows(self.model.text_features(input_ids, &pooled)))
    }

    /// Tokenizer (truncated at 77), text tower and `text_projection` (not normalised),
    /// all prompts in one batch.
    pub fn text_embeds(&self, prompts: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.text_embeds_from_ids(&self.input_ids(prompts))
    }

    /// One score per (image, prompt) pair: max(100 * cosine, 0), as torchmetrics'
    /// CLIPScore per sample.
    pub fn score(&self, images: &[RgbImage], prompts: &[&str]) -> Result<Vec<f32>> {
        if images.len() != prompts.len() {
            return Err(MetricsError::Invalid(format!(
                "CLIP score pairs images with prompts: {} images, {} prompts",
                images.len(),
                prompts.len()
            )));
        }
        let image_embeds = self.image_embeds(images)?;
        let text_embeds = self.text_embeds(prompts)?;
        Ok(raw_scores(&image_embeds, &text_embeds)
            .into_iter()
            .map(|s| s.max(0.0))
            .collect())
    }
}

/// `100 * cos(image_k, text_k)` per pair, before the clamp at 0 (torchmetrics'
/// `_clip_score_update`).
pub fn raw_scores(image_embeds: &[Vec<f32>], text_embeds: &[Vec<f32>]) -> Vec<f32> {
    image_embeds
        .iter()
        .zip(text_embeds)
        .map(|(a, b)| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            (100.0 * dot / (norm(a) * norm(b))) as f32
        })
        .collect()
}

fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, width] = t.dims();
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32")
        .chunks(width)
        .map(<[f32]>::to_vec)
        .collect()
}

/// The weight files of the folder: `model.safetensors`, or the shards a
/// `model.safetensors.index.json` lists. `None` when there is neither.
fn weight_files(dir: &Path) -> Option<Result<Vec<PathBuf>>> {
    let single = dir.join(WEIGHTS);
    if single.is_file() {
        return Some(Ok(vec![single]));
    }
    let index = dir.join(WEIGHTS_INDEX);
    if !index.is_file() {
        return None;
    }
    Some((|| {
        let text = std::fs::read_to_string(&index).map_err(|e| MetricsError::io(&index, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| MetricsError::config(&index, format!("not valid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| MetricsError::config(&index, "no `weight_map` object"))?;
        let mut files: Vec<PathBuf> = Vec::new();
        for file in map.values() {
            let name = file.as_str().ok_or_else(|| {
                MetricsError::config(
                    &index,
                    format!("`weight_map` value {file} is not a file name"),
                )
            })?;
            let path = dir.join(name);
            if !files.contains(&path) {
                files.push(path);
            }
        }
        Ok(files)
    })())
}
