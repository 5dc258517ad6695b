//! Small building blocks shared by the models: layer constructors with PyTorch's
//! defaults, and activations burn does not ship.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{
    GroupNorm, GroupNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, PaddingConfig2d,
};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::Deserialize;

pub fn conv2d<B: Backend>(
    channels_in: usize,
    channels_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new([channels_in, channels_out], [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .init(device)
}

pub fn linear<B: Backend>(d_in: usize, d_out: usize, bias: bool, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out).with_bias(bias).init(device)
}

pub fn group_norm<B: Backend>(
    groups: usize,
    channels: usize,
    eps: f64,
    device: &B::Device,
) -> GroupNorm<B> {
    GroupNormConfig::new(groups, channels)
        .with_epsilon(eps)
        .init(device)
}

pub fn layer_norm<B: Backend>(d: usize, eps: f64, device: &B::Device) -> LayerNorm<B> {
    LayerNormConfig::new(d).with_epsilon(eps).init(device)
}

/// GELU with the erf, forward and backward: burn 0.21's `gelu` computes the erf
/// form forward but differentiates the tanh approximation, which moved LoRA
/// gradients by 5e-4 relative against PyTorch. Written with differentiable ops in
/// the order burn's own forward uses, so sampling is unchanged.
pub fn gelu_exact<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    let erf = (x.clone() / std::f64::consts::SQRT_2).erf();
    x * (erf + 1.0) / 2.0
}

/// The activations diffusers and transformers configs name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Activation {
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    #[serde(rename = "gelu")]
    Gelu,
    #[serde(rename = "quick_gelu")]
    QuickGelu,
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Silu => silu(x),
            Activation::Gelu => gelu_exact(x),
            // CLIP's approximation: x * sigmoid(1.702 x).
            Activation::QuickGelu => x.clone() * sigmoid(x * 1.702),
        }
    }
}
