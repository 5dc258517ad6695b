//! `CLIPTextModel`, the text encoder (transformers' `models/clip/modeling_clip.py`).
//!
//! The UNet is conditioned on `last_hidden_state`, after the final layer norm.
//! Stable Diffusion pipelines pass no padding mask: only the causal mask applies.

use std::path::Path;

use burn::module::{Module, Param, ParamId};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData};
use serde::Deserialize;

use crate::config::read_json;
use crate::error::{Result, SdError};
use crate::layers::{layer_norm, linear, Activation};
use crate::weights::KeyRules;

/// `text_encoder/config.json` (transformers' `CLIPTextConfig`).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct ClipTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: Activation,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

impl ClipTextConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let config: Self = read_json(path, "a CLIPTextConfig")?;
        config.validate().map_err(|m| SdError::config(path, m))?;
        Ok(config)
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(format!(
                "`hidden_size` {} is not a multiple of `num_attention_heads` {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        Ok(())
    }

    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipTextModel<B> {
        let layers = (0..self.num_hidden_layers)
            .map(|_| {
                ClipEncoderLayer::new(
                    self.hidden_size,
                    self.intermediate_size,
                    self.num_attention_heads,
                    self.hidden_act,
                    self.layer_norm_eps,
                    true,
                    device,
                )
            })
            .collect();
        ClipTextModel {
            text_model: ClipTextTransformer {
                embeddings: ClipTextEmbeddings {
                    token_embedding: EmbeddingConfig::new(self.vocab_size, self.hidden_size)
                        .init(device),
                    position_embedding: EmbeddingConfig::new(
                        self.max_position_embeddings,
                        self.hidden_size,
                    )
                    .init(device),
                },
                encoder: ClipEncoder { layers },
                final_layer_norm: layer_norm(self.hidden_size, self.layer_norm_eps, device),
            },
        }
    }
}

/// Checkpoints in the wild name tensors `text_model.…` (transformers 4, every SD
/// release); transformers 5 saves them without the prefix. Some carry the
/// `position_ids` buffer.
pub const KEY_RULES: KeyRules<'static> = KeyRules {
    aliases: &[("text_model.", "")],
    ignored: &[
        "text_model.embeddings.position_ids",
        "embeddings.position_ids",
    ],
};

#[derive(Module, Debug)]
pub struct ClipTextModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
}

#[derive(Module, Debug)]
pub struct ClipTextTransformer<B: Backend> {
    pub embeddings: ClipTextEmbeddings<B>,
    pub encoder: ClipEncoder<B>,
    pub final_layer_norm: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct ClipTextEmbeddings<B: Backend> {
    pub token_embedding: Embedding<B>,
    pub position_embedding: Embedding<B>,
}

#[derive(Module, Debug)]
pub struct ClipEncoder<B: Backend> {
    pub layers: Vec<ClipEncoderLayer<B>>,
}

#[derive(Module, Debug)]
pub struct ClipEncoderLayer<B: Backend> {
    pub self_attn: ClipAttention<B>,
    pub layer_norm1: LayerNorm<B>,
    pub mlp: ClipMlp<B>,
    pub layer_norm2: LayerNorm<B>,
}

#[derive(Module, Debug)]
pub struct ClipAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    #[module(skip)]
    pub num_heads: usize,
    /// The text encoder's causal mask; CLIP's vision tower attends to every position.
    #[module(skip)]
    pub causal: bool,
}

#[derive(Module, Debug)]
pub struct ClipMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> ClipTextModel<B> {
    /// `input_ids` [batch, seq] -> last_hidden_state [batch, seq, hidden].
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_embeds(
            self.text_model
                .embeddings
                .token_embedding
                .forward(input_ids),
        )
    }

    /// From token embeddings [batch, seq, hidden] (textual inversion swaps rows in
    /// before this point) -> last_hidden_state [batch, seq, hidden].
    pub fn forward_embeds(&self, token_embeds: Tensor<B, 3>) -> Tensor<B, 3> {
        self.text_model.forward_embeds(token_embeds)
    }

    /// Rows of the token embedding table (the vocabulary, with added tokens).
    pub fn vocab_rows(&self) -> usize {
        self.text_model
            .embeddings
            .token_embedding
            .weight
            .lazy_shape()[0]
    }

    /// Appends `n` rows (row-major [n, hidden]) to the token embedding table.
    pub fn append_token_embeddings(&mut self, values: Vec<f32>, n: usize) {
        let embedding = &mut self.text_model.embeddings.token_embedding;
        let table = embedding.weight.val();
        let [_, hidden] = table.dims();
        let device = table.device();
        let rows = Tensor::<B, 2>::from_data(TensorData::new(values, [n, hidden]), &device);
        embedding.weight = Param::initialized(ParamId::new(), Tensor::cat(vec![table, rows], 0));
    }

    pub fn hidden_size(&self) -> usize {
        self.text_model.final_layer_norm.gamma.lazy_shape()[0]
    }
}

impl<B: Backend> ClipTextTransformer<B> {
    /// `input_ids` [batch, seq] -> last_hidden_state [batch, seq, hidden].
    pub fn forward(&self, input_ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_embeds(self.embeddings.token_embedding.forward(input_ids))
    }

    /// Token embeddings [batch, seq, hidden] -> last_hidden_state [batch, seq, hidden].
    pub fn forward_embeds(&self, token_embeds: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, _] = token_embeds.dims();
        let device = token_embeds.device();
        let positions = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .repeat_dim(0, batch);
        let mut hidden = token_embeds + self.embeddings.position_embedding.forward(positions);
        for layer in &self.encoder.layers {
            hidden = layer.forward(hidden);
        }
        self.final_layer_norm.forward(hidden)
    }
}

impl<B: Backend> ClipEncoderLayer<B> {
    /// A pre-norm transformer layer (`CLIPEncoderLayer`), shared by the text and the
    /// vision tower; `causal` is the text encoder's mask.
    pub fn new(
        hidden_size: usize,
        intermediate_size: usize,
        num_heads: usize,
        activation: Activation,
        layer_norm_eps: f64,
        causal: bool,
        device: &B::Device,
    ) -> Self {
        ClipEncoderLayer {
            self_attn: ClipAttention {
                q_proj: linear(hidden_size, hidden_size, true, device),
                k_proj: linear(hidden_size, hidden_size, true, device),
                v_proj: linear(hidden_size, hidden_size, true, device),
                out_proj: linear(hidden_size, hidden_size, true, device),
                num_heads,
                causal,
            },
            layer_norm1: layer_norm(hidden_size, layer_norm_eps, device),
            mlp: ClipMlp {
                fc1: linear(hidden_size, intermediate_size, true, device),
                fc2: linear(intermediate_size, hidden_size, true, device),
                activation,
            },
            layer_norm2: layer_norm(hidden_size, layer_norm_eps, device),
        }
    }

    /// [batch, seq, hidden] -> [batch, seq, hidden].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let mlp = &self.mlp;
        let y = mlp.fc2.forward(
            mlp.activation
                .forward(mlp.fc1.forward(self.layer_norm2.forward(h.clone()))),
        );
        h + y
    }
}

impl<B: Backend> ClipAttention<B> {
    /// Self-attention (causal for the text encoder), [batch, seq, hidden] -> [batch, seq, hidden].
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.num_heads;
        let heads = |t: Tensor<B, 3>| {
            t.reshape([batch, seq, self.num_heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = heads(self.q_proj.forward(x.clone()));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: self.causal,
        };
        let out = attention(q, k, v, None, None, options)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden]);
        self.out_proj.forward(out)
    }
}
