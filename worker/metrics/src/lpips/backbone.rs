//! The LPIPS backbone: torchvision's `features` stack cut into the five slices whose
//! outputs LPIPS compares.
//!
//! Each slice is a `Vec` indexed like torchvision's `features`, holding a convolution
//! where torchvision has one and `None` elsewhere (ReLU and max-pool have no weights), so
//! the burn path `net.slice2.3.weight` is the lpips package's state_dict key.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::MaxPool2dConfig;
use burn::nn::PaddingConfig2d;
use burn::tensor::activation::relu;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::conv::conv2d;
use super::LpipsNet;

/// One entry of torchvision's `features` (`nn.Sequential`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Layer {
    Conv {
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    Relu,
    MaxPool {
        kernel: usize,
        stride: usize,
    },
}

/// A backbone's layers and where LPIPS ends each slice (exclusive indices).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Features {
    pub layers: &'static [Layer],
    pub slice_ends: [usize; 5],
}

/// A convolution of the backbone, where it sits and its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvSpec {
    /// 1-based, as in `net.slice1`.
    pub slice: usize,
    /// Index in torchvision's `features`.
    pub index: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvSpec {
    pub fn weight_name(&self) -> String {
        format!("net.slice{}.{}.weight", self.slice, self.index)
    }

    pub fn bias_name(&self) -> String {
        format!("net.slice{}.{}.bias", self.slice, self.index)
    }

    pub fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel,
            self.kernel,
        ]
    }
}

impl Features {
    /// The convolutions in order (the state_dict order of their tensors).
    pub fn convs(&self) -> Vec<ConvSpec> {
        let mut in_channels = 3;
        let mut out = Vec::new();
        for (index, layer) in self.layers.iter().enumerate() {
            if let Layer::Conv {
                out_channels,
                kernel,
                stride,
                padding,
            } = *layer
            {
                out.push(ConvSpec {
                    slice: self.slice_of(index),
                    index,
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                });
                in_channels = out_channels;
            }
        }
        out
    }

    /// Channels of each slice's output (`self.chns` in `lpips.LPIPS`).
    pub fn channels(&self) -> [usize; 5] {
        let convs = self.convs();
        self.slice_ends.map(|end| {
            convs
                .iter()
                .rev()
                .find(|c| c.index < end)
                .map_or(3, |c| c.out_channels)
        })
    }

    fn slice_of(&self, index: usize) -> usize {
        1 + self
            .slice_ends
            .iter()
            .position(|&end| index < end)
            .expect("every layer is in a slice")
    }

    /// The length of one spatial side after the last slice, or `None` when some layer
    /// would get nothing to work on.
    fn output_side(&self, side: usize) -> Option<usize> {
        let end = self.slice_ends[4];
        self.layers[..end].iter().try_fold(side, |side, layer| {
            let (kernel, stride, padding) = match *layer {
                Layer::Conv {
                    kernel,
                    stride,
                    padding,
                    ..
                } => (kernel, stride, padding),
                Layer::MaxPool { kernel, stride } => (kernel, stride, 0),
                Layer::Relu => return Some(side),
            };
            let padded = side + 2 * padding;
            (padded >= kernel).then(|| (padded - kernel) / stride + 1)
        })
    }

    /// The smallest height and width the backbone accepts.
    pub fn min_side(&self) -> usize {
        (1..).find(|&s| self.output_side(s).is_some()).unwrap()
    }

    pub fn init<B: Backend>(&self, net: LpipsNet, device: &B::Device) -> Backbone<B> {
        let mut slices: [Vec<Option<Conv2d<B>>>; 5] = Default::default();
        for (k, end) in self.slice_ends.iter().enumerate() {
            slices[k] = (0..*end).map(|_| None).collect();
        }
        for conv in self.convs() {
            slices[conv.slice - 1][conv.index] = Some(
                Conv2dConfig::new(
                    [conv.in_channels, conv.out_channels],
                    [conv.kernel, conv.kernel],
                )
                .with_stride([conv.stride, conv.stride])
                .with_padding(PaddingConfig2d::Explicit(
                    conv.padding,
                    conv.padding,
                    conv.padding,
                    conv.padding,
                ))
                .init(device),
            );
        }
        let [slice1, slice2, slice3, slice4, slice5] = slices;
        Backbone {
            slice1,
            slice2,
            slice3,
            slice4,
            slice5,
            net,
        }
    }
}

/// `lpips.pretrained_networks.alexnet` / `vgg16` (the `net` of `lpips.LPIPS`).
#[derive(Module, Debug)]
pub struct Backbone<B: Backend> {
    pub slice1: Vec<Option<Conv2d<B>>>,
    pub slice2: Vec<Option<Conv2d<B>>>,
    pub slice3: Vec<Option<Conv2d<B>>>,
    pub slice4: Vec<Option<Conv2d<B>>>,
    pub slice5: Vec<Option<Conv2d<B>>>,
    #[module(skip)]
    pub net: LpipsNet,
}

impl<B: Backend> Backbone<B> {
    /// [batch, 3, H, W] -> the five slice outputs, [batch, C_k, H_k, W_k].
    pub fn forward(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let features = self.net.features();
        let slices = [
            &self.slice1,
            &self.slice2,
            &self.slice3,
            &self.slice4,
            &self.slice5,
        ];
        let mut h = x;
        let mut start = 0;
        let mut outputs = Vec::with_capacity(5);
        for (slice, &end) in slices.iter().zip(features.slice_ends.iter()) {
            for (index, layer) in features.layers[start..end].iter().enumerate() {
                let index = start + index;
                h = match *layer {
                    Layer::Conv {
                        stride, padding, ..
                    } => conv2d(
                        slice[index]
                            .as_ref()
                            .expect("a convolution at every Conv layer"),
                        h,
                        stride,
                        padding,
                    ),
                    Layer::Relu => relu(h),
                    Layer::MaxPool { kernel, stride } => MaxPool2dConfig::new([kernel, kernel])
                        .with_strides([stride, stride])
                        .init()
                        .forward(h),
                };
            }
            outputs.push(h.clone());
            start = end;
        }
        outputs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alexnet_keys_and_channels_follow_lpips() {
        let features = LpipsNet::Alex.features();
        let names: Vec<String> = features.convs().iter().map(|c| c.weight_name()).collect();
        assert_eq!(
            names,
            [
                "net.slice1.0.weight",
                "net.slice2.3.weight",
                "net.slice3.6.weight",
                "net.slice4.8.weight",
                "net.slice5.10.weight"
            ]
        );
        assert_eq!(features.channels(), [64, 192, 384, 256, 256]);
        assert_eq!(features.convs()[1].weight_shape(), [192, 64, 5, 5]);
    }

    #[test]
    fn vgg_keys_and_channels_follow_lpips() {
        let features = LpipsNet::Vgg.features();
        let convs = features.convs();
        assert_eq!(convs.len(), 13);
        assert_eq!(convs[0].weight_name(), "net.slice1.0.weight");
        assert_eq!(convs[2].weight_name(), "net.slice2.5.weight");
        assert_eq!(convs[12].bias_name(), "net.slice5.28.bias");
        assert_eq!(features.channels(), [64, 128, 256, 512, 512]);
    }

    #[test]
    fn smallest_inputs() {
        // As torchvision: alex fails at 30 (the second 3x3 pool gets 2x2), vgg at 15.
        assert_eq!(LpipsNet::Alex.features().min_side(), 31);
        // vgg: four 2x2 pools.
        assert_eq!(LpipsNet::Vgg.features().min_side(), 16);
    }
}
