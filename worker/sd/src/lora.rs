//! Reading LoRA files in the layouts users bring, and merging them into a model's
//! linear layers: W' = W + scale * (alpha / rank) * up @ down.
//!
//! Layouts (the prefix says the component: `unet` or `text_encoder`):
//! - diffusers: `unet.<path>.lora.down.weight` / `.lora.up.weight`, text encoder
//!   `text_encoder.<path>.lora_linear_layer.down.weight`; the older (diffusers <= 0.17)
//!   attention-processor form `unet.<attn>.processor.to_q_lora.down.weight` (`to_out_lora`
//!   is `to_out.0`), text encoder `text_encoder.<attn>.to_q_lora.down.weight` (`q_proj`,
//!   …, `to_out_lora` is `out_proj`);
//! - peft: `unet.<path>.lora_A.weight` / `.lora_B.weight` (also `base_model.model.`
//!   prefixes and an adapter name such as `lora_A.default.weight`), with the alpha in
//!   the `lora_adapter_metadata` that diffusers' `save_lora_weights` may write into the
//!   safetensors header (`unet.lora_alpha`, `unet.alpha_pattern`, `unet.use_rslora`, …);
//! - kohya / A1111: `lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`; text encoder `lora_te_…`.
//!
//! Every pair must land on a linear layer of the model: a file that targets layers
//! atelier cannot adapt is refused by name rather than half-applied.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, SdError};
use crate::weights::{parameter_shapes, PathStack, SafetensorsFile};

/// Which model a LoRA pair adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Unet,
    TextEncoder,
}

/// One adapted linear layer, in PyTorch layout.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// down [rank, in]
    pub down: (Vec<usize>, Vec<f32>),
    /// up [out, rank]
    pub up: (Vec<usize>, Vec<f32>),
    pub alpha: Option<f32>,
}

impl LoraPair {
    pub fn rank(&self) -> usize {
        self.down.0[0]
    }

    /// alpha / rank, or 1 when the file has no alpha (diffusers and peft files
    /// without adapter metadata mean alpha = rank).
    pub fn alpha_scale(&self) -> f32 {
        self.alpha.map_or(1.0, |a| a / self.rank() as f32)
    }
}

/// A LoRA file: pairs keyed by (component, module path or kohya name).
#[derive(Debug, Default)]
pub struct LoraFile {
    pub pairs: BTreeMap<(Target, String), LoraPair>,
    /// True for kohya names, whose paths use `_` for `.` and must be matched
    /// against the model's module names.
    pub kohya: bool,
}

#[derive(Default)]
struct Partial {
    down: Option<(Vec<usize>, Vec<f32>)>,
    up: Option<(Vec<usize>, Vec<f32>)>,
    alpha: Option<f32>,
}

enum Part {
    Down,
    Up,
    Alpha,
}

/// Splits a key into (component, module path, part), or None if it is not LoRA.
fn parse_key(key: &str) -> Option<(Target, String, Part, bool)> {
    let key = key.strip_prefix("base_model.model.").unwrap_or(key);
    if let Some(rest) = key.strip_prefix("lora_unet_") {
        let (path, part) = kohya_part(rest)?;
        return Some((Target::Unet, path, part, true));
    }
    if let Some(rest) = key.strip_prefix("lora_te_") {
        let (path, part) = kohya_part(rest)?;
        return Some((Target::TextEncoder, path, part, true));
    }
    let (target, rest) = if let Some(rest) = key.strip_prefix("unet.") {
        (Target::Unet, rest)
    } else if let Some(rest) = key.strip_prefix("text_encoder.") {
        (Target::TextEncoder, rest)
    } else {
        // Old attention-processor files have no prefix and are UNet-only.
        (Target::Unet, key)
    };
    // (suffix, part, old attention-processor form)
    const SUFFIXES: &[(&str, u8, bool)] = &[
        (".lora.down.weight", 0, false),
        (".lora.up.weight", 1, false),
        (".lora_linear_layer.down.weight", 0, false),
        (".lora_linear_layer.up.weight", 1, false),
        (".lora_A.weight", 0, false),
        (".lora_B.weight", 1, false),
        (".lora_A.default.weight", 0, false),
        (".lora_B.default.weight", 1, false),
        (".alpha", 2, false),
        ("_lora.down.weight", 0, true),
        ("_lora.up.weight", 1, true),
    ];
    for (suffix, part, old) in SUFFIXES {
        if let Some(path) = rest.strip_suffix(suffix) {
            let part = match part {
                0 => Part::Down,
                1 => Part::Up,
                _ => Part::Alpha,
            };
            let path = if *old {
                old_processor_path(target, path)
            } else {
                path.to_string()
            };
            return Some((target, path, part, false));
        }
    }
    None
}

/// The module an old attention-processor key adapts (its `_lora` already cut off):
/// UNet `attn1.processor.to_q` -> `attn1.to_q`, `to_out` -> `to_out.0`; text encoder
/// `self_attn.to_q` -> `self_attn.q_proj`, `to_out` -> `out_proj` (as diffusers'
/// `UNET_TO_DIFFUSERS` and `DIFFUSERS_OLD_TO_PEFT`).
fn old_processor_path(target: Target, path: &str) -> String {
    let path = path.replace(".processor.", ".");
    let (attn, proj) = path.rsplit_once('.').unwrap_or(("", &path));
    let proj = match (target, proj) {
        (Target::Unet, "to_out") => "to_out.0",
        (Target::TextEncoder, "to_q") => "q_proj",
        (Target::TextEncoder, "to_k") => "k_proj",
        (Target::TextEncoder, "to_v") => "v_proj",
        (Target::TextEncoder, "to_out") => "out_proj",
        (_, proj) => proj,
    };
    if attn.is_empty() {
        proj.to_string()
    } else {
        format!("{attn}.{proj}")
    }
}

/// The parts of peft's `LoraConfig` that set a layer's scale, from the
/// `lora_adapter_metadata` JSON diffusers writes into the safetensors header with
/// keys prefixed by the component (`unet.lora_alpha`, `text_encoder.alpha_pattern`).
/// diffusers builds the `LoraConfig` from it, so alpha / rank comes from here.
#[derive(Debug, Default)]
struct AdapterConfig {
    /// None: peft's default, 8.
    lora_alpha: Option<f32>,
    /// Module-name patterns -> alpha; matched as literal names or `.`-suffixes
    /// (peft matches them as regular expressions; literal names are what it writes).
    alpha_pattern: Vec<(String, f32)>,
    use_rslora: bool,
}

impl AdapterConfig {
    /// The alpha to store on a pair of `rank` adapting `module`, such that
    /// alpha / rank is peft's scaling (alpha / sqrt(rank) under rsLoRA).
    fn alpha(&self, module: &str, rank: usize) -> f32 {
        let alpha = self
            .alpha_pattern
            .iter()
            .find(|(key, _)| module == key || module.ends_with(&format!(".{key}")))
            .map(|(_, alpha)| *alpha)
            .or(self.lora_alpha)
            .unwrap_or(8.0);
        if self.use_rslora {
            alpha * (rank as f32).sqrt()
        } else {
            alpha
        }
    }
}

/// Reads `__metadata__.lora_adapter_metadata` from a safetensors header, per component.
fn adapter_configs(path: &Path) -> Result<HashMap<Target, AdapterConfig>> {
    let invalid = |message: String| SdError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| SdError::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| SdError::io(path, e))?;
    // `SafetensorsFile::open` has already checked the header's size and JSON.
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    file.read_exact(&mut header)
        .map_err(|e| SdError::io(path, e))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| invalid(e.to_string()))?;
    let Some(raw) = header["__metadata__"]["lora_adapter_metadata"].as_str() else {
        return Ok(HashMap::new());
    };
    let metadata: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw)
        .map_err(|e| invalid(format!("`lora_adapter_metadata` is not a JSON object: {e}")))?;
    let mut configs: HashMap<Target, AdapterConfig> = HashMap::new();
    for (key, value) in &metadata {
        let Some((prefix, field)) = key.split_once('.') else {
            continue;
        };
        let target = match prefix {
            "unet" => Target::Unet,
            "text_encoder" => Target::TextEncoder,
            _ => continue,
        };
        let config = configs.entry(target).or_default();
        match field {
            "lora_alpha" => config.lora_alpha = value.as_f64().map(|a| a as f32),
            "use_rslora" => config.use_rslora = value.as_bool().unwrap_or(false),
            "alpha_pattern" => {
                if let Some(map) = value.as_object() {
                    config.alpha_pattern = map
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? as f32)))
                        .collect();
                }
            }
            _ => {}
        }
    }
    Ok(configs)
}

fn kohya_part(rest: &str) -> Option<(String, Part)> {
    for (suffix, part) in [
        (".lora_down.weight", Part::Down),
        (".lora_up.weight", Part::Up),
        (".alpha", Part::Alpha),
    ] {
        if let Some(path) = rest.strip_suffix(suffix) {
            return Some((path.to_string(), part));
        }
    }
    None
}

impl LoraFile {
    pub fn read(path: &Path) -> Result<Self> {
        let file = SafetensorsFile::open(path)?;
        let invalid = |message: String| SdError::config(path, message);
        let mut partial: BTreeMap<(Target, String), Partial> = BTreeMap::new();
        let mut kohya = false;
        let mut names: Vec<&str> = file.names().collect();
        names.sort_unstable();
        let mut other = Vec::new();
        for name in names {
            let Some((target, module, part, is_kohya)) = parse_key(name) else {
                other.push(name.to_string());
                continue;
            };
            kohya |= is_kohya;
            let entry = partial.entry((target, module)).or_default();
            match part {
                Part::Down => entry.down = Some(file.read_f32(name)?),
                Part::Up => entry.up = Some(file.read_f32(name)?),
                Part::Alpha => {
                    let (_, values) = file.read_f32(name)?;
                    entry.alpha = values.first().copied();
                }
            }
        }
        if partial.is_empty() {
            return Err(invalid(
                "no LoRA tensors (expected diffusers `…lora.down.weight`, peft `…lora_A.weight` \
                 or kohya `lora_unet_…lora_down.weight` keys)"
                    .into(),
            ));
        }
        if let Some(name) = other.first() {
            return Err(invalid(format!(
                "tensor `{name}` is not part of a LoRA pair ({} such tensors)",
                other.len()
            )));
        }
        let configs = adapter_configs(path)?;
        let mut pairs = BTreeMap::new();
        for ((target, module), p) in partial {
            let (Some(down), Some(up)) = (p.down, p.up) else {
                return Err(invalid(format!(
                    "`{module}` has only half of its LoRA pair (down and up are both needed)"
                )));
            };
            if down.0.len() != 2 || up.0.len() != 2 || up.0[1] != down.0[0] {
                return Err(invalid(format!(
                    "`{module}`: down {:?} and up {:?} do not form a [rank, in] / [out, rank] pair \
                     (convolution LoRA is not supported)",
                    down.0, up.0
                )));
            }
            // A pair's own alpha tensor wins over the header's config.
            let alpha = p
                .alpha
                .or_else(|| configs.get(&target).map(|c| c.alpha(&module, down.0[0])));
            pairs.insert((target, module), LoraPair { down, up, alpha });
        }
        Ok(LoraFile { pairs, kohya })
    }

    /// The pairs for one component, keyed by the model's own module paths.
    /// `linear_paths` are the model's linear layers (`…attn1.to_q`).
    pub fn resolve(
        &self,
        target: Target,
        linear_paths: &[String],
        file: &Path,
    ) -> Result<HashMap<String, LoraPair>> {
        let by_kohya: HashMap<String, &String> = linear_paths
            .iter()
            .map(|p| (p.replace('.', "_"), p))
            .collect();
        let mut resolved = HashMap::new();
        for ((t, module), pair) in &self.pairs {
            if *t != target {
                continue;
            }
            let path = if self.kohya {
                by_kohya.get(module).map(|p| (*p).clone())
            } else {
                // transformers 5 names CLIP modules without `text_model.`.
                let prefixed = format!("text_model.{module}");
                linear_paths
                    .iter()
                    .find(|p| *p == module || **p == prefixed)
                    .cloned()
            };
            let Some(path) = path else {
                return Err(SdError::Config {
                    path: file.to_path_buf(),
                    message: format!(
                        "LoRA pair `{module}` matches no linear layer of the {}",
                        match target {
                            Target::Unet => "UNet",
                            Target::TextEncoder => "text encoder",
                        }
                    ),
                });
            };
            resolved.insert(path, pair.clone());
        }
        Ok(resolved)
    }
}

/// Module paths of the model's linear layers (every 2-D weight but embeddings).
pub fn linear_paths<B: Backend, M: Module<B>>(module: &M) -> Vec<String> {
    parameter_shapes(module)
        .into_iter()
        .filter(|(name, shape)| shape.len() == 2 && !name.ends_with("embedding.weight"))
        .filter_map(|(name, _)| name.strip_suffix(".weight").map(str::to_string))
        .collect()
}

struct Merger<'a> {
    pairs: &'a HashMap<String, LoraPair>,
    scale: f32,
    stack: PathStack,
    applied: usize,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Merger<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        // Only linear weights (stored transposed) take LoRA pairs.
        let (name, transposed) = self.stack.torch_name();
        let Some(path) = name.strip_suffix(".weight").filter(|_| transposed) else {
            return param;
        };
        let Some(pair) = self.pairs.get(path) else {
            return param;
        };
        let [rank, d_in] = [pair.down.0[0], pair.down.0[1]];
        let d_out = pair.up.0[0];
        let weight_shape = param.lazy_shape().to_vec();
        // burn's Linear weight is [in, out].
        if weight_shape != [d_in, d_out] {
            self.problems.push(format!(
                "LoRA pair `{path}` is [{d_out}, {d_in}] but the layer is {:?} (PyTorch layout [{}, {}])",
                weight_shape, weight_shape[1], weight_shape[0]
            ));
            return param;
        }
        let device = param.lazy_device();
        let down =
            Tensor::<B, 2>::from_data(TensorData::new(pair.down.1.clone(), [rank, d_in]), &device);
        let up =
            Tensor::<B, 2>::from_data(TensorData::new(pair.up.1.clone(), [d_out, rank]), &device);
        // (up @ down)^T = down^T @ up^T: [in, out].
        let delta = down.transpose().matmul(up.transpose()) * (self.scale * pair.alpha_scale());
        self.applied += 1;
        param.map(|w| {
            let delta: Tensor<B, D> = delta.reshape(w.shape());
            w + delta
        })
    }
}

/// Adds the LoRA deltas into the module's linear weights; returns how many
/// layers changed.
pub fn merge_into<B: Backend, M: Module<B>>(
    module: M,
    pairs: &HashMap<String, LoraPair>,
    scale: f32,
    file: &Path,
) -> Result<(M, usize)> {
    let mut merger = Merger {
        pairs,
        scale,
        stack: PathStack::default(),
        applied: 0,
        problems: Vec::new(),
    };
    let module = module.map(&mut merger);
    if let Some(problem) = merger.problems.first() {
        return Err(SdError::config(file, problem.clone()));
    }
    Ok((module, merger.applied))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(key: &str) -> (Target, String, bool) {
        let (t, p, _, k) = parse_key(key).unwrap();
        (t, p, k)
    }

    #[test]
    fn every_layout_names_the_same_module() {
        let path = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
        for key in [
            format!("unet.{path}.lora.down.weight"),
            format!("unet.{path}.lora_A.weight"),
            format!("base_model.model.unet.{path}.lora_B.default.weight"),
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_q_lora.up.weight"
                .to_string(),
        ] {
            assert_eq!(
                parsed(&key),
                (Target::Unet, path.to_string(), false),
                "{key}"
            );
        }
        assert_eq!(
            parsed("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha"),
            (Target::Unet, path.replace('.', "_"), true)
        );
        assert_eq!(
            parsed("lora_te_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"),
            (
                Target::TextEncoder,
                "text_model_encoder_layers_0_self_attn_q_proj".into(),
                true
            )
        );
        assert_eq!(
            parsed("unet.mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.down.weight").1,
            "mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0"
        );
        assert_eq!(
            parsed("text_encoder.text_model.encoder.layers.1.self_attn.to_out_lora.up.weight"),
            (
                Target::TextEncoder,
                "text_model.encoder.layers.1.self_attn.out_proj".into(),
                false
            )
        );
        assert_eq!(
            parsed("text_encoder.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight")
                .1,
            "encoder.layers.0.self_attn.q_proj"
        );
        assert!(parse_key("conv_in.weight").is_none());
    }

    #[test]
    fn adapter_metadata_sets_alpha_as_peft_does() {
        let config = AdapterConfig {
            lora_alpha: Some(1.0),
            alpha_pattern: vec![("attn2.to_k".into(), 6.0)],
            use_rslora: false,
        };
        assert_eq!(config.alpha("mid_block.attn1.to_k", 2), 1.0);
        assert_eq!(config.alpha("mid_block.attn2.to_k", 2), 6.0);
        assert_eq!(config.alpha("mid_block.xattn2.to_k", 2), 1.0);
        let rslora = AdapterConfig {
            use_rslora: true,
            ..AdapterConfig::default()
        };
        // peft's default alpha 8, scaled by 1 / sqrt(rank): 8 * 2 / 4 = 8 / sqrt(4).
        assert_eq!(rslora.alpha("to_q", 4), 16.0);
    }
}
