//! LoRA adapters on every UNet attention (attn1 and attn2 of each transformer
//! block: to_q, to_k, to_v, to_out.0), and their names in files.
//!
//! In the module tree an adapter sits at `…attn1.lora.to_q.down.weight`; in
//! diffusers' file it is `unet.…attn1.to_q.lora.down.weight` and in peft's
//! `…attn1.to_q.lora_A.weight`. [`diffusers_key`] is the one place that maps them;
//! [`kohya_tensors`] renames diffusers' names to kohya's.

use std::collections::{BTreeMap, HashMap};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::nn::{Initializer, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use crate::attention::{Attention, AttentionLora, LoraAdapter, LoraDropout};
use crate::error::{Result, SdError};
use crate::unet_2d::UNet2DConditionModel;
use crate::weights::{
    named_tensors_where, parameter_shapes, torch_values, transpose_2d, write_f32_safetensors,
    PathStack,
};

/// Rank and alpha of the adapters (scale = alpha / rank).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraShape {
    pub rank: usize,
    pub alpha: f64,
}

fn adapter<B: Backend>(
    d_in: usize,
    d_out: usize,
    shape: LoraShape,
    rng: &mut impl Rng,
    device: &B::Device,
) -> LoraAdapter<B> {
    // peft's default: down ~ kaiming_uniform(a=sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)),
    // up = 0, so training starts from the base model's output. Drawn from the run's
    // own generator: burn's is global, shared by every thread.
    let bound = 1.0 / (d_in as f32).sqrt();
    let values: Vec<f32> = (0..d_in * shape.rank)
        .map(|_| rng.gen_range(-bound..bound))
        .collect();
    let mut down = LinearConfig::new(d_in, shape.rank)
        .with_bias(false)
        .with_initializer(Initializer::Zeros)
        .init(device);
    down.weight = Param::initialized(
        ParamId::new(),
        Tensor::from_data(TensorData::new(values, [d_in, shape.rank]), device).require_grad(),
    );
    LoraAdapter {
        down,
        up: LinearConfig::new(shape.rank, d_out)
            .with_bias(false)
            .with_initializer(Initializer::Zeros)
            .init(device),
        scale: shape.alpha / shape.rank as f64,
        dropout: None,
    }
}

fn attach<B: Backend>(
    attn: &mut Attention<B>,
    shape: LoraShape,
    rng: &mut impl Rng,
    device: &B::Device,
) {
    let dims = |l: &burn::nn::Linear<B>| {
        let s = l.weight.lazy_shape();
        (s[0], s[1])
    };
    let (q_in, q_out) = dims(&attn.to_q);
    let (k_in, k_out) = dims(&attn.to_k);
    let (v_in, v_out) = dims(&attn.to_v);
    let (o_in, o_out) = dims(&attn.to_out[0]);
    attn.lora = Some(AttentionLora {
        to_q: adapter(q_in, q_out, shape, rng, device),
        to_k: adapter(k_in, k_out, shape, rng, device),
        to_v: adapter(v_in, v_out, shape, rng, device),
        to_out: adapter(o_in, o_out, shape, rng, device),
    });
}

/// Every attention of the UNet's transformer blocks.
pub fn unet_attentions_mut<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
) -> Vec<&mut Attention<B>> {
    let mut out = Vec::new();
    let transformers = unet
        .down_blocks
        .iter_mut()
        .flat_map(|b| b.attentions.iter_mut())
        .chain(unet.mid_block.attentions.iter_mut())
        .chain(
            unet.up_blocks
                .iter_mut()
                .flat_map(|b| b.attentions.iter_mut()),
        );
    for transformer in transformers {
        for block in transformer.transformer_blocks.iter_mut() {
            out.push(&mut block.attn1);
            out.push(&mut block.attn2);
        }
    }
    out
}

/// Freezes the UNet and adds fresh adapters (peft's initialisation) to every
/// attention; returns the number of adapted linear layers.
pub fn add_unet_lora<B: Backend>(
    unet: UNet2DConditionModel<B>,
    shape: LoraShape,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (UNet2DConditionModel<B>, usize) {
    attach_unet_lora(unet.no_grad(), shape, rng, device)
}

/// Adds fresh adapters to every attention without touching the other parameters
/// (freezing materialises every lazily-initialised weight).
pub fn attach_unet_lora<B: Backend>(
    mut unet: UNet2DConditionModel<B>,
    shape: LoraShape,
    rng: &mut impl Rng,
    device: &B::Device,
) -> (UNet2DConditionModel<B>, usize) {
    let attentions = unet_attentions_mut(&mut unet);
    let layers = attentions.len() * 4;
    for attn in attentions {
        attach(attn, shape, rng, device);
    }
    (unet, layers)
}

/// Draws, from the run's generator, a dropout mask seed for every adapter's next
/// forward pass (in the order the adapters were attached: to_q, to_k, to_v,
/// to_out of each attention); `p` 0 turns dropout off and draws nothing.
pub fn seed_lora_dropout<B: Backend>(
    unet: &mut UNet2DConditionModel<B>,
    p: f64,
    rng: &mut impl Rng,
) {
    for attn in unet_attentions_mut(unet) {
        let Some(lora) = attn.lora.as_mut() else {
            continue;
        };
        for adapter in [
            &mut lora.to_q,
            &mut lora.to_k,
            &mut lora.to_v,
            &mut lora.to_out,
        ] {
            adapter.dropout = (p > 0.0).then(|| LoraDropout { p, seed: rng.gen() });
        }
    }
}

/// `…attn1.lora.to_q.down.weight` (module path) -> `…attn1.to_q.lora.down.weight`
/// (diffusers' name without the `unet.` prefix); None for non-adapter names.
pub fn diffusers_key(path: &str) -> Option<String> {
    let (attn, rest) = path.split_once(".lora.")?;
    let (proj, matrix) = rest.split_once('.')?;
    let proj = if proj == "to_out" { "to_out.0" } else { proj };
    Some(format!("{attn}.{proj}.lora.{matrix}"))
}

/// diffusers' `lora.down.weight`/`lora.up.weight` or peft's `lora_A.weight`/
/// `lora_B.weight` name -> the module path of the adapter matrix.
fn module_path(key: &str) -> Option<String> {
    let key = key.strip_prefix("unet.").unwrap_or(key);
    let (proj_path, matrix) = if let Some(p) = key.strip_suffix(".lora.down.weight") {
        (p, "down")
    } else if let Some(p) = key.strip_suffix(".lora.up.weight") {
        (p, "up")
    } else if let Some(p) = key.strip_suffix(".lora_A.weight") {
        (p, "down")
    } else if let Some(p) = key.strip_suffix(".lora_B.weight") {
        (p, "up")
    } else {
        return None;
    };
    let proj_path = proj_path
        .strip_suffix(".to_out.0")
        .map_or_else(|| proj_path.to_string(), |attn| format!("{attn}.to_out"));
    let (attn, proj) = proj_path.rsplit_once('.')?;
    Some(format!("{attn}.lora.{proj}.{matrix}.weight"))
}

/// The adapters as (diffusers name with `unet.` prefix, PyTorch shape, values).
pub fn adapter_tensors<B: Backend>(
    unet: &UNet2DConditionModel<B>,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    named_tensors_where(unet, |name| diffusers_key(name).is_some())
        .into_iter()
        .filter_map(|(path, shape, values)| {
            diffusers_key(&path).map(|key| (format!("unet.{key}"), shape, values))
        })
        .collect()
}

/// Writes the adapters as diffusers' `pytorch_lora_weights.safetensors`
/// (`unet.<path>.lora.down.weight` [rank, in], `…lora.up.weight` [out, rank], f32),
/// with `metadata` beside safetensors' `format: pt`.
pub fn save_diffusers_lora<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    path: &std::path::Path,
    metadata: &[(&str, String)],
) -> Result<usize> {
    let tensors = adapter_tensors(unet);
    let mut info = vec![("format", "pt".to_string())];
    info.extend(metadata.iter().cloned());
    write_f32_safetensors(path, &tensors, &info)?;
    Ok(tensors.len())
}

/// The adapters under kohya's names (`lora_unet_<module with _>.lora_down.weight`
/// [rank, in], `.lora_up.weight` [out, rank], and `.alpha`, a scalar), sorted by
/// name: the layout kohya's sd-scripts write and A1111, ComfyUI and kohya's tools
/// read, as diffusers' `convert_state_dict_to_kohya` makes it.
pub fn kohya_tensors<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    alpha: f64,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut by_name = BTreeMap::new();
    for (key, shape, values) in adapter_tensors(unet) {
        let (module, matrix) = key
            .strip_prefix("unet.")
            .and_then(|k| k.rsplit_once(".lora."))
            .expect("adapter_tensors names `unet.<module>.lora.<matrix>`");
        let module = format!("lora_unet_{}", module.replace('.', "_"));
        by_name.insert(format!("{module}.alpha"), (vec![], vec![alpha as f32]));
        by_name.insert(format!("{module}.lora_{matrix}"), (shape, values));
    }
    by_name
        .into_iter()
        .map(|(name, (shape, values))| (name, shape, values))
        .collect()
}

/// Writes the adapters as a kohya / A1111 LoRA (f32, as sd-scripts saves without
/// `--save_precision`), with the `ss_*` metadata kohya's tools show (network
/// module, dim, alpha, base model) and `metadata`.
pub fn save_kohya_lora<B: Backend>(
    unet: &UNet2DConditionModel<B>,
    path: &std::path::Path,
    shape: LoraShape,
    metadata: &[(&str, String)],
) -> Result<usize> {
    let tensors = kohya_tensors(unet, shape.alpha);
    let mut info = vec![
        ("ss_network_module", "networks.lora".to_string()),
        ("ss_network_dim", shape.rank.to_string()),
        // Python's str(float), as sd-scripts writes it: "4.0".
        ("ss_network_alpha", format!("{:?}", shape.alpha)),
        ("ss_base_model_version", "sd_v1".to_string()),
        ("ss_v2", "False".to_string()),
    ];
    info.extend(metadata.iter().cloned());
    write_f32_safetensors(path, &tensors, &info)?;
    Ok(tensors.len())
}

struct GradCollector<'a> {
    stack: PathStack,
    grads: &'a GradientsParams,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let (name, transposed) = self.stack.torch_name();
        let Some(key) = diffusers_key(&name) else {
            return;
        };
        let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) else {
            return;
        };
        let (shape, values) = torch_values(grad, transposed);
        self.out.push((format!("unet.{key}"), shape, values));
    }
}

/// The adapters' gradients, named and laid out as [`adapter_tensors`].
pub fn adapter_grads<B: AutodiffBackend>(
    unet: &UNet2DConditionModel<B>,
    grads: &GradientsParams,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collector = GradCollector {
        stack: PathStack::default(),
        grads,
        out: Vec::new(),
    };
    unet.visit(&mut collector);
    collector.out
}

struct Setter<'a> {
    stack: PathStack,
    values: &'a HashMap<String, (Vec<usize>, Vec<f32>)>,
    set: usize,
    problems: Vec<String>,
}

impl<B: Backend> ModuleMapper<B> for Setter<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (name, transposed) = self.stack.torch_name();
        let Some((shape, values)) = self.values.get(&name) else {
            return param;
        };
        let mut expected = param.lazy_shape().to_vec();
        if transposed {
            expected.swap(0, 1);
        }
        if *shape != expected {
            self.problems.push(format!(
                "adapter `{name}` has shape {shape:?}, expected {expected:?}"
            ));
            return param;
        }
        let (values, shape) = if transposed {
            (
                transpose_2d(values, shape[0], shape[1]),
                vec![shape[1], shape[0]],
            )
        } else {
            (values.clone(), shape.clone())
        };
        self.set += 1;
        let device = param.lazy_device();
        let require_grad = param.val().is_require_grad();
        let tensor = Tensor::<B, D>::from_data(TensorData::new(values, shape), &device);
        let tensor = if require_grad {
            tensor.require_grad()
        } else {
            tensor
        };
        Param::initialized(param.id, tensor)
    }
}

/// Sets adapter weights from diffusers- or peft-named tensors (PyTorch layout);
/// every adapter must be given, and every tensor must land.
pub fn set_adapter_tensors<B: Backend>(
    unet: UNet2DConditionModel<B>,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
) -> Result<UNet2DConditionModel<B>> {
    let mut by_path = HashMap::new();
    for (key, value) in tensors {
        let path = module_path(key)
            .ok_or_else(|| SdError::Invalid(format!("`{key}` is not a LoRA adapter name")))?;
        by_path.insert(path, value.clone());
    }
    let expected = parameter_shapes(&unet)
        .iter()
        .filter(|(p, _)| diffusers_key(p).is_some())
        .count();
    let mut setter = Setter {
        stack: PathStack::default(),
        values: &by_path,
        set: 0,
        problems: Vec::new(),
    };
    let unet = unet.map(&mut setter);
    if !setter.problems.is_empty() {
        return Err(SdError::Invalid(setter.problems.join("; ")));
    }
    if setter.set != by_path.len() || setter.set != expected {
        return Err(SdError::Invalid(format!(
            "{} adapter tensors given, {} matched, the model has {expected}",
            by_path.len(),
            setter.set
        )));
    }
    Ok(unet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let path = "up_blocks.1.attentions.2.transformer_blocks.0.attn2.lora.to_out.down.weight";
        let key = diffusers_key(path).unwrap();
        assert_eq!(
            key,
            "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_out.0.lora.down.weight"
        );
        assert_eq!(module_path(&format!("unet.{key}")).unwrap(), path);
        assert_eq!(
            module_path("mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight")
                .unwrap(),
            "mid_block.attentions.0.transformer_blocks.0.attn1.lora.to_q.up.weight"
        );
        assert!(diffusers_key("conv_in.weight").is_none());
    }
}
