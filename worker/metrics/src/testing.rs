//! Test-only LPIPS weights: a valid weight file whose backbone comes from a formula, so
//! tests need not carry torchvision's 9 MB (AlexNet) or 59 MB (VGG16) of features.
//!
//! **Random weights, for tests only**: distances computed with them mean nothing about
//! images. `tools/make_eval_fixtures.py` computes the same formula in numpy and the
//! `lpips` package's distances with it, which the golden tests compare against.
//!
//! The backbone tensors are numbered `t = 0, 1, ...` in state_dict order (each conv's
//! weight, then its bias); element `i` (row-major) of tensor `t` is
//!
//! ```text
//! h = splitmix64((t << 32) | i)     // SplitMix64's finaliser
//! u = (h >> 40) / 2^24              // in [0, 1), exact in f64
//! w = f32((2u - 1) * bound)         // f64 arithmetic, one rounding
//! bound = sqrt(6 / fan_in) for weights (Kaiming uniform), 1 / sqrt(fan_in) for biases
//! ```

use std::path::Path;

use atelier_sd::weights::{write_f32_safetensors, SafetensorsFile};

use crate::error::{MetricsError, Result};
use crate::lpips::scaling::{SCALE, SHIFT};
use crate::lpips::LpipsNet;

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Tensor `t` of the formula, `len` elements.
pub fn formula_values(t: u64, len: usize, bound: f64) -> Vec<f32> {
    (0..len as u64)
        .map(|i| {
            let u = (splitmix64((t << 32) | i) >> 40) as f64 / (1u64 << 24) as f64;
            ((2.0 * u - 1.0) * bound) as f32
        })
        .collect()
}

/// The backbone tensors of `net` from the formula: (name, shape, values) in state_dict
/// order.
pub fn formula_backbone(net: LpipsNet) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut out = Vec::new();
    for (k, conv) in net.features().convs().into_iter().enumerate() {
        let shape = conv.weight_shape();
        let fan_in = (shape[1] * shape[2] * shape[3]) as f64;
        let len = shape.iter().product();
        out.push((
            conv.weight_name(),
            shape.to_vec(),
            formula_values(2 * k as u64, len, (6.0 / fan_in).sqrt()),
        ));
        out.push((
            conv.bias_name(),
            vec![conv.out_channels],
            formula_values(2 * k as u64 + 1, conv.out_channels, 1.0 / fan_in.sqrt()),
        ));
    }
    out
}

/// Writes a complete LPIPS weight file for `net` (what `Lpips::load` reads): the
/// package's scaling constants, the formula's **random test-only** backbone and the
/// linear layers `lin{0..4}.model.1.weight` read from `lin_weights` (a safetensors file
/// with those tensors, e.g. `worker/metrics/tests/fixtures/lpips/lin_alex.safetensors`,
/// the lpips package's own).
pub fn write_test_weights(path: &Path, net: LpipsNet, lin_weights: &Path) -> Result<()> {
    let lin = SafetensorsFile::open(lin_weights)?;
    let mut tensors = vec![
        (
            "scaling_layer.shift".to_string(),
            vec![1, 3, 1, 1],
            SHIFT.to_vec(),
        ),
        (
            "scaling_layer.scale".to_string(),
            vec![1, 3, 1, 1],
            SCALE.to_vec(),
        ),
    ];
    tensors.extend(formula_backbone(net));
    for (k, channels) in net.features().channels().into_iter().enumerate() {
        let name = format!("lin{k}.model.1.weight");
        let (shape, values) = lin.read_f32(&name)?;
        let expected = vec![1, channels, 1, 1];
        if shape != expected {
            return Err(MetricsError::config(
                lin_weights,
                format!(
                    "tensor `{name}` has shape {shape:?}, expected {expected:?} for LPIPS {net}"
                ),
            ));
        }
        tensors.push((name, shape, values));
    }
    write_f32_safetensors(path, &tensors, &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference_sequence() {
        // SplitMix64 seeded with 0: its first output is the finaliser of the golden gamma.
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn formula_values_lie_within_the_bound() {
        let values = formula_values(3, 1000, 0.5);
        assert!(values.iter().all(|v| v.abs() <= 0.5));
        assert!(values.iter().any(|v| *v > 0.4) && values.iter().any(|v| *v < -0.4));
    }
}
