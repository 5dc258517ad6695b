//! A diffusers model folder: `model_index.json` naming the components, one
//! subfolder per component with its `config.json` and weights
//! (`<stem>.safetensors`, an fp16 variant `<stem>.fp16.safetensors`, or shards
//! listed in `<stem>.safetensors.index.json`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::Deserialize;

use crate::clip::{self, ClipTextConfig, ClipTextModel};
use crate::config::read_json;
use crate::error::{Result, SdError};
use crate::unet_2d::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::weights::{load_module, KeyRules, SafetensorsFile};

/// Which weight files to prefer when a component has both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The full-precision files, else the fp16 variant.
    #[default]
    Auto,
    /// The fp16 variant, else the full-precision files.
    Fp16,
}

#[derive(Debug, Clone)]
pub struct ModelFolder {
    root: PathBuf,
    components: BTreeSet<String>,
    variant: Variant,
}

/// What each component's weight files are called.
const WEIGHT_STEMS: &[(&str, &str)] = &[
    ("text_encoder", "model"),
    ("unet", "diffusion_pytorch_model"),
    ("vae", "diffusion_pytorch_model"),
];

impl ModelFolder {
    pub fn open(root: impl AsRef<Path>, variant: Variant) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let index_path = root.join("model_index.json");
        if !index_path.is_file() {
            return Err(SdError::ModelFolder {
                path: root,
                message: "no `model_index.json`: this is not a diffusers model folder".into(),
            });
        }
        let index: serde_json::Map<String, serde_json::Value> =
            read_json(&index_path, "model_index.json")?;
        // Components are the entries whose value is [library, class]; null classes
        // (a removed safety checker) do not count.
        let components = index
            .iter()
            .filter(|(name, value)| {
                !name.starts_with('_')
                    && value
                        .as_array()
                        .is_some_and(|pair| pair.len() == 2 && !pair[1].is_null())
            })
            .map(|(name, _)| name.clone())
            .collect();
        Ok(ModelFolder {
            root,
            components,
            variant,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of a component that `model_index.json` must list.
    pub fn component(&self, name: &str) -> Result<PathBuf> {
        if !self.components.contains(name) {
            return Err(SdError::ModelFolder {
                path: self.root.clone(),
                message: format!("`model_index.json` lists no `{name}` component"),
            });
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(SdError::ModelFolder {
                path: self.root.clone(),
                message: format!("`model_index.json` lists `{name}` but `{name}/` is missing"),
            });
        }
        Ok(dir)
    }

    pub fn config_path(&self, component: &str) -> Result<PathBuf> {
        let dir = self.component(component)?;
        let name = if component == "scheduler" {
            "scheduler_config.json"
        } else {
            "config.json"
        };
        Ok(dir.join(name))
    }

    /// The component's weight files, memory-mapped.
    pub fn weight_files(&self, component: &str) -> Result<Vec<SafetensorsFile>> {
        let dir = self.component(component)?;
        let stem = WEIGHT_STEMS
            .iter()
            .find(|(c, _)| *c == component)
            .map(|(_, s)| *s)
            .unwrap_or("diffusion_pytorch_model");
        let full = [
            format!("{stem}.safetensors"),
            format!("{stem}.safetensors.index.json"),
        ];
        let half = [
            format!("{stem}.fp16.safetensors"),
            format!("{stem}.safetensors.index.fp16.json"),
        ];
        let order: Vec<&String> = match self.variant {
            Variant::Auto => full.iter().chain(&half).collect(),
            Variant::Fp16 => half.iter().chain(&full).collect(),
        };
        for name in &order {
            let path = dir.join(name);
            if !path.is_file() {
                continue;
            }
            if name.ends_with(".json") {
                return shard_files(&dir, &path);
            }
            return Ok(vec![SafetensorsFile::open(path)?]);
        }
        let tried: Vec<String> = order.iter().map(|n| format!("`{n}`")).collect();
        let pickle = dir.join(format!("{stem}.bin"));
        let hint = if pickle.is_file() {
            " (only a PyTorch pickle `.bin` is there; convert it to safetensors)"
        } else {
            ""
        };
        Err(SdError::ModelFolder {
            path: self.root.clone(),
            message: format!(
                "`{component}/` has no weights: looked for {}{hint}",
                tried.join(", ")
            ),
        })
    }

    pub fn unet_config(&self) -> Result<UNet2DConditionConfig> {
        UNet2DConditionConfig::from_file(&self.config_path("unet")?)
    }

    pub fn vae_config(&self) -> Result<AutoencoderKLConfig> {
        AutoencoderKLConfig::from_file(&self.config_path("vae")?)
    }

    pub fn text_encoder_config(&self) -> Result<ClipTextConfig> {
        ClipTextConfig::from_file(&self.config_path("text_encoder")?)
    }

    pub fn scheduler_config(&self) -> Result<serde_json::Value> {
        read_json(&self.config_path("scheduler")?, "a scheduler config")
    }

    pub fn load_unet<B: Backend>(&self, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
        let model = self.unet_config()?.init(device)?;
        load_module(
            model,
            &self.weight_files("unet")?,
            "UNet",
            KeyRules::default(),
        )
    }

    pub fn load_vae<B: Backend>(&self, device: &B::Device) -> Result<AutoencoderKL<B>> {
        let model = self.vae_config()?.init(device)?;
        load_module(
            model,
            &self.weight_files("vae")?,
            "VAE",
            KeyRules::default(),
        )
    }

    pub fn load_text_encoder<B: Backend>(&self, device: &B::Device) -> Result<ClipTextModel<B>> {
        let model = self.text_encoder_config()?.init(device);
        load_module(
            model,
            &self.weight_files("text_encoder")?,
            "text encoder",
            clip::KEY_RULES,
        )
    }
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: std::collections::BTreeMap<String, String>,
}

fn shard_files(dir: &Path, index: &Path) -> Result<Vec<SafetensorsFile>> {
    let index: ShardIndex = read_json(index, "a safetensors shard index")?;
    let names: BTreeSet<&String> = index.weight_map.values().collect();
    names
        .into_iter()
        .map(|name| SafetensorsFile::open(dir.join(name)))
        .collect()
}
