//! Timestep embeddings (diffusers' `models/embeddings.py`: `Timesteps`,
//! `TimestepEmbedding`).

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::layers::{linear, Activation};

/// Sinusoidal projection of (possibly fractional) timesteps: [batch] -> [batch, dim].
///
/// The frequencies are computed on the host in f32, in the same order of operations
/// as `get_timestep_embedding`, so that a timestep of 999 lands on the same angle.
pub fn timestep_projection<B: Backend>(
    timesteps: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &B::Device,
) -> Tensor<B, 2> {
    let half = dim / 2;
    let max_period: f32 = 10000.0;
    let freqs: Vec<f32> = (0..half)
        .map(|i| {
            let exponent = -max_period.ln() * i as f32;
            (exponent / (half as f32 - freq_shift as f32)).exp()
        })
        .collect();
    let mut values = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let angles: Vec<f32> = freqs.iter().map(|f| t as f32 * f).collect();
        let sin = angles.iter().map(|a| a.sin());
        let cos = angles.iter().map(|a| a.cos());
        if flip_sin_to_cos {
            values.extend(cos.chain(sin));
        } else {
            values.extend(sin.chain(cos));
        }
        // An odd `dim` is zero-padded, as in diffusers.
        if dim % 2 == 1 {
            values.push(0.0);
        }
    }
    Tensor::from_data(TensorData::new(values, [timesteps.len(), dim]), device)
}

/// `TimestepEmbedding`: linear_1 -> act -> linear_2.
#[derive(Module, Debug)]
pub struct TimestepEmbedding<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> TimestepEmbedding<B> {
    pub fn new(
        in_channels: usize,
        time_embed_dim: usize,
        activation: Activation,
        device: &B::Device,
    ) -> Self {
        TimestepEmbedding {
            linear_1: linear(in_channels, time_embed_dim, true, device),
            linear_2: linear(time_embed_dim, time_embed_dim, true, device),
            activation,
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.linear_2
            .forward(self.activation.forward(self.linear_1.forward(x)))
    }
}
