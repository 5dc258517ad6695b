//! A CLIPModel's `config.json` (transformers' `CLIPConfig`, `CLIPTextConfig`,
//! `CLIPVisionConfig`), with transformers' defaults for missing fields.
//!
//! Old files (openai/clip-vit-large-patch14) carry `text_config_dict` /
//! `vision_config_dict` beside `text_config` / `vision_config`. transformers builds the
//! sub-config from the `*_dict` alone (its values over the class defaults) and lets it
//! replace every field of the other, which sets, for example, the text `eos_token_id`
//! to 49407 where `text_config` says 2. This reader does the same.

use std::path::Path;

use atelier_sd::clip::ClipTextConfig;
use atelier_sd::layers::Activation;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{MetricsError, Result};

/// `CLIPTextConfig` (the fields the model uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
    /// Picks the pooled token: 2 (the legacy value) means the largest id.
    pub eos_token_id: i64,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

impl TextConfig {
    /// The atelier-sd text encoder config with these sizes.
    pub fn encoder(&self) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            max_position_embeddings: self.max_position_embeddings,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
        }
    }
}

/// `CLIPVisionConfig` (the fields the model uses).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: Activation,
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

impl VisionConfig {
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

/// `CLIPConfig`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    pub text: TextConfig,
    pub vision: VisionConfig,
    pub projection_dim: usize,
}

impl ClipConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| MetricsError::io(path, e))?;
        let json: Value = atelier_sd::config::parse_json(&text)
            .map_err(|e| MetricsError::config(path, format!("not valid JSON: {e}")))?;
        Self::from_json(&json).map_err(|m| MetricsError::config(path, m))
    }

    pub fn from_json(json: &Value) -> std::result::Result<Self, String> {
        let object = json
            .as_object()
            .ok_or("a CLIPModel config.json must be a JSON object")?;
        let text: TextConfig = sub_config(object, "text_config")?;
        let vision: VisionConfig = sub_config(object, "vision_config")?;
        let projection_dim = match object.get("projection_dim") {
            None | Some(Value::Null) => 512,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| format!("`projection_dim` is {v}, expected a positive integer"))?
                as usize,
        };
        let config = ClipConfig {
            text,
            vision,
            projection_dim,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let heads = |what: &str, hidden: usize, heads: usize| {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                Err(format!(
                    "`{what}.hidden_size` {hidden} is not a multiple of `num_attention_heads` {heads}"
                ))
            } else {
                Ok(())
            }
        };
        heads(
            "text_config",
            self.text.hidden_size,
            self.text.num_attention_heads,
        )?;
        heads(
            "vision_config",
            self.vision.hidden_size,
            self.vision.num_attention_heads,
        )?;
        if self.vision.patch_size == 0 || self.vision.grid() == 0 {
            return Err(format!(
                "`vision_config.image_size` {} holds no patch of `patch_size` {}",
                self.vision.image_size, self.vision.patch_size
            ));
        }
        if self.vision.num_channels != 3 {
            return Err(format!(
                "`vision_config.num_channels` is {}, atelier scores RGB images (3)",
                self.vision.num_channels
            ));
        }
        Ok(())
    }
}

/// `name` (or, when present, `name_dict`, which wins whole) over the class defaults.
fn sub_config<T: DeserializeOwned>(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> std::result::Result<T, String> {
    let dict = format!("{name}_dict");
    let (key, value) = match object.get(&dict) {
        Some(v @ Value::Object(_)) => (dict.as_str(), v.clone()),
        _ => match object.get(name) {
            Some(v @ Value::Object(_)) => (name, v.clone()),
            _ => (name, Value::Object(Default::default())),
        },
    };
    serde_json::from_value(value).map_err(|e| format!("`{key}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_transformers() {
        let config = ClipConfig::from_json(&serde_json::json!({})).unwrap();
        assert_eq!(config.projection_dim, 512);
        assert_eq!(config.text, TextConfig::default());
        assert_eq!(config.vision.patch_size, 32);
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = ClipConfig::from_json(&serde_json::json!({
            "text_config": {"hidden_size": 10, "num_attention_heads": 3}
        }))
        .unwrap_err();
        assert!(err.contains("text_config.hidden_size"), "{err}");
        let err = ClipConfig::from_json(&serde_json::json!({
            "vision_config": {"hidden_act": "relu6"}
        }))
        .unwrap_err();
        assert!(
            err.contains("`vision_config`") && err.contains("relu6"),
            "{err}"
        );
    }
}
