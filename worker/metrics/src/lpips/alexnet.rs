//! torchvision's `alexnet().features` as LPIPS slices it (`lpips/pretrained_networks.py`):
//! the outputs are relu1 .. relu5.

use super::backbone::{Features, Layer};

const fn conv(out_channels: usize, kernel: usize, stride: usize, padding: usize) -> Layer {
    Layer::Conv {
        out_channels,
        kernel,
        stride,
        padding,
    }
}

const POOL: Layer = Layer::MaxPool {
    kernel: 3,
    stride: 2,
};

pub(crate) const ALEXNET: Features = Features {
    layers: &[
        conv(64, 11, 4, 2), // 0
        Layer::Relu,        // 1: relu1
        POOL,               // 2
        conv(192, 5, 1, 2), // 3
        Layer::Relu,        // 4: relu2
        POOL,               // 5
        conv(384, 3, 1, 1), // 6
        Layer::Relu,        // 7: relu3
        conv(256, 3, 1, 1), // 8
        Layer::Relu,        // 9: relu4
        conv(256, 3, 1, 1), // 10
        Layer::Relu,        // 11: relu5
    ],
    slice_ends: [2, 5, 8, 10, 12],
};
