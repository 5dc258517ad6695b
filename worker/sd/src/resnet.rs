//! `ResnetBlock2D`, `Downsample2D` and `Upsample2D` (diffusers' `models/resnet.py`,
//! `downsampling.py`, `upsampling.py`), with the options SD1.x and its VAE use:
//! `time_embedding_norm="default"`, pre-norm, a 1x1 `conv_shortcut` when the channel
//! count changes.

use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{GroupNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;

use crate::layers::{conv2d, group_norm, linear, Activation};
use crate::precision::NormF32;

#[derive(Module, Debug)]
pub struct ResnetBlock2D<B: Backend> {
    pub norm1: GroupNorm<B>,
    pub conv1: Conv2d<B>,
    /// Absent in the VAE, which has no timestep.
    pub time_emb_proj: Option<Linear<B>>,
    pub norm2: GroupNorm<B>,
    pub conv2: Conv2d<B>,
    pub conv_shortcut: Option<Conv2d<B>>,
    #[module(skip)]
    pub activation: Activation,
    #[module(skip)]
    pub output_scale_factor: f64,
}

/// What a `ResnetBlock2D` is built from.
#[derive(Debug, Clone, Copy)]
pub struct ResnetSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub temb_channels: Option<usize>,
    pub groups: usize,
    pub eps: f64,
    pub activation: Activation,
    pub output_scale_factor: f64,
}

impl<B: Backend> ResnetBlock2D<B> {
    pub fn new(spec: ResnetSpec, device: &B::Device) -> Self {
        let ResnetSpec {
            in_channels,
            out_channels,
            ..
        } = spec;
        ResnetBlock2D {
            norm1: group_norm(spec.groups, in_channels, spec.eps, device),
            conv1: conv2d(in_channels, out_channels, 3, 1, 1, device),
            time_emb_proj: spec
                .temb_channels
                .map(|t| linear(t, out_channels, true, device)),
            norm2: group_norm(spec.groups, out_channels, spec.eps, device),
            conv2: conv2d(out_channels, out_channels, 3, 1, 1, device),
            conv_shortcut: (in_channels != out_channels)
                .then(|| conv2d(in_channels, out_channels, 1, 1, 0, device)),
            activation: spec.activation,
            output_scale_factor: spec.output_scale_factor,
        }
    }

    /// x [b, in, h, w], temb [b, temb_channels] -> [b, out, h, w].
    pub fn forward(&self, x: Tensor<B, 4>, temb: Option<&Tensor<B, 2>>) -> Tensor<B, 4> {
        let act = self.activation;
        let mut h = self
            .conv1
            .forward(act.forward(self.norm1.forward_f32(x.clone())));
        if let (Some(proj), Some(temb)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(act.forward(temb.clone()));
            let [b, c] = t.dims();
            h = h + t.reshape([b, c, 1, 1]);
        }
        let h = self.conv2.forward(act.forward(self.norm2.forward_f32(h)));
        let x = match &self.conv_shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        let out = x + h;
        if self.output_scale_factor == 1.0 {
            out
        } else {
            out / self.output_scale_factor
        }
    }
}

/// A strided 3x3 convolution. The VAE encoder builds it with `padding=0` and pads
/// right and bottom by one instead (an asymmetric pad).
#[derive(Module, Debug)]
pub struct Downsample2D<B: Backend> {
    pub conv: Conv2d<B>,
    #[module(skip)]
    pub asymmetric_pad: bool,
}

impl<B: Backend> Downsample2D<B> {
    pub fn new(channels: usize, padding: usize, device: &B::Device) -> Self {
        Downsample2D {
            conv: conv2d(channels, channels, 3, 2, padding, device),
            asymmetric_pad: padding == 0,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let x = if self.asymmetric_pad {
            // F.pad(x, (0, 1, 0, 1)): one zero column on the right, one row below.
            // By hand: burn's `pad` makes its zeros in the default float dtype,
            // which breaks on bf16 activations.
            let [b, c, h, w] = x.dims();
            let (dtype, device) = (x.dtype(), x.device());
            let column = Tensor::<B, 4>::zeros([b, c, h, 1], &device).cast(dtype);
            let x = Tensor::cat(vec![x, column], 3);
            let row = Tensor::<B, 4>::zeros([b, c, 1, w + 1], &device).cast(dtype);
            Tensor::cat(vec![x, row], 2)
        } else {
            x
        };
        self.conv.forward(x)
    }
}

/// Nearest-neighbour 2x upsampling (or to an explicit size) then a 3x3 convolution.
#[derive(Module, Debug)]
pub struct Upsample2D<B: Backend> {
    pub conv: Conv2d<B>,
}

impl<B: Backend> Upsample2D<B> {
    pub fn new(channels: usize, device: &B::Device) -> Self {
        Upsample2D {
            conv: conv2d(channels, channels, 3, 1, 1, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, size: Option<[usize; 2]>) -> Tensor<B, 4> {
        let [_, _, h, w] = x.dims();
        let size = size.unwrap_or([h * 2, w * 2]);
        let x = interpolate(x, size, InterpolateOptions::new(InterpolateMode::Nearest));
        self.conv.forward(x)
    }
}
