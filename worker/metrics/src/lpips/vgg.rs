//! torchvision's `vgg16().features` as LPIPS slices it (`lpips/pretrained_networks.py`):
//! the outputs are relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.

use super::backbone::{Features, Layer};

const fn conv(out_channels: usize) -> Layer {
    Layer::Conv {
        out_channels,
        kernel: 3,
        stride: 1,
        padding: 1,
    }
}

const RELU: Layer = Layer::Relu;
const POOL: Layer = Layer::MaxPool {
    kernel: 2,
    stride: 2,
};

pub(crate) const VGG16: Features = Features {
    layers: &[
        conv(64),  // 0
        RELU,      // 1
        conv(64),  // 2
        RELU,      // 3: relu1_2
        POOL,      // 4
        conv(128), // 5
        RELU,      // 6
        conv(128), // 7
        RELU,      // 8: relu2_2
        POOL,      // 9
        conv(256), // 10
        RELU,      // 11
        conv(256), // 12
        RELU,      // 13
        conv(256), // 14
        RELU,      // 15: relu3_3
        POOL,      // 16
        conv(512), // 17
        RELU,      // 18
        conv(512), // 19
        RELU,      // 20
        conv(512), // 21
        RELU,      // 22: relu4_3
        POOL,      // 23
        conv(512), // 24
        RELU,      // 25
        conv(512), // 26
        RELU,      // 27
        conv(512), // 28
        RELU,      // 29: relu5_3
    ],
    slice_ends: [4, 9, 16, 23, 30],
};
