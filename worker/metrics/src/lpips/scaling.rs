//! `lpips.ScalingLayer`: moves [-1, 1] inputs to the statistics the ImageNet backbones
//! were trained on, `(x - shift) / scale` per channel.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The package's buffers (`torch.Tensor([-.030, -.088, -.188])`, float32); the weight
/// file carries them too, and they are loaded from it.
pub(crate) const SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
pub(crate) const SCALE: [f32; 3] = [0.458, 0.448, 0.450];

#[derive(Module, Debug)]
pub struct ScalingLayer<B: Backend> {
    /// [1, 3, 1, 1]
    pub shift: Param<Tensor<B, 4>>,
    /// [1, 3, 1, 1]
    pub scale: Param<Tensor<B, 4>>,
}

impl<B: Backend> ScalingLayer<B> {
    pub fn init(device: &B::Device) -> Self {
        let buffer = |values: [f32; 3]| {
            Param::from_tensor(Tensor::<B, 1>::from_floats(values, device).reshape([1, 3, 1, 1]))
        };
        ScalingLayer {
            shift: buffer(SHIFT),
            scale: buffer(SCALE),
        }
    }

    /// [batch, 3, H, W] -> [batch, 3, H, W].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        (x - self.shift.val()) / self.scale.val()
    }
}
