//! Attention and the transformer blocks of the UNet (diffusers'
//! `models/attention_processor.py` with `AttnProcessor2_0`, `models/attention.py`,
//! `models/transformers/transformer_2d.py`), and the VAE's single-head attention.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Tensor, TensorData};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::layers::{conv2d, gelu_exact, group_norm, layer_norm, linear};
use crate::precision::{in_f32, NormF32};

/// `Attention`: q/k/v projections, scaled dot-product attention over `heads`, and
/// `to_out.0`. In the UNet q/k/v have no bias; in the VAE they do, and a group norm
/// and a residual wrap it (`_from_deprecated_attn_block`).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub group_norm: Option<GroupNorm<B>>,
    pub to_q: Linear<B>,
    pub to_k: Linear<B>,
    pub to_v: Linear<B>,
    /// diffusers' `to_out` is `[Linear, Dropout]`; only index 0 has weights.
    pub to_out: Vec<Linear<B>>,
    /// Trainable low-rank adapters beside the frozen projections (training only;
    /// files are merged into the weights for sampling, see `lora`).
    pub lora: Option<AttentionLora<B>>,
    #[module(skip)]
    pub heads: usize,
}

/// A low-rank pair: x -> up(down(dropout(x))) * scale, scale = alpha / rank.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// [in, rank] in burn's layout (PyTorch: `lora.down.weight` [rank, in]).
    pub down: Linear<B>,
    /// [rank, out] (PyTorch: `lora.up.weight` [out, rank]).
    pub up: Linear<B>,
    #[module(skip)]
    pub scale: f64,
    /// Training with `lora_dropout`: the mask of the next forward pass. None: no
    /// dropout (inference, or a run without it).
    #[module(skip)]
    pub dropout: Option<LoraDropout>,
}

impl<B: Backend> LoraAdapter<B> {
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let x = match &self.dropout {
            Some(dropout) => dropout.apply(x),
            None => x,
        };
        self.up.forward(self.down.forward(x)) * self.scale
    }
}

/// peft's `lora_dropout` (`nn.Dropout` on the input of `lora_A` only): each element
/// is zeroed with probability `p` and the others scaled by 1 / (1 - p). The mask is
/// drawn on the CPU from `seed`, which the trainer takes from its own generator
/// before each forward pass: burn's `Dropout` draws from the backend's global
/// generator, which every thread shares, so two runs side by side (or a resumed
/// run, which cannot restore it) would not see the same masks. The same seed and
/// shape give the same mask on every backend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraDropout {
    pub p: f64,
    pub seed: u64,
}

impl LoraDropout {
    /// The mask's values: 0 or 1 / (1 - p), as torch's dropout multiplies.
    pub fn mask(&self, len: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // An element is dropped when a uniform u32 falls below p * 2^32.
        let threshold = (self.p * 4_294_967_296.0).round() as u64;
        let kept = 1.0 / (1.0 - self.p as f32);
        (0..len)
            .map(|_| {
                if u64::from(rng.next_u32()) < threshold {
                    0.0
                } else {
                    kept
                }
            })
            .collect()
    }

    pub fn apply<B: Backend, const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let shape = x.shape();
        let mask = self.mask(shape.num_elements());
        let mask = Tensor::<B, D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask
    }
}

/// The adapters of one attention: on to_q, to_k, to_v and to_out.0.
#[derive(Module, Debug)]
pub struct AttentionLora<B: Backend> {
    pub to_q: LoraAdapter<B>,
    pub to_k: LoraAdapter<B>,
    pub to_v: LoraAdapter<B>,
    pub to_out: LoraAdapter<B>,
}

/// Applies a projection and, when present, its adapter.
fn project<B: Backend>(
    linear: &Linear<B>,
    adapter: Option<&LoraAdapter<B>>,
    x: Tensor<B, 3>,
) -> Tensor<B, 3> {
    match adapter {
        // The adapter computes in f32 whatever the frozen weights' dtype.
        Some(a) => linear.forward(x.clone()) + in_f32(x, |x| a.forward(x)),
        None => linear.forward(x),
    }
}

impl<B: Backend> Attention<B> {
    /// `query_dim` in, `heads * head_dim` inside, `query_dim` out; keys and values
    /// from `context_dim` features (the text encoder's width for cross-attention).
    pub fn new(
        query_dim: usize,
        context_dim: usize,
        heads: usize,
        head_dim: usize,
        qkv_bias: bool,
        device: &B::Device,
    ) -> Self {
        let inner = heads * head_dim;
        Attention {
            group_norm: None,
            to_q: linear(query_dim, inner, qkv_bias, device),
            to_k: linear(context_dim, inner, qkv_bias, device),
            to_v: linear(context_dim, inner, qkv_bias, device),
            to_out: vec![linear(inner, query_dim, true, device)],
            lora: None,
            heads,
        }
    }

    /// x [b, n, query_dim], context [b, m, context_dim] (None: self-attention)
    /// -> [b, n, query_dim].
    pub fn forward(&self, x: Tensor<B, 3>, context: Option<Tensor<B, 3>>) -> Tensor<B, 3> {
        let context = context.unwrap_or_else(|| x.clone());
        let lora = self.lora.as_ref();
        let q = project(&self.to_q, lora.map(|l| &l.to_q), x);
        let k = project(&self.to_k, lora.map(|l| &l.to_k), context.clone());
        let v = project(&self.to_v, lora.map(|l| &l.to_v), context);
        let [b, n, inner] = q.dims();
        let m = k.dims()[1];
        let head_dim = inner / self.heads;
        let split =
            |t: Tensor<B, 3>, len: usize| t.reshape([b, len, self.heads, head_dim]).swap_dims(1, 2);
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        let out = attention(split(q, n), split(k, m), split(v, m), None, None, options)
            .swap_dims(1, 2)
            .reshape([b, n, inner]);
        project(&self.to_out[0], lora.map(|l| &l.to_out), out)
    }

    /// The VAE mid-block attention over an image: x [b, c, h, w] -> same.
    pub fn forward_spatial(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let normed = match &self.group_norm {
            Some(norm) => norm.forward_f32(x.clone()),
            None => x.clone(),
        };
        let tokens = normed.reshape([b, c, h * w]).swap_dims(1, 2);
        let out = self.forward(tokens, None);
        let out = out.swap_dims(1, 2).reshape([b, c, h, w]);
        out + x
    }
}

/// The VAE's attention: one head over all channels, with biases and a group norm.
pub fn vae_attention<B: Backend>(
    channels: usize,
    groups: usize,
    eps: f64,
    device: &B::Device,
) -> Attention<B> {
    let mut attn = Attention::new(channels, channels, 1, channels, true, device);
    attn.group_norm = Some(group_norm(groups, channels, eps, device));
    attn
}

/// `GEGLU`: a projection to twice the width, half of it gating the other through GELU.
#[derive(Module, Debug)]
pub struct GeGlu<B: Backend> {
    pub proj: Linear<B>,
}

impl<B: Backend> GeGlu<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let projected = self.proj.forward(x);
        let [hidden, gate] = projected
            .chunk(2, 2)
            .try_into()
            .expect("chunk(2) gives two halves");
        hidden * gelu_exact(gate)
    }
}

/// `FeedForward` with `activation_fn="geglu"`: `net = [GEGLU, Dropout, Linear]`.
/// The tuple keeps diffusers' indices: weights live at `net.0.proj` and `net.2`.
#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub net: (GeGlu<B>, burn::nn::Dropout, Linear<B>),
}

impl<B: Backend> FeedForward<B> {
    pub fn new(dim: usize, mult: usize, device: &B::Device) -> Self {
        let inner = dim * mult;
        FeedForward {
            net: (
                GeGlu {
                    proj: linear(dim, inner * 2, true, device),
                },
                burn::nn::DropoutConfig::new(0.0).init(),
                linear(inner, dim, true, device),
            ),
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.net.2.forward(self.net.0.forward(x))
    }
}

/// `BasicTransformerBlock` (layer norms, self-attention, cross-attention, GEGLU).
#[derive(Module, Debug)]
pub struct BasicTransformerBlock<B: Backend> {
    pub norm1: LayerNorm<B>,
    pub attn1: Attention<B>,
    pub norm2: LayerNorm<B>,
    pub attn2: Attention<B>,
    pub norm3: LayerNorm<B>,
    pub ff: FeedForward<B>,
}

impl<B: Backend> BasicTransformerBlock<B> {
    pub fn new(
        dim: usize,
        heads: usize,
        head_dim: usize,
        cross_attention_dim: usize,
        device: &B::Device,
    ) -> Self {
        BasicTransformerBlock {
            norm1: layer_norm(dim, 1e-5, device),
            attn1: Attention::new(dim, dim, heads, head_dim, false, device),
            norm2: layer_norm(dim, 1e-5, device),
            attn2: Attention::new(dim, cross_attention_dim, heads, head_dim, false, device),
            norm3: layer_norm(dim, 1e-5, device),
            ff: FeedForward::new(dim, 4, device),
        }
    }

    /// x [b, n, dim], context [b, m, cross_attention_dim] -> [b, n, dim].
    pub fn forward(&self, x: Tensor<B, 3>, context: &Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.attn1.forward(self.norm1.forward_f32(x.clone()), None) + x;
        let x = self
            .attn2
            .forward(self.norm2.forward_f32(x.clone()), Some(context.clone()))
            + x;
        self.ff.forward(self.norm3.forward_f32(x.clone())) + x
    }
}

/// `proj_in`/`proj_out`: 1x1 convolutions in SD1.x, linear layers in SD2
/// (`use_linear_projection`). The weights loader leaves enum variants out of the
/// path, so both load from `proj_in.weight`.
#[derive(Module, Debug)]
pub enum Projection<B: Backend> {
    Conv(Conv2d<B>),
    Linear(Linear<B>),
}

/// `Transformer2DModel` for continuous (latent image) input.
#[derive(Module, Debug)]
pub struct Transformer2DModel<B: Backend> {
    pub norm: GroupNorm<B>,
    pub proj_in: Projection<B>,
    pub transformer_blocks: Vec<BasicTransformerBlock<B>>,
    pub proj_out: Projection<B>,
}

/// What a `Transformer2DModel` is built from.
#[derive(Debug, Clone, Copy)]
pub struct TransformerSpec {
    pub channels: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub cross_attention_dim: usize,
    pub groups: usize,
    pub linear_projection: bool,
}

impl<B: Backend> Transformer2DModel<B> {
    pub fn new(spec: TransformerSpec, device: &B::Device) -> Self {
        let inner = spec.heads * spec.head_dim;
        let projection = |from: usize, to: usize| {
            if spec.linear_projection {
                Projection::Linear(linear(from, to, true, device))
            } else {
                Projection::Conv(conv2d(from, to, 1, 1, 0, device))
            }
        };
        Transformer2DModel {
            norm: group_norm(spec.groups, spec.channels, 1e-6, device),
            proj_in: projection(spec.channels, inner),
            transformer_blocks: (0..spec.layers)
                .map(|_| {
                    BasicTransformerBlock::new(
                        inner,
                        spec.heads,
                        spec.head_dim,
                        spec.cross_attention_dim,
                        device,
                    )
                })
                .collect(),
            proj_out: projection(inner, spec.channels),
        }
    }

    /// x [b, c, h, w], context [b, m, cross_attention_dim] -> [b, c, h, w].
    pub fn forward(&self, x: Tensor<B, 4>, context: &Tensor<B, 3>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let residual = x.clone();
        let x = self.norm.forward_f32(x);
        // 1. project in, flatten to tokens [b, h*w, inner]
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => {
                let x = conv.forward(x);
                let inner = x.dims()[1];
                x.reshape([b, inner, h * w]).swap_dims(1, 2)
            }
            Projection::Linear(linear) => linear.forward(x.reshape([b, c, h * w]).swap_dims(1, 2)),
        };
        // 2. blocks
        for block in &self.transformer_blocks {
            tokens = block.forward(tokens, context);
        }
        // 3. project out, back to [b, c, h, w]
        let out = match &self.proj_out {
            Projection::Conv(conv) => {
                let inner = tokens.dims()[2];
                conv.forward(tokens.swap_dims(1, 2).reshape([b, inner, h, w]))
            }
            Projection::Linear(linear) => {
                linear.forward(tokens).swap_dims(1, 2).reshape([b, c, h, w])
            }
        };
        out + residual
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::{Param, ParamId};
    use burn::nn::LinearConfig;

    type Cpu = burn::backend::NdArray<f32>;

    fn linear(values: Vec<f32>, d_in: usize, d_out: usize) -> Linear<Cpu> {
        let device = Default::default();
        let mut l = LinearConfig::new(d_in, d_out)
            .with_bias(false)
            .init::<Cpu>(&device);
        l.weight = Param::initialized(
            ParamId::new(),
            Tensor::from_data(TensorData::new(values, [d_in, d_out]), &device),
        );
        l
    }

    /// down sums the 6 inputs into rank 1, up copies it to 3 outputs: every output
    /// of a row is the sum of that row's kept inputs.
    fn summing_adapter(dropout: Option<LoraDropout>) -> LoraAdapter<Cpu> {
        LoraAdapter {
            down: linear(vec![1.0; 6], 6, 1),
            up: linear(vec![1.0; 3], 1, 3),
            scale: 1.0,
            dropout,
        }
    }

    fn rows(adapter: &LoraAdapter<Cpu>) -> Vec<f32> {
        let x = Tensor::<Cpu, 3>::ones([2, 50, 6], &Default::default());
        adapter.forward(x).into_data().into_vec().unwrap()
    }

    #[test]
    fn dropout_masks_the_adapter_input_from_its_seed() {
        let none = rows(&summing_adapter(None));
        assert!(
            none.iter().all(|&v| v == 6.0),
            "no dropout: every input counts"
        );

        let dropout = LoraDropout { p: 0.25, seed: 3 };
        let out = rows(&summing_adapter(Some(dropout)));
        assert_eq!(
            out,
            rows(&summing_adapter(Some(dropout))),
            "same seed, same mask"
        );
        let other = rows(&summing_adapter(Some(LoraDropout { p: 0.25, seed: 4 })));
        assert_ne!(out, other);
        // The mask is on the input of `down` (peft's lora_A), not on the output:
        // the three outputs of a row are equal, the kept inputs scaled by 1 / 0.75.
        let mask = dropout.mask(2 * 50 * 6);
        for (row, outputs) in out.chunks(3).enumerate() {
            let kept: f32 = mask[row * 6..row * 6 + 6].iter().sum();
            assert!(
                outputs.iter().all(|&v| (v - kept).abs() < 1e-5),
                "{outputs:?}"
            );
        }
        let dropped = mask.iter().filter(|&&m| m == 0.0).count() as f64 / mask.len() as f64;
        assert!((dropped - 0.25).abs() < 0.06, "dropped {dropped}");
        assert!(mask.iter().all(|&m| m == 0.0 || m == (1.0f32 / 0.75f32)));
    }
}
