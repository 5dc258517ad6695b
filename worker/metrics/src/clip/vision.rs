//! CLIP's vision tower (`CLIPVisionTransformer` in transformers'
//! `models/clip/modeling_clip.py`), on atelier-sd's encoder layers without the causal
//! mask.

use atelier_sd::clip::{ClipEncoder, ClipEncoderLayer};
use atelier_sd::layers::layer_norm;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::config::VisionConfig;

#[derive(Module, Debug)]
pub struct ClipVisionEmbeddings<B: Backend> {
    /// [hidden]
    pub class_embedding: Param<Tensor<B, 1>>,
    /// patch x patch, stride patch, no bias.
    pub patch_embedding: Conv2d<B>,
    /// One row per patch, plus the class token's (row 0).
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipVisionTransformer<B: Backend> {
    pub embeddings: ClipVisionEmbeddings<B>,
    /// Spelled as in transformers.
    pub pre_layrnorm: LayerNorm<B>,
    pub encoder: ClipEncoder<B>,
    pub post_layernorm: LayerNorm<B>,
}

impl VisionConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipVisionTransformer<B> {
        let hidden = self.hidden_size;
        let layers = (0..self.num_hidden_layers)
            .map(|_| {
                ClipEncoderLayer::new(
                    hidden,
                    self.intermediate_size,
                    self.num_attention_heads,
                    self.hidden_act,
                    self.layer_norm_eps,
                    false,
                    device,
                )
            })
            .collect();
        ClipVisionTransformer {
            embeddings: ClipVisionEmbeddings {
                class_embedding: Param::from_tensor(Tensor::zeros([hidden], device)),
                patch_embedding: Conv2dConfig::new(
                    [self.num_channels, hidden],
                    [self.patch_size, self.patch_size],
                )
                .with_stride([self.patch_size, self.patch_size])
                .with_bias(false)
                .init(device),
                position_embedding: EmbeddingConfig::new(self.grid() * self.grid() + 1, hidden)
                    .init(device),
            },
            pre_layrnorm: layer_norm(hidden, self.layer_norm_eps, device),
            encoder: ClipEncoder { layers },
            post_layernorm: layer_norm(hidden, self.layer_norm_eps, device),
        }
    }
}

impl<B: Backend> ClipVisionTransformer<B> {
    /// pixel_values [batch, 3, S, S] (S = image_size) -> pooled output [batch, hidden]
    /// (the class token after `post_layernorm`).
    pub fn forward(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 2> {
        let [batch, _, _, _] = pixel_values.dims();
        // 1. embeddings: patches, the class token in front, positions added.
        let patches = self.embeddings.patch_embedding.forward(pixel_values);
        let [_, hidden, gh, gw] = patches.dims();
        let patches = patches.reshape([batch, hidden, gh * gw]).swap_dims(1, 2);
        let class = self
            .embeddings
            .class_embedding
            .val()
            .reshape([1, 1, hidden])
            .repeat_dim(0, batch);
        let positions = self
            .embeddings
            .position_embedding
            .weight
            .val()
            .unsqueeze_dim::<3>(0);
        let mut h = Tensor::cat(vec![class, patches], 1) + positions;
        // 2. encoder
        h = self.pre_layrnorm.forward(h);
        for layer in &self.encoder.layers {
            h = layer.forward(h);
        }
        // 3. pool: the class token
        let pooled = h
            .slice([0..batch, 0..1, 0..hidden])
            .reshape([batch, hidden]);
        self.post_layernorm.forward(pooled)
    }
}
