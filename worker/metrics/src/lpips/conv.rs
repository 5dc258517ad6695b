//! The backbone's convolutions as a sum of matrix products, one per kernel tap:
//! `out = sum over (ky, kx) of W[:, :, ky, kx] @ x[:, ky::stride, kx::stride]`.
//!
//! Why not burn's `Conv2d::forward`: burn-ndarray's direct SIMD convolution runs at
//! 13-60 MMAC/s in the workspace's dev profile (dependencies at opt-level 1), where its
//! matmul runs at 3.6 GMAC/s, so LPIPS-VGG on ten small test pairs took minutes. The
//! products need one shifted copy of the input at a time, not the k*k copies of an
//! im2col matrix (VGG's first layers on 512x512 images would need 600 MB per image).

use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PadMode;
use burn::tensor::{Slice, Tensor};

/// x [N, C, H, W] -> [N, O, H', W'] with the conv's weight [O, C, k, k] and bias.
pub(crate) fn conv2d<B: Backend>(
    conv: &Conv2d<B>,
    x: Tensor<B, 4>,
    stride: usize,
    padding: usize,
) -> Tensor<B, 4> {
    let weight = conv.weight.val();
    let [out_channels, channels, kernel, _] = weight.dims();
    let [n, _, height, width] = x.dims();
    let x = if padding > 0 {
        x.pad((padding, padding, padding, padding), PadMode::Constant(0.0))
    } else {
        x
    };
    let out_h = (height + 2 * padding - kernel) / stride + 1;
    let out_w = (width + 2 * padding - kernel) / stride + 1;
    // [C, N, H, W]: each tap is then one [O, C] x [C, N * H' * W'] product.
    let x = x.swap_dims(0, 1);
    let taps = |start: usize, len: usize| {
        Slice::new(
            start as isize,
            Some((start + stride * (len - 1) + 1) as isize),
            stride as isize,
        )
    };
    let mut out: Option<Tensor<B, 2>> = None;
    for ky in 0..kernel {
        for kx in 0..kernel {
            let shifted = x
                .clone()
                .slice([
                    Slice::full(),
                    Slice::full(),
                    taps(ky, out_h),
                    taps(kx, out_w),
                ])
                .reshape([channels, n * out_h * out_w]);
            let w = weight
                .clone()
                .slice([0..out_channels, 0..channels, ky..ky + 1, kx..kx + 1])
                .reshape([out_channels, channels]);
            let product = w.matmul(shifted);
            out = Some(match out {
                Some(sum) => sum + product,
                None => product,
            });
        }
    }
    let out = out
        .expect("a kernel has taps")
        .reshape([out_channels, n, out_h, out_w])
        .swap_dims(0, 1);
    match &conv.bias {
        Some(bias) => out + bias.val().reshape([1, out_channels, 1, 1]),
        None => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::PaddingConfig2d;

    type B = burn::backend::NdArray<f32>;

    #[test]
    fn equals_burns_convolution() {
        let device = Default::default();
        for (channels, out, kernel, stride, padding, h, w) in [
            (3, 4, 11, 4, 2, 37, 31),
            (5, 6, 3, 1, 1, 9, 7),
            (2, 3, 5, 1, 2, 6, 8),
        ] {
            let conv = Conv2dConfig::new([channels, out], [kernel, kernel])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .init::<B>(&device);
            let x = Tensor::<B, 4>::random(
                [2, channels, h, w],
                burn::tensor::Distribution::Normal(0.0, 1.0),
                &device,
            );
            let expected = conv.forward(x.clone());
            let actual = conv2d(&conv, x, stride, padding);
            assert_eq!(actual.dims(), expected.dims());
            let diff: f32 = (actual - expected).abs().max().into_scalar();
            assert!(diff < 1e-5, "{diff}");
        }
    }
}
