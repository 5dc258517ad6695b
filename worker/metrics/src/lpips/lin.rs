//! `lpips.NetLinLayer`: the learned 1x1 convolution (no bias) that weighs a layer's
//! squared feature differences. In the package it follows a dropout (a no-op in eval
//! mode) inside an `nn.Sequential`, hence the weight name `lin0.model.1.weight`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

#[derive(Module, Debug)]
pub struct NetLinLayer<B: Backend> {
    /// `[None (dropout), Some(conv)]`.
    pub model: Vec<Option<Conv2d<B>>>,
}

impl<B: Backend> NetLinLayer<B> {
    pub fn init(channels: usize, device: &B::Device) -> Self {
        let conv = Conv2dConfig::new([channels, 1], [1, 1])
            .with_bias(false)
            .init(device);
        NetLinLayer {
            model: vec![None, Some(conv)],
        }
    }

    /// [batch, C, H, W] -> [batch, 1, H, W].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.model[1]
            .as_ref()
            .expect("the convolution of a NetLinLayer")
            .forward(x)
    }
}
