//! Reading LoRA files in the layouts users bring, and merging them into a model's
//! linear layers: W' = W + scale * (alpha / rank) * up @ down.
//!
//! Layouts (the prefix says the component: `unet` or `text_encoder`):
//! - diffusers: `unet.<path>.lora.down.weight` / `.lora.up.weight`, text encoder
//!   `text_encoder.<path>.lora_linear_layer.down.weight`; the older attention-processor
//!   form `<path>.processor.to_q_lora.down.weight`;
//! - peft: `unet.<path>.lora_A.weight` / `.lora_B.weight` (also `base_model.model.`
//!   prefixes and an adapter name such as `lora_A.default.weight`);
//! - kohya / A1111: `lora_unet_<path with _>.lora_down.weight`, `.lora_up.weight`,
//!   `.alpha`; text encoder `lora_te_…`.
//!
//! Every pair must land on a linear layer of the model: a file that targets layers
//! atelier cannot adapt is refused by name rather than half-applied.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::error::{Result, SdError};
use crate::weights::{parameter_shapes, SafetensorsFile};

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
    /// are saved with the scale folded in).
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
    const SUFFIXES: &[(&str, u8)] = &[
        (".lora.down.weight", 0),
        (".lora.up.weight", 1),
        (".lora_linear_layer.down.weight", 0),
        (".lora_linear_layer.up.weight", 1),
        (".lora_A.weight", 0),
        (".lora_B.weight", 1),
        (".lora_A.default.weight", 0),
        (".lora_B.default.weight", 1),
        (".alpha", 2),
    ];
    for (suffix, part) in SUFFIXES {
        if let Some(path) = rest.strip_suffix(suffix) {
            let part = match part {
                0 => Part::Down,
                1 => Part::Up,
                _ => Part::Alpha,
            };
            return Some((target, processor_path(path), part, false));
        }
    }
    None
}

/// `attn1.processor.to_q_lora` -> `attn1.to_q`; `to_out_lora` -> `to_out.0`.
fn processor_path(path: &str) -> String {
    match path.split_once(".processor.") {
        Some((attn, proj)) => {
            let proj = proj.strip_suffix("_lora").unwrap_or(proj);
            let proj = if proj == "to_out" { "to_out.0" } else { proj };
            format!("{attn}.{proj}")
        }
        None => path.to_string(),
    }
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
        let invalid = |message: String| SdError::Safetensors {
            path: path.to_path_buf(),
            message,
        };
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
            pairs.insert(
                (target, module),
                LoraPair {
                    down,
                    up,
                    alpha: p.alpha,
                },
            );
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
                return Err(SdError::Safetensors {
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
    stack: Vec<String>,
    applied: usize,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Merger<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        // Enum variants are not part of diffusers' names (see `weights`).
        let name = if container_type.starts_with("Enum:") {
            String::new()
        } else {
            name.to_string()
        };
        self.stack.push(name);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if D != 2 || self.stack.last().map(String::as_str) != Some("weight") {
            return param;
        }
        let parts: Vec<&str> = self.stack[..self.stack.len() - 1]
            .iter()
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .collect();
        let path = parts.join(".");
        let Some(pair) = self.pairs.get(&path) else {
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
        stack: Vec::new(),
        applied: 0,
        problems: Vec::new(),
    };
    let module = module.map(&mut merger);
    if let Some(problem) = merger.problems.first() {
        return Err(SdError::Safetensors {
            path: file.to_path_buf(),
            message: problem.clone(),
        });
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
        assert!(parse_key("conv_in.weight").is_none());
    }
}
