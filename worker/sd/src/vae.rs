//! `AutoencoderKL` (diffusers' `models/autoencoders/autoencoder_kl.py` and `vae.py`):
//! the encoder gives the mean and log-variance of the latent distribution, the
//! decoder turns latents back into an image in [-1, 1].

use std::path::Path;

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::GroupNorm;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

use crate::config::read_json;
use crate::error::{Result, SdError};
use crate::layers::{conv2d, group_norm, Activation};
use crate::precision::{param_dtype, NormF32};
use crate::resnet::ResnetSpec;
use crate::unet_2d_blocks::{BlockSpec, DownBlock2D, UpDecoderBlock2D, VaeMidBlock2D};

/// `vae/config.json`. Defaults are diffusers' `AutoencoderKL.__init__` ones.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct AutoencoderKLConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "one")]
    pub layers_per_block: usize,
    #[serde(default = "silu")]
    pub act_fn: Activation,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default)]
    pub sample_size: Option<usize>,
    #[serde(default = "scaling_factor")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub use_quant_conv: bool,
    #[serde(default = "yes")]
    pub use_post_quant_conv: bool,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

fn three() -> usize {
    3
}
fn one() -> usize {
    1
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn silu() -> Activation {
    Activation::Silu
}
fn scaling_factor() -> f64 {
    0.18215
}
fn yes() -> bool {
    true
}

/// The VAE's resnets and norms use eps 1e-6 (hard-coded in diffusers' `vae.py`).
const VAE_EPS: f64 = 1e-6;

impl AutoencoderKLConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_json(path, "an AutoencoderKL config")?;
        config.validate().map_err(|m| SdError::config(path, m))?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("`block_out_channels` is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "`down_block_types` and `up_block_types` must have {n} entries, one per \
                 `block_out_channels` entry"
            ));
        }
        for (field, types, known) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if let Some(t) = types.iter().find(|t| t.as_str() != known) {
                return Err(format!(
                    "`{field}` has unknown block type `{t}` (atelier builds {known})"
                ));
            }
        }
        if let Some(c) = self
            .block_out_channels
            .iter()
            .find(|c| *c % self.norm_num_groups != 0)
        {
            return Err(format!(
                "{c} channels are not a multiple of `norm_num_groups` {}",
                self.norm_num_groups
            ));
        }
        Ok(())
    }

    /// How many times the encoder halves the image side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<AutoencoderKL<B>> {
        self.validate()
            .map_err(|m| SdError::Invalid(format!("vae config: {m}")))?;
        let channels = &self.block_out_channels;
        let n = channels.len();
        let top = channels[n - 1];
        let resnet = ResnetSpec {
            in_channels: top,
            out_channels: top,
            temb_channels: None,
            groups: self.norm_num_groups,
            eps: VAE_EPS,
            activation: self.act_fn,
            output_scale_factor: 1.0,
        };

        let mut down_blocks = Vec::with_capacity(n);
        let mut output_channels = channels[0];
        for (i, &channels_i) in channels.iter().enumerate() {
            let input_channels = output_channels;
            output_channels = channels_i;
            down_blocks.push(DownBlock2D::new(
                BlockSpec {
                    layers: self.layers_per_block,
                    in_channels: input_channels,
                    out_channels: output_channels,
                    prev_output_channels: 0,
                    resnet,
                    transformer: None,
                    resample: i < n - 1,
                    downsample_padding: 0,
                },
                device,
            ));
        }
        let encoder = Encoder {
            conv_in: conv2d(self.in_channels, channels[0], 3, 1, 1, device),
            down_blocks,
            mid_block: VaeMidBlock2D::new(resnet, self.mid_block_add_attention, device),
            conv_norm_out: group_norm(self.norm_num_groups, top, VAE_EPS, device),
            conv_out: conv2d(top, 2 * self.latent_channels, 3, 1, 1, device),
            activation: self.act_fn,
        };

        let mut up_blocks = Vec::with_capacity(n);
        let mut output_channels = top;
        for i in 0..n {
            let prev_output_channels = output_channels;
            output_channels = channels[n - 1 - i];
            up_blocks.push(UpDecoderBlock2D::new(
                BlockSpec {
                    layers: self.layers_per_block + 1,
                    in_channels: prev_output_channels,
                    out_channels: output_channels,
                    prev_output_channels: 0,
                    resnet,
                    transformer: None,
                    resample: i < n - 1,
                    downsample_padding: 0,
                },
                device,
            ));
        }
        let decoder = Decoder {
            conv_in: conv2d(self.latent_channels, top, 3, 1, 1, device),
            mid_block: VaeMidBlock2D::new(resnet, self.mid_block_add_attention, device),
            up_blocks,
            conv_norm_out: group_norm(self.norm_num_groups, channels[0], VAE_EPS, device),
            conv_out: conv2d(channels[0], self.out_channels, 3, 1, 1, device),
            activation: self.act_fn,
        };
        let latent = self.latent_channels;
        Ok(AutoencoderKL {
            encoder,
            decoder,
            quant_conv: self
                .use_quant_conv
                .then(|| conv2d(2 * latent, 2 * latent, 1, 1, 0, device)),
            post_quant_conv: self
                .use_post_quant_conv
                .then(|| conv2d(latent, latent, 1, 1, 0, device)),
        })
    }
}

#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub down_blocks: Vec<DownBlock2D<B>>,
    pub mid_block: VaeMidBlock2D<B>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Encoder<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.conv_in.forward(x);
        for block in &self.down_blocks {
            x = block.forward(x, None, None).0;
        }
        let x = self.mid_block.forward(x);
        let x = self.activation.forward(self.conv_norm_out.forward_f32(x));
        self.conv_out.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    pub conv_in: Conv2d<B>,
    pub mid_block: VaeMidBlock2D<B>,
    pub up_blocks: Vec<UpDecoderBlock2D<B>>,
    pub conv_norm_out: GroupNorm<B>,
    pub conv_out: Conv2d<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Decoder<B> {
    fn forward(&self, z: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.mid_block.forward(self.conv_in.forward(z));
        for block in &self.up_blocks {
            x = block.forward(x);
        }
        let x = self.activation.forward(self.conv_norm_out.forward_f32(x));
        self.conv_out.forward(x)
    }
}

#[derive(Module, Debug)]
pub struct AutoencoderKL<B: Backend> {
    pub encoder: Encoder<B>,
    pub decoder: Decoder<B>,
    pub quant_conv: Option<Conv2d<B>>,
    pub post_quant_conv: Option<Conv2d<B>>,
}

/// The encoder's latent distribution, each [b, latent, h/8, w/8].
#[derive(Debug, Clone)]
pub struct LatentDistribution<B: Backend> {
    pub mean: Tensor<B, 4>,
    pub logvar: Tensor<B, 4>,
}

impl<B: Backend> LatentDistribution<B> {
    /// mean + std * noise, as `DiagonalGaussianDistribution.sample`.
    pub fn sample(&self, noise: Tensor<B, 4>) -> Tensor<B, 4> {
        self.mean.clone() + (self.logvar.clone() * 0.5).exp() * noise
    }
}

impl<B: Backend> AutoencoderKL<B> {
    /// image [b, 3, H, W] in [-1, 1] -> latent distribution.
    pub fn encode(&self, image: Tensor<B, 4>) -> LatentDistribution<B> {
        // In the weights' dtype; the distribution in the caller's.
        let caller_dtype = image.dtype();
        let h = self
            .encoder
            .forward(image.cast(param_dtype(&self.encoder.conv_in.weight)));
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(h),
            None => h,
        }
        .cast(caller_dtype);
        let [mean, logvar] = moments
            .chunk(2, 1)
            .try_into()
            .expect("chunk(2) gives two halves");
        LatentDistribution {
            mean,
            logvar: logvar.clamp(-30.0, 20.0),
        }
    }

    /// latents [b, latent, h, w] (already divided by the scaling factor)
    /// -> image [b, 3, 8h, 8w], roughly in [-1, 1].
    pub fn decode(&self, latents: Tensor<B, 4>) -> Tensor<B, 4> {
        let caller_dtype = latents.dtype();
        let dtype = param_dtype(&self.decoder.conv_in.weight);
        let latents = latents.cast(dtype);
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(latents),
            None => latents,
        };
        self.decoder.forward(z).cast(caller_dtype)
    }
}
