//! The down, mid and up blocks of the UNet and the VAE (diffusers'
//! `models/unets/unet_2d_blocks.py`).
//!
//! A block with and without cross-attention share one struct: a `DownBlock2D` is a
//! `CrossAttnDownBlock2D` whose `attentions` list is empty, which keeps the weight
//! names (`resnets.0`, `attentions.0`, `downsamplers.0`) identical to diffusers'.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::attention::{vae_attention, Attention, Transformer2DModel, TransformerSpec};
use crate::resnet::{Downsample2D, ResnetBlock2D, ResnetSpec, Upsample2D};

/// `spec.layers` resnets, each feeding the next: `in_channels` into the first,
/// `out_channels` after it (down blocks and the VAE decoder's up blocks).
fn chained_resnets<B: Backend>(spec: &BlockSpec, device: &B::Device) -> Vec<ResnetBlock2D<B>> {
    (0..spec.layers)
        .map(|i| {
            let in_channels = if i == 0 {
                spec.in_channels
            } else {
                spec.out_channels
            };
            ResnetBlock2D::new(
                ResnetSpec {
                    in_channels,
                    out_channels: spec.out_channels,
                    ..spec.resnet
                },
                device,
            )
        })
        .collect()
}

/// `CrossAttnDownBlock2D`, `DownBlock2D` and the VAE's `DownEncoderBlock2D`.
#[derive(Module, Debug)]
pub struct DownBlock2D<B: Backend> {
    pub attentions: Vec<Transformer2DModel<B>>,
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub downsamplers: Vec<Downsample2D<B>>,
}

/// What a down or up block is built from (the arguments of `get_down_block`).
#[derive(Debug, Clone, Copy)]
pub struct BlockSpec {
    pub layers: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Up blocks only: the channels coming from the block below.
    pub prev_output_channels: usize,
    /// The template for every resnet of the block (channel counts are overwritten).
    pub resnet: ResnetSpec,
    /// `None` for blocks without cross-attention.
    pub transformer: Option<TransformerSpec>,
    pub resample: bool,
    pub downsample_padding: usize,
}

impl<B: Backend> DownBlock2D<B> {
    pub fn new(spec: BlockSpec, device: &B::Device) -> Self {
        let resnets = chained_resnets(&spec, device);
        let attentions = match spec.transformer {
            Some(t) => (0..spec.layers)
                .map(|_| Transformer2DModel::new(t, device))
                .collect(),
            None => Vec::new(),
        };
        let downsamplers = if spec.resample {
            vec![Downsample2D::new(
                spec.out_channels,
                spec.downsample_padding,
                device,
            )]
        } else {
            Vec::new()
        };
        DownBlock2D {
            attentions,
            resnets,
            downsamplers,
        }
    }

    /// Returns the block's output and the skip tensors for the up path (one per
    /// resnet, plus one after the downsampler).
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        temb: Option<&Tensor<B, 2>>,
        context: Option<&Tensor<B, 3>>,
    ) -> (Tensor<B, 4>, Vec<Tensor<B, 4>>) {
        let mut skips = Vec::with_capacity(self.resnets.len() + 1);
        for (i, resnet) in self.resnets.iter().enumerate() {
            x = resnet.forward(x, temb);
            if let (Some(attn), Some(context)) = (self.attentions.get(i), context) {
                x = attn.forward(x, context);
            }
            skips.push(x.clone());
        }
        for downsampler in &self.downsamplers {
            x = downsampler.forward(x);
            skips.push(x.clone());
        }
        (x, skips)
    }
}

/// `UNetMidBlock2DCrossAttn`: resnet, then (attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct MidBlock2DCrossAttn<B: Backend> {
    pub attentions: Vec<Transformer2DModel<B>>,
    pub resnets: Vec<ResnetBlock2D<B>>,
}

impl<B: Backend> MidBlock2DCrossAttn<B> {
    pub fn new(resnet: ResnetSpec, transformer: TransformerSpec, device: &B::Device) -> Self {
        MidBlock2DCrossAttn {
            attentions: vec![Transformer2DModel::new(transformer, device)],
            resnets: (0..2).map(|_| ResnetBlock2D::new(resnet, device)).collect(),
        }
    }

    pub fn forward(
        &self,
        x: Tensor<B, 4>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, Some(temb));
        for (attn, resnet) in self.attentions.iter().zip(&self.resnets[1..]) {
            x = attn.forward(x, context);
            x = resnet.forward(x, Some(temb));
        }
        x
    }
}

/// `CrossAttnUpBlock2D` and `UpBlock2D`: each resnet takes a skip tensor from the
/// down path, concatenated on channels.
#[derive(Module, Debug)]
pub struct UpBlock2D<B: Backend> {
    pub attentions: Vec<Transformer2DModel<B>>,
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpBlock2D<B> {
    pub fn new(spec: BlockSpec, device: &B::Device) -> Self {
        let resnets = (0..spec.layers)
            .map(|i| {
                let skip_channels = if i == spec.layers - 1 {
                    spec.in_channels
                } else {
                    spec.out_channels
                };
                let resnet_in = if i == 0 {
                    spec.prev_output_channels
                } else {
                    spec.out_channels
                };
                ResnetBlock2D::new(
                    ResnetSpec {
                        in_channels: resnet_in + skip_channels,
                        out_channels: spec.out_channels,
                        ..spec.resnet
                    },
                    device,
                )
            })
            .collect();
        let attentions = match spec.transformer {
            Some(t) => (0..spec.layers)
                .map(|_| Transformer2DModel::new(t, device))
                .collect(),
            None => Vec::new(),
        };
        let upsamplers = if spec.resample {
            vec![Upsample2D::new(spec.out_channels, device)]
        } else {
            Vec::new()
        };
        UpBlock2D {
            attentions,
            resnets,
            upsamplers,
        }
    }

    /// `skips` are consumed from the end, as diffusers pops `res_hidden_states_tuple`.
    pub fn forward(
        &self,
        mut x: Tensor<B, 4>,
        skips: &mut Vec<Tensor<B, 4>>,
        temb: &Tensor<B, 2>,
        context: &Tensor<B, 3>,
        upsample_size: Option<[usize; 2]>,
    ) -> Tensor<B, 4> {
        for (i, resnet) in self.resnets.iter().enumerate() {
            let skip = skips.pop().expect("one skip tensor per up-block resnet");
            x = resnet.forward(Tensor::cat(vec![x, skip], 1), Some(temb));
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward(x, context);
            }
        }
        for upsampler in &self.upsamplers {
            x = upsampler.forward(x, upsample_size);
        }
        x
    }
}

/// The VAE's `UNetMidBlock2D`: resnet, then (single-head attention, resnet) pairs.
#[derive(Module, Debug)]
pub struct VaeMidBlock2D<B: Backend> {
    pub attentions: Vec<Attention<B>>,
    pub resnets: Vec<ResnetBlock2D<B>>,
}

impl<B: Backend> VaeMidBlock2D<B> {
    pub fn new(resnet: ResnetSpec, add_attention: bool, device: &B::Device) -> Self {
        let attentions = if add_attention {
            vec![vae_attention(
                resnet.in_channels,
                resnet.groups,
                resnet.eps,
                device,
            )]
        } else {
            Vec::new()
        };
        VaeMidBlock2D {
            attentions,
            resnets: (0..2).map(|_| ResnetBlock2D::new(resnet, device)).collect(),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut x = self.resnets[0].forward(x, None);
        for (i, resnet) in self.resnets[1..].iter().enumerate() {
            if let Some(attn) = self.attentions.get(i) {
                x = attn.forward_spatial(x);
            }
            x = resnet.forward(x, None);
        }
        x
    }
}

/// The VAE decoder's `UpDecoderBlock2D`: resnets without skips, then an upsampler.
#[derive(Module, Debug)]
pub struct UpDecoderBlock2D<B: Backend> {
    pub resnets: Vec<ResnetBlock2D<B>>,
    pub upsamplers: Vec<Upsample2D<B>>,
}

impl<B: Backend> UpDecoderBlock2D<B> {
    pub fn new(spec: BlockSpec, device: &B::Device) -> Self {
        let resnets = chained_resnets(&spec, device);
        let upsamplers = if spec.resample {
            vec![Upsample2D::new(spec.out_channels, device)]
        } else {
            Vec::new()
        };
        UpDecoderBlock2D {
            resnets,
            upsamplers,
        }
    }

    pub fn forward(&self, mut x: Tensor<B, 4>) -> Tensor<B, 4> {
        for resnet in &self.resnets {
            x = resnet.forward(x, None);
        }
        for upsampler in &self.upsamplers {
            x = upsampler.forward(x, None);
        }
        x
    }
}
