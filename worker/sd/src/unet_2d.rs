//! `UNet2DConditionModel` (diffusers' `models/unets/unet_2d_condition.py`), built
//! from its `config.json`: any channel counts, layers per block, head counts,
//! cross-attention width and the SD1.x/SD2 block types.

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

use crate::attention::TransformerSpec;
use crate::config::{read_json, PerBlock};
use crate::embeddings::{timestep_projection, TimestepEmbedding};
use crate::error::{Result, SdError};
use crate::layers::{conv2d, group_norm, Activation};
use crate::precision::{param_dtype, NormF32};
use crate::resnet::ResnetSpec;
use crate::unet_2d_blocks::{BlockSpec, DownBlock2D, MidBlock2DCrossAttn, UpBlock2D};

/// `unet/config.json`. Defaults are diffusers' `UNet2DConditionModel.__init__` ones.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct UNet2DConditionConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub center_input_sample: bool,
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block")]
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    #[serde(default = "no")]
    pub only_cross_attention: PerBlock<bool>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: Activation,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: PerBlock<usize>,
    /// In SD1.x/SD2 configs this is the number of heads, not their width (a
    /// naming mistake diffusers keeps for compatibility), unless
    /// `num_attention_heads` is also given.
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Only changes f16 arithmetic; atelier's attention is exact in f32.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default = "default_str")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

fn four() -> usize {
    4
}
fn two() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn one() -> usize {
    1
}
fn three() -> usize {
    3
}
fn one_f() -> f64 {
    1.0
}
fn one_per_block() -> PerBlock<usize> {
    PerBlock::One(1)
}
fn eight() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn thirty_two() -> usize {
    32
}
fn norm_eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn no() -> PerBlock<bool> {
    PerBlock::One(false)
}
fn silu() -> Activation {
    Activation::Silu
}
fn default_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn default_mid_block() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn default_str() -> String {
    "default".into()
}
fn positional() -> String {
    "positional".into()
}

const DOWN_TYPES: &[&str] = &["CrossAttnDownBlock2D", "DownBlock2D"];
const UP_TYPES: &[&str] = &["CrossAttnUpBlock2D", "UpBlock2D"];

/// Per-block values, expanded and checked.
struct Layout {
    layers: Vec<usize>,
    transformer_layers: Vec<usize>,
    heads: Vec<usize>,
    cross_attention_dim: Vec<usize>,
}

impl UNet2DConditionConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_json(path, "a UNet2DConditionModel config")?;
        config.validate().map_err(|m| SdError::config(path, m))?;
        Ok(config)
    }

    /// Refuses, by field name, what atelier does not build.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.layout().map(|_| ())
    }

    fn layout(&self) -> std::result::Result<Layout, String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("`block_out_channels` is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "`down_block_types` ({}) and `up_block_types` ({}) must have one entry per \
                 `block_out_channels` entry ({n})",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        for (field, types, known) in [
            ("down_block_types", &self.down_block_types, DOWN_TYPES),
            ("up_block_types", &self.up_block_types, UP_TYPES),
        ] {
            if let Some(t) = types.iter().find(|t| !known.contains(&t.as_str())) {
                return Err(format!(
                    "`{field}` has unknown block type `{t}` (atelier builds {})",
                    known.join(", ")
                ));
            }
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => {}
            other => {
                return Err(format!(
                    "`mid_block_type` {other:?} is not supported (atelier builds UNetMidBlock2DCrossAttn)"
                ))
            }
        }
        let unsupported = [
            (
                "resnet_time_scale_shift",
                self.resnet_time_scale_shift != "default",
            ),
            (
                "time_embedding_type",
                self.time_embedding_type != "positional",
            ),
            ("class_embed_type", self.class_embed_type.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            ("center_input_sample", self.center_input_sample),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            return Err(format!("`{field}` has a value atelier does not support"));
        }
        if self
            .only_cross_attention
            .expand(n, "only_cross_attention")?
            .contains(&true)
        {
            return Err("`only_cross_attention` is not supported".into());
        }
        if self.conv_in_kernel.is_multiple_of(2) || self.conv_out_kernel.is_multiple_of(2) {
            return Err("`conv_in_kernel` and `conv_out_kernel` must be odd".into());
        }
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, "attention_head_dim")?,
        };
        for (i, (&channels, &h)) in self.block_out_channels.iter().zip(&heads).enumerate() {
            if h == 0 || channels % h != 0 {
                return Err(format!(
                    "block {i}: {channels} channels do not split into {h} attention heads"
                ));
            }
            if channels % self.norm_num_groups != 0 {
                return Err(format!(
                    "block {i}: {channels} channels are not a multiple of `norm_num_groups` {}",
                    self.norm_num_groups
                ));
            }
        }
        Ok(Layout {
            layers: self.layers_per_block.expand(n, "layers_per_block")?,
            transformer_layers: self
                .transformer_layers_per_block
                .expand(n, "transformer_layers_per_block")?,
            heads,
            cross_attention_dim: self.cross_attention_dim.expand(n, "cross_attention_dim")?,
        })
    }

    /// Builds the model (parameters are initialised lazily: loading weights into a
    /// fresh model allocates each tensor once).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<UNet2DConditionModel<B>> {
        let layout = self
            .layout()
            .map_err(|m| SdError::Invalid(format!("unet config: {m}")))?;
        let channels = &self.block_out_channels;
        let n = channels.len();
        let time_embed_dim = channels[0] * 4;
        let resnet = ResnetSpec {
            in_channels: 0,
            out_channels: 0,
            temb_channels: Some(time_embed_dim),
            groups: self.norm_num_groups,
            eps: self.norm_eps,
            activation: self.act_fn,
            output_scale_factor: 1.0,
        };
        let transformer = |i: usize, channels: usize| TransformerSpec {
            channels,
            heads: layout.heads[i],
            head_dim: channels / layout.heads[i],
            layers: layout.transformer_layers[i],
            cross_attention_dim: layout.cross_attention_dim[i],
            groups: self.norm_num_groups,
            linear_projection: self.use_linear_projection,
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channels = channels[0];
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let input_channels = output_channels;
            output_channels = channels[i];
            down_blocks.push(DownBlock2D::new(
                BlockSpec {
                    layers: layout.layers[i],
                    in_channels: input_channels,
                    out_channels: output_channels,
                    prev_output_channels: 0,
                    resnet,
                    transformer: (kind == "CrossAttnDownBlock2D")
                        .then(|| transformer(i, output_channels)),
                    resample: i < n - 1,
                    downsample_padding: self.downsample_padding,
                },
                device,
            ));
        }

        let mid_channels = channels[n - 1];
        let mid_block = MidBlock2DCrossAttn::new(
            ResnetSpec {
                in_channels: mid_channels,
                out_channels: mid_channels,
                output_scale_factor: self.mid_block_scale_factor,
                ..resnet
            },
            transformer(n - 1, mid_channels),
            device,
        );

        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channels = channels[n - 1];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let r = n - 1 - i; // the matching down block
            let prev_output_channels = output_channels;
            output_channels = channels[r];
            let input_channels = channels[r.saturating_sub(1)];
            up_blocks.push(UpBlock2D::new(
                BlockSpec {
                    layers: layout.layers[r] + 1,
                    in_channels: input_channels,
                    out_channels: output_channels,
                    prev_output_channels,
                    resnet,
                    transformer: (kind == "CrossAttnUpBlock2D")
                        .then(|| transformer(r, output_channels)),
                    resample: i < n - 1,
                    downsample_padding: 0,
                },
                device,
            ));
        }

        Ok(UNet2DConditionModel {
            conv_in: conv2d(
                self.in_channels,
                channels[0],
                self.conv_in_kernel,
                1,
                self.conv_in_kernel / 2,
                device,
            ),
            time_embedding: TimestepEmbedding::new(
                channels[0],
                time_embed_dim,
                self.act_fn,
                device,
            ),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: group_norm(self.norm_num_groups, channels[0], self.norm_eps, device),
            conv_out: conv2d(
                channels[0],
                self.out_channels,
                self.conv_out_kernel,
                1,
                self.conv_out_kernel / 2,
                device,
            ),
            time_proj_dim: channels[0],
            flip_sin_to_cos: self.flip_sin_to_cos,
            freq_shift: self.freq_shift,
            activation: self.act_fn,
        })
    }
}

#[derive(Module, Debug)]
pub struct UNet2DConditionModel<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub time_embedding: TimestepEmbedding<B>,
    pub down_blocks: Vec<DownBlock2D<B>>,
    pub mid_block: MidBlock2DCrossAttn<B>,
    pub up_blocks: Vec<UpBlock2D<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    pub time_proj_dim: usize,
    #[module(skip)]
    pub flip_sin_to_cos: bool,
    #[module(skip)]
    pub freq_shift: f64,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> UNet2DConditionModel<B> {
    /// sample [b, in, h, w], one timestep per sample (or one for all),
    /// context [b, 77, cross_attention_dim] -> noise prediction [b, out, h, w].
    pub fn forward(
        &self,
        sample: Tensor<B, 4>,
        timesteps: &[f64],
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let batch = sample.dims()[0];
        let device = sample.device();
        // Compute in the weights' dtype (bf16/f16 when cast for mixed precision);
        // the caller gets its own dtype back.
        let caller_dtype = sample.dtype();
        let dtype = param_dtype(&self.conv_in.weight);
        let sample = sample.cast(dtype);
        let context = &context.clone().cast(dtype);
        // 1. time
        let timesteps = if timesteps.len() == 1 {
            vec![timesteps[0]; batch]
        } else {
            timesteps.to_vec()
        };
        let t_emb = timestep_projection::<B>(
            &timesteps,
            self.time_proj_dim,
            self.flip_sin_to_cos,
            self.freq_shift,
            &device,
        );
        let emb = self.time_embedding.forward(t_emb.cast(dtype));

        // 2. pre-process
        let mut x = self.conv_in.forward(sample);

        // 3. down
        let mut skips = vec![x.clone()];
        for block in &self.down_blocks {
            let (out, block_skips) = block.forward(x, Some(&emb), Some(context));
            x = out;
            skips.extend(block_skips);
        }

        // 4. mid
        x = self.mid_block.forward(x, &emb, context);

        // 5. up; the upsampler of each block but the last aims at the size of the
        // next skip tensor, which is what diffusers does for odd sizes and equals 2x
        // otherwise.
        for block in &self.up_blocks {
            let resnets = block.resnets.len();
            let mut block_skips = skips.split_off(skips.len() - resnets);
            let upsample_size = skips.last().map(|s| {
                let [_, _, h, w] = s.dims();
                [h, w]
            });
            x = block.forward(x, &mut block_skips, &emb, context, upsample_size);
        }

        // 6. post-process
        let x = self.activation.forward(self.conv_norm_out.forward_f32(x));
        self.conv_out.forward(x).cast(caller_dtype)
    }
}
