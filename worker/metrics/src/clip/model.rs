//! transformers' `CLIPModel` without the logit scale: both towers and their
//! projections, named as its state_dict (`text_model.*`, `vision_model.*`,
//! `visual_projection.weight`, `text_projection.weight`).

use atelier_sd::clip::ClipTextTransformer;
use atelier_sd::layers::linear;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use super::config::ClipConfig;
use super::text::gather_rows;
use super::vision::ClipVisionTransformer;

#[derive(Module, Debug)]
pub struct ClipModel<B: Backend> {
    pub text_model: ClipTextTransformer<B>,
    pub vision_model: ClipVisionTransformer<B>,
    /// vision hidden -> projection_dim, no bias.
    pub visual_projection: Linear<B>,
    /// text hidden -> projection_dim, no bias.
    pub text_projection: Linear<B>,
}

impl ClipConfig {
    pub fn init<B: Backend>(&self, device: &B::Device) -> ClipModel<B> {
        ClipModel {
            text_model: self.text.encoder().init(device).text_model,
            vision_model: self.vision.init(device),
            visual_projection: linear(self.vision.hidden_size, self.projection_dim, false, device),
            text_projection: linear(self.text.hidden_size, self.projection_dim, false, device),
        }
    }
}

impl<B: Backend> ClipModel<B> {
    /// pixel_values [N, 3, S, S] -> image_embeds [N, projection_dim]
    /// (`get_image_features(...).pooler_output`, not normalised).
    pub fn image_features(&self, pixel_values: Tensor<B, 4>) -> Tensor<B, 2> {
        self.visual_projection
            .forward(self.vision_model.forward(pixel_values))
    }

    /// input_ids [N, seq] and each row's pooled position -> text_embeds
    /// [N, projection_dim] (`get_text_features(...).pooler_output`, not normalised).
    pub fn text_features(&self, input_ids: Tensor<B, 2, Int>, pooled: &[usize]) -> Tensor<B, 2> {
        let hidden = self.text_model.forward(input_ids);
        self.text_projection.forward(gather_rows(hidden, pooled))
    }
}
